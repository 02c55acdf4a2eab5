"""RetNet (Sun et al. 2023, "Retentive Network"), as used for NQS by Knitter et al. (arXiv 2411.03900).

Multi-scale retention with per-head decay gamma_h = 1 - 2^(-5-h) and rotary (the paper's e^{i n theta})
relative positions on queries and keys, a group norm per head and a swish gate; pre-LN blocks with a GELU FFN.
As in the reference NQS code, the input at position j is the token of orbital j-1 (start token at j = 0)
plus a learned absolute position embedding (orbitals are distinguishable, so absolute position matters).

* parallel form (training, `logits`):  Y = (Q K^T / sqrt(d_head) * D) V,  D_nm = gamma^(n-m) for n >= m;
* recurrent form (`step_logits`):      S_n = gamma S_{n-1} + k_n^T v_n,  y_n = q_n S_n / sqrt(d_head).

The paper's extra normalisations of D (row sums) and of |QK^T D| are omitted: each rescales a head's output
at a position by a positive factor, which the per-head group norm removes (up to its eps). The two forms are
therefore exactly equal, see `log_prob_recurrent`.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from nqs.hilbert import Sector
from nqs.models.base import (N_TOKENS, AutoregressiveAnsatz, allowed_tokens_all, masked_log_softmax,
                             unused_sequence_params)

START = N_TOKENS  # id of the start token


@functools.lru_cache(maxsize=64)
def _rotations(n_pos: int, half: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_pos, half) complex e^{i p theta_i}, theta_i = 10000^(-i/(half-1)): built once per size, dtype, device
    (outside any inference mode, so that autograd may save it)."""
    with torch.inference_mode(False), torch.no_grad():
        freq = 10000.0 ** -torch.linspace(0, 1, half, dtype=dtype, device=device)
        ang = torch.arange(n_pos, dtype=dtype, device=device)[:, None] * freq
        return torch.polar(torch.ones_like(ang), ang)


