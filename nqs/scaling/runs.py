"""Find training-run directories (written by `nqs-train`) and turn their records into scaling points.

A run directory holds `summary.json` (`nqs.record.RunSummary`), `metrics.jsonl` (`nqs.record.StepRecord`
per step) and `config.yaml`; the records and their readers live in `nqs.record`. Readers here are tolerant:
a corrupt metrics line or a run without a summary is skipped with a warning; a path that cannot be a run (or
a folder of runs) is a `UserError`.
"""
from __future__ import annotations

import functools
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nqs.errors import UserError
from nqs.record import METRICS_FILE, SUMMARY_FILE, RunSummary, StepRecord, read_metrics, read_summary
from nqs.scaling import archive

RunRecord = RunSummary  # a run as the scaling tools read it: its summary, with `path` set
MetricsRow = StepRecord

SUMMARY, METRICS = SUMMARY_FILE, METRICS_FILE
METRIC_CHOICES = ("vscore", "abs_error")


def _is_run_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file() or (path / METRICS).is_file()


def discover_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories among `paths`: each is a run directory, a folder searched recursively for
    directories holding summary.json or metrics.jsonl, or a run archive (`nqs.scaling.archive`, unpacked to a
    temporary directory). Order kept, duplicates removed."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if archive.is_archive(p):
            found.extend(archive.unpack(p))
            continue
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


def run_estimator(rec: RunRecord) -> str:
    """The local-energy estimator a run trained with; runs written before it was recorded used the exact one."""
    return getattr(rec, "estimator", None) or "exact"


def check_estimators(records: Sequence[RunRecord], mix: bool = False) -> None:
    """UserError when the runs trained with different local-energy estimators (exact, sampled,
    semi-stochastic with its threshold and draws), whose losses differ by the estimators' bias, unless `mix`
    (then a warning)."""
    kinds = sorted({run_estimator(r) for r in records})
    if len(kinds) < 2:
        return
    message = f"the runs trained with different local-energy estimators ({', '.join(kinds)})"
    if not mix:
        raise UserError(f"{message}: fit one estimator's runs at a time, or pass --mix-estimators to pool them")
    warnings.warn(f"{message}: pooled as asked (--mix-estimators)", stacklevel=2)


METRIC_LABELS = {"vscore": "V-score", "abs_error": "|E − E_ref| (mHa)"}
N_FROM_CHOICES = ("effective", "total", "modulus", "phase", "split")
D_FROM_CHOICES = ("realised", "nominal", "full")
SPLIT_TERMS = ("N_modulus", "N_phase")


def run_n(rec: RunRecord, n_from: str) -> tuple[float | None, ...]:
    """The run's size column(s): one count, or (modulus, phase) for "split" (MADE's modulus counted
    effectively). "effective" counts the parameters that can change the output (`nqs.models.counts`); runs
    written before it was recorded get it from their config.yaml."""
    if n_from == "split":
        mod = _effective(rec, "effective_modulus") if rec.ansatz == "made" else rec.n_params_modulus
        return (mod, rec.n_params_phase)
    if n_from == "effective":
        return (_effective(rec, "effective"),)
    return (rec.n_from(n_from),)


def _effective(rec: RunRecord, which: str) -> float | None:
    if which == "effective" and getattr(rec, "n_params_effective", None) is not None:
        return rec.n_from(which)
    counts = _config_counts(None if rec.path is None else str(rec.path), rec.n_qubits, rec.n_alpha, rec.n_beta)
    if counts is not None:
        return counts[which]
    if which == "effective" and rec.ansatz != "made":
        warnings.warn("runs without n_params_effective or a readable config.yaml count N as n_params (the "
                      "Transformer's and RetNet's few structurally unused parameters included)", stacklevel=3)
        return rec.n_params
    return None


