"""Lower a fitted run's energy on its target's determinants by projected imaginary time (`nqs.imaginary_time`).

RUN is a run fitted to a state (`--init-state`, or `--state`); the set S is that state's determinants with
|c| ≥ `--threshold`. H on S is built once into `--matrix-dir` in `--parts` row parts (float32 values) and read
from there afterwards; the parts may be built side by side by separate processes with `--build-only --part I/P`.
The network, from RUN's weights, is then refitted to φ = (1 − τ(H − E))ψ every `--refresh` steps for `--seconds`;
OUT becomes a run directory (RUN's config.yaml, checkpoints/last.ckpt with the weights of the lowest refresh)
that `scripts/support_energy.py` and `scripts/evaluate_energy.py` read, with imaginary_time.json (every refresh;
"finished" false until the end). Both are rewritten as the refit goes (the weights whenever a refresh is the lowest
so far), with checkpoints/resume.pt (the last refresh: weights, Adam's moments, the draws' generator, the steps and
seconds spent; removed at the end), so a killed refit loses at most one refresh: `imaginary_time_fit.py --resume
OUT` goes on as if it had never stopped, with its own settings and budget. A finished refit is continued with OUT
as RUN and a new --out (a fresh Adam and rate schedule: session 31 restarted H16 so from +4.779 mHa, at +4.849
after 300 steps at lr 1e-4, +4.804 at 3e-5, without the control variate; with it, session 32, from +4.680: +4.672
at 1e-4, +4.671 at 3e-5, where the plain fit read +4.681).

H16 (session 28, DMRG determinants with |c| ≥ 2e-5: 673,258, 5.5e8 elements, 4.1 GiB; ~400 s of one core to build):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/imaginary_time_fit.py runs/h16 --build-only --part 0/2 &
    OMP_NUM_THREADS=1 .venv/bin/python scripts/imaginary_time_fit.py runs/h16 --build-only --part 1/2; wait
    OMP_NUM_THREADS=1 .venv/bin/python scripts/imaginary_time_fit.py runs/h16 --parts 2 --out runs/h16-it --seconds 3600
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from nqs.cli.common import configure_process, parse_part
from nqs.errors import UserError, cli_entry
from nqs.excitations import IntegralHamiltonian
from nqs.imaginary_time import Refresh, imaginary_time_fit, load_operator, operator_part, restrict
from nqs.record import CHECKPOINT
from nqs.references import best_reference
from nqs.symmetry import target_projection
from nqs.target_states import STATES
from nqs.training.build import rebuild_fitted

RECORD = "imaginary_time.json"  # the refit's record in --out, rewritten at every refresh
RESUME = Path("checkpoints/resume.pt")  # the last refresh's whole state, rewritten at every refresh
SETTINGS = ("state", "threshold", "matrix_dir", "parts", "seconds", "steps", "tau", "lr", "lr_final", "batch",
            "refresh", "seed", "control", "symmetrize")  # what a resumed refit takes from its record


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, nargs="?", help="a run directory fitted to a state (its config.yaml and "
                                                           "weights)")
    ap.add_argument("--out", type=Path, default=None, help="the new run directory (not with --build-only)")
    ap.add_argument("--state", choices=STATES, default=None, help="the set's state (default: the run's init_state)")
    ap.add_argument("--threshold", type=float, default=2e-5, help="keep the state's determinants with |c| ≥ this")
    ap.add_argument("--matrix-dir", type=Path, default=None, help="where H on the set is kept (default: "
                                                                  "RUN/subset-matrix-THRESHOLD)")
    ap.add_argument("--parts", type=int, default=2, help="row parts of H on the set")
    ap.add_argument("--build-only", action="store_true", help="build (a part of) H on the set and stop")
    ap.add_argument("--part", default=None, help="I/P with --build-only: build only part I of P")
    ap.add_argument("--seconds", type=float, default=3600.0, help="the refit's wall-time budget")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many fit steps instead")
    ap.add_argument("--tau", type=float, default=0.2, help="imaginary-time step τ, 1/Hartree")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam's rate at the start")
    ap.add_argument("--lr-final", type=float, default=1e-5, help="... and at the end, along a cosine")
    ap.add_argument("--batch", type=int, default=4096, help="determinants a fit step reads (stratified)")
    ap.add_argument("--refresh", type=int, default=300, help="fit steps between exact energies and new φ")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--control", action=argparse.BooleanOptionalAction, default=True, help="the fit's control "
                    "variate: the plain fit's steps on average, with less scatter near the fit, at a refresh twice "
                    "as long (`nqs.imaginary_time`; on H16 8.7x less; --no-control: the plain fit)")
    ap.add_argument("--symmetrize", nargs="?", const="all", choices=("group", "all"), default=None, help="refit "
                    "and report the symmetry-projected network Pψ (`nqs.symmetry`): H's spin flip and orbital swaps "
                    "with the target state's characters (group), and ('all', the default) its total spin and the "
                    "real part (H16 on the same weights: +4.454 -> +3.256 -> +2.333 mHa)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="the network's and H's device (cpu, cuda, cuda:N)")
    ap.add_argument("--resume", type=Path, default=None, metavar="OUT", help="go on with the refit in OUT (its "
                    "--out, stopped before its end) from its last refresh, with its own settings (instead of RUN)")
    return ap.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse(argv)
    configure_process(args.threads)
    if (args.run is None) == (args.resume is None):
        raise UserError("give RUN (a fitted run to refit) or --resume OUT (a refit to go on with), not both")
    resumed = settings_to_resume(args) if args.resume else None
    if not args.build_only and not args.resume:
        refuse_used_out(args.out)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for but CUDA is not available here: use --device cpu")
    if args.tau < 0 or args.lr <= 0 or args.refresh < 1 or args.parts < 1 or args.batch < 2:
        raise UserError("--tau must be at least 0, --lr positive, and --refresh, --parts at least 1, --batch 2")
    start = time.perf_counter()
    _, problem, model, target = rebuild_fitted(args.run, args.state, args.threads)
    target = restrict(target, args.threshold)
    bits = target.bits
    directory = args.matrix_dir or args.run / f"subset-matrix-{args.threshold:g}"
    h = IntegralHamiltonian(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
    if args.build_only:
        part, parts = parse_part(args.part or f"0/{args.parts}")
        todo = [part] if args.part else range(parts)
        for i in todo:
            path = operator_part(h, bits, directory, i, parts)
            print(json.dumps({"part": f"{i}/{parts}", "saved": str(path), "determinants": bits.shape[0],
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        return
    operator = load_operator(bits, directory, args.parts)
    if operator is None:
        print(f"note: building H on {bits.shape[0]:,} determinants into {directory} ({args.parts} parts, one "
              f"process; --build-only --part I/P builds them side by side)", file=sys.stderr, flush=True)
        for i in range(args.parts):
            operator_part(h, bits, directory, i, args.parts)
        operator = load_operator(bits, directory, args.parts)
    if args.device != "cpu":  # H beside the network: a refresh's two products on the device
        operator.to(args.device)
    best = best_reference(problem.references)
    project, symmetries = (target_projection(problem, target, "--symmetrize", spin=args.symmetrize == "all",
                                             real=args.symmetrize == "all") if args.symmetrize else (None, None))
    if resumed is None:
        (args.out / CHECKPOINT.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(args.run / "config.yaml", args.out / "config.yaml")
    head = {"run": str(args.run), "determinants": bits.shape[0], "elements": operator.elements,
            "e_ref": best.energy if best else None, "ref_kind": best.kind if best else None,
            **{k: str(directory) if k == "matrix_dir" else getattr(args, k) for k in SETTINGS}, "state": target.kind,
            "batch": min(args.batch, bits.shape[0]), "symmetries": symmetries} | (resumed or {}).get("head", {})
    seen_so_far, lowest = [], []

    def save_lowest(seen, weights) -> None:  # as they come: a killed refit keeps its lowest refresh so far
        state = {"state_dict": {f"model.{k}": v.cpu() for k, v in weights.items()}, "refresh": asdict(seen)}
        atomic_write(args.out / CHECKPOINT, lambda path: torch.save(state, path))
        lowest.append(seen)  # the record follows in `report`, called next; the checkpoint names its refresh

    if resumed is not None:
        saved = resumed["saved"]
        saved |= {"refreshes": [Refresh(**r) for r in saved["refreshes"]], "best": Refresh(**saved["best"])}
        seen_so_far = list(saved["refreshes"])
        save_lowest(saved["best"], saved["best_weights"])  # again: a kill may have left a later refresh's there
        print(f"note: resuming {args.out} at step {saved['step']} ({saved['seconds']:.0f} s of {args.seconds:g} "
              f"spent; lowest refresh {saved['best'].energy:.8f} Ha)", file=sys.stderr, flush=True)

    def write_record(finished: bool, info: dict | None = None) -> dict:
        record = {**head, "finished": finished, **{k: v for k, v in (info or {}).items() if k != "refreshes"},
                  "best": asdict(lowest[-1]) if lowest else None, "refreshes": [asdict(r) for r in seen_so_far]}
        atomic_write(args.out / RECORD, lambda path: path.write_text(json.dumps(record, indent=1)))
        return record

    def report(seen) -> None:
        row = asdict(seen) | {"error_mha": (seen.energy - best.energy) * 1e3 if best else None,
                              "ref_kind": best.kind if best else None}
        seen_so_far.append(seen)
        write_record(False)  # before the row is printed: a printed refresh is on disk
        print(json.dumps(row), flush=True)

    def save_state(state) -> None:  # every refresh: what --resume goes on from
        state = state | {"refreshes": [asdict(r) for r in state["refreshes"]], "best": asdict(state["best"])}
        atomic_write(args.out / RESUME, lambda path: torch.save(state, path))

    info = imaginary_time_fit(model.to(args.device), bits, operator, args.seconds, args.tau, args.lr, args.lr_final,
                              args.batch, args.refresh, args.steps, args.seed, report, save_lowest, save_state,
                              resume=None if resumed is None else saved, control=args.control,
                              project=project)
    record = write_record(True, info)
    (args.out / RESUME).unlink(missing_ok=True)  # 4x the weights (Adam's moments), of no use once finished
    print(json.dumps({k: v for k, v in record.items() if k != "refreshes"}), flush=True)


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` then rename tmp to `path`: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def settings_to_resume(args: argparse.Namespace) -> dict:
    """With --resume OUT: the refit's settings are read back from OUT's record into `args`, and RUN becomes OUT
    (the network is rebuilt from there: its config.yaml is the fitted run's). Returns {"head": the record's head,
    "saved": RESUME's state}."""
    out = args.resume
    try:
        record = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        raise UserError(f"--resume {out}: no readable {RECORD}: give the --out of a refit that stopped") from None
    if record.get("finished"):
        raise UserError(f"--resume {out}: this refit finished; continue from it with "
                        f"`scripts/imaginary_time_fit.py {out} --matrix-dir DIR --out NEW`")
    record.setdefault("control", False)  # refits from before --control had none
    record["symmetrize"] = {True: "group", False: None}.get(record.get("symmetrize"), record.get("symmetrize"))
    # ... and before --symmetrize (None), or with the group's projection only (True then, "group" now)
    if not (out / RESUME).is_file() or any(k not in record for k in SETTINGS):
        raise UserError(f"--resume {out}: no {RESUME} (a refit from before --resume): continue from its lowest "
                        f"refresh with `scripts/imaginary_time_fit.py {out} --matrix-dir DIR --out NEW`")
    defaults = vars(parse([]))
    if given := [f"--{k.replace('_', '-')}" for k in SETTINGS if getattr(args, k) != defaults[k]]:
        raise UserError(f"--resume {out} goes on with the refit's own settings: drop {' '.join(given)} (to change "
                        f"them, continue from it with `scripts/imaginary_time_fit.py {out} ... --out NEW`)")
    try:
        saved = torch.load(out / RESUME, map_location="cpu")
    except Exception as e:  # a damaged file: say which, and the way on from the lowest refresh
        raise UserError(f"--resume {out}: {RESUME} is unreadable ({type(e).__name__}): continue from its lowest "
                        f"refresh with `scripts/imaginary_time_fit.py {out} --matrix-dir DIR --out NEW`") from None
    for k in SETTINGS:
        setattr(args, k, Path(record[k]) if k == "matrix_dir" else record[k])
    args.run, args.out, args.build_only = out, out, False
    return {"head": {k: record[k] for k in ("run", *SETTINGS)} | {"symmetries": record.get("symmetries")},
            "saved": saved}


def refuse_used_out(out: Path | None) -> None:
    """One line when --out is missing or already holds weights (a finished or a killed refit's, or a run's)."""
    if out is None:
        raise UserError("--out: give a new run directory for the refit")
    if not (out / CHECKPOINT).exists():
        return
    try:
        done = json.loads((out / RECORD).read_text())
        lowest = f"its lowest refresh, step {done['best']['step']} at {done['best']['energy']:.8f} Ha"
        stopped = not done["finished"] and (out / RESUME).is_file()
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--out {out}: give a new run directory (this one holds {CHECKPOINT})") from None
    if stopped:
        raise UserError(f"--out {out} holds a refit that stopped before its end ({lowest}): resume it with "
                        f"`scripts/imaginary_time_fit.py --resume {out}`, or give a new run directory")
    kind = "a finished refit" if done["finished"] else "a refit that stopped before its end"
    raise UserError(f"--out {out} holds {kind} ({lowest}): give a new run directory, or continue from it with "
                    f"`scripts/imaginary_time_fit.py {out} --matrix-dir DIR --out NEW`")


if __name__ == "__main__":
    main()
