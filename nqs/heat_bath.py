"""Heat-bath connections: which x' a semi-stochastic local energy sums, found from sorted integrals without
enumerating the double excitations (`--local-energy heat-bath`; the screening of heat-bath CI, Holmes, Tubman &
Umrigar, J. Chem. Theory Comput. 12, 3674 (2016), also used by PyNQS to sample excitations).

A double x' = a+_a a+_b a_j a_i x has |H_x'x| = |(AI|BJ) - [same spin] (AJ|BI)|, a function of (i, j, a, b)
alone. `HeatBathTables` lists, for every pair of qubits that can be occupied together (same spin i < j, or i
alpha and j beta), its targets (a, b) (same spin a < b, or a alpha and b beta; a, b not in {i, j}) with
|value| > tol, sorted by |value| descending, with their running sum. For samples x of count weight w_x (summing
to 1 over the sample set S) and a threshold eps (Hartree), `select` returns the pairs (x, x') to sum, in three
parts:

* in S     x' in the sample set, exactly: the singles by lookup, the doubles by overlap (<x, y> = N - 2);
* kept     x' outside S with w_x |H_xx'| >= eps, exactly: of the singles (enumerated, N_a V_a + N_b V_b per
           sample; their elements depend on x) those above eps, and of each occupied pair's targets the prefix
           with w_x |value| >= eps (one searchsorted per pair), less the targets with a or b occupied;
* drawn    the rest R_x, K = `draws` per sample: the singles below eps and every pair's tail beyond its prefix,
           total mass Z_x = sum |H| (tails counted whole, targets with a or b occupied included); k is drawn
           with probability |H_k| / Z_x (a single from the enumerated ones, or a pair by its tail's mass and a
           target within it) and weighted Z_x / (K |H_k|); a draw that is no connection of x (a or b occupied)
           or lies in S is dropped. Unbiased: the expectation is the sum over R_x of H_k psi(x'_k) / psi(x).

threshold = 0 keeps every connection (exact). Work per sample: the singles, N (N - 1) / 2 pair lookups, the kept
prefix and K draws; never the E doubles (H32: ~95,000 candidates per sample). Memory: the tables hold at most
2 C(n,2) C(n-2,2) + n^2 (n-1)^2 targets (n spatial orbitals), 40 bytes each; after the screening (|value| > 1e-12)
H32 holds 709,024 (27 MB, built in 0.5 s) and H50 4.39e6 (167 MB, 4.6 s). A call holds its kept and drawn pairs,
the singles of its samples, and blocks of at most `span` prefix targets.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from nqs import excitations
from nqs.excitations import IntegralHamiltonian, double_sign_odd, double_value
from nqs.keys import flip, index_of, pack, unique


class HeatBathTables:
    """The double excitations' targets per occupied qubit pair, sorted by |value| descending (module docstring).

    pair_id (n, n) int64: the pair index of qubits (i, j), -1 where they do not form one; offset (P + 1,): the
    pair's targets are entries offset[p]:offset[p + 1]; target_a, target_b (E,) int64 qubits; value (E,) float64
    <ab|ij> - [same spin] <ab|ji> (Hartree); cumulative (E + 1,) the running sum of |value| over all entries;
    key (E,) = p + 1 - |value| / scale_p (ascending within a pair), with scale (P,) slightly above the pair's
    largest |value|, so that the targets above a cut c are searchsorted(key, p + 1 - c / scale_p) - offset[p]."""

    def __init__(self, h: IntegralHamiltonian, tol: float = 1e-12):
        n, dev = h.n_orb, h.device
        g = h.eri_flat.view(n, n, n, n).cpu().numpy()  # (AI|BJ)
        x = g.transpose(1, 3, 0, 2)  # x[P, Q, A, B] = (AP|BQ)
        p_same, q_same = np.triu_indices(n, 1)
        same = x[p_same, q_same] - x[q_same, p_same]  # (C(n,2), n, n): <AB|PQ> - <AB|QP>
        def hit(rows, grid):  # (R, n, n) bool: the target orbital (A or B, as `grid`) is the row's P or Q
            return rows[:, None, None] == grid[None]

        ab = np.arange(n)
        a_grid, b_grid = np.broadcast_to(ab[:, None], (n, n)), np.broadcast_to(ab[None, :], (n, n))
        same[hit(p_same, a_grid) | hit(q_same, a_grid) | hit(p_same, b_grid) | hit(q_same, b_grid)] = 0.0
        same[:, np.tril_indices(n)[0], np.tril_indices(n)[1]] = 0.0  # targets a < b only
        p_mix, q_mix = (m.reshape(-1) for m in np.meshgrid(ab, ab, indexing="ij"))
        mixed = x[p_mix, q_mix].copy()  # (n^2, n, n): <AB|PQ>, P alpha, Q beta
        mixed[hit(p_mix, a_grid) | hit(q_mix, b_grid)] = 0.0
        # qubits: alpha of orbital P is 2P, beta 2P + 1; rows: alpha-alpha pairs, beta-beta, alpha-beta
        rows = [(2 * p_same, 2 * q_same, same, 0, 0), (2 * p_same + 1, 2 * q_same + 1, same, 1, 1),
                (2 * p_mix, 2 * q_mix + 1, mixed, 0, 1)]
        pair_id = np.full((2 * n, 2 * n), -1, dtype=np.int64)
        lengths, tga, tgb, values = [], [], [], []
        first = 0
        for qi, qj, block, spin_a, spin_b in rows:
            flat = block.reshape(block.shape[0], -1)
            order = np.argsort(-np.abs(flat), axis=1, kind="stable")
            sorted_values = np.take_along_axis(flat, order, 1)
            keep = np.abs(sorted_values) > tol
            pair_id[qi, qj] = first + np.arange(block.shape[0])
            first += block.shape[0]
            lengths.append(keep.sum(1))
            values.append(sorted_values[keep])
            tga.append(2 * (order[keep] // n) + spin_a)
            tgb.append(2 * (order[keep] % n) + spin_b)
        length, value = np.concatenate(lengths), np.concatenate(values)
        offset = np.concatenate([[0], np.cumsum(length)])
        pair_of = np.repeat(np.arange(length.shape[0]), length)
        scale = np.zeros(length.shape[0])
        scale[length > 0] = np.abs(value[offset[:-1][length > 0]]) * (1 + 1e-9)
        t = lambda a, dtype=torch.float64: torch.as_tensor(a, dtype=dtype, device=dev)  # noqa: E731
        self.pair_id, self.offset = t(pair_id, torch.int64), t(offset, torch.int64)
        self.target_a, self.target_b = t(np.concatenate(tga), torch.int64), t(np.concatenate(tgb), torch.int64)
        self.value, self.scale = t(value), t(scale)
        self.cumulative = t(np.concatenate([[0.0], np.cumsum(np.abs(value))]))
        self.key = t(pair_of + 1 - np.abs(value) / np.where(scale > 0, scale, 1.0)[pair_of])

    @staticmethod
    def of(h: IntegralHamiltonian) -> "HeatBathTables":
        """The tables of `h`, built once and kept on it."""
        if getattr(h, "_heat_bath_tables", None) is None:
            h._heat_bath_tables = HeatBathTables(h)
        return h._heat_bath_tables

    def prefix(self, pair: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
        """Targets of each pair (...,) with |value| >= cut (..., Hartree; 0: all, inf: none), a prefix count."""
        scale = self.scale.index_select(0, pair.reshape(-1)).view_as(pair)
        ratio = torch.where(scale > 0, cut / scale, torch.full_like(cut, float("inf")))
        query = pair + 1 - torch.clamp(ratio, max=1.0)
        return torch.searchsorted(self.key, query.reshape(-1), right=True).view_as(pair) - self.offset[pair]


def _occupied_pairs(bits: torch.Tensor, n_alpha: int, n_beta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The qubit pairs (i, j) (B, O) each of x's occupied pairs: alpha i < j, beta i < j, then i alpha, j beta."""
    spins = (bits[:, 0::2], bits[:, 1::2])
    occ = [2 * torch.sort(s.to(torch.int64), dim=1, descending=True, stable=True).indices[:, :m] + k
           for k, (s, m) in enumerate(zip(spins, (n_alpha, n_beta)))]
    slots = [list(itertools.combinations(range(n_alpha), 2)), list(itertools.combinations(range(n_beta), 2)),
             list(itertools.product(range(n_alpha), range(n_beta)))]
    i, j = [], []
    for (left, right), pairs in zip(((0, 0), (1, 1), (0, 1)), slots):
        if pairs:
            s = torch.tensor(pairs, dtype=torch.int64, device=bits.device)
            i.append(occ[left][:, s[:, 0]])
            j.append(occ[right][:, s[:, 1]])
    return torch.cat(i, 1), torch.cat(j, 1)


