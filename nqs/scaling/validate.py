"""Validation inside every fit: leave-one-cell-out, extrapolation hold-outs fixed before fitting, coverage.

A scaling law is used to extrapolate (to a larger model, a longer run, a bigger budget), so its error is
measured where it is used (../shared/SCALING-METHOD.md, design rule 5):

* **Leave one grid cell out** (cell = molecule × configuration without the seed): refit without the cell,
  predict its runs. Interpolation error.
* **Hold-outs decided from the design alone, before any fit**: the top compute decile of each molecule's
  runs (by FLOPs spent), the runs of the largest T, the runs of the largest N. Refit on the rest (the
  full multi-start fit and its cluster bootstrap), predict the held-out runs: RMS log-error, bias
  (mean log L̂ − log L: > 0 means the law predicts a worse L than observed) and the share of held-out runs
  inside the 95% prediction interval (bootstrap spread of log L̂ and the residual scale, the RMS of the
  final points' log-residuals, in quadrature).
* **Against the seed scatter**: the pooled within-cell SD of log L over seeds is the RMS log-error that even
  the true law would leave on single runs. Each score also gives the RMS over cells of the seed-averaged
  residual, and the lack of fit √max(0, RMS² − scatter²): the part of a run's error the law, not the seed,
  is responsible for.

Scores use each run's final point (its summary), also when the fit used every logged step.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from nqs.errors import UserError
from nqs.scaling.fit import FitResult, fit_scaling_law
from nqs.scaling.runs import ScalingPoints

HOLDOUTS = ("top_compute_decile", "largest_T", "largest_N")
Z95 = 1.959963984540054


def holdout_runs(pts: ScalingPoints) -> dict[str, np.ndarray]:
    """Run indices held out by each rule, from the design (N, T, FLOPs) only, never from residuals; each rule
    applies within each molecule (its top compute decile, its longest runs, its largest model)."""
    fin = pts.final
    runs, mols, flops = pts.run[fin], pts.molecule[fin], pts.flops[fin]
    out = {}
    top = []
    for m in np.unique(mols):
        sel = (mols == m) & np.isfinite(flops)
        if sel.sum() >= 2:
            cut = np.quantile(flops[sel], 0.9)
            top.extend(runs[sel & (flops >= cut)].tolist())
    out["top_compute_decile"] = np.unique(np.array(top, dtype=int))
    for name, values in (("largest_T", pts.steps[fin]), ("largest_N", pts.n_first[fin])):
        held = []
        for m in np.unique(mols):  # per molecule: each counts its parameters (and may run its lengths) apart
            sel = (mols == m) & np.isfinite(values)
            if sel.any():
                held.extend(runs[sel & (values == values[sel].max())].tolist())
        out[name] = np.unique(np.array(held, dtype=int))
    return out


def pooled_sd(groups: list[np.ndarray]) -> tuple[float | None, int]:
    """The pooled within-group SD of values grouped as `groups` (groups of two or more; ddof 1 per group) and its
    degrees of freedom; (None, 0) when no group has two values."""
    groups = [np.asarray(g, float) for g in groups if len(g) >= 2]
    dof = sum(g.size - 1 for g in groups)
    return (math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / dof) if dof else None), dof


def seed_scatter(pts: ScalingPoints) -> tuple[float | None, int]:
    """The seed scatter: `pooled_sd` of log L over the final points grouped by grid cell, and its degrees of
    freedom."""
    fin = pts.final
    logs, cells = np.log(pts.loss[fin]), pts.cell[fin].astype(str)
    return pooled_sd([logs[cells == c] for c in np.unique(cells)])


def _lack_of_fit(rms: float, scatter: float | None) -> dict:
    """{"lack_of_fit": √max(0, rms² − scatter²)}, or {} without a scatter."""
    return {} if scatter is None else {"lack_of_fit": math.sqrt(max(0.0, rms * rms - scatter * scatter))}


def _by_cell(r: np.ndarray, cells: np.ndarray) -> float:
    """RMS over cells of each cell's mean residual."""
    means = [r[cells == c].mean() for c in np.unique(cells)]
    return float(np.sqrt(np.mean(np.square(means))))


