"""Session 28: lower a fitted network's energy directly, on a fixed set of determinants S' (no sampled H).

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s28/energy_fit.py RUN HDIR OUT [--seconds 3600] [--lr 1e-4]
        [--lr-final 1e-5] [--batch 4096] [--refresh 100] [--tau 0.03]

RUN: a run fitted to H16's DMRG state (its weights start here). HDIR: `build_h.py`'s H restricted to S' (the DMRG
determinants with |c| >= T) in row parts. OUT: a run directory (RUN's config.yaml, checkpoints/last.ckpt) that
`scripts/support_energy.py` and `scripts/evaluate_energy.py` read.

The energy is E(θ) = ψ†Hψ / ψ†ψ over S' (ψ the network's amplitudes there, H the exact matrix on S'), lowered by
projected imaginary time: every `--refresh` steps ψ is evaluated on all of S', Hψ multiplied out (float32 values)
and E(θ) computed exactly (the weights of the lowest refresh are kept), and the next steps fit the network to
φ = (1 − τ(H − E))ψ (`nqs.pretrain.split_loss`, Adam, the rate along a cosine over the seconds) on stratified
batches of S' (its largest half, the rest drawn by c², the target's weights, each reweighted by |φ|²/c²). A first
version took Adam steps along the energy's gradient with E_loc = Hψ/ψ from the last refresh: 100 steps at lr 2e-4
took H16 from +2.86 to +153.5 mHa (`efit-a-gradient.log`): a stale gradient keeps pushing past the minimum; a
fixed target φ does not.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from nqs.pretrain import split_loss
from nqs.references import best_reference
from nqs.target_states import target_state
from nqs.training.build import build
from nqs.training.config import load_yaml, resolve
from nqs.training.schedules import cosine

ap = argparse.ArgumentParser()
ap.add_argument("run", type=Path)
ap.add_argument("hdir", type=Path)
ap.add_argument("out", type=Path)
ap.add_argument("--seconds", type=float, default=3600)
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--lr-final", type=float, default=1e-5)
ap.add_argument("--batch", type=int, default=4096)
ap.add_argument("--refresh", type=int, default=100)
ap.add_argument("--tau", type=float, default=0.03)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
torch.set_num_threads(1)
start = time.perf_counter()

saved = load_yaml(args.run / "config.yaml")
cfg = resolve([(str(args.run / "config.yaml"), {k: v for k, v in saved.items() if k not in ("init_state", "out")}
                | {"init_from": str(args.run)})]).validate()
problem, model = build(cfg)
e_ref = best_reference(problem.references).energy
target = target_state("dmrg", problem.integrals, cfg.run.init_bond, cfg.run.init_cutoff, 1)
with np.load(args.hdir / "set.npz") as f:
    keep = torch.from_numpy(f["rows"])
bits, c = target.bits[keep], target.amplitudes[keep].to(torch.float64)
K = bits.shape[0]
parts = sorted(args.hdir.glob("h-*-of-*.npz"), key=lambda p: int(p.name.split("-")[1]))
H = [scipy.sparse.load_npz(p) for p in parts]
assert sum(m.shape[0] for m in H) == K, "the H parts do not cover the set"
print(json.dumps({"set": K, "elements": sum(m.nnz for m in H), "load_s": round(time.perf_counter() - start, 1)}),
      flush=True)

CHUNK = 65536


@torch.no_grad()
def refresh() -> tuple[float, float, torch.Tensor]:
    """(E over S' in Hartree, Σ_{S'}|ψ|², φ = (1 − τ(H − E))ψ (K,) complex128, ψ the network's on S')."""
    psi = torch.cat([torch.exp(model.log_psi(bits[i:i + CHUNK]).to(torch.complex128)) for i in range(0, K, CHUNK)])
    re, im = psi.real.numpy().astype(np.float32), psi.imag.numpy().astype(np.float32)
    h_re = np.concatenate([m @ re for m in H]).astype(np.float64)
    h_im = np.concatenate([m @ im for m in H]).astype(np.float64)
    h_psi = torch.complex(torch.from_numpy(h_re), torch.from_numpy(h_im))
    norm = float((psi.abs() ** 2).sum())
    energy = float((psi.conj() * h_psi).sum().real) / norm
    return energy, norm, psi - args.tau * (h_psi - energy * psi)


# the stratified draw over S' (as nqs.pretrain.StratifiedSampler, keeping the indices)
half = args.batch // 2
head = torch.topk(c.abs(), half).indices
rest = c.abs() ** 2
rest[head] = 0
cumulative = torch.cumsum(rest, 0)
rest_weight = float(cumulative[-1])
generator = torch.Generator().manual_seed(args.seed)


def draw() -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (B,), a² (B,)): Σ_B a² f ≈ Σ_{S'} c² f."""
    u = torch.rand(args.batch - half, dtype=torch.float64, generator=generator)
    drawn = torch.searchsorted(cumulative, u * rest_weight, right=True).clamp_max(K - 1)
    weights = torch.cat([c[head] ** 2, torch.full((drawn.numel(),), rest_weight / drawn.numel(), dtype=torch.float64)])
    return torch.cat([head, drawn]), weights


optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
step, log = 0, []


def record(energy: float, norm: float) -> dict:
    row = {"step": step, "seconds": round(time.perf_counter() - start, 1), "energy": energy,
           "error_mha": (energy - e_ref) * 1e3, "mass_on_set": norm}
    print(json.dumps(row), flush=True)
    return row


energy, norm, phi = refresh()
best = (energy, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
log.append(record(energy, norm))
t0 = time.perf_counter()
while time.perf_counter() - t0 < args.seconds:
    step += 1
    rate = cosine(args.lr, args.lr_final, min(1.0, (time.perf_counter() - t0) / args.seconds))
    for group in optimiser.param_groups:
        group["lr"] = rate
    idx, a2 = draw()
    # the batch's target: phi = (1 - tau (E_loc - E)) psi_old on the drawn determinants, weighted as the draw
    amplitudes = a2.sqrt() / c[idx].abs() * phi[idx]
    surrogate = split_loss(model.log_psi(bits[idx]), amplitudes)
    optimiser.zero_grad(set_to_none=True)
    surrogate.backward()
    optimiser.step()
    if step % args.refresh == 0:
        energy, norm, phi = refresh()
        log.append(record(energy, norm))
        if energy < best[0]:
            best = (energy, step, {k: v.detach().clone() for k, v in model.state_dict().items()})

energy, norm, phi = refresh()
log.append(record(energy, norm))
if energy < best[0]:
    best = (energy, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
model.load_state_dict(best[2])
(args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
shutil.copy(args.run / "config.yaml", args.out / "config.yaml")
torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
           args.out / "checkpoints" / "last.ckpt")
summary = {"run": str(args.run), "out": str(args.out), "steps": step, "best_step": best[1],
           "best_error_mha": (best[0] - e_ref) * 1e3, "seconds": round(time.perf_counter() - start, 1),
           **{k: getattr(args, k) for k in ("lr", "lr_final", "batch", "refresh", "tau", "seconds", "seed")}}
(args.out / "energy_fit.json").write_text(json.dumps({"summary": summary, "log": log}, indent=1))
print(json.dumps(summary), flush=True)
