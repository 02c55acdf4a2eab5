"""nqs-fit: fit L(N, D') = A0 + A1·(N/N_c)^-α1 + A2·(D'/D'_c)^-α2 to training runs, pooled over molecules (one
fit per ansatz), validate it on runs it did not see, model the cost of a step, allocate budgets in (N, T, B),
plan an iso-FLOP sweep around the optimum (--plan) and check it once run (--check)."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from pathlib import Path

from nqs.errors import UserError, cli_entry
from nqs.scaling.fit import FitResult, fit_scaling_law
from nqs.scaling.law import term_names
from nqs.scaling.runs import (
    D_FROM_CHOICES,
    METRIC_CHOICES,
    METRIC_LABELS,
    N_FROM_CHOICES,
    SPLIT_TERMS,
    check_estimators,
    collect_points,
    discover_runs,
    load_runs,
)
from nqs.scaling.validate import format_validation, validate

N_LABELS = {"effective": "n_params_effective (MADE: unmasked weights)", "total": "n_params",
            "modulus": "n_params_modulus", "phase": "n_params_phase", "split": "(n_params_modulus, n_params_phase)"}


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
                   help="run directories of nqs-train, folders searched recursively for them, or run archives "
                        "(*.runs.jsonl.xz, written by --export)")
    p.add_argument("--metric", choices=METRIC_CHOICES, default="vscore",
                   help="L: the V-score or |E − E_ref| in mHa (default: vscore)")
    p.add_argument("--n-from", choices=N_FROM_CHOICES, default="effective",
                   help="N: parameters that can change the output (default; MADE's unmasked weights, else all), "
                        "all, the modulus or phase network's, or split: two size terms, modulus and phase")
    p.add_argument("--d-from", choices=D_FROM_CHOICES, default="realised",
                   help="D' = Σ S_F with S_F the realised U/|sector| (default), the nominal min(B,|sector|)/|sector|, "
                        "or U/2^n over the full space")
    p.add_argument("--floors", choices=("shared", "molecule"), default="shared",
                   help="one floor A0 for all molecules (default) or one per molecule")
    p.add_argument("--amplitudes", choices=("shared", "molecule"), default="shared",
                   help="one set of amplitudes A1, A2 for all molecules (default) or one per molecule; the "
                        "exponents stay shared, so the pooled fit is one law whose scale differs by molecule")
    p.add_argument("--laws", choices=("pooled", "molecule"), default="pooled",
                   help="one law for all molecules (default), or one law per molecule (its own exponents too), "
                        "fitted apart and validated together: each molecule's hold-outs, pooled into one score")
    p.add_argument("--law", choices=("additive", "interaction"), default="additive",
                   help="additive (default), or with an N × D' interaction term A12·(N/N_c)^-α1·(D'/D'_c)^-α2")
    p.add_argument("--ansatz", help="fit only this ansatz (default: one fit per ansatz in the runs)")
    p.add_argument("--molecules", nargs="+", metavar="MOL",
                   help="fit only the runs on these molecules (default: pool every molecule in the runs)")
    p.add_argument("--keep-above-hf", action="store_true",
                   help="keep runs whose final error is at or above Hartree–Fock's (default: left out, as a "
                        "plateau the law does not describe; the report counts them)")
    p.add_argument("--along-training", action="store_true",
                   help="also use every logged step of metrics.jsonl as a point (N, D'(step), L(step))")
    p.add_argument("--bootstrap", type=int, default=200, metavar="K",
                   help="cluster-bootstrap resamples for the 95%% intervals (0: none; default 200)")
    p.add_argument("--holdout-bootstrap", type=int, default=100, metavar="K",
                   help="bootstrap resamples of each hold-out fit, for its prediction intervals (default 100)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--budget", type=float, nargs="+", metavar="C", help="FLOP budgets per run: FLOP-optimal "
                   "(N, T, B) per molecule under the measured cost model, and the time-optimal one for the "
                   "seconds the FLOP optimum takes")
    p.add_argument("--time-budget", type=float, nargs="+", metavar="S",
                   help="wall-time budgets per run (seconds of one CPU thread, as measured): time-optimal allocation")
    p.add_argument("--plan", type=float, metavar="C", help="write an iso-cost sweep around the optimum for budget C")
    p.add_argument("--plan-molecule", help="molecule of the plan (default: the first of the fit)")
    p.add_argument("--plan-kind", choices=("flops", "seconds"), default="flops",
                   help="the plan's budget: FLOPs (default) or seconds")
    p.add_argument("--plan-runs", type=int, default=5, metavar="K", help="model sizes on the curve (default 5)")
    p.add_argument("--plan-seeds", type=int, default=3, metavar="S", help="seeds per size (default 3)")
    p.add_argument("--plan-spread", type=float, default=10.0,
                   help="largest / smallest planned size (default 10)")
    p.add_argument("--plan-out", default="configs/sweeps/plan.yaml", metavar="FILE.yaml",
                   help="the sweep file to write (a .plan.json is written beside it)")
    p.add_argument("--check", metavar="PLAN.json", help="compare the finished runs of a plan with its prediction "
                   "(with --plot: observed and predicted against N)")
    p.add_argument("--json", metavar="FILE", help="write the fits (and validation, cost model, allocations) as JSON")
    p.add_argument("--export", metavar="FILE.runs.jsonl.xz",
                   help="write the finished runs among RUN_DIR (configs, summaries, every step's metrics; no "
                        "checkpoints) to one compressed archive that nqs-fit reads in place of run directories, "
                        "and stop")
    p.add_argument("--plot", metavar="FILE.png", help="draw L vs N and D', the residual map and iso-cost curves "
                   "(one file per ansatz when several)")
    p.add_argument("--mix-estimators", action="store_true",
                   help="pool runs trained with different local-energy estimators (refused by default)")
    p.add_argument("--allow-mixed", action="store_true", help=argparse.SUPPRESS)  # pooling is now the default
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with plain_warnings():
        return _run(args)


def _check_args(args) -> None:
    for flag in ("bootstrap", "holdout_bootstrap"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    for flag, unit in (("budget", "FLOPs"), ("time_budget", "seconds")):
        bad = [c for c in getattr(args, flag) or () if not (c > 0 and math.isfinite(c))]
        if bad:
            raise UserError(f"--{flag.replace('_', '-')} {bad[0]:g} is not a positive number of {unit}")
    if args.plan is not None and not (args.plan > 0 and math.isfinite(args.plan)):
        raise UserError(f"--plan {args.plan:g} is not a positive budget")
    if args.plan_seeds < 1 or args.plan_runs < 3:
        raise UserError(f"--plan-seeds must be >= 1 and --plan-runs >= 3 (got {args.plan_seeds}, {args.plan_runs})")
    if args.laws == "molecule" and (args.budget or args.time_budget or args.plan or args.plot):
        raise UserError("--laws molecule reports the laws and their joint validation only: for one molecule's "
                        "allocation, plan or plot use --molecules MOL")
    if args.n_from == "split" and args.law == "interaction":
        raise UserError("--law interaction takes one size term; use --n-from effective (or total) with it")
    if args.n_from == "split" and (args.budget or args.time_budget or args.plan):
        raise UserError("allocation needs one size term: --n-from split fits modulus and phase separately; "
                        "drop --budget/--plan or fit with --n-from effective")


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.allow_mixed:
        warnings.warn("--allow-mixed is no longer needed: runs of several molecules are pooled by default")
    if args.export:
        from nqs.scaling.archive import write

        n = write(args.export, discover_runs(args.run_dirs))
        print(f"{args.export}: {n} runs, {Path(args.export).stat().st_size / 1e6:.2f} MB")
        return 0
    records = load_runs(args.run_dirs)
    check_estimators(records, args.mix_estimators)
    if args.check:
        from nqs.scaling.plan import check_plan, format_check, read_plan

        plan = read_plan(args.check)
        check = check_plan(plan, records)
        print(format_check(check, METRIC_LABELS[plan["metric"]]))
        if args.plot:
            from nqs.scaling.plots import plot_check

            title = f"{plan['ansatz']}, {plan['molecule']}, {check['budget']:.3g} {plan['kind']}"
            print(f"wrote {plot_check(check, args.plot, METRIC_LABELS[plan['metric']], title)}")
        _write_json(args.json, {"check": check})
        return 0
    if args.molecules:
        present = sorted({r.molecule for r in records})
        missing = [m for m in args.molecules if m not in present]
        if missing:
            raise UserError(f"no run on --molecules {' '.join(missing)} among the runs ({', '.join(present)})")
        records = [r for r in records if r.molecule in args.molecules]
    ansatze = sorted({r.ansatz for r in records})
    if args.ansatz:
        if args.ansatz not in ansatze:
            raise UserError(f"no run of --ansatz {args.ansatz} among the runs ({', '.join(ansatze)})")
        ansatze = [args.ansatz]
    out = {}
    for ansatz in ansatze:
        recs = [r for r in records if r.ansatz == ansatz]
        if args.laws == "molecule":
            out[ansatz] = _fit_each_molecule(args, ansatz, recs)
        else:
            out[ansatz] = _fit_one(args, ansatz, recs, plot=_plot_path(args.plot, ansatz, len(ansatze)))
        print()
    _write_json(args.json, out)
    return 0


def _plot_path(plot: str | None, ansatz: str, n: int) -> str | None:
    if not plot or n == 1:
        return plot
    p = Path(plot)
    return str(p.with_name(f"{p.stem}_{ansatz}{p.suffix}"))


def _above_hf(records) -> list:
    """Runs whose final |E − E_ref| is at or above E_HF − E_ref (still on the Hartree–Fock plateau)."""
    return [r for r in records if r.abs_error_mha is not None and r.hf_error_mha is not None
            and r.abs_error_mha >= abs(r.hf_error_mha)]


def _fit_each_molecule(args, ansatz: str, records) -> dict:
    """One law per molecule (`--laws molecule`), then their validations pooled over the molecules."""
    from nqs.scaling.validate import combine

    results = {}
    for mol in sorted({r.molecule for r in records}):
        print(f"--- {mol}: its own law")
        results[mol] = _fit_one(args, ansatz, [r for r in records if r.molecule == mol], plot=None)
    joint = combine([result["fit"]["validation"] for result in results.values()])
    print(f"--- {ansatz}: the {len(results)} molecules' own laws, validated together (each molecule's hold-outs, "
          "pooled):")
    print("\n".join(format_validation(joint)))
    return {"laws": "molecule", "per_molecule": results, "validation": joint}


def _fit_one(args, ansatz: str, records, plot: str | None) -> dict:
    dropped = [] if args.keep_above_hf else _above_hf(records)
    if dropped:
        names = ", ".join(sorted({r.molecule for r in dropped}))
        print(f"left out {len(dropped)} of {len(records)} {ansatz} runs still at or above Hartree–Fock ({names}); "
              "--keep-above-hf keeps them")
        records = [r for r in records if r not in dropped]
        if not records:
            raise UserError(f"every {ansatz} run is at or above Hartree–Fock; nothing to fit (--keep-above-hf to try)")
    pts = collect_points(records, metric=args.metric, n_from=args.n_from, d_from=args.d_from,
                         along_training=args.along_training, drop_above_hf=not args.keep_above_hf)
    molecules = sorted(set(pts.molecule))
    size_terms = SPLIT_TERMS if args.n_from == "split" else ("N",)
    kwargs = {"floors": args.floors, "amplitudes": args.amplitudes, "size_terms": size_terms, "interaction": args.law == "interaction"}
    fit = fit_scaling_law(pts.n, pts.d, pts.loss, molecules=pts.molecule, clusters=pts.cell, weights=pts.weight,
                          final=pts.final, n_bootstrap=args.bootstrap, seed=args.seed, **kwargs)
    fit = fit.with_validation(validate(pts, fit, kwargs, n_bootstrap=min(args.holdout_bootstrap, args.bootstrap)
                                       if args.bootstrap else 0, seed=args.seed))
    counts = ", ".join(f"{m} {len(set(pts.run[pts.molecule == m]))}" for m in molecules)
    print(f"nqs-fit: {ansatz}, L = {METRIC_LABELS[args.metric]} of {len(records)} runs on {len(molecules)} "
          f"molecule(s) ({counts}); N = {N_LABELS[args.n_from]}; D' = {args.d_from} Σ S_F; {fit.n_points} points "
          f"in {fit.n_clusters} clusters (molecule × grid cell)")
    print(format_fit(fit))
    print("validation (scores on each run's final point):")
    print("\n".join(format_validation(fit.validation)))
    result = {"fit": fit.to_json(), "metric": args.metric, "n_from": args.n_from, "d_from": args.d_from,
              "floors": args.floors, "amplitudes": args.amplitudes, "law": args.law, "molecules": molecules, "left_out_above_hf": [str(r.path) for r in dropped]}
    costs = None
    if args.budget or args.time_budget or args.plan or plot:
        costs, cost_lines, cost_json = _cost_models(records)
        print("\n".join(cost_lines))
        result["cost_model"] = cost_json
    if args.budget or args.time_budget or args.plan:
        allocs, lines = _allocations(args, fit, costs, records, pts, molecules)
        print("\n".join(lines))
        fit = fit.with_optimal(allocs)
        result["allocations"] = [a.to_json() for a in allocs]
        if args.plan:
            result["plan"] = _plan(args, fit, costs, records, pts, molecules, ansatz)
    if plot:
        from nqs.scaling.plots import plot_fit

        print(f"wrote {plot_fit(fit, pts, plot, metric_label=METRIC_LABELS[args.metric], costs=costs, n_from=args.n_from, d_from=args.d_from)}",
              file=sys.stderr)
    return result


def format_fit(fit: FitResult) -> str:
    law = fit.law
    centre = ", ".join(f"{s}_c = {v:.4g}" for s, v in zip(law.size_terms, law.n_centre))
    per = "" if len(law.amplitude_groups) == 1 else "[molecule]"
    terms = " + ".join(f"A{t}{per}·({s}/{s}_c)^-alpha{t}" for s, t in zip(law.size_terms + ("D'",),
                                                                         term_names(law.size_terms)))
    floor = "A0" if len(law.floors) == 1 else "A0[molecule]"
    if law.interaction:
        terms += f" + A12{per}·(N/N_c)^-alpha1·(D'/D'_c)^-alpha2"
    lines = [f"L = {floor} + {terms};  {centre}, D'_c = {law.d_centre:.4g} (the data's geometric centre)"]
    for name, value in {**fit.params, **fit.derived}.items():
        ci = fit.ci.get(name)
        tail = f"   95% CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        lines.append(f"  {name:<22}= {value:<12.5g}{tail}")
    flags = "; ".join(fit.flags) if fit.flags else "none"
    lines.append(f"status: {fit.status.value}; flags: {flags}")
    lines.append(f"residual scale (RMS of the final points' log-residuals): {fit.residual_scale:.3f}; "
                 f"Huber loss (δ = 1e-3, summed): {fit.loss:.4g}; bootstrap: {fit.n_bootstrap} cluster resamples")
    return "\n".join(lines)


def _cost_models(records):
    from nqs.scaling.cost import fit_cost_models
    from nqs.scaling.cost_check import check_against_logs
    from nqs.tables import markdown_table

    models = fit_cost_models(records)
    checks = check_against_logs(records, models)
    rows = []
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    for (ansatz, mol), m in sorted(models.items()):
        errs = [c for c in checks if c.molecule == mol and c.ansatz == ansatz]
        cap = sorted(abs(c.flops_error) for c in errs)
        own = [abs(c.count_error) for c in errs]
        tm = sorted(abs(c.seconds_error) for c in errs if c.seconds_error is not None)
        rows.append([mol, len(errs), f"{pct(cap[len(cap) // 2])} / {pct(cap[-1])}" if cap else "—",
                     pct(max(own)) if own else "—", f"{pct(tm[len(tm) // 2])} / {pct(tm[-1])}" if tm else "—"])
    lines = ["cost model per step (fitted on the runs' metrics.jsonl); each run's total predicted from its config, "
             "T and cap B, against its summary:",
             markdown_table(["molecule", "runs", "FLOPs error from B: median / max",
                             "FLOPs error given the run's mean U: max", "wall-time error: median / max"], rows)]
    return models, lines, {f"{a}/{m}": c.to_json() for (a, m), c in models.items()}


def _allocations(args, fit, costs, records, pts, molecules):
    from nqs.scaling.allocate import allocate, format_allocations, run_cost

    allocs = []
    for mol in molecules:
        cost = costs.get((records[0].ansatz, mol))
        if cost is None:
            warnings.warn(f"no cost model for {mol}: its runs have no usable metrics.jsonl; no allocation")
            continue
        recs = [r for r in records if r.molecule == mol]
        caps = sorted({float(r.unique) for r in recs if r.unique})
        steps = [r.steps for r in recs if r.steps]
        molecule_n = pts.n_first[pts.molecule == mol]
        common = dict(molecule=mol, n_from=args.n_from, d_from=args.d_from, caps=caps,
                      n_range=_n_range(pts, mol), data_n=(float(molecule_n.min()), float(molecule_n.max())),
                      steps_range=(min(steps), max(steps)) if steps else None)
        if args.budget:
            flop_opt = allocate(fit, cost, kind="flops", budgets=args.budget, **common)
            allocs += flop_opt
            try:
                seconds = [float(run_cost(a.steps, cost.seconds(a.n, a.cap, args.n_from),
                                          cost.seconds(a.n, a.cap, args.n_from, True), cost.sr_from)) for a in flop_opt]
                allocs += allocate(fit, cost, kind="seconds", budgets=seconds, **common)
            except UserError as exc:
                warnings.warn(f"{mol}: no time-optimal allocation ({exc})")
        if args.time_budget:
            allocs += allocate(fit, cost, kind="seconds", budgets=args.time_budget, **common)
        if args.plan and not args.budget and not args.time_budget:
            allocs += allocate(fit, cost, kind=args.plan_kind, budgets=[args.plan], **common)
    lines = ["compute-optimal allocation per molecule (FLOP rows: --budget; seconds rows: the time the FLOP "
             "optimum takes, or --time-budget):"] + format_allocations(allocs, METRIC_LABELS[args.metric])
    return allocs, lines


def _n_range(pts, mol) -> tuple[float, float]:
    """Where the allocation searches N: from the molecule's smallest model (the size family starts there) to
    10× its largest; an optimum beyond the data's largest N is flagged as an extrapolation."""
    n = pts.n_first[pts.molecule == mol]
    return float(n.min()), float(n.max()) * 10