@functools.lru_cache(maxsize=64)
def _decays(n_pos: int, heads: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(heads, n_pos, n_pos) D_nm = gamma_h^(n-m) for n >= m, else 0; gamma_h = 1 - 2^(-5-h)."""
    with torch.inference_mode(False), torch.no_grad():
        pos = torch.arange(n_pos, device=device)
        diff = (pos[:, None] - pos[None, :]).to(dtype)
        gammas = 1 - 2.0 ** (-5 - torch.arange(heads, dtype=dtype, device=device))
        return torch.where(diff >= 0, gammas[:, None, None] ** diff.clamp(min=0), 0.0)


def rotary(x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Rotate feature pairs (2i, 2i+1) of x (..., T, d) at positions start..start+T-1 by angle
    p * 10000^(-i/(d/2-1)), as one complex product (float32 / float64).

    q_n . k_m of rotated vectors depends on n - m only. With odd d the last feature is left as is.
    """
    T, half = x.shape[-2], x.shape[-1] // 2
    turn = _rotations(start + T, half, x.dtype, x.device)[start:]
    pairs = x[..., :2 * half].unflatten(-1, (half, 2))
    pairs = torch.view_as_complex(pairs if 2 * half == x.shape[-1] else pairs.contiguous())
    rot = torch.view_as_real(pairs * turn).flatten(-2)
    return rot if 2 * half == x.shape[-1] else torch.cat([rot, x[..., 2 * half:]], dim=-1)


class MultiScaleRetention(nn.Module):
    """Multi-scale retention: `heads` heads of width d_model/heads, head h with decay 1 - 2^(-5-h)."""

    def __init__(self, d_model: int, heads: int, use_rotary: bool = True):
        super().__init__()
        self.heads, self.use_rotary = heads, use_rotary
        self.qkvg = nn.Linear(d_model, 4 * d_model, bias=False)
        self.norm = nn.GroupNorm(heads, d_model)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def gammas(self, like: torch.Tensor) -> torch.Tensor:
        """(heads,) decay rates in the dtype of `like`."""
        return _decays(2, self.heads, like.dtype, like.device)[:, 1, 0]

    def _project(self, x: torch.Tensor, start: int):
        """x (B, T, d) -> q, k, v (B, heads, T, d_head) with rotary on q, k and 1/sqrt(d_head) on k; gate (B, T, d)."""
        B, T, d = x.shape
        q, k, v, g = self.qkvg(x).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if self.use_rotary:
            q, k = rotary(q, start), rotary(k, start)
        return q, k * k.shape[-1] ** -0.5, v, g

    def _output(self, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-head group norm and swish gate: y (B, heads, T, d_head), g (B, T, d) -> (B, T, d)."""
        B, H, T, dh = y.shape
        y = self.norm(y.transpose(1, 2).reshape(B * T, H * dh)).view(B, T, H * dh)
        return self.out(F.silu(g) * y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Parallel form: x (B, T, d) -> (B, T, d)."""
        q, k, v, g = self._project(x, 0)
        decay = _decays(x.shape[1], self.heads, x.dtype, x.device)  # (H, T, T)
        return self._output((q @ k.transpose(-1, -2) * decay) @ v, g)

    def recurrent(self, x: torch.Tensor, position: int, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent form: x (B, d) at `position`, S (B, heads, d_head, d_head) -> (B, d), new S."""
        q, k, v, g = self._project(x.unsqueeze(1), position)
        S = torch.addcmul(self.gammas(x)[:, None, None] * S, k.transpose(-1, -2), v)  # + (B, H, dh, 1) x (B, H, 1, dh)
        return self._output(q @ S, g)[:, 0], S


class RetBlock(nn.Module):
    """Pre-LN block: x + msr(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, d_model: int, heads: int, d_ff: int, use_rotary: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.msr = MultiScaleRetention(d_model, heads, use_rotary)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.msr(self.ln1(x))
        return x + self.ffn(self.ln2(x))

    def recurrent(self, x: torch.Tensor, position: int, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, S = self.msr.recurrent(self.ln1(x), position, S)
        x = x + a
        return x + self.ffn(self.ln2(x)), S


class RetNet(AutoregressiveAnsatz):
    """RetNet modulus network: `layers` blocks of width `d_model`, `heads` retention heads, FFN `d_ff`."""

    def __init__(self, sector: Sector, phase_net: nn.Module, d_model: int = 16, heads: int = 2,
                 layers: int = 1, d_ff: int = 64, use_rotary: bool = True):
        super().__init__(sector, phase_net)
        if d_model % heads or layers < 1:
            raise ValueError(f"need d_model % heads == 0 and layers >= 1 (got {d_model}, {heads}, {layers})")
        self.tok_emb = nn.Embedding(N_TOKENS + 1, d_model)
        self.pos_emb = nn.Embedding(sector.n_orb, d_model)
        self.blocks = nn.ModuleList(RetBlock(d_model, heads, d_ff, use_rotary) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, N_TOKENS)

    @property
    def n_params_unused(self) -> int:
        """The embedding and head rows no live score depends on (`unused_sequence_params`: at least the last
        position's embedding row); the retention projections have no biases."""
        return unused_sequence_params(self.sector, self.pos_emb.weight.shape[1])

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Parallel form: (B, n_orb) int64 -> (B, n_orb, 4) scores."""
        inp = torch.cat([torch.full_like(tokens[:, :1], START), tokens[:, :-1]], dim=1)
        x = self.tok_emb(inp) + self.pos_emb.weight
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def init_state(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        """Zero retention states, per layer (B, heads, d_head, d_head)."""
        w, heads = self.pos_emb.weight, self.blocks[0].msr.heads
        dh = w.shape[1] // heads
        return [torch.zeros(batch, heads, dh, dh, dtype=w.dtype, device=device) for _ in self.blocks]

    def step_logits(self, prev, position, state):
        """Recurrent form, one position: prev (B,) (None at 0) -> ((B, 4) scores, new per-layer states)."""
        if prev is None:
            prev = torch.full((state[0].shape[0],), START, dtype=torch.int64, device=state[0].device)
        x = self.tok_emb(prev) + self.pos_emb.weight[position]
        new_state = []
        for block, S in zip(self.blocks, state):
            x, S = block.recurrent(x, position, S)
            new_state.append(S)
        return self.head(self.ln_f(x)), new_state

    def reorder_state(self, state: list[torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
        return [S[index] for S in state]

    def logits_recurrent(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced scores through the recurrent form: (B, n_orb) -> (B, n_orb, 4)."""
        state, prev, out = self.init_state(tokens.shape[0], tokens.device), None, []
        for j in range(self.sector.n_orb):
            scores, state = self.step_logits(prev, j, state)
            out.append(scores)
            prev = tokens[:, j]
        return torch.stack(out, dim=1)

    def log_prob_recurrent(self, tokens: torch.Tensor) -> torch.Tensor:
        """log p(x) of full configurations via the recurrent form, O(n_orb) per sequence: (B, n_orb) -> (B,)."""
        cond = masked_log_softmax(self.logits_recurrent(tokens), allowed_tokens_all(self.sector, tokens))
        return cond.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)
