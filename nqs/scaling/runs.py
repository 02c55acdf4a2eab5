"""Read training-run directories (written by `nqs-train`) into frozen records.

A run directory holds `summary.json` (one record per run), `metrics.jsonl` (one JSON object per
step) and `config.yaml`. Readers here are tolerant: a corrupt metrics line or a run without a
summary is skipped with a warning; a path that cannot be a run (or a folder of runs) is a
`UserError`.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nqs.errors import UserError

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
METRIC_CHOICES = ("vscore", "abs_error")
N_FROM_CHOICES = ("total", "modulus", "phase")


def _num(value: Any) -> float | None:
    """A finite-or-not float from a JSON value; None for null, bools, strings and the like."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _mha(energy: float | None, e_fci: float | None) -> float | None:
    if energy is None or e_fci is None:
        return None
    return (energy - e_fci) * 1000.0


@dataclass(frozen=True)
class RunRecord:
    """One run's `summary.json`. Energies in Hartree; `error_mha` = (energy − e_fci)·1000."""

    path: Path
    molecule: str
    ansatz: str
    n_qubits: int | None = None
    n_alpha: int | None = None
    n_beta: int | None = None
    sector_size: float | None = None
    n_params: float | None = None
    n_params_modulus: float | None = None
    n_params_phase: float | None = None
    steps: float | None = None
    samples: float | None = None
    unique: float | None = None
    energy: float | None = None
    energy_err: float | None = None
    variance: float | None = None
    vscore: float | None = None
    e_fci: float | None = None
    e_ccsd_t: float | None = None
    e_ccsd: float | None = None
    e_hf: float | None = None
    error_mha: float | None = None
    d_prime: float | None = None
    wall_s: float | None = None
    seed: int | None = None
    flops_total: float | None = None

    @property
    def abs_error_mha(self) -> float | None:
        """|E − E_FCI| in mHa (from `error_mha`, else recomputed from the energies)."""
        err = self.error_mha if self.error_mha is not None else _mha(self.energy, self.e_fci)
        return None if err is None else abs(err)

    @property
    def hf_error_mha(self) -> float | None:
        return _mha(self.e_hf, self.e_fci)

    @property
    def ccsd_error_mha(self) -> float | None:
        return _mha(self.e_ccsd, self.e_fci)

    @property
    def ccsd_t_error_mha(self) -> float | None:
        return _mha(self.e_ccsd_t, self.e_fci)

    def n_from(self, which: str = "total") -> float | None:
        """The parameter count used as N: all parameters, or the modulus or phase network's."""
        return {"total": self.n_params, "modulus": self.n_params_modulus,
                "phase": self.n_params_phase}[which]


_INT_FIELDS = ("n_qubits", "n_alpha", "n_beta", "seed")
_FLOAT_FIELDS = tuple(
    f for f in RunRecord.__dataclass_fields__ if f not in ("path", "molecule", "ansatz") + _INT_FIELDS
)


@dataclass(frozen=True)
class MetricsRow:
    """One logged training step of `metrics.jsonl`; missing fields are None."""

    step: int | None
    energy: float | None = None
    energy_err: float | None = None
    variance: float | None = None
    vscore: float | None = None
    error_mha: float | None = None
    n_unique: float | None = None
    n_samples: float | None = None
    s_f: float | None = None
    d_prime: float | None = None
    lr: float | None = None
    wall_s: float | None = None
    flops_total: float | None = None
    flops_step: dict[str, float] = field(default_factory=dict)


def read_summary(run_dir: str | os.PathLike) -> RunRecord:
    """Read `run_dir/summary.json`. Raises UserError when missing, not JSON, or without molecule/ansatz."""
    path = Path(run_dir) / SUMMARY
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; pass a run directory written by nqs-train") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-run or remove that run") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object; re-run or remove that run")
    missing = [k for k in ("molecule", "ansatz") if not data.get(k)]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; re-run or remove that run")
    kwargs: dict[str, Any] = {k: _num(data.get(k)) for k in _FLOAT_FIELDS}
    for k in _INT_FIELDS:
        v = _num(data.get(k))
        kwargs[k] = int(v) if v is not None and math.isfinite(v) else None
    return RunRecord(path=Path(run_dir), molecule=str(data["molecule"]), ansatz=str(data["ansatz"]),
                     **kwargs)


