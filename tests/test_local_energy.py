"""The local-energy kernel against exact references: zero variance on the FCI state, <psi|H|psi> by enumeration."""
from __future__ import annotations

import pytest
import torch

from nqs.exact import amplitude_lookup, fci_state, sector_matrix
from nqs.hilbert import pack
from nqs.local_energy import connections, local_energy
from nqs.operator import CompiledHamiltonian, PauliHamiltonian


@pytest.mark.parametrize("name", ["H2", "LiH", "H2O"])
def test_fci_state_has_constant_local_energy(problems, name):
    p = problems(name)
    bits, psi, e_fci = fci_state(p)
    # E_loc is defined where psi(x) != 0; symmetry-forbidden amplitudes are ~1e-12 round-off, and the
    # absolute error of (H psi)(x) (float64 round-off, strings below 1e-12 Ha dropped) is ~3e-13, so
    # E_loc = (H psi)(x) / psi(x) is flat to 1e-8 Ha wherever |psi(x)| > 1e-4 (121 of 133 significant H2O dets)
    keep = psi.abs() > 1e-4
    result = local_energy(p.compiled(), bits[keep], amplitude_lookup(bits, psi))
    assert abs(e_fci - p.references.e_fci) < 1e-10
    assert (result.values - e_fci).abs().max().item() < 1e-8


