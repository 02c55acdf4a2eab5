"""Find training-run directories (written by `nqs-train`) and turn their records into scaling points.

A run directory holds `summary.json` (`nqs.record.RunSummary`), `metrics.jsonl` (`nqs.record.StepRecord`
per step) and `config.yaml`; the records and their readers live in `nqs.record`. Readers here are tolerant:
a corrupt metrics line or a run without a summary is skipped with a warning; a path that cannot be a run (or
a folder of runs) is a `UserError`.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nqs.errors import UserError
from nqs.record import METRICS_FILE, SUMMARY_FILE, RunSummary, StepRecord, read_metrics, read_summary

RunRecord = RunSummary  # a run as the scaling tools read it: its summary, with `path` set
MetricsRow = StepRecord

SUMMARY, METRICS = SUMMARY_FILE, METRICS_FILE
METRIC_CHOICES = ("vscore", "abs_error")
N_FROM_CHOICES = ("total", "modulus", "phase")


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
