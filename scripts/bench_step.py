"""Seconds per VMC step, split by phase (sampling, local energy, backward + Adam), for each ansatz.

Defaults are the reference code's sizes (configs/presets/reference.yaml: d_model 16, 2 heads, FFN 64, 1 layer;
MADE 2x64; phase MLP 64x3) with a cap of 2,000 unique samples out of N_s = 1e12, on LiH and H2O.
Prints one JSON line per case, then a table.

    .venv/bin/python scripts/bench_step.py --threads 1 --steps 30 --warmup 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from nqs.local_energy import local_energy
from nqs.models import ModelConfig, build_model
from nqs.molecules import resolve_molecule
from nqs.problem import build_problem
from nqs.sampler import sample
from nqs.vmc import stats_from_sums, surrogate_loss, weighted_sums


def bench(problem, ansatz: str, steps: int, warmup: int, n_samples: float, unique: int, lr: float) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(ansatz), problem.sector)
    ham = problem.compiled("cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    times = {"sampling": [], "local_energy": [], "backward": []}
    n_unique = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        samples = sample(model, n_samples, unique, torch.Generator().manual_seed(step))
        t1 = time.perf_counter()
        weights = samples.counts / samples.counts.sum()
        le = local_energy(ham, samples.bits, model.log_psi)
        stats = stats_from_sums(weighted_sums(le.values, weights), samples.n_samples)
        t2 = time.perf_counter()
        loss = surrogate_loss(model.log_psi(samples.bits), le.values, weights, complex(stats.mean, stats.imag))
        opt.zero_grad()
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if step >= warmup:
            times["sampling"].append(t1 - t0)
            times["local_energy"].append(t2 - t1)
            times["backward"].append(t3 - t2)
            n_unique.append(samples.n_unique)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"molecule": problem.spec.name, "ansatz": ansatz, "n_params": model.n_params,
            "n_unique": round(statistics.mean(n_unique)), "s_per_step": sum(med.values()),
            "s_sampling": med["sampling"], "s_local_energy": med["local_energy"], "s_backward": med["backward"],
            "threads": torch.get_num_threads(), "steps_timed": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=["LiH", "H2O"])
    parser.add_argument("--ansatze", nargs="+", default=["made", "transformer", "retnet"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--samples", type=float, default=1e12)
    parser.add_argument("--unique", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=2.5e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.molecules:
        problem = build_problem(resolve_molecule(name))
        for ansatz in args.ansatze:
            row = bench(problem, ansatz, args.steps, args.warmup, args.samples, args.unique, args.lr)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n| molecule | ansatz | params | unique | s/step | sampling | local energy | backward |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['molecule']} | {r['ansatz']} | {r['n_params']:,} | {r['n_unique']} | {r['s_per_step']:.4f} | "
              f"{r['s_sampling']:.4f} | {r['s_local_energy']:.4f} | {r['s_backward']:.4f} |")


if __name__ == "__main__":
    main()
