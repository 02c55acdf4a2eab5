"""The autoregressive ansatz contract shared by MADE, Transformer and RetNet.

|psi(x)|^2 = prod_j p(t_j | t_<j) over spatial-orbital tokens t (see `nqs.hilbert`), each conditional
masked so that exactly (N_alpha, N_beta) electrons are placed; psi(x) = sqrt(p(x)) * exp(i phi(x)) with
phi from a separate phase network. Subclasses implement the modulus network through three methods:

* `logits(tokens)`          teacher-forced scores for every position, (B, n_orb) -> (B, n_orb, 4);
* `init_state(batch)`       the cache / recurrent state before position 0;
* `step_logits(prev, j, s)` scores of position j given the token at j-1 (None at j = 0) and the state,
                            returning (scores (B, 4), new state); `reorder_state(s, index)` selects rows.
"""
from __future__ import annotations

import abc
import functools
from typing import Any

import torch
from torch import nn

from nqs.hilbert import Sector, bits_to_tokens

# electrons added by each token: 0 empty, 1 alpha, 2 beta, 3 alpha+beta
TOKEN_ALPHA = (0, 1, 0, 1)
TOKEN_BETA = (0, 0, 1, 1)
N_TOKENS = 4


def allowed_tokens(sector: Sector, position: int, alpha_used: torch.Tensor, beta_used: torch.Tensor) -> torch.Tensor:
    """Tokens at `position` that keep the sector reachable: (B,), (B,) electron counts so far -> (B, 4) bool.

    After placing token t, a' = a + da(t) must satisfy a' <= N_alpha and N_alpha - a' <= orbitals left
    (and the same for beta).
    """
    dev = alpha_used.device
    da = torch.tensor(TOKEN_ALPHA, device=dev)
    db = torch.tensor(TOKEN_BETA, device=dev)
    left = sector.n_orb - position - 1
    a = alpha_used.unsqueeze(-1) + da
    b = beta_used.unsqueeze(-1) + db
    return (a <= sector.n_alpha) & (sector.n_alpha - a <= left) & (b <= sector.n_beta) & (sector.n_beta - b <= left)


def allowed_tokens_all(sector: Sector, tokens: torch.Tensor) -> torch.Tensor:
    """Mask for every position of teacher-forced tokens: (B, n_orb) -> (B, n_orb, 4) bool."""
    dev = tokens.device
    alpha = torch.tensor(TOKEN_ALPHA, device=dev)[tokens]
    beta = torch.tensor(TOKEN_BETA, device=dev)[tokens]
    alpha_before = torch.cumsum(alpha, -1) - alpha
    beta_before = torch.cumsum(beta, -1) - beta
    positions = torch.arange(sector.n_orb, device=dev)
    da = torch.tensor(TOKEN_ALPHA, device=dev)
    db = torch.tensor(TOKEN_BETA, device=dev)
    left = (sector.n_orb - positions - 1).unsqueeze(-1)
    a = alpha_before.unsqueeze(-1) + da
    b = beta_before.unsqueeze(-1) + db
    return (a <= sector.n_alpha) & (sector.n_alpha - a <= left) & (b <= sector.n_beta) & (sector.n_beta - b <= left)


