"""The (N_alpha, N_beta) sector of the Jordan-Wigner Fock space, and the encodings of a configuration.

A configuration is an occupation string x in {0,1}^n over n = 2*n_orb spin-orbitals in OpenFermion's
interleaved order: qubit 2p is alpha of spatial orbital p, qubit 2p+1 is beta. Three encodings are used:

* bits   (..., n)      uint8 / float, x_i in {0,1};
* packed (...,)        int64, bit i of the integer is x_i (n <= MAX_QUBITS = 62): the one-word encoding of the
                       Pauli tables' flip and sign masks (`nqs.operator`);
* keys   (..., W)      int64, W = ceil(n / 63) words, any n: the keys of deduplication and lookup (`nqs.keys`);
* tokens (..., n_orb)  int64, one token per spatial orbital, t_p = x_{2p} + 2*x_{2p+1}
                       (0 empty, 1 alpha, 2 beta, 3 alpha+beta): the autoregressive alphabet.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from nqs import keys

MAX_QUBITS = 62  # the one-word packed encoding (and so the Pauli tables); configurations have no limit


@dataclass(frozen=True)
class Sector:
    """Fixed electron numbers (n_alpha, n_beta) over n_orb spatial orbitals."""

    n_orb: int
    n_alpha: int
    n_beta: int

    def __post_init__(self):
        if not (0 <= self.n_alpha <= self.n_orb and 0 <= self.n_beta <= self.n_orb):
            raise ValueError(f"sector ({self.n_alpha},{self.n_beta}) impossible with {self.n_orb} orbitals")

    @property
    def n_qubits(self) -> int:
        return 2 * self.n_orb

    @property
    def n_electrons(self) -> int:
        return self.n_alpha + self.n_beta

    @property
    def size(self) -> int:
        """C(n_orb, N_alpha) * C(n_orb, N_beta): the number of determinants."""
        return math.comb(self.n_orb, self.n_alpha) * math.comb(self.n_orb, self.n_beta)

    def enumerate_bits(self) -> torch.Tensor:
        """All configurations of the sector, (size, n) uint8, in a fixed (lexicographic) order."""
        alpha = _strings(self.n_orb, self.n_alpha)
        beta = _strings(self.n_orb, self.n_beta)
        out = np.zeros((len(alpha), len(beta), self.n_qubits), dtype=np.uint8)
        out[:, :, 0::2] = alpha[:, None, :]
        out[:, :, 1::2] = beta[None, :, :]
        return torch.from_numpy(out.reshape(-1, self.n_qubits))

    def contains(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, n) bits -> (B,) bool: the configuration has exactly (N_alpha, N_beta) electrons."""
        b = bits.to(torch.int64)
        return (b[:, 0::2].sum(-1) == self.n_alpha) & (b[:, 1::2].sum(-1) == self.n_beta)


def _strings(n_orb: int, n_occ: int) -> np.ndarray:
    """Occupation strings of n_occ electrons in n_orb orbitals, (C(n_orb, n_occ), n_orb) uint8."""
    combos = list(itertools.combinations(range(n_orb), n_occ))
    out = np.zeros((len(combos), n_orb), dtype=np.uint8)
    for row, occ in enumerate(combos):
        out[row, list(occ)] = 1
    return out


def from_pyscf_strings(alpha: np.ndarray, beta: np.ndarray, n_orb: int) -> tuple[torch.Tensor, np.ndarray]:
    """Determinants given as PySCF occupation strings (alpha (K,), beta (K,) int64, bit p = orbital p occupied)
    as (bits (K, 2 n_orb) uint8, sign (K,) of ±1.0). PySCF orders a determinant as all alpha creators, then all
    beta; the interleaved order (2p alpha, 2p+1 beta) differs by (-1)^{#(alpha p, beta q) with p > q}."""
    orbital = np.arange(n_orb, dtype=np.int64)
    a = ((np.asarray(alpha, dtype=np.int64)[:, None] >> orbital) & 1).astype(np.int64)
    b = ((np.asarray(beta, dtype=np.int64)[:, None] >> orbital) & 1).astype(np.int64)
    alpha_above = np.cumsum(a[:, ::-1], axis=1)[:, ::-1] - a  # alpha electrons at p > q
    crossings = (alpha_above * b).sum(axis=1)
    bits = np.zeros((a.shape[0], 2 * n_orb), dtype=np.uint8)
    bits[:, 0::2], bits[:, 1::2] = a, b
    return torch.from_numpy(bits), 1.0 - 2.0 * (crossings % 2)


def _check_qubits(n: int) -> None:
    """ValueError when n qubits do not fit the packed int64 encoding (bit i = x_i, sign bit unused)."""
    if n > MAX_QUBITS:
        raise ValueError(f"{n} qubits exceed the packed int64 encoding's limit of {MAX_QUBITS} "
                         f"({n // 2} spatial orbitals > {MAX_QUBITS // 2}): choose a smaller basis or active space")


def pack(bits: torch.Tensor) -> torch.Tensor:
    """(..., n) {0,1} -> (...,) int64 with bit i = x_i: the one-word key of `nqs.keys` (n <= MAX_QUBITS)."""
    _check_qubits(bits.shape[-1])
    return keys.pack(bits)[..., 0]


def unpack(packed: torch.Tensor, n: int, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """(...,) int64 -> (..., n) bits of `dtype` (`nqs.keys.unpack` of one word)."""
    _check_qubits(n)
    return keys.unpack(packed.unsqueeze(-1), n, dtype)


def bits_to_tokens(bits: torch.Tensor) -> torch.Tensor:
    """(..., 2*n_orb) bits -> (..., n_orb) int64 tokens t_p = x_{2p} + 2 x_{2p+1}."""
    b = bits.to(torch.int64)
    return b[..., 0::2] + 2 * b[..., 1::2]


def tokens_to_bits(tokens: torch.Tensor) -> torch.Tensor:
    """(..., n_orb) tokens -> (..., 2*n_orb) uint8 bits."""
    t = tokens.to(torch.int64)
    return torch.stack([t & 1, (t >> 1) & 1], dim=-1).flatten(-2).to(torch.uint8)
