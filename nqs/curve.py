"""Potential-energy curves: one NQS run per geometry along a scan coordinate, each warm-started from the last.

A curve directory holds curve.yaml (the scan and the base training config), `start/` (a from-scratch run at
the first geometry) and one ordinary run directory per geometry, `r=1.200/`, written by
`nqs.training.run.run`. With a meeting point there are two chains: the second starts from `start-last/`, a
from-scratch run at the last geometry, and walks back towards the meeting point. Every point trains
`steps_per_point` steps from the previous run's parameters (of its chain), in
orbitals matched to that run's (`matched_problem`): canonical orbitals change sign and order from one
geometry to the next, which would scramble the amplitudes a warm start carries over. A point whose
summary.json exists is finished and is read back, so an interrupted scan continues where it stopped (a point
interrupted mid-run continues from its checkpoint). Exact limits need no training: a sector of one
configuration (H2 with charge +2 has no electrons) has the energy of its single diagonal element, FCI
exactly; its run directory gets a summary.json of the same keys with steps 0.

Scan coordinates are in `nqs.scan`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from nqs.errors import UserError
from nqs.molecules import MoleculeSpec, parse_geometry, resolve_molecule
from nqs.scan import Scan, geometry_text, make_scan, nuclear_repulsion, point_name
from nqs.training.config import TrainConfig

TINY_SECTOR = 16  # at most this many configurations (H2, H2+): TINY_SECTOR_DEFAULTS unless given
TINY_SECTOR_DEFAULTS = {"dtype": "float64", "lr": 3e-2}
ENUMERATE_MAX = 4096  # sectors up to this size also get the exactly enumerated <H> of the final parameters
ORBITALS = "orbitals.npz"  # in each run directory: the matched orbitals its Hamiltonian was built in
START = "start"  # the from-scratch run at the first geometry, beside the points
START_LAST = "start-last"  # with a meeting point (--meet): the from-scratch run at the last geometry
POINT_KEYS = ("r", "energy", "energy_err", "e_hf", "e_ccsd", "e_ccsd_t", "e_fci", "error_mha")


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
    meet: float | None = None  # two chains: up to this r (Å) from the first geometry, the rest from the last

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
    """The from-scratch run at a chain's first geometry (`steps` steps) that its first point warm-starts from, so
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


@dataclass(frozen=True)
class Chain:
    """Geometries `values` (Å, in training order), each warm-started from the one before; the first from the
    from-scratch run in `start` (a directory name under the curve directory) at values[0]."""

    start: str
    values: tuple[float, ...]


def chains(values: tuple[float, ...], meet: float | None) -> list[Chain]:
    """One chain in the order given; with `meet`, two that meet in the middle: values up to and including
    `meet` forwards from the first geometry, the rest backwards from the last. A warm start carries a state
    across a small change of geometry only: N2 reaches stretched bonds far more easily from the stretched side
    (docs/faithfulness.md)."""
    if meet is None:
        return [Chain(START, tuple(values))]
    names = [point_name(r) for r in values]
    if point_name(meet) not in names[:-1]:
        raise UserError(f"--meet {meet:g} must be one of the scan's distances other than the last "
                        f"({', '.join(f'{r:g}' for r in values[:-1])}): the first chain ends there")
    k = names.index(point_name(meet)) + 1
    return [Chain(START, tuple(values[:k])), Chain(START_LAST, tuple(reversed(values[k:])))]


def run_chain(base: TrainConfig, settings: CurveSettings, out: Path, spec0: MoleculeSpec, scan: Scan,
              chain: Chain, log: Callable[[str], None] = print, stop_after: int | None = None) -> list[CurvePoint]:
    """The geometries of one chain (of `scan` applied to `spec0`) in order; finished points are read back.
    `stop_after`: testing aid, a KeyboardInterrupt once that many points were computed by this call."""
    from nqs.training.run import CHECKPOINT

    first, later = settings.steps(base)
    points, previous, computed = [], base.init_from, 0
    if previous is None:
        r0 = chain.values[0]
        previous = start_run(base, scan.geometry(spec0, r0), r0, out / chain.start, first, log)
    for r in chain.values:
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
        if stop_after is not None and computed >= stop_after and r != chain.values[-1]:
            raise KeyboardInterrupt
    return points


def run_curve(base: TrainConfig, settings: CurveSettings, out: Path, log: Callable[[str], None] = print,
              stop_after: int | None = None, parallel: bool = False) -> list[CurvePoint]:
    """Every geometry of the scan, chain by chain (`parallel`: the chains at once, one process each), returned in
    scan order. `stop_after`: testing aid, see run_chain (per chain)."""
    spec0 = resolve_molecule(mol=base.mol, geometry=base.geometry, charge=base.charge, spin=base.spin, basis=base.basis)
    scan = make_scan(spec0, settings.bond, settings.atom, settings.fragment)
    plan = chains(scan.values, settings.meet)
    tags = [""] if len(plan) == 1 else [f"[chain {i + 1}] " for i in range(len(plan))]
    if parallel and len(plan) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(plan), mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = [pool.submit(_chain_process, base, settings, out, spec0, scan, chain, tag, stop_after)
                    for chain, tag in zip(plan, tags)]
            done = [job.result() for job in jobs]
    else:
        done = [run_chain(base, settings, out, spec0, scan, chain, _tagged(log, tag), stop_after)
                for chain, tag in zip(plan, tags)]
    by_name = {point_name(p.r): p for points in done for p in points}
    return [by_name[point_name(r)] for r in scan.values]


def _tagged(log: Callable[[str], None], tag: str) -> Callable[[str], None]:
    return log if not tag else (lambda line: log(tag + line))


def _chain_process(base, settings, out, spec0, scan, chain, tag, stop_after) -> list[CurvePoint]:
    """run_chain in a worker process, printing its log lines prefixed with `tag`."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    log = _tagged(lambda line: print(line, flush=True), tag)
    return run_chain(base, settings, out, spec0, scan, chain, log, stop_after)


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
