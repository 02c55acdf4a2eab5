"""The local-energy estimators a VMC step can use (`--local-energy`), each on the step's unique samples x:

* exact-dense      E_loc(x) = H_xx + sum_x' H_xx' psi(x')/psi(x) over every connected x' (`nqs.local_energy`),
                   log psi of the distinct x' by full teacher-forced passes, `eval_chunk` rows at a time.
* exact-trie       the same sum, log psi of the distinct x' through the prefix trie (`nqs.trie`): the
                   ansatz's incremental step once per distinct prefix (KV cache, recurrent state, MADE's units
                   of one degree per layer).
* exact            exact-trie for the Transformer and the RetNet from TRIE_MIN_QUBITS qubits, else exact-dense
                   (what `resolve` records; where the trie was measured to be slower, it is not taken).
* sampled          the sum restricted to x' in the step's unique sample set S (a key lookup in every chunk of
                   the connections, so only pairs inside S are held), with log
                   psi of S from the loss's own forward pass: no extra network evaluation. Biased: it drops
                   sum_{x' not in S} H_xx' psi(x')/psi(x), which is small only when S holds most of |psi|^2 and
                   its connections (late training, a wide cap); early in training or with a small cap it fails.
* semi-stochastic  every connection x' inside the step's sample set S summed exactly with log psi of S from the
                   loss's forward pass (no evaluation, as `sampled`); of the others, those whose weighted
                   element w_x |H_xx'| >= threshold (w_x the sample's count weight, sum over S = 1; Hartree)
                   summed exactly; of the rest (the set R_x, weight W_x = sum_R |H_xx'|) K = `draws` are drawn
                   with replacement with q_k = |H_k| / W_x and averaged as H_k r_k / (K q_k), r_k = psi(x'_k) /
                   psi(x): unbiased, E[.] = sum_R H_k r_k. Its variance per x is (1/K) (W_x sum_R |H_k| |r_k|^2 -
                   |sum_R H_k r_k|^2), zero when R_x has at most K members (then summed exactly); it enters the
                   energy as w_x^2 times that, so the threshold keeps the heavy samples' connections exact and
                   draws for the light ones. threshold = 0: exact. Only the x' outside S are evaluated, as
                   `exact` would (trie, or dense for MADE). In the SR phase of the N2 runs it evaluates
                   ~2,100-2,300 configurations a step where exact evaluates ~10,700-11,300 (docs/benchmarks.md).
* heat-bath        the semi-stochastic split (same threshold and draws) without enumerating the doubles: kept
                   doubles from integral tables sorted by |H|, draws by heat-bath sampling (`nqs.heat_bath`);
                   needs the integral-driven connections. Unbiased, exact at threshold 0; a different
                   estimator from semi-stochastic (its draws are over whole pair tails, not per connection).

`estimate` returns `nqs.local_energy.LocalEnergy`; its `n_evals` counts the network evaluations this call made
(with `rows_per_position` when they went through the trie), so the FLOP model counts what was executed.

Memory: every mode but `sampled` takes the samples in chunks of `selection_rows` (`LocalEnergyMode.chunk_bytes`,
`--local-energy-memory`), so a call holds one chunk's candidate pairs, not the batch's: H16's exact final at 12,097
samples 12.0 -> 3.3 GiB, H50's heat-bath final at 55,419 samples 13.5 -> 3.9 GiB (docs/benchmarks.md, session 20).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from nqs.errors import UserError
from nqs.excitations import IntegralHamiltonian
from nqs.heat_bath import select as heat_bath_select
from nqs.keys import index_of, pack, unique
from nqs.local_energy import Hamiltonian, LocalEnergy, connections, evaluate_unique, from_connections
from nqs.models.base import AutoregressiveAnsatz
from nqs.trie import TrieEvaluator

MODES = ("exact", "exact-dense", "exact-trie", "sampled", "semi-stochastic", "heat-bath")
SEMI_STOCHASTIC = ("semi-stochastic", "heat-bath")  # unbiased, with a threshold and draws
# `exact` takes the trie from here on: on LiH (12 qubits) and H2O (14) its local energy is 1.2-1.45x slower than
# full passes (the connected sets are most of a small sector and share few prefixes), on N2 (20) and CH4 (18)
# 1.9-2.3x faster (docs/benchmarks.md, "Local-energy modes"). MADE's full pass is a small MLP: on N2 its trie
# was no faster (docs/benchmarks.md, session 3), so `exact` keeps full passes for it.
TRIE_MIN_QUBITS = 16
TRIE_BY_DEFAULT = ("transformer", "retnet")


@dataclass(frozen=True)
class LocalEnergyMode:
    """Which estimator, with the semi-stochastic threshold on w_x |H_xx'| (Hartree) and draws per sample, and the
    bytes of candidate pairs one chunk of samples may hold (`selection_rows`; how, not what, it computes)."""

    name: str = "exact"
    threshold: float = 1e-5
    draws: int = 4
    chunk_bytes: int = 1 << 30

    def __post_init__(self):
        if self.name not in MODES:
            raise UserError(f"unknown local_energy {self.name!r}: choose one of {', '.join(MODES)}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise UserError(f"semi_threshold must be a finite number >= 0 (Hartree), got {self.threshold}")
        if self.draws < 1:
            raise UserError(f"semi_draws must be at least 1, got {self.draws}")
        if self.chunk_bytes < 1:
            raise UserError(f"the local energy's chunk must hold at least one byte, got {self.chunk_bytes}")

    def resolve(self, model: AutoregressiveAnsatz) -> "LocalEnergyMode":
        """`exact` made concrete for this model: exact-trie for TRIE_BY_DEFAULT ansätze on at least
        TRIE_MIN_QUBITS qubits, else exact-dense."""
        if self.name != "exact":
            return self
        trie = type(model).__name__.lower() in TRIE_BY_DEFAULT and 2 * model.sector.n_orb >= TRIE_MIN_QUBITS
        return replace(self, name="exact-trie" if trie else "exact-dense")

    @property
    def reuses_sample_log_psi(self) -> bool:
        """Whether the estimator takes log psi of the sample set from the loss's forward pass."""
        return self.name == "sampled" or self.name in SEMI_STOCHASTIC

    @property
    def estimator(self) -> str:
        """What the values estimate, for run records and fits: exact, sampled, or semi-stochastic(eps, K)."""
        if self.name.startswith("exact"):
            return "exact"
        if self.name in SEMI_STOCHASTIC:  # `weighted_`: the threshold is on w_x |H_xx'| (before: on |H_xx'|)
            return f"{self.name}(weighted_threshold={self.threshold:g},draws={self.draws})"
        return self.name


