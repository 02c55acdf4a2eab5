"""nqs-fit: fit L(N, D') = A0 + A1·N^-α1 + A2·D'^-α2 to training runs and find the compute-optimal (N, D')."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from pathlib import Path

from nqs.errors import UserError, cli_entry
from nqs.scaling.fit import FitResult, ProductCost, compute_optimal, estimate_kappa, fit_scaling_law
from nqs.scaling.runs import (
    METRIC_CHOICES,
    N_FROM_CHOICES,
    check_single_molecule,
    collect_points,
    load_runs,
)
from nqs.tables import markdown_table

METRIC_LABELS = {"vscore": "V-score", "abs_error": "|E − E_FCI| (mHa)"}


@contextlib.contextmanager
def plain_warnings():
    """Show warnings as `warning: <message>` lines on stderr, without source lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr)
        yield


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nqs-fit", description=__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories of nqs-train, or folders searched recursively for them")
    p.add_argument("--metric", choices=METRIC_CHOICES, default="vscore",
                   help="L: the V-score or |E − E_FCI| in mHa (default: vscore)")
    p.add_argument("--along-training", action="store_true",
                   help="also use every logged step of metrics.jsonl as a point (N, D'(step), L(step))")
    p.add_argument("--n-from", choices=N_FROM_CHOICES, default="total",
                   help="N: all parameters, or the modulus or phase network's (default: total)")
    p.add_argument("--budget", type=float, nargs="+", metavar="C",
                   help="FLOP budgets for the compute-optimal table (cost model C = κ·N·D')")
    p.add_argument("--json", metavar="FILE", help="write the fit as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw L vs N, L vs D' and iso-FLOP curves")
    p.add_argument("--bootstrap", type=int, default=200, metavar="K",
                   help="bootstrap resamples for the 95%% intervals (0: none; default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="allow runs of several molecules in one fit (for comparable metrics, e.g. vscore)")
    return p


def format_report(fit: FitResult, *, metric: str, n_from: str, n_runs: int, kappa: float | None,
                  grouped: bool) -> str:
    lines = [f"nqs-fit: L = {METRIC_LABELS[metric]} of {n_runs} runs, N = "
             f"{'n_params' if n_from == 'total' else 'n_params_' + n_from}, D' = d_prime; "
             f"{fit.n_points} points",
             "L(N, D') = A0 + A1·N^-alpha1 + A2·D'^-alpha2"]
    for name, value in fit.params.items():
        ci = fit.ci.get(name)
        tail = f"   95% CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        lines.append(f"  {name:<7}= {value:<12.5g}{tail}")
    status = fit.status.value + (f" ({', '.join(fit.bound_hit)} at its bound)" if fit.bound_hit else "")
    lines.append(f"status: {status}; optimiser: {fit.message}")
    unit = "runs" if grouped else "points"
    lines.append(f"loss (mean Huber, delta 1e-3, of log-residuals): {fit.loss:.4g}")
    lines.append(f"leave-one-out RMS log-error ({unit} held out): {fit.loo_error:.4g}")
    if fit.ci:
        lines.append(f"bootstrap: {fit.n_bootstrap} resamples of the {unit} fitted")
    if fit.optimal:
        lines.append("")
        lines.append(f"compute-optimal allocation, C = kappa·N·D' with kappa = {kappa:.4g} FLOPs "
                     "(median flops_total / (N·d_prime) over the runs):")
        lines.append(markdown_table(
            ["budget (FLOPs)", "N", "D'", f"predicted {METRIC_LABELS[metric]}"],
            [[f"{p.budget:.3g}", f"{p.n_params:.4g}", f"{p.d_prime:.4g}", f"{p.predicted:.4g}"]
             for p in fit.optimal]))
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with plain_warnings():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    bad = [c for c in args.budget or () if not (c > 0 and math.isfinite(c))]
    if bad:
        raise UserError(f"--budget {bad[0]:g} is not a positive number of FLOPs (e.g. --budget 1e12 1e14)")
    records = load_runs(args.run_dirs)
    check_single_molecule(records, allow_mixed=args.allow_mixed)
    ansatze = sorted({r.ansatz for r in records})
    if len(ansatze) > 1:
        warnings.warn(f"fitting one law across ansätze {', '.join(ansatze)}; the paper fits each ansatz "
                      "on its own", stacklevel=1)
    pts = collect_points(records, metric=args.metric, n_from=args.n_from, along_training=args.along_training)
    if len(pts) <= 5:
        raise UserError(f"{len(pts)} usable points from {len(records)} runs, but the law has 5 parameters; "
                        "need at least 6 (add runs, or use --along-training)")
    fit = fit_scaling_law(pts.n, pts.d, pts.loss, groups=pts.groups if args.along_training else None,
                          n_bootstrap=args.bootstrap, seed=args.seed)
    kappa = cost = None
    if args.budget:
        kappa = estimate_kappa(records, n_from=args.n_from)
        cost = ProductCost(kappa)
        fit = fit.with_optimal(compute_optimal(fit, args.budget, cost))
    elif args.plot:
        with contextlib.suppress(UserError):
            kappa = estimate_kappa(records, n_from=args.n_from)
            cost = ProductCost(kappa)
    print(format_report(fit, metric=args.metric, n_from=args.n_from, n_runs=len(records), kappa=kappa,
                        grouped=args.along_training and len(set(pts.groups.tolist())) >= 3))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(fit.to_json(), indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    if args.plot:
        from nqs.scaling.plots import plot_fit

        out = plot_fit(fit, pts.n, pts.d, pts.loss, args.plot, cost=cost, metric_label=METRIC_LABELS[args.metric])
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    main()
