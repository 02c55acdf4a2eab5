"""Steps and seconds until chemical accuracy, per molecule x ansatz x optimiser, with `nqs-train`'s defaults.

Each case runs `nqs-train --mol M --ansatz A --optimizer O [EXTRA...]` as its own process with one thread
and reads the run directory: the first step whose training estimate is within 1.6 mHa of FCI (counted only
when the final fresh-sample energy is within too: "confirmed"), the training seconds to that step (the sum of
the real step times, `wall_s`), the whole command's seconds, the final error and whether it beats CCSD(T).
Prints one JSON line per case, then a table.

    .venv/bin/python scripts/bench_time_to_accuracy.py --molecules LiH H2O N2 --out runs/tta
    .venv/bin/python scripts/bench_time_to_accuracy.py --molecules N2 --ansatze retnet --optimizers adam sr --jobs 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nqs.record import CHEMICAL_ACCURACY_MHA, read_metrics, read_summary
from nqs.tables import markdown_table


def run_case(molecule: str, ansatz: str, optimizer: str, out: Path, extra: list[str]) -> dict:
    chosen = [] if optimizer == "auto" else ["--optimizer", optimizer]  # auto: what nqs-train chooses by size
    command = [sys.executable, "-m", "nqs.cli.train", "--mol", molecule, "--ansatz", ansatz, *chosen,
               "--no-progress", "--threads", "1", "--out", str(out), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    case = {"molecule": molecule, "ansatz": ansatz, "optimizer": optimizer}
    if done.returncode != 0:
        return {**case, "error": done.stderr.strip().splitlines()[-1:] or ["failed"], "command": " ".join(command)}
    summary, rows = read_summary(out), read_metrics(out)
    case.update(optimizer=summary.optimizer, optimizer_flag=optimizer)  # auto: the one nqs-train chose
    final_ok = bool(summary.within_chemical_accuracy)
    first = next((r for r in rows if r.error_mha is not None and abs(r.error_mha) < CHEMICAL_ACCURACY_MHA), None)
    reached = first is not None and final_ok
    ccsd_t = summary.ccsd_t_error_mha
    return {**case, "steps_to_accuracy": first.step + 1 if reached else None,
            "seconds_to_accuracy": round(first.wall_s, 1) if reached else None,
            "final_error_mha": summary.error_mha, "ccsd_t_error_mha": ccsd_t,
            "beats_ccsd_t": None if summary.error_mha is None or ccsd_t is None
            else abs(summary.error_mha) < abs(ccsd_t),
            "steps": summary.steps, "train_s": round(summary.wall_s, 1), "command_s": round(seconds, 1),
            "stop_reason": summary.stop_reason, "n_params": summary.n_params,
            "command": " ".join(["nqs-train", *command[3:]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=["LiH", "H2O", "N2"])
    parser.add_argument("--ansatze", nargs="+", default=["made", "transformer", "retnet"])
    parser.add_argument("--optimizers", nargs="+", default=["auto", "adam"],
                        help="adam, sr, adam+sr, or auto (no --optimizer: the size-dependent defaults)")
    parser.add_argument("--out", default="runs/time-to-accuracy", help="root of the run directories")
    parser.add_argument("--jobs", type=int, default=1, help="cases at a time (one thread each)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to every nqs-train")
    args = parser.parse_args()
    root = Path(args.out)
    cases = [(m, a, o) for m in args.molecules for a in args.ansatze for o in args.optimizers]
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_case, m, a, o, root / f"{m}-{a}-{o}", args.extra) for m, a, o in cases]
        rows = []
        for job in jobs:
            row = job.result()
            print(json.dumps(row), flush=True)
            rows.append(row)

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    print()
    print(markdown_table(
        ["molecule", "ansatz", "optimizer", "steps to 1.6 mHa", "s to 1.6 mHa", "final error mHa", "CCSD(T) mHa",
         "beats CCSD(T)", "steps", "command s"],
        [[r["molecule"], r["ansatz"], r["optimizer"], fmt(r.get("steps_to_accuracy"), "d"),
          fmt(r.get("seconds_to_accuracy"), ".1f"), fmt(r.get("final_error_mha"), "+.3f"),
          fmt(r.get("ccsd_t_error_mha"), "+.3f"), fmt(r.get("beats_ccsd_t"), ""), fmt(r.get("steps"), "d"),
          fmt(r.get("command_s"), ".1f")] for r in rows]))


if __name__ == "__main__":
    main()
