"""`nqs-curve`: scan geometry, exact limits (no electrons, one electron, separated fragments), accuracy, resume,
cached problems, announced defaults, run records that keep the molecule's name and the scan coordinate."""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pyscf.lib  # noqa: F401  before any capsys: PySCF keeps the sys.stdout it finds at import and writes to it
import pytest

from nqs.cli.curve import main
from nqs.errors import UserError
from nqs.molecules import parse_geometry, resolve_molecule
from nqs.scan import Scan, make_scan, parse_values, point_name

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


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


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
    for bad in (["--bond", "0.5:3.0:x"], ["--bond", "3.0:0.5:0.1"], [], ["--bond", "0.5:1.0:0.5", "--orbitals", "split"]):
        with pytest.raises(SystemExit) as exc:
            main(["--mol", "H2", *bad, "--out", str(tmp_path / "c")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1 and ("--bond" in err or "--orbitals" in err)


# --- exact limits ----------------------------------------------------------------------------------------
def test_bare_protons_give_coulombs_law_exactly(tmp_path):
    out = tmp_path / "h2-2plus.json"
    main(["--mol", "H2", "--charge", "2", "--bond", "0.3,0.7414,2.0,10.0", "--out", str(tmp_path / "c"),
          "--json", str(out), *FAST])
    for p in points(out):
        assert p["steps"] == 0 and p["exact"] and p["energy_err"] == 0.0
        assert p["energy"] == pytest.approx(1.0 / (p["r"] / BOHR), abs=1e-10)
        assert p["e_fci"] == pytest.approx(p["energy"], abs=1e-10)
        assert p["molecule"] == "H2" and p["scan"]["value"] == p["r"] and p["scan"]["unit"] == "Å"
        assert p["e_nuc"] == pytest.approx(p["energy"], abs=1e-10)
    record = summary(tmp_path / "c" / "r=2.000")
    assert record["schema"] >= 2 and record["molecule"] == "H2" and record["exact"]
    assert record["scan"] == {"coordinate": "r", "value": 2.0, "unit": "Å", "mode": "bond", "atom": None,
                              "fragment": None, "role": "point"}


@pytest.mark.slow
def test_one_electron_h2_plus_matches_fci_to_1e_8(tmp_path):
    out = tmp_path / "h2plus.json"
    main(["--mol", "H2", "--charge", "1", "--bond", "0.6,1.0,3.0", "--first-steps", "400", "--steps-per-point",
          "150", "--out", str(tmp_path / "c"), "--json", str(out), *FAST])
    for p in points(out):
        assert abs(p["energy"] - p["e_fci"]) < 1e-8  # the sampled estimate (1e12 samples)
        assert abs(p["energy_enum"] - p["e_fci"]) < 1e-8  # <H> of the final parameters, enumerated exactly


@pytest.mark.slow
def test_separated_fragments_are_size_consistent(problems, tmp_path):
    """Two H2 10 Å apart: FCI gives 2 E(H2) up to their quadrupole-quadrupole repulsion (~1e-7 Ha at 10 Å,
    falling as R^-5); the NQS reaches it too (8 qubits, 36 configurations)."""
    h2 = problems("H2").references.e_fci
    out = tmp_path / "h4.json"
    main(["--geometry", "H 0 0 0; H 0 0 0.7414; H 0 0 10; H 0 0 10.7414", "--fragment", "2", "--bond", "10.0",
          "--first-steps", "500", "--steps-per-point", "200", "--out", str(tmp_path / "c"), "--json", str(out), *FAST])
    (p,) = points(out)
    assert p["molecule"] == "custom" and p["scan"]["mode"] == "fragment" and p["scan"]["fragment"] == 2
    assert 0 < p["e_fci"] - 2 * h2 < 1e-6
    assert abs(p["energy"] - 2 * h2) < 1e-4


# --- accuracy and resume ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_short_h2_scan_is_within_0p1_mha_of_fci(tmp_path):
    out, plot = tmp_path / "h2.json", tmp_path / "h2.png"
    main(["--mol", "H2", "--bond", "0.5:2.5:0.5", "--first-steps", "400", "--steps-per-point", "100",
          "--out", str(tmp_path / "c"), "--json", str(out), "--plot", str(plot), *FAST])
    rows = points(out)
    assert [p["r"] for p in rows] == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert {"r", "energy", "energy_err", "e_hf", "e_ccsd", "e_ccsd_t", "e_fci", "error_mha"} <= set(rows[0])
    assert max(abs(p["error_mha"]) for p in rows) < 0.1
    assert all(p["molecule"] == "H2" and p["scan"]["value"] == p["r"] for p in rows)
    assert all(p["energy"] >= p["e_fci"] - 1e-9 for p in rows)  # variational
    assert plot.stat().st_size > 10_000


def test_an_interrupted_scan_resumes_without_redoing_points(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NQS_CACHE_DIR", str(tmp_path / "cache"))  # the new points' Hamiltonians are built here
    curve = tmp_path / "c"
    args = ["--mol", "H2", "--bond", "0.6:1.2:0.2", "--first-steps", "60", "--steps-per-point", "30",
            "--out", str(curve), *FAST]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--stop-after-points", "2"])
    captured = capsys.readouterr()
    assert exc.value.code == 130 and "--resume" in captured.err
    assert "note: sector of 4 configurations: using dtype float64 and lr 0.03 (TINY_SECTOR_DEFAULTS" in captured.out
    done = {name: (curve / name / "summary.json").stat().st_mtime_ns for name in ("r=0.600", "r=0.800")}
    assert not (curve / "r=1.000").exists()
    main(["--resume", str(curve), "--json", str(tmp_path / "c.json")])
    printed = capsys.readouterr().out
    assert printed.count("finished earlier") == 2 and printed.count("warm start") == 2
    assert printed.count("Hamiltonian built") == 2 and "TINY_SECTOR_DEFAULTS" in printed  # only the new points
    assert {name: (curve / name / "summary.json").stat().st_mtime_ns for name in done} == done
    rows = points(tmp_path / "c.json")
    assert [p["r"] for p in rows] == [0.6, 0.8, 1.0, 1.2]
    for p in rows:  # the molecule's name, the coordinate, and the changed defaults in every record
        assert p["molecule"] == "H2" and p["scan"]["value"] == p["r"] and p["scan"]["mode"] == "bond"
        assert any("TINY_SECTOR_DEFAULTS" in n for n in p["notes"])
        assert p["error_mha"] == pytest.approx((p["energy"] - p["e_fci"]) * 1e3)
    assert summary(curve / "start")["scan"]["role"] == "start"
    with pytest.raises(SystemExit) as exc:  # the same directory with other settings is refused
        main([*args, "--lr", "0.05"])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err


def test_a_rerun_rebuilds_nothing(tmp_path, capsys, monkeypatch):
    """A finished curve run again builds no Hamiltonian (no SCF, no Jordan-Wigner); a point whose run ended
    without its summary.json is finished from its checkpoint with its matched Hamiltonian from the cache.
    (LiH's sigma* orbital changes sign between 2.25 and 2.5 Å: the second point has re-signed orbitals.)"""
    from nqs import chem, problem

    curve = tmp_path / "c"
    args = ["--mol", "LiH", "--bond", "2.25,2.5", "--first-steps", "20", "--steps-per-point", "10",
            "--out", str(curve), *FAST]
    main(args)
    first = capsys.readouterr().out
    assert "note:" not in first  # 225 configurations: no default changed
    assert re.search(r"r = 2\.500 Å.*orbitals matched \(\d+ reordered, [1-9]\d* re-signed\)", first)
    (curve / "r=2.500" / "summary.json").unlink()

    def boom(*_args, **_kwargs):
        raise AssertionError("rebuilt")

    for module, name in ((chem, "run_scf"), (problem, "_compute"), (problem, "_in_orbitals")):
        monkeypatch.setattr(module, name, boom)
    start = time.perf_counter()
    main(args)
    printed = capsys.readouterr().out
    assert printed.count("finished earlier") == 1 and printed.count("Hamiltonian from the cache") == 1
    assert "Hamiltonian built" not in printed
    main(["--resume", str(curve)])
    assert capsys.readouterr().out.count("finished earlier") == 2
    assert time.perf_counter() - start < 60


def test_old_curve_points_still_load(tmp_path):
    """summary.json as written before run records had a schema (the keys of the former exact_point)."""
    from nqs.record import read_summary

    run_dir = tmp_path / "r=1.000"
    run_dir.mkdir()
    old = {"molecule": "custom", "ansatz": "transformer", "n_qubits": 4, "n_alpha": 0, "n_beta": 0,
           "sector_size": 1, "n_params": 0, "steps": 0, "samples": 1e12, "unique": 2000, "energy": 0.529,
           "energy_err": 0.0, "variance": 0.0, "vscore": None, "e_fci": 0.529, "e_ccsd_t": 0.529, "e_hf": 0.529,
           "error_mha": 0.0, "d_prime": 0.0, "wall_s": 0.01, "seed": 0, "exact": True, "energy_enum": 0.529}
    (run_dir / "summary.json").write_text(json.dumps(old))
    record = read_summary(run_dir)
    assert record.schema == 1 and record.exact and record.error_mha == 0.0 and record.scan is None
    (run_dir / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_summary(run_dir)


@pytest.mark.slow  # 16 s; the one-process chain tests cover the fast suite
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
    from nqs.chem import nuclear_repulsion

    spec = resolve_molecule("H2")
    assert nuclear_repulsion(spec) == pytest.approx(BOHR / 0.7414, rel=1e-12)
    lih = resolve_molecule("LiH")
    assert nuclear_repulsion(lih) == pytest.approx(3 * BOHR / math.dist(*(a[1:] for a in lih.atoms)), rel=1e-12)
    assert Scan((1.0,)).geometry(spec, 1.0).n_electrons == 2


def test_orbitals_follow_the_geometry(tmp_path):
    """LiH's sigma* orbital changes sign between 2.25 and 2.5 Å; matched orbitals overlap positively, in order,
    and leave the FCI energy unchanged; a reference without orbitals is said so, not silently ignored."""
    import numpy as np
    from pyscf import gto

    from nqs import chem
    from nqs.curve import point_config, point_problem
    from nqs.orbitals import ORBITALS_FILE
    from nqs.training.config import TrainConfig

    lih = resolve_molecule("LiH")
    scan = make_scan(lih, "2.25,2.5")
    a, b = (scan.geometry(lih, r) for r in (2.25, 2.5))
    cfg_a, cfg_b = (point_config(TrainConfig(), s, tmp_path / "x", 1, None) for s in (a, b))
    ref = point_problem(cfg_a, a, None).problem.orbitals
    ref.save(tmp_path / "ref" / ORBITALS_FILE)
    point = point_problem(cfg_b, b, tmp_path / "ref")
    canonical = point_problem(cfg_b, b, None).problem.orbitals
    cross = gto.intor_cross("int1e_ovlp", chem.build_mole(a, False), chem.build_mole(b, False))
    assert np.diag(ref.mo.T @ cross @ canonical.mo).min() < -0.5  # the flip is there ...
    assert np.diag(ref.mo.T @ cross @ point.problem.orbitals.mo).min() > 0.5  # ... and is undone
    assert "re-signed" in point.orbitals and point.notes == ()
    e_fci, _, _ = chem.fci(point.problem.integrals, 1e7, [])
    assert e_fci == pytest.approx(point.problem.references.e_fci, abs=1e-10)
    (tmp_path / "bare").mkdir()
    unmatched = point_problem(cfg_b, b, tmp_path / "bare")
    assert unmatched.orbitals.startswith("canonical") and "no orbitals.npz" in unmatched.notes[0]
    assert np.array_equal(unmatched.problem.orbitals.mo, canonical.mo)


def test_a_curve_directory_in_use_is_refused(tmp_path, capsys):
    from filelock import FileLock

    curve = tmp_path / "c"
    curve.mkdir()
    args = ["--mol", "H2", "--charge", "2", "--bond", "1.0", "--out", str(curve)]
    with FileLock(curve / ".lock", timeout=0):  # another nqs-curve holds it
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2 and "in use by another nqs-curve" in capsys.readouterr().err
    main(args)  # the lock file left behind is no lock: the OS dropped it
    assert (curve / "r=1.000" / "summary.json").is_file()


def test_warm_started_points_take_their_own_peak_learning_rate(tmp_path):
    """--lr-per-point sets a warm start's peak rate (its final rate never above it); the start run keeps --lr."""
    from nqs.curve import point_config
    from nqs.training.config import TrainConfig

    lih = resolve_molecule("LiH")
    base = TrainConfig().updated(lr=1e-2, lr_final=1e-3)
    start = point_config(base, lih, tmp_path / "start", 10, None, lr_warm=3e-3)
    warm = point_config(base, lih, tmp_path / "a", 10, str(tmp_path / "start"), lr_warm=3e-3)
    low = point_config(base, lih, tmp_path / "b", 10, str(tmp_path / "start"), lr_warm=5e-4)
    same = point_config(base, lih, tmp_path / "c", 10, str(tmp_path / "start"))
    assert (start.optim.lr, start.optim.lr_final) == (1e-2, 1e-3)
    assert (warm.optim.lr, warm.optim.lr_final) == (3e-3, 1e-3)
    assert (low.optim.lr, low.optim.lr_final) == (5e-4, 5e-4)
    assert (same.optim.lr, same.optim.lr_final) == (1e-2, 1e-3)
    assert warm.molecule.name == "LiH" and warm.label == "LiH" and warm.molecule.mol is None
    from nqs.curve import base_molecule

    named = TrainConfig().updated(mol=None, geometry="H 0 0 0; H 0 0 0.74", name="H2-custom")
    assert base_molecule(named).name == "H2-custom" and base_molecule(named.updated(name=None)).name == "custom"