def _doubles(tables, bits, counts, keys_x, sample, entry, i, j):
    """Connections of the targets `entry` (P,) of pairs (i, j) (P,) of samples (P,): (mask of those with a and
    b empty, keys (P, W), element (P,), |value| (P,))."""
    a, b = tables.target_a.index_select(0, entry), tables.target_b.index_select(0, entry)
    x = bits.index_select(0, sample)
    empty = (x.gather(1, a[:, None]) == 0).squeeze(1) & (x.gather(1, b[:, None]) == 0).squeeze(1)
    c = counts.index_select(0, sample)
    pick = lambda q: c.gather(1, q[:, None]).squeeze(1)  # noqa: E731
    value = tables.value.index_select(0, entry)
    odd = double_sign_odd(i, j, a, b, pick(i) + pick(j), pick(a) + pick(b))
    keys = flip(keys_x.index_select(0, sample), torch.stack([i, j, a, b], 1))
    return empty, keys, torch.where(odd, -value, value), value.abs()


def _in_set_doubles(h, bits, counts, space_bits, tol: float = 1e-12, chunk: int = 2048):
    """The doubles x' of each x that lie in the sample set (overlap <x, y> = N - 2): sample, keys, element."""
    n_el = h.n_alpha + h.n_beta
    space, space_keys = space_bits.to(torch.float32), pack(space_bits)
    out = [], [], []
    for start in range(0, bits.shape[0], chunk):
        x = bits[start:start + chunk].to(torch.float32)
        b, s = (x @ space.T == n_el - 2).nonzero().unbind(1)
        xb, ys = bits[start:start + chunk].index_select(0, b).bool(), space_bits.index_select(0, s).bool()
        removed = (xb & ~ys).nonzero()[:, 1].view(-1, 2)  # ascending qubits
        added = (ys & ~xb).nonzero()[:, 1].view(-1, 2)
        same = (removed[:, 0] & 1) == (removed[:, 1] & 1)
        # a mixed pair is (alpha, beta): the even qubit first
        swap_r, swap_a = ~same & (removed[:, 0] & 1).bool(), ~same & (added[:, 0] & 1).bool()
        i, j = torch.where(swap_r, removed[:, 1], removed[:, 0]), torch.where(swap_r, removed[:, 0], removed[:, 1])
        a, bq = torch.where(swap_a, added[:, 1], added[:, 0]), torch.where(swap_a, added[:, 0], added[:, 1])
        c = counts.index_select(0, b + start)
        pick = lambda q: c.gather(1, q[:, None]).squeeze(1)  # noqa: E731
        value = double_value(h, same, i, j, a, bq)
        odd = double_sign_odd(i, j, a, bq, pick(i) + pick(j), pick(a) + pick(bq))
        keep = value.abs() > tol  # as the enumerated connections are screened
        for part, v in zip(out, (b + start, space_keys.index_select(0, s), torch.where(odd, -value, value))):
            part.append(v[keep])
    return tuple(torch.cat(p) for p in out)


