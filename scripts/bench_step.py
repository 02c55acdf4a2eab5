"""Seconds per VMC step, split by phase (sampling, local energy, gradient), for each ansatz.

Times the step `nqs-train` runs: `nqs.vmc.vmc_step` (with the annealing temperature and local-energy clipping
of the config) and `nqs.training.module.optimisation_step` (backward, gradient clipping, AdamW, schedule), on
the default config (d_model 16, 2 heads, FFN 64, 1 layer; MADE 2x64; phase MLP 64x3) with a cap of 2,000 unique
samples out of N_s = 1e12, without Lightning. Prints one JSON line per case, then a table.

    .venv/bin/python scripts/bench_step.py --threads 1 --steps 30 --warmup 5 --molecules LiH H2O N2
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
import yaml

from nqs.cli.common import configure_process
from nqs.tables import markdown_table
from nqs.training.build import build
from nqs.training.config import TrainConfig
from nqs.training.module import make_optimizer, optimisation_step, step_seed
from nqs.vmc import vmc_step


def bench(cfg: TrainConfig, steps: int, warmup: int) -> dict:
    problem, model = build(cfg)
    ham = problem.compiled("cpu")
    opt, sched = make_optimizer(model, cfg)
    device = torch.device("cpu")
    times = {"sampling": [], "local_energy": [], "gradient": []}
    n_unique = []
    for step in range(warmup + steps):
        gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, step))
        r = vmc_step(model, ham, cfg.sampling.samples, cfg.sampling.unique, gen, temperature=cfg.temperature(step),
                     clip_width=cfg.optim.clip_local_energy, eval_chunk=cfg.optim.eval_chunk)
        t_backward, t_optimizer, _ = optimisation_step(r.loss, opt, sched, cfg.optim.grad_clip, device)
        if step >= warmup:
            times["sampling"].append(r.t_sampling)
            times["local_energy"].append(r.t_local_energy)
            times["gradient"].append(r.t_loss + t_backward + t_optimizer)
            n_unique.append(r.samples.n_unique)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"molecule": problem.spec.name, "ansatz": cfg.model.ansatz, "n_params": model.n_params,
            "n_unique": round(statistics.mean(n_unique)), "s_per_step": sum(med.values()),
            "s_sampling": med["sampling"], "s_local_energy": med["local_energy"], "s_backward": med["gradient"],
            "threads": torch.get_num_threads(), "steps_timed": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=["LiH", "H2O"])
    parser.add_argument("--ansatze", nargs="+", default=["made", "transformer", "retnet"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--samples", type=float, default=1e12)
    parser.add_argument("--unique", type=int, default=2000)
    parser.add_argument("--steps-total", type=int, default=1200, help="the run length the schedules assume")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE",
                        help="training options to change, e.g. anneal_t0=0 grad_clip=null (YAML values)")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    configure_process(args.threads)
    rows = []
    for name in args.molecules:
        for ansatz in args.ansatze:
            cfg = TrainConfig().updated(mol=name, ansatz=ansatz, samples=args.samples, unique=args.unique,
                                        steps=args.steps_total, threads=args.threads, **overrides)
            row = bench(cfg, args.steps, args.warmup)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(markdown_table(["molecule", "ansatz", "params", "unique", "s/step", "sampling", "local energy", "gradient"],
                         [[r["molecule"], r["ansatz"], f"{r['n_params']:,}", r["n_unique"], f"{r['s_per_step']:.4f}",
                           f"{r['s_sampling']:.4f}", f"{r['s_local_energy']:.4f}", f"{r['s_backward']:.4f}"]
                          for r in rows]))


if __name__ == "__main__":
    main()
