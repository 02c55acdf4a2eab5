"""The fit's gradient noise at a refit's weights: for B batches of φ = (1 − τ(H − E))ψ (H16's S'), the mean
gradient (signal) and the scatter of one batch's gradient about it, with and without the control variate
(`nqs.pretrain.control_term`), on the same batches.

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s32/gradient_noise.py RUN MATRIX_DIR PARTS [B] [BATCH]
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from nqs.imaginary_time import load_operator, projected, restrict
from nqs.pretrain import StratifiedSampler, amplitudes_on, fit_gradient
from nqs.target_states import TargetState
from nqs.training.build import rebuild_fitted

run, matrix, parts = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
count = int(sys.argv[4]) if len(sys.argv) > 4 else 40
size = int(sys.argv[5]) if len(sys.argv) > 5 else 4096
torch.set_num_threads(1)
_, problem, model, target = rebuild_fitted(run, None, 1)
bits = restrict(target, 2e-5).bits
operator = load_operator(bits, matrix, parts)
psi = amplitudes_on(model, bits)
h_psi = operator.apply(psi)
energy = operator.energy(psi, h_psi)
phi = projected(psi, h_psi, energy, 0.2)
p = (psi.abs() ** 2)
q = phi.abs() ** 2 / (phi.abs() ** 2).sum()
ratio = p / q
print(json.dumps({"energy": energy, "mass": float(p.sum()),
                  "q-weighted mean (1-p/q)^2": float((q * (1 - ratio) ** 2).sum()),
                  "q-weighted mean (1-p/(q M))^2": float((q * (1 - ratio / p.sum()) ** 2).sum())}), flush=True)
params = list(model.parameters())
sampler = StratifiedSampler(TargetState(bits, phi, energy, "projected"), size, control=True)
generator = torch.Generator().manual_seed(0)


def flat(batch):
    model.zero_grad(set_to_none=True)
    fit_gradient(model, batch)
    return torch.cat([w.grad.flatten() for w in params])


plain, with_cv = [], []
for k in range(count):
    batch = sampler.draw(generator)
    with_cv.append(flat(batch))
    plain.append(flat(replace(batch, probability=None)))
for name, g in (("plain", torch.stack(plain)), ("control", torch.stack(with_cv))):
    mean = g.mean(0)
    print(json.dumps({"gradient": name, "batches": count, "batch": size, "|mean|^2": float(mean.norm() ** 2),
                      "trace var (one batch)": float(g.var(0).sum()),
                      "|mean|^2 - trace var/B": float(mean.norm() ** 2 - g.var(0).sum() / count)}), flush=True)