def select(h: IntegralHamiltonian, bits: torch.Tensor, weights: torch.Tensor, threshold: float, draws: int,
           generator: torch.Generator, space_bits: torch.Tensor, span: int = 1 << 21):
    """The pairs a heat-bath local energy of bits (B, n) sums (module docstring), with the sample set
    `space_bits` (S, n) (bits itself, or the whole set when bits is one rank's share) and the samples' count
    weights (B,) over it: diagonal (B,), sample (P,), keys (P, W), element (P,) and weight (P,) (1 for exact
    pairs, Z_x / (K |H|) for drawn ones); E_loc(x) = H_xx + sum_pairs weight element psi(x') / psi(x)."""
    dev, n = h.device, h.n_qubits
    tables = HeatBathTables.of(h)
    bits, space_bits = bits.to(dev), space_bits.to(dev)
    B = bits.shape[0]
    keys_x, space_keys = pack(bits), unique(pack(space_bits), n)[0]
    counts = torch.zeros(B, n + 1, dtype=torch.int64, device=dev)
    torch.cumsum(bits.to(torch.int64), 1, out=counts[:, 1:])
    w = weights.to(dev, torch.float64)
    cut = torch.zeros_like(w) if threshold == 0 else torch.where(w > 0, threshold / w, float("inf"))
    in_set = lambda k: index_of(space_keys, k, n) >= 0  # noqa: E731
    ones = lambda m: torch.ones(m, dtype=torch.float64, device=dev)  # noqa: E731
    # singles: in S or above the cut kept, the rest pooled for the draws
    diagonal, s_sample, s_keys, s_elem = excitations.connections(h, bits, singles_only=True)
    keep = in_set(s_keys) | (s_elem.abs() >= cut.index_select(0, s_sample))
    parts = [(s_sample[keep], s_keys[keep], s_elem[keep], ones(int(keep.sum())))]
    pool = (~keep).nonzero().squeeze(1)
    pool = pool[torch.sort(s_sample[pool], stable=True).indices]  # grouped by sample
    pool_sample, pool_abs = s_sample[pool], s_elem[pool].abs()
    single_mass = torch.zeros(B, dtype=torch.float64, device=dev).index_add_(0, pool_sample, pool_abs)
    # doubles in S
    d_sample, d_keys, d_elem = _in_set_doubles(h, bits, counts, space_bits)
    parts.append((d_sample, d_keys, d_elem, ones(d_sample.shape[0])))
    # doubles kept: each occupied pair's prefix above the cut
    i, j = _occupied_pairs(bits, h.n_alpha, h.n_beta)  # (B, O)
    pair = tables.pair_id[i, j]
    count = tables.prefix(pair, cut[:, None].expand_as(pair).contiguous())
    start = tables.offset.index_select(0, pair.reshape(-1)).view_as(pair)
    per_sample = torch.cumsum(count.sum(1), 0)  # (B,) running sum of the prefix targets
    lo = 0
    while lo < B:  # samples lo:hi, at most `span` targets (or one sample)
        limit = (int(per_sample[lo - 1]) if lo else 0) + span
        hi = max(lo + 1, int(torch.searchsorted(per_sample, torch.tensor([limit], device=dev), right=True)))
        c = count[lo:hi].reshape(-1)
        row = torch.repeat_interleave(torch.arange(c.shape[0], device=dev), c)
        rank = torch.arange(row.shape[0], device=dev) - (torch.cumsum(c, 0) - c).index_select(0, row)
        entry = start[lo:hi].reshape(-1).index_select(0, row) + rank
        sample = lo + torch.div(row, pair.shape[1], rounding_mode="floor")
        empty, keys, elem, _ = _doubles(tables, bits, counts, keys_x, sample, entry,
                                        i[lo:hi].reshape(-1).index_select(0, row),
                                        j[lo:hi].reshape(-1).index_select(0, row))
        mask = empty & ~in_set(keys)
        parts.append((sample[mask], keys[mask], elem[mask], ones(int(mask.sum()))))
        lo = hi
    # the draws
    tail_start = start + count
    tail_end = tables.offset.index_select(0, pair.reshape(-1) + 1).view_as(pair)
    tail_mass = tables.cumulative[tail_end] - tables.cumulative[tail_start]
    total = single_mass + tail_mass.sum(1)
    rows = (total > 0).nonzero().squeeze(1)
    if rows.numel():
        parts += _draw(h, tables, bits, counts, keys_x, rows, total, single_mass, pool_sample, pool_abs,
                       s_keys[pool], s_elem[pool], i, j, pair, tail_start, tail_end, tail_mass, draws, generator,
                       in_set)
    sample, keys, element, weight = (torch.cat(p) for p in zip(*parts))
    return diagonal, sample, keys, element, weight


