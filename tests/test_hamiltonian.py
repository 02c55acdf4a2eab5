"""The qubit Hamiltonian against independent references: OpenFermion's sparse matrix and PySCF FCI."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

from nqs.chem import OrbitalOptions
from nqs.exact import sector_matrix
from nqs.hilbert import Sector
from nqs.molecules import resolve_molecule
from nqs.operator import interaction_operator
from nqs.problem import build_problem


def openfermion_sector_matrix(problem):
    """OpenFermion's own sparse JW matrix (qubit 0 = most significant bit), restricted to the sector."""
    from openfermion import get_sparse_operator, jordan_wigner

    n = problem.n_qubits
    matrix = get_sparse_operator(jordan_wigner(interaction_operator(problem.integrals)), n_qubits=n).tocsr()
    bits = problem.sector.enumerate_bits().to(torch.int64)
    index = (bits * (1 << torch.arange(n - 1, -1, -1))).sum(-1).numpy()
    return matrix[index][:, index], bits


@pytest.mark.parametrize("name", ["H2", "LiH", "BeH2", pytest.param("H2O", marks=pytest.mark.slow)])  # H2O: 9-15 s
def test_sector_ground_state_equals_fci(problems, name):
    p = problems(name)
    matrix, _ = openfermion_sector_matrix(p)
    lowest = scipy.sparse.linalg.eigsh(matrix, k=1, which="SA")[0][0] if matrix.shape[0] > 2 else \
        np.linalg.eigvalsh(matrix.toarray())[0]
    assert abs(lowest - p.references.e_fci) < 1e-8


@pytest.mark.parametrize("name", ["LiH", pytest.param("H2O", marks=pytest.mark.slow)])
def test_compiled_matrix_equals_openfermion(problems, name):
    """Every element of our grouped-Pauli matrix equals OpenFermion's, in the sector."""
    p = problems(name)
    ours, _ = sector_matrix(p.compiled(), p.sector)
    reference, _ = openfermion_sector_matrix(p)
    assert abs(ours - reference).max() < 1e-12


@pytest.mark.parametrize("name", ["H2", "LiH", pytest.param("H2O", marks=pytest.mark.slow), "O2"])
def test_e_inf_is_sector_trace(problems, name):
    p = problems(name)
    ours, _ = sector_matrix(p.compiled(), p.sector)  # O2 is too large for OpenFermion's matrix
    if p.n_qubits <= 14:
        ours, _ = openfermion_sector_matrix(p)
    assert abs(ours.diagonal().sum().real / p.sector.size - p.e_inf) < 1e-10


@pytest.mark.parametrize("name", ["LiH", "H2O", "O2", "N2"])
def test_hartree_fock_determinant_energy(problems, name):
    """<HF|H|HF> from the diagonal strings equals the SCF energy (canonical orbitals, aufbau occupation)."""
    from nqs.local_energy import connections

    p = problems(name)
    x = torch.zeros(1, p.n_qubits, dtype=torch.uint8)
    x[0, 0:2 * p.sector.n_alpha:2] = 1
    x[0, 1:2 * p.sector.n_beta:2] = 1
    assert abs(connections(p.compiled(), x).diagonal[0].real.item() - p.references.e_hf) < 1e-8


def test_reference_energies_h2o(problems):
    r = problems("H2O").references
    assert r.e_fci < r.e_ccsd_t < r.e_ccsd < r.e_hf
    assert abs(r.e_fci - -75.012404) < 2e-6 and abs(r.s2_fci) < 1e-6


@pytest.mark.slow  # 15 s
def test_c2_fci_is_the_sector_ground_state(problems):
    """PySCF's default Davidson guess lands on a triplet (-74.6405) for C2; we must find the singlet."""
    r = problems("C2").references
    assert abs(r.e_fci - -74.690211) < 2e-6 and abs(r.s2_fci) < 1e-4


def test_open_shell_triplet_o2(problems):
    p = problems("O2")
    assert (p.sector.n_alpha, p.sector.n_beta) == (9, 7)
    assert abs(p.references.s2_fci - 2.0) < 1e-6
    matrix, _ = sector_matrix(p.compiled(), p.sector)
    lowest = scipy.sparse.linalg.eigsh(matrix, k=1, which="SA")[0][0]
    assert abs(lowest - p.references.e_fci) < 1e-8


def test_zero_electrons_is_bare_coulomb(problems):
    p = problems("H2", charge=2)
    bohr = 0.52917721092
    r = 0.7414 / bohr
    assert p.sector.size == 1 and p.sector.n_electrons == 0
    for e in (p.references.e_hf, p.references.e_fci, p.e_inf):
        assert abs(e - 1.0 / r) < 1e-10


def test_one_electron_h2_plus(problems):
    p = problems("H2", charge=1)
    matrix, _ = openfermion_sector_matrix(p)
    assert (p.sector.n_alpha, p.sector.n_beta) == (1, 0)
    assert abs(np.linalg.eigvalsh(matrix.toarray())[0] - p.references.e_fci) < 1e-8
    assert abs(p.references.e_hf - p.references.e_fci) < 1e-8  # one electron: HF is exact


def test_larger_basis_h2o_631g():
    p = build_problem(resolve_molecule("H2O", basis="6-31g"), fci_max_dets=0)
    assert p.n_qubits == 26 and p.references.e_fci is None
    assert p.references.e_ccsd_t < p.references.e_hf
    x = torch.zeros(1, 26, dtype=torch.uint8)
    x[0, :10] = 1
    from nqs.local_energy import connections

    assert abs(connections(p.compiled(), x).diagonal[0].real.item() - p.references.e_hf) < 1e-8


def test_active_space_matches_casci():
    from pyscf import gto, mcscf, scf

    spec = resolve_molecule("H2O")
    p = build_problem(spec, OrbitalOptions(frozen_core=1, active_orbitals=5))
    assert p.sector == Sector(5, 4, 4)
    mol = gto.M(atom=spec.pyscf_atom(), basis="sto-3g", symmetry=True, verbose=0)
    mf = scf.RHF(mol).run(conv_tol=1e-10)
    e_casci = mcscf.CASCI(mf, 5, 8).run().e_tot
    assert abs(p.references.e_fci - e_casci) < 1e-8


def test_cache_round_trip(problems):
    spec = resolve_molecule("LiH")
    first = build_problem(spec, OrbitalOptions(symmetry=False))
    second = build_problem(spec, OrbitalOptions(symmetry=False))
    assert second.from_cache and not first.from_cache
    assert second.summary()["e_fci"] == first.summary()["e_fci"]
    assert np.array_equal(second.pauli.term_coeffs, first.pauli.term_coeffs)
    assert first.pauli.n_terms == 631 and first.pauli.n_flip_masks == 84  # literature count (no symmetry)
