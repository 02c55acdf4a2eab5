"""End-to-end `nqs-train`: run directory contents, resume equivalence, DDP equivalence, bad configuration."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nqs.cli.train import main

METRIC_KEYS = {"step", "energy", "energy_err", "variance", "vscore", "error_mha", "n_unique", "n_samples", "s_f",
               "d_prime", "lr", "wall_s", "flops_step", "flops_total"}
SUMMARY_KEYS = {"molecule", "ansatz", "n_qubits", "n_alpha", "n_beta", "sector_size", "n_params", "n_params_modulus",
                "n_params_phase", "steps", "samples", "unique", "energy", "energy_err", "variance", "vscore", "e_fci",
                "e_ccsd_t", "e_hf", "error_mha", "d_prime", "wall_s", "seed", "flops_total"}
FAST = ["--mol", "LiH", "--no-progress", "--final-unique", "500", "--unique", "200", "--samples", "1e6"]


def cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "nqs.cli.train", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def rows(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("ansatz", ["made", "transformer", "retnet"])
def test_three_step_run_writes_the_run_directory(tmp_path, ansatz, capsys):
    out = tmp_path / "run"
    main([*FAST, "--ansatz", ansatz, "--steps", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "FCI" in printed and "CCSD(T)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary) and summary["steps"] == 3 and summary["ansatz"] == ansatz
    assert summary["n_params"] == summary["n_params_modulus"] + summary["n_params_phase"]
    metrics = rows(out)
    assert [r["step"] for r in metrics] == [0, 1, 2] and METRIC_KEYS <= set(metrics[0])
    assert metrics[-1]["d_prime"] == pytest.approx(sum(r["s_f"] for r in metrics))
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert any((out / "tensorboard").iterdir())
    assert summary["energy"] >= summary["e_fci"] - 1e-6  # variational


def test_resume_continues_to_the_same_result(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    args = [*FAST, "--steps", "8", "--checkpoint-every", "100"]
    main([*args, "--out", str(straight)])
    first = cli(*args, "--out", str(interrupted), "--interrupt-after", "4")
    assert first.returncode == 130 and "--resume" in first.stderr
    assert len(rows(interrupted)) == 4 and not (interrupted / "summary.json").exists()
    main(["--resume", str(interrupted), "--no-progress"])
    a, b = rows(straight), rows(interrupted)
    assert [r["step"] for r in b] == list(range(8))
    for ra, rb in zip(a, b):
        assert ra["energy"] == pytest.approx(rb["energy"], abs=1e-10)
    sa = json.loads((straight / "summary.json").read_text())
    sb = json.loads((interrupted / "summary.json").read_text())
    assert sa["energy"] == pytest.approx(sb["energy"], abs=1e-10) and sa["d_prime"] == pytest.approx(sb["d_prime"])


def test_two_process_ddp_matches_one_process(tmp_path):
    args = ["--mol", "LiH", "--no-progress", "--steps", "20", "--dtype", "float64", "--device", "cpu",
            "--unique", "200", "--samples", "1e8", "--final-unique", "300"]
    one = cli(*args, "--out", str(tmp_path / "one"))
    two = cli(*args, "--out", str(tmp_path / "two"), "--devices", "2", "--strategy", "ddp",
              env_extra={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    e1 = [r["energy"] for r in rows(tmp_path / "one")]
    e2 = [r["energy"] for r in rows(tmp_path / "two")]
    assert len(e1) == len(e2) == 20
    assert max(abs(x - y) for x, y in zip(e1, e2)) < 1e-6


@pytest.mark.parametrize("args,needle", [
    (["--config", "BAD"], "config file"),
    (["--ansatz", "lstm"], "unknown ansatz"),
    (["--steps", "ten"], "steps"),
    (["--mol", "Unobtainium"], "unknown molecule"),
    (["--mol", "H2", "--charge", "1", "--spin", "0"], "impossible"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    result = cli(*args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_yaml_key_names_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 3\nlearning_rate: 0.1\n")
    result = cli("--config", str(cfg), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "learning_rate" in result.stderr and str(cfg) in result.stderr
