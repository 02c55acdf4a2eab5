"""`nqs-sweep`: grid expansion and run names, unknown keys, skipping finished runs, resuming, end to end."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nqs.cli.compare import main as compare_main
from nqs.cli.fit import main as fit_main
from nqs.cli.sweep import main
from nqs.errors import UserError
from nqs.scaling.runs import collect_points, load_runs, read_metrics
from nqs.scaling.sweep import execute, load_sweep

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "configs" / "sweeps").glob("*.yaml"))
FAST = "{mol: LiH, unique: 200, samples: 1.0e+6, final_unique: 300, checkpoint_every: 100}"


def write(tmp_path, text: str, name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expands_in_order_with_names_from_the_grid_values(tmp_path):
    path = write(tmp_path, f"""
out: {tmp_path / 'runs'}
preset: reference
base: {{mol: H2O, lr: 3.0e-3}}
grid:
  - ansatz: [transformer]
    size: [{{d_model: 8, d_ff: 32}}, {{d_model: 16, d_ff: 64, layers: 2}}]
    steps: [50, 100]
    seed: [0, 1]
  - ansatz: [made]
    sizes: [{{hidden: 16}}]
    samples: [1.0e+4]
""")
    sweep = load_sweep(path)
    names = [r.name for r in sweep.runs]
    assert len(names) == 2 * 2 * 2 + 1 and len(set(names)) == len(names)
    assert names[:3] == ["transformer_dm8_ff32_T50_seed0", "transformer_dm8_ff32_T50_seed1",
                         "transformer_dm8_ff32_T100_seed0"]
    assert names[4] == "transformer_dm16_ff64_L2_T50_seed0" and names[-1] == "made_h16_Ns10000"
    big = sweep.runs[4].config.flat()
    chosen = [big[k] for k in ("ansatz", "d_model", "d_ff", "layers", "steps", "seed")]
    assert chosen == ["transformer", 16, 64, 2, 50, 0]
    assert big["mol"] == "H2O" and big["lr"] == 3e-3  # base beats the preset (lr 2.5e-3) ...
    assert big["sample_schedule"] == "geometric" and big["unique"] == 2000  # ... which still applies elsewhere
    last = sweep.runs[-1].config.flat()
    assert last["samples"] == 1e4 and last["hidden"] == 16
    assert all(r.out == tmp_path / "runs" / r.name and r.status() == "new" for r in sweep.runs)
    assert [r.index for r in sweep.runs] == list(range(1, 10)) and not big["progress"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_sweep_file_resolves(path, tmp_path):
    """The sweep files the docs name still load against today's options (resolved, not run)."""
    sweep = load_sweep(path, out=tmp_path / path.stem)
    assert sweep.runs and all(run.status() == "new" for run in sweep.runs)


