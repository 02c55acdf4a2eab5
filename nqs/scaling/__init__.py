"""Scaling laws of NQS training runs: read runs, fit L(N, D') = A0 + A1·N^-α1 + A2·D'^-α2, find the
compute-optimal (N, D'), and compare runs against HF / CCSD / CCSD(T). Plotting lives in
`nqs.scaling.plots` (matplotlib is imported only when a plot is drawn)."""
from nqs.scaling.compare import CompareRow, compare_runs, format_markdown
from nqs.scaling.fit import (
    FitResult,
    FitStatus,
    OptimalPoint,
    ProductCost,
    closed_form_optimal,
    compute_optimal,
    estimate_kappa,
    fit_scaling_law,
)
from nqs.scaling.runs import (
    MetricsRow,
    RunRecord,
    ScalingPoints,
    check_single_molecule,
    collect_points,
    discover_runs,
    load_runs,
    read_metrics,
    read_summary,
)

__all__ = [
    "CompareRow", "compare_runs", "format_markdown",
    "FitResult", "FitStatus", "OptimalPoint", "ProductCost", "closed_form_optimal", "compute_optimal",
    "estimate_kappa", "fit_scaling_law",
    "MetricsRow", "RunRecord", "ScalingPoints", "check_single_molecule", "collect_points",
    "discover_runs", "load_runs", "read_metrics", "read_summary",
]
