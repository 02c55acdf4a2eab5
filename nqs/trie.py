"""log psi of a set of configurations evaluated as a prefix trie, with the ansatz's incremental `step`.

An autoregressive log p(x) = sum_j log p(t_j | t_<j) walks x's tokens; configurations that share a prefix share
every conditional up to it. Sorted in token order, the configurations' distinct prefixes of length j are the
rows whose first difference from the row before lies before j: with d_i = that position (-1 for the first row,
n_orb for a duplicate) the trie's nodes at level j are {i : d_i < j}, the node of row i is the last such row at
or before it (rank: cumsum(d < j) - 1), and a node's parent at level j - 1 is found the same way. Level by
level, as the sampler does, the parents' KV caches / recurrent states are gathered to the nodes
(`reorder_state`), one `step` gives the nodes' conditionals, and every row gathers its token's.

The last position is not evaluated: its token is fixed by the electron counts (one allowed token, conditional
log 1 = 0 exactly, as in the full pass). The phase network runs on every configuration (it is not
autoregressive). Rows are processed in contiguous chunks of the sorted order (`chunk` rows each) to bound the
caches' memory; prefixes shared across a chunk boundary are evaluated once per chunk. Same code on CPU and CUDA.

Shapes: bits (U, n) -> log psi (U,) complex; `rows_per_position` (n_orb - 1,) the nodes evaluated per level,
which `nqs.flops.sampling_flops` turns into FLOPs (the same step as the sampler's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nqs.hilbert import bits_to_tokens
from nqs.keys import unpack
from nqs.models.base import TOKEN_ALPHA, TOKEN_BETA, AutoregressiveAnsatz

def token_order(tokens: torch.Tensor) -> torch.Tensor:
    """Permutation (U,) that sorts tokens (U, T) lexicographically (base-4 keys, 31 tokens per int64 key)."""
    U, T = tokens.shape
    order = torch.arange(U, device=tokens.device)
    for stop in range(T, 0, -31):  # least significant key first, stable sorts
        part = tokens[:, max(0, stop - 31):stop]
        weights = 4 ** torch.arange(part.shape[1] - 1, -1, -1, device=tokens.device, dtype=torch.int64)
        key = (part * weights).sum(1)
        order = order.index_select(0, torch.sort(key.index_select(0, order), stable=True).indices)
    return order


def first_difference(tokens: torch.Tensor) -> torch.Tensor:
    """d (U,) int64 for sorted tokens (U, T): first position where row i differs from row i - 1; -1 for row 0,
    T where the rows are equal."""
    U, T = tokens.shape
    d = torch.full((U,), -1, dtype=torch.int64, device=tokens.device)
    if U > 1:
        neq = tokens[1:] != tokens[:-1]
        first = neq.to(torch.int8).argmax(1)
        d[1:] = torch.where(neq.any(1), first, torch.full_like(first, T))
    return d


@dataclass(frozen=True)
class TrieResult:
    log_psi: torch.Tensor  # (U,) complex128, in the input order
    rows_per_position: tuple[int, ...]  # trie nodes evaluated at each position 0 .. n_orb - 2 (all chunks)


def _log_prob_sorted(model: AutoregressiveAnsatz, tokens: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """log p (U,) float64 of sorted tokens (U, T) through the trie, and the nodes per level."""
    U, T = tokens.shape
    device = tokens.device
    d = first_difference(tokens)
    da = torch.tensor(TOKEN_ALPHA, device=device)[tokens]
    db = torch.tensor(TOKEN_BETA, device=device)[tokens]
    alpha_before, beta_before = torch.cumsum(da, 1) - da, torch.cumsum(db, 1) - db
    log_p = torch.zeros(U, dtype=torch.float64, device=device)
    state, rank_prev, rows = model.init_state(1, device), None, []
    for j in range(T - 1):  # position T - 1: one allowed token, log 1 = 0
        is_node = d < j
        rank = torch.cumsum(is_node, 0) - 1  # (U,) node of each row at this level
        nodes = is_node.nonzero().squeeze(1)  # (r_j,) ascending
        rows.append(int(nodes.shape[0]))
        if j == 0:
            prev = None
        else:
            state = model.reorder_state(state, rank_prev.index_select(0, nodes))
            prev = tokens[nodes, j - 1]
        cond, state = model.step(prev, j, state, alpha_before[nodes, j], beta_before[nodes, j])  # (r_j, 4)
        log_p += cond.to(torch.float64)[rank, tokens[:, j]]
        rank_prev = rank
    return log_p, rows


@torch.no_grad()
def trie_log_psi(model: AutoregressiveAnsatz, bits: torch.Tensor, chunk: int = 65536) -> TrieResult:
    """Complex log psi of (U, n) bits (duplicates allowed) through the prefix trie, `chunk` sorted rows at a time.

    Equals `model.log_psi(bits)` up to round-off (float64 accumulation of the float32/64 conditionals)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    U = bits.shape[0]
    T = model.sector.n_orb
    if U == 0:
        return TrieResult(torch.zeros(0, dtype=torch.complex128, device=bits.device), (0,) * max(T - 1, 0))
    tokens = bits_to_tokens(bits)
    order = token_order(tokens)
    sorted_tokens = tokens.index_select(0, order)
    log_p = torch.empty(U, dtype=torch.float64, device=bits.device)
    totals = [0] * max(T - 1, 0)
    for start in range(0, U, chunk):
        lp, rows = _log_prob_sorted(model, sorted_tokens[start:start + chunk])
        log_p[start:start + chunk] = lp
        totals = [a + b for a, b in zip(totals, rows)]
    out = torch.empty_like(log_p)
    out[order] = log_p
    phi = model.phase_net(bits.to(next(model.parameters()).dtype)).to(torch.float64)
    return TrieResult(torch.complex(0.5 * out, phi), tuple(totals))


class TrieEvaluator:
    """`evaluate` for `nqs.local_energy.from_connections`: distinct keys (U, W) int64 (`nqs.keys`) -> log psi
    (U,) complex128 through `trie_log_psi`; `rows_per_position` sums the trie nodes of every call (FLOPs)."""

    def __init__(self, model: AutoregressiveAnsatz, chunk: int = 65536):
        self.model, self.chunk = model, chunk
        self.rows_per_position: tuple[int, ...] = ()

    def __call__(self, keys: torch.Tensor) -> torch.Tensor:
        result = trie_log_psi(self.model, unpack(keys, self.model.sector.n_qubits), self.chunk)
        old = self.rows_per_position or (0,) * len(result.rows_per_position)
        self.rows_per_position = tuple(a + b for a, b in zip(old, result.rows_per_position))
        return result.log_psi
