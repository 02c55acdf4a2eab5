"""`nqs-hamiltonian`: the JSON contract, the cache speed-up, and one clear line for every bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

JSON_KEYS = ["n_qubits", "n_orbitals", "n_alpha", "n_beta", "n_pauli_terms", "n_flip_masks", "sector_size", "e_nuc",
             "e_inf", "e_hf", "e_mp2", "e_ccsd", "e_ccsd_t", "e_fci", "s2_fci", "build_seconds"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nqs.cli.hamiltonian", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def test_json_has_exactly_the_documented_keys():
    result = run("--mol", "LiH", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == JSON_KEYS
    assert (data["n_qubits"], data["n_alpha"], data["n_beta"], data["sector_size"]) == (12, 2, 2, 225)
    assert data["e_fci"] == pytest.approx(-7.882403, abs=2e-6)


def test_summary_is_readable_and_second_build_is_cached():
    first = run("--mol", "H2", "--geometry", "H 0 0 0; H 0 0 0.9")
    second = run("--geometry", "H 0 0 0; H 0 0 0.9")
    assert first.returncode == 0 and "FCI" in first.stdout and "CCSD(T)" in first.stdout
    assert "(from cache)" in second.stdout and "(from cache)" not in first.stdout


def test_xyz_input(tmp_path):
    xyz = tmp_path / "h2.xyz"
    xyz.write_text("2\nhydrogen molecule\nH 0 0 0\nH 0 0 0.7414\n")
    data = json.loads(run("--geometry", str(xyz), "--json").stdout)
    assert data["e_fci"] == pytest.approx(-1.137270, abs=2e-6)


@pytest.mark.parametrize("args,needle", [
    (["--mol", "Kryptonite"], "unknown molecule"),
    (["--mol", "H2O", "--charge", "1", "--spin", "0"], "impossible"),
    (["--mol", "H2", "--charge", "3"], "removes more electrons"),
    (["--geometry", "H 0 0 0; H 0 0 0.05"], "apart"),
    (["--mol", "H2", "--basis", "not-a-basis"], "unknown basis"),
    (["--geometry", "H 0 0 0; H 0 zero 1"], "malformed geometry"),
    (["--geometry", "Qq 0 0 0; H 0 0 1"], "unknown element"),
    (["--geometry", "missing.xyz"], "not found"),
    (["--mol", "LiH", "--frozen-core", "3"], "frozen-core"),
])
def test_bad_input_exits_2_with_one_clear_line(args, needle):
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_xyz(tmp_path):
    xyz = tmp_path / "bad.xyz"
    xyz.write_text("3\ncomment\nH 0 0 0\nH 0 0 0.74\n")
    result = run("--geometry", str(xyz))
    assert result.returncode == 2 and "declares 3 atoms" in result.stderr
