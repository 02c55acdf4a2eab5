"""The energy of a run's saved weights, evaluated afresh: the final-energy evaluation alone, no training.

Reads RUN/config.yaml (molecule, model, references, local energy), loads the weights of RUN/checkpoints/
lowest.ckpt (or last.ckpt, or any .ckpt of the same model), and runs `nqs.training.module.evaluate_energy`
with the final-sample options given here (defaults: the run's own). Prints one JSON line and a sentence:
the energy with its error, the kept mass, what the tail draw moved (`--final-tail`, docs/guide.md "The final
energy's tail") and the error against the best reference. It runs on the CPU; RUN is only read.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/evaluate_energy.py runs/h16 --final-unique 8000 --final-tail 4096
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nqs.cli.common import configure_process
from nqs.errors import cli_entry
from nqs.record import LOWEST_CHECKPOINT
from nqs.references import best_reference
from nqs.training.build import build
from nqs.training.config import FIELDS, load_yaml, resolve
from nqs.training.module import evaluate_energy


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run directory (its config.yaml)")
    ap.add_argument("--checkpoint", default=None, help="a .ckpt file (default: RUN/checkpoints/lowest.ckpt, "
                                                        "else RUN/checkpoints/last.ckpt)")
    ap.add_argument("--final-samples", type=float, default=None, help="N_s of the sample (default: the run's)")
    ap.add_argument("--final-unique", type=int, default=None, help="its unique cap (default: the run's)")
    ap.add_argument("--final-tail", type=int, default=None, help="the tail draw's size (default: the run's, "
                                                                 "4,096 for runs before it existed)")
    ap.add_argument("--final-local-energy", default=None, help="exact | as-trained (default: the run's)")
    ap.add_argument("--seed", type=int, default=None, help="the sample's seed (default: the run's)")
    ap.add_argument("--local-energy-memory", type=float, default=None,
                    help="GiB of candidate pairs a chunk of the local energy holds (default: the run's)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return ap.parse_args(argv)


def checkpoint_of(run: Path, given: str | None) -> Path:
    if given is not None:
        return Path(given)
    lowest = run / LOWEST_CHECKPOINT
    return lowest if lowest.is_file() else run / "checkpoints" / "last.ckpt"


@cli_entry
def main(argv=None) -> None:
    args = parse(argv)
    configure_process(args.threads)
    given = {"final_samples": args.final_samples, "final_unique": args.final_unique, "final_tail": args.final_tail,
             "final_local_energy": args.final_local_energy, "seed": args.seed,
             "local_energy_memory": args.local_energy_memory}
    saved = load_yaml(args.run / "config.yaml")
    dropped = sorted(k for k in saved if str(k).replace("-", "_") not in FIELDS)
    if dropped:  # a run of an older version: its options that no longer exist did not change the weights' energy
        print(f"note: {args.run / 'config.yaml'}: options this version does not have, ignored: {', '.join(dropped)}",
              file=sys.stderr)
    ckpt = checkpoint_of(args.run, args.checkpoint)
    layers = [(str(args.run / "config.yaml"), {k: v for k, v in saved.items() if k not in dropped}),
              ("arguments", {k: v for k, v in given.items() if v is not None} | {"init_from": str(ckpt),
                                                                                  "init_state": None})]
    cfg = resolve(layers).validate()
    start = time.perf_counter()
    problem, model = build(cfg)  # nqs-train's own: the problem, the model and the checkpoint's weights
    model.eval()
    hamiltonian = problem.compiled(torch.device("cpu"), cfg.connections_used)
    s = cfg.sampling
    t0 = time.perf_counter()
    result = evaluate_energy(model, hamiltonian, s.final_samples, s.final_unique, cfg.run.seed,
                             cfg.optim.eval_chunk, cfg.final_local_energy_mode(), s.final_tail)
    best = best_reference(problem.references)
    stats, tail = result.stats, result.tail
    row = {"run": str(args.run), "checkpoint": str(ckpt), "molecule": cfg.label, "energy": stats.mean,
           "energy_err": stats.error, "variance": stats.variance, "final_unique": s.final_unique,
           "final_tail": s.final_tail, "n_unique": result.samples.n_unique, "kept_mass": stats.kept_mass,
           "tail": None if tail is None else tail.to_json(), "e_ref": best.energy if best else None,
           "ref_kind": best.kind if best else None,
           "error_mha": (stats.mean - best.energy) * 1e3 if best else None, "seed": cfg.run.seed,
           "t_evaluate_s": round(time.perf_counter() - t0, 1), "t_total_s": round(time.perf_counter() - start, 1)}
    print(json.dumps(row))
    moved = "" if tail is None else (f"; the tail moved it by {tail.correction * 1e3:+.3f} ± {tail.error * 1e3:.3f}"
                                     f" mHa (head mass {tail.head_mass:.6f})")
    against = "" if best is None else f", {row['error_mha']:+.3f} mHa vs {best.kind}"
    print(f"{cfg.label}: E = {stats.mean:.8f} ± {stats.error:.2e} Ha{against}{moved}")


if __name__ == "__main__":
    main()