def test_dry_run_is_a_markdown_table_then_the_totals(tmp_path, capsys):
    path = write(tmp_path, f"out: {tmp_path / 'runs'}\nbase: {FAST}\ngrid: {{steps: [2, 3]}}\n")
    main([str(path), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| # | status | run directory | options set by the grid |", "|---:|---|---|---|"]
    assert lines[2] == f"| 1 | new | {tmp_path / 'runs' / 'T2'} | steps=2 |" and len(lines) == 5
    assert lines[4] == "2 runs: 0 finished (skipped), 0 to resume, 2 new; 5 optimisation steps to go (at most)"


def test_unknown_preset_and_option_suggest_names(tmp_path):
    with pytest.raises(UserError, match=r"sweep.yaml: unknown preset 'refrence': choose one of .*reference"):
        load_sweep(write(tmp_path, "preset: refrence\ngrid: {steps: [1]}\n"))
    with pytest.raises(UserError, match=r"unknown option 'ansatze' in grid \(did you mean ansatz"):
        load_sweep(write(tmp_path, "grid: {ansatze: [made]}\n"))


@pytest.mark.parametrize("text,needle", [
    ("grid: {steps: [1]}\nbogus: 1\n", "unknown key 'bogus'"),
    ("base: {stepz: 3}\ngrid: {steps: [1]}\n", "unknown option 'stepz'"),
    ("grid: {stepz: [1, 2]}\n", "unknown option 'stepz'"),
    ("grid: {size: [{d_modle: 8}]}\n", "unknown option 'd_modle'"),
    ("grid: {steps: 5}\n", "non-empty list"),
    ("base: {out: x}\ngrid: {steps: [1]}\n", "set by the sweep"),
    ("grid: {steps: [1, 1]}\n", "share the run name"),
    ("grid: {steps: [1], size: [{steps: 2}]}\n", "set by two grid entries"),
    ("base: {steps: -1}\ngrid: {seed: [0]}\n", "steps must be at least 1"),
    ("grid: {devices: [2]}\n", "cannot run inside nqs-sweep"),
])
def test_bad_sweep_files_exit_2_naming_the_key_and_file(tmp_path, capsys, text, needle):
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(SystemExit) as exc:
        main([str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "bad.yaml" in err and err.count("\n") == 1


def test_jobs_other_than_one_and_missing_file_exit_2(tmp_path, capsys):
    path = write(tmp_path, "grid: {steps: [1]}\n")
    for argv in ([str(path), "--jobs", "2"], [str(tmp_path / "missing.yaml")]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "only --jobs 1" in capsys.readouterr().err


def fake_finished(run, **summary):
    """A run directory as nqs-train leaves it (config.yaml, summary.json), without training."""
    run.out.mkdir(parents=True)
    (run.out / "config.yaml").write_text(run.config.to_yaml())
    (run.out / "summary.json").write_text(json.dumps({"molecule": "LiH", "ansatz": "transformer", "energy": -7.0,
                                                       "e_fci": -7.0015, "vscore": 1e-3, "n_params": 10,
                                                       "d_prime": 2.0, **summary}))


def test_finished_runs_are_skipped_and_a_changed_config_is_refused(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, f"out: {tmp_path / 'runs'}\nbase: {FAST}\ngrid: {{steps: [2, 3]}}\n")
    sweep = load_sweep(path)
    for run in sweep.runs:
        fake_finished(run)
    monkeypatch.setattr("nqs.training.run.run", lambda *a, **k: pytest.fail("a finished run was trained"))
    lines = []
    outcomes = execute(load_sweep(path), echo=lines.append)
    assert [o.status for o in outcomes] == ["skipped", "skipped"] and "+1.500 mHa" in lines[0]
    assert load_sweep(path).runs[0].status() == "done"
    main([str(path), "--dry-run"])
    assert "2 finished (skipped), 0 to resume, 0 new" in capsys.readouterr().out
    write(tmp_path, f"out: {tmp_path / 'runs'}\nbase: {FAST[:-1]}, lr: 0.5}}\ngrid: {{steps: [2, 3]}}\n")
    with pytest.raises(UserError, match="another configuration.*lr"):
        load_sweep(path)
    write(tmp_path, f"out: {tmp_path / 'runs'}\nbase: {FAST[:-1]}, threads: 2}}\ngrid: {{steps: [2, 3]}}\n")
    assert [r.status() for r in load_sweep(path).runs] == ["done", "done"]  # threads do not change a result


def test_an_interrupted_run_is_resumed(tmp_path):
    from nqs.training.run import run as train

    path = write(tmp_path, f"out: {tmp_path / 'runs'}\nbase: {FAST}\ngrid: {{steps: [4]}}\n")
    (planned,) = load_sweep(path).runs
    with pytest.raises(KeyboardInterrupt):
        train(planned.config, planned.out, interrupt_after=2)
    assert planned.status() == "resume" and not (planned.out / "summary.json").exists()
    (outcome,) = execute(load_sweep(path), echo=lambda line: None)
    assert outcome.status == "resumed" and outcome.summary.steps == 4
    steps = [json.loads(line)["step"] for line in (planned.out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]


def test_two_run_sweep_end_to_end_then_fit_and_compare(tmp_path, capsys):
    out = tmp_path / "runs"
    path = write(tmp_path, f"""
out: {out}
base: {FAST}
grid:
  ansatz: [transformer]
  size: [{{d_model: 4, d_ff: 8, phase_hidden: 8}}, {{d_model: 8, d_ff: 16, phase_hidden: 16}}]
  steps: [3]
""")
    assert main([str(path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    runs = [line for line in printed if line.startswith("[")]
    assert len(runs) == 2 and runs[0].startswith("[1/2] ansatz=transformer d_model=4 d_ff=8 phase_hidden=8 steps=3")
    assert all(re.search(r"error [+-]\d+\.\d{3} mHa  V \d\.\d\de[+-]\d\d .* s ran$", line) for line in runs)
    assert "2 ran" in printed[-1]
    assert main([str(path)]) == 0  # everything finished: both skipped
    assert "2 skipped" in capsys.readouterr().out
    records = load_runs([out])
    assert sorted(r.path.name for r in records) == ["transformer_dm4_ff8_ph8_T3", "transformer_dm8_ff16_ph16_T3"]
    pts = collect_points(records, metric="abs_error", along_training=True, drop_above_hf=False)
    assert len(pts) == 2 + 2 * 2 and len(set(pts.n.tolist())) == 2 and set(pts.groups.tolist()) == {0, 1}
    assert pts.weight.tolist() == [1 / 3] * 6  # the last step is the summary's; each run weighs 1 in all
    assert fit_main([str(out), "--metric", "abs_error", "--along-training", "--bootstrap", "0", "--keep-above-hf"]) == 0
    assert "status:" in capsys.readouterr().out
    assert compare_main([str(out), "--by-size"]) == 0
    table = capsys.readouterr().out
    assert table.count("| LiH | transformer |") == 2


def test_branches_continue_the_trunk_and_decay(tmp_path, capsys):
    out = tmp_path / "runs"
    path = write(tmp_path, f"""
out: {out}
base: {{mol: LiH, d_model: 4, d_ff: 8, phase_hidden: 8, unique: 50, samples: 1.0e+4, lr_schedule: wsd, decay: 10,
        warmup: 2, anneal_steps: 5, final_unique: 100, final_samples: 1.0e+4, steps: 30, optimizer: adam,
        progress: false}}
grid:
  seed: [0]
branches: {{steps: [15, 25], decay: [5, 5]}}
""")
    assert main([str(path)]) == 0
    assert "3 ran" in capsys.readouterr().out.splitlines()[-1]
    trunk = read_metrics(out / "seed0" / "metrics.jsonl")
    for steps, start in ((15, 10), (25, 20)):
        summary = load_runs([out / f"seed0_T{steps}"])[0]
        assert summary.steps == steps and summary.branch == {"trunk": str(out / "seed0"), "step": start}
        rows = read_metrics(out / f"seed0_T{steps}" / "metrics.jsonl")
        assert [r.energy for r in rows[:start]] == [r.energy for r in trunk[:start]]  # the trunk's own steps
        assert rows[-1].lr == pytest.approx(1e-3)  # decayed to lr_final over the branch's last 5 steps
    assert main([str(path)]) == 0 and "3 skipped" in capsys.readouterr().out
    bad = write(tmp_path, f"out: {out}\nbase: {{steps: 30, lr_schedule: wsd, decay: 10}}\ngrid: {{seed: [0]}}\n"
                          "branches: {steps: [28], decay: [2]}\n", name="bad.yaml")
    with pytest.raises(SystemExit) as exc:
        main([str(bad)])
    assert exc.value.code == 2 and "outside the trunk's stable phase" in capsys.readouterr().err
