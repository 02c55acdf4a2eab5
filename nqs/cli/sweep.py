"""`nqs-sweep FILE.yaml`: run a grid of nqs-train runs (ansatz x sizes x steps x molecules x seeds), resumable.

Runs execute one after another in this process (--jobs 1 only), each an ordinary nqs-train run directory
under the sweep's out folder. Running the same command again skips finished runs (summary.json) and resumes
an interrupted one from its checkpoint. One line per run: index/total, the grid's values, the final error
in mHa, the V-score, N, D' and the wall time. Format of FILE: see configs/sweeps/demo.yaml and
nqs/scaling/sweep.py. Then: nqs-fit OUT/<ansatz>_* --metric vscore; nqs-compare OUT --by-size.
"""
from __future__ import annotations

import argparse
import sys
import time

from nqs.cli.common import configure_process
from nqs.errors import UserError, cli_entry
from nqs.scaling.sweep import execute, load_sweep, plan_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nqs-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE.yaml", help="sweep file: base:, grid:, out: (configs/sweeps/)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs, their directories and status (finished / to resume / new); run nothing")
    p.add_argument("--out", help="root folder of the runs (overrides the file's out:)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time; only 1 is supported (sequential, in this process)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs != 1:
        raise UserError(f"--jobs {args.jobs}: only --jobs 1 is supported; runs execute one after another in this "
                        f"process (start several nqs-sweep commands with different out: to run in parallel)")
    sweep = load_sweep(args.file, out=args.out)
    if args.dry_run:
        print(plan_table(sweep))
        return 0
    print(f"nqs-sweep {args.file}: {len(sweep.runs)} runs under {sweep.out}", flush=True)
    if sweep.runs:  # threads do not change a result; the base's (or the first run's) count holds for all
        configure_process(sweep.runs[0].config.run.threads)
    start = time.perf_counter()
    try:
        outcomes = execute(sweep, echo=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"\ninterrupted: the current run's checkpoint is saved; run `nqs-sweep {args.file}` again to "
              f"continue", file=sys.stderr)
        return 130
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ran", "resumed", "skipped", "failed")}
    print(f"done in {time.perf_counter() - start:.1f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f". Next: nqs-compare {sweep.out} --by-size; nqs-fit {sweep.out}/<ansatz>_* --metric vscore")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
