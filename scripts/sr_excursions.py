"""How far the SR phase of finished runs strayed: per run, from metrics.jsonl.

For each run directory: the SR steps, the largest training-energy error during them (mHa, and its step), how
many steps were above 10 mHa, the realised Fubini–Study distance of the steps against their linearised length
lr·√(dᵀSd) (median, 90%, 99%, max of the ratio; needs runs with `--sr-max-leak` or `--sr-max-distance`, which
record `sr_distance`), the largest realised distance, the steps halved by the limits, and the final error (the summary's, else the last step's).

    .venv/bin/python scripts/sr_excursions.py RUN [RUN ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nqs.record import SUMMARY_FILE, read_metrics, read_summary


def excursions(run: Path) -> dict:
    rows = read_metrics(run)
    sr = [r for r in rows if r.sr_metric_step is not None]
    if not sr:
        return {"run": str(run), "sr_steps": 0}
    err = np.array([r.error_mha for r in sr])
    out = {"run": str(run), "sr_steps": len(sr), "max_error_mha": float(err.max()),
           "max_error_step": sr[int(err.argmax())].step, "steps_above_10_mha": int((err > 10).sum()),
           "halved_steps": sum(1 for r in sr if r.sr_leak_halvings),
           "final_error_mha": read_summary(run).error_mha if (run / SUMMARY_FILE).exists() else rows[-1].error_mha}
    with_distance = [r for r in sr if r.sr_distance is not None and r.sr_metric_step > 0]
    if with_distance:
        ratio = np.array([r.sr_distance / r.sr_metric_step for r in with_distance])
        out["distance_ratio_q50_q90_q99_max"] = [round(float(q), 2) for q in np.quantile(ratio, [0.5, 0.9, 0.99, 1])]
        out["max_distance"] = max(r.sr_distance for r in with_distance)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished nqs-train run directories")
    args = parser.parse_args()
    rows = [excursions(run) for run in args.runs]
    for row in rows:
        print(json.dumps(row))
    print("\n| run | SR steps | max error mHa (step) | steps > 10 mHa | realised / linearised (50/90/99%/max) "
          "| max distance | halved | final mHa |\n|---|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        if not r["sr_steps"]:
            print(f"| {r['run']} | 0 | | | | | | |")
            continue
        q = " / ".join(str(x) for x in r.get("distance_ratio_q50_q90_q99_max", [])) or "—"
        dist = f"{r['max_distance']:.3f}" if "max_distance" in r else "—"
        print(f"| {r['run']} | {r['sr_steps']} | {r['max_error_mha']:.1f} ({r['max_error_step']}) | "
              f"{r['steps_above_10_mha']} | {q} | {dist} | {r['halved_steps']} | {r['final_error_mha']:+.3f} |")


if __name__ == "__main__":
    main()
