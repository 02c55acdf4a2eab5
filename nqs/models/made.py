"""MADE (Germain et al. 2015): a masked MLP over the n_orb spatial-orbital tokens.

Input: a constant 1 and the one-hot tokens, 4 features per orbital; output: 4 scores per orbital. The constant
has degree 0, orbital p's features degree p+1, hidden units degrees 0..n_orb-1, and output j (degree j+1) sees
only hidden units of degree <= j, so scores of orbital j depend on tokens < j only. The constant input lets
orbital 0's scores (and every other's) come from the hidden layers, not from an output bias alone: with Adam,
a bare bias moves lr per step and the first orbitals learned hundreds of times slower.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nqs.hilbert import Sector
from nqs.models.base import N_TOKENS, AutoregressiveAnsatz, live_scores, token_occurs


class MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed 0/1 connectivity mask (out, in)."""

    def __init__(self, d_in: int, d_out: int, mask: torch.Tensor):
        super().__init__(d_in, d_out)
        self.register_buffer("mask", mask.to(torch.bool), persistent=False)
        with torch.no_grad():  # default init assumes fan-in d_in; a masked row sees fewer inputs
            fan_in = mask.sum(1, keepdim=True).clamp(min=1).to(self.weight.dtype)
            self.weight.mul_(torch.sqrt(d_in / fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_degrees(n_orb: int, hidden: int, layers: int) -> list[torch.Tensor]:
    """Degrees of the inputs (1 + 4*n_orb,: a constant of degree 0, then orbital p's features at p+1), of each
    hidden layer (hidden,: cycling through 0..n_orb-1), and of the outputs (4*n_orb,: orbital j at j+1)."""
    features = torch.arange(n_orb).repeat_interleave(N_TOKENS) + 1
    inp = torch.cat([torch.zeros(1, dtype=torch.int64), features])
    hid = torch.arange(hidden) % n_orb
    return [inp] + [hid] * layers + [features]


def made_masks(n_orb: int, hidden: int, layers: int) -> list[np.ndarray]:
    """The (out, in) bool connectivity of each of the layers + 1 masked layers: a hidden unit sees inputs of
    degree <= its own, output j (degree j + 1) sees hidden units of degree < j + 1."""
    deg = [d.numpy() for d in made_degrees(n_orb, hidden, layers)]
    return [d_in[None, :] < d_out[:, None] if l == layers else d_in[None, :] <= d_out[:, None]
            for l, (d_in, d_out) in enumerate(zip(deg, deg[1:]))]


def made_live_params(sector: Sector, masks: list[np.ndarray]) -> int:
    """Modulus parameters of a MADE with these masks that some configuration's log p depends on.

    Counted: unmasked weights from an input that is not always zero (the constant; a one-hot feature whose
    token occurs at its orbital) into a live unit, and the biases of live units. A unit is live when an
    unmasked path leads from it to a live score (`live_scores`): the scores of the last orbital never are (its
    token is fixed), so neither are the hidden units of degree n_orb - 1, which feed those scores only."""
    live = live_scores(sector).numpy().reshape(-1)  # outputs, (4 n_orb,)
    nonzero_inputs = np.concatenate([[True], token_occurs(sector).numpy().reshape(-1)])
    total = 0
    for l in range(len(masks) - 1, -1, -1):
        used = np.asarray(masks[l]) & live[:, None]
        if l == 0:
            used = used & nonzero_inputs[None, :]
        total += int(used.sum()) + int(live.sum())
        live = used.any(0)  # units of the layer below that reach a live score
    return total


class MADE(AutoregressiveAnsatz):
    """MADE modulus network: `layers` masked hidden layers of width `hidden`, ReLU activations."""

    def __init__(self, sector: Sector, phase_net: nn.Module, hidden: int = 64, layers: int = 2):
        super().__init__(sector, phase_net)
        blocks: list[nn.Module] = []
        for l, mask in enumerate(made_masks(sector.n_orb, hidden, layers)):
            blocks.append(MaskedLinear(mask.shape[1], mask.shape[0], torch.from_numpy(mask)))
            if l < layers:
                blocks.append(nn.ReLU())
        self.net = nn.Sequential(*blocks)

    @property
    def n_params_unused(self) -> int:
        """Masked-out weights, and the weights and biases of units no live score depends on
        (`made_live_params`)."""
        masks = [m.mask.cpu().numpy() for m in self.net if isinstance(m, MaskedLinear)]
        return self.n_params_modulus - made_live_params(self.sector, masks)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_orb) int64 -> (B, n_orb, 4) scores."""
        dtype = self.net[0].weight.dtype
        # one-hot by comparison (F.one_hot checks its input's range with .item(), which vmap cannot batch)
        x = (tokens.unsqueeze(-1) == torch.arange(N_TOKENS, device=tokens.device)).to(dtype).flatten(1)  # (B, 4*n_orb)
        x = torch.cat([x.new_ones(x.shape[0], 1), x], dim=1)  # the constant input feeds orbital 0 through the net
        return self.net(x).view(tokens.shape[0], -1, N_TOKENS)

    def init_state(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        """The hidden layers' pre-activations (B, hidden) each, with the constant input's part added: of every
        unit, the terms from the inputs (or lower units) already known; a unit is complete once its degree is."""
        w0, b0 = self._masked(0)
        first = (b0 + w0[:, 0]).expand(batch, -1).contiguous()
        rest = [self._masked(2 * l)[1].expand(batch, -1).contiguous() for l in range(1, self._layers())]
        return [first.to(device), *(r.to(device) for r in rest)]

    def step_logits(self, prev, position, state):
        """Incremental step: add the new token's column to layer 1, the units that just became complete (degree
        `position`: hidden index = position mod n_orb) to the layer above, then orbital `position`'s 4 scores
        from the last layer. ~1/n_orb of a full pass per prefix. -> ((B, 4), new state)."""
        layers = self._layers()
        acts = list(state)
        if prev is not None:  # orbital position - 1's features have degree position
            w0, _ = self._masked(0)
            acts[0] = acts[0] + w0[:, 1 + N_TOKENS * (position - 1) + prev].T
        units = slice(position, None, self.sector.n_orb)  # hidden units of degree `position`
        for l in range(1, layers):
            w, _ = self._masked(2 * l)
            acts[l] = acts[l] + torch.relu(acts[l - 1][:, units]) @ w[:, units].T
        w_out, b_out = self._masked(2 * layers)
        rows = slice(N_TOKENS * position, N_TOKENS * (position + 1))
        return torch.relu(acts[-1]) @ w_out[rows].T + b_out[rows], acts

    def reorder_state(self, state: list[torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
        return [a.index_select(0, index) for a in state]

    def _layers(self) -> int:
        return sum(isinstance(m, MaskedLinear) for m in self.net) - 1

    def _masked(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked weight (out, in), bias (out,)) of `self.net[i]`, a MaskedLinear."""
        m = self.net[i]
        return m.weight * m.mask, m.bias
