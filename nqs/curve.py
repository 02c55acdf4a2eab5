"""Potential-energy curves: one NQS run per geometry along a scan coordinate, each warm-started from the last.

A curve directory holds curve.yaml (the scan, the base training config and the notes of the defaults the
curve changed), `start/` (a from-scratch run at the first geometry) and one ordinary run directory per
geometry, `r=1.200/`, written by `nqs.training.run.run`. With a meeting point there are two chains: the second
starts from `start-last/`, a from-scratch run at the last geometry, and walks back towards the meeting point.
Every point trains `steps_per_point` steps from the previous run's parameters (of its chain), in orbitals
matched to that run's (`nqs.orbitals.match`, saved as orbitals.npz in each run directory): canonical orbitals
change sign and order from one geometry to the next, which would scramble the amplitudes a warm start carries
over. Each geometry's Hamiltonian, canonical and matched, comes from the problem cache (`nqs.problem`), so a
rerun rebuilds nothing that was built before. A point whose summary.json exists is finished and is read back
(`nqs.record.RunSummary`), so an interrupted scan continues where it stopped (a point interrupted mid-run
continues from its checkpoint). Exact limits need no training: a sector of one configuration (H2 with charge
+2 has no electrons) has the energy of its single diagonal element, FCI exactly, recorded with steps 0.

Every point's record keeps the molecule's name and its scan coordinate (`RunSummary.scan`); every default the
curve changes (TINY_SECTOR_DEFAULTS) and every orbital matching it could not do is printed and written into
the record's notes. Scan coordinates are in `nqs.scan`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nqs.chem import OrbitalOptions, nuclear_repulsion
from nqs.errors import UserError
from nqs.molecules import MoleculeSpec
from nqs.orbitals import ORBITALS_FILE, match, read_reference
from nqs.problem import MolecularProblem, build_problem
from nqs.record import SUMMARY_FILE, RunSummary, read_summary
from nqs.scan import Scan, geometry_text, make_scan, point_name
from nqs.training.config import TrainConfig

TINY_SECTOR = 16  # at most this many configurations (H2, H2+): TINY_SECTOR_DEFAULTS unless given
TINY_SECTOR_DEFAULTS = {"dtype": "float64", "lr": 3e-2}
ENUMERATE_MAX = 4096  # sectors up to this size also get the exactly enumerated <H> of the final parameters
START = "start"  # the from-scratch run at the first geometry, beside the points
START_LAST = "start-last"  # with a meeting point (--meet): the from-scratch run at the last geometry


# --- one point -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurvePoint:
    """One geometry: its run record (energies in Hartree), r in Å, and the nuclear repulsion (Hartree)."""

    r: float
    summary: RunSummary
    run_dir: str
    e_nuc: float

    @property
    def error_mha(self) -> float | None:
        return self.summary.error_mha

    @property
    def ccsd_t_error_mha(self) -> float | None:
        return self.summary.reference_error_mha("ccsd_t")

    def record(self) -> dict:
        """One entry of `nqs-curve --json`: the run record with r, the CCSD(T) error, E_nuc and the run directory."""
        return {"r": self.r, **self.summary.to_json(), "ccsd_t_error_mha": self.ccsd_t_error_mha,
                "e_nuc": self.e_nuc, "run_dir": self.run_dir}


def base_molecule(cfg: TrainConfig) -> MoleculeSpec:
    """The curve's molecule before its scan coordinate is set, named by `name` when the config gives one."""
    from nqs.training.build import molecule_of

    spec = molecule_of(cfg)[0]
    return replace(spec, name=cfg.molecule.name) if cfg.molecule.name else spec


def orbital_options(cfg: TrainConfig) -> OrbitalOptions:
    from nqs.training.build import molecule_of

    return molecule_of(cfg)[1]


@dataclass(frozen=True)
class PointProblem:
    """A geometry's problem in the orbitals its run trains in; `orbitals` describes them, `notes` says what
    could not be done, `cached`: nothing was built (no SCF, no Jordan-Wigner)."""

    problem: MolecularProblem
    orbitals: str
    notes: tuple[str, ...]
    cached: bool