def _random_complex_state(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(size, generator=g, dtype=torch.float64),
                         torch.randn(size, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("name,seed", [("LiH", 1), pytest.param("H2O", 2, marks=pytest.mark.slow), ("O2", 3)])
def test_weighted_local_energy_is_expectation(problems, name, seed):
    """sum_x |psi|^2 E_loc / sum |psi|^2 == <psi|H|psi>/<psi|psi> with H from OpenFermion (LiH, H2O) or ours (O2)."""
    p = problems(name)
    bits = p.sector.enumerate_bits()
    psi = _random_complex_state(len(bits), seed)
    if p.n_qubits <= 14:
        from tests.test_hamiltonian import openfermion_sector_matrix

        matrix, _ = openfermion_sector_matrix(p)
    else:
        matrix, _ = sector_matrix(p.compiled(), p.sector)
    v = psi.numpy()
    exact = (v.conj() @ (matrix @ v)).real / (abs(v) ** 2).sum()
    result = local_energy(p.compiled(), bits, amplitude_lookup(bits, psi))
    weights = psi.abs() ** 2
    estimate = (weights * result.values).sum() / weights.sum()
    assert abs(estimate.real.item() - exact) < 1e-9 and abs(estimate.imag.item()) < 1e-9


def test_chunking_and_deduplication_do_not_change_values(problems):
    p = problems("H2O")
    bits = p.sector.enumerate_bits()
    psi = _random_complex_state(len(bits), 7)
    calls = []

    def log_psi(x):
        calls.append(len(x))
        return amplitude_lookup(bits, psi)(x)

    big = local_energy(p.compiled(), bits, log_psi)
    small = local_energy(p.compiled(), bits, log_psi, eval_chunk=37, memory_bytes=50_000)
    assert torch.allclose(big.values, small.values, atol=1e-12, rtol=0)
    assert big.n_evals == len(bits)  # the sector is closed: every x' is already in the batch
    assert sum(calls[1:]) == big.n_evals and max(calls[1:]) <= 37
    assert big.n_evals < big.n_pairs_naive


@pytest.mark.gpu
def test_cuda_matches_cpu(problems):
    p = problems("H2O")
    bits = p.sector.enumerate_bits()
    psi = _random_complex_state(len(bits), 3)
    cpu = local_energy(p.compiled("cpu"), bits, amplitude_lookup(bits, psi)).values
    lookup = amplitude_lookup(bits.cuda(), psi.cuda())
    gpu = local_energy(p.compiled("cuda"), bits.cuda(), lookup).values.cpu()
    assert torch.allclose(cpu, gpu, atol=1e-10, rtol=0)


def _pairs(conn):
    """Connections sorted by (sample, x'): (P, 2) int64 keys and (P,) elements."""
    import numpy as np

    order = torch.from_numpy(np.lexsort((conn.keys[:, 0].numpy(), conn.sample.numpy())))
    return torch.stack([conn.sample, conn.keys[:, 0]], 1)[order], conn.element[order]


def _random_sector_bits(sector, count: int, seed: int) -> torch.Tensor:
    """(count, n) random configurations of the sector, drawn per spin without enumerating it."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.zeros(count, sector.n_qubits, dtype=torch.uint8)
    for spin, n_occ in ((0, sector.n_alpha), (1, sector.n_beta)):
        occupied = torch.rand(count, sector.n_orb, generator=g).argsort(1)[:, :n_occ]
        bits[:, spin::2].scatter_(1, occupied, 1)
    return bits


def _assert_tables_match_every_string(h, bits, diagonal_tol: float) -> None:
    """The table lookup (default) and the sum over every Pauli string (dense=True): same pairs, elements to
    1e-12 Ha, diagonals to `diagonal_tol`."""
    assert h.patterns is not None
    fast, dense = connections(h, bits), connections(h, bits, dense=True)
    (keys_f, elem_f), (keys_d, elem_d) = _pairs(fast), _pairs(dense)
    assert torch.equal(keys_f, keys_d)
    assert (elem_f - elem_d).abs().max().item() < 1e-12
    assert (fast.diagonal - dense.diagonal).abs().max().item() < diagonal_tol


@pytest.mark.parametrize("name", ["LiH", "H2O", "O2", "N2"])
def test_pattern_tables_equal_per_string_sums(problems, name):
    p = problems(name)
    _assert_tables_match_every_string(p.compiled(), _random_sector_bits(p.sector, 400, seed=len(name)),
                                      1e-10)  # |H_xx| ~ 100 Ha for N2


@pytest.mark.slow  # 28- and 30-qubit Hamiltonian builds
@pytest.mark.parametrize("name", ["C2H4", "Li2O"])
def test_pattern_tables_on_larger_molecules(name):
    """28 and 30 qubits (FCI skipped)."""
    from nqs.molecules import resolve_molecule
    from nqs.problem import build_problem

    p = build_problem(resolve_molecule(name), fci_max_dets=0)
    _assert_tables_match_every_string(p.compiled(), _random_sector_bits(p.sector, 300, seed=0), 1e-10)


def test_pattern_tables_with_complex_coefficients(problems):
    """Random complex coefficients on LiH's strings (the algebra does not need a Hermitian H)."""
    p = problems("LiH")
    g = torch.Generator().manual_seed(11)
    phases = torch.exp(1j * 2 * torch.pi * torch.rand(p.pauli.n_terms, generator=g, dtype=torch.float64)).numpy()
    pauli = PauliHamiltonian(p.n_qubits, p.pauli.flip_masks, p.pauli.term_group, p.pauli.term_signs,
                             p.pauli.term_coeffs * phases)
    h = CompiledHamiltonian(pauli, p.sector.n_alpha, p.sector.n_beta)
    assert not h.is_real
    _assert_tables_match_every_string(h, _random_sector_bits(p.sector, 200, seed=5), 1e-12)


def test_hamiltonian_outside_the_pattern_form_uses_every_string(problems):
    """A three-body Z string is outside the tables' form: no tables, and the per-string path counts it."""
    import numpy as np

    p = problems("LiH")
    extra, pauli = 0.37, p.pauli
    h = CompiledHamiltonian(PauliHamiltonian(p.n_qubits, pauli.flip_masks, np.concatenate([[0], pauli.term_group]),
                                             np.concatenate([[0b111], pauli.term_signs]),
                                             np.concatenate([[extra], pauli.term_coeffs])),
                            p.sector.n_alpha, p.sector.n_beta)  # + 0.37 Z0 Z1 Z2
    assert h.patterns is None
    bits = _random_sector_bits(p.sector, 100, seed=2)
    sign = (1 - 2 * (bits[:, :3].to(torch.int64).sum(1) % 2)).to(torch.float64)
    expected = connections(p.compiled(), bits).diagonal + extra * sign
    assert (connections(h, bits).diagonal - expected).abs().max().item() < 1e-12


@pytest.mark.parametrize("spread", [5.0, 3000.0])
def test_local_energy_ratios_with_any_dynamic_range(problems, spread):
    """E_loc(x) = sum_x' H_xx' exp(l(x') - l(x)) row by row, for log-amplitudes spread over `spread` nepers
    (3000: beyond float64's exp range, so the kernel must take the ratios pair by pair). l grows with the
    electrons in the upper half of the qubits, so one connection changes it by at most 2 * spread / N_e."""
    import numpy as np

    p = problems("H2O")
    bits = p.sector.enumerate_bits()
    g = torch.Generator().manual_seed(4)
    upper = bits[:, p.n_qubits // 2:].to(torch.float64).sum(1)
    log_amp = spread / p.sector.n_electrons * upper + torch.rand(len(bits), generator=g, dtype=torch.float64)
    assert log_amp.max() - log_amp.min() > (0.3 * spread if spread < 1000 else 800)
    log_psi = torch.complex(log_amp, 2 * torch.pi * torch.rand(len(bits), generator=g, dtype=torch.float64))
    lookup = {int(k): v for k, v in zip(pack(bits), log_psi)}
    matrix = sector_matrix(p.compiled(), p.sector)[0].tocsr()
    values = log_psi.numpy()
    expected = np.array([(matrix.data[matrix.indptr[i]:matrix.indptr[i + 1]]
                          * np.exp(values[matrix.indices[matrix.indptr[i]:matrix.indptr[i + 1]]] - values[i])).sum()
                         for i in range(len(bits))])
    result = local_energy(p.compiled(), bits, lambda x: torch.stack([lookup[int(k)] for k in pack(x)]))
    assert np.isfinite(expected).all()
    got = result.values.numpy()
    assert np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))) < 1e-12
