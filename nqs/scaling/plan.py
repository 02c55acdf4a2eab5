"""Plan an iso-FLOP (or iso-time) sweep around a predicted optimum, and check it once it has run.

`plan_iso_cost` places K model sizes of the runs' size family on one cost curve C = T·c(N, B*) around the
fitted optimum N*(C) (log-spaced over `spread`, a factor between the smallest and largest), each with the
T that spends the budget under the cost model, and writes an `nqs-sweep` file (seeds × sizes) plus a
`.plan.json` beside it with the prediction. `check_plan` reads the finished runs and puts Chinchilla's
approach 2 (a parabola through the observed mean log L against log N on the curve: its vertex) beside
approach 3 (the law's N*), and says whether the law's optimum is the observed best within one neighbour.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from nqs.errors import UserError
from nqs.scaling.allocate import KINDS, Allocation, run_cost, run_d_prime, s_f_per_step, steps_for_budget
from nqs.scaling.fit import FitResult
from nqs.scaling.runs import RunRecord, run_n
from nqs.tables import markdown_table

SIZE_OPTIONS = ("d_model", "d_ff", "layers", "heads", "hidden", "made_layers", "phase_hidden", "phase_layers")
PLAN_SUFFIX = ".plan.json"


def _template(records: Sequence[RunRecord], molecule: str, ansatz: str, n_star: float, n_from: str):
    """The flat configuration of the run of `molecule` and `ansatz` nearest to N* (log distance), without
    its size, length, seed and output options: the protocol the planned runs repeat; and that run's
    OptimConfig (its steps and SR start scale the planned runs' decay)."""
    from nqs.training.config import load_yaml, resolve

    cands = [r for r in records if r.molecule == molecule and r.ansatz == ansatz and r.path is not None
             and (Path(r.path) / "config.yaml").is_file() and run_n(r, n_from)[0]]
    if not cands:
        raise UserError(f"no run of {ansatz} on {molecule} with a config.yaml to take the protocol from")
    near = min(cands, key=lambda r: abs(math.log(run_n(r, n_from)[0] / n_star)))
    path = Path(near.path) / "config.yaml"
    drop = set(SIZE_OPTIONS) | {"steps", "seed", "out", "init_from", "max_time"}
    cfg = resolve([(str(path), load_yaml(path))])
    return {k: v for k, v in cfg.flat().items() if k not in drop and v is not None}, cfg.optim


def _decay_steps(near, steps: int) -> int | None:
    """The template run's (OptimConfig `near`) warmup-stable-decay length in steps, scaled to a run of `steps`
    steps as its share of the steps after the switch to SR (of all steps without one); None when nothing
    to scale."""
    if near.lr_schedule != "wsd" or near.decay < 1:
        return None  # a fraction of the run (< 1) already scales with T
    start = near.sr_start or 0
    if near.steps <= start:
        return None
    return max(1, int(round(near.decay * (steps - start) / (near.steps - start))))


def plan_iso_cost(fit: FitResult, cost, optimum: Allocation, records: Sequence[RunRecord], *, ansatz: str,
                  n_from: str, d_from: str, metric: str, k: int = 5, seeds: Sequence[int] = (0, 1, 2),
                  spread: float = 10.0, out_dir: str | None = None) -> tuple[dict, dict]:
    """(sweep file mapping, plan record) for K sizes on the iso-cost curve through `optimum`."""
    if k < 3:
        raise UserError(f"--plan-runs {k}: an iso-cost curve needs at least 3 sizes to locate a minimum")
    if not spread > 1:
        raise UserError(f"--plan-spread {spread}: the factor between the largest and smallest size must exceed 1")
    mol, cap, budget = optimum.molecule, int(round(optimum.cap)), optimum.budget
    targets = optimum.n * spread ** (np.linspace(-0.5, 0.5, k))
    fn = cost.flops_for_options if optimum.kind == "flops" else cost.seconds_for_options
    members = cost.family.members(cost.sector)
    count = (lambda m: m.counts[n_from] if n_from in m.counts else m.counts["total"])  # noqa: E731
    chosen: list = []
    for target in targets:  # the nearest member not taken yet (log distance)
        free = [m for m in members if all(m is not c for c in chosen)]
        if free:
            chosen.append(min(free, key=lambda m: abs(math.log(count(m) / target))))
    chosen.sort(key=count)
    notes = []
    if len({count(m) for m in chosen}) < k:
        notes.append(f"only {len({count(m) for m in chosen})} distinct sizes of the family near the {k} targets")
    points = []
    sr_from = cost.sr_from
    s_f, s_f_sr = s_f_per_step(cost, cap, d_from), s_f_per_step(cost, cap, d_from, sr=True)
    for m in chosen:
        size, counts = m.options, m.counts
        per_step, per_sr = fn(size, cap), fn(size, cap, cost.sr_rows if sr_from is not None else None)
        steps = max(1, int(round(float(steps_for_budget(budget, per_step, per_sr, sr_from)))))
        n = counts["split" if n_from == "split" else n_from] if n_from in counts else counts["total"]
        dp = float(run_d_prime(steps, s_f, s_f_sr, sr_from))
        points.append({"size": size, "n": float(n), "steps": steps, "cap": cap,
                       "predicted_cost": float(run_cost(steps, per_step, per_sr, sr_from)),
                       "predicted": float(fit.predict(n, dp, mol)[0]),
                       "d_prime": dp})
    if len(points) < 3:
        raise UserError(f"only {len(points)} distinct model sizes of the family lie in the planned range; "
                        "widen --plan-spread")
    base, near = _template(records, mol, ansatz, optimum.n, n_from)
    base["unique"] = cap
    decays = [_decay_steps(near, p["steps"]) for p in points]
    label = f"{ansatz}_{mol}_{optimum.kind}{budget:.2g}".replace("+", "")
    out = out_dir or f"runs/plans/{label}"
    sweep = {"description": f"iso-{KINDS[optimum.kind]} plan: {ansatz} on {mol}, budget {budget:.3g} "
                            f"{KINDS[optimum.kind]} per run, {len(points)} sizes around the predicted N* = "
                            f"{optimum.n:.4g} (nqs-fit --plan; check with nqs-fit --check)",
             "out": out, "base": base,
             "grid": [{"size": [p["size"]], "steps": [p["steps"]], **({} if d is None else {"decay": [d]}),
                       "seed": list(seeds)} for p, d in zip(points, decays)]}
    plan = {"warnings": notes + list(optimum.warnings), "molecule": mol, "ansatz": ansatz, "kind": optimum.kind, "budget": budget, "metric": metric,
            "n_from": n_from, "d_from": d_from, "cap": cap, "optimum": optimum.to_json(), "points": points,
            "out": out, "law": fit.law.to_json()}
    return sweep, plan


def write_plan(sweep: dict, plan: dict, path: str | Path) -> tuple[Path, Path]:
    """Write the sweep YAML at `path` and the plan record at `path` + .plan.json."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by nqs-fit --plan; run it with nqs-sweep, then nqs-fit --check "
                        f"{path.with_suffix(PLAN_SUFFIX)} {plan['out']}\n" + yaml.safe_dump(sweep, sort_keys=False))
        side = path.with_suffix(PLAN_SUFFIX)
        side.write_text(json.dumps(plan, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write the plan to {path}: {exc.strerror}; choose a writable --plan-out") from None
    return path, side


def read_plan(path: str | Path) -> dict:
    path = Path(path)
    try:
        plan = json.loads(path.read_text())
        plan["points"], plan["budget"]  # noqa: B018 - the keys a check needs
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a plan written by nqs-fit --plan (a .plan.json file)") from None
    return plan


def check_plan(plan: dict, records: Sequence[RunRecord]) -> dict:
    """Observed against predicted on the planned iso-cost curve (see the module docstring)."""
    metric, n_from, kind = plan["metric"], plan["n_from"], plan["kind"]
    rows = []
    for p in plan["points"]:
        runs = [r for r in records if r.molecule == plan["molecule"] and r.ansatz == plan["ansatz"]
                and r.steps == p["steps"] and r.unique == plan["cap"] and run_n(r, n_from)[0] is not None
                and abs(math.log(run_n(r, n_from)[0] / p["n"])) < 1e-6]
        vals = [r.vscore if metric == "vscore" else r.abs_error_mha for r in runs]
        vals = [v for v in vals if v is not None and v > 0]
        spent = [(r.flops_total if kind == "flops" else r.wall_s) for r in runs]
        spent = [s for s in spent if s]
        rows.append({**p, "n_runs": len(vals), "observed": float(np.exp(np.mean(np.log(vals)))) if vals else None,
                     "log_sd": float(np.std(np.log(vals), ddof=1)) if len(vals) > 1 else None,
                     "spent_over_budget": float(np.mean(spent) / plan["budget"]) if spent else None})
    done = [r for r in rows if r["observed"] is not None]
    if len(done) < 3:
        raise UserError(f"{len(done)} of the {len(rows)} planned sizes have finished runs among the given "
                        f"directories; run the plan's sweep (out: {plan['out']}) first")
    logn = np.log([r["n"] for r in done])
    logl = np.log([r["observed"] for r in done])
    best = int(np.argmin(logl))
    n_star = plan["optimum"]["n"]
    nearest = int(np.argmin(np.abs(logn - math.log(n_star))))
    a, b, _ = np.polyfit(logn, logl, 2)
    vertex = float(np.exp(-b / (2 * a))) if a > 0 else None
    inside = vertex is not None and logn.min() <= math.log(vertex) <= logn.max()
    return {"rows": rows, "observed_best_n": float(np.exp(logn[best])), "law_n_star": n_star,
            "approach2_n_star": vertex if inside else None,
            "approach2_note": None if inside else "the observed curve has no interior minimum (parabola)",
            "law_within_one_neighbour": abs(best - nearest) <= 1, "budget": plan["budget"], "kind": kind}


def format_check(check: dict, metric_label: str) -> str:
    unit = KINDS[check["kind"]]
    table = markdown_table(
        ["N", "T", "runs", f"observed {metric_label} (geo. mean)", "log sd", f"predicted {metric_label}",
         "spent / budget"],
        [[f"{r['n']:.4g}", r["steps"], r["n_runs"], "—" if r["observed"] is None else f"{r['observed']:.4g}",
          "—" if r["log_sd"] is None else f"{r['log_sd']:.2f}", f"{r['predicted']:.4g}",
          "—" if r["spent_over_budget"] is None else f"{r['spent_over_budget']:.3f}"] for r in check["rows"]])
    a2 = check["approach2_n_star"]
    return "\n".join([
        f"iso-{unit} check at {check['budget']:.3g} {unit}:", table,
        f"observed best N = {check['observed_best_n']:.4g}; approach 3 (the law) N* = {check['law_n_star']:.4g}; "
        f"approach 2 (parabola in log N) N* = {'—' if a2 is None else f'{a2:.4g}'}"
        + (f" ({check['approach2_note']})" if check["approach2_note"] else ""),
        "the law's optimum is the observed best within one neighbour: "
        + ("yes" if check["law_within_one_neighbour"] else "no")])
