"""Exact local energy E_loc(x) = sum_x' H_xx' psi(x') / psi(x) for a batch of configurations.

Three phases, all batched tensor code that runs unchanged on CPU and CUDA:
1. connections: for every (sample b, flip mask k), whether x' = x XOR f_k stays in the (N_alpha, N_beta)
   sector and its matrix element H_k(x). By default through the pattern tables (`nqs.pattern_tables`): one
   GEMM of x against the tables' weights gives each pair's table row (which also decides the sector) and
   its sign, the element is a lookup plus, for single excitations, a linear term; the diagonal is
   c0 + x^T Q x. `dense=True` (and any Hamiltonian without tables) sums every Pauli string instead: one GEMM
   for the parities of x against all sign masks, a segment sum per mask, and a GEMM for the sector test.
   Pairs outside the sector or with |H_k(x)| <= `tol` are dropped; the batch is chunked under
   `memory_bytes`.
   An `nqs.excitations.IntegralHamiltonian` takes the integral-driven path instead (Slater-Condon rules,
   work per sample ~ its excitations, not the K flip masks; the only path past 62 qubits).
2. deduplication: the surviving x' of the whole batch, together with the batch itself, are made unique
   (`nqs.keys`: W = ceil(n / 63) int64 words per configuration), so psi is evaluated once per distinct one.
3. evaluation: log psi on the unique configurations in chunks of `eval_chunk` rows, then
   E_loc(b) = H_0(x_b) + sum_k H_k(x_b) psi(x'_bk) / psi(x_b), with one exp per unique configuration
   (amplitudes scaled by the batch's largest; pair-by-pair ratios where that would under- or overflow).

Phase 3 takes any `evaluate` of the unique keys: a plain `log_psi` in chunks (the default,
"exact-dense"), or the prefix trie of `nqs.trie` ("exact-trie"); `nqs.local_energy_modes` builds the
cheaper estimators (sampled-space, semi-stochastic) on `connections` and `from_connections`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from nqs import excitations
from nqs.excitations import IntegralHamiltonian
from nqs.keys import pack, unique, unpack
from nqs.operator import CompiledHamiltonian

Hamiltonian = CompiledHamiltonian | IntegralHamiltonian
KeepFn = Callable[[torch.Tensor], torch.Tensor]  # (P, W) int64 keys of x' -> (P,) bool: the pairs to keep

LogPsiFn = Callable[[torch.Tensor], torch.Tensor]  # (C, n) uint8 bits -> (C,) complex log psi
EvaluateFn = Callable[[torch.Tensor], torch.Tensor]  # (U, W) int64 keys, distinct -> (U,) complex128 log psi


@dataclass(frozen=True)
class Connections:
    """Off-diagonal connections of a batch: pairs (sample, x') with matrix elements, and the diagonal."""

    diagonal: torch.Tensor  # (B,) H_xx, Hartree (real or complex dtype of the Hamiltonian)
    sample: torch.Tensor  # (P,) int64 index of x in the batch
    keys: torch.Tensor  # (P, W) int64 keys of x' (`nqs.keys`)
    element: torch.Tensor  # (P,) H_xx', Hartree
    n_pairs_naive: int  # candidates before screening: B * (K - 1) flip masks, or B * E excitations


@dataclass(frozen=True)
class LocalEnergy:
    values: torch.Tensor  # (B,) complex128 E_loc, Hartree
    n_evals: int  # psi evaluations made: unique configurations (batch plus connected)
    n_connected: int  # surviving (sample, x') pairs before deduplication
    n_pairs_naive: int  # candidates before screening (Connections)
    rows_per_position: tuple[int, ...] = ()  # trie nodes per position when the n_evals went through the trie


def _chunk_rows(h: CompiledHamiltonian, memory_bytes: int) -> int:
    if h.patterns is not None:  # per (sample, mask): ~17 B of pattern values and ~70 B if it survives as a pair
        per_row = 88 * h.n_flip_masks + 8 * (h.patterns.linear_t.shape[1] + 2 * h.n_qubits)
    else:  # float64 parities/elements plus int64 pair data
        per_row = 8 * (3 * h.n_terms + 6 * h.n_flip_masks)
    return max(1, memory_bytes // per_row)


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries of a 1-D bool tensor, (N,) -> (P,) int64; numpy's is ~7x faster on CPU."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


def _connections_patterns(h: CompiledHamiltonian, x: torch.Tensor, packed_x: torch.Tensor, tol: float):
    """One chunk through the pattern tables (see nqs.pattern_tables): (C, n) bits -> diagonal and pairs."""
    t = h.patterns
    n_off = h.n_flip_masks - 1
    xf = x.to(t.weights_t.dtype)
    value = torch.addmm(t.bias, xf, t.weights_t).to(torch.int32).view(-1)  # (C K',): row << shift | parity
    rows = (value >> t.shift).long()
    flat = _flat_nonzero(t.allowed.index_select(0, rows))  # flat (sample, mask) index of the candidates
    b = torch.div(flat, n_off, rounding_mode="floor")
    k = flat - b * n_off
    r, odd = rows.index_select(0, flat), value.index_select(0, flat) & 1
    x64 = x.to(t.constant.dtype)
    linear = torch.mm(x64, t.linear_t).view(-1)  # (C (R + 1),)
    element = t.constant.index_select(0, r) + linear.index_select(0, b * t.linear_t.shape[1]
                                                                    + t.linear_row.index_select(0, r))
    element *= (1 - 2 * odd).to(element.dtype)
    diagonal = ((x64 @ t.diag_quadratic) * x64).sum(1) + t.diag_constant
    small = element.abs() <= tol  # an element that cancels for this x (the tables only know it can be non-zero)
    if bool(small.any()):
        keep = _flat_nonzero(~small)
        b, k, element = b.index_select(0, keep), k.index_select(0, keep), element.index_select(0, keep)
    return diagonal, b, packed_x.index_select(0, b) ^ h.flip_masks[1:].index_select(0, k), element


def _connections_dense(h: CompiledHamiltonian, x: torch.Tensor, packed_x: torch.Tensor, tol: float):
    """One chunk through every string's parity (any Pauli Hamiltonian): (C, n) bits -> diagonal and pairs."""
    xt = x.T.to(torch.float32).contiguous()  # (n, C)
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
    return elem[0], b, packed_x[b] ^ h.flip_masks[k], elem[k, b]


def connections(h: Hamiltonian, bits: torch.Tensor, tol: float = 1e-12, memory_bytes: int = 256 * 2**20,
                dense: bool = False, keep: KeepFn | None = None) -> Connections:
    """Connected configurations of a batch of in-sector configurations, (B, n) bits -> Connections.

    An IntegralHamiltonian takes `nqs.excitations.connections`; a CompiledHamiltonian its pattern tables when it
    has them, else (or with `dense=True`) the per-string path. `keep`, when given, filters each chunk's pairs by
    their x' keys (e.g. to a sample set), so that only the kept pairs are ever held for the whole batch.
    """
    if isinstance(h, IntegralHamiltonian):
        if dense:
            raise ValueError("dense=True is the Pauli tables' per-string path; an IntegralHamiltonian has none")
        d, b, k, e = excitations.connections(h, bits, tol, memory_bytes, keep)
        return Connections(d, b, k, e, bits.shape[0] * h.n_candidates)
    bits = bits.to(h.device)
    packed_x = pack(bits)[:, 0]  # n <= 62 with a Pauli table: one word, the flip masks' encoding
    one_chunk = _connections_dense if dense or h.patterns is None else _connections_patterns
    diag, samples, packed, elements = [], [], [], []
    rows = _chunk_rows(h, memory_bytes)
    for start in range(0, bits.shape[0], rows):
        d, b, xp, e = one_chunk(h, bits[start:start + rows], packed_x[start:start + rows], tol)
        xp = xp.unsqueeze(1)
        if keep is not None:
            mask = keep(xp)
            b, xp, e = b[mask], xp[mask], e[mask]
        diag.append(d)
        samples.append(b + start)
        packed.append(xp)
        elements.append(e)
    return Connections(torch.cat(diag), torch.cat(samples), torch.cat(packed), torch.cat(elements),
                       bits.shape[0] * (h.n_flip_masks - 1))


def evaluate_unique(log_psi: LogPsiFn, keys: torch.Tensor, n_qubits: int, eval_chunk: int) -> torch.Tensor:
    """log psi of configurations by key, (U, W) int64 -> (U,) complex128, evaluated `eval_chunk` rows at a time."""
    out = []
    for start in range(0, keys.shape[0], eval_chunk):
        out.append(log_psi(unpack(keys[start:start + eval_chunk], n_qubits)).to(torch.complex128))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.complex128, device=keys.device)


@torch.no_grad()
def local_energy(h: Hamiltonian, bits: torch.Tensor, log_psi: LogPsiFn, eval_chunk: int = 65536,
                 memory_bytes: int = 256 * 2**20, tol: float = 1e-12, dense: bool = False,
                 evaluate: EvaluateFn | None = None) -> LocalEnergy:
    """E_loc for a batch: (B, n) bits in the sector, log_psi: (C, n) uint8 -> (C,) complex.

    Returns E_loc (B,) complex128 in Hartree and the number of psi evaluations made. `dense=True` takes the
    per-string path of `connections` (a reference; same values). `evaluate`, when given, replaces the chunked
    `log_psi` calls on the unique configurations (e.g. `nqs.trie.TrieEvaluator`).
    """
    conn = connections(h, bits, tol=tol, memory_bytes=memory_bytes, dense=dense)
    if evaluate is None:
        def evaluate(unique: torch.Tensor) -> torch.Tensor:
            return evaluate_unique(log_psi, unique, h.n_qubits, eval_chunk)
    return from_connections(h, bits, conn, evaluate)


def from_connections(h: Hamiltonian, bits: torch.Tensor, conn: Connections, evaluate: EvaluateFn) -> LocalEnergy:
    """E_loc (B,) = diagonal + sum over the pairs of `conn` of element * psi(x') / psi(x), with log psi of the
    batch and of the pairs' x' from one `evaluate` call on their distinct keys (U, W) int64."""
    batch = bits.shape[0]
    distinct, inverse = unique(torch.cat([pack(bits.to(h.device)), conn.keys]), h.n_qubits)
    log_values = evaluate(distinct).to(torch.complex128)
    inverse_x, inverse_c = inverse[:batch], inverse[batch:]
    log_x = log_values.index_select(0, inverse_x)
    e_loc = conn.diagonal.to(torch.complex128).clone()
    # psi(x') / psi(x) through amplitudes scaled by the batch's largest: one exp per unique configuration.
    # Where a scaled amplitude would under- or overflow, the ratios are taken pair by pair instead.
    shift = log_x.real.max() if batch else 0.0
    scaled_ok = batch and bool((log_x.real - shift).min() > -600) and bool((log_values.real - shift).max() < 600)
    if scaled_ok:
        psi = torch.exp(log_values - shift)
        numerator = torch.zeros_like(e_loc).index_add_(0, conn.sample, conn.element * psi.index_select(0, inverse_c))
        e_loc += numerator / psi.index_select(0, inverse_x)
    else:
        ratios = torch.exp(log_values.index_select(0, inverse_c) - log_x.index_select(0, conn.sample))
        e_loc.index_add_(0, conn.sample, conn.element.to(torch.complex128) * ratios)
    rows = tuple(getattr(evaluate, "rows_per_position", ()))
    return LocalEnergy(e_loc, int(distinct.shape[0]), int(conn.sample.shape[0]), conn.n_pairs_naive, rows)
