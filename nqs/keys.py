"""Exact integer keys of configurations of any length: W = ceil(n / 63) int64 words per configuration.

Bit i of a configuration x (OpenFermion order, `nqs.hilbert`) is bit i % 63 of word i // 63, so keys have shape
(..., W) int64. The sign bit of every word stays clear: words are non-negative, and the signed order of torch's
sorts is the order of the words' bit patterns. Keys are compared lexicographically, word 0 first; any fixed total
order serves, since keys are only deduplicated and looked up, never interpreted.

W = 1 (n <= 63) takes the one-word fast path throughout: a 1-D sort, `torch.unique` and `torch.searchsorted` on
the single column (int32 when n < 32: sorting int32 keys is ~1.5x faster). W > 1 sorts by stable passes from the
last word to the first and finds duplicates by comparing neighbours; lookups sort the table and the queries
together. Everything is tensor code that runs unchanged on CPU and CUDA.
"""
from __future__ import annotations

import torch

BITS_PER_WORD = 63


def n_words(n: int) -> int:
    """Words W of an n-qubit key (at least 1)."""
    return max(1, -(-n // BITS_PER_WORD))


def _layout(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Word (n,) and bit (n,) of every qubit."""
    i = torch.arange(n, device=device)
    return torch.div(i, BITS_PER_WORD, rounding_mode="floor"), i % BITS_PER_WORD


def pack(bits: torch.Tensor) -> torch.Tensor:
    """(..., n) {0,1} -> (..., W) int64 keys, bit i of x in bit i % 63 of word i // 63."""
    n = bits.shape[-1]
    b = bits.to(torch.int64)
    if n <= BITS_PER_WORD:
        return (b * (torch.ones(n, dtype=torch.int64, device=bits.device) << torch.arange(n, device=bits.device))
                ).sum(-1, keepdim=True)
    W = n_words(n)
    b = torch.nn.functional.pad(b, (0, W * BITS_PER_WORD - n))
    weights = torch.ones(BITS_PER_WORD, dtype=torch.int64, device=bits.device) << torch.arange(
        BITS_PER_WORD, device=bits.device)
    return (b.reshape(*b.shape[:-1], W, BITS_PER_WORD) * weights).sum(-1)


def unpack(keys: torch.Tensor, n: int, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """(..., W) int64 keys -> (..., n) bits of `dtype`."""
    word, bit = _layout(n, keys.device)
    return ((keys.index_select(-1, word) >> bit) & 1).to(dtype)


def flip(keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Keys (P, W) with the bits at `positions` (P, m) int64 flipped (distinct positions within a row)."""
    word = torch.div(positions, BITS_PER_WORD, rounding_mode="floor")
    value = torch.ones_like(positions) << (positions % BITS_PER_WORD)
    if keys.shape[1] == 1:
        return keys ^ value.sum(1, keepdim=True)  # distinct bits: the sum is their OR
    return keys ^ torch.zeros_like(keys).scatter_add_(1, word, value)


def _narrow(column: torch.Tensor, n: int | None) -> torch.Tensor:
    return column.to(torch.int32) if n is not None and n < 32 else column


def lexsort(keys: torch.Tensor) -> torch.Tensor:
    """Permutation (P,) that sorts keys (P, W) lexicographically, word 0 most significant (stable)."""
    order = torch.sort(keys[:, -1], stable=True).indices
    for w in range(keys.shape[1] - 2, -1, -1):
        order = order.index_select(0, torch.sort(keys[:, w].index_select(0, order), stable=True).indices)
    return order


def unique(keys: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct keys (U, W) in sorted order and the inverse (P,) int64 with keys == unique[inverse].

    `n`, the qubit count, lets the one-word path sort int32 when the keys fit."""
    if keys.shape[1] == 1:
        values, inverse = torch.unique(_narrow(keys[:, 0], n), return_inverse=True)
        return values.to(torch.int64).unsqueeze(1), inverse
    P = keys.shape[0]
    order = lexsort(keys)
    ordered = keys.index_select(0, order)
    new = torch.ones(P, dtype=torch.bool, device=keys.device)
    if P > 1:
        new[1:] = (ordered[1:] != ordered[:-1]).any(1)
    group = torch.cumsum(new, 0) - 1
    inverse = torch.empty_like(group).scatter_(0, order, group)
    return ordered[new], inverse


def sum_by_key(keys: torch.Tensor, values: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct keys (D, W) in sorted order, the sum of `values` (P,) over each) for keys (P, W)."""
    distinct, inverse = unique(keys, n)
    return distinct, torch.zeros(distinct.shape[0], dtype=values.dtype, device=values.device).index_add_(
        0, inverse, values)


class KeyIndex:
    """A table (S, W) of distinct keys sorted once, for many lookups: `index(queries)` gives the row (Q,) int64 of
    each query (Q, W) in the table, -1 where it is absent. `n`, the qubit count, lets one word sort as int32."""

    def __init__(self, table: torch.Tensor, n: int | None = None):
        self.table, self.n, S = table, n, table.shape[0]
        self.joint = False  # two table keys share a hash: every lookup sorts table and queries jointly
        if S == 0:
            return
        if table.shape[1] == 1:
            self.sorted, self.order = torch.sort(_narrow(table[:, 0], n))
            return
        self.sorted, self.order = torch.sort(_fold(table))
        self.joint = S > 1 and bool((self.sorted[1:] == self.sorted[:-1]).any())

    def __call__(self, queries: torch.Tensor) -> torch.Tensor:
        table, S, Q = self.table, self.table.shape[0], queries.shape[0]
        if S == 0:
            return torch.full((Q,), -1, dtype=torch.int64, device=queries.device)
        if self.joint:
            _, inverse = unique(torch.cat([table, queries]))
            slot = torch.full((S + Q,), -1, dtype=torch.int64, device=queries.device)
            slot.scatter_(0, inverse[:S], torch.arange(S, device=queries.device))
            return slot.index_select(0, inverse[S:])
        if table.shape[1] == 1:
            q = _narrow(queries[:, 0], self.n)
            pos = torch.searchsorted(self.sorted, q).clamp(max=S - 1)
            row = self.order.index_select(0, pos)
            return torch.where(self.sorted.index_select(0, pos) == q, row, torch.full_like(row, -1))
        row = self.order.index_select(0, torch.searchsorted(self.sorted, _fold(queries)).clamp(max=S - 1))
        return torch.where((table.index_select(0, row) == queries).all(1), row, torch.full_like(row, -1))


def index_of(table: torch.Tensor, queries: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Row (Q,) int64 of each query (Q, W) in `table` (S, W) of distinct keys; -1 where it is absent (one lookup:
    `KeyIndex` keeps the sorted table for many)."""
    return KeyIndex(table, n)(queries)


def _fold(keys: torch.Tensor) -> torch.Tensor:
    """One int64 hash (P,) of keys (P, W): words mixed by odd multipliers (wrapping), for sorted lookups whose
    hits are then checked on every word."""
    h = keys[:, 0].clone()
    for w in range(1, keys.shape[1]):
        h = h * -7046029254386353131 + keys[:, w]  # 0x9E3779B97F4A7C15 as a signed int64
    return h
