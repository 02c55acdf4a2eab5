"""The local-energy kernel against exact references: zero variance on the FCI state, <psi|H|psi> by enumeration."""
from __future__ import annotations

import pytest
import torch

from nqs.exact import amplitude_lookup, fci_state, sector_matrix
from nqs.local_energy import local_energy


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


@pytest.mark.parametrize("name,seed", [("LiH", 1), ("H2O", 2), ("O2", 3)])
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