def _evaluator(model: AutoregressiveAnsatz, eval_chunk: int):
    """The exact path's evaluation of distinct keys (U, W): the trie or full passes, as `exact` resolves."""
    if LocalEnergyMode("exact").resolve(model).name == "exact-trie":
        return TrieEvaluator(model, eval_chunk)
    return _evaluator_dense(model, eval_chunk)


def _keyed(h: Hamiltonian, bits: torch.Tensor, log_psi: torch.Tensor | None):
    """A sample set (S', n) as distinct keys (S, W) and, when given, their log psi (S,) complex128 (else None)."""
    keys, inverse = unique(pack(bits.to(h.device)), h.n_qubits)
    if log_psi is None:
        return keys, None
    values = torch.zeros(keys.shape[0], dtype=torch.complex128, device=keys.device)
    values[inverse] = log_psi.detach().to(torch.complex128)
    return keys, values


def sampled_space(h: Hamiltonian, bits: torch.Tensor, log_psi_bits: torch.Tensor,
                  space_bits: torch.Tensor | None = None, space_log_psi: torch.Tensor | None = None) -> LocalEnergy:
    """E_loc over x' in the sample set only: bits (B, n) with log psi (B,) complex; the set S is `space_bits`
    (S, n) with `space_log_psi` (S,) (default: the batch itself). No network evaluation (n_evals = 0)."""
    space, values = _keyed(h, bits if space_bits is None else space_bits,
                           log_psi_bits if space_log_psi is None else space_log_psi)
    conn = connections(h, bits, keep=lambda keys: index_of(space, keys, h.n_qubits) >= 0)

    def lookup(distinct: torch.Tensor) -> torch.Tensor:  # every key is in the sample set (or the batch)
        return values.index_select(0, index_of(space, distinct, h.n_qubits))

    le = from_connections(h, bits, conn, lookup)
    return LocalEnergy(le.values, 0, le.n_connected, le.n_pairs_naive)


