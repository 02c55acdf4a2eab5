"""Run-length-independent schedules, the stopping rules, and branches of a WSD trunk."""
from __future__ import annotations

import math

import pytest

from nqs.training.config import TrainConfig
from nqs.training.schedules import StopMonitor, decay_length, lr_factor, temperature


def test_cosine_is_the_closed_form_of_the_earlier_code():
    o = TrainConfig().optim  # lr 1e-2 -> 1e-3 over 1,200 steps, 20 warm-up
    ratio = o.lr_final / o.lr
    for step in (0, 10, 19, 20, 21, 600, 1199, 1500):
        if step < o.warmup:
            expected = (step + 1) / o.warmup
        else:
            progress = min((step - o.warmup) / (o.steps - o.warmup), 1.0)
            expected = ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr_factor(o, step) == expected


def test_wsd_is_constant_until_the_decay_then_linear_to_lr_final():
    o = TrainConfig().updated(lr_schedule="wsd", steps=1000, decay=200, warmup=10, lr=1e-2, lr_final=1e-3).optim
    assert decay_length(o) == 200
    assert lr_factor(o, 0) == pytest.approx(0.1) and lr_factor(o, 9) == 1.0
    assert lr_factor(o, 10) == lr_factor(o, 799) == 1.0
    assert lr_factor(o, 800) == pytest.approx(1 - 0.9 / 200)
    assert lr_factor(o, 999) == pytest.approx(0.1)  # the last step runs at lr_final
    assert lr_factor(o, 500, decay_start=400) == pytest.approx(1 - 0.9 * 101 / 200)  # a stopping rule moved it
    frac = TrainConfig().updated(lr_schedule="wsd", steps=1000, decay=0.25).optim
    assert decay_length(frac) == 250


def test_annealing_over_absolute_steps_ignores_the_run_length():
    short = TrainConfig().updated(steps=400, anneal_steps=200, anneal_t0=0.5).optim
    long = TrainConfig().updated(steps=4000, anneal_steps=200, anneal_t0=0.5).optim
    for step in (0, 50, 199, 200, 1000):
        assert temperature(short, step) == temperature(long, step)
    assert temperature(short, 100) == 0.25 and temperature(short, 200) == 0.0
    assert temperature(TrainConfig().optim, 300) == pytest.approx(0.25)  # fraction form: 0.5 of 1,200 steps


def feed(monitor: StopMonitor, energies, vscore=1e-3, temp_until=0, dt=1.0):
    for step, e in enumerate(energies):
        if monitor.update(step, e, vscore, 0.1 if step < temp_until else 0.0, dt * (step + 1), dt):
            return step
    return None


def test_energy_window_fires_when_flat_and_a_wsd_run_decays_then_stops():
    cfg = TrainConfig().updated(lr_schedule="wsd", steps=1000, decay=50, stop_window=20, stop_sigma=2.0)
    falling = [-1.0 - 0.01 * k for k in range(100)]  # 10 mHa a step: never flat
    flat = [falling[-1] + 1e-4 * (-1) ** k for k in range(100)]
    m = StopMonitor(cfg)
    last = feed(m, falling + flat, temp_until=10)
    first_flat = 100 + 2 * 20 - 1  # two full windows of the flat part
    assert m.state.met["energy"] <= first_flat and m.state.met["energy"] >= 100
    assert m.state.decay_start == m.state.met["energy"] + 1
    assert last == m.state.decay_start + 50 - 1  # the decay runs, then the run ends
    assert m.record(last + 1)["stop_reason"] == "converged"


def test_nothing_fires_during_annealing_and_cosine_stops_at_once():
    cfg = TrainConfig().updated(steps=1000, stop_window=10)
    m = StopMonitor(cfg)
    assert feed(m, [-1.0] * 50, temp_until=50) is None and "energy" not in m.state.met
    m = StopMonitor(cfg)
    assert feed(m, [-1.0] * 50) == 19 and m.record(20)["stop_reason"] == "converged"


def test_vscore_and_wall_time_budget():
    cfg = TrainConfig().updated(steps=1000, stop_vscore=1e-4, stop_window=None)
    m = StopMonitor(cfg)
    stop = feed(m, [-1.0 - 0.01 * k for k in range(200)], vscore=5e-5)
    assert stop == 49 and m.state.met["vscore"] == 49  # the default window of 50 steps
    budget = TrainConfig().updated(lr_schedule="wsd", steps=1000, decay=100, max_time=500.0)
    m = StopMonitor(budget)
    stop = feed(m, [-1.0 - 0.01 * k for k in range(1000)], dt=1.0)
    assert m.state.met["max_time"] == 399  # 400 s elapsed + 100 steps x 1 s of decay reach the budget
    assert m.state.decay_start == 400 and stop == 499 and m.record(500)["stop_reason"] == "max_time"