def _score(fit: FitResult, pts: ScalingPoints, mask: np.ndarray, scatter: float | None = None) -> dict:
    """RMS log-error, bias and 95% coverage of `fit` on the final points selected by `mask`; with the seed
    `scatter`, the RMS of seed-averaged residuals over cells and the lack of fit beyond the scatter."""
    sel = mask & pts.final
    if not sel.any():
        return {"n_runs": 0}
    pred = fit.predict(pts.n[sel], pts.d[sel], pts.molecule[sel])
    r = np.log(pred) - np.log(pts.loss[sel])
    _, sd = fit.log_interval(pts.n[sel], pts.d[sel], pts.molecule[sel])
    rms = float(np.sqrt(np.mean(r * r)))
    cells = pts.cell[sel].astype(str)
    out = {"n_runs": int(sel.sum()), "rms_log_error": rms, "bias": float(r.mean()),
           "coverage_95": float(np.mean(np.abs(r) <= Z95 * sd)), "cell_mean_rms": _by_cell(r, cells),
           "n_cells": int(np.unique(cells).size), **_lack_of_fit(rms, scatter)}
    return out


def _per_molecule(fit_kwargs: dict) -> bool:
    return "molecule" in (fit_kwargs.get("floors"), fit_kwargs.get("amplitudes"))


def leave_one_cell_out(pts: ScalingPoints, fit: FitResult, fit_kwargs: dict, scatter: float | None = None) -> dict:
    """Refit (warm, joint) without each grid cell in turn; score the held-out cell's runs (against the seed
    `scatter` when given, as `_score`)."""
    resid, resid_cells, cells = [], [], np.unique(pts.cell.astype(str))
    if cells.size < 3:
        return {"unit": "grid cell", "n_cells": int(cells.size), "rms_log_error": None, "bias": None}
    for c in cells:
        out = pts.cell.astype(str) == c
        rest = pts.subset(~out)
        if len(rest) == 0 or not (out & pts.final).any():
            continue
        if _per_molecule(fit_kwargs) and not set(pts.molecule[out]) <= set(rest.molecule):
            continue  # the held-out molecule's floor or amplitudes would be unidentified
        try:
            sub = fit_scaling_law(rest.n, rest.d, rest.loss, molecules=rest.molecule, clusters=rest.cell,
                                  weights=rest.weight, final=rest.final, n_bootstrap=0, warm=fit.law, **fit_kwargs)
        except UserError:
            continue
        sel = out & pts.final
        resid.extend(np.log(sub.predict(pts.n[sel], pts.d[sel], pts.molecule[sel])) - np.log(pts.loss[sel]))
        resid_cells.extend([c] * int(sel.sum()))
    r = np.asarray(resid)
    report = {"unit": "grid cell", "n_cells": int(cells.size), "n_runs": int(r.size),
              "rms_log_error": float(np.sqrt(np.mean(r * r))) if r.size else None,
              "bias": float(r.mean()) if r.size else None}
    if r.size:
        report["cell_mean_rms"] = _by_cell(r, np.asarray(resid_cells))
        report["n_held_cells"] = int(np.unique(np.asarray(resid_cells)).size)
        report.update(_lack_of_fit(report["rms_log_error"], scatter))
    return report


def validate(pts: ScalingPoints, fit: FitResult, fit_kwargs: dict, n_bootstrap: int = 100, seed: int = 0) -> dict:
    """The validation block of a fit: in-sample, leave-one-cell-out and the three hold-outs (JSON-ready)."""
    everything = np.ones(len(pts), dtype=bool)
    scatter, dof = seed_scatter(pts)
    report = {"seed_scatter": scatter, "seed_scatter_dof": dof, "in_sample": _score(fit, pts, everything, scatter),
              "loo": leave_one_cell_out(pts, fit, fit_kwargs, scatter), "holdouts": {}}
    for name, runs in holdout_runs(pts).items():
        held = np.isin(pts.run, runs)
        entry = {"rule": name, "held_out_runs": int(runs.size)}
        rest = pts.subset(~held)
        if runs.size == 0 or held.all():
            report["holdouts"][name] = {**entry, "note": "nothing to hold out" if runs.size == 0 else "every run held out"}
            continue
        if _per_molecule(fit_kwargs) and not set(pts.molecule[held]) <= set(rest.molecule):
            report["holdouts"][name] = {**entry, "note": "a molecule would lose all its runs (per-molecule coefficients)"}
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sub = fit_scaling_law(rest.n, rest.d, rest.loss, molecules=rest.molecule, clusters=rest.cell,
                                      weights=rest.weight, final=rest.final, n_bootstrap=n_bootstrap, seed=seed,
                                      centre=(fit.law.n_centre, fit.law.d_centre), **fit_kwargs)
        except UserError as exc:
            report["holdouts"][name] = {**entry, "note": str(exc)}
            continue
        report["holdouts"][name] = {**entry, **_score(sub, pts, held, scatter), "fit_status": sub.status.value,
                                    "fit_flags": list(sub.flags)}
    return report


