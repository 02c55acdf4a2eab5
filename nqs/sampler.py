"""Exact batch autoregressive sampling with unique prefixes and multinomial counts, and sample-count schedules.

Starting from one empty prefix carrying all N_s samples, each position splits every prefix's count among its
4 children by a multinomial draw (Barrett et al. 2022), so N_s can be astronomically large (1e12) at the cost
of the unique prefixes only. Counts are float64: integers are exact up to 2^53 ~ 9e15. `add_tail` adds to a
capped sample what its cap dropped, from an independent second draw (a stratified sample).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nqs import keys
from nqs.errors import UserError
from nqs.hilbert import tokens_to_bits
from nqs.models.base import TOKEN_ALPHA, TOKEN_BETA, AutoregressiveAnsatz

MAX_EXACT_COUNT = 2.0 ** 53
TAIL_MASS_MIN = 1e-12  # a dropped mass below this is float64 round-off of a sample that kept everything


@dataclass(frozen=True)
class TailDraw:
    """How `add_tail` stratified a sample: rows [0, n_head) are the capped sample K (the head, mass head_mass),
    the rest the configurations outside K of an independent draw of n_samples. The counts are p(x)·scale on
    the head and n_x·scale/n_samples on the tail, so counts / scale are unbiased weights of sum_x p(x) f(x)."""

    n_head: int
    head_mass: float
    n_samples: float
    scale: float


@dataclass(frozen=True)
class Samples:
    """Unique configurations `bits` (U, n) uint8 with their multinomial `counts` (U,) float64.

    `n_requested` is the N_s asked for; `kept_mass` = sum of the model's p(x) over the returned configurations
    (float64): below 1 by the mass of configurations the unique cap dropped or the draw never reached."""

    bits: torch.Tensor
    counts: torch.Tensor
    rows_per_position: tuple[int, ...] = ()  # prefixes the model processed at each position (FLOP counting)
    n_requested: float = float("nan")
    kept_mass: float = float("nan")
    log_prob: torch.Tensor | None = None  # (U,) float64 the model's exact log p(x) of each configuration
    tail: TailDraw | None = None  # set by add_tail: the rows past tail.n_head come from a second draw

    @property
    def n_samples(self) -> float:
        """Non-unique sample count (N_s, less whatever the `max_unique` cap dropped)."""
        return float(self.counts.sum())

    @property
    def n_unique(self) -> int:
        return self.bits.shape[0]


def multinomial_counts(counts: torch.Tensor, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Split integer counts (U,) float64 among K outcomes with probs (U, K): -> (U, K) float64, rows sum to counts.

    A chain of binomials: c_k ~ Bin(remaining, p_k / sum_{i>=k} p_i). Conditional probabilities use suffix sums,
    so a zero probability gives exactly 0 and the last outcome with p > 0 gets q = 1 exactly (all the rest).
    """
    probs = probs.to(torch.float64)
    suffix = probs.flip(-1).cumsum(-1).flip(-1)
    q = torch.where(suffix > 0, probs / suffix, 0.0).clamp(0.0, 1.0)
    out, remaining = torch.zeros_like(probs), counts.to(torch.float64).clone()
    for k in range(probs.shape[-1]):
        c = torch.binomial(remaining, q[:, k].contiguous(), generator=generator)
        out[:, k] = c
        remaining = remaining - c
    return out


