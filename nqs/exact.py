"""Exact references on small sectors: the FCI state in the qubit basis, the sector matrix, exact expectations;
and on large ones, the exact energy of a vector on a set of determinants (`subset_energies`).

Used by tests and benchmarks, never by training. All float64 / complex128.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import torch

from nqs import chem
from nqs.excitations import IntegralHamiltonian
from nqs.excitations import connections as integral_connections
from nqs.hilbert import Sector, from_pyscf_strings
from nqs.keys import KeyIndex, index_of, pack
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


def _pairs_within(h: IntegralHamiltonian, bits: torch.Tensor, rows: tuple[int, int] | None, chunk: int, report):
    """For blocks of `chunk` rows of the set `bits` (K, n) (within `rows` = (lo, hi), default all): (the rows'
    slice, their H_xx (B,) float64, and the off-diagonal pairs inside the set: the row within the block (P,), the
    column y in the set (P,), H_xy (P,) float64). The set's keys are sorted once; connections leaving it are
    dropped. `report(done, total)` after each block."""
    K = bits.shape[0]
    index = KeyIndex(pack(bits))  # sorted once; each block's pairs are looked up in it once
    lo, hi = (0, K) if rows is None else rows
    for start in range(lo, hi, chunk):
        x = slice(start, min(hi, start + chunk))
        diag, sample, keys, element = integral_connections(h, bits[x])
        y = index(keys)
        inside = y >= 0  # pairs leaving the set are dropped
        yield x, diag, sample[inside], y[inside], element[inside]
        if report is not None:
            report(x.stop - lo, hi - lo)


def subset_hamiltonian(h: IntegralHamiltonian, bits: torch.Tensor, rows: tuple[int, int] | None = None,
                       chunk: int = 256, dtype=np.float64, report=None) -> scipy.sparse.csr_matrix:
    """H restricted to the distinct determinants `bits` (K, n): the rows [lo, hi) (default all) of the K x K
    matrix H_xy, x and y in the set, as CSR (Hartree, e_core on the diagonal; `dtype` its values, column indices
    int32 when K allows). The matrix of `subset_energies`, kept: ⟨v|H|v⟩ is then one product per vector. Memory
    ~(4 + itemsize) bytes per element (H16's 1,256,599 DMRG determinants: ~1.3e3 a row)."""
    K = bits.shape[0]
    lo, hi = (0, K) if rows is None else rows
    counts, columns, values = np.zeros(hi - lo, dtype=np.int64), [], []
    column_type = np.int32 if K < 2 ** 31 else np.int64
    for x, diag, sample, y, element in _pairs_within(h, bits, rows, chunk, report):
        local = torch.cat([torch.arange(x.stop - x.start), sample])
        order = torch.argsort(local, stable=True)
        counts[x.start - lo:x.stop - lo] = torch.bincount(local, minlength=x.stop - x.start).numpy()
        columns.append(torch.cat([torch.arange(x.start, x.stop), y])[order].numpy().astype(column_type))
        values.append(torch.cat([diag, element])[order].numpy().astype(dtype))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    index_type = column_type if indptr[-1] < 2 ** 31 else np.int64  # scipy keeps int32 indices only so
    columns = np.concatenate(columns).astype(index_type, copy=False) if columns else np.zeros(0, index_type)
    values = np.concatenate(values) if values else np.zeros(0, dtype)
    return scipy.sparse.csr_matrix((values, columns, indptr.astype(index_type)), shape=(hi - lo, K))


def subset_energies(h: IntegralHamiltonian, bits: torch.Tensor, values: torch.Tensor,
                    score: torch.Tensor | None = None, thresholds=(0.0,), rows: tuple[int, int] | None = None,
                    chunk: int = 256, report=None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each threshold t, ⟨v_t|H|v_t⟩ (T,) complex128 and ⟨v_t|v_t⟩ (T,) float64, v_t the vector `values`
    (K,) on the distinct determinants `bits` (K, n), kept where `score` (K,) ≥ t (all of them without a score)
    and zero elsewhere; the energy of v_t is the first's real part over the second (Hartree, e_core included).
    Nothing is sampled: H is applied element by element within the set (integral-driven connections, those
    leaving it dropped; the set's keys are sorted once), so this is the variational energy of a state living on
    the set, e.g. a network's amplitudes on a DMRG state's determinants. `rows` = (lo, hi): only the rows x in
    [lo, hi) of Σ_x v_x* Σ_y H_xy v_y (the norms stay whole), so parts may run in separate processes and be added.
    Work: every candidate excitation of each row (H16: ~1.3e3 kept of ~5.8e3, ~1,300 rows a second on one core);
    `subset_hamiltonian` keeps the same elements as a matrix."""
    K = bits.shape[0]
    v = values.to(torch.complex128)
    score = torch.ones(K, dtype=torch.float64) if score is None else score.to(torch.float64)
    cut = torch.as_tensor(thresholds, dtype=torch.float64)
    kept = score[None, :] >= cut[:, None]  # (T, K)
    norms = (kept * (v.abs() ** 2)[None, :]).sum(1)
    numerators = torch.zeros(len(cut), dtype=torch.complex128)
    for x, diag, sample, y, element in _pairs_within(h, bits, rows, chunk, report):
        numerators += (kept[:, x] * (v[x].abs() ** 2 * diag)[None, :]).sum(1)
        both = torch.minimum(score[x.start + sample], score[y])[None, :] >= cut[:, None]
        numerators += (both * (v[x][sample].conj() * element * v[y])[None, :]).sum(1)
    return numerators, norms