@functools.lru_cache(maxsize=4096)
def _config_counts(path: str | None, n_qubits, n_alpha, n_beta) -> dict | None:
    """Parameter counts of a run's model from its config.yaml (None when it cannot be read)."""
    from nqs.hilbert import Sector
    from nqs.models.counts import param_counts
    from nqs.training.config import load_yaml, resolve

    if path is None or None in (n_qubits, n_alpha, n_beta) or not (Path(path) / "config.yaml").is_file():
        return None
    try:
        cfg = resolve([(str(Path(path) / "config.yaml"), load_yaml(Path(path) / "config.yaml"))])
        return param_counts(cfg.model, Sector(int(n_qubits) // 2, int(n_alpha), int(n_beta)))
    except (UserError, ValueError):
        return None


def cell_key(rec: RunRecord) -> str:
    """The run's grid cell: its resolved configuration without the seed and the result-neutral options
    (so seeds of one design point share a cell). Runs without a readable config.yaml fall back to
    (molecule, ansatz, N, steps, cap, N_s)."""
    from nqs.training.config import RESULT_NEUTRAL, load_yaml, resolve

    path = None if rec.path is None else Path(rec.path) / "config.yaml"
    if path is not None and path.is_file():
        try:
            flat = resolve([(str(path), load_yaml(path))]).flat()
            keep = {k: v for k, v in flat.items() if k not in RESULT_NEUTRAL and k not in ("seed", "out")}
            return json.dumps(keep, sort_keys=True, default=str)
        except UserError:
            pass
    return json.dumps([rec.molecule, rec.ansatz, rec.n_params, rec.steps, rec.unique, rec.samples])


@dataclass(frozen=True)
class ScalingPoints:
    """Points (N, D', L) for a fit, one row per point: `n` is (m,) or (m, 2) for split sizes; `run` the index
    of the record each came from; `cell` its grid cell (molecule × configuration without the seed);
    `flops` the FLOPs spent to reach the point; `steps` the run's length; `final` marks summary points and
    `weight` is each point's weight in the fit."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    run: np.ndarray
    molecule: np.ndarray
    cell: np.ndarray
    flops: np.ndarray
    steps: np.ndarray
    final: np.ndarray  # True for a run's summary point (its final energy), False for logged steps
    weight: np.ndarray  # each point's weight in the fit: 1, or 1/(points of its run) with --along-training

    def __len__(self) -> int:
        return int(self.d.size)

    @property
    def groups(self) -> np.ndarray:
        return self.run

    @property
    def n_first(self) -> np.ndarray:
        """The first size column (the total, or the modulus count of a split law)."""
        return self.n if self.n.ndim == 1 else self.n[:, 0]

    def subset(self, keep: np.ndarray) -> "ScalingPoints":
        return ScalingPoints(**{f: getattr(self, f)[keep] for f in
                                ("n", "d", "loss", "run", "molecule", "cell", "flops", "steps", "final", "weight")})


def _metric(value_vscore: float | None, value_err: float | None, metric: str) -> float | None:
    if metric == "vscore":
        return value_vscore
    return None if value_err is None else abs(value_err)


def _ok(v) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def collect_points(records: Sequence[RunRecord], metric: str = "vscore", n_from: str = "effective",
                   d_from: str = "realised", along_training: bool = False, drop_above_hf: bool = True) -> ScalingPoints:
    """(N, D', L) from the runs' summaries, and with `along_training` from every logged step too.

    L is the V-score or |error_mha|; N the count chosen by `n_from` (`run_n`); D' the realised Σ S_F
    (unique samples / |sector| summed over steps), the nominal Σ min(B, |sector|)/|sector|, or the full-space
    Σ U/2^n, by `d_from`. Points with a missing, non-finite or non-positive N, D' or L are dropped with one
    warning naming the runs. Logged steps at or above the run's Hartree–Fock error (unless not
    `drop_above_hf`), and its last step (the
    summary's final evaluation stands for it), are not points; each point weighs 1/(points of its run), so
    that a long run counts as much as a short one.
    """
    if metric not in METRIC_CHOICES:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_CHOICES)}")
    if n_from not in N_FROM_CHOICES:
        raise UserError(f"unknown --n-from {n_from!r}; choose one of {', '.join(N_FROM_CHOICES)}")
    if d_from not in D_FROM_CHOICES:
        raise UserError(f"unknown --d-from {d_from!r}; choose one of {', '.join(D_FROM_CHOICES)}")
    step_field = {"realised": "d_prime", "nominal": "d_prime_nominal", "full": "d_prime_full"}[d_from]
    raw, bad_runs = [], set()
    for g, rec in enumerate(records):
        n = run_n(rec, n_from)
        cell = f"{rec.molecule}|{rec.ansatz}|{cell_key(rec)}"
        raw.append((n, rec.d_from(d_from), _metric(rec.vscore, rec.abs_error_mha, metric), g, cell,
                    rec.flops_total, rec.steps, True))
        if along_training and rec.path is not None and (Path(rec.path) / METRICS).is_file():
            hf = None if rec.hf_error_mha is None else abs(rec.hf_error_mha)
            for row in read_metrics(Path(rec.path) / METRICS):
                err = row.error_mha
                if drop_above_hf and hf is not None and err is not None and abs(err) >= hf:
                    continue  # a step still on the Hartree-Fock plateau (the method's rule 4)
                if row.step + 1 >= (rec.steps or 0) and rec.steps:
                    continue  # the last step: the summary's final evaluation stands for it
                raw.append((n, getattr(row, step_field, None), _metric(row.vscore, None if err is None else abs(err),
                            metric), g, cell, row.flops_total, rec.steps, False))
    good = []
    for p in raw:
        if all(_ok(v) for v in p[0]) and _ok(p[1]) and _ok(p[2]):
            good.append(p)
        else:
            bad_runs.add(str(records[p[3]].path))
    dropped = len(raw) - len(good)
    if dropped:
        shown = ", ".join(sorted(bad_runs)[:3]) + (f" and {len(bad_runs) - 3} more" if len(bad_runs) > 3 else "")
        warnings.warn(f"dropped {dropped} of {len(raw)} points with a missing, non-finite or non-positive N, "
                      f"D' ({d_from}) or {metric} (from {shown})", stacklevel=2)
    if not good:
        raise UserError(f"no usable (N, D', {metric}) point among {len(records)} runs; see the warning above")
    n = np.array([p[0] for p in good], dtype=float).reshape(len(good), -1)
    run = np.array([p[3] for p in good], dtype=int)
    return ScalingPoints(n=n[:, 0] if n_from != "split" else n, d=np.array([p[1] for p in good], dtype=float),
                         loss=np.array([p[2] for p in good], dtype=float),
                         run=np.array([p[3] for p in good], dtype=int),
                         molecule=np.array([records[p[3]].molecule for p in good], dtype=object),
                         cell=np.array([p[4] for p in good], dtype=object),
                         flops=np.array([p[5] if p[5] is not None else np.nan for p in good], dtype=float),
                         steps=np.array([p[6] if p[6] is not None else np.nan for p in good], dtype=float),
                         final=np.array([p[7] for p in good], dtype=bool),
                         weight=1.0 / np.bincount(run)[run])