def reachable_counts(sector: Sector, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (alpha, beta) electron count a valid prefix of `position` tokens can hold: two (S,) int64 tensors.

    A prefix is valid when the sector can still be completed: a <= N_alpha and N_alpha - a <= orbitals left (the
    same for beta); the two spins are independent, so the states are the product of the two ranges."""
    left = sector.n_orb - position

    def counts(n: int) -> range:
        return range(max(0, n - left), min(n, position) + 1)

    pairs = [(a, b) for a in counts(sector.n_alpha) for b in counts(sector.n_beta)]
    states = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)
    return states[:, 0], states[:, 1]


def token_occurs(sector: Sector) -> torch.Tensor:
    """(n_orb, 4) bool: token t is at orbital p in some configuration of the sector."""
    return _token_occurs(sector).clone()


def live_scores(sector: Sector) -> torch.Tensor:
    """(n_orb, 4) bool: the score of token t at position j can change log p(x) of some configuration.

    It can when t is allowed after some valid prefix that leaves at least two tokens allowed; where only one
    token is allowed its conditional is log 1 = 0 whatever the scores (always so at the last position, whose
    token the electron counts fix)."""
    return _live_scores(sector).clone()


@functools.lru_cache(maxsize=64)
def _token_occurs(sector: Sector) -> torch.Tensor:
    return torch.stack([allowed_tokens(sector, p, *reachable_counts(sector, p)).any(0) for p in range(sector.n_orb)])


@functools.lru_cache(maxsize=64)
def _live_scores(sector: Sector) -> torch.Tensor:
    rows = []
    for j in range(sector.n_orb):
        allowed = allowed_tokens(sector, j, *reachable_counts(sector, j))  # (states, 4)
        rows.append((allowed & (allowed.sum(-1, keepdim=True) >= 2)).any(0))
    return torch.stack(rows)


def unused_sequence_params(sector: Sector, d_model: int) -> int:
    """Parameters of a causal sequence model (Transformer, RetNet) that no log p(x) depends on: rows of the
    position embedding whose position and all later ones have no live score (position n_orb - 1 at least: a
    causal model's state there reaches only its own, fixed, conditional), token-embedding rows of tokens that
    are never an input before a live position, and output-head rows (d_model weights + 1 bias) of tokens
    whose score is never live."""
    live = live_scores(sector)
    live_from = live.flip(0).any(-1).cumsum(0).flip(0) > 0  # (n_orb,): some live score at this position or later
    dead_pos = int((~live_from).sum())
    occurs = token_occurs(sector)[:-1] & live_from[1:, None]  # token at p feeds position p + 1
    dead_tok = int((~occurs.any(0)).sum()) + (0 if bool(live_from[0]) else 1)  # the four tokens, and START
    dead_head = int((~live.any(0)).sum())
    return (dead_pos + dead_tok) * d_model + dead_head * (d_model + 1)


def masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last axis with forbidden entries at -inf (their probability exactly 0)."""
    return torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


class AutoregressiveAnsatz(nn.Module, abc.ABC):
    """Modulus network (subclass) plus a phase network `phase_net` mapping bits (B, n) -> phi (B,)."""

    def __init__(self, sector: Sector, phase_net: nn.Module):
        super().__init__()
        self.sector = sector
        self.phase_net = phase_net

    # --- implemented by each ansatz -------------------------------------------------------------
    @abc.abstractmethod
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_orb) int64 -> (B, n_orb, 4) scores; row j may depend on tokens[:, :j] only."""

    @abc.abstractmethod
    def init_state(self, batch: int, device: torch.device) -> Any:
        """State before position 0 (KV cache, recurrent state, or the prefix itself)."""

    @abc.abstractmethod
    def step_logits(self, prev: torch.Tensor | None, position: int, state: Any) -> tuple[torch.Tensor, Any]:
        """(B,) token at position-1 (None at 0) -> ((B, 4) scores for `position`, updated state)."""

    @abc.abstractmethod
    def reorder_state(self, state: Any, index: torch.Tensor) -> Any:
        """Select (and repeat) rows of the state: index (B',) int64 into the batch axis."""

    # --- shared -----------------------------------------------------------------------------------
    def conditionals(self, tokens: torch.Tensor) -> torch.Tensor:
        """Masked log p(t_j | t_<j) for every j and every candidate token: (B, n_orb) -> (B, n_orb, 4)."""
        return masked_log_softmax(self.logits(tokens), allowed_tokens_all(self.sector, tokens))

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """log p(x) = sum_j log p(t_j | t_<j): (B, n_orb) -> (B,)."""
        cond = self.conditionals(tokens)
        return cond.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        """The module's call is log psi (for torch.func.functional_call)."""
        return self.log_psi(bits)

    def log_psi(self, bits: torch.Tensor) -> torch.Tensor:
        """Complex log psi(x) = log p(x) / 2 + i phi(x): (B, n) bits -> (B,) complex."""
        tokens = bits_to_tokens(bits)
        log_p = self.log_prob(tokens)
        phi = self.phase_net(bits.to(log_p.dtype))
        return torch.complex(0.5 * log_p, phi)

    def step(self, prev: torch.Tensor | None, position: int, state: Any,
             alpha_used: torch.Tensor, beta_used: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Masked log-conditionals (B, 4) at `position` from the cached state, and the new state."""
        scores, state = self.step_logits(prev, position, state)
        return masked_log_softmax(scores, allowed_tokens(self.sector, position, alpha_used, beta_used)), state

    @property
    def n_params_phase(self) -> int:
        return sum(p.numel() for p in self.phase_net.parameters())

    @property
    def n_params_modulus(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.n_params_phase

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def n_params_unused(self) -> int:
        """Parameter entries that no configuration's log psi depends on, by the model's structure (masks,
        causality, the sector's fixed conditionals, exact invariances); each ansatz says which."""
        return 0

    @property
    def n_params_effective(self) -> int:
        """Parameters that can change log psi of some configuration of the sector: n_params - n_params_unused
        (MADE: its unmasked weights and live units; see each ansatz's `n_params_unused`)."""
        return self.n_params - self.n_params_unused