def point_problem(cfg: TrainConfig, spec: MoleculeSpec, reference: Path | None) -> PointProblem:
    """The cached problem of `spec` in its canonical orbitals matched to those of the run in `reference` (its
    orbitals.npz; None: canonical). When they cannot be matched the canonical orbitals are used and the notes
    say why. Energies are unchanged: references come from the cached canonical problem."""
    options, fci_max = orbital_options(cfg), cfg.molecule.fci_max_dets
    canonical = build_problem(spec, options, fci_max_dets=fci_max)
    if reference is None or canonical.sector.size == 1:
        return PointProblem(canonical, "canonical orbitals", (), canonical.from_cache)
    ref, notes = read_reference(reference)
    matching = match(canonical.orbitals, ref, label=reference.name) if ref is not None else None
    if matching is None or not matching.matched:
        notes = notes + (matching.notes if matching else ())
        return PointProblem(canonical, "canonical orbitals (see note)", notes, canonical.from_cache)
    if matching.reordered == matching.resigned == 0:  # the canonical orbitals already follow the reference
        return PointProblem(canonical, matching.describe(), (), canonical.from_cache)
    problem = build_problem(spec, options, fci_max_dets=fci_max, orbitals=matching.orbitals)
    return PointProblem(problem, matching.describe(), (), canonical.from_cache and problem.from_cache)


def exact_point(cfg: TrainConfig, problem: MolecularProblem, out: Path, scan: dict,
                notes: tuple[str, ...] = ()) -> RunSummary:
    """A one-configuration sector: E = <x|H|x> from the qubit Hamiltonian, no training; writes the run directory."""
    from nqs.local_energy import connections

    start = time.perf_counter()
    bits = problem.sector.enumerate_bits()
    energy = float(connections(problem.compiled("cpu"), bits).diagonal[0].real)
    refs = problem.references
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.to_yaml())
    wall = time.perf_counter() - start
    summary = RunSummary(
        molecule=problem.spec.name, ansatz=cfg.model.ansatz, n_qubits=problem.n_qubits,
        n_alpha=problem.sector.n_alpha, n_beta=problem.sector.n_beta, sector_size=1, n_params=0,
        n_params_modulus=0, n_params_phase=0, steps=0, samples=cfg.sampling.samples, unique=cfg.sampling.unique,
        energy=energy, energy_err=0.0, error_bar_covers="none needed: the sector's one configuration, no sampling",
        variance=0.0, final_n_unique=1, final_n_samples=0, final_kept_mass=1.0, e_fci=refs.e_fci,
        e_ccsd_t=refs.e_ccsd_t, e_ccsd=refs.e_ccsd, e_mp2=refs.e_mp2, e_hf=refs.e_hf, e_inf=problem.e_inf,
        d_prime=0.0, d_prime_full=0.0, flops_total=0.0, wall_s=wall, command_wall_s=wall, seed=cfg.run.seed,
        device="cpu", exact=True, energy_enum=energy, scan=scan, notes=tuple(notes))
    summary.write(out)
    return summary


def enumerated_energy(cfg: TrainConfig, run_dir: Path, problem: MolecularProblem) -> float:
    """<psi|H|psi> of the run's final parameters, summing |psi(x)|^2 E_loc(x) over the whole sector exactly."""
    import torch

    from nqs.local_energy import local_energy
    from nqs.training.build import build

    problem, model = build(cfg.updated(init_from=str(run_dir)), problem)
    model.eval()
    bits = problem.sector.enumerate_bits()
    with torch.no_grad():
        log_psi = model.log_psi(bits)
        p = torch.exp(2 * log_psi.real.to(torch.float64))
        e_loc = local_energy(problem.compiled("cpu"), bits, model.log_psi).values.real
    return float((p * e_loc).sum() / p.sum())


