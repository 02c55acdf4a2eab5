"""Pattern tables: the grouped Pauli strings regrouped so that a matrix element is a table lookup.

For the strings s of one flip mask f (x' = x XOR f), the dense form evaluates
H_f(x) = sum_s c_s (-1)^{x . z_s} with one parity per string. Split every sign mask into its part on the
flipped qubits and its part elsewhere, z_s = (z_s & f) | (chain_f XOR d_s), where chain_f is the group's
bitwise-majority off-mask part (the Jordan-Wigner parity string) and d_s what a string adds to it. For molecular
Hamiltonians d_s is empty or one qubit r (the n_r of a single excitation's two-body terms), so

    H_f(x) = (-1)^{x . chain_f} * (T[f, p] + sum_r L[f, p, r] x_r),    p = x restricted to the flipped qubits,

with (-1)^{x_r} = 1 - 2 x_r. The pattern p also decides whether x' stays in the (N_alpha, N_beta) sector, so
one GEMM of x against W (weight 1 on the chain, 2^(shift + j) on the j-th flipped qubit) gives both the chain
parity (bit 0) and the table row (bits >= shift). The diagonal group (f = 0) has Z strings of weight <= 2:
H_0(x) = c0 + x^T Q x. The regrouping is exact algebra; Hamiltonians outside this form (a string with d_s of
weight > 1, a diagonal string of weight > 2, more than MAX_FLIPPED flipped qubits) get no tables and the
kernel uses the dense per-string path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_FLIPPED = 8  # table width 2^MAX_FLIPPED patterns per flip mask at most
FLOAT32_EXACT = 2**24
INT32_LIMIT = 2**31  # the kernel casts GEMM values (row << shift | parity) to int32: all must stay below this


def popcount(a: np.ndarray) -> np.ndarray:
    """Number of set bits of each int64 entry (two's complement for negative ones), as int64."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    return np.bitwise_count(a.view(np.uint64)).astype(np.int64)


def check_int32_rows(n_off: int, width: int, shift: int) -> None:
    """ValueError unless every GEMM value k * width * 2^shift + (p << shift) + parity fits in int32.

    The largest value is below n_off * width * 2^shift (n_off off-diagonal flip masks, `width` patterns each,
    chain parities < 2^shift); the local-energy kernel casts these values to int32.
    """
    span = n_off * (width << shift)
    if span > INT32_LIMIT:
        raise ValueError(f"pattern tables too large for int32 row values: {n_off} off-diagonal flip masks x "
                         f"{width} patterns x 2^{shift} = {span:,} > 2^31; this Hamiltonian needs the dense path "
                         f"(or int64 row values in nqs.local_energy)")


def _bit_index(a: np.ndarray) -> np.ndarray:
    """Index of the single set bit of each entry (entries must have popcount 1)."""
    return popcount(a - 1)


@dataclass(frozen=True)
class PatternTables:
    """Lookup tables of one Hamiltonian on one device (K' = K - 1 off-diagonal flip masks)."""

    shift: int  # chain parities are < 2^shift
    width: int  # patterns per flip mask, 2^(max flipped qubits)
    weights_t: torch.Tensor  # (n, K') float32/float64 GEMM weights
    bias: torch.Tensor  # (K',) float, k * width * 2^shift: row offset of mask k in the flat tables
    allowed: torch.Tensor  # (K' * width,) bool: x' in the sector and a non-zero element possible
    constant: torch.Tensor  # (K' * width,) T, Hartree
    linear_row: torch.Tensor  # (K' * width,) int64 row of linear_t (its last column is zero: no linear part)
    linear_t: torch.Tensor  # (n, R + 1) L rows as columns, Hartree
    diag_constant: float | complex  # c0, Hartree
    diag_quadratic: torch.Tensor  # (n, n) Q, Hartree

    @property
    def gemm_columns(self) -> int:
        """Columns of the kernel's GEMMs per sample: patterns (K'), linear rows (R + 1) and Q (n)."""
        return self.weights_t.shape[1] + self.linear_t.shape[1] + self.diag_quadratic.shape[0]


def build_pattern_tables(n_qubits: int, flip_masks: np.ndarray, term_group: np.ndarray, term_signs: np.ndarray,
                         coeffs: np.ndarray, device: torch.device, tol: float = 1e-14) -> PatternTables | None:
    """Tables of a grouped Pauli Hamiltonian (`coeffs` real or complex: the tables take their dtype), or None
    when it is not of the supported form. They do not depend on the sector: a pattern keeps x' in x's sector
    iff it moves as many alpha (beta) electrons in as out."""
    n = n_qubits
    dtype = coeffs.dtype
    n_masks = len(flip_masks)
    diag = term_group == 0
    if popcount(term_signs[diag]).max(initial=0) > 2:
        return None

    # diagonal: (-1)^{x_i} = 1 - 2 x_i, (-1)^{x_i + x_j} = 1 - 2 x_i - 2 x_j + 4 x_i x_j, x_i^2 = x_i
    quad = np.zeros((n, n), dtype)
    const = 0.0
    for z, c in zip(term_signs[diag], coeffs[diag]):
        bits = [i for i in range(n) if (int(z) >> i) & 1]
        const += c
        for i in bits:
            quad[i, i] -= 2 * c
        if len(bits) == 2:
            i, j = bits
            quad[i, j] += 2 * c
            quad[j, i] += 2 * c

    off = ~diag
    group, signs, cs = term_group[off] - 1, term_signs[off], coeffs[off]
    masks = flip_masks[1:]
    n_off = n_masks - 1
    n_flipped = popcount(masks)
    if n_off and n_flipped.max() > MAX_FLIPPED:
        return None
    width = 1 << int(n_flipped.max(initial=0))
    shift = max(1, int(n).bit_length())
    check_int32_rows(n_off, width, shift)

    # chain_f: the bitwise majority of each group's off-mask parts (the Jordan-Wigner parity string)
    outside = signs & ~masks[group]
    bit_counts = np.zeros((n_off, n), np.int64)
    np.add.at(bit_counts, group, (outside[:, None] >> np.arange(n)) & 1)
    group_size = np.bincount(group, minlength=n_off)
    chain = ((2 * bit_counts > group_size[:, None]).astype(np.int64) << np.arange(n)).sum(1)
    extra = outside ^ chain[group]
    if popcount(extra).max(initial=0) > 1:
        return None
    extra_bit = np.where(extra != 0, _bit_index(np.where(extra != 0, extra, 1)), -1)

    # x restricted to the flipped qubits, for every pattern p: bit j of p -> the j-th flipped qubit of the mask
    mask_bits = (masks[:, None] >> np.arange(n)) & 1  # (K', n)
    rank = np.cumsum(mask_bits, 1) - 1
    occupied = np.zeros((n_off, width), np.int64)
    for p in range(width):
        occupied[:, p] = ((mask_bits * ((p >> np.maximum(rank, 0)) & 1)) << np.arange(n)).sum(1)
    alpha = int(sum(1 << i for i in range(0, n, 2)))
    beta = int(sum(1 << i for i in range(1, n, 2)))
    in_range = np.arange(width)[None, :] < (1 << n_flipped)[:, None]
    keeps = ((2 * popcount(occupied & alpha) == popcount(masks & alpha)[:, None])
             & (2 * popcount(occupied & beta) == popcount(masks & beta)[:, None]) & in_range)

    sign = 1 - 2 * (popcount(occupied[group] & signs[:, None]) & 1)  # (S', width)
    constant = np.zeros((n_off, width), dtype)
    np.add.at(constant, group, cs[:, None] * sign)  # d_s = e_r also contributes its "1"
    lin = extra_bit >= 0
    g_lin, r_lin = group[lin], extra_bit[lin]
    val_lin = -2 * cs[lin][:, None] * sign[lin]  # (S_lin, width)
    s_idx, p_idx = np.nonzero(keeps[g_lin])
    flat = g_lin[s_idx] * width + p_idx
    rows, linear_row_of = np.unique(flat, return_inverse=True)
    linear = np.zeros((len(rows) + 1, n), dtype)  # last row: zeros
    np.add.at(linear, (linear_row_of, r_lin[s_idx]), val_lin[s_idx, p_idx])
    linear_row = np.full(n_off * width, len(rows), np.int64)
    linear_row[rows] = np.arange(len(rows))
    has_linear = np.zeros(n_off * width, bool)
    has_linear[rows] = np.abs(linear[:-1]).max(1, initial=0.0) > tol
    allowed = keeps.reshape(-1) & ((np.abs(constant.reshape(-1)) > tol) | has_linear)

    weights = (mask_bits << (shift + np.maximum(rank, 0))) * mask_bits + ((chain[:, None] >> np.arange(n)) & 1)
    bias = np.arange(n_off, dtype=np.float64) * (width << shift)
    exact32 = n_off * (width << shift) < FLOAT32_EXACT
    fdt = torch.float32 if exact32 else torch.float64
    t = lambda a, dt=None: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)
    return PatternTables(shift=shift, width=width, weights_t=t(weights.T, fdt), bias=t(bias, fdt),
                         allowed=t(allowed), constant=t(constant.reshape(-1)), linear_row=t(linear_row),
                         linear_t=t(linear.T), diag_constant=const.item() if hasattr(const, "item") else const,
                         diag_quadratic=t(quad))
