"""nqs-compare: V-score and |E − E_ref| per molecule × ansatz (E_ref: the runs' best reference, FCI or DMRG, named in
the table), beside HF / CCSD / CCSD(T), as markdown."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nqs.cli.fit import plain_warnings
from nqs.errors import cli_entry
from nqs.scaling.compare import compare_runs, format_markdown
from nqs.scaling.runs import load_runs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nqs-compare", description=__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories of nqs-train, or folders searched recursively for them")
    p.add_argument("--json", metavar="FILE", help="write the table's rows as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar plot of |E − E_ref| and the V-score")
    p.add_argument("--by-size", action="store_true",
                   help="one row per model size (n_params) too, instead of averaging sizes together")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with plain_warnings():
        rows = compare_runs(load_runs(args.run_dirs), by_size=args.by_size)
        print(format_markdown(rows))
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
            print(f"wrote {out}", file=sys.stderr)
        if args.plot:
            from nqs.scaling.plots import plot_compare

            print(f"wrote {plot_compare(rows, args.plot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    main()