def train_point(cfg: TrainConfig, run_dir: Path, problem: MolecularProblem, scan: dict,
                notes: tuple[str, ...] = ()) -> RunSummary:
    """Train in the problem's orbitals (saved as orbitals.npz), or continue an interrupted run in `run_dir`;
    small sectors also get the enumerated energy."""
    from nqs.training.run import CHECKPOINT, run

    problem.orbitals.save(run_dir / ORBITALS_FILE)
    resume = (run_dir / CHECKPOINT).is_file() and (run_dir / "config.yaml").is_file()
    summary = run(cfg, run_dir, resume=resume, problem=problem, scan=scan, notes=notes)
    if summary.sector_size <= ENUMERATE_MAX:
        summary = replace(summary, energy_enum=enumerated_energy(cfg, run_dir, problem))
        summary.write(run_dir)
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
        first = self.first_steps or cfg.optim.steps
        later = self.steps_per_point or max(first // 4, 50)
        if first < 1 or later < 1:
            raise UserError("--first-steps and --steps-per-point must be at least 1")
        return first, later


def point_config(base: TrainConfig, spec: MoleculeSpec, run_dir: Path, steps: int, init_from: str | None,
                 anneal_warm: float = 0.0, lr_warm: float | None = None) -> TrainConfig:
    """The run config of one geometry, a custom geometry named as the curve's molecule. A warm start anneals
    from `anneal_warm` (default 0), not from the config's anneal_t0: the entropy bonus T*S that lifts a fresh
    model off the Hartree-Fock plateau pushes a converged state away again. `lr_warm` (default: the config's lr)
    is a warm start's peak learning rate; its final rate is the config's lr_final or lr_warm if lower. A large
    peak knocks a converged state far back up."""
    warm = init_from is not None
    anneal = anneal_warm if warm else base.optim.anneal_t0
    lr = lr_warm if warm and lr_warm is not None else base.optim.lr
    return base.updated(mol=None, name=spec.name, geometry=geometry_text(spec), charge=spec.charge, spin=spec.spin,
                        basis=spec.basis, steps=steps, init_from=init_from, out=str(run_dir), anneal_t0=anneal,
                        lr=lr, lr_final=min(base.optim.lr_final, lr))


def tiny_sector_defaults(cfg: TrainConfig, sector_size: int, explicit: set[str]) -> tuple[TrainConfig, tuple[str, ...]]:
    """Sectors of at most TINY_SECTOR configurations (H2, H2+) train with TINY_SECTOR_DEFAULTS (float64, lr 3e-2)
    where the user gave neither; returns the config and a note saying what was changed. 1e-8 Ha needs float64;
    amplitudes that must vanish (symmetry-forbidden configurations) approach 0 only as fast as the logits run
    away, which lr 1e-2 makes slow. (Two H2, 36 configurations, can stall at lr 3e-2.)"""
    if sector_size > TINY_SECTOR:
        return cfg, ()
    changes = {k: v for k, v in TINY_SECTOR_DEFAULTS.items() if k not in explicit}
    if not changes:
        return cfg, ()
    what = " and ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in changes.items())
    flags = "/".join(f"--{k}" for k in changes)
    note = (f"sector of {sector_size} configurations: using {what} (TINY_SECTOR_DEFAULTS, at most {TINY_SECTOR} "
            f"configurations); pass {flags} to override")
    return cfg.updated(**changes), (note,)


def start_run(base: TrainConfig, scan: Scan, spec0: MoleculeSpec, r: float, run_dir: Path, steps: int,
              log: Callable[[str], None], notes: tuple[str, ...] = ()) -> str | None:
    """The from-scratch run at a chain's first geometry (`steps` steps) that its first point warm-starts from, so
    that every point ends with the same short warm-started schedule (and a fresh optimiser state: Adam's
    second moments remember the large early gradients and slow the approach to amplitudes that must vanish).
    None for a one-configuration sector, which needs no training."""
    from nqs.training.run import CHECKPOINT, run

    if (run_dir / SUMMARY_FILE).is_file():
        return str(run_dir)
    spec = scan.geometry(spec0, r)
    cfg = point_config(base, spec, run_dir, steps, None)
    point = point_problem(cfg, spec, None)
    if point.problem.sector.size == 1:
        return None
    start = time.perf_counter()
    point.problem.orbitals.save(run_dir / ORBITALS_FILE)
    resume = (run_dir / CHECKPOINT).is_file() and (run_dir / "config.yaml").is_file()
    summary = run(cfg, run_dir, resume=resume, problem=point.problem, scan={**scan.record(r), "role": "start"},
                  notes=notes)
    err = f"{summary.error_mha:+.4f} mHa vs FCI" if summary.error_mha is not None else "no FCI"
    log(f"start at r = {r:.3f} Å: E = {summary.energy:.8f} Ha ({err}); {steps} steps from scratch; "
        f"{_built(point)}; {time.perf_counter() - start:.1f} s")
    return str(run_dir)


def _built(point: PointProblem) -> str:
    return "Hamiltonian from the cache" if point.cached else "Hamiltonian built (SCF, Jordan-Wigner)"


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
              chain: Chain, log: Callable[[str], None] = print, stop_after: int | None = None,
              notes: tuple[str, ...] = ()) -> list[CurvePoint]:
    """The geometries of one chain (of `scan` applied to `spec0`) in order; finished points are read back.
    `notes` (the defaults the curve changed) go into every run record. `stop_after`: testing aid, a
    KeyboardInterrupt once that many points were computed by this call."""
    from nqs.training.run import CHECKPOINT

    first, later = settings.steps(base)
    points, previous, computed = [], base.run.init_from, 0
    if previous is None:
        previous = start_run(base, scan, spec0, chain.values[0], out / chain.start, first, log, notes)
    for r in chain.values:
        spec = scan.geometry(spec0, r)
        run_dir = out / point_name(r)
        start = time.perf_counter()
        if (run_dir / SUMMARY_FILE).is_file():
            summary, status = read_summary(run_dir), "finished earlier"
        else:
            cfg = point_config(base, spec, run_dir, later, previous, settings.anneal_per_point,
                               settings.lr_per_point)
            point = point_problem(cfg, spec, Path(previous) if previous else None)
            record = {**scan.record(r), "role": "point"}
            if point.problem.sector.size == 1:
                summary = exact_point(cfg, point.problem, run_dir, record, notes)
                status = "one configuration: exact, no training"
            else:
                warm = f"warm start from {Path(previous).name}" if previous else "from scratch"
                summary = train_point(cfg, run_dir, point.problem, record, notes + point.notes)
                status = f"{later} steps, {warm}, {point.orbitals}"
            status += f"; {_built(point)}"
            computed += 1
        point = CurvePoint(r, summary, str(run_dir), nuclear_repulsion(spec))
        points.append(point)
        if (run_dir / CHECKPOINT).is_file():
            previous = str(run_dir)
        err = f"{point.error_mha:+.4f} mHa vs FCI" if point.error_mha is not None else "no FCI"
        log(f"r = {r:.3f} Å: E = {summary.energy:.8f} Ha ({err}); {status}; {time.perf_counter() - start:.1f} s")
        if stop_after is not None and computed >= stop_after and r != chain.values[-1]:
            raise KeyboardInterrupt
    return points


