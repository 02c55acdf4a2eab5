"""End-to-end `nqs-train`: run directory contents, resume equivalence, DDP equivalence, bad configuration."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nqs.cli.train import main
from nqs.models import ModelConfig, build_model
from nqs.record import StepRecord, read_metrics, read_summary

FAST = ["--mol", "LiH", "--no-progress", "--final-unique", "500", "--unique", "200", "--samples", "1e6"]


def cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "nqs.cli.train", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def rows(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("ansatz,mode,as_run", [("made", "exact", "exact-dense"), ("transformer", "sampled", "sampled"),
                                                ("retnet", "exact-trie", "exact-trie")])
def test_three_step_run_writes_the_run_directory(tmp_path, ansatz, mode, as_run, capsys, problems):
    out = tmp_path / "run"
    main([*FAST, "--ansatz", ansatz, "--steps", "3", "--out", str(out), "--local-energy", mode])
    captured = capsys.readouterr()
    printed = captured.out
    assert "FCI" in printed and "CCSD(T)" in printed
    summary = read_summary(out)
    assert summary.steps == 3 and summary.ansatz == ansatz and summary.molecule == "LiH"
    fresh = build_model(ModelConfig(ansatz), problems("LiH").sector)
    assert summary.n_params == sum(q.numel() for q in fresh.parameters())
    assert summary.n_params_phase == sum(q.numel() for q in fresh.phase_net.parameters())
    metrics = read_metrics(out)
    assert [r.step for r in metrics] == [0, 1, 2]
    assert set(rows(out)[0]) == set(StepRecord(step=0, energy=0.0, energy_err=0.0, variance=0.0).to_json())
    assert metrics[-1].d_prime == pytest.approx(sum(r.s_f for r in metrics))
    assert metrics[-1].wall_s == pytest.approx(sum(r.t_step for r in metrics))  # real time between steps
    for r in metrics:  # the framework's share is what the step's parts leave of the real step time
        parts = r.t_sampling + r.t_local_energy + r.t_backward
        assert r.t_framework == pytest.approx(max(r.t_step - parts, 0.0), abs=1e-9)
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert any((out / "tensorboard").iterdir())
    assert summary.energy >= summary.e_fci - 1e-6  # variational
    assert 0.99 < summary.final_kept_mass < 1 + 1e-6 and "kept mass" in printed
    assert 0.1 < summary.peak_rss_gib < 20 and "peak memory:" in printed
    assert (summary.peak_device_gib is None) == (summary.device == "cpu")  # --device auto takes a GPU where one is
    assert summary.local_energy == as_run and {r.local_energy for r in metrics} == {as_run}
    assert summary.estimator == ("sampled" if mode == "sampled" else "exact")
    assert (mode == "sampled") == ("final energy uses the exact one" in captured.err)


def test_a_heat_bath_run_reads_the_integrals_and_can_keep_its_estimator_for_the_final_energy(tmp_path, capsys):
    out = tmp_path / "run"
    main([*FAST, "--steps", "3", "--out", str(out), "--local-energy", "heat-bath", "--semi-threshold", "1e-3",
          "--final-local-energy", "as-trained"])
    summary = read_summary(out)
    assert summary.estimator == "heat-bath(weighted_threshold=0.001,draws=4)" and summary.connections == "integrals"
    assert "the final energy uses it too" in capsys.readouterr().err
    assert summary.energy >= summary.e_fci - 5 * summary.energy_err - 1e-6


def test_final_weights_lowest_evaluates_the_lowest_steps_weights(tmp_path, capsys):
    """Every determinant of LiH's sector (225) is in each step's sample, drawn 8e15 times: a step's training
    energy is the energy of the weights it was measured with to ~1e-9 Ha. The final energy must be the lowest
    T = 0 row's (not that of the weights after its update, 2e-7 Ha lower here), and lowest.ckpt must start
    another run there."""
    exact = ["--mol", "LiH", "--no-progress", "--unique", "1000", "--final-unique", "1000", "--samples", "8e15",
             "--final-samples", "8e15", "--dtype", "float64", "--optimizer", "adam", "--lr", "0.3", "--lr-final", "0.3"]
    out, again, last = tmp_path / "run", tmp_path / "again", tmp_path / "last"
    main([*exact, "--steps", "10", "--final-weights", "lowest", "--out", str(out)])
    summary, metrics = read_summary(out), rows(out)
    cold = [r for r in metrics if r["temperature"] == 0]
    assert 0 < len(cold) < len(metrics)  # the annealed steps are not candidates
    best = min(cold, key=lambda r: r["energy"])
    assert summary.final_weights == {"kind": "lowest", "step": best["step"], "training_energy": best["energy"],
                                     "training_energy_err": best["energy_err"]}
    tol = 5 * (best["energy_err"] ** 2 + summary.energy_err ** 2) ** 0.5
    assert summary.energy == pytest.approx(best["energy"], abs=tol)
    assert f"those of step {best['step']}" in capsys.readouterr().err
    main([*exact, "--steps", "1", "--anneal-t0", "0", "--init-from", str(out / "checkpoints" / "lowest.ckpt"),
          "--out", str(again)])
    assert rows(again)[0]["energy"] == pytest.approx(best["energy"], abs=tol)
    main([*exact, "--steps", "10", "--out", str(last)])
    assert read_summary(last).final_weights == {"kind": "last", "step": 10}
    assert abs(read_summary(last).energy - best["energy"]) > 10 * tol


@pytest.mark.gpu
@pytest.mark.parametrize("args", [["--ansatz", "retnet", "--optimizer", "sr", "--sr-rows", "64"],
                                  ["--mol", "H8", "--ansatz", "transformer", "--local-energy", "semi-stochastic",
                                   "--init-state", "cisd", "--init-steps", "50", "--anneal-t0", "0"]],
                         ids=["lih-sr", "h8-cisd-semi"])
def test_a_run_on_cuda(tmp_path, args):
    """`--device cuda` end to end: the run trains there, records the device, and its final (exact) energy is
    variational against FCI."""
    out = tmp_path / "run"
    main([*FAST, *args, "--device", "cuda", "--steps", "6", "--out", str(out)])
    summary = read_summary(out)
    assert summary.device.startswith("cuda") and len(rows(out)) == 6 and 0 < summary.peak_device_gib < 20
    assert summary.e_fci - 5 * summary.energy_err - 1e-6 <= summary.energy < 0


@pytest.mark.parametrize("optimiser", [[], ["--optimizer", "sr", "--lr", "0.3", "--sr-rows", "32", "--sr-momentum", "0.9"]],
                         ids=["adam", "spring"])
def test_resume_continues_to_the_same_result(tmp_path, optimiser):
    """The checkpoint carries what the next step needs: for SPRING the last direction too."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    args = [*FAST, *optimiser, "--steps", "8", "--checkpoint-every", "100"]
    main([*args, "--out", str(straight)])
    first = cli(*args, "--out", str(interrupted), "--interrupt-after", "4")
    assert first.returncode == 130 and "--resume" in first.stderr
    assert len(rows(interrupted)) == 4 and not (interrupted / "summary.json").exists()
    main(["--resume", str(interrupted), "--no-progress"])
    a, b = rows(straight), rows(interrupted)
    assert [r["step"] for r in b] == list(range(8))
    for ra, rb in zip(a, b):
        assert ra["energy"] == pytest.approx(rb["energy"], abs=1e-10)
    sa, sb = read_summary(straight), read_summary(interrupted)
    assert sa.energy == pytest.approx(sb.energy, abs=1e-10) and sa.d_prime == pytest.approx(sb.d_prime)


