"""Figures for scaling-law fits and run comparisons. matplotlib (Agg) is imported inside each function."""
from __future__ import annotations

import math
import os
from pathlib import Path
import numpy as np

from nqs.scaling.fit import FitResult

MARKERS = "os^vDP*Xh<>"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | os.PathLike) -> Path:
    """Write `fig` to `path` (tight layout, 120 dpi) and release it, also when writing fails."""
    out = Path(path)
    try:
        fig.tight_layout()
        fig.savefig(out, dpi=120)
    finally:
        pyplot().close(fig)
    return out


def plot_fit(fit: FitResult, pts, path: str | os.PathLike, *, metric_label: str = "L", costs=None,
             n_from: str = "effective", d_from: str = "realised", title: str | None = None) -> Path:
    """Four panels saved to `path`: L vs N and L vs D' (points coloured by the other axis, one marker per
    molecule, with the law's prediction at each point as a cross), the residual map log L̂ − log L over
    (N, D'), and the iso-cost curves L̂(N) of the FLOP allocations in `fit.optimal` (★ the optimum).
    `pts` are the fitted `ScalingPoints`; `costs` the cost models by (ansatz, molecule)."""
    plt = pyplot()
    from matplotlib.colors import LogNorm, TwoSlopeNorm

    n, d, loss = pts.n_first, pts.d, pts.loss
    pred = fit.predict(pts.n, d, pts.molecule)
    mols = sorted(set(pts.molecule))
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    cm = plt.get_cmap("viridis")
    for ax, x, colour, xlabel, clabel in ((axes[0], n, d, "N (parameters)", "D'"),
                                          (axes[1], d, n, "D' (Σ_steps S_F)", "N")):
        norm = LogNorm(vmin=colour.min(), vmax=max(colour.max(), colour.min() * 1.0001))
        for k, m in enumerate(mols):
            sel = pts.molecule == m
            sc = ax.scatter(x[sel], loss[sel], c=colour[sel], cmap=cm, norm=norm, s=20, marker=MARKERS[k % 11],
                            edgecolors="none", label=m)
            ax.scatter(x[sel], pred[sel], marker="x", s=10, color="0.4", linewidths=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric_label)
        ax.legend(fontsize=7, title="× law", title_fontsize=7)
        fig.colorbar(sc, ax=ax, label=clabel)
    r = np.log(pred) - np.log(loss)
    lim = max(float(np.abs(r).max()), 1e-3)
    for k, m in enumerate(mols):
        sel = pts.molecule == m
        sc = axes[2].scatter(n[sel], d[sel], c=r[sel], cmap="coolwarm", norm=TwoSlopeNorm(0.0, -lim, lim), s=30,
                             marker=MARKERS[k % 11], edgecolors="k", linewidths=0.3, label=m)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("N (parameters)")
    axes[2].set_ylabel("D'")
    axes[2].set_title("residual map: log L̂ − log L (red: law too pessimistic)")
    axes[2].legend(fontsize=7)
    fig.colorbar(sc, ax=axes[2], label="log-residual")
    _iso_cost(axes[3], fit, costs, n, metric_label, n_from, d_from)
    fig.suptitle(title or (f"{metric_label}: " + ", ".join(f"{k} = {v:.3g}" for k, v in fit.params.items())
                           + f"   ({fit.status.value}{'; ' + '; '.join(fit.flags) if fit.flags else ''})"),
                 fontsize=9)
    return save(fig, path)


def _iso_cost(ax, fit: FitResult, costs, n: np.ndarray, ylabel: str, n_from: str, d_from: str) -> None:
    from nqs.scaling.allocate import run_d_prime, s_f_per_step, steps_for_budget

    allocs = [a for a in fit.optimal if a.kind == "flops"]
    if not allocs or not costs:
        ax.text(0.5, 0.5, "no allocation: pass --budget", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    colours = __import__("matplotlib").pyplot.get_cmap("plasma")(np.linspace(0.1, 0.9, len(allocs)))
    grid = np.logspace(math.log10(n.min()) - 0.5, math.log10(n.max()) + 1.0, 80)
    for a, c in zip(allocs, colours):
        cost = next(v for (ans, mol), v in costs.items() if mol == a.molecule)
        steps = np.array([steps_for_budget(a.budget, cost.flops(float(v), a.cap, n_from),
                                           cost.flops(float(v), a.cap, n_from, sr=True), cost.sr_from) for v in grid])
        d = run_d_prime(steps, s_f_per_step(cost, a.cap, d_from), s_f_per_step(cost, a.cap, d_from, sr=True),
                        cost.sr_from)
        ax.plot(grid, fit.predict(grid, d, a.molecule), color=c, label=f"{a.molecule} C = {a.budget:.2g}")
        ax.plot([a.n], [a.predicted], marker="*", markersize=12, color=c, markeredgecolor="k")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel(ylabel)
    ax.set_title("iso-FLOP curves under the cost model (★ optimum)")
    ax.legend(fontsize=7)


def plot_compare(rows, path: str | os.PathLike) -> Path:
    """Bars per molecule × ansatz: |E − E_FCI| (mHa, with HF / CCSD / CCSD(T) marks and the
    chemical-accuracy line) and the V-score, each with ±std error bars."""
    plt = pyplot()

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
    return save(fig, path)


def plot_check(check: dict, path: str | os.PathLike, metric_label: str = "L", title: str = "") -> Path:
    """One iso-cost check (`nqs.scaling.plan.check_plan`): observed L per planned size N (geometric mean over
    seeds, bars ×/÷ exp(log sd)), the law's prediction at the same points, its optimum N* and the observed best."""
    plt = pyplot()

    rows = [r for r in check["rows"] if r["observed"] is not None]
    n = np.array([r["n"] for r in rows])
    obs = np.array([r["observed"] for r in rows])
    sd = np.array([r["log_sd"] or 0.0 for r in rows])
    fig, ax = plt.subplots(figsize=(5.2, 4))
    ax.errorbar(n, obs, yerr=[obs - obs / np.exp(sd), obs * np.exp(sd) - obs], fmt="o", capsize=3,
                label="observed (geo. mean of seeds, ×/÷ e^sd)")
    ax.plot([r["n"] for r in check["rows"]], [r["predicted"] for r in check["rows"]], "-", color="tab:red",
            label="law's prediction")
    ax.axvline(check["law_n_star"], color="tab:red", ls="--", lw=0.8, label="law's N*")
    ax.axvline(check["observed_best_n"], color="tab:blue", ls=":", lw=0.8, label="observed best")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel(metric_label)
    ax.set_title(title or f"iso-cost {check['budget']:.3g} ({check['kind']})", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)
