"""The run record: one step of `metrics.jsonl` and a run's `summary.json`, defined once.

Both are frozen dataclasses with `to_json()` / `from_json()` and a schema version. Derived quantities
(`error_mha`, `within_chemical_accuracy`) are properties computed from the energies (Hartree) and the
reference energy, so no writer or reader computes them itself. Records written by earlier versions of the code
(no `schema`, `error_mha` stored instead of the reference energy) still load.
"""
from __future__ import annotations

import functools
import json
import math
import os
import typing
import warnings
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nqs.errors import UserError

SCHEMA_VERSION = 2
CHEMICAL_ACCURACY_MHA = 1.6  # 1 kcal/mol in milli-Hartree
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT = Path("checkpoints") / "last.ckpt"  # the resumable checkpoint in a run directory
LOWEST_CHECKPOINT = Path("checkpoints") / "lowest.ckpt"  # --final-weights lowest: those weights (--init-from)
N_FROM = ("total", "modulus", "phase", "effective", "effective_modulus")  # RunSummary.n_from choices
D_FROM = ("realised", "nominal", "full")  # RunSummary.d_from choices


def branch_checkpoint(step: int) -> Path:
    """The checkpoint kept after `step` steps (keep_every), from which branches start."""
    return Path("checkpoints") / f"step-{step:06d}.ckpt"

ERROR_BAR_COVERS = ("statistical error of the mean, sqrt(Var(E_loc) / N_s) for the N_s multinomial samples kept "
                    "by the unique-sample cap; it does not cover the bias of the dropped probability mass "
                    "(1 - kept_mass)")

TAIL_ERROR_BAR_COVERS = ("statistical error of the final energy with its tail estimated: the configurations the "
                         "unique cap kept (mass final_kept_mass) are summed with their exact p(x), the dropped part "
                         "comes from an independent second draw (final_tail), and the error is that draw's; "
                         "unbiased, so it covers the dropped mass")


def error_mha(energy: float | None, reference: float | None) -> float | None:
    """(energy - reference) in milli-Hartree, None when either is unknown."""
    if energy is None or reference is None:
        return None
    return (energy - reference) * 1e3


def within_chemical_accuracy(err_mha: float | None) -> bool | None:
    """|error| < 1.6 mHa; None when the error is unknown."""
    return None if err_mha is None else abs(err_mha) < CHEMICAL_ACCURACY_MHA


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    v = _num(value)
    return int(v) if v is not None and math.isfinite(v) else None


_DERIVED = ("error_mha", "within_chemical_accuracy")


_LENIENT = {int: _int, float: _num, bool: lambda v: None if v is None else bool(v),
            str: lambda v: None if v is None else str(v)}


