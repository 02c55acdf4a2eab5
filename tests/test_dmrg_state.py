"""The DMRG state to fit (`--init-state dmrg`, nqs.dmrg.dmrg_state): block2's determinants and signs mapped to the
qubit basis (checked against PySCF's FCI in permuted orbitals, no block2 needed), and the state itself against FCI
on small molecules when block2 is installed (a closed and an open shell)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nqs.chem import Integrals
from nqs.dmrg import block2_determinants
from nqs.exact import amplitude_lookup, fci_state
from nqs.local_energy import local_energy
from nqs.molecules import resolve_molecule
from nqs.problem import build_problem


def _overlap(bits_a, amps_a, bits_b, amps_b) -> float:
    """⟨a|b⟩ of two states given as determinants (any order, missing ones zero)."""
    index = {bytes(x.numpy()): float(v) for x, v in zip(bits_a, amps_a)}
    return sum(index.get(bytes(x.numpy()), 0.0) * float(v) for x, v in zip(bits_b, amps_b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block2_determinants_map_pyscfs_convention_over_permuted_sites_to_ours(problems, seed):
    """FCI of H6 with its orbitals put on the sites in a random order, in PySCF's convention over the sites (what
    block2 returns with fci_conv=True), mapped back: our FCI state, sign for sign. Without the site-reordering
    sign, or the alpha/beta one, the overlap drops far below 1 (checked)."""
    from pyscf.fci import cistring, direct_spin1

    p = problems("H6")
    ints, n = p.integrals, p.integrals.n_orb
    order = np.random.default_rng(seed).permutation(n)
    h1 = ints.h1[order][:, order]
    h2 = ints.h2[order][:, order][:, :, order][:, :, :, order]
    _, civec = direct_spin1.FCI().kernel(h1, h2, n, (ints.n_alpha, ints.n_beta), tol=1e-12)
    alpha = cistring.make_strings(range(n), ints.n_alpha)
    beta = cistring.make_strings(range(n), ints.n_beta)
    site = np.arange(n)
    a = (alpha[:, None] >> site) & 1
    b = (beta[:, None] >> site) & 1
    dets = (a[:, None, :] + 2 * b[None, :, :]).reshape(-1, n).astype(np.uint8)
    bits, sign = block2_determinants(dets, order)
    mapped = np.asarray(civec).reshape(-1) * sign
    bits_f, psi_f, _ = fci_state(p)
    assert abs(_overlap(bits_f, psi_f / psi_f.norm(), bits, mapped)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name,spin", [("H6", None), ("H4", 2)])
def test_the_dmrg_state_is_fci_on_small_molecules(name, spin):
    """With every determinant kept (cutoff 1e-9) the state is FCI's, signs included (|overlap| = 1 to 1e-8), and
    its energy under our Hamiltonian is E_FCI (1e-7 Ha); an open shell (H4 triplet) keeps its sector."""
    pytest.importorskip("pyblock2", reason="block2 is not installed (pip install 'nqs-scaling[dmrg]')")
    from nqs.target_states import target_state

    p = build_problem(resolve_molecule(name, spin=spin), references="hf,fci")
    target = target_state("dmrg", p.integrals, dmrg_max_bond=64, dmrg_cutoff=1e-9)
    assert target.kind == "dmrg" and "hold 1.000000 of its weight" in target.detail
    s = p.sector
    assert (target.bits[:, 0::2].sum(1) == s.n_alpha).all() and (target.bits[:, 1::2].sum(1) == s.n_beta).all()
    bits_f, psi_f, e_fci = fci_state(p)
    assert abs(_overlap(bits_f, psi_f / psi_f.norm(), target.bits, target.amplitudes)) == pytest.approx(1, abs=1e-8)
    log_psi = amplitude_lookup(target.bits, target.amplitudes)
    e_loc = local_energy(p.compiled(), target.bits, log_psi).values
    energy = float((target.amplitudes ** 2 * e_loc.real).sum())
    assert energy == pytest.approx(e_fci, abs=1e-7) and target.energy == pytest.approx(e_fci, abs=1e-7)


def test_a_cutoff_keeps_the_largest_determinants_and_says_what_weight_they_hold():
    pytest.importorskip("pyblock2", reason="block2 is not installed (pip install 'nqs-scaling[dmrg]')")
    from nqs.dmrg import dmrg_state

    p = build_problem(resolve_molecule("H6"), references="hf")
    whole = dmrg_state(p.integrals, 64, 1e-9)
    cut = dmrg_state(p.integrals, 64, 1e-2)
    assert cut.bits.shape[0] < whole.bits.shape[0] and float(cut.amplitudes.abs().min()) >= 1e-2
    assert 0.9 < cut.weight < whole.weight <= 1 + 1e-9
    assert cut.weight == pytest.approx(float((cut.amplitudes ** 2).sum()))
    assert torch.is_tensor(cut.bits) and cut.bits.dtype == torch.uint8


def test_bad_dmrg_state_settings_are_one_line_errors():
    from nqs.dmrg import dmrg_state
    from nqs.errors import UserError

    ints = Integrals(h1=np.eye(2), h2=np.zeros((2, 2, 2, 2)), e_core=0.0, e_nuc=0.0, n_alpha=1, n_beta=1)
    with pytest.raises(UserError, match="too small"):
        dmrg_state(ints, max_bond=2)
    with pytest.raises(UserError, match="cutoff"):
        dmrg_state(ints, cutoff=0.0)


def test_a_run_from_the_dmrg_state_records_it_and_bad_settings_exit_2(tmp_path, capsys):
    pytest.importorskip("pyblock2", reason="block2 is not installed (pip install 'nqs-scaling[dmrg]')")
    from nqs.cli.train import main
    from nqs.record import read_summary

    out = tmp_path / "run"
    main(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "2", "--init-state", "dmrg", "--init-bond",
          "32", "--init-cutoff", "1e-6", "--init-steps", "30", "--init-lr", "1e-2", "--unique", "64",
          "--final-unique", "500", "--out", str(out)])
    notes = [n for n in read_summary(out).notes if n.startswith("initial state")]
    assert len(notes) == 1 and "DMRG state" in notes[0] and "M = 32" in notes[0] and "|c| >= 1e-06" in notes[0]
    assert "note: DMRG state to fit: SZ, M = 32" in capsys.readouterr().err
    for bad in (["--init-cutoff", "0"], ["--init-cutoff", "1.5"], ["--init-bond", "2"]):
        with pytest.raises(SystemExit) as stop:
            main(["--mol", "LiH", "--no-progress", "--steps", "3", "--init-state", "dmrg", "--out",
                  str(tmp_path / "bad"), *bad])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "init_" in err and "Traceback" not in err, bad


def test_the_dmrg_state_is_cached_and_read_back(monkeypatch, tmp_path):
    pytest.importorskip("pyblock2", reason="block2 is not installed (pip install 'nqs-scaling[dmrg]')")
    from nqs import dmrg
    from nqs.target_states import target_state

    monkeypatch.setenv("NQS_CACHE_DIR", str(tmp_path))
    p = build_problem(resolve_molecule("H4"), references="hf")
    first = target_state("dmrg", p.integrals, dmrg_max_bond=16, dmrg_cutoff=1e-6)
    monkeypatch.setattr(dmrg, "dmrg_state", lambda *a, **k: pytest.fail("DMRG recomputed"))
    again = target_state("dmrg", p.integrals, dmrg_max_bond=16, dmrg_cutoff=1e-6)
    assert torch.equal(again.bits, first.bits) and torch.equal(again.amplitudes, first.amplitudes)
    assert again.energy == first.energy and "(read from the cache)" in again.detail
    monkeypatch.undo()
    monkeypatch.setenv("NQS_CACHE_DIR", str(tmp_path))
    other = target_state("dmrg", p.integrals, dmrg_max_bond=16, dmrg_cutoff=1e-3)  # another key: computed
    assert "(read from the cache)" not in other.detail and len(list((tmp_path / "states").iterdir())) == 2
