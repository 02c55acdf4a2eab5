"""The measured cost model (`nqs.scaling.cost`) on real short runs, and the nominal S_F they log."""
from __future__ import annotations

import json
import math
import shutil
import warnings

import pytest

from nqs.errors import UserError
from nqs.models import ModelConfig
from nqs.models.counts import param_counts
from nqs.record import read_metrics, read_summary
from nqs.scaling.cost import SizeFamily, fit_cost_models
from nqs.scaling.cost_check import check_against_logs
from nqs.scaling.runs import load_runs


@pytest.fixture(scope="module")
def fitted(short_runs):
    records = load_runs(short_runs)
    return records, fit_cost_models(records)


def test_the_model_reproduces_the_logged_total_flops_within_5_percent(fitted):
    records, models = fitted
    assert set(models) == {("transformer", "LiH"), ("transformer", "H2O")}
    checks = check_against_logs(records, models)
    assert len(checks) == len(records) == 8
    errors = {c.path.name: round(c.flops_error, 4) for c in checks}
    assert all(abs(e) < 0.05 for e in errors.values()), errors
    assert all(abs(c.count_error - c.flops_error) < 1e-9 for c in checks)  # the caps bind: U is the cap
    for c in checks:
        assert c.seconds_predicted > 0 and c.seconds_logged > 0


def test_a_held_out_size_is_predicted_from_the_other_runs(fitted, short_runs):
    records, _ = fitted
    train = [r for r in records if "dm8" not in r.path.name or r.molecule != "LiH"]
    held = [r for r in records if r not in train]
    checks = check_against_logs(held, fit_cost_models(train))
    assert len(checks) == 2 and all(abs(c.flops_error) < 0.05 for c in checks), [c.flops_error for c in checks]


def test_unique_never_exceeds_the_cap_or_the_sector(fitted):
    _, models = fitted
    for cost in models.values():
        for cap in (1, 10, 40, 100, 160, 300, 1e4):
            assert 0 < cost.unique(cap) <= min(cap, cost.sector_size) + 1e-9
        assert cost.unique(40) == pytest.approx(40) and cost.unique(160) == pytest.approx(160)  # the caps bound
        with pytest.raises(UserError, match="at least 1"):
            cost.unique(0)


def test_flops_at_a_member_equals_the_exact_config_and_interpolates_monotonically(fitted):
    _, models = fitted
    cost = models[("transformer", "LiH")]
    members = cost.family.members(cost.sector)
    assert [m.options["d_model"] for m in members][:2] == [4, 6] and members[-1].options["d_model"] == 64
    for m in members[::7]:
        for n_from in ("total", "effective"):
            assert cost.flops(m.counts[n_from], 160, n_from) == pytest.approx(cost.flops_for_options(m.options, 160),
                                                                              rel=1e-9)
        assert cost.seconds(m.counts["total"], 40) == pytest.approx(cost.seconds_for_options(m.options, 40), rel=1e-9)
    a, b = members[3], members[4]
    mid = math.sqrt(a.counts["total"] * b.counts["total"])
    assert cost.flops_for_options(a.options, 160) < cost.flops(mid, 160) < cost.flops_for_options(b.options, 160)
    assert cost.flops(1e9, 160) > cost.flops_for_options(members[-1].options, 160)  # extends past the members
    assert cost.flops_for_options(a.options, 160) > cost.flops_for_options(a.options, 40)


def test_options_for_round_trips_a_members_size(fitted):
    _, models = fitted
    cost = models[("transformer", "H2O")]
    fam = cost.family
    assert fam.fixed == (("layers", 1), ("heads", 2), ("phase_layers", 2), ("phase_input", "bits"))
    assert fam.widths == (4, 8)
    assert fam.d_ff_ratio == 4 and fam.phase_ratio == 2
    for m in fam.members(cost.sector)[::5]:
        for n_from in ("total", "modulus", "effective"):
            options, counts = fam.options_for(m.counts[n_from], n_from, cost.sector)
            assert options == m.options and counts == m.counts
    options, counts = fam.options_for(1.1 * m.counts["total"], "total", cost.sector)
    assert counts == param_counts(ModelConfig("transformer", **options), cost.sector)
    with pytest.raises(UserError, match="unknown parameter count"):
        fam.options_for(100, "all", cost.sector)


def test_to_json_reports_the_fit(fitted):
    _, models = fitted
    data = json.loads(json.dumps(models[("transformer", "LiH")].to_json()))
    assert data["n_runs"] == 4 and data["n_steps"] == 80 and data["flops_residual"] < 0.05
    assert set(data["seconds"]) == {"sampling", "local_energy", "gradient", "framework"}
    assert all(v >= 0 for phase in data["seconds"].values() for v in phase.values())
    assert data["family"]["widths"] == [4, 8] and data["unique"]["caps"] == [40, 160]