def most_frequent(counts: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (k,) of the k largest counts (U,), ties broken by the lower index, returned in ascending order."""
    return torch.sort(counts, descending=True, stable=True).indices[:k].sort().values


def _check_n_samples(n_samples: float) -> float:
    n = float(n_samples)
    if not (1 <= n <= MAX_EXACT_COUNT and n == math.floor(n)):
        raise UserError(f"n_samples must be an integer in [1, 2^53], got {n_samples}")
    return n


@torch.no_grad()
def sample(model: AutoregressiveAnsatz, n_samples: float, max_unique: int,
           generator: torch.Generator) -> Samples:
    """Draw N_s = n_samples configurations of `model.sector`, returned as unique bits with counts.

    At each position the children of every prefix get multinomial counts, zero-count children are dropped,
    and if more than `max_unique` remain the most frequent are kept (ties: the lexicographically first
    prefix), as Barrett et al. and the reference codes do. The samples come out in lexicographic token order.
    `generator` must live on the model's device; the draw is deterministic given its state.
    """
    n_samples = _check_n_samples(n_samples)
    if max_unique < 1:
        raise UserError(f"max_unique must be >= 1, got {max_unique}")
    sector = model.sector
    device = next(model.parameters()).device
    da = torch.tensor(TOKEN_ALPHA, device=device)
    db = torch.tensor(TOKEN_BETA, device=device)
    counts = torch.tensor([n_samples], dtype=torch.float64, device=device)
    tokens = torch.zeros(1, 0, dtype=torch.int64, device=device)
    alpha = torch.zeros(1, dtype=torch.int64, device=device)
    beta = torch.zeros(1, dtype=torch.int64, device=device)
    log_prob = torch.zeros(1, dtype=torch.float64, device=device)  # log p of each prefix
    state, prev, rows = model.init_state(1, device), None, []
    for j in range(sector.n_orb):
        rows.append(int(counts.shape[0]))
        log_p, state = model.step(prev, j, state, alpha, beta)  # (U, 4)
        child = multinomial_counts(counts, log_p.exp(), generator)  # (U, 4)
        parent, tok = torch.nonzero(child > 0, as_tuple=True)  # row-major: lexicographic order kept
        c = child[parent, tok]
        if c.numel() > max_unique:
            keep = most_frequent(c, max_unique)
            parent, tok, c = parent[keep], tok[keep], c[keep]
        tokens = torch.cat([tokens[parent], tok.unsqueeze(-1)], dim=-1)
        log_prob = log_prob[parent] + log_p[parent, tok].to(torch.float64)
        alpha, beta = alpha[parent] + da[tok], beta[parent] + db[tok]
        state, prev, counts = model.reorder_state(state, parent), tok, c
    return Samples(bits=tokens_to_bits(tokens), counts=counts, rows_per_position=tuple(rows),
                   n_requested=n_samples, kept_mass=float(log_prob.exp().sum()), log_prob=log_prob)


@torch.no_grad()
def add_tail(model: AutoregressiveAnsatz, head: Samples, n_tail: int, generator: torch.Generator) -> Samples:
    """`head` (a capped sample K of mass P_K) with the part of the distribution it dropped: the configurations
    outside K of a second draw of S = n_tail / (1 - P_K) samples (about n_tail draws land outside K),
    independent of the one that chose K. Returns `head` itself when n_tail is 0 or K holds all the mass (within
    TAIL_MASS_MIN). The draw is uncapped in effect: its unique count is at most |K| plus its draws outside K
    (a prefix with a count has a configuration with that count below it), and its cap is set far above that.
    See `nqs.vmc.stratified_stats` for the estimator; counts as in `TailDraw`."""
    p_tail = 1.0 - head.kept_mass
    if n_tail <= 0 or p_tail <= TAIL_MASS_MIN:
        return head
    n_samples = float(min(math.ceil(n_tail / p_tail), MAX_EXACT_COUNT))
    draw = sample(model, n_samples, head.n_unique + 4 * n_tail + 1000, generator)
    if draw.n_samples < n_samples:  # the draw put over 4 n_tail + 1000 configurations outside K
        raise RuntimeError(f"the tail draw was capped ({draw.n_samples:.0f} of {n_samples:.0f} kept)")
    outside = keys.index_of(keys.pack(head.bits), keys.pack(draw.bits), head.bits.shape[1]) < 0
    scale = head.n_requested
    log_prob = torch.cat([head.log_prob, draw.log_prob[outside]])
    counts = torch.cat([head.log_prob.exp() * scale, draw.counts[outside] * (scale / n_samples)])
    rows = tuple(a + b for a, b in zip(head.rows_per_position, draw.rows_per_position))
    return Samples(bits=torch.cat([head.bits, draw.bits[outside]]), counts=counts, rows_per_position=rows,
                   n_requested=head.n_requested, kept_mass=float(log_prob.exp().sum()), log_prob=log_prob,
                   tail=TailDraw(head.n_unique, head.kept_mass, n_samples, scale))


SCHEDULES = ("constant", "geometric", "adaptive")


@dataclass(frozen=True)
class SampleSchedule:
    """How many non-unique samples N_s each training step draws.

    * constant:  N_s = n_samples.
    * geometric: N_s grows geometrically from n_start to n_end, reached at `reach_fraction` of the steps,
                 then stays at n_end (the reference code: 1e2 -> 1e12 at 90%).
    * adaptive:  start at n_samples; after each step `update(n_s, n_unique)` multiplies N_s by `factor` when
                 the unique count fell below unique_window[0] and divides it when it rose above
                 unique_window[1], clamped to [n_start, n_end].
    Values are rounded to integers (the multinomial split needs integer counts).
    """

    kind: str = "constant"
    n_samples: float = 1e5
    n_start: float = 1e2
    n_end: float = 1e12
    reach_fraction: float = 0.9
    unique_window: tuple[int, int] = (1000, 2000)
    factor: float = 2.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise UserError(f"unknown sample schedule {self.kind!r}: choose one of {', '.join(SCHEDULES)}")
        if not (1 <= self.n_start <= self.n_end <= MAX_EXACT_COUNT and 1 <= self.n_samples <= MAX_EXACT_COUNT):
            raise UserError("sample schedule needs 1 <= n_start <= n_end <= 2^53 and 1 <= n_samples <= 2^53")
        if not (0 < self.reach_fraction <= 1 and self.factor > 1):
            raise UserError("sample schedule needs 0 < reach_fraction <= 1 and factor > 1")
        if not (0 <= self.unique_window[0] <= self.unique_window[1]):
            raise UserError(f"unique_window must be (lo, hi) with 0 <= lo <= hi, got {self.unique_window}")

    def n_samples_at(self, step: int, total_steps: int) -> float:
        """N_s at `step` (0-based) of `total_steps`; for `adaptive` the starting value n_samples."""
        if self.kind == "geometric":
            frac = min(step / max(self.reach_fraction * total_steps, 1e-300), 1.0)
            return float(round(self.n_start * (self.n_end / self.n_start) ** frac))
        return float(round(self.n_samples))

    def update(self, n_samples: float, n_unique: int) -> float:
        """Next N_s after a step drew `n_unique` unique samples with `n_samples` (identity unless adaptive)."""
        if self.kind != "adaptive":
            return n_samples
        lo, hi = self.unique_window
        if n_unique < lo:
            n_samples *= self.factor
        elif n_unique > hi:
            n_samples /= self.factor
        return float(round(min(max(n_samples, self.n_start), self.n_end)))