@functools.lru_cache(maxsize=None)
def _converters(cls) -> tuple[tuple[str, Any], ...]:
    """(field name, converter or None) per field of `cls`, from its type hints (resolved once per class:
    `typing.get_type_hints` costs ~1 ms, which per metrics line was most of reading a run)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        base = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        out.append((f.name, _LENIENT.get(base)))
    return tuple(out)


def _coerce_fields(cls, data: dict) -> dict:
    """Keyword arguments for `cls` from a JSON object: known keys only, numbers coerced by the fields' type
    hints (an unreadable value becomes None), missing -> default."""
    return {name: convert(data[name]) if convert else data[name] for name, convert in _converters(cls)
            if name in data}


def _reference_from_error(data: dict) -> float | None:
    """Older records stored error_mha instead of the reference energy: recover E_ref = E - error/1000."""
    energy, err = _num(data.get("energy")), _num(data.get("error_mha"))
    return None if energy is None or err is None else energy - err / 1e3


@dataclass(frozen=True)
class StepRecord:
    """One optimisation step (one line of metrics.jsonl). Energies in Hartree, times in seconds."""

    step: int
    energy: float = field(metadata={"help": "training estimate of <H> over the step's samples"})
    energy_err: float = field(metadata={
        "help": "sqrt(Var/N_s), with --tail the tail draw's error; see ERROR_BAR_COVERS"})
    variance: float = field(metadata={"help": "Var(E_loc), Hartree^2"})
    vscore: float | None = field(default=None, metadata={"help": "N_e Var / (E - E_inf)^2"})
    e_fci: float | None = field(default=None, metadata={"help": "FCI energy; older records: the error's reference"})
    e_ref: float | None = field(default=None, metadata={
        "help": "reference energy the error is taken against (the best available, ref_kind); None: e_fci"})
    ref_kind: str | None = field(default=None, metadata={"help": "fci | dmrg | ccsd_t | ccsd | mp2 | hf"})
    n_unique: int = 0
    n_samples: float = field(default=0.0, metadata={"help": "N_s behind the weights (the samples the cap kept)"})
    n_requested: float | None = field(default=None, metadata={"help": "N_s asked of the sampler"})
    kept_mass: float | None = field(default=None, metadata={"help": "sum of p(x) over the sampled configurations"})
    tail_correction: float | None = field(default=None, metadata={
        "help": "with --tail: what the step's tail draw moved the energy from its capped sample's mean (Hartree)"})
    s_f: float = field(default=0.0, metadata={"help": "realised sample fraction n_unique / |sector|"})
    d_prime: float = field(default=0.0, metadata={"help": "running sum of s_f over the steps so far"})
    s_f_full: float = field(default=0.0, metadata={"help": "n_unique / 2^n_qubits"})
    d_prime_full: float = field(default=0.0, metadata={"help": "running sum of s_f_full"})
    s_f_nominal: float | None = field(default=None, metadata={
        "help": "nominal sample fraction min(B, |sector|) / |sector| for the step's unique cap B"})
    d_prime_nominal: float | None = field(default=None, metadata={"help": "running sum of s_f_nominal"})
    lr: float | None = None
    temperature: float = 0.0
    wall_s: float = field(default=0.0, metadata={"help": "run time so far: sum of the real times between steps"})
    t_step: float | None = field(default=None, metadata={"help": "real time of this step, framework included"})
    t_sampling: float = 0.0
    t_local_energy: float = 0.0
    t_backward: float = field(default=0.0, metadata={"help": "gradient phase: loss forward, backward, optimiser"})
    t_framework: float | None = field(default=None, metadata={"help": "t_step minus the VMC step function"})
    n_evals: int = 0
    n_connected: int = 0
    local_energy: str | None = field(default=None, metadata={
        "help": "local-energy estimator as run: exact-dense | exact-trie | sampled | semi-stochastic"})
    flops_step: dict = field(default_factory=dict)
    flops_total: float = 0.0
    sr_shift: float | None = field(default=None, metadata={"help": "sr: the diagonal shift λ of this step"})
    sr_metric_step: float | None = field(default=None, metadata={"help": "sr: lr·√(dᵀSd) of the step taken"})
    sr_tail_rows: int | None = field(default=None, metadata={"help": "sr: rows for configurations outside the "
                                                              "sample (--sr-tail)"})
    sr_leak: float | None = field(default=None, metadata={
        "help": "sr: probability the step moved out of the sample and tail rows (--sr-max-leak, nqs.sr_leak)"})
    sr_leak_halvings: int | None = field(default=None, metadata={
        "help": "sr: times the step was halved to keep its leak within --sr-max-leak and its realised distance "
                "within --sr-max-distance"})
    sr_distance: float | None = field(default=None, metadata={
        "help": "sr: realised Fubini-Study distance of the step over the sample and tail rows, radians "
                "(with --sr-max-leak or --sr-max-distance; nqs.sr_leak)"})

    @property
    def error_mha(self) -> float | None:
        return error_mha(self.energy, self.e_ref if self.e_ref is not None else self.e_fci)

    @property
    def within_chemical_accuracy(self) -> bool | None:
        return within_chemical_accuracy(self.error_mha)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["error_mha"] = self.error_mha  # derived; written for readers outside the package (jq, pandas)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "StepRecord":
        """A step from a metrics.jsonl object; raises ValueError without step/energy."""
        if _int(data.get("step")) is None or _num(data.get("energy")) is None:
            raise ValueError("a step record needs 'step' and 'energy'")
        kwargs = _coerce_fields(cls, data)
        kwargs.setdefault("energy_err", None)
        kwargs.setdefault("variance", None)
        if kwargs.get("e_fci") is None and kwargs.get("e_ref") is None:
            kwargs["e_fci"] = _reference_from_error(data)
        kwargs["flops_step"] = data.get("flops_step") if isinstance(data.get("flops_step"), dict) else {}
        # a null where the field has a non-null default (an older writer's gap) takes the default
        defaults = {f.name for f in fields(cls) if f.default is not MISSING and f.default is not None}
        return cls(**{k: v for k, v in kwargs.items() if v is not None or k not in defaults})


@dataclass(frozen=True)
class RunSummary:
    """A run's summary.json: the final energy from a fresh large sample, references and run totals.

    Energies in Hartree; `scan` is set on curve points ({"coordinate": "r", "value": 1.2, "unit": "Å"}).
    `notes` lists every default the code changed and every step it skipped, in words."""

    molecule: str
    ansatz: str
    schema: int = SCHEMA_VERSION
    n_qubits: int | None = None
    n_alpha: int | None = None
    n_beta: int | None = None
    sector_size: float | None = None
    n_params: int | None = None
    n_params_modulus: int | None = None
    n_params_phase: int | None = None
    n_params_effective: int | None = field(default=None, metadata={
        "help": "parameters some configuration's log psi depends on (MADE: unmasked weights of live units)"})
    steps: int | None = None
    samples: float | None = None
    unique: int | None = None
    energy: float | None = None
    energy_err: float | None = None
    error_bar_covers: str | None = None
    variance: float | None = None
    vscore: float | None = None
    final_n_unique: int | None = None
    final_n_samples: float | None = None
    final_n_requested: float | None = None
    final_kept_mass: float | None = None
    final_tail: dict | None = field(default=None, metadata={
        "help": "the dropped part of the final energy, from a second draw (nqs.vmc.TailEstimate): "
                "head_mass, head_energy, n_samples, draws, unique, correction, error (Hartree); None when the "
                "final sample kept all the mass, with --final-tail 0, and in runs before it was recorded"})
    e_fci: float | None = None
    e_ref: float | None = field(default=None, metadata={
        "help": "the best available reference (ref_kind), which error_mha is taken against; None in older runs: e_fci"})
    ref_kind: str | None = field(default=None, metadata={"help": "fci | dmrg | ccsd_t | ccsd | mp2 | hf"})
    ref_uncertainty: float | None = field(default=None, metadata={
        "help": "the reference's own uncertainty, Ha: 0 for FCI, DMRG's extrapolation distance, None when unknown"})
    e_dmrg: float | None = None
    e_ccsd_t: float | None = None
    e_ccsd: float | None = None
    e_mp2: float | None = None
    e_hf: float | None = None
    e_inf: float | None = None
    d_prime: float | None = field(default=None, metadata={"help": "sum over steps of n_unique / |sector|"})
    d_prime_full: float | None = field(default=None, metadata={"help": "sum over steps of n_unique / 2^n_qubits"})
    d_prime_nominal: float | None = field(default=None, metadata={
        "help": "sum over steps of min(B, |sector|) / |sector|, B the step's unique cap (None in older runs)"})
    flops_total: float | None = None
    wall_s: float | None = None
    t_framework_s: float | None = None
    command_wall_s: float | None = None
    seed: int | None = None
    device: str | None = None
    torch_threads: int | None = None
    peak_rss_gib: float | None = field(default=None, metadata={
        "help": "the process's peak resident memory over the command (GiB; None in runs before it was recorded)"})
    peak_device_gib: float | None = field(default=None, metadata={
        "help": "CUDA: the most memory torch held allocated on the run's GPU (GiB); None on the CPU"})
    exact: bool = False
    energy_enum: float | None = None
    optimizer: str | None = None
    local_energy: str | None = field(default=None, metadata={
        "help": "training's local-energy path as run (exact-dense | exact-trie | sampled | semi-stochastic)"})
    connections: str | None = field(default=None, metadata={
        "help": "how E_loc found the connections as run: pauli (tables) | integrals (Slater-Condon); None in runs "
                "before it was recorded (they used the Pauli tables)"})
    estimator: str | None = field(default=None, metadata={
        "help": "what training's E_loc estimated: exact | sampled | semi-stochastic(weighted_threshold=..,draws=..); "
                "None in runs before it was recorded (they were exact); the final energy is always exact"})
    schedule: dict | None = None  # learning-rate and annealing schedule as run: kind, warmup, decay, decay_start
    stop_reason: str | None = None  # steps | converged | max_time | patience
    criteria_met: dict | None = None  # stopping criterion -> first step at which it held
    final_weights: dict | None = field(default=None, metadata={
        "help": "the weights the final energy was evaluated with: {kind: last | lowest, step: the optimisation "
                "steps applied to them (lowest: the metrics row whose training energy measured them), and for "
                "lowest that row's training_energy and training_energy_err (Hartree)}; None in runs before it was "
                "recorded (the last weights)"})
    branch: dict | None = None  # {"trunk": run directory, "step": branch step} for a branch of a trunk run
    scan: dict | None = None
    notes: tuple = ()
    path: Path | None = field(default=None, compare=False, metadata={"json": False})  # the run directory read

    @property
    def hf_error_mha(self) -> float | None:
        return self.reference_error_mha("hf")

    @property
    def ccsd_error_mha(self) -> float | None:
        return self.reference_error_mha("ccsd")

    @property
    def ccsd_t_error_mha(self) -> float | None:
        return self.reference_error_mha("ccsd_t")

    @property
    def reference_energy(self) -> float | None:
        """The energy `error_mha` is taken against: e_ref, else (older runs) e_fci."""
        return self.e_ref if self.e_ref is not None else self.e_fci

    @property
    def reference_label(self) -> str | None:
        """'FCI', 'DMRG', 'CCSD(T)', ... of `reference_energy`; None without one."""
        from nqs.references import LABELS

        if self.e_ref is not None and self.ref_kind is not None:
            return LABELS.get(self.ref_kind, self.ref_kind)
        return "FCI" if self.reference_energy is not None else None

    @property
    def error_mha(self) -> float | None:
        return error_mha(self.energy, self.reference_energy)

    @property
    def abs_error_mha(self) -> float | None:
        err = self.error_mha
        return None if err is None else abs(err)

    @property
    def within_chemical_accuracy(self) -> bool | None:
        return within_chemical_accuracy(self.error_mha)

    def reference_error_mha(self, method: str) -> float | None:
        """Error of a reference method ('hf', 'mp2', 'ccsd', 'ccsd_t', 'dmrg') against `reference_energy`, mHa."""
        return error_mha(getattr(self, f"e_{method}"), self.reference_energy)

    def n_from(self, which: str = "total") -> int | None:
        """The parameter count used as N (one of N_FROM): all parameters, the modulus or phase network's, the
        effective ones (`n_params_effective`) or the effective modulus ones (effective - phase; the phase MLP
        has no unused parameters). None when the record lacks the count (older runs lack the effective one)."""
        if which not in N_FROM:
            raise UserError(f"unknown parameter count {which!r}: choose one of {', '.join(N_FROM)}")
        if which == "effective_modulus":
            eff, phase = self.n_params_effective, self.n_params_phase
            return None if eff is None or phase is None else eff - phase
        return {"total": self.n_params, "modulus": self.n_params_modulus, "phase": self.n_params_phase,
                "effective": self.n_params_effective}[which]

    def d_from(self, which: str = "realised") -> float | None:
        """The data count D' (one of D_FROM): "realised" sums n_unique / |sector| over the steps (d_prime),
        "nominal" sums min(B, |sector|) / |sector| (d_prime_nominal), "full" sums n_unique / 2^n_qubits.

        Runs written before d_prime_nominal was recorded get steps * min(unique, sector_size) / sector_size,
        exact for their constant unique cap; None when those are missing too."""
        if which not in D_FROM:
            raise UserError(f"unknown data count {which!r}: choose one of {', '.join(D_FROM)}")
        if which == "realised":
            return self.d_prime
        if which == "full":
            return self.d_prime_full
        if self.d_prime_nominal is not None:
            return self.d_prime_nominal
        if self.steps is None or self.unique is None or not self.sector_size:
            return None
        return self.steps * min(self.unique, self.sector_size) / self.sector_size

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("json", True)}
        data["notes"] = list(self.notes)
        data["error_mha"] = self.error_mha
        data["within_chemical_accuracy"] = self.within_chemical_accuracy
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunSummary":
        """A summary from its JSON object; raises ValueError without molecule and ansatz."""
        missing = [k for k in ("molecule", "ansatz") if not data.get(k)]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        kwargs = _coerce_fields(cls, data)
        kwargs.pop("path", None)
        if kwargs.get("e_fci") is None and kwargs.get("e_ref") is None:
            kwargs["e_fci"] = _reference_from_error(data)
        kwargs["schema"] = _int(data.get("schema")) or 1
        kwargs["exact"] = bool(data.get("exact", False))
        for key in ("scan", "schedule", "criteria_met", "branch"):
            kwargs[key] = data.get(key) if isinstance(data.get(key), dict) else None
        notes = data.get("notes")
        kwargs["notes"] = tuple(str(n) for n in notes) if isinstance(notes, list) else ()
        return cls(**kwargs)

    def write(self, run_dir: Path) -> None:
        """Write run_dir/summary.json atomically."""
        path = Path(run_dir) / SUMMARY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)


# --- reading run directories ---------------------------------------------------------------------------------
def read_summary(run_dir: str | os.PathLike) -> RunSummary:
    """run_dir/summary.json as a RunSummary (with `path` set); UserError when missing, not JSON, or without
    molecule and ansatz."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; pass a run directory written by nqs-train") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-run or remove that run") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object; re-run or remove that run")
    try:
        return replace(RunSummary.from_json(data), path=Path(run_dir))
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} {exc}; re-run or remove that run") from None


def read_metrics(path: str | os.PathLike) -> tuple[StepRecord, ...]:
    """metrics.jsonl (a file, or a run directory holding one) as StepRecords.

    A truncated or corrupt line (not JSON, not an object, or without step and energy) is skipped with a
    warning naming the file and the 1-based line number; blank lines are ignored."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass a run directory written by nqs-train")
    rows = []
    with path.open("r", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(StepRecord.from_json(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError, AttributeError):
                warnings.warn(f"{path}:{lineno}: skipped a truncated or corrupt line", stacklevel=2)
    return tuple(rows)