def run_curve(base: TrainConfig, settings: CurveSettings, out: Path, log: Callable[[str], None] = print,
              stop_after: int | None = None, parallel: bool = False, notes: tuple[str, ...] = (),
              initializer: Callable[[int], None] | None = None) -> list[CurvePoint]:
    """Every geometry of the scan, chain by chain (`parallel`: the chains at once, one process each, set up by
    `initializer(threads)`), returned in scan order. `notes` go into every run record. `stop_after`: testing
    aid, see run_chain (per chain)."""
    if base.molecule.orbitals != "canonical":
        raise UserError("nqs-curve trains in canonical orbitals matched from geometry to geometry; --orbitals "
                        f"{base.molecule.orbitals} is not supported there: drop it")
    spec0 = base_molecule(base)
    scan = make_scan(spec0, settings.bond, settings.atom, settings.fragment)
    plan = chains(scan.values, settings.meet)
    tags = [""] if len(plan) == 1 else [f"[chain {i + 1}] " for i in range(len(plan))]
    if parallel and len(plan) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        setup = (initializer, (base.run.threads,)) if initializer is not None else (None, ())
        with ProcessPoolExecutor(len(plan), mp_context=multiprocessing.get_context("spawn"), initializer=setup[0],
                                 initargs=setup[1]) as pool:
            jobs = [pool.submit(_chain_process, base, settings, out, spec0, scan, chain, tag, stop_after, notes)
                    for chain, tag in zip(plan, tags)]
            done = [job.result() for job in jobs]
    else:
        done = [run_chain(base, settings, out, spec0, scan, chain, _tagged(log, tag), stop_after, notes)
                for chain, tag in zip(plan, tags)]
    by_name = {point_name(p.r): p for points in done for p in points}
    return [by_name[point_name(r)] for r in scan.values]


def _tagged(log: Callable[[str], None], tag: str) -> Callable[[str], None]:
    return log if not tag else (lambda line: log(tag + line))


def _chain_process(base, settings, out, spec0, scan, chain, tag, stop_after, notes) -> list[CurvePoint]:
    """run_chain in a worker process, printing its log lines prefixed with `tag`."""
    log = _tagged(lambda line: print(line, flush=True), tag)
    return run_chain(base, settings, out, spec0, scan, chain, log, stop_after, notes)


@contextmanager
def curve_lock(out: Path):
    """One process at a time per curve directory: an exclusive OS lock on OUT/.lock (filelock), which the
    operating system drops when its process ends, however it ends."""
    from filelock import FileLock, Timeout

    lock = FileLock(out / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{out} is in use by another nqs-curve: wait for it or stop it") from None
    except OSError as exc:
        raise UserError(f"cannot lock {out / '.lock'} ({exc.strerror}): choose an --out you can write to") from None
    try:
        yield
    finally:
        lock.release()


def settings_record(base: TrainConfig, settings: CurveSettings, notes: tuple[str, ...] = ()) -> dict:
    """curve.yaml: the curve settings, the flat base training config and the notes of the defaults changed."""
    train = base.flat()
    train["unique_window"] = list(train["unique_window"])
    return {"curve": asdict(settings), "train": train, "notes": list(notes)}
