"""Hydrogen chains H4 ... H50 and the larger-basis catalogue entry; past 62 qubits the problem is built without a
Pauli table (integral-driven connections, nqs.excitations) and cached like any other."""
from __future__ import annotations

import json
import math

import pytest

from nqs import chem
from nqs.errors import UserError
from nqs.molecules import catalogue_names, resolve_molecule
from nqs.problem import build_problem


@pytest.mark.parametrize("n", [4, 6, 10, 16, 30, 50])
def test_chains_resolve_with_the_right_electrons_and_geometry(n):
    spec = resolve_molecule(f"H{n}")
    assert (spec.name, spec.n_electrons, spec.n_alpha, spec.n_beta, spec.spin, spec.basis) == \
        (f"H{n}", n, n // 2, n // 2, 0, "sto-3g")
    z = [a[3] for a in spec.atoms]
    assert all(a[0] == "H" and a[1] == a[2] == 0.0 for a in spec.atoms) and len(z) == n
    assert all(math.isclose(b - a, 1.0, abs_tol=1e-9) for a, b in zip(z, z[1:]))  # default spacing 1.0 Å
    assert math.isclose(sum(z), 0.0, abs_tol=1e-9) and "Motta et al., Phys. Rev. X 7, 031059 (2017)" in spec.source


def test_spacing_is_configurable_and_checked():
    spec = resolve_molecule("h8", spacing=1.25)
    z = [a[3] for a in spec.atoms]
    assert all(math.isclose(b - a, 1.25, abs_tol=1e-9) for a, b in zip(z, z[1:])) and "1.25 Å (given)" in spec.source
    assert resolve_molecule("H2").atoms[1][3] == pytest.approx(-0.3707)  # H2 stays the catalogue molecule
    for kwargs, needle in ((dict(mol="H5"), "hydrogen chains are H4 ... H50"), (dict(mol="H52"), "H4 ... H50"),
                           (dict(mol="H6", spacing=0.0), "--spacing"), (dict(mol="LiH", spacing=1.0), "not to 'LiH'"),
                           (dict(geometry="H 0 0 0; H 0 0 1", spacing=1.0), "not to --geometry")):
        with pytest.raises(UserError, match=needle):
            resolve_molecule(**kwargs)


def test_catalogue_lists_molecules_not_the_family_and_names_the_chains():
    names = catalogue_names()
    assert "N2_631G" in names and not any("chain" in n for n in names)
    with pytest.raises(UserError, match=r"a hydrogen chain H4 \.\.\. H50"):
        resolve_molecule("Hx")


def test_the_larger_basis_entry_is_past_30_qubits():
    spec = resolve_molecule("N2_631G")
    assert spec.basis == "6-31g" and "Hehre, Ditchfield & Pople" in spec.source
    assert 2 * chem.build_mole(spec).nao == 36


def test_chain_problem_and_cli(capsys, tmp_path, monkeypatch):
    from nqs.cli.hamiltonian import main

    monkeypatch.setenv("NQS_CACHE_DIR", str(tmp_path))
    capsys.readouterr()
    main(["--mol", "H4", "--spacing", "1.2", "--references", "hf,fci", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert (data["n_qubits"], data["n_alpha"], data["sector_size"], data["ref_kind"]) == (8, 2, 36, "fci")
    assert data["e_ccsd_t"] is None and any("not computed" in n for n in data["notes"])


def test_past_62_qubits_the_problem_is_integral_driven_and_cached(capsys, monkeypatch, tmp_path):
    from nqs.cli.hamiltonian import main

    monkeypatch.setenv("NQS_CACHE_DIR", str(tmp_path))
    args = ["--mol", "H32", "--references", "hf,mp2"]  # 64 qubits
    capsys.readouterr()
    main([*args, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert (data["n_qubits"], data["n_alpha"], data["n_pauli_terms"]) == (64, 16, None)
    assert data["e_hf"] < data["e_inf"] and data["e_mp2"] < data["e_hf"] and data["ref_kind"] == "mp2"
    assert data["e_fci"] is None and "no Pauli table past 62 qubits" in data["hamiltonian_skipped"]
    main(args)
    assert "connections (auto): integrals" in capsys.readouterr().out  # from the cache now
    monkeypatch.setattr(chem, "run_scf", lambda *a: pytest.fail("SCF run"))
    problem = build_problem(resolve_molecule("H32"), references="hf,mp2")  # training's build: no SCF again
    assert problem.from_cache and problem.connections() == "integrals" and problem.e_inf == data["e_inf"]
    with pytest.raises(UserError, match="--connections pauli needs the Pauli table"):
        problem.connections("pauli")


@pytest.mark.slow
def test_h50_gets_its_scf_and_coupled_cluster_references(capsys):
    from nqs.cli.hamiltonian import main

    capsys.readouterr()
    main(["--mol", "H50", "--references", "hf,ccsd_t", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert (data["n_qubits"], data["n_alpha"], data["ref_kind"]) == (100, 25, "ccsd_t")
    assert data["e_ccsd_t"] < data["e_hf"] and "no Pauli table past 62 qubits" in data["hamiltonian_skipped"]


def test_localized_orbitals_keep_the_energy_and_follow_the_chain():
    """Boys-localized active orbitals: the same FCI energy (1e-8 Ha), one orbital per atom in chain order
    (each orbital's centroid closest to its own atom), every orbital signed by its largest coefficient."""
    import numpy as np

    from nqs.exact import fci_state
    from nqs.orbitals import localize

    spec = resolve_molecule("H6")
    canonical = build_problem(spec, use_cache=False)
    local = localize(canonical.orbitals)
    problem = build_problem(spec, use_cache=False, orbitals=local)
    assert abs(fci_state(problem)[2] - fci_state(canonical)[2]) < 1e-8
    mol = chem.build_mole(spec, symmetry=False)
    centroids = np.einsum("xij,ip,jp->px", mol.intor_symmetric("int1e_r"), local.mo, local.mo)
    nearest = np.argmin(np.linalg.norm(centroids[:, None, :] - mol.atom_coords()[None], axis=-1), axis=1)
    order = np.argsort(mol.atom_coords() @ np.array([0.0, 0.0, 1.0]))
    assert list(nearest) == list(order) or list(nearest) == list(order[::-1])
    assert (local.mo[np.argmax(np.abs(local.mo), axis=0), np.arange(6)] > 0).all()


def test_split_localized_orbitals_keep_the_hf_determinant_and_the_cc_states():
    """`orbitals: split` localizes the occupied and the virtual orbitals apart: the FCI energy, the HF determinant
    (the first N orbitals) and the CISD state (invariant under such rotations) keep their energies (1e-8 Ha), while
    the integrals change; an unknown choice is refused before any work."""
    import numpy as np

    from nqs.exact import fci_state
    from nqs.orbitals import localize
    from nqs.target_states import cisd_state
    from nqs.training.build import build_cfg_problem
    from nqs.training.config import TrainConfig

    spec = resolve_molecule("H6")
    canonical = build_problem(spec, use_cache=False)
    split = build_problem(spec, use_cache=False, orbitals=localize(canonical.orbitals, split=True))
    assert abs(fci_state(split)[2] - fci_state(canonical)[2]) < 1e-8
    assert abs(cisd_state(split.integrals).energy - cisd_state(canonical.integrals).energy) < 1e-8
    assert not np.allclose(split.integrals.h1, canonical.integrals.h1, atol=1e-3)
    via_config = build_cfg_problem(TrainConfig().updated(mol="H6", orbitals="split"))
    assert np.allclose(via_config.integrals.h1, split.integrals.h1, atol=1e-10)
    with pytest.raises(UserError, match="unknown orbitals 'boys'"):
        TrainConfig().updated(mol="H6", orbitals="boys").validate()


def test_split_orbitals_keep_an_open_shells_determinant():
    """ROHF (an H4 chain, 2S = 2): the doubly occupied, singly occupied and virtual orbitals are localized apart, so
    the ROHF determinant's energy (its diagonal element) and the FCI energy are unchanged (1e-8 Ha); localizing the
    singly occupied orbitals with the virtual ones moves the first by +364 mHa (checked)."""
    import torch

    from nqs.exact import fci_state
    from nqs.local_energy import connections
    from nqs.orbitals import localize

    spec = resolve_molecule(geometry="H 0 0 0; H 0 0 0.9; H 0 0 1.8; H 0 0 2.7", spin=2)
    canonical = build_problem(spec, use_cache=False)
    split = build_problem(spec, use_cache=False, orbitals=localize(canonical.orbitals, split=True))
    hf = torch.zeros(1, 2 * split.sector.n_orb, dtype=torch.uint8)
    hf[0, 0:2 * split.sector.n_alpha:2], hf[0, 1:2 * split.sector.n_beta:2] = 1, 1
    for p in (canonical, split):
        assert abs(float(connections(p.compiled(), hf).diagonal[0]) - canonical.references.e_hf) < 1e-8
    assert abs(fci_state(split)[2] - fci_state(canonical)[2]) < 1e-8
