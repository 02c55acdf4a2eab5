"""The exact energy of a run's network on a target state's determinants, and of the target itself: no sampling.

With c the state a fit aims at (`--init-state` of the run, or `--state`: its CISD, CCSD or DMRG determinants S,
built or read from the cache with the run's settings) and v the run's network ψ on S (`--of model`, the default)
or c itself (`--of target`), prints for each threshold t the energy of v kept where |c| ≥ t,
E_t = ⟨v_t|H|v_t⟩ / ⟨v_t|v_t⟩ (`nqs.exact.subset_energies`), against the run's best reference. Each is the
variational energy of a state on those determinants: for the model at t = 0, its energy with its probability
outside S (1 − Σ_S |ψ|², printed as `norm_on_kept`) taken away, which is what a sampled energy cannot separate from
its noise; at larger t, how much of the error sits above t. For the target, what the fit could reach at best.

H16's DMRG state (1,256,599 determinants) takes ~500 s of one core per half (timed on 2,048-row slices); run
the halves side by side:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/support_energy.py runs/h16 --part 0/2 --save /tmp/p0.npy &
    OMP_NUM_THREADS=1 .venv/bin/python scripts/support_energy.py runs/h16 --part 1/2 --save /tmp/p1.npy; wait
    .venv/bin/python scripts/support_energy.py runs/h16 --combine /tmp/p0.npy /tmp/p1.npy
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nqs.cli.common import configure_process, parse_part
from nqs.errors import UserError, cli_entry
from nqs.excitations import IntegralHamiltonian
from nqs.exact import subset_energies
from nqs.pretrain import amplitudes_on
from nqs.references import best_reference
from nqs.symmetry import target_projection
from nqs.tables import markdown_table
from nqs.target_states import STATES
from nqs.training.build import rebuild_fitted

THRESHOLDS = (0.0, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run directory (its config.yaml and saved weights)")
    ap.add_argument("--of", choices=("model", "target"), default="model", help="whose amplitudes on the set")
    ap.add_argument("--state", choices=STATES, default=None, help="the set: this state's determinants "
                                                                   "(default: the run's --init-state)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS, help="|c| thresholds")
    ap.add_argument("--part", default="0/1", help="I/P: only the I-th of P shares of the rows (with --save)")
    ap.add_argument("--save", type=Path, default=None, help="save this part's sums here (.npy) and stop")
    ap.add_argument("--combine", type=Path, nargs="+", default=None, help="add saved parts instead of computing")
    ap.add_argument("--symmetrize", nargs="?", const="all", choices=("group", "all"), default=None, help="the "
                    "network projected on H's symmetries, Pψ (`nqs.symmetry`; what `imaginary_time_fit.py "
                    "--symmetrize` reports): the spin flip and orbital swaps (group) and ('all', the default) the "
                    "total spin and the real part")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return ap.parse_args(argv)


def combine(paths: list[Path], thresholds, K: int, symmetrized: str | None = None) -> np.ndarray:
    """The sums of saved parts, checked: the same thresholds, set and `--symmetrize`, rows covering it once."""
    total, covered = 0, []
    for path in paths:
        try:
            with np.load(path) as part:
                sums, cuts, rows, k = (part[key] for key in ("numerators", "thresholds", "rows", "determinants"))
                projected = _projection_saved(part)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"--combine: {path} is not a part saved by --save ({type(exc).__name__})") from None
        if int(k) != K or not np.array_equal(cuts, np.asarray(thresholds, dtype=float)):
            raise UserError(f"--combine: {path} was saved for another set or other --thresholds "
                            f"({int(k):,} determinants, thresholds {cuts.tolist()}): give the same ones")
        if projected != symmetrized:
            raise UserError(f"--combine: {path} was saved {_flag(projected)}: combine it {_flag(projected)} too")
        total, covered = total + sums, covered + [tuple(int(r) for r in rows)]
    covered.sort()
    tiled = all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    if not tiled or covered[0][0] != 0 or covered[-1][1] != K:
        raise UserError(f"--combine: the parts cover rows {covered}, not 0 to {K:,} once each: give every part")
    return total


def _projection_saved(part) -> str | None:
    """The --symmetrize a part was saved with: None, "group" (a part of session 33: True) or "all"."""
    if "symmetrized" not in part.files:
        return None
    value = part["symmetrized"].item()
    if isinstance(value, bool):
        return "group" if value else None
    return str(value) or None


def _flag(projection: str | None) -> str:
    return "without --symmetrize" if projection is None else f"with --symmetrize {projection}"


@cli_entry
def main(argv=None) -> None:
    args = parse(argv)
    configure_process(args.threads)
    part, parts = parse_part(args.part)
    if parts > 1 and args.save is None:
        raise UserError("--part without --save: a part's sums are only useful saved (then --combine them)")
    start = time.perf_counter()
    _, problem, model, target = rebuild_fitted(args.run, args.state, args.threads)
    c = target.amplitudes.to(torch.float64)
    values = amplitudes_on(model.eval(), target.bits) if args.of == "model" else c
    if args.symmetrize:
        full = args.symmetrize == "all"
        values = target_projection(problem, target, spin=full, real=full)[0](values.to(torch.complex128))
    h = IntegralHamiltonian(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
    K = c.shape[0]
    if args.combine is not None:
        numerators = torch.from_numpy(combine(args.combine, args.thresholds, K, args.symmetrize))
        _, norms = subset_energies(h, target.bits, values, c.abs(), args.thresholds, rows=(0, 0))
    else:
        rows = (K * part // parts, K * (part + 1) // parts)
        shown = [0.0]

        def progress(done: int, total: int) -> None:  # every tenth of the rows, to stderr
            if done >= total or done / total >= shown[0] + 0.1:
                shown[0] = done / total
                print(f"rows {done:,} of {total:,} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

        numerators, norms = subset_energies(h, target.bits, values, c.abs(), args.thresholds, rows=rows,
                                            report=progress)
        if args.save is not None:
            with open(args.save, "wb") as f:  # exactly this path (np.savez would add .npz)
                np.savez(f, numerators=numerators.numpy(), thresholds=np.asarray(args.thresholds), rows=rows,
                         determinants=K, symmetrized=args.symmetrize or "")
            print(json.dumps({"part": args.part, "rows": rows, "saved": str(args.save),
                              "seconds": round(time.perf_counter() - start, 1)}))
            return
    best = best_reference(problem.references)
    out = []
    for t, num, norm in zip(args.thresholds, numerators.tolist(), norms.tolist()):
        e = num.real / norm
        out.append({"run": str(args.run), "of": args.of, "symmetrized": args.symmetrize, "state": target.kind,
                    "threshold": t,
                    "determinants": int((c.abs() >= t).sum()), "norm_on_kept": norm, "energy": e,
                    "e_ref": best.energy if best else None, "ref_kind": best.kind if best else None,
                    "error_mha": (e - best.energy) * 1e3 if best else None, "imag": num.imag / norm})
        print(json.dumps(out[-1]))
    print(markdown_table(["|c| ≥", "determinants", "Σ|v|² on them", "energy (Ha)", "vs reference (mHa)"],
                         [[f"{r['threshold']:g}", f"{r['determinants']:,}", f"{r['norm_on_kept']:.6f}",
                           f"{r['energy']:.8f}", "—" if r["error_mha"] is None else f"{r['error_mha']:+.3f}"]
                          for r in out], ["right"] * 5), file=sys.stderr)


if __name__ == "__main__":
    main()
