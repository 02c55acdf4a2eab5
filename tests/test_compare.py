"""The V-score / error comparison table and the nqs-compare CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nqs.scaling import compare_runs, format_markdown, load_runs

E_FCI = -7.882


def write_run(root: Path, name: str, *, molecule="LiH", ansatz="transformer", vscore=0.01,
              error_mha=1.0, n_params=1e4, e_ccsd=None, e_fci=E_FCI, seed=0) -> Path:
    run = root / name
    run.mkdir(parents=True)
    data = {"molecule": molecule, "ansatz": ansatz, "n_params": n_params, "d_prime": 10.0,
            "vscore": vscore, "energy": None if e_fci is None else e_fci + error_mha / 1000,
            "e_fci": e_fci, "e_hf": -7.862, "e_ccsd_t": E_FCI - 0.0002,
            "error_mha": None if e_fci is None else error_mha, "seed": seed, "flops_total": 1e12}
    if e_ccsd is not None:
        data["e_ccsd"] = e_ccsd
    (run / "summary.json").write_text(json.dumps(data))
    return run


@pytest.fixture
def runs(tmp_path):
    write_run(tmp_path, "t0", vscore=0.01, error_mha=1.0, e_ccsd=E_FCI + 0.0005, seed=0)
    write_run(tmp_path, "t1", vscore=0.03, error_mha=-3.0, e_ccsd=E_FCI + 0.0005, seed=1)
    write_run(tmp_path, "m0", ansatz="made", vscore=0.2, error_mha=10.0)
    return tmp_path


def test_rows_mean_std_and_references(runs):
    rows = {r.ansatz: r for r in compare_runs(load_runs([runs]))}
    t, m = rows["transformer"], rows["made"]
    assert t.n_runs == 2 and t.vscore_mean == pytest.approx(0.02)
    assert t.vscore_std == pytest.approx(np.std([0.01, 0.03], ddof=1))
    assert t.abs_error_mean == pytest.approx(2.0)  # |+1| and |-3|
    assert t.hf_error == pytest.approx(20.0) and t.ccsd_error == pytest.approx(0.5)
    assert t.ccsd_t_error == pytest.approx(-0.2)
    assert m.n_runs == 1 and m.vscore_std is None and m.ccsd_error is None


def test_markdown_shows_dash_for_missing_ccsd(runs):
    table = format_markdown(compare_runs(load_runs([runs])))
    lines = table.splitlines()
    assert lines[0].startswith("| molecule | ansatz | runs |") and len(lines) == 4
    made = next(line for line in lines if "| made |" in line)
    cells = [c.strip() for c in made.strip("|").split("|")]
    assert cells[-2] == "—" and cells[-3] == "20.000"  # CCSD missing; HF − FCI = 20 mHa
    assert "2.000e-02 ± 1.4e-02" in table
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_missing_fci_and_mixed_sizes(tmp_path):
    write_run(tmp_path, "a", e_fci=None, n_params=1e3)
    write_run(tmp_path, "b", e_fci=None, n_params=1e4)
    with pytest.warns(UserWarning, match="2 different model sizes"):
        (row,) = compare_runs(load_runs([tmp_path]))
    assert row.abs_error_mean is None and row.hf_error is None
    assert len(compare_runs(load_runs([tmp_path]), by_size=True)) == 2


def test_cli_json_and_plot(runs, tmp_path):
    out, png = tmp_path / "out" / "cmp.json", tmp_path / "cmp.png"
    proc = subprocess.run([sys.executable, "-m", "nqs.cli.compare", str(runs), "--json", str(out),
                           "--plot", str(png)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("| molecule |")
    data = json.loads(out.read_text())
    assert [r["ansatz"] for r in data] == ["made", "transformer"] and data[0]["ccsd_error"] is None
    assert png.stat().st_size > 1000


def test_cli_bad_path_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nqs.cli.compare", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such directory" in proc.stderr


def test_markdown_table_escapes_pipes_and_checks_widths():
    from nqs.tables import markdown_table

    text = markdown_table(["a", "|E − E_FCI|"], [[1, "x|y"], ["two\nlines", None]], align=["right", None])
    assert text.splitlines() == ["| a | \\|E − E_FCI\\| |", "|---:|---|", "| 1 | x\\|y |", "| two lines | None |"]
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        markdown_table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a"], [], align=["middle"])