def _draw(h, tables, bits, counts, keys_x, rows, total, single_mass, pool_sample, pool_abs, pool_keys, pool_elem,
          i, j, pair, tail_start, tail_end, tail_mass, draws, generator, in_set):
    """K draws for each sample in `rows` (D,) with probability |H_k| / Z_x over its pooled singles and its pairs'
    tails; the parts (sample, keys, element, weight Z_x / (K |H_k|)) of those that are connections outside S."""
    dev, B = bits.device, bits.shape[0]
    z = total.index_select(0, rows)
    u = torch.rand(rows.shape[0], draws, dtype=torch.float64, device=dev, generator=generator) * z[:, None]
    single = u < single_mass.index_select(0, rows)[:, None]
    parts = []
    d_row, d_k = single.nonzero().unbind(1)
    if d_row.numel():  # a pooled single, by the running sum over the pool (grouped by sample)
        cum = torch.cumsum(pool_abs, 0)
        n_pool = torch.bincount(pool_sample, minlength=B)
        first = (torch.cumsum(n_pool, 0) - n_pool).index_select(0, rows.index_select(0, d_row))
        last = first + n_pool.index_select(0, rows.index_select(0, d_row)) - 1
        base = cum.index_select(0, first) - pool_abs.index_select(0, first)
        k = torch.searchsorted(cum, base + u[d_row, d_k], right=True)
        k = torch.minimum(torch.maximum(k, first), last)
        scale = z.index_select(0, d_row) / (draws * pool_abs.index_select(0, k))
        keys = pool_keys.index_select(0, k)
        mask = ~in_set(keys)
        parts.append((pool_sample.index_select(0, k)[mask], keys[mask], pool_elem.index_select(0, k)[mask],
                      scale[mask]))
    d_row, d_k = (~single).nonzero().unbind(1)
    if d_row.numel():  # a pair by its tail's mass, then a target within the tail
        x_row = rows.index_select(0, d_row)
        v = u[d_row, d_k] - single_mass.index_select(0, x_row)
        cum_pairs = torch.cumsum(tail_mass.index_select(0, x_row), 1)  # (R, O)
        col = torch.searchsorted(cum_pairs, v[:, None], right=True).squeeze(1).clamp(max=pair.shape[1] - 1)
        before = cum_pairs.gather(1, col[:, None]).squeeze(1) - tail_mass[x_row, col]
        lo, hi = tail_start[x_row, col], tail_end[x_row, col]
        t = tables.cumulative.index_select(0, lo) + (v - before)
        entry = torch.searchsorted(tables.cumulative, t, right=True) - 1
        entry = torch.minimum(torch.maximum(entry, lo), hi - 1)
        ok = lo < hi
        x_row, entry, col, d_row = x_row[ok], entry[ok], col[ok], d_row[ok]
        empty, keys, elem, size = _doubles(tables, bits, counts, keys_x, x_row, entry, i[x_row, col],
                                           j[x_row, col])
        mask = empty & ~in_set(keys)
        scale = z.index_select(0, d_row) / (draws * size)
        parts.append((x_row[mask], keys[mask], elem[mask], scale[mask]))
    return parts
