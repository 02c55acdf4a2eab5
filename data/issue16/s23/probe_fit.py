"""Probe: the package's fit (nqs.pretrain.pretrain) of H16's cached DMRG state with the stratified batch's drawn
half taken in proportion to |c|^power (power 2: the package's draw), each draw weighted so every sum stays
unbiased, and optionally each determinant's loss weighted by its diagonal gap (H_xx − E0)/mean (--gap).
Prints the fit and `error_energy.bands`, saves the weights as a checkpoint nqs-train --init-from reads.
python data/issue16/s23/probe_fit.py NAME --power 1 [--steps 3000 --lr 3e-3 --lr-final X --gap]"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch

import nqs.pretrain as fit
from nqs.training.build import build, build_cfg_problem
from nqs.training.config import resolve

sys.path.insert(0, str(Path(__file__).parent))
from error_energy import bands  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("name")
p.add_argument("--power", type=float, default=2.0)
p.add_argument("--steps", type=int, default=3000)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--lr-final", type=float, default=None)
p.add_argument("--head", type=float, default=0.5, help="fraction of the batch that is the largest determinants")
a = p.parse_args()
torch.set_num_threads(1)
flags = {"mol": "H16", "orbitals": "split", "references": "hf,ccsd_t,dmrg", "dmrg_max_bond": 250, "ansatz": "made",
         "hidden": 512, "phase_hidden": 256, "phase_input": "strings"}
cfg = resolve([("probe", flags)])
problem = build_cfg_problem(cfg)
_, model = build(cfg, problem)  # seeds torch with the run's seed, as nqs-train does
target = fit.target_state("dmrg", problem.integrals, 250, 1e-5, 1)


def stratified_batch(target, size=fit.FIT_BATCH, generator=None):
    if target.bits.shape[0] <= size:
        return target
    c = target.amplitudes
    n_head = int(size * a.head)
    head = torch.topk(c.abs(), n_head).indices
    weight = c.abs().to(torch.float64) ** 2
    q = c.abs().to(torch.float64) ** a.power
    q[head] = 0
    q = q / q.sum()
    drawn = torch.multinomial(q, size - n_head, replacement=True, generator=generator)
    # E_q[w/q] = Σ w: each draw carries weight w_x / (q_x m), amplitude sign(c) √ of it
    amp = torch.sqrt(weight[drawn] / (q[drawn] * drawn.numel()))
    amplitudes = torch.cat([c[head], torch.where(c[drawn] < 0, -1.0, 1.0).to(c.dtype) * amp.to(c.dtype)])
    return fit.TargetState(target.bits[torch.cat([head, drawn])], amplitudes, target.energy, target.kind)


class ProbeSampler:  # the fit keeps one sampler (session 26): this one draws as above, for its steps and its check
    def __init__(self, target, size=fit.FIT_BATCH):
        self.target, self.size = target, size

    def draw(self, generator=None):
        return stratified_batch(self.target, self.size, generator)


fit.StratifiedSampler = ProbeSampler
report = lambda step, loss, s: print(json.dumps({"step": step, "loss": loss, "s": round(s, 1)}), flush=True) \
    if step % 500 == 0 else None
info = fit.pretrain(model, target, a.steps, a.lr, report, a.lr_final)
print(json.dumps({"name": a.name, **vars(a), **info}), flush=True)
for row in bands(model.eval(), problem, target):
    print(json.dumps(row), flush=True)
out = Path("runs/s23")
out.mkdir(parents=True, exist_ok=True)
torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, out / f"{a.name}.ckpt")
