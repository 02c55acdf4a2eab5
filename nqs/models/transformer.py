"""A decoder-only causal Transformer over the spatial-orbital tokens (pre-LN, nanoGPT style), with a KV cache.

Input at position j is the token of orbital j-1 (a start token, id 4, at j = 0) plus a learned position
embedding; the output at position j is the 4 scores of orbital j.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nqs.hilbert import Sector
from nqs.models.base import N_TOKENS, AutoregressiveAnsatz, live_scores, unused_sequence_params

START = N_TOKENS  # id of the start token

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values: (B, heads, t, d_head) each


class SelfAttention(nn.Module):
    """Multi-head causal self-attention; with a cache it attends from new positions to cached + new keys."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, cache: KV | None = None) -> tuple[torch.Tensor, KV]:
        """x (B, T, d) -> (B, T, d), and the keys/values of all positions so far.

        Without a cache T is the whole sequence (causal mask); with one, T = 1 new position attends to all.
        """
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        return self.proj(y.transpose(1, 2).reshape(B, T, d)), (k, v)


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, d_model: int, heads: int, d_ff: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, cache: KV | None = None) -> tuple[torch.Tensor, KV]:
        a, kv = self.attn(self.ln1(x), cache)
        x = x + a
        return x + self.ffn(self.ln2(x)), kv


def transformer_unused_params(sector: Sector, d_model: int, layers: int) -> int:
    """Parameters no log p(x) depends on: the key biases, d_model per layer (a query's scores all shift by
    q . b_k, which the softmax removes), and the embedding and head rows of `unused_sequence_params` (at least
    the last position's embedding row). When position 0 alone has live scores (H2: two orbitals) its one key
    gets weight 1 whatever q and k, so the query and key weights and the query bias are unused too."""
    d = d_model
    one_key = 0 if bool(live_scores(sector)[1:].any()) else layers * (2 * d * d + d)
    return layers * d + one_key + unused_sequence_params(sector, d)


class Transformer(AutoregressiveAnsatz):
    """Decoder-only Transformer modulus network: `layers` blocks of width `d_model`, `heads` heads, FFN `d_ff`."""

    def __init__(self, sector: Sector, phase_net: nn.Module, d_model: int = 16, heads: int = 2,
                 layers: int = 1, d_ff: int = 64):
        super().__init__(sector, phase_net)
        if d_model % heads or layers < 1:
            raise ValueError(f"need d_model % heads == 0 and layers >= 1 (got {d_model}, {heads}, {layers})")
        self.tok_emb = nn.Embedding(N_TOKENS + 1, d_model)
        self.pos_emb = nn.Embedding(sector.n_orb, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, d_ff) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, N_TOKENS)

    @property
    def n_params_unused(self) -> int:
        """See `transformer_unused_params`."""
        return transformer_unused_params(self.sector, self.pos_emb.weight.shape[1], len(self.blocks))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_orb) int64 -> (B, n_orb, 4) scores, one causal pass."""
        inp = torch.cat([torch.full_like(tokens[:, :1], START), tokens[:, :-1]], dim=1)
        x = self.tok_emb(inp) + self.pos_emb.weight
        for block in self.blocks:
            x, _ = block(x)
        return self.head(self.ln_f(x))

    def init_state(self, batch: int, device: torch.device) -> list[KV]:
        """Empty KV cache: per layer keys and values (B, heads, 0, d_head)."""
        w, heads = self.pos_emb.weight, self.blocks[0].attn.heads
        empty = torch.zeros(batch, heads, 0, w.shape[1] // heads, dtype=w.dtype, device=device)
        return [(empty, empty) for _ in self.blocks]

    def step_logits(self, prev, position, state):
        """One new position: prev (B,) token at position-1 (None at 0) -> ((B, 4) scores, cache grown by one)."""
        if prev is None:
            prev = torch.full((state[0][0].shape[0],), START, dtype=torch.int64, device=self.pos_emb.weight.device)
        x = (self.tok_emb(prev) + self.pos_emb.weight[position]).unsqueeze(1)  # (B, 1, d)
        new_state = []
        for block, cache in zip(self.blocks, state):
            x, kv = block(x, cache)
            new_state.append(kv)
        return self.head(self.ln_f(x[:, 0])), new_state

    def reorder_state(self, state: list[KV], index: torch.Tensor) -> list[KV]:
        return [(k[index], v[index]) for k, v in state]
