"""Reference energies beyond FCI: the --references selection, DMRG against FCI, the best reference of a run
summary and the error taken against it (named in the output), and one line for a bad name."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nqs.chem import Integrals, References
from nqs.errors import UserError
from nqs.molecules import resolve_molecule
from nqs.problem import build_problem
from nqs.record import RunSummary
from nqs.references import KINDS, best_reference, parse_references, select


def test_selection_parses_lists_aliases_auto_and_all():
    assert parse_references("hf,ccsd_t,fci,dmrg").kinds == {"hf", "ccsd_t", "fci", "dmrg"}
    assert parse_references("fci").kinds == {"hf", "fci"}  # HF comes with the SCF
    assert parse_references(" CCSD(T) , FCI ").kinds == {"hf", "ccsd_t", "fci"}
    assert parse_references("all").kinds == set(KINDS)
    auto = parse_references("auto")
    assert auto.auto and "dmrg" not in auto.kinds and auto.text == "auto"
    for bad in ("hf,foo", "", ",", "auto,dmrg"):
        with pytest.raises(UserError, match="--references"):
            parse_references(bad)


def test_best_reference_is_fci_then_dmrg_then_ccsd_t_with_its_own_uncertainty():
    refs = References(e_hf=-1.0, e_mp2=-1.1, e_ccsd=-1.2, e_ccsd_t=-1.21, e_fci=-1.22, s2_fci=0.0,
                      e_dmrg=-1.2199, dmrg={"uncertainty": 2e-5, "bond_dim": 500})
    best = best_reference(refs)
    assert (best.kind, best.energy, best.uncertainty, best.label) == ("fci", -1.22, 0.0, "FCI")
    no_fci = References(e_hf=-1.0, e_ccsd_t=-1.21, e_dmrg=-1.2199, dmrg={"uncertainty": 2e-5})
    assert (best_reference(no_fci).kind, best_reference(no_fci).uncertainty) == ("dmrg", 2e-5)
    only_cc = References(e_hf=-1.0, e_ccsd=-1.2, e_ccsd_t=-1.21)
    assert (best_reference(only_cc).label, best_reference(only_cc).uncertainty) == ("CCSD(T)", None)
    assert best_reference(References(e_hf=-1.0)).kind == "hf"


def test_selection_hides_unasked_references_and_says_so():
    refs = References(e_hf=-1.0, e_mp2=-1.1, e_ccsd=-1.2, e_ccsd_t=-1.21, e_fci=-1.22, s2_fci=0.0)
    out = select(refs, parse_references("hf,ccsd_t"), n_orb=4)
    assert (out.e_mp2, out.e_ccsd, out.e_fci, out.e_ccsd_t) == (None, None, None, -1.21)
    assert any("not computed (--references hf,ccsd_t): MP2, CCSD, FCI" in n for n in out.notes)


def test_auto_skips_dmrg_when_fci_is_done_and_says_why_when_it_cannot_run(monkeypatch):
    from nqs import dmrg
    from nqs.references import DMRG_AUTO_MAX_ORBITALS, dmrg_decision

    auto = parse_references("auto")
    assert dmrg_decision(auto, -1.0, 8) == (False, None)
    run, why = dmrg_decision(auto, None, DMRG_AUTO_MAX_ORBITALS + 1)
    assert not run and "orbitals" in why and "--references" in why
    monkeypatch.setattr(dmrg, "available", lambda: False)
    run, why = dmrg_decision(auto, None, 8)
    assert not run and "block2 is not installed" in why and "pip install" in why


def test_explicit_dmrg_without_block2_is_one_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_block2(name, *args, **kwargs):
        if name.startswith("pyblock2"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_block2)
    from nqs import dmrg

    with pytest.raises(UserError, match=r"block2, which is not installed: pip install 'nqs-scaling\[dmrg\]'"):
        dmrg.run_dmrg(Integrals(h1=np.eye(2), h2=np.zeros((2, 2, 2, 2)), e_core=0.0, e_nuc=0.0, n_alpha=1, n_beta=1))


@pytest.mark.parametrize("name,bond", [("H4", 32), pytest.param("H8", 100, marks=pytest.mark.slow)])
def test_dmrg_matches_fci_on_a_chain_and_is_cached(name, bond, tmp_path, monkeypatch):
    pytest.importorskip("pyblock2", reason="block2 is not installed (pip install 'nqs-scaling[dmrg]')")
    monkeypatch.setenv("NQS_CACHE_DIR", str(tmp_path))
    spec = resolve_molecule(name)
    p = build_problem(spec, references="hf,fci,dmrg", dmrg_max_bond=bond)
    r = p.references
    assert r.e_dmrg == pytest.approx(r.e_fci, abs=1e-6)
    assert r.e_dmrg >= r.e_fci - 1e-8  # variational
    assert r.dmrg["bond_dim"] == bond and r.dmrg["uncertainty"] < 1e-6 and r.dmrg["converged"]
    assert any(n.startswith("DMRG (block2") for n in r.notes)
    from nqs import dmrg

    monkeypatch.setattr(dmrg, "run_dmrg", lambda *a, **k: pytest.fail("DMRG recomputed"))
    again = build_problem(spec, references="hf,fci,dmrg", dmrg_max_bond=bond)
    assert again.from_cache and again.references.e_dmrg == r.e_dmrg


def test_summary_error_is_against_the_named_best_reference_and_old_runs_use_fci(capsys):
    from nqs.cli.train import final_table

    base = dict(molecule="H16", ansatz="transformer", n_qubits=32, sector_size=165636900, n_params=10,
                n_params_modulus=4, n_params_phase=6, steps=3, wall_s=1.0, energy_err=1e-4, vscore=0.01,
                error_bar_covers="x", final_kept_mass=1.0, e_hf=-8.3, e_ccsd_t=-8.5986)
    dmrg_run = RunSummary(**base, energy=-8.5990, e_ref=-8.6000, ref_kind="dmrg", ref_uncertainty=2e-6,
                          e_dmrg=-8.6000)
    assert dmrg_run.error_mha == pytest.approx(1.0) and dmrg_run.reference_label == "DMRG"
    back = RunSummary.from_json(json.loads(json.dumps(dmrg_run.to_json())))
    assert back == dmrg_run and back.e_fci is None  # the stored error is not mistaken for an FCI energy
    table = final_table(dmrg_run)
    assert "vs DMRG (mHa)" in table and "vs FCI" not in table
    assert "NQS error +1.0000 mHa vs DMRG (reference uncertainty 0.002 mHa)" in table
    cc_run = RunSummary(**base, energy=-8.5980, e_ref=-8.5986, ref_kind="ccsd_t")
    assert "error +0.6000 mHa vs CCSD(T)" in final_table(cc_run)
    old = RunSummary.from_json({"molecule": "LiH", "ansatz": "made", "energy": -7.8810, "e_fci": -7.8824})
    assert old.error_mha == pytest.approx(1.4) and old.reference_label == "FCI" and old.e_ref is None
    older = RunSummary.from_json({"molecule": "LiH", "ansatz": "made", "energy": -7.8810, "error_mha": 1.4})
    assert older.e_fci == pytest.approx(-7.8824) and older.error_mha == pytest.approx(1.4)


@pytest.mark.parametrize("command", ["nqs.cli.hamiltonian", "nqs.cli.train"])
def test_bad_references_exit_2_with_one_line(command, tmp_path, capsys):
    import importlib

    main = importlib.import_module(command).main
    extra = ["--out", str(tmp_path / "x")] if command.endswith("train") else []
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--mol", "H4", "--references", "hf,ccsd_t,dmgr", *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: --references: unknown reference 'dmgr'") and "hf, mp2" in lines[0]
