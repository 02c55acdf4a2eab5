"""`nqs-curve`: scan geometry, exact limits (no electrons, one electron, separated fragments), accuracy, resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyscf.lib  # noqa: F401  before any capsys: PySCF keeps the sys.stdout it finds at import and writes to it
import pytest

from nqs.cli.curve import main
from nqs.errors import UserError
from nqs.molecules import parse_geometry, resolve_molecule
from nqs.scan import Scan, make_scan, nuclear_repulsion, parse_values, point_name

BOHR = 0.52917721092  # PySCF's Bohr radius in Å
FAST = ["--no-progress", "--final-unique", "100"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster, and far faster than two on a loaded 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def points(path) -> list[dict]:
    return json.loads(path.read_text())


# --- the scan coordinate -------------------------------------------------------------------------------------
def test_bond_values_include_the_stop_and_accept_lists():
    assert parse_values("0.5:3.0:0.5") == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    assert parse_values("0.4:4.0:0.1")[-1] == 4.0 and len(parse_values("0.4:4.0:0.1")) == 37
    assert parse_values("2.0:1.0:-0.5") == (2.0, 1.5, 1.0)
    assert parse_values("0.9, 1.1,1.4") == (0.9, 1.1, 1.4) and parse_values("0.74") == (0.74,)
    for bad in ("0.5:abc", "1:2:0", "2:1:0.5", "0.05:1:0.5", "1.0,1.0001"):
        with pytest.raises(UserError):
            parse_values(bad)


def test_geometries_of_the_three_scan_modes():
    h2 = resolve_molecule("H2")
    moved = make_scan(h2, "1.5").geometry(h2, 1.5)
    assert moved.atoms[0] == h2.atoms[0] and math.dist(moved.atoms[0][1:], moved.atoms[1][1:]) == pytest.approx(1.5)
    water = parse_geometry("O 0 0 0; H 0.757 0.586 0; H -0.757 0.586 0")
    stretched = make_scan(water, "1.3", atom="O").geometry(water, 1.3)
    o, h1, h2_ = (a[1:] for a in stretched.atoms)
    assert math.dist(o, h1) == pytest.approx(1.3) and math.dist(o, h2_) == pytest.approx(1.3)
    assert h1[1] / h1[0] == pytest.approx(0.586 / 0.757)  # the bond angle is kept
    dimer = parse_geometry("H 0 0 0; H 0 0 0.74; H 0 3 0; H 0 3 0.74")
    apart = make_scan(dimer, "10", fragment=2).geometry(dimer, 10.0)
    assert apart.atoms[:2] == dimer.atoms[:2] and apart.atoms[2][2] == pytest.approx(10.0)
    assert math.dist(apart.atoms[2][1:], apart.atoms[3][1:]) == pytest.approx(0.74)
    with pytest.raises(UserError, match="--atom"):
        make_scan(water, "1.0")
    assert point_name(1.2) == "r=1.200"


def test_bad_bond_exits_2_with_one_line(capsys, tmp_path):
    for bad in (["--bond", "0.5:3.0:x"], ["--bond", "3.0:0.5:0.1"], []):
        with pytest.raises(SystemExit) as exc:
            main(["--mol", "H2", *bad, "--out", str(tmp_path / "c")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1 and "--bond" in err


# --- exact limits ----------------------------------------------------------------------------------------
def test_bare_protons_give_coulombs_law_exactly(tmp_path):
    out = tmp_path / "h2-2plus.json"
    main(["--mol", "H2", "--charge", "2", "--bond", "0.3,0.7414,2.0,10.0", "--out", str(tmp_path / "c"),
          "--json", str(out), *FAST])
    for p in points(out):
        assert p["steps"] == 0 and p["exact"] and p["energy_err"] == 0.0
        assert p["energy"] == pytest.approx(1.0 / (p["r"] / BOHR), abs=1e-10)
        assert p["e_fci"] == pytest.approx(p["energy"], abs=1e-10)
    assert (tmp_path / "c" / "r=2.000" / "summary.json").is_file()


def test_one_electron_h2_plus_matches_fci_to_1e_8(tmp_path):
    out = tmp_path / "h2plus.json"
    main(["--mol", "H2", "--charge", "1", "--bond", "0.6,1.0,3.0", "--first-steps", "400", "--steps-per-point",
          "150", "--out", str(tmp_path / "c"), "--json", str(out), *FAST])
    for p in points(out):
        assert abs(p["energy"] - p["e_fci"]) < 1e-8  # the sampled estimate (1e12 samples)
        assert abs(p["energy_enum"] - p["e_fci"]) < 1e-8  # <H> of the final parameters, enumerated exactly


def test_separated_fragments_are_size_consistent(problems, tmp_path):
    """Two H2 10 Å apart: FCI gives 2 E(H2) up to their quadrupole-quadrupole repulsion (~1e-7 Ha at 10 Å,
    falling as R^-5); the NQS reaches it too (8 qubits, 36 configurations)."""
    h2 = problems("H2").references.e_fci
    out = tmp_path / "h4.json"
    main(["--geometry", "H 0 0 0; H 0 0 0.7414; H 0 0 10; H 0 0 10.7414", "--fragment", "2", "--bond", "10.0",
          "--first-steps", "500", "--steps-per-point", "200", "--out", str(tmp_path / "c"), "--json", str(out), *FAST])
    (p,) = points(out)
    assert 0 < p["e_fci"] - 2 * h2 < 1e-6
    assert abs(p["energy"] - 2 * h2) < 1e-4


# --- accuracy and resume ---------------------------------------------------------------------------------
def test_short_h2_scan_is_within_0p1_mha_of_fci(tmp_path):
    out, plot = tmp_path / "h2.json", tmp_path / "h2.png"
    main(["--mol", "H2", "--bond", "0.5:2.5:0.5", "--first-steps", "400", "--steps-per-point", "100",
          "--out", str(tmp_path / "c"), "--json", str(out), "--plot", str(plot), *FAST])
    rows = points(out)
    assert [p["r"] for p in rows] == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert {"r", "energy", "energy_err", "e_hf", "e_ccsd", "e_ccsd_t", "e_fci", "error_mha"} <= set(rows[0])
    assert max(abs(p["error_mha"]) for p in rows) < 0.1
    assert all(p["energy"] >= p["e_fci"] - 1e-9 for p in rows)  # variational
    assert plot.stat().st_size > 10_000


def test_an_interrupted_scan_resumes_without_redoing_points(tmp_path, capsys):
    curve = tmp_path / "c"
    args = ["--mol", "H2", "--bond", "0.6:1.2:0.2", "--first-steps", "60", "--steps-per-point", "30",
            "--out", str(curve), *FAST]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--stop-after-points", "2"])
    assert exc.value.code == 130 and "--resume" in capsys.readouterr().err
    done = {name: (curve / name / "summary.json").stat().st_mtime_ns for name in ("r=0.600", "r=0.800")}
    assert not (curve / "r=1.000").exists()
    main(["--resume", str(curve), "--json", str(tmp_path / "c.json")])
    printed = capsys.readouterr().out
    assert printed.count("finished earlier") == 2 and printed.count("warm start") == 2
    assert {name: (curve / name / "summary.json").stat().st_mtime_ns for name in done} == done
    assert [p["r"] for p in points(tmp_path / "c.json")] == [0.6, 0.8, 1.0, 1.2]
    with pytest.raises(SystemExit) as exc:  # the same directory with other settings is refused
        main([*args, "--lr", "0.05"])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err


def test_two_chains_meet_in_the_middle_in_one_process_or_two(tmp_path, capsys):
    """--meet 0.9: 0.6 -> 0.9 from start/ (at 0.6), 1.6 -> 1.2 from start-last/ (at 1.6); in parallel the same
    numbers (float64, one thread, the same seeds)."""
    import yaml

    common = ["--mol", "H2", "--bond", "0.6,0.9,1.2,1.6", "--first-steps", "60", "--steps-per-point", "30", *FAST]
    for bad in (["--meet", "1.6"], ["--meet", "1.0"], ["--parallel-chains"]):
        with pytest.raises(SystemExit) as exc:
            main([*common, *bad, "--out", str(tmp_path / "bad")])
        assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    energies = {}
    for name, extra in (("one", []), ("two", ["--parallel-chains"])):
        curve = tmp_path / name
        main([*common, "--meet", "0.9", *extra, "--out", str(curve), "--json", str(tmp_path / f"{name}.json")])
        warm = {d: Path(yaml.safe_load((curve / d / "config.yaml").read_text())["init_from"]).name
                for d in ("r=0.600", "r=0.900", "r=1.600", "r=1.200")}
        assert warm == {"r=0.600": "start", "r=0.900": "r=0.600", "r=1.600": "start-last", "r=1.200": "r=1.600"}
        atoms = parse_geometry(yaml.safe_load((curve / "start-last" / "config.yaml").read_text())["geometry"]).atoms
        assert math.dist(atoms[0][1:], atoms[1][1:]) == pytest.approx(1.6, abs=1e-9)
        rows = points(tmp_path / f"{name}.json")
        assert [p["r"] for p in rows] == [0.6, 0.9, 1.2, 1.6]
        energies[name] = [p["energy"] for p in rows]
    assert energies["one"] == pytest.approx(energies["two"], abs=1e-12)


def test_nuclear_repulsion_is_coulombs_law():
    spec = resolve_molecule("H2")
    assert nuclear_repulsion(spec) == pytest.approx(BOHR / 0.7414, rel=1e-12)
    assert Scan((1.0,)).geometry(spec, 1.0).n_electrons == 2


def test_orbitals_follow_the_geometry(tmp_path):
    """LiH's sigma* orbital changes sign between 2.25 and 2.5 Å; matched orbitals overlap positively, in order,
    and leave the FCI energy unchanged."""
    import numpy as np
    from pyscf import gto

    from nqs import chem
    from nqs.curve import ORBITALS, matched_problem, point_config, save_orbitals
    from nqs.training.config import TrainConfig

    lih = resolve_molecule("LiH")
    scan = make_scan(lih, "2.25,2.5")
    base = TrainConfig()
    first, second = (point_config(base, scan.geometry(lih, r), tmp_path / point_name(r), 1, None) for r in (2.25, 2.5))
    _, ref = matched_problem(first, None)
    save_orbitals(tmp_path / "ref", ref)
    problem, matched = matched_problem(second, tmp_path / "ref")
    _, canonical = matched_problem(second, None)
    mol_a, mol_b = (chem.build_mole(scan.geometry(lih, r), False) for r in (2.25, 2.5))
    cross = gto.intor_cross("int1e_ovlp", mol_a, mol_b)
    assert np.diag(ref["mo"].T @ cross @ canonical["mo"]).min() < -0.5  # the flip is there ...
    assert np.diag(ref["mo"].T @ cross @ matched["mo"]).min() > 0.5  # ... and is undone
    e_fci, _, _ = chem.fci(problem.integrals, 1e7, [])
    assert e_fci == pytest.approx(problem.references.e_fci, abs=1e-9)
    assert (tmp_path / "ref" / ORBITALS).is_file()


def test_a_curve_directory_in_use_is_refused(tmp_path, capsys):
    import os

    curve = tmp_path / "c"
    curve.mkdir()
    (curve / ".lock").write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(SystemExit) as exc:
        main(["--mol", "H2", "--charge", "2", "--bond", "1.0", "--out", str(curve)])
    assert exc.value.code == 2 and "in use" in capsys.readouterr().err
    (curve / ".lock").write_text("999999999")  # no such process: a stale lock is taken over
    main(["--mol", "H2", "--charge", "2", "--bond", "1.0", "--out", str(curve)])
    assert not (curve / ".lock").exists()


def test_warm_started_points_take_their_own_peak_learning_rate(tmp_path):
    """--lr-per-point sets a warm start's peak rate (its final rate never above it); the start run keeps --lr."""
    from nqs.curve import point_config
    from nqs.training.config import TrainConfig

    lih = resolve_molecule("LiH")
    base = TrainConfig(lr=1e-2, lr_final=1e-3)
    start = point_config(base, lih, tmp_path / "start", 10, None, lr_warm=3e-3)
    warm = point_config(base, lih, tmp_path / "a", 10, str(tmp_path / "start"), lr_warm=3e-3)
    low = point_config(base, lih, tmp_path / "b", 10, str(tmp_path / "start"), lr_warm=5e-4)
    same = point_config(base, lih, tmp_path / "c", 10, str(tmp_path / "start"))
    assert (start.lr, start.lr_final) == (1e-2, 1e-3)
    assert (warm.lr, warm.lr_final) == (3e-3, 1e-3)
    assert (low.lr, low.lr_final) == (5e-4, 5e-4)
    assert (same.lr, same.lr_final) == (1e-2, 1e-3)
