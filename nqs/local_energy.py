"""Exact local energy E_loc(x) = sum_x' H_xx' psi(x') / psi(x) for a batch of configurations.

Three phases, all batched tensor code that runs unchanged on CPU and CUDA:
1. connections: for every (sample b, flip mask k), whether x' = x XOR f_k stays in the (N_alpha, N_beta) sector
   (one GEMM of x against the masks' alpha/beta bits) and its matrix element H_k(x) (one GEMM for the
   parities of x against all sign masks, then a segment sum per mask; laid out (terms, samples) so the
   segment sum adds contiguous rows); pairs outside the sector or with
   |H_k(x)| below `tol` are dropped. The batch is chunked so that the (chunk, M) intermediates stay under
   `memory_bytes`.
2. deduplication: the surviving x' of the whole batch, together with the batch itself, are made unique
   (packed int64 keys), so psi is evaluated once per distinct configuration.
3. evaluation: log psi on the unique configurations in chunks of `eval_chunk` rows, then
   E_loc(b) = H_0(x_b) + sum_k H_k(x_b) exp(log psi(x'_bk) - log psi(x_b)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nqs.hilbert import pack, unpack
from nqs.operator import CompiledHamiltonian

LogPsiFn = Callable[[torch.Tensor], torch.Tensor]  # (C, n) uint8 bits -> (C,) complex log psi


@dataclass(frozen=True)
class Connections:
    """Off-diagonal connections of a batch: pairs (sample, x') with matrix elements, and the diagonal."""

    diagonal: torch.Tensor  # (B,) H_xx, Hartree (real or complex dtype of the Hamiltonian)
    sample: torch.Tensor  # (P,) int64 index of x in the batch
    packed: torch.Tensor  # (P,) int64 packed x'
    element: torch.Tensor  # (P,) H_xx', Hartree
    n_pairs_naive: int  # B * (K - 1): every flip mask of every sample


@dataclass(frozen=True)
class LocalEnergy:
    values: torch.Tensor  # (B,) complex128 E_loc, Hartree
    n_evals: int  # psi evaluations made: unique configurations (batch plus connected)
    n_connected: int  # surviving (sample, x') pairs before deduplication
    n_pairs_naive: int  # B * (K - 1)


def _chunk_rows(h: CompiledHamiltonian, memory_bytes: int) -> int:
    per_row = 8 * (3 * h.n_terms + 6 * h.n_flip_masks)  # float64 parities/elements plus int64 pair data
    return max(1, memory_bytes // per_row)


def connections(h: CompiledHamiltonian, bits: torch.Tensor, tol: float = 1e-12,
                memory_bytes: int = 256 * 2**20) -> Connections:
    """Connected configurations of a batch of in-sector configurations, (B, n) bits -> Connections."""
    bits = bits.to(h.device)
    packed_x = pack(bits)
    diag, samples, packed, elements = [], [], [], []
    rows = _chunk_rows(h, memory_bytes)
    for start in range(0, bits.shape[0], rows):
        xt = bits[start:start + rows].T.to(torch.float32).contiguous()  # (n, C)
        # frac(popcount(x & z_t) / 2) is 0 or 1/2 exactly; c (-1)^popcount = c - 4 c frac(popcount / 2)
        half = (h.half_sign_rows @ xt.to(torch.float64)).frac_()  # (M, C)
        if h.is_real:
            signed = torch.addcmul(h.coeff_col, half, h.minus4_coeff_col)  # one fused pass
        else:
            signed = (1.0 - 4.0 * half).to(h.term_coeffs.dtype) * h.coeff_col
        elem = torch.zeros(h.n_flip_masks, xt.shape[1], dtype=signed.dtype, device=h.device)
        elem.index_add_(0, h.term_group, signed)  # (K, C) H_k(x): contiguous row additions
        keep = (h.flip_alpha_rows @ xt[0::2] == h.half_alpha_col) & (h.flip_beta_rows @ xt[1::2] == h.half_beta_col)
        keep &= elem.abs() > tol
        keep[0] = False  # the diagonal is handled apart
        k, b = keep.nonzero(as_tuple=True)
        diag.append(elem[0])
        samples.append(b + start)
        packed.append(packed_x[b + start] ^ h.flip_masks[k])
        elements.append(elem[k, b])
    return Connections(torch.cat(diag), torch.cat(samples), torch.cat(packed), torch.cat(elements),
                       bits.shape[0] * (h.n_flip_masks - 1))


def evaluate_unique(log_psi: LogPsiFn, packed: torch.Tensor, n_qubits: int, eval_chunk: int) -> torch.Tensor:
    """log psi of packed configurations, (U,) int64 -> (U,) complex128, evaluated `eval_chunk` rows at a time."""
    out = []
    for start in range(0, packed.shape[0], eval_chunk):
        out.append(log_psi(unpack(packed[start:start + eval_chunk], n_qubits)).to(torch.complex128))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.complex128, device=packed.device)


@torch.no_grad()
def local_energy(h: CompiledHamiltonian, bits: torch.Tensor, log_psi: LogPsiFn, eval_chunk: int = 65536,
                 memory_bytes: int = 256 * 2**20, tol: float = 1e-12) -> LocalEnergy:
    """E_loc for a batch: (B, n) bits in the sector, log_psi: (C, n) uint8 -> (C,) complex.

    Returns E_loc (B,) complex128 in Hartree and the number of psi evaluations made.
    """
    conn = connections(h, bits, tol=tol, memory_bytes=memory_bytes)
    batch = bits.shape[0]
    keys = torch.cat([pack(bits.to(h.device)), conn.packed])
    unique, inverse = torch.unique(keys, return_inverse=True)
    log_values = evaluate_unique(log_psi, unique, h.n_qubits, eval_chunk)
    log_x = log_values[inverse[:batch]]
    ratios = torch.exp(log_values[inverse[batch:]] - log_x[conn.sample])
    e_loc = conn.diagonal.to(torch.complex128).clone()
    e_loc.index_add_(0, conn.sample, conn.element.to(torch.complex128) * ratios)
    return LocalEnergy(e_loc, int(unique.shape[0]), int(conn.sample.shape[0]), conn.n_pairs_naive)