def _plan(args, fit, costs, records, pts, molecules, ansatz) -> dict:
    from nqs.scaling.allocate import allocate
    from nqs.scaling.plan import plan_iso_cost, write_plan

    mol = args.plan_molecule or molecules[0]
    if mol not in molecules:
        raise UserError(f"--plan-molecule {mol}: not among the fitted molecules ({', '.join(molecules)})")
    cost = costs.get((ansatz, mol))
    if cost is None:
        raise UserError(f"no cost model for {ansatz} on {mol}: its runs have no usable metrics.jsonl to plan from")
    recs = [r for r in records if r.molecule == mol]
    steps = [r.steps for r in recs if r.steps]
    molecule_n = pts.n_first[pts.molecule == mol]
    opt = allocate(fit, cost, molecule=mol, kind=args.plan_kind, budgets=[args.plan], n_from=args.n_from,
                   d_from=args.d_from, caps=sorted({float(r.unique) for r in recs if r.unique}),
                   n_range=_n_range(pts, mol), data_n=(float(molecule_n.min()), float(molecule_n.max())),
                   steps_range=(min(steps), max(steps)) if steps else None)[0]
    for w in opt.warnings:
        warnings.warn(f"plan: {w}")
    sweep, plan = plan_iso_cost(fit, cost, opt, records, ansatz=ansatz, n_from=args.n_from, d_from=args.d_from,
                                metric=args.metric, k=args.plan_runs, seeds=range(args.plan_seeds),
                                spread=args.plan_spread)
    path, side = write_plan(sweep, plan, args.plan_out)
    print(f"plan: {len(plan['points'])} sizes × {args.plan_seeds} seeds on the {args.plan_kind} curve "
          f"{args.plan:.3g} around N* = {opt.n:.4g}; wrote {path} and {side}")
    for w in plan.get("warnings", ()):
        warnings.warn(f"plan: {w}")
    for p in plan["points"]:
        print(f"  N {p['n']:.4g}  T {p['steps']}  B {p['cap']}  cost {p['predicted_cost']:.4g} "
              f"({100 * (p['predicted_cost'] / args.plan - 1):+.1f}% of the budget)  predicted {p['predicted']:.4g}")
    return plan


def _write_json(path: str | None, data) -> None:
    if not path:
        return
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write --json {out}: {exc.strerror}; choose a writable path") from None
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
