"""Exact references on small sectors: the FCI state in the qubit basis, the sector matrix, exact expectations.

Used by tests and benchmarks, never by training. All float64 / complex128.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import torch

from nqs import chem
from nqs.hilbert import Sector, from_pyscf_strings
from nqs.keys import index_of, pack
from nqs.local_energy import Hamiltonian, connections
from nqs.problem import MolecularProblem


def pyscf_determinants(ints) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """The sector's determinants in PySCF's FCI order: ((S, n) uint8 bits, (S,) ±1 sign that turns PySCF's
    amplitudes into the interleaved qubit basis's (`nqs.hilbert.from_pyscf_strings`), (n_alpha strings,
    n_beta strings), the shape of PySCF's FCI array)."""
    from pyscf.fci import cistring

    n = ints.n_orb
    alpha = cistring.make_strings(range(n), ints.n_alpha)
    beta = cistring.make_strings(range(n), ints.n_beta)
    bits, sign = from_pyscf_strings(np.repeat(alpha, len(beta)), np.tile(beta, len(alpha)), n)
    return bits, sign, (len(alpha), len(beta))


def fci_state(problem: MolecularProblem) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The FCI ground state as qubit amplitudes: ((S, n) uint8 bits, (S,) float64 psi, E_FCI), in PySCF's
    determinant order (`pyscf_determinants`)."""
    energy, civec = _fci_vector(problem.integrals)
    bits, sign, _ = pyscf_determinants(problem.integrals)
    psi = np.asarray(civec).reshape(-1) * sign
    return bits, torch.from_numpy(psi), float(energy)


def _fci_vector(ints, dense_limit: int = 4000) -> tuple[float, np.ndarray]:
    """Ground state in PySCF's determinant basis: dense diagonalisation of PySCF's own matrix when small
    (exact to machine precision, so that E_loc is flat even on tiny amplitudes), else tight Davidson."""
    from pyscf.fci import direct_spin1

    n, nelec = ints.n_orb, (ints.n_alpha, ints.n_beta)
    shape = (math.comb(n, ints.n_alpha), math.comb(n, ints.n_beta))
    dim = shape[0] * shape[1]
    if dim > dense_limit or dim == 1:
        energy, _, civec = chem.fci(ints, float("inf"), [], residual=1e-10)
        return energy, civec
    addr, matrix = direct_spin1.pspace(ints.h1, ints.h2, n, nelec, np=dim)
    w, v = np.linalg.eigh(matrix)
    civec = np.zeros(dim)
    civec[addr] = v[:, 0]
    return float(w[0] + ints.e_core), civec.reshape(shape)


def amplitude_lookup(bits: torch.Tensor, psi: torch.Tensor):
    """A log-psi callable that looks amplitudes up in a table: (C, n) bits -> (C,) complex128 log psi."""
    keys, table = pack(bits), psi.to(torch.complex128)

    def log_psi(query: torch.Tensor) -> torch.Tensor:
        row = index_of(keys, pack(query).to(keys.device))
        found = table.index_select(0, row.clamp(min=0))
        return torch.log(torch.where(row >= 0, found, torch.zeros_like(found)))

    return log_psi


def sector_matrix(h: Hamiltonian, sector: Sector) -> tuple[scipy.sparse.csr_matrix, torch.Tensor]:
    """H restricted to the sector as a CSR matrix in the order of `sector.enumerate_bits()`, and those bits."""
    bits = sector.enumerate_bits()
    conn = connections(h, bits)
    col = index_of(pack(bits), conn.keys.cpu(), sector.n_qubits)
    rows = torch.cat([torch.arange(len(bits)), conn.sample.cpu()]).numpy()
    cols = torch.cat([torch.arange(len(bits)), col]).numpy()
    vals = torch.cat([conn.diagonal.cpu(), conn.element.cpu()]).numpy()
    return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(len(bits), len(bits))), bits
