"""Local-energy overhead with the shipped ansaetze as psi (issue 2: "the kernel must never be the bottleneck").

For each ansatz at the default sizes (random initialisation, seed 0): draw one step's samples (N_s = 1e12,
at most `--unique` unique), then time `local_energy` with a wrapper that accumulates the wall time spent
inside `log_psi`. overhead_fraction = (total - psi) / total, best of `--repeats` by total time; the same for
the per-string path (`dense=True`) in the same run. One JSON line per (molecule, ansatz), then a table.

    .venv/bin/python scripts/bench_overhead_ansatze.py --molecules N2 --threads 1 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local_energy import timed_local_energy  # noqa: E402

from nqs.models import ANSATZE, ModelConfig, build_model  # noqa: E402
from nqs.molecules import resolve_molecule  # noqa: E402
from nqs.problem import build_problem  # noqa: E402
from nqs.sampler import sample  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", nargs="+", default=["N2"])
    parser.add_argument("--ansatze", nargs="+", default=list(ANSATZE))
    parser.add_argument("--unique", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.molecules:
        problem = build_problem(resolve_molecule(name))
        h = problem.compiled()
        for ansatz in args.ansatze:
            torch.manual_seed(0)
            model = build_model(ModelConfig(ansatz), problem.sector).eval()
            with torch.no_grad():
                bits = sample(model, 1e12, args.unique, torch.Generator().manual_seed(0)).bits
                total, psi, evals, _, _ = timed_local_energy(h, bits, model.log_psi, args.repeats)
                d_total, d_psi, _, _, _ = timed_local_energy(h, bits, model.log_psi, args.repeats, dense=True)
            row = {"molecule": name, "ansatz": ansatz, "batch": bits.shape[0], "evals_per_config": evals / bits.shape[0],
                   "overhead_fraction": (total - psi) / total, "total_s": total, "psi_s": psi,
                   "dense_overhead_fraction": (d_total - d_psi) / d_total, "dense_total_s": d_total,
                   "threads": args.threads, "repeats": args.repeats}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| molecule | ansatz | B | evals/config | overhead | total s | overhead (per-string path) | total s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['molecule']} | {r['ansatz']} | {r['batch']} | {r['evals_per_config']:.2f} | "
              f"{r['overhead_fraction']:.3f} | {r['total_s']:.4f} | {r['dense_overhead_fraction']:.3f} | "
              f"{r['dense_total_s']:.4f} |")


if __name__ == "__main__":
    main()