@pytest.mark.parametrize("mode", ["exact", "semi-stochastic"])
def test_the_local_energy_in_chunks_trains_the_same(tmp_path, mode):
    """--local-energy-memory small enough for a few samples a chunk: the same energies step by step and at the end
    (float64; the exact mode re-evaluates configurations that chunks share; the semi-stochastic one draws the
    same numbers)."""
    args = [*FAST, "--steps", "4", "--local-energy", mode, "--dtype", "float64"]
    args += ["--final-local-energy", "as-trained"] if mode != "exact" else []
    main([*args, "--out", str(tmp_path / "whole")])
    main([*args, "--local-energy-memory", "2e-5", "--out", str(tmp_path / "chunked")])
    for ra, rb in zip(rows(tmp_path / "whole"), rows(tmp_path / "chunked"), strict=True):
        assert ra["energy"] == pytest.approx(rb["energy"], abs=1e-10)
    assert read_summary(tmp_path / "whole").energy == pytest.approx(read_summary(tmp_path / "chunked").energy,
                                                                    abs=1e-10)


def test_resume_keeps_the_lowest_step(tmp_path):
    """--final-weights lowest: the lowest step's weights travel in the checkpoint. At lr 0.3 the energy rises
    after step 4, so a run interrupted after 5 steps must still end with step 4's weights."""
    args = [*FAST, "--anneal-t0", "0", "--optimizer", "adam", "--lr", "0.3", "--lr-final", "0.3", "--warmup", "0",
            "--steps", "7", "--checkpoint-every", "100", "--final-weights", "lowest"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main([*args, "--out", str(straight)])
    assert cli(*args, "--out", str(interrupted), "--interrupt-after", "5").returncode == 130
    main(["--resume", str(interrupted), "--no-progress"])
    sa, sb = read_summary(straight), read_summary(interrupted)
    assert sa.final_weights["step"] < 5 and sa.final_weights == sb.final_weights
    assert sa.energy == pytest.approx(sb.energy, abs=1e-10)


def test_stop_patience_ends_the_run_after_the_lowest_step(tmp_path):
    """At lr 0.3 the energy rises after step 4: with a patience of 2 steps the run ends 2 steps after its
    lowest T = 0 step, and the final energy comes from that step's weights."""
    out = tmp_path / "run"
    main([*FAST, "--anneal-t0", "0", "--optimizer", "adam", "--lr", "0.3", "--lr-final", "0.3", "--warmup", "0",
          "--steps", "12", "--stop-patience", "2", "--final-weights", "lowest", "--out", str(out)])
    summary, metrics = read_summary(out), rows(out)
    lowest = min(metrics, key=lambda r: r["energy"])["step"]
    assert len(metrics) == lowest + 3 < 12 and summary.steps == lowest + 3
    assert summary.stop_reason == "patience" and summary.criteria_met == {"patience": lowest + 2}
    assert summary.final_weights["step"] == lowest


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    args = ["--mol", "LiH", "--no-progress", "--steps", "20", "--dtype", "float64", "--device", "cpu",
            "--unique", "200", "--samples", "1e8", "--final-unique", "20"]  # a cap that leaves a final tail
    one = cli(*args, "--out", str(tmp_path / "one"))
    two = cli(*args, "--out", str(tmp_path / "two"), "--devices", "2", "--strategy", "ddp",
              env_extra={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    e1 = [r["energy"] for r in rows(tmp_path / "one")]
    e2 = [r["energy"] for r in rows(tmp_path / "two")]
    assert len(e1) == len(e2) == 20
    assert max(abs(x - y) for x, y in zip(e1, e2)) < 1e-6
    s1, s2 = read_summary(tmp_path / "one"), read_summary(tmp_path / "two")
    assert s1.final_tail is not None and s2.final_tail is not None
    assert s1.final_tail["unique"] == s2.final_tail["unique"] and abs(s1.energy - s2.energy) < 1e-6


@pytest.mark.parametrize("args,needle", [
    (["--config", "BAD"], "config file"),
    (["--ansatz", "lstm"], "unknown ansatz"),
    (["--steps", "ten"], "steps"),
    (["--mol", "Unobtainium"], "unknown molecule"),
    (["--mol", "H2", "--charge", "1", "--spin", "0"], "impossible"),
    (["--local-energy", "fast"], "unknown local_energy 'fast'"),
    (["--local-energy", "semi-stochastic", "--semi-threshold", "-0.1"], "semi_threshold must be"),
    (["--semi-draws", "0"], "semi_draws must be"),
    (["--final-weights", "best"], "unknown final_weights 'best'"),
    (["--stop-patience", "0"], "stop_patience must be at least 1"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle, capsys):
    one_error_line(capsys, *args, "--out", str(tmp_path / "x"), needle=needle)


def one_error_line(capsys, *args: str, needle: str) -> None:
    """main(args) in this process exits 2 with one `error:` line on stderr holding `needle`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2, (args, err[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (args, lines)


def test_a_bad_flag_exits_2_without_a_traceback_in_a_real_process(tmp_path):
    result = cli("--ansatz", "lstm", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: unknown ansatz 'lstm': choose one of made, transformer, retnet"


def test_unknown_yaml_key_names_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 3\nlearning_rate: 0.1\n")
    result = cli("--config", str(cfg), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "learning_rate" in result.stderr and str(cfg) in result.stderr


def test_broken_environments_exit_2_with_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    damaged = tmp_path / "damaged"
    (damaged / "checkpoints").mkdir(parents=True)
    (damaged / "config.yaml").write_text("steps: 3\n")
    (damaged / "checkpoints" / "last.ckpt").write_text("not a checkpoint")
    cases = [(["--out", str(blocker / "run")], "cannot use"),
             (["--init-from", str(damaged)], "not a readable nqs-train checkpoint"),
             (["--resume", str(damaged)], "checkpoint")]
    import torch

    if not torch.cuda.is_available():
        cases.append((["--device", "cuda", "--out", str(tmp_path / "c")], "CUDA is not available"))
    for args, needle in cases:
        one_error_line(capsys, *FAST, "--steps", "2", *args, needle=needle)
    assert (damaged / "checkpoints" / "last.ckpt").read_text() == "not a checkpoint"  # nothing lost


def test_progress_is_a_line_every_few_seconds_off_a_terminal(tmp_path, capsys):
    main([*[a for a in FAST if a != "--no-progress"], "--steps", "4", "--out", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out
    assert captured.err.count("step 4/4") == 1  # the last step's line is written at the end
