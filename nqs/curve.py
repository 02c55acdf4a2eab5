"""Potential-energy curves: one NQS run per geometry along a scan coordinate, each warm-started from the last.

A curve directory holds curve.yaml (the scan and the base training config), `start/` (a from-scratch run at
the first geometry) and one ordinary run directory per geometry, `r=1.200/`, written by
`nqs.training.run.run`. Every point trains `steps_per_point` steps from the previous run's parameters, in
orbitals matched to that run's (`matched_problem`): canonical orbitals change sign and order from one
geometry to the next, which would scramble the amplitudes a warm start carries over. A point whose
summary.json exists is finished and is read back, so an interrupted scan continues where it stopped (a point
interrupted mid-run continues from its checkpoint). Exact limits need no training: a sector of one
configuration (H2 with charge +2 has no electrons) has the energy of its single diagonal element, FCI
exactly; its run directory gets a summary.json of the same keys with steps 0.

Scan coordinates (Å): `bond` moves atom 2 of a diatomic along the bond axis; `stretch` moves the atoms bonded to
a centre atom (those within 1.3 times its shortest distance) radially so that the shortest bond is r (a
symmetric stretch when the bonds are equal); `fragment` translates atoms[split:] rigidly so that the two
fragments' centroids are r apart.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from nqs.errors import UserError
from nqs.molecules import MIN_DISTANCE_ANGSTROM, MoleculeSpec, parse_geometry, resolve_molecule
from nqs.training.config import TrainConfig

NEIGHBOUR_FACTOR = 1.3  # atoms within this factor of the centre's shortest distance are its bonded neighbours
TINY_SECTOR = 16  # at most this many configurations (H2, H2+): TINY_SECTOR_DEFAULTS unless given
TINY_SECTOR_DEFAULTS = {"dtype": "float64", "lr": 3e-2}
ENUMERATE_MAX = 4096  # sectors up to this size also get the exactly enumerated <H> of the final parameters
ORBITALS = "orbitals.npz"  # in each run directory: the matched orbitals its Hamiltonian was built in
START = "start"  # the from-scratch run at the first geometry, beside the points
POINT_KEYS = ("r", "energy", "energy_err", "e_hf", "e_ccsd", "e_ccsd_t", "e_fci", "error_mha")
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


# --- the scan coordinate -----------------------------------------------------------------------------------
def parse_values(text: str) -> tuple[float, ...]:
    """'0.5:3.0:0.1' (start:stop:step, stop included), '0.9,1.1,1.4' or '0.74' -> distances in Å."""
    text = text.strip()
    hint = "write --bond START:STOP:STEP (Å, e.g. 0.5:3.0:0.1), a list 0.9,1.1,1.4, or one value"
    if re.fullmatch(rf"{_FLOAT}:{_FLOAT}:{_FLOAT}", text):
        start, stop, step = (float(v) for v in text.split(":"))
        if step == 0 or (stop - start) * step < 0:
            raise UserError(f"--bond {text}: the step must be non-zero and go from START towards STOP; {hint}")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        if n > 10_000:
            raise UserError(f"--bond {text} asks for {n} points: use a larger step")
        values = tuple(round(start + i * step, 6) for i in range(n))
    elif re.fullmatch(rf"{_FLOAT}(?:\s*,\s*{_FLOAT})*", text):
        values = tuple(float(v) for v in text.split(","))
    else:
        raise UserError(f"malformed --bond '{text}': {hint}")
    if min(values) < MIN_DISTANCE_ANGSTROM:
        raise UserError(f"--bond {text} reaches {min(values):g} Å, below {MIN_DISTANCE_ANGSTROM} Å: start further out")
    names = [point_name(r) for r in values]
    if len(set(names)) != len(names):
        raise UserError(f"--bond {text} repeats a distance (points are named to 0.001 Å): use distinct values")
    return values


def point_name(r: float) -> str:
    return f"r={r:.3f}"


@dataclass(frozen=True)
class Scan:
    """Distances `values` (Å) of one coordinate: `mode` bond | stretch (around atom `centre`, 0-based) |
    fragment (atoms[:split] and atoms[split:])."""

    values: tuple[float, ...]
    mode: str = "bond"
    centre: int | None = None
    split: int | None = None

    def geometry(self, spec: MoleculeSpec, r: float) -> MoleculeSpec:
        """The molecule with its coordinate set to r (Å), validated."""
        pos = [list(a[1:]) for a in spec.atoms]
        if self.mode == "bond":
            pos[1] = _along(pos[0], pos[1], r)
        elif self.mode == "stretch":
            c = pos[self.centre]
            for j in neighbours(spec, self.centre):
                pos[j] = _along(c, pos[j], r * math.dist(c, pos[j]) / _shortest(spec, self.centre))
        else:
            a, b = _centroid(pos[:self.split]), _centroid(pos[self.split:])
            target = _along(a, b, r)
            pos = pos[:self.split] + [[p[i] + target[i] - b[i] for i in range(3)] for p in pos[self.split:]]
        atoms = tuple((a[0], *(round(x, 10) for x in p)) for a, p in zip(spec.atoms, pos))
        return replace(spec, atoms=atoms).validate()


def make_scan(spec: MoleculeSpec, bond: str, atom: str | None = None, fragment: int | None = None) -> Scan:
    """The scan of `spec` asked for by --bond, with --atom CENTRE or --fragment K for polyatomics."""
    values = parse_values(bond)
    n = len(spec.atoms)
    if atom is not None and fragment is not None:
        raise UserError("give at most one of --atom (symmetric stretch) and --fragment (separate two fragments)")
    if fragment is not None:
        if not 1 <= fragment < n:
            raise UserError(f"--fragment {fragment}: the first fragment is atoms 1..K with 1 <= K < {n}")
        scan = Scan(values, "fragment", split=fragment)
    elif atom is not None:
        scan = Scan(values, "stretch", centre=_atom_index(spec, atom))
        if not neighbours(spec, scan.centre):
            raise UserError(f"--atom {atom}: the molecule has no other atom to stretch")
    elif n == 2:
        scan = Scan(values, "bond")
    else:
        raise UserError(f"--bond alone scans a diatomic, and {spec.name} has {n} atoms: add --atom CENTRE for a "
                        f"symmetric stretch of the bonds to CENTRE, or --fragment K to pull atoms K+1.. apart")
    for r in (values[0], values[-1], min(values)):
        scan.geometry(spec, r)  # an impossible geometry fails now, not after hours of training
    return scan


def _atom_index(spec: MoleculeSpec, atom: str) -> int:
    if atom.isdigit():
        index = int(atom) - 1
        if not 0 <= index < len(spec.atoms):
            raise UserError(f"--atom {atom}: atoms are numbered 1..{len(spec.atoms)}")
        return index
    hits = [i for i, a in enumerate(spec.atoms) if a[0].lower() == atom.lower()]
    if len(hits) != 1:
        what = "no atom" if not hits else f"{len(hits)} atoms"
        raise UserError(f"--atom {atom}: {spec.name} has {what} of that element; give the atom's number "
                        f"(1..{len(spec.atoms)})")
    return hits[0]


def neighbours(spec: MoleculeSpec, centre: int) -> list[int]:
    """Atoms bonded to `centre`: within NEIGHBOUR_FACTOR of its shortest distance."""
    if len(spec.atoms) < 2:
        return []
    cut = NEIGHBOUR_FACTOR * _shortest(spec, centre)
    c = spec.atoms[centre][1:]
    return [j for j, a in enumerate(spec.atoms) if j != centre and math.dist(c, a[1:]) <= cut]


def _shortest(spec: MoleculeSpec, centre: int) -> float:
    c = spec.atoms[centre][1:]
    return min(math.dist(c, a[1:]) for j, a in enumerate(spec.atoms) if j != centre)


def _along(origin, point, r: float) -> list[float]:
    d = math.dist(origin, point)
    return [o + (p - o) * r / d for o, p in zip(origin, point)]


def _centroid(points) -> list[float]:
    return [sum(p[i] for p in points) / len(points) for i in range(3)]


def geometry_text(spec: MoleculeSpec) -> str:
    return "; ".join(f"{s} {x:.10f} {y:.10f} {z:.10f}" for s, x, y, z in spec.atoms)


def nuclear_repulsion(spec: MoleculeSpec) -> float:
    """sum_{i<j} Z_i Z_j / R_ij in Hartree (R in bohr, PySCF's constant): the energy with no electrons."""
    from pyscf.data.elements import charge
    from pyscf.lib.parameters import BOHR

    atoms = spec.atoms
    return sum(charge(a[0]) * charge(b[0]) / (math.dist(a[1:], b[1:]) / BOHR)
               for i, a in enumerate(atoms) for b in atoms[:i])


# --- one point -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurvePoint:
    """One geometry's result (Hartree); `exact`: one-configuration sector, no training."""

    r: float
    energy: float
    energy_err: float
    e_hf: float | None
    e_ccsd: float | None
    e_ccsd_t: float | None
    e_fci: float | None
    e_nuc: float
    steps: int
    wall_s: float
    exact: bool
    run_dir: str
    energy_enum: float | None = None  # <H> of the final parameters by enumerating the sector (small sectors)

    @property
    def error_mha(self) -> float | None:
        return None if self.e_fci is None else (self.energy - self.e_fci) * 1e3

    @property
    def ccsd_t_error_mha(self) -> float | None:
        if self.e_fci is None or self.e_ccsd_t is None:
            return None
        return (self.e_ccsd_t - self.e_fci) * 1e3

    def record(self) -> dict:
        out = {k: getattr(self, k) for k in POINT_KEYS}
        out.update(ccsd_t_error_mha=self.ccsd_t_error_mha, e_nuc=self.e_nuc, energy_enum=self.energy_enum,
                   steps=self.steps, wall_s=self.wall_s, exact=self.exact, run_dir=self.run_dir)
        return out


def point_from_summary(r: float, summary: dict, spec: MoleculeSpec, run_dir: Path) -> CurvePoint:
    return CurvePoint(r=r, energy=summary["energy"], energy_err=summary["energy_err"], e_hf=summary["e_hf"],
                      e_ccsd=summary["e_ccsd"], e_ccsd_t=summary["e_ccsd_t"], e_fci=summary["e_fci"],
                      e_nuc=nuclear_repulsion(spec), steps=summary["steps"], wall_s=summary["wall_s"],
                      exact=bool(summary.get("exact", False)), run_dir=str(run_dir),
                      energy_enum=summary.get("energy_enum"))


def build_point_problem(cfg: TrainConfig):
    """The cached problem of one geometry with canonical orbitals (references, sector)."""
    from nqs.training.run import build_cfg_problem

    return build_cfg_problem(cfg)


# --- orbitals that follow the geometry -----------------------------------------------------------------------
def matched_problem(cfg: TrainConfig, reference: Path | None):
    """(problem, orbitals record): the geometry's Hamiltonian in canonical orbitals reordered and re-signed to
    match the orbitals of the run in `reference` (None: canonical).

    Canonical orbitals come out of the eigensolver with arbitrary signs, and orbitals of equal occupation swap
    places when their energies cross; a model warm-started across geometries then meets configurations whose
    amplitudes changed sign or position (LiH STO-3G: the sigma* orbital flips sign between 2.25 and 2.5 Å;
    N2: occupied orbitals reorder at 1.0, 1.2, 1.4 Å). Within each block of equal occupation (and core /
    active / frozen region) the orbitals are matched to the reference's by the largest |overlap|
    <phi_ref|phi> (cross-geometry AO overlap, Hungarian assignment), then signed to overlap positively.
    Energies are unchanged: references come from the cached canonical problem."""
    import numpy as np

    from nqs import chem
    from nqs.operator import PauliHamiltonian

    problem = build_point_problem(cfg)
    spec = problem.spec
    mol = chem.build_mole(spec, cfg.symmetry)
    mf = chem.run_scf(mol, [])
    if mf is None or problem.sector.size == 1:
        return problem, None
    n_core, n_act = chem.active_space(mol, spec, problem.options)
    mo = chem.mo_coefficients(mol, mf)
    region = np.array([0] * n_core + [1] * n_act + [2] * (mo.shape[1] - n_core - n_act))
    blocks = region * 10 + np.asarray(mf.mo_occ).round().astype(int)
    if reference is not None and (reference / ORBITALS).is_file():
        mo = _match(mol, mo, blocks, reference / ORBITALS)
    ints = chem.integrals(mol, mo, n_core, n_act, spec.n_alpha, spec.n_beta)
    problem = replace(problem, integrals=ints, pauli=PauliHamiltonian.from_integrals(ints))
    return problem, {"mo": mo, "blocks": blocks, "geometry": np.array(geometry_text(spec)),
                     "basis": np.array(spec.basis), "charge": spec.charge, "spin": spec.spin}


def _match(mol, mo, blocks, path: Path):
    import numpy as np
    from pyscf import gto
    from scipy.optimize import linear_sum_assignment

    from nqs import chem

    with np.load(path) as ref:
        ref_mo, ref_blocks = ref["mo"], ref["blocks"]
        ref_spec = replace(parse_geometry(str(ref["geometry"])), basis=str(ref["basis"]), charge=int(ref["charge"]),
                           spin=int(ref["spin"]))
    if ref_mo.shape != mo.shape or not np.array_equal(np.sort(ref_blocks), np.sort(blocks)):
        return mo  # another molecule or occupation pattern: nothing to follow
    overlap = ref_mo.T @ gto.intor_cross("int1e_ovlp", chem.build_mole(ref_spec, False), mol) @ mo
    out = mo.copy()
    for b in np.unique(blocks):
        cols, ref_cols = np.flatnonzero(blocks == b), np.flatnonzero(ref_blocks == b)
        rows, pick = linear_sum_assignment(-np.abs(overlap[np.ix_(ref_cols, cols)]))
        for i, j in zip(rows, pick):
            sign = -1.0 if overlap[ref_cols[i], cols[j]] < 0 else 1.0
            out[:, ref_cols[i]] = sign * mo[:, cols[j]]
    return out


def save_orbitals(run_dir: Path, record: dict | None) -> None:
    import numpy as np

    if record is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(run_dir / ORBITALS, **record)


def exact_point(cfg: TrainConfig, problem, out: Path) -> dict:
    """A one-configuration sector: E = <x|H|x> from the qubit Hamiltonian, no training; writes the run directory."""
    from nqs.local_energy import connections
    from nqs.training.config import to_yaml

    start = time.perf_counter()
    bits = problem.sector.enumerate_bits()
    energy = float(connections(problem.compiled("cpu"), bits).diagonal[0].real)
    refs = problem.references
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    wall = time.perf_counter() - start
    summary = {"molecule": problem.spec.name, "ansatz": cfg.ansatz, "n_qubits": problem.n_qubits,
               "n_alpha": problem.sector.n_alpha, "n_beta": problem.sector.n_beta, "sector_size": 1,
               "n_params": 0, "n_params_modulus": 0, "n_params_phase": 0, "steps": 0, "samples": cfg.samples,
               "unique": cfg.unique, "energy": energy, "energy_err": 0.0, "variance": 0.0, "vscore": None,
               "e_fci": refs.e_fci, "e_ccsd_t": refs.e_ccsd_t, "e_hf": refs.e_hf,
               "error_mha": (energy - refs.e_fci) * 1e3 if refs.e_fci is not None else None, "d_prime": 0.0,
               "wall_s": wall, "seed": cfg.seed, "e_ccsd": refs.e_ccsd, "e_mp2": refs.e_mp2, "e_inf": problem.e_inf,
               "d_prime_full": 0.0, "flops_total": 0.0, "final_n_unique": 1, "final_n_samples": 0,
               "command_wall_s": wall, "device": "cpu", "torch_threads": None, "exact": True, "energy_enum": energy}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def enumerated_energy(cfg: TrainConfig, run_dir: Path, problem) -> float:
    """<psi|H|psi> of the run's final parameters, summing |psi(x)|^2 E_loc(x) over the whole sector exactly."""
    import torch

    from nqs.local_energy import local_energy
    from nqs.training.run import build

    problem, model = build(replace(cfg, init_from=str(run_dir)), problem)
    model.eval()
    bits = problem.sector.enumerate_bits()
    with torch.no_grad():
        log_psi = model.log_psi(bits)
        p = torch.exp(2 * log_psi.real.to(torch.float64))
        e_loc = local_energy(problem.compiled("cpu"), bits, model.log_psi).values.real
    return float((p * e_loc).sum() / p.sum())


def train_point(cfg: TrainConfig, run_dir: Path, reference: Path | None) -> dict:
    """Train in orbitals matched to `reference` (or continue an interrupted run in `run_dir`); small sectors
    also get the enumerated energy."""
    from nqs.training.run import CHECKPOINT, run

    problem, orbitals = matched_problem(cfg, reference)
    save_orbitals(run_dir, orbitals)
    resume = (run_dir / CHECKPOINT).is_file() and (run_dir / "config.yaml").is_file()
    summary = run(cfg, run_dir, resume=resume, problem=problem)
    if summary["sector_size"] <= ENUMERATE_MAX:
        summary["energy_enum"] = enumerated_energy(cfg, run_dir, problem)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# --- the curve -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurveSettings:
    """What defines a curve besides the training config: the scan and the two step budgets."""

    bond: str
    atom: str | None = None
    fragment: int | None = None
    first_steps: int | None = None  # None: the config's steps
    steps_per_point: int | None = None  # None: a quarter of first_steps (at least 50)
    anneal_per_point: float = 0.0  # annealing temperature T0 (Ha) of the warm-started points
    lr_per_point: float | None = None  # peak learning rate of the warm-started points (None: the config's lr)

    def steps(self, cfg: TrainConfig) -> tuple[int, int]:
        first = self.first_steps or cfg.steps
        later = self.steps_per_point or max(first // 4, 50)
        if first < 1 or later < 1:
            raise UserError("--first-steps and --steps-per-point must be at least 1")
        return first, later


def point_config(base: TrainConfig, spec: MoleculeSpec, run_dir: Path, steps: int, init_from: str | None,
                 anneal_warm: float = 0.0, lr_warm: float | None = None) -> TrainConfig:
    """The run config of one geometry. A warm start anneals from `anneal_warm` (default 0), not from the
    config's anneal_t0: the entropy bonus T*S that lifts a fresh model off the Hartree-Fock plateau pushes a
    converged state away again. `lr_warm` (default: the config's lr) is a warm start's peak learning rate; its
    final rate is the config's lr_final or lr_warm if lower. A large peak knocks a converged state far back up."""
    warm = init_from is not None
    anneal = anneal_warm if warm else base.anneal_t0
    lr = lr_warm if warm and lr_warm is not None else base.lr
    return replace(base, mol=None, geometry=geometry_text(spec), charge=spec.charge, spin=spec.spin,
                   basis=spec.basis, steps=steps, init_from=init_from, out=str(run_dir), anneal_t0=anneal,
                   lr=lr, lr_final=min(base.lr_final, lr)).validate()


def start_run(base: TrainConfig, spec: MoleculeSpec, r: float, run_dir: Path, steps: int,
              log: Callable[[str], None]) -> str | None:
    """The from-scratch run at the first geometry (`steps` steps) that the first point warm-starts from, so
    that every point ends with the same short warm-started schedule (and a fresh optimiser state: Adam's
    second moments remember the large early gradients and slow the approach to amplitudes that must vanish).
    None for a one-configuration sector, which needs no training."""
    from nqs.training.run import CHECKPOINT

    if (run_dir / "summary.json").is_file():
        return str(run_dir)
    cfg = point_config(base, spec, run_dir, steps, None)
    problem, orbitals = matched_problem(cfg, None)
    if problem.sector.size == 1:
        return None
    from nqs.training.run import run

    start = time.perf_counter()
    save_orbitals(run_dir, orbitals)
    resume = (run_dir / CHECKPOINT).is_file() and (run_dir / "config.yaml").is_file()
    summary = run(cfg, run_dir, resume=resume, problem=problem)
    err = f"{summary['error_mha']:+.4f} mHa vs FCI" if summary["error_mha"] is not None else "no FCI"
    log(f"start at r = {r:.3f} Å: E = {summary['energy']:.8f} Ha ({err}); {steps} steps from "
        f"scratch; {time.perf_counter() - start:.1f} s")
    return str(run_dir)


def run_curve(base: TrainConfig, settings: CurveSettings, out: Path, log: Callable[[str], None] = print,
              stop_after: int | None = None) -> list[CurvePoint]:
    """Every geometry of the scan in order; finished points are read back. `stop_after`: testing aid, a
    KeyboardInterrupt once that many points were computed by this call."""
    from nqs.training.run import CHECKPOINT

    spec0 = resolve_molecule(mol=base.mol, geometry=base.geometry, charge=base.charge, spin=base.spin, basis=base.basis)
    scan = make_scan(spec0, settings.bond, settings.atom, settings.fragment)
    first, later = settings.steps(base)
    points, previous, computed = [], base.init_from, 0
    if previous is None:
        previous = start_run(base, scan.geometry(spec0, scan.values[0]), scan.values[0], out / START, first, log)
    for r in scan.values:
        spec = scan.geometry(spec0, r)
        run_dir = out / point_name(r)
        start = time.perf_counter()
        if (run_dir / "summary.json").is_file():
            summary, status = json.loads((run_dir / "summary.json").read_text()), "finished earlier"
        else:
            cfg = point_config(base, spec, run_dir, later, previous, settings.anneal_per_point,
                               settings.lr_per_point)
            problem = build_point_problem(cfg)
            if problem.sector.size == 1:
                summary, status = exact_point(cfg, problem, run_dir), "one configuration: exact, no training"
            else:
                warm = f"warm start from {Path(previous).name}" if previous else "from scratch"
                reference = Path(previous) if previous else None
                summary, status = train_point(cfg, run_dir, reference), f"{cfg.steps} steps, {warm}"
            computed += 1
        point = point_from_summary(r, summary, spec, run_dir)
        points.append(point)
        if (run_dir / CHECKPOINT).is_file():
            previous = str(run_dir)
        err = f"{point.error_mha:+.4f} mHa vs FCI" if point.error_mha is not None else "no FCI"
        log(f"r = {r:.3f} Å: E = {point.energy:.8f} Ha ({err}); {status}; {time.perf_counter() - start:.1f} s")
        if stop_after is not None and computed >= stop_after and r != scan.values[-1]:
            raise KeyboardInterrupt
    return points


@contextmanager
def curve_lock(out: Path):
    """One process at a time per curve directory: OUT/.lock holds the owner's pid (this host); a lock left by a
    process that no longer runs is taken over."""
    path = out / ".lock"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            text = path.read_text().strip() if path.is_file() else ""
            pid = int(text) if text.isdigit() else None
            if pid is not None and _alive(pid):
                raise UserError(f"{out} is in use by another nqs-curve (pid {pid}): wait for it or stop it; "
                                f"two processes must not train the same geometries") from None
            path.unlink(missing_ok=True)
    else:
        raise UserError(f"cannot lock {path}: remove it if no nqs-curve is running there")
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def curve_table(points: list[CurvePoint]) -> str:
    """A Markdown table, one row per geometry: energies in Hartree, errors vs FCI in mHa."""

    def e(v):
        return f"{v:.8f}" if v is not None else "—"

    def m(v):
        return f"{v:+.4f}" if v is not None else "—"

    lines = ["| r (Å) | E_NQS (Ha) | ± | HF | CCSD | CCSD(T) | FCI | NQS − FCI (mHa) | CCSD(T) − FCI (mHa) | steps |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.r:.3f} | {e(p.energy)} | {p.energy_err:.1e} | {e(p.e_hf)} | {e(p.e_ccsd)} | "
                     f"{e(p.e_ccsd_t)} | {e(p.e_fci)} | {m(p.error_mha)} | {m(p.ccsd_t_error_mha)} | "
                     f"{p.steps}{' (exact)' if p.exact else ''} |")
    errors = [abs(p.error_mha) for p in points if p.error_mha is not None]
    if errors:
        lines.append(f"max |NQS − FCI| = {max(errors):.4g} mHa over {len(errors)} points "
                     f"({sum(x < 1.6 for x in errors)} within chemical accuracy, 1.6 mHa)")
    return "\n".join(lines)


def write_json(points: list[CurvePoint], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([p.record() for p in points], indent=1) + "\n")


def settings_record(base: TrainConfig, settings: CurveSettings) -> dict:
    train = dataclasses.asdict(base)
    train["unique_window"] = list(base.unique_window)
    return {"curve": dataclasses.asdict(settings), "train": train}