def test_unusable_runs_are_skipped_with_a_warning_naming_them(short_runs, tmp_path):
    broken = tmp_path / "no-metrics"
    shutil.copytree(short_runs[0], broken)
    (broken / "metrics.jsonl").unlink()
    records = load_runs([broken, *short_runs[:4]])
    with pytest.warns(UserWarning, match=f"{broken}: no metrics.jsonl"):
        models = fit_cost_models(records)
    assert list(models) == [("transformer", "LiH")] and models[("transformer", "LiH")].n_runs == 4
    with pytest.warns(UserWarning, match="no metrics.jsonl"), pytest.raises(UserError, match="no run with"):
        fit_cost_models(load_runs([broken]))


def test_nominal_sample_fraction_is_logged_beside_the_realised_one(short_runs):
    run = short_runs[0]  # LiH (225 determinants), cap 40
    s, rows = read_summary(run), read_metrics(run)
    nominal = min(s.unique, s.sector_size) / s.sector_size
    assert all(r.s_f_nominal == pytest.approx(nominal) for r in rows)
    assert s.d_prime_nominal == pytest.approx(s.steps * nominal) == pytest.approx(rows[-1].d_prime_nominal)
    assert s.d_from("nominal") == s.d_prime_nominal and s.d_from("realised") == s.d_prime
    assert s.d_from("full") == s.d_prime_full
    assert s.n_from("effective") == s.n_params_effective < s.n_params
    assert s.n_from("effective_modulus") == s.n_params_effective - s.n_params_phase


def test_resuming_a_checkpoint_without_the_nominal_sum_restores_it(short_runs, tmp_path):
    """Checkpoints written before d_prime_nominal was kept: the steps done so far all ran at the config's cap."""
    import torch

    from nqs.record import CHECKPOINT
    from nqs.training.config import load_yaml, resolve
    from nqs.training.run import run

    out = tmp_path / "resumed"
    shutil.copytree(short_runs[1], out)  # LiH, cap 160, 20 steps done
    state = torch.load(out / CHECKPOINT, weights_only=False)
    del state["vmc_totals"]["d_prime_nominal"]
    torch.save(state, out / CHECKPOINT)
    cfg = resolve([("config", load_yaml(out / "config.yaml"))]).updated(steps=22)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's deprecation notices on restoring
        summary = run(cfg, out, resume=True)
    assert summary.steps == 22 and summary.d_prime_nominal == pytest.approx(22 * 160 / 225)
    assert [r.d_prime_nominal for r in read_metrics(out)][-3:] == pytest.approx([k * 160 / 225 for k in (20, 21, 22)])


def test_size_family_from_configs_takes_the_common_depth_and_median_ratios():
    cfgs = [ModelConfig("made", hidden=h, made_layers=2, phase_hidden=h // 2, phase_layers=3) for h in (16, 32, 64)]
    fam = SizeFamily.from_configs("made", cfgs + [ModelConfig("made", hidden=48, made_layers=3, phase_hidden=24)])
    assert fam.widths == (16, 32, 48, 64)
    assert dict(fam.fixed) == {"made_layers": 2, "phase_layers": 3, "phase_input": "bits"}
    assert fam.phase_ratio == 0.5 and fam.d_ff_ratio is None and fam.step == 1
    assert fam.options(40) == {"hidden": 40, "made_layers": 2, "phase_layers": 3, "phase_input": "bits",
                               "phase_hidden": 20}


def test_logged_sr_flops_are_rebased_on_the_current_formula(fitted):
    """A run that logged a different (e.g. the older stacked) natural-gradient estimate is checked against
    its total with that term replaced by today's formula, so the check measures the model, not the log."""
    from dataclasses import replace

    from nqs import flops as fl
    from nqs.models.counts import cached_counts
    from nqs.scaling.cost import _load
    from nqs.scaling.cost_check import _logged_total

    records, _ = fitted
    run = _load(records[0])
    cfg = run.cfg.updated(optimizer="adam+sr", sr_from=0, sr_rows=16)
    steps = tuple(replace(s, flops_step={**s.flops_step, "natural_gradient": 1e12}) for s in run.steps)
    logged = replace(run.record, flops_total=run.record.flops_total + 1e12 * len(steps))
    sr_run = replace(run, record=logged, cfg=cfg, steps=steps)
    n_params = cached_counts(cfg.model, run.sector)["total"]
    expected = run.record.flops_total + sum(
        fl.natural_gradient_flops(cfg.model, run.sector, min(16, s.n_unique), n_params) for s in steps)
    assert _logged_total(sr_run) == pytest.approx(expected, rel=1e-9)  # 1e12 added and removed per step
    assert _logged_total(run) == run.record.flops_total  # Adam runs: the logged total as it is
