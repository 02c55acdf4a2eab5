"""`nqs-hamiltonian`: the JSON contract, the cache speed-up, and one clear line for every bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

JSON_KEYS = ["n_qubits", "n_orbitals", "n_alpha", "n_beta", "n_pauli_terms", "n_flip_masks", "sector_size", "e_nuc",
             "e_inf", "e_hf", "e_mp2", "e_ccsd", "e_ccsd_t", "e_fci", "s2_fci", "e_dmrg", "dmrg", "e_ref", "ref_kind",
             "ref_uncertainty", "hamiltonian_skipped", "notes", "build_seconds"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nqs.cli.hamiltonian", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def in_process(capsys, *args: str) -> str:
    """stdout of nqs-hamiltonian ARGS run in this process."""
    from nqs.cli.hamiltonian import main

    capsys.readouterr()
    main(list(args))
    return capsys.readouterr().out


def test_json_has_exactly_the_documented_keys(capsys):
    data = json.loads(in_process(capsys, "--mol", "LiH", "--json"))
    assert list(data) == JSON_KEYS
    assert (data["n_qubits"], data["n_alpha"], data["n_beta"], data["sector_size"]) == (12, 2, 2, 225)
    assert data["e_fci"] == pytest.approx(-7.882403, abs=2e-6)
    assert (data["e_ref"], data["ref_kind"], data["ref_uncertainty"]) == (data["e_fci"], "fci", 0.0)
    assert data["e_dmrg"] is None and data["hamiltonian_skipped"] is None  # auto: no DMRG where FCI is done


def test_summary_is_readable_and_second_build_is_cached(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NQS_CACHE_DIR", str(tmp_path))  # an empty cache: the first build computes
    first = in_process(capsys, "--geometry", "H 0 0 0; H 0 0 0.9")
    second = in_process(capsys, "--geometry", "H 0 0 0; H 0 0 0.9")
    assert "FCI" in first and "CCSD(T)" in first
    assert "(from cache)" in second and "(from cache)" not in first


def test_xyz_input(tmp_path, capsys):
    xyz = tmp_path / "h2.xyz"
    xyz.write_text("2\nhydrogen molecule\nH 0 0 0\nH 0 0 0.7414\n")
    data = json.loads(in_process(capsys, "--geometry", str(xyz), "--json"))
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
    (["--mol", "H5"], "hydrogen chains are H4 ... H50"),
    (["--mol", "N2", "--spacing", "1.1"], "--spacing applies to the hydrogen chains"),
])
def test_bad_input_exits_2_with_one_clear_line(args, needle, capsys):
    one_error_line(capsys, *args, "--no-cache", needle=needle)


def one_error_line(capsys, *args: str, needle: str) -> None:
    """main(args) in this process exits 2 with one `error:` line on stderr holding `needle`."""
    from nqs.cli.hamiltonian import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, (args, lines)
    assert lines[0].startswith("error:") and needle in lines[0], (args, lines)


def test_a_bad_molecule_exits_2_without_a_traceback_in_a_real_process():
    result = run("--mol", "Kryptonite")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_xyz(tmp_path, capsys):
    xyz = tmp_path / "bad.xyz"
    xyz.write_text("3\ncomment\nH 0 0 0\nH 0 0 0.74\n")
    one_error_line(capsys, "--geometry", str(xyz), needle="declares 3 atoms")