def combine(reports: list[dict]) -> dict:
    """One validation block from several (one law per molecule, `nqs-fit --laws molecule`): each score pooled
    over the runs (RMS, bias, coverage weighted by runs; the seed-mean RMS by cells), the seed scatter pooled
    by its degrees of freedom, the lack of fit against that."""
    dof = sum(r.get("seed_scatter_dof", 0) for r in reports)
    scatter = math.sqrt(sum(r["seed_scatter_dof"] * r["seed_scatter"] ** 2 for r in reports
                            if r.get("seed_scatter_dof")) / dof) if dof else None

    def merge(entries: list[dict]) -> dict:
        entries = [e for e in entries if e.get("rms_log_error") is not None and e.get("n_runs")]
        if not entries:
            return {"n_runs": 0, "note": "no molecule scored"}
        runs = np.array([e["n_runs"] for e in entries], float)
        rms = float(np.sqrt(np.sum(runs * np.square([e["rms_log_error"] for e in entries])) / runs.sum()))
        out = {"n_runs": int(runs.sum()), "rms_log_error": rms,
               "bias": float(np.sum(runs * np.array([e["bias"] for e in entries])) / runs.sum())}
        if all("coverage_95" in e for e in entries):
            out["coverage_95"] = float(np.sum(runs * np.array([e["coverage_95"] for e in entries])) / runs.sum())
        cells = np.array([e.get("n_held_cells", e.get("n_cells", 0)) for e in entries], float)
        if cells.sum() and all("cell_mean_rms" in e for e in entries):
            out["cell_mean_rms"] = float(np.sqrt(np.sum(cells * np.square([e["cell_mean_rms"] for e in entries]))
                                                 / cells.sum()))
        out.update(_lack_of_fit(rms, scatter))
        return out

    loo = merge([r["loo"] for r in reports])
    loo.update(unit="grid cell", n_cells=int(sum(r["loo"].get("n_cells", 0) for r in reports)))
    holdouts = {}
    for name in HOLDOUTS:
        entries = [r["holdouts"][name] for r in reports if name in r["holdouts"]]
        holdouts[name] = {"rule": name, "held_out_runs": int(sum(e["held_out_runs"] for e in entries)),
                          **merge(entries)}
    return {"seed_scatter": scatter, "seed_scatter_dof": dof, "in_sample": merge([r["in_sample"] for r in reports]), "loo": loo,
            "holdouts": holdouts}


def residual_grid(pts: ScalingPoints, fit: FitResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log10 N, log10 D', log residual) of every point, for the residual map (N × D')."""
    r = np.log(fit.predict(pts.n, pts.d, pts.molecule)) - np.log(pts.loss)
    return np.log10(pts.n_first), np.log10(pts.d), r


def format_validation(v: dict) -> list[str]:
    """Report lines: one per score, factors as ×/÷ exp(rms)."""
    def fmt(entry: dict) -> str:
        if entry.get("rms_log_error") is None:
            return entry.get("note", "not enough data")
        rms, bias = entry["rms_log_error"], entry["bias"]
        cov = entry.get("coverage_95")
        tail = "" if cov is None else f", {100 * cov:.0f}% inside the 95% interval"
        if entry.get("cell_mean_rms") is not None:
            tail += f"; seed means {entry['cell_mean_rms']:.3f}"
        if entry.get("lack_of_fit") is not None:
            tail += f", lack of fit {entry['lack_of_fit']:.3f}"
        return (f"RMS log-error {rms:.3f} (×/÷{math.exp(rms):.2f}), bias {bias:+.3f} (×{math.exp(bias):.2f})"
                f"{tail}; {entry.get('n_runs', 0)} runs")
    scatter = v.get("seed_scatter")
    lines = ["  seed scatter (within-cell SD of log L, the RMS a true law leaves on single runs): "
             + ("none (no cell has two runs)" if scatter is None else f"{scatter:.3f}"),
             f"  in-sample: {fmt(v['in_sample'])}",
             f"  leave one grid cell out ({v['loo']['n_cells']} cells): {fmt(v['loo'])}"]
    for name, entry in v["holdouts"].items():
        lines.append(f"  hold-out {name} ({entry['held_out_runs']} runs, fixed before fitting): {fmt(entry)}")
    return lines
