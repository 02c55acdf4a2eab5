"""Where a fitted model's phase error sits: the target's weight by |c| band, the weight with the wrong sign
(|Δφ| > π/2 after the best global phase) and the fidelity lost to phases, Σ w (1 − cos Δφ), in each band.
python data/issue16/s22/phase_errors.py STATE.npz MODEL.pt [--hidden 512 --phase-hidden 256 --phase-input strings]"""
import argparse
import json

import numpy as np
import torch

from nqs.hilbert import Sector
from nqs.models import ModelConfig, build_model

p = argparse.ArgumentParser()
p.add_argument("state")
p.add_argument("weights")
p.add_argument("--hidden", type=int, default=512)
p.add_argument("--phase-hidden", type=int, default=256)
p.add_argument("--phase-layers", type=int, default=3)
p.add_argument("--phase-input", default="bits")
a = p.parse_args()
torch.set_num_threads(1)
with np.load(a.state) as f:
    bits, c = torch.from_numpy(f["bits"]), torch.from_numpy(f["amplitudes"])
c = c / c.norm()
n = bits.shape[1] // 2
model = build_model(ModelConfig(ansatz="made", hidden=a.hidden, phase_hidden=a.phase_hidden,
                                phase_layers=a.phase_layers, phase_input=a.phase_input),
                    Sector(n, 8, 8))
weights = torch.load(a.weights)  # the probe's "parity" wrapper held the MLP as phase_net.mlp
model.load_state_dict({k.replace("phase_net.mlp.", "phase_net."): v for k, v in weights.items()})
with torch.no_grad():
    phi = torch.cat([model.phase_net(bits[i:i + 65536].float()).double() for i in range(0, len(bits), 65536)])
w = (c ** 2).numpy()
d = (phi - torch.where(c < 0, torch.pi, 0.0)).numpy()
g = np.angle((w * np.exp(1j * d)).sum())
d = np.angle(np.exp(1j * (d - g)))
loss = w * (1 - np.cos(d))
rows = []
for lo, hi in [(1e-1, 1), (1e-2, 1e-1), (1e-3, 1e-2), (1e-4, 1e-3), (0, 1e-4)]:
    m = (np.abs(c.numpy()) >= lo) & (np.abs(c.numpy()) < hi)
    rows.append({"band": f"{lo:g}<=|c|<{hi:g}", "n": int(m.sum()), "weight": float(w[m].sum()),
                 "wrong_sign_weight": float(w[m & (np.abs(d) > np.pi / 2)].sum()),
                 "wrong_sign_n": int((m & (np.abs(d) > np.pi / 2)).sum()),
                 "phase_loss": float(loss[m].sum())})
for r in rows:
    print(json.dumps(r))
print(json.dumps({"total_phase_loss": float(loss.sum()), "resultant": float(np.abs((w * np.exp(1j * d)).sum())),
                  "wrong_sign_weight": float(w[np.abs(d) > np.pi / 2].sum())}))
