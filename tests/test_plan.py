"""nqs-fit on real short runs: the cost model's allocation, an iso-FLOP plan that nqs-sweep can run and whose
runs sit on the budget, and --check against finished runs of a plan (synthetic summaries with a known best)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nqs.scaling.plan import check_plan, read_plan
from nqs.scaling.runs import load_runs
from nqs.scaling.sweep import load_sweep


@pytest.fixture(scope="module")
def planned(short_runs, tmp_path_factory):
    from nqs.cli.fit import main

    tmp = tmp_path_factory.mktemp("plan")
    plan_out = tmp / "plan.yaml"
    rc = main([*map(str, short_runs), "--metric", "vscore", "--bootstrap", "10", "--holdout-bootstrap", "5",
               "--budget", "3e8", "--plan", "3e8", "--plan-molecule", "LiH", "--plan-seeds", "2",
               "--plan-spread", "6", "--keep-above-hf", "--plan-out", str(plan_out), "--json", str(tmp / "fit.json")])
    assert rc == 0
    return tmp, plan_out, json.loads((tmp / "fit.json").read_text())["transformer"]


def test_allocation_and_cost_model_in_the_report(planned):
    _, _, data = planned
    flops = [a for a in data["allocations"] if a["kind"] == "flops"]
    seconds = [a for a in data["allocations"] if a["kind"] == "seconds"]
    assert {a["molecule"] for a in flops} == {"LiH", "H2O"} and len(seconds) == 2
    for a in flops:  # the allocation spends the budget under the cost model
        assert a["budget"] == 3e8 and a["n"] > 0 and a["steps"] > 0
    assert set(data["cost_model"]) == {"transformer/LiH", "transformer/H2O"}


def test_plan_is_a_sweep_on_the_budget(planned):
    tmp, plan_out, _ = planned
    sweep = load_sweep(plan_out)
    plan = read_plan(plan_out.with_suffix(".plan.json"))
    assert len(plan["points"]) >= 3 and len(sweep.runs) == 2 * len(plan["points"])
    for p in plan["points"]:  # the budget, up to rounding the steps to an integer (half a step's cost)
        assert abs(p["predicted_cost"] - 3e8) <= 0.5 * p["predicted_cost"] / p["steps"] * (1 + 1e-9)
    ns = [p["n"] for p in plan["points"]]
    assert ns == sorted(ns) and len(set(ns)) == len(ns)
    cfg = sweep.runs[0].config
    assert cfg.molecule.mol == "LiH" and cfg.sampling.unique == plan["cap"] and cfg.model.ansatz == "transformer"


def test_check_reports_both_approaches(planned, tmp_path):
    _, plan_out, _ = planned
    plan = read_plan(plan_out.with_suffix(".plan.json"))
    ns = np.array([p["n"] for p in plan["points"]])
    best = ns[len(ns) // 2]
    for i, p in enumerate(plan["points"]):
        for seed in range(2):
            err = 2.0 * math.exp(math.log(p["n"] / best) ** 2) * (1.05 if seed else 0.95)
            run = tmp_path / f"r{i}_{seed}"
            run.mkdir()
            (run / "summary.json").write_text(json.dumps({
                "molecule": "LiH", "ansatz": "transformer", "n_params": p["n"], "n_params_effective": p["n"],
                "steps": p["steps"], "unique": plan["cap"], "energy": -7.882 + err / 1e3, "e_fci": -7.882, "e_hf": -7.87,
                "vscore": err / 1e3, "flops_total": 1.01 * plan["budget"], "seed": seed}))
    check = check_plan(plan, load_runs([tmp_path]))
    assert check["observed_best_n"] == pytest.approx(best)
    assert check["approach2_n_star"] == pytest.approx(best, rel=1e-6)  # a parabola in log N, exactly
    assert all(r["spent_over_budget"] == pytest.approx(1.01) and r["n_runs"] == 2 for r in check["rows"])
    assert isinstance(check["law_within_one_neighbour"], bool)
    from nqs.cli.fit import main

    png = tmp_path / "check.png"
    assert main([str(tmp_path), "--check", str(plan_out.with_suffix(".plan.json")), "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_check_without_finished_runs_exits_2(planned, tmp_path, capsys):
    from nqs.cli.fit import main

    _, plan_out, _ = planned
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "summary.json").write_text(json.dumps({"molecule": "H2", "ansatz": "made"}))
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--check", str(plan_out.with_suffix(".plan.json"))])
    assert exc.value.code == 2 and "have finished runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--check", str(tmp_path / "x" / "summary.json")])
    assert "not a plan written by nqs-fit --plan" in capsys.readouterr().err


def test_a_budget_buys_plain_steps_then_sr_steps():
    """With an SR phase from step T0 a run costs min(T, T0)·c + max(T − T0, 0)·c_SR: the steps a budget buys
    invert that exactly, and D' counts each phase's S_F."""
    from nqs.scaling.allocate import run_cost, run_d_prime, steps_for_budget

    assert float(steps_for_budget(50.0, 1.0, 5.0, 100)) == 50.0  # before the switch: plain steps only
    assert float(steps_for_budget(600.0, 1.0, 5.0, 100)) == 200.0  # 100 plain (100) + 100 SR (500)
    assert float(steps_for_budget(600.0, 1.0, 5.0, None)) == 600.0  # no SR phase
    for budget in (10.0, 100.0, 101.0, 3e4):
        assert float(run_cost(steps_for_budget(budget, 2.0, 7.0, 40), 2.0, 7.0, 40)) == pytest.approx(budget)
    assert float(run_d_prime(200.0, 0.5, 0.25, 100)) == 75.0


def test_a_decay_in_steps_scales_with_the_planned_length():
    """E3's protocol decays over 20% of the steps after the switch to SR: a planned run keeps that share."""
    from dataclasses import replace

    from nqs.scaling.plan import _decay_steps
    from nqs.training.config_groups import OptimConfig

    near = OptimConfig(lr_schedule="wsd", decay=160, optimizer="adam+sr", sr_from=420, steps=1220)
    assert _decay_steps(near, 1220) == 160
    assert _decay_steps(near, 520) == 20
    assert _decay_steps(replace(near, optimizer="adam", steps=1000), 500) == 80  # no SR: a share of the whole run
    assert _decay_steps(replace(near, decay=0.2), 520) is None  # a fraction already scales
    assert _decay_steps(replace(near, lr_schedule="cosine"), 520) is None
