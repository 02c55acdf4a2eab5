"""Scaling laws of NQS training runs: read runs, fit L(N, D') pooled over molecules with validation, model the
cost of a step, allocate a budget, plan and check iso-FLOP sweeps, and compare runs against HF / CCSD / CCSD(T).
Plotting lives in `nqs.scaling.plots` (matplotlib is imported only when a plot is drawn)."""
from nqs.scaling.compare import CompareRow, compare_runs, format_markdown
from nqs.scaling.fit import FitResult, FitStatus, fit_scaling_law
from nqs.scaling.law import Law
from nqs.scaling.runs import (
    MetricsRow,
    RunRecord,
    ScalingPoints,
    collect_points,
    discover_runs,
    load_runs,
    read_metrics,
    read_summary,
)

__all__ = [
    "CompareRow", "compare_runs", "format_markdown",
    "FitResult", "FitStatus", "Law", "fit_scaling_law",
    "MetricsRow", "RunRecord", "ScalingPoints", "collect_points", "discover_runs", "load_runs", "read_metrics",
    "read_summary",
]