def read_metrics(path: str | os.PathLike) -> tuple[MetricsRow, ...]:
    """Read `metrics.jsonl` (a file, or a run directory holding one) into rows.

    A truncated or corrupt line (not JSON, or not an object) is skipped with a warning that names the
    file and the 1-based line number; blank lines are ignored.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass a run directory written by nqs-train")
    rows = []
    with path.open("r", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                warnings.warn(f"{path}:{lineno}: skipped a truncated or corrupt line", stacklevel=2)
                continue
            step = _num(obj.get("step"))
            flops = obj.get("flops_step")
            flops = {str(k): v for k, v in flops.items() if _num(v) is not None} if isinstance(flops, dict) else {}
            rows.append(MetricsRow(
                step=int(step) if step is not None and math.isfinite(step) else None,
                flops_step={k: float(v) for k, v in flops.items()},
                **{k: _num(obj.get(k)) for k in MetricsRow.__dataclass_fields__
                   if k not in ("step", "flops_step")},
            ))
    return tuple(rows)


def _is_run_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file() or (path / METRICS).is_file()


def discover_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories among `paths`: each is a run directory, or a folder searched recursively for
    directories holding summary.json or metrics.jsonl. Order kept, duplicates removed."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"{p}: no such directory; pass run directories written by nqs-train "
                            "or a folder containing them")
        if not p.is_dir():
            raise UserError(f"{p} is not a directory; pass run directories written by nqs-train "
                            "or a folder containing them")
        if _is_run_dir(p):
            found.append(p)
            continue
        below = sorted(Path(root) for root, _dirs, _files in os.walk(p) if _is_run_dir(Path(root)))
        if not below:
            raise UserError(f"{p} has neither {SUMMARY} nor {METRICS}, nor any run directory below it; "
                            "pass run directories written by nqs-train")
        found.extend(below)
    seen, unique = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_runs(paths: Iterable[str | os.PathLike]) -> list[RunRecord]:
    """Discover and read runs. A run without a (readable) summary.json is skipped with a warning;
    UserError when no run remains."""
    records = []
    for run_dir in discover_runs(paths):
        if not (run_dir / SUMMARY).is_file():
            warnings.warn(f"{run_dir}: no {SUMMARY} (unfinished run?); skipping it", stacklevel=2)
            continue
        try:
            records.append(read_summary(run_dir))
        except UserError as exc:
            warnings.warn(f"{exc}; skipping it", stacklevel=2)
    if not records:
        raise UserError("no run with a readable summary.json among the given paths; "
                        "pass directories of finished nqs-train runs")
    return records


def check_single_molecule(records: Sequence[RunRecord], allow_mixed: bool = False) -> None:
    """UserError when the runs mix molecules (unless `allow_mixed`, then a warning)."""
    molecules = sorted({r.molecule for r in records})
    if len(molecules) <= 1:
        return
    counts = ", ".join(f"{m} ({sum(r.molecule == m for r in records)} runs)" for m in molecules)
    if not allow_mixed:
        raise UserError(f"runs mix molecules: {counts}; fit one molecule at a time, or pass "
                        "--allow-mixed for a metric comparable across molecules such as the V-score")
    warnings.warn(f"fitting one law across molecules {counts} (--allow-mixed)", stacklevel=2)


@dataclass(frozen=True)
class ScalingPoints:
    """Points (N, D', L) for a fit; `groups[i]` is the index of the run point i came from."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    groups: np.ndarray

    def __len__(self) -> int:
        return int(self.n.size)


def _metric(value_vscore: float | None, value_err: float | None, metric: str) -> float | None:
    if metric == "vscore":
        return value_vscore
    return None if value_err is None else abs(value_err)


def collect_points(records: Sequence[RunRecord], metric: str = "vscore", n_from: str = "total",
                   along_training: bool = False) -> ScalingPoints:
    """(N, D', L) from the runs' summaries, and with `along_training` from every logged step too.

    L is the V-score or |error_mha|; N is n_params (or the modulus / phase count); D' = d_prime.
    Points with a missing, non-finite or non-positive N, D' or L are dropped with one warning.
    """
    if metric not in METRIC_CHOICES:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_CHOICES)}")
    if n_from not in N_FROM_CHOICES:
        raise UserError(f"unknown --n-from {n_from!r}; choose one of {', '.join(N_FROM_CHOICES)}")
    raw: list[tuple[float | None, float | None, float | None, int]] = []
    for g, rec in enumerate(records):
        n = rec.n_from(n_from)
        raw.append((n, rec.d_prime, _metric(rec.vscore, rec.abs_error_mha, metric), g))
        if along_training and (rec.path / METRICS).is_file():
            for row in read_metrics(rec.path / METRICS):
                raw.append((n, row.d_prime, _metric(row.vscore, row.error_mha, metric), g))
    ok = [all(v is not None and math.isfinite(v) and v > 0 for v in p[:3]) for p in raw]
    good = [p for p, keep in zip(raw, ok) if keep]
    dropped = len(raw) - len(good)
    if dropped:
        bad_runs = sorted({str(records[p[3]].path) for p, keep in zip(raw, ok) if not keep})
        shown = ", ".join(bad_runs[:3]) + (f" and {len(bad_runs) - 3} more" if len(bad_runs) > 3 else "")
        warnings.warn(f"dropped {dropped} of {len(raw)} points with a missing, non-finite or "
                      f"non-positive N, D' or {metric} (from {shown})", stacklevel=2)
    arr = np.array([p[:3] for p in good], dtype=float).reshape(-1, 3)
    return ScalingPoints(n=arr[:, 0], d=arr[:, 1], loss=arr[:, 2],
                         groups=np.array([p[3] for p in good], dtype=int))
