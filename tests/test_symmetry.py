"""`nqs.symmetry`: H's spin flip and orbital mirror as signed permutations of determinants, checked against the
sector matrix and FCI of H6 in split-localised orbitals (the chains' orbitals; 400 determinants), the projection
of a state on a set of determinants, S² against OpenFermion's, and the spin and real-part projections."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nqs.chem import OrbitalOptions
from nqs.exact import fci_state, sector_matrix
from nqs.excitations import IntegralHamiltonian
from nqs.keys import KeyIndex, pack
from nqs.molecules import resolve_molecule
from nqs.orbitals import localize
from nqs.problem import build_problem
from nqs.symmetry import (Projector, Symmetry, group, projection, real_part, spin_flip, spin_projection,
                          spin_squared, symmetries_of)


@pytest.fixture(scope="module")
def h6():
    spec = resolve_molecule("H6")
    canonical = build_problem(spec, OrbitalOptions(), references="hf")
    p = build_problem(spec, OrbitalOptions(), references="hf", orbitals=localize(canonical.orbitals, split=True))
    h = IntegralHamiltonian(p.integrals, p.sector.n_alpha, p.sector.n_beta)
    matrix, bits = sector_matrix(h, p.sector)
    return p, torch.from_numpy(matrix.toarray().real), bits


def _unitary(g: Symmetry, bits: torch.Tensor) -> torch.Tensor:
    """U_g on the sector, (K, K) float64: U[π(x), x] = sign_g(x)."""
    mapped, sign = g.apply(bits)
    rows = KeyIndex(pack(bits), bits.shape[1])(pack(mapped))
    assert (rows >= 0).all()  # the sector is closed under g
    u = torch.zeros(len(bits), len(bits), dtype=torch.float64)
    u[rows, torch.arange(len(bits))] = sign
    return u


def test_the_chains_spin_flip_and_mirror_commute_with_h_and_keep_its_ground_state(h6):
    p, matrix, bits = h6
    generators = symmetries_of(p.integrals, p.sector.n_alpha, p.sector.n_beta)
    assert [g.name for g in generators] == ["spin flip", "orbital swap"]
    fci_bits, fci, _ = fci_state(p)
    order = KeyIndex(pack(fci_bits), bits.shape[1])(pack(bits))
    c = fci[order].real.to(torch.float64)
    assert torch.allclose(matrix @ c, float(c @ matrix @ c) * c, atol=1e-10)  # c in the matrix's order
    for g in group(generators):
        u = _unitary(g, bits)
        assert torch.allclose(u @ u, torch.eye(len(bits), dtype=torch.float64))  # an involution
        assert g.residual < 1e-7  # Boys localisation's convergence: the mirror holds to ~4e-8 Ha here
        assert torch.allclose(u @ matrix, matrix @ u, atol=1e-6), g.name  # a symmetry of H, element by element
        assert abs(abs(float(c @ u @ c)) - 1) < 1e-8, g.name  # the ground state is an eigenvector: χ = ±1
    n = bits.shape[1]
    alternate = tuple((-1) ** (q // 2) for q in range(n))
    broken = Symmetry("mirror, orbitals signed alternately", generators[1].perm, alternate)
    assert not torch.allclose(_unitary(broken, bits) @ matrix, matrix @ _unitary(broken, bits), atol=1e-6)


def test_the_projection_keeps_the_ground_state_and_lowers_a_perturbed_ones_energy(h6):
    p, matrix, bits = h6
    fci_bits, fci, e0 = fci_state(p)
    c = fci[KeyIndex(pack(fci_bits), bits.shape[1])(pack(bits))].to(torch.complex128)
    generators = symmetries_of(p.integrals, p.sector.n_alpha, p.sector.n_beta)
    P = projection(bits, generators, c)
    assert P.closed == 1.0 and len(P.characters) == 3
    assert torch.allclose(P(c), c, atol=1e-7)  # the exact state is symmetric (to the orbitals' 4e-8): P keeps it
    g = torch.Generator().manual_seed(0)
    noisy = c + 0.01 * torch.randn(len(c), generator=g, dtype=torch.float64)
    projected = P(noisy)
    assert torch.allclose(P(projected), projected, atol=1e-12)  # a projector
    m = matrix.to(torch.complex128)

    def energy(v):
        return float(torch.vdot(v, m @ v).real / torch.vdot(v, v).real)

    assert e0 - 1e-10 <= energy(projected) < energy(noisy) - 1e-4  # variational, and lower
    flip_odd = (-P.characters[0], P.characters[1], -P.characters[2])  # [F, R, F·R]: the spin flip's other sign
    other = projection(bits, generators, noisy, flip_odd)
    assert energy(other(noisy)) > energy(noisy)  # the wrong characters take the state's own part away


def test_a_set_not_closed_under_the_flip_leaves_unpaired_rows_as_they_are(h6):
    p, _, bits = h6
    flip = spin_flip(p.integrals.h1.shape[0])
    mapped, _ = flip.apply(bits)
    keep = torch.tensor([i for i in range(len(bits)) if not torch.equal(bits[i], mapped[i])][:50])
    g = torch.Generator().manual_seed(1)
    psi = torch.randn(len(keep), generator=g, dtype=torch.float64).to(torch.complex128)
    P = projection(bits[keep], [flip], psi)
    lone = P.partners[0] < 0
    assert 0 < float(lone.double().mean()) < 1 and P.closed < 1
    assert torch.equal(P(psi)[lone], psi[lone])
    i = int(torch.nonzero(~lone)[0])
    j, sign = int(P.partners[0][i]), float(P.signs[0][i])
    assert np.isclose(complex(P(psi)[i]), complex(psi[i] + P.characters[0] * sign * psi[j]) / 2, atol=1e-14)


def _fci_in_sector_order(p, bits):
    fci_bits, fci, e0 = fci_state(p)
    return fci[KeyIndex(pack(fci_bits), bits.shape[1])(pack(bits))].to(torch.complex128), e0


def test_s_squared_on_the_sector_is_openfermions(h6):
    import openfermion

    p, matrix, bits = h6
    n = bits.shape[1]
    s2, closed = spin_squared(bits)
    assert closed == 1.0  # the sector is closed under spin exchanges
    full = openfermion.get_sparse_operator(openfermion.s_squared_operator(n // 2), n_qubits=n).tocsr()
    index = (bits.numpy().astype(np.int64) << np.arange(n - 1, -1, -1)).sum(1)  # qubit 0 is the leading bit
    assert abs(full[np.ix_(index, index)] - s2).max() < 1e-12  # every element, signs included
    s2 = torch.from_numpy(s2.toarray())
    assert torch.allclose(s2 @ matrix, matrix @ s2, atol=1e-10)  # [S², H] = 0
    mixed = spin_squared(torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]]))[0].toarray()  # one electron, S_z = ±1/2
    assert np.allclose(mixed, 0.75 * np.eye(2))


def test_the_spin_projection_keeps_the_ground_state_and_takes_out_the_other_spins(h6):
    p, matrix, bits = h6
    c, e0 = _fci_in_sector_order(p, bits)
    generators = symmetries_of(p.integrals, p.sector.n_alpha, p.sector.n_beta)
    alone, after_flip = spin_projection(bits, c, 6, False), spin_projection(bits, c, 6, True)
    assert (alone.spin, alone.removed, after_flip.removed) == (0.0, (1.0, 2.0, 3.0), (2.0,))
    assert torch.allclose(alone(c), c, atol=1e-10)
    noisy = c + 0.02 * torch.randn(len(c), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert alone.expectation(noisy) > 1e-3
    assert alone.expectation(alone(noisy)) < 1e-12 and torch.allclose(alone(alone(noisy)), alone(noisy), atol=1e-12)
    both = Projector(projection(bits, generators, c), after_flip)
    assert after_flip.expectation(both(noisy)) < 1e-12  # the flip took the odd S out, the projector the even
    flip_only = Projector(projection(bits, generators[:1], c), after_flip)
    assert after_flip.expectation(flip_only(noisy)) < 1e-12
    m = matrix.to(torch.complex128)

    def energy(v):
        return float(torch.vdot(v, m @ v).real / torch.vdot(v, v).real)

    assert e0 - 1e-10 <= energy(both(noisy)) < energy(Projector(projection(bits, generators, c))(noisy)) - 1e-5
    values, vectors = torch.linalg.eigh(matrix)
    spins = [float(v @ torch.from_numpy(spin_squared(bits)[0].toarray()) @ v) for v in vectors.T]
    triplet = vectors[:, next(i for i, s in enumerate(spins) if abs(s - 2) < 1e-8)].to(torch.complex128)
    assert spin_projection(bits, triplet, 6, False).spin == 1.0


def test_the_real_part_keeps_a_real_state_under_any_global_phase_and_lowers_a_complex_one(h6):
    p, matrix, bits = h6
    c, e0 = _fci_in_sector_order(p, bits)
    turned = c * np.exp(0.7j)
    assert torch.allclose(real_part(turned), turned, atol=1e-12)
    noise = 0.02j * torch.randn(len(c), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m = matrix.to(torch.complex128)

    def energy(v):
        return float(torch.vdot(v, m @ v).real / torch.vdot(v, v).real)

    noisy = turned * (1 + noise)
    assert e0 - 1e-10 <= energy(real_part(noisy)) < energy(noisy) - 1e-5
    assert torch.allclose(real_part(real_part(noisy)), real_part(noisy), atol=1e-12)