@pytest.mark.parametrize("value", [{"stop_window": 1}, {"max_time": 0}, {"optimizer": "lbfgs"},
                                   {"lr_schedule": "wsd", "steps": 100, "decay": 90, "warmup": 20},
                                   {"optimizer": "sr", "devices": 2}])
def test_bad_schedule_and_stop_options_are_user_errors(value):
    from nqs.errors import UserError

    with pytest.raises(UserError):
        TrainConfig().updated(**value)


def test_a_branch_at_the_trunks_decay_start_reproduces_the_trunk(tmp_path, capsys):
    """Trunk: WSD, 40 steps, decay 10 (from step 30), checkpoints kept every 10. A branch at step 30 decaying
    over 10 steps is the same run: identical energies. A branch at 20 shares the trunk's first 20 steps."""
    from nqs.cli.train import main
    from nqs.record import read_metrics, read_summary

    fast = ["--mol", "LiH", "--no-progress", "--unique", "100", "--samples", "1e6", "--final-unique", "200",
            "--lr-schedule", "wsd", "--warmup", "5"]
    trunk = tmp_path / "trunk"
    main([*fast, "--steps", "40", "--decay", "10", "--keep-every", "10", "--out", str(trunk)])
    same = tmp_path / "same"
    main(["--branch-from", str(trunk), "--branch-step", "30", "--decay", "10", "--out", str(same)])
    early = tmp_path / "early"
    main(["--branch-from", str(trunk), "--branch-step", "20", "--decay", "10", "--out", str(early)])
    t, s, e = read_metrics(trunk), read_metrics(same), read_metrics(early)
    assert [r.energy for r in s] == [r.energy for r in t]
    assert read_summary(same).energy == read_summary(trunk).energy
    assert [r.energy for r in e[:20]] == [r.energy for r in t[:20]] and len(e) == 30
    assert e[20].lr < t[20].lr  # the early branch decays from step 20
    summary = read_summary(early)
    assert summary.branch == {"trunk": str(trunk), "step": 20} and summary.steps == 30
    assert summary.schedule["kind"] == "wsd" and summary.schedule["decay_start"] == 20
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--branch-from", str(trunk), "--branch-step", "15", "--decay", "10", "--out", str(tmp_path / "x")])
    assert "does not exist" in capsys.readouterr().err


def test_size_defaults_touch_only_what_no_layer_set():
    from nqs.cli.train import size_defaults
    from nqs.training.recipes import LARGE, SMALL

    made = TrainConfig().updated(ansatz="made")
    assert size_defaults(made, {"ansatz"}) == (made, ())  # LiH, 12 qubits, MADE: the plain defaults
    small, notes = size_defaults(TrainConfig(), set())  # LiH, the Transformer: the small-molecule schedule
    assert small == TrainConfig().updated(**SMALL["transformer"]) and "12 qubits" in notes[0]
    assert small.optim.optimizer == "adam" and small.optim.lr_schedule == "wsd" and small.optim.anneal_steps == 400
    n2 = TrainConfig().updated(mol="N2", ansatz="retnet")
    chosen, notes = size_defaults(n2, {"mol", "ansatz", "steps"})  # 1,200 steps, longer than the recipe's
    assert chosen.optim.optimizer == "adam+sr" and chosen.optim.anneal_steps == LARGE["retnet"]["anneal_steps"]
    assert chosen.optim.decay == LARGE["retnet"]["decay"]  # step counts kept: the stable phase is longer
    assert chosen.optim.sr_tail == 32
    from nqs.training.recipes import TAIL_MAX_QUBITS, recipe

    assert "sr_tail" not in recipe(TAIL_MAX_QUBITS + 2, "retnet")  # no tail search past the measured sizes
    assert chosen.optim.steps == n2.optim.steps  # given: kept
    short, _ = size_defaults(n2.updated(steps=100), {"mol", "ansatz", "steps"})  # shorter: shrunk in proportion
    assert (short.optim.steps, short.optim.anneal_steps, short.optim.sr_from, short.optim.decay) == (100, 40, 56, 31)
    assert short.optim.warmup == 2  # 20 x 100 / 800: warm-up and decay fit the run
    chosen_text = notes[0].split("): ")[1].split(";")[0]
    assert len(notes) == 1 and "20 qubits" in notes[0]
    assert not any(item.startswith("steps ") for item in chosen_text.split(", "))
    assert size_defaults(n2, {"mol", "ansatz", "optimizer"}) == (n2, ())
