"""Figures for scaling-law fits and run comparisons. matplotlib (Agg) is imported inside each function."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nqs.scaling.fit import CostModel, FitResult, OptimalPoint, d_for_budget, compute_optimal


def _pick(values: np.ndarray, k: int) -> np.ndarray:
    """Up to k values spread evenly over the sorted distinct values."""
    u = np.unique(values)
    if u.size <= k:
        return u
    return u[np.unique(np.round(np.linspace(0, u.size - 1, k)).astype(int))]


def _iso_flop(ax, fit: FitResult, optimal: Sequence[OptimalPoint], cost: CostModel, n: np.ndarray, cm,
              ylabel: str):
    lo = math.log10(min(n.min(), min(p.n_params for p in optimal))) - 1.0
    hi = math.log10(max(n.max(), max(p.n_params for p in optimal))) + 1.0
    grid = np.logspace(lo, hi, 200)
    colours = cm(np.linspace(0.1, 0.9, len(optimal)))
    for p, c in zip(optimal, colours):
        d = np.array([d_for_budget(cost, float(v), p.budget) or np.nan for v in grid])
        ax.plot(grid, fit.predict(grid, d), color=c, label=f"C = {p.budget:.2g} FLOPs")
        ax.plot([p.n_params], [p.predicted], marker="*", markersize=12, color=c, markeredgecolor="k")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel(ylabel)
    ax.set_title("iso-FLOP curves (★ compute-optimal)")
    ax.legend(fontsize=7)


def plot_fit(fit: FitResult, n, d, loss, path: str | os.PathLike, *, cost: CostModel | None = None,
             budgets: Sequence[float] | None = None, metric_label: str = "L",
             title: str | None = None) -> Path:
    """Three panels saved to `path`: L vs N (coloured by D', fitted curves at a few D'); L vs D'
    (coloured by N); iso-FLOP curves L(N) at fixed budgets with the optimum starred.

    Budgets are `fit.optimal`'s, else `budgets`, else four spanning the data's cost under `cost`;
    without a cost model the third panel says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    n, d, loss = (np.asarray(a, dtype=float) for a in (n, d, loss))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    cm = plt.get_cmap("viridis")
    panels = ((axes[0], n, d, "N (parameters)", "D'", lambda x, c: fit.predict(x, c)),
              (axes[1], d, n, "D' (Σ_steps S_F)", "N", lambda x, c: fit.predict(c, x)))
    for ax, x, colour, xlabel, clabel, model in panels:
        norm = LogNorm(vmin=colour.min(), vmax=max(colour.max(), colour.min() * 1.0001))
        sc = ax.scatter(x, loss, c=colour, cmap=cm, norm=norm, s=18, edgecolors="none")
        xs = np.logspace(math.log10(x.min()), math.log10(x.max()), 100)
        for c in _pick(colour, 4):
            ax.plot(xs, model(xs, c), color=cm(norm(c)), lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric_label)
        fig.colorbar(sc, ax=ax, label=clabel)
    optimal = list(fit.optimal)
    if not optimal and cost is not None:
        if budgets is None:
            costs = np.array([cost(a, b) for a, b in zip(n, d)])
            budgets = np.logspace(math.log10(costs.min()), math.log10(costs.max()), 4)
        optimal = list(compute_optimal(fit, budgets, cost))
    if optimal and cost is not None:
        _iso_flop(axes[2], fit, optimal, cost, n, plt.get_cmap("plasma"), metric_label)
    else:
        axes[2].text(0.5, 0.5, "no FLOP model:\nno budgets or no flops_total in the runs",
                     ha="center", va="center", transform=axes[2].transAxes)
        axes[2].set_axis_off()
    fig.suptitle(title or (f"{metric_label} = {fit.A0:.3g} + {fit.A1:.3g}·N^-{fit.alpha1:.3f} + "
                           f"{fit.A2:.3g}·D'^-{fit.alpha2:.3f}   ({fit.status.value})"))
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_compare(rows, path: str | os.PathLike) -> Path:
    """Bars per molecule × ansatz: |E − E_FCI| (mHa, with HF / CCSD / CCSD(T) marks and the
    chemical-accuracy line) and the V-score, each with ±std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    labels = [f"{r.molecule}\n{r.ansatz}" for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.4 * len(rows) + 4), 4.8))
    nan = float("nan")
    val = lambda v: nan if v is None else v  # noqa: E731
    err = [val(r.abs_error_mean) for r in rows]
    axes[0].bar(x, err, yerr=[0 if r.abs_error_std is None else r.abs_error_std for r in rows],
                color="tab:blue", capsize=3, label="NQS |E − E_FCI|")
    for attr, marker, name in (("hf_error", "v", "HF"), ("ccsd_error", "s", "CCSD"),
                               ("ccsd_t_error", "D", "CCSD(T)")):
        axes[0].scatter(x, [abs(val(getattr(r, attr))) for r in rows], marker=marker, zorder=3, label=name)
    axes[0].axhline(1.6, color="k", ls="--", lw=0.8, label="chemical accuracy")
    axes[0].set_ylabel("|E − E_FCI| (mHa)")
    axes[1].bar(x, [val(r.vscore_mean) for r in rows],
                yerr=[0 if r.vscore_std is None else r.vscore_std for r in rows], color="tab:orange",
                capsize=3)
    axes[1].set_ylabel("V-score")
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
