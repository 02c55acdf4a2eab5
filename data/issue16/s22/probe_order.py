"""Probe: fit MADE to H16's cached DMRG state (split orbitals) in the run's orbital order or with the orbitals
re-ordered (signs carried), and print the fit's quality as one JSON line. A record of session 22's probe.

python data/issue16/s22/probe_order.py STATE.npz --order split|interleave [--phase-lr X] [--steps N]
"""
import argparse
import json
import time

import numpy as np
import torch

from nqs.hilbert import Sector
from nqs.models import ModelConfig, build_model
from nqs.pretrain import fit_quality, pretrain
from nqs.target_states import TargetState


def permute(bits: torch.Tensor, order: np.ndarray):
    """Interleaved determinants (K, 2n) with orbital k of the result = orbital order[k] of the input: (bits, sign)."""
    occ = (bits[:, 0::2] + bits[:, 1::2]).numpy().astype(np.int64)[:, order]  # in new order
    k = np.arange(order.size)
    inverted = ((k[:, None] < k[None, :]) & (order[:, None] > order[None, :])).astype(np.int64)
    swaps = np.einsum("ki,ij,kj->k", occ, inverted, occ)
    out = torch.zeros_like(bits)
    out[:, 0::2], out[:, 1::2] = bits[:, 0::2][:, order], bits[:, 1::2][:, order]
    return out, 1.0 - 2.0 * (swaps % 2)


p = argparse.ArgumentParser()
p.add_argument("state")
p.add_argument("--order", default="split")
p.add_argument("--steps", type=int, default=3000)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--phase-lr", type=float, default=None)
p.add_argument("--phase-layers", type=int, default=3)
p.add_argument("--ema", type=float, nargs="*", default=[])
p.add_argument("--save", default=None)
p.add_argument("--phase-input", default="bits", choices=["bits", "parity", "tokens"])
p.add_argument("--hidden", type=int, default=512)
p.add_argument("--phase-hidden", type=int, default=256)
a = p.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
with np.load(a.state) as f:
    bits, c, energy = torch.from_numpy(f["bits"]), torch.from_numpy(f["amplitudes"]), float(f["energy"])
n = bits.shape[1] // 2
if a.order == "interleave":
    order = np.array([i for pair in zip(range(n // 2), range(n // 2, n)) for i in pair])
    bits, sign = permute(bits, order)
    c = c * torch.from_numpy(sign)
target = TargetState(bits, c / c.norm(), energy, "dmrg")
model = build_model(ModelConfig(ansatz="made", hidden=a.hidden, phase_hidden=a.phase_hidden,
                                phase_layers=a.phase_layers),
                    Sector(n, int(bits[0, 0::2].sum()), int(bits[0, 1::2].sum())))


class FeaturePhase(torch.nn.Module):
    """The phase MLP on other inputs: `parity` adds the Jordan-Wigner string parities Π_{j<k}(1 − 2x_j) (±1, n of
    them) to the ±1 bits; `tokens` gives the one-hot orbital tokens (4 per orbital) instead of the bits."""

    def __init__(self, mlp, kind):
        super().__init__()
        self.mlp, self.kind = mlp, kind

    def forward(self, bits):
        if self.kind == "parity":
            s = 1 - 2 * bits
            strings = torch.cumprod(torch.cat([torch.ones_like(s[:, :1]), s[:, :-1]], 1), 1)
            return self.mlp.net(torch.cat([2 * bits - 1, strings], 1)).squeeze(-1)
        tok = bits[:, 0::2] + 2 * bits[:, 1::2]
        x = (tok.unsqueeze(-1) == torch.arange(4, device=bits.device)).to(bits.dtype).flatten(1)
        return self.mlp.net(2 * x - 1).squeeze(-1)


if a.phase_input != "bits":
    from nqs.models.phase import PhaseMLP
    model.phase_net = FeaturePhase(PhaseMLP(2 * bits.shape[1], a.phase_hidden, a.phase_layers), a.phase_input)
t = time.time()
log = []
if a.phase_lr is not None:  # the probe of a phase-network rate: Adam with two groups, via a patched constructor
    adam = torch.optim.Adam
    phase = list(model.phase_net.parameters())
    ids = {id(q) for q in phase}
    torch.optim.Adam = lambda params, lr: adam([{"params": [q for q in model.parameters() if id(q) not in ids]},
                                                {"params": phase, "lr": a.phase_lr}], lr=lr)


emas = {d: {k: v.detach().clone() for k, v in model.phase_net.state_dict().items()} for d in a.ema}


def report(s, loss, sec):
    for d, avg in emas.items():  # exponential moving average of the phase network's weights
        for k, v in model.phase_net.state_dict().items():
            avg[k].mul_(d).add_(v.detach(), alpha=1 - d)
    if s % 250 == 0:
        log.append((s, loss))
    if s % 1000 == 0:
        with torch.no_grad():
            print(json.dumps({"step": s, **fit_quality(model, target)}), flush=True)


info = pretrain(model, target, a.steps, a.lr, report=report)
print(json.dumps({"order": a.order, "phase_lr": a.phase_lr, "phase_input": a.phase_input, "phase_layers": a.phase_layers, "steps": a.steps, "lr": a.lr, **{k: info[k] for k in
                  ("fidelity", "moduli", "mass", "seconds")}, "loss": log}), flush=True)
if a.save:
    torch.save(model.state_dict(), a.save)
last = {k: v.clone() for k, v in model.phase_net.state_dict().items()}
for d, avg in emas.items():
    model.phase_net.load_state_dict(avg)
    with torch.no_grad():
        print(json.dumps({"ema": d, **fit_quality(model, target)}), flush=True)
model.phase_net.load_state_dict(last)