def _sample_set(h: Hamiltonian, distinct: torch.Tensor, inverse_x: torch.Tensor, log_psi_bits, space_bits,
                space_log_psi) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of the distinct keys (U, W) (the batch at rows `inverse_x` (B,), and its x'): which are in the sample set
    (U,) bool (the batch, or `space_bits` under DDP), which have a known log psi (U,) bool, and those values
    (U,) complex128 (zero elsewhere)."""
    log_values = torch.zeros(distinct.shape[0], dtype=torch.complex128, device=distinct.device)
    known = torch.zeros(distinct.shape[0], dtype=torch.bool, device=distinct.device)
    if space_bits is None:  # the set is this batch
        in_set = known.clone()
        in_set[inverse_x] = True
        if log_psi_bits is not None:
            known[inverse_x] = True
            log_values[inverse_x] = log_psi_bits.detach().to(torch.complex128)
        return in_set, known, log_values
    space, space_values = _keyed(h, space_bits, space_log_psi)
    row = index_of(space, distinct, h.n_qubits)
    in_set = row >= 0
    if space_values is not None:
        known = in_set
        log_values[in_set] = space_values.index_select(0, row[in_set])
    return in_set, known, log_values


def _candidates(h: Hamiltonian) -> int:
    """Connections a sample can have before screening: the sector's singles and doubles, or the flip masks."""
    return h.n_candidates if isinstance(h, IntegralHamiltonian) else h.n_flip_masks - 1


def selection_rows(h: Hamiltonian, heat_bath: bool, chunk_bytes: int) -> int:
    """Samples per chunk of a local-energy call, so that one chunk's candidates fit in `chunk_bytes`: every
    connection at ~(8 W + 128) B (its key, sample and element, and the deduplication's and the sum's temporaries;
    W words a key), or for heat-bath the singles at ~(8 W + 48) B and ~80 B per occupied pair (its doubles are
    never enumerated). The exact modes evaluate chunk by chunk (`_exact`); the semi-stochastic ones keep only the
    selected pairs (about the threshold-kept and `draws` per sample) and evaluate their x' together."""
    words = -(-h.n_qubits // 64)
    if heat_bath:
        n_a, n_b, n_orb = h.n_alpha, h.n_beta, h.n_orb
        pairs = n_a * (n_a - 1) // 2 + n_b * (n_b - 1) // 2 + n_a * n_b
        singles = n_a * (n_orb - n_a) + n_b * (n_orb - n_b)
        per_row = 80 * pairs + (8 * words + 48) * singles
    else:
        per_row = (8 * words + 128) * _candidates(h)
    return max(1, chunk_bytes // max(per_row, 1))


class _Remembered:
    """`evaluate` that keeps the keys it evaluated and their log psi, up to `capacity` keys, so that the chunks
    of one exact call evaluate a configuration they share once; `n_evals` counts what was evaluated."""

    def __init__(self, evaluate, n_qubits: int, capacity: int):
        self.evaluate, self.n_qubits, self.capacity, self.n_evals = evaluate, n_qubits, capacity, 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    @property
    def rows_per_position(self) -> tuple[int, ...]:
        return tuple(getattr(self.evaluate, "rows_per_position", ()))

    def __call__(self, keys: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(keys.shape[0], dtype=torch.complex128, device=keys.device)
        hit = torch.zeros(keys.shape[0], dtype=torch.bool, device=keys.device)
        if self.keys is not None:
            row = index_of(self.keys, keys, self.n_qubits)
            hit = row >= 0
            out[hit] = self.values.index_select(0, row[hit])
        miss = (~hit).nonzero().squeeze(1)
        if miss.numel():
            new_keys = keys.index_select(0, miss)
            out[miss] = self.evaluate(new_keys).to(torch.complex128)
            self.n_evals += int(miss.numel())
            held = 0 if self.keys is None else self.keys.shape[0]
            if held + miss.numel() <= self.capacity:
                self.keys = new_keys if self.keys is None else torch.cat([self.keys, new_keys])
                self.values = out[miss] if self.values is None else torch.cat([self.values, out[miss]])
        return out


def _exact(h: Hamiltonian, bits: torch.Tensor, evaluate, chunk_bytes: int) -> LocalEnergy:
    """The exact local energy `selection_rows` samples at a time, so the pairs held never exceed one chunk's.
    The chunks share one memory of the configurations evaluated (up to chunk_bytes at ~(8 W + 48) B a key, its
    lookup included), so a configuration two chunks share is evaluated once while the memory lasts."""
    rows = selection_rows(h, False, chunk_bytes)
    if bits.shape[0] <= rows:
        return from_connections(h, bits, connections(h, bits), evaluate)
    words = -(-h.n_qubits // 64)
    remembered = _Remembered(evaluate, h.n_qubits, chunk_bytes // (8 * words + 48))
    parts = [from_connections(h, b, connections(h, b), remembered) for b in torch.split(bits, rows)]
    return LocalEnergy(torch.cat([p.values for p in parts]), remembered.n_evals,
                       sum(p.n_connected for p in parts), sum(p.n_pairs_naive for p in parts),
                       remembered.rows_per_position)


def _in_chunks(select, bits: torch.Tensor, weights: torch.Tensor, rows: int):
    """`select(bits_c, weights_c)` -> (diagonal, sample, keys, element, weight) over chunks of `rows` samples,
    concatenated with the sample indices offset to the whole batch."""
    parts = []
    for start in range(0, bits.shape[0], rows):
        diagonal, sample, keys, element, weight = select(bits[start:start + rows], weights[start:start + rows])
        parts.append((diagonal, sample + start, keys, element, weight))
    return tuple(torch.cat(p) for p in zip(*parts))


def _semi_stochastic_pairs(h: Hamiltonian, bits: torch.Tensor, weights: torch.Tensor, threshold: float, draws: int,
                           generator: torch.Generator, space_keys: torch.Tensor):
    """One chunk's selection (`semi_stochastic`): diagonal (B,), and the pairs' sample (P,), keys (P, W),
    element (P,) and weight (P,) (1 when exact, W_x / (K |H_k|) when drawn); `space_keys` (S, W) the sample set."""
    batch = bits.shape[0]
    conn = connections(h, bits)
    magnitude = conn.element.abs().to(torch.float64)
    big = (index_of(space_keys, conn.keys, h.n_qubits) >= 0) | (
        weights.to(magnitude.device, torch.float64).index_select(0, conn.sample) * magnitude >= threshold)
    small = (~big).nonzero().squeeze(1)
    s_sample = conn.sample.index_select(0, small)
    order = torch.sort(s_sample, stable=True).indices
    small, s_sample = small.index_select(0, order), s_sample.index_select(0, order)
    s_abs = magnitude.index_select(0, small)
    count = torch.bincount(s_sample, minlength=batch)
    weight = torch.zeros(batch, dtype=torch.float64, device=s_abs.device).index_add_(0, s_sample, s_abs)
    exact_rest = small[count.index_select(0, s_sample) <= draws]  # R_x small enough: summed exactly
    drawn_rows = (count > draws).nonzero().squeeze(1)  # (D,)
    pairs = [big.nonzero().squeeze(1), exact_rest]  # indices into conn, and their weights (1 when exact)
    scales = [torch.ones(pairs[0].shape[0] + exact_rest.shape[0], dtype=torch.float64, device=s_abs.device)]
    if drawn_rows.numel():
        cum = torch.cumsum(s_abs, 0)  # (R,) over the small pairs grouped by sample
        start = torch.cumsum(count, 0) - count  # (B,) first small pair of each sample
        first, m = start.index_select(0, drawn_rows), count.index_select(0, drawn_rows)
        base = cum.index_select(0, first) - s_abs.index_select(0, first)
        u = torch.rand(drawn_rows.shape[0], draws, dtype=torch.float64, device=s_abs.device, generator=generator)
        target = base[:, None] + u * weight.index_select(0, drawn_rows)[:, None]
        pick = torch.searchsorted(cum, target.reshape(-1), right=True).view_as(target)
        pick = torch.minimum(torch.maximum(pick, first[:, None]), (first + m - 1)[:, None]).reshape(-1)
        pairs.append(small.index_select(0, pick))
        scales.append(weight.index_select(0, drawn_rows).repeat_interleave(draws)
                      / (draws * s_abs.index_select(0, pick)))
    pair, scale = torch.cat(pairs), torch.cat(scales)
    return (conn.diagonal, conn.sample.index_select(0, pair), conn.keys.index_select(0, pair),
            conn.element.index_select(0, pair), scale)


def semi_stochastic(h: Hamiltonian, bits: torch.Tensor, evaluate, threshold: float, draws: int,
                    generator: torch.Generator, weights: torch.Tensor | None = None,
                    log_psi_bits: torch.Tensor | None = None, space_bits: torch.Tensor | None = None,
                    space_log_psi: torch.Tensor | None = None, chunk_bytes: int = 1 << 30) -> LocalEnergy:
    """E_loc (B,) of bits (B, n) (module docstring): pairs inside the sample set and those with
    w_x |H_xx'| >= threshold exactly, `draws` per x from the rest ∝ |H_xx'|. `weights` (B,): the samples'
    count weights normalised over the whole sample set (default 1/B each); `log_psi_bits` (B,) (and
    `space_bits`, `space_log_psi` when `bits` is one rank's share of the set): log psi of the sample set, which
    is then not evaluated (without it the batch is evaluated and counted). `evaluate` maps distinct keys (U, W)
    to log psi; n_evals counts what was evaluated. The pairs are selected `selection_rows` samples at a time (so
    the connections are never all held), then their x' deduplicated and evaluated together."""
    if weights is None:
        weights = torch.full((bits.shape[0],), 1.0 / max(bits.shape[0], 1), dtype=torch.float64)
    space_keys = unique(pack((bits if space_bits is None else space_bits).to(h.device)), h.n_qubits)[0]
    select = lambda b, w: _semi_stochastic_pairs(h, b, w, threshold, draws, generator, space_keys)  # noqa: E731
    diagonal, sample, keys, element, weight = _in_chunks(select, bits, weights, selection_rows(h, False, chunk_bytes))
    naive = bits.shape[0] * _candidates(h)
    return _sum_selected(h, bits, diagonal, sample, keys, element, weight, evaluate, log_psi_bits, space_bits,
                         space_log_psi, naive)


def heat_bath(h: Hamiltonian, bits: torch.Tensor, evaluate, threshold: float, draws: int,
              generator: torch.Generator, weights: torch.Tensor | None = None,
              log_psi_bits: torch.Tensor | None = None, space_bits: torch.Tensor | None = None,
              space_log_psi: torch.Tensor | None = None, chunk_bytes: int = 1 << 30) -> LocalEnergy:
    """E_loc (B,) of bits (B, n) with the pairs of `nqs.heat_bath.select` (the doubles from sorted integrals,
    never enumerated), `selection_rows` samples a call; arguments as `semi_stochastic`'s. Needs an
    `IntegralHamiltonian`."""
    if not isinstance(h, IntegralHamiltonian):
        raise UserError("--local-energy heat-bath reads the integrals: use --connections integrals (or auto)")
    if weights is None:
        weights = torch.full((bits.shape[0],), 1.0 / max(bits.shape[0], 1), dtype=torch.float64)
    space = bits if space_bits is None else space_bits
    select = lambda b, w: heat_bath_select(h, b, w, threshold, draws, generator, space)  # noqa: E731
    diagonal, sample, keys, element, weight = _in_chunks(select, bits, weights, selection_rows(h, True, chunk_bytes))
    return _sum_selected(h, bits, diagonal, sample, keys, element, weight, evaluate, log_psi_bits, space_bits,
                         space_log_psi, bits.shape[0] * h.n_candidates)


def _sum_selected(h: Hamiltonian, bits: torch.Tensor, diagonal, sample, keys, element, weight, evaluate,
                  log_psi_bits, space_bits, space_log_psi, n_pairs_naive: int) -> LocalEnergy:
    """E_loc(x) = H_xx + sum over the selected pairs (sample (P,), keys (P, W), element (P,), weight (P,)) of
    weight H_xx' psi(x') / psi(x); log psi of the sample set taken as known when given, the rest evaluated."""
    batch = bits.shape[0]
    distinct, inverse = unique(torch.cat([pack(bits.to(h.device)), keys]), h.n_qubits)  # the batch and its x'
    inverse_x, inverse_c = inverse[:batch], inverse[batch:]
    _, known, log_values = _sample_set(h, distinct, inverse_x, log_psi_bits, space_bits, space_log_psi)
    need = (~known).nonzero().squeeze(1)
    if need.numel():
        log_values[need] = evaluate(distinct.index_select(0, need)).to(torch.complex128)
    log_x = log_values.index_select(0, inverse_x)
    ratio = torch.exp(log_values.index_select(0, inverse_c) - log_x.index_select(0, sample))
    term = element.to(torch.complex128) * weight.to(torch.complex128) * ratio
    e_loc = diagonal.to(torch.complex128).clone().index_add_(0, sample, term)
    rows = tuple(getattr(evaluate, "rows_per_position", ()))
    return LocalEnergy(e_loc, int(need.numel()), int(sample.numel()), n_pairs_naive, rows)


def estimate(model: AutoregressiveAnsatz, h: Hamiltonian, bits: torch.Tensor, mode: LocalEnergyMode,
             generator: torch.Generator | None = None, eval_chunk: int = 65536,
             log_psi_bits: torch.Tensor | None = None, space_bits: torch.Tensor | None = None,
             space_log_psi: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> LocalEnergy:
    """E_loc (B,) of bits (B, n) under `mode` (resolved here). `sampled` needs `log_psi_bits` (B,) (and the
    whole sample set `space_bits`, `space_log_psi` when `bits` is one rank's share); `semi-stochastic` needs
    `generator` (on the model's device), as does `heat-bath`, and takes the samples' count `weights` (B,)
    (default 1/B) and, when given, the same log psi of the sample set."""
    mode = mode.resolve(model)
    with torch.no_grad():
        if mode.name == "exact-dense":
            return _exact(h, bits, _evaluator_dense(model, eval_chunk), mode.chunk_bytes)
        if mode.name == "exact-trie":
            return _exact(h, bits, TrieEvaluator(model, eval_chunk), mode.chunk_bytes)
        if mode.name == "sampled":
            if log_psi_bits is None:
                raise ValueError("the sampled local energy needs log psi of the samples")
            return sampled_space(h, bits, log_psi_bits, space_bits, space_log_psi)
        if generator is None:
            raise ValueError("the semi-stochastic local energy needs a generator")
        form = heat_bath if mode.name == "heat-bath" else semi_stochastic
        return form(h, bits, _evaluator(model, eval_chunk), mode.threshold, mode.draws, generator,
                    weights, log_psi_bits, space_bits, space_log_psi, mode.chunk_bytes)


def _evaluator_dense(model: AutoregressiveAnsatz, eval_chunk: int):
    return lambda unique: evaluate_unique(model.log_psi, unique, model.sector.n_qubits, eval_chunk)
