"""Seconds of one stochastic-reconfiguration direction (`nqs.natural_gradient.sr_direction`) per ansatz.

The SR direction of a step on `--rows` unique configurations of the molecule's sector (drawn at random, random
weights, a random gradient: the cost does not depend on the values), the model at `nqs-train`'s sizes for the
molecule (MADE: `--made-hidden`). Best of `--repeats` calls after one warm-up, one torch thread. Prints one JSON
line per ansatz, then a table. To compare two versions of the code, run it under each one's PYTHONPATH in turn:

    PYTHONPATH=/path/to/old python scripts/bench_natural_gradient.py --molecule N2
    PYTHONPATH=. python scripts/bench_natural_gradient.py --molecule N2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time

import torch

from nqs.natural_gradient import SRSettings, sr_direction
from nqs.tables import markdown_table
from nqs.training.build import build
from nqs.training.config import TrainConfig


def commit() -> str:
    """The code's git commit (short), or 'unknown' outside a checkout."""
    import nqs

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=nqs.__path__[0]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(molecule: str, ansatz: str, options: dict, rows: int, repeats: int) -> dict:
    cfg = TrainConfig.from_flat({"mol": molecule, "ansatz": ansatz, **options})
    problem, model = build(cfg)
    generator = torch.Generator().manual_seed(0)
    configs = problem.sector.enumerate_bits() if problem.sector.size <= 10**6 else None
    if configs is None:
        raise SystemExit(f"{molecule}: sector of {problem.sector.size:,} configurations is too large to draw from")
    bits = configs[torch.randperm(configs.shape[0], generator=generator)[:rows]]
    weights = torch.rand(bits.shape[0], generator=generator)
    grad = torch.randn(model.n_params, generator=generator)
    settings = SRSettings(shift=1e-3, shift_final=1e-3, max_rows=rows, trust=None)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        sr_direction(model, bits, weights / weights.sum(), grad, settings, 0, 0.1)
        times.append(time.perf_counter() - start)
    return {"molecule": molecule, "ansatz": ansatz, "n_params": model.n_params, "rows": int(bits.shape[0]),
            "s_per_direction": min(times[1:]), "commit": commit()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecule", default="N2")
    parser.add_argument("--ansatze", nargs="+", default=["made", "transformer", "retnet"])
    parser.add_argument("--made-hidden", type=int, default=256, help="MADE hidden width (N2's recipe: 256)")
    parser.add_argument("--rows", type=int, default=256, help="Jacobian rows (the recipes' sr_rows)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for ansatz in args.ansatze:
        options = {"hidden": args.made_hidden} if ansatz == "made" else {}
        results.append(measure(args.molecule, ansatz, options, args.rows, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    print(markdown_table(["molecule", "ansatz", "parameters", "rows", "s per direction", "commit"],
                         [[r["molecule"], r["ansatz"], f"{r['n_params']:,}", r["rows"], f"{r['s_per_direction']:.4f}",
                           r["commit"]] for r in results]))


if __name__ == "__main__":
    main()
