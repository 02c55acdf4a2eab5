"""`nqs-curve`: a potential-energy curve by VMC, one warm-started NQS run per geometry.

  nqs-curve --mol H2 --bond 0.4:4.0:0.1 --out curves/h2 --json h2.json --plot h2.png
  nqs-curve --mol H2 --charge 2 --bond 0.5:3.0:0.25 --out curves/h2-2plus     # no electrons: 1/R exactly
  nqs-curve --geometry "O 0 0 0; H 0.757 0.586 0; H -0.757 0.586 0" --atom O --bond 0.8:2.0:0.2 --out curves/h2o
  nqs-curve --geometry "H 0 0 0; H 0 0 0.74; H 0 0 10; H 0 0 10.74" --fragment 2 --bond 3:10:1 --out curves/h4

--bond START:STOP:STEP (or a list a,b,c) in Å scans the bond of a diatomic (atom 2 moves along the axis);
--atom CENTRE stretches the bonds to CENTRE symmetrically; --fragment K pulls atoms K+1.. apart from 1..K.
A from-scratch run of --first-steps (default --steps) at the first geometry (OUT/start/) starts the chain;
every geometry then trains --steps-per-point from the previous run's parameters, in orbitals matched to that
run's (signs and order), without annealing unless --anneal-per-point is given, at peak rate --lr-per-point
(default --lr). Geometries train in the order given; --meet R splits them into two chains that meet at R,
the second starting from the last geometry (a stretched bond is reached far more easily from the
stretched side). Each geometry is a run
directory OUT/r=1.200/; rerunning the same command (or nqs-curve --resume OUT) skips the finished geometries
and continues an interrupted one; every geometry's Hamiltonian is cached, so a rerun builds nothing again.
Every nqs-train option is accepted. Sectors of at most 16 configurations (H2, H2+) train in float64 with
lr 3e-2 unless --dtype / --lr are given (a note says so, in the output and in every run record); a
one-configuration sector (no electrons) is exact without training. Each point's summary.json carries the
molecule's name and its scan coordinate.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import yaml

from nqs.cli.common import configure_process
from nqs.errors import UserError, cli_entry
from nqs.record import CHEMICAL_ACCURACY_MHA
from nqs.tables import markdown_table
from nqs.training.config import FIELDS, RESULT_NEUTRAL, TrainConfig, load_yaml, resolve

CURVE_FLAGS = ("bond", "atom", "fragment", "first_steps", "steps_per_point", "anneal_per_point", "lr_per_point",
               "meet")


def build_parser() -> argparse.ArgumentParser:
    from nqs.cli.train import build_parser as train_parser

    parser = train_parser()
    parser.prog, parser.description = "nqs-curve", __doc__
    resume = next(a for a in parser._actions if a.dest == "resume")  # here it names the curve directory
    resume.metavar, resume.help = "OUT", "continue the curve in OUT with its saved settings (curve.yaml)"
    g = parser.add_argument_group("curve")
    g.add_argument("--bond", help="distances in Å: START:STOP:STEP (stop included) or a list 0.9,1.1,1.4 "
                                  "(trained in this order)")
    g.add_argument("--atom", help="centre atom (symbol or 1-based number): symmetric stretch of its bonds")
    g.add_argument("--fragment", type=int, metavar="K", help="separate atoms 1..K from the rest (centroid distance)")
    g.add_argument("--first-steps", type=int, help="steps of the from-scratch run at the first geometry "
                                                  "(default: --steps)")
    g.add_argument("--steps-per-point", type=int, help="steps of each warm-started geometry "
                                                      "(default: a quarter of --first-steps, at least 50)")
    g.add_argument("--anneal-per-point", type=float, metavar="T0",
                   help="annealing temperature (Ha) of the warm-started geometries (default 0: none)")
    g.add_argument("--lr-per-point", type=float, metavar="LR",
                   help="peak learning rate of the warm-started geometries (default: --lr)")
    g.add_argument("--meet", type=float, metavar="R",
                   help="two chains: the distances up to R (as listed) from a start run at the first, the rest "
                        "backwards from a start run at the last (OUT/start-last/)")
    g.add_argument("--parallel-chains", action="store_true",
                   help="with --meet: train the two chains at once, one process each (--threads each)")
    g.add_argument("--json", metavar="FILE", help="write the curve as a JSON list of points")
    g.add_argument("--plot", metavar="FILE.png", help="plot energies and |errors| vs r")
    g.add_argument("--stop-after-points", type=int, help=argparse.SUPPRESS)  # testing aid: Ctrl-C after K points
    return parser


def resolve_curve(args: argparse.Namespace):
    """(base TrainConfig, CurveSettings, curve directory, notes) from --resume, presets, --config and flags;
    the notes say which defaults the curve changed."""
    from nqs.cli.train import preset_and_config_layers
    from nqs.curve import CurveSettings, settings_record

    flags = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    curve_flags = {k: getattr(args, k) for k in CURVE_FLAGS if getattr(args, k) is not None}
    layers, saved_notes = [], ()
    if args.resume:
        path = Path(args.resume) / "curve.yaml"
        if not path.is_file():
            raise UserError(f"--resume {args.resume}: no curve.yaml there; give a directory written by nqs-curve")
        saved = load_yaml(path)
        layers.append((str(path), saved.get("train", {})))
        curve_flags = {**saved.get("curve", {}), **curve_flags}
        saved_notes = tuple(str(n) for n in saved.get("notes") or ())
        flags["out"] = str(args.resume)
    layers += preset_and_config_layers(args)
    explicit = {k.replace("-", "_") for _, mapping in layers for k in mapping} | set(flags)
    flags.setdefault("progress", False)
    layers.append(("command line", flags))
    cfg = resolve(layers)
    if not curve_flags.get("bond"):
        raise UserError("give the scan: --bond START:STOP:STEP in Å (e.g. --bond 0.5:3.0:0.1) or a list 0.9,1.1")
    settings = CurveSettings(**{k: v for k, v in curve_flags.items() if v is not None and k in CURVE_FLAGS})
    if args.parallel_chains and settings.meet is None:
        raise UserError("--parallel-chains trains the two chains of --meet R at once: add --meet R")
    if cfg.run.devices * cfg.run.num_nodes > 1:
        raise UserError("nqs-curve trains one geometry after another on one device: drop --devices/--num-nodes "
                        "(run several curves side by side instead)")
    out = Path(cfg.run.out) if cfg.run.out else Path("runs") / (f"curve-{cfg.label}-{cfg.model.ansatz}-"
                                                                f"{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = cfg.updated(out=str(out))
    cfg, notes = _tiny_sector_defaults(cfg, settings, explicit)
    saved_path = out / "curve.yaml"
    if saved_path.is_file() and not args.resume:
        _check_same_curve(load_yaml(saved_path), settings_record(cfg, settings), out)
    return cfg, settings, out, tuple(dict.fromkeys(saved_notes + notes))


def _tiny_sector_defaults(cfg: TrainConfig, settings, explicit: set[str]) -> tuple[TrainConfig, tuple[str, ...]]:
    """nqs.curve.tiny_sector_defaults for the sector of the first geometry (its canonical problem, cached)."""
    from nqs.curve import (
        base_molecule,
        chains,
        point_config,
        point_problem,
        tiny_sector_defaults,
    )
    from nqs.scan import make_scan

    spec = base_molecule(cfg)
    scan = make_scan(spec, settings.bond, settings.atom, settings.fragment)
    chains(scan.values, settings.meet)  # a --meet off the scan fails now
    first = scan.geometry(spec, scan.values[0])
    problem = point_problem(point_config(cfg, first, Path(cfg.run.out), 1, None), first, None).problem
    return tiny_sector_defaults(cfg, problem.sector.size, explicit)


def _same(value):
    return tuple(value) if isinstance(value, list) else value


def _check_same_curve(saved: dict, new: dict, out: Path) -> None:
    import dataclasses

    from nqs.curve import CurveSettings

    old_train = {**TrainConfig().flat(), **saved.get("train", {})}  # an option newer than the saved curve: default
    differ = [k for k in new["train"] if k not in RESULT_NEUTRAL and _same(old_train.get(k)) != _same(new["train"][k])]
    old_curve = {**{f.name: f.default for f in dataclasses.fields(CurveSettings)}, **saved.get("curve", {})}
    differ += [k for k in new["curve"] if k != "bond" and old_curve.get(k) != new["curve"][k]]
    if differ:
        old = saved.get("train", {}) | saved.get("curve", {})
        now = new["train"] | new["curve"]
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {now[k]!r} now" for k in differ[:3])
        raise UserError(f"{out} holds a curve with other settings ({detail}): continue it with nqs-curve --resume "
                        f"{out}, or choose another --out")


def curve_table(points) -> str:
    """A Markdown table, one row per geometry: energies in Hartree, errors vs FCI in mHa."""

    def e(v):
        return f"{v:.8f}" if v is not None else "—"

    def m(v):
        return f"{v:+.4f}" if v is not None else "—"

    rows = [[f"{p.r:.3f}", e(p.summary.energy), f"{p.summary.energy_err:.1e}", e(p.summary.e_hf),
             e(p.summary.e_ccsd), e(p.summary.e_ccsd_t), e(p.summary.e_fci), m(p.error_mha), m(p.ccsd_t_error_mha),
             f"{p.summary.steps}{' (exact)' if p.summary.exact else ''}"] for p in points]
    lines = [markdown_table(["r (Å)", "E_NQS (Ha)", "±", "HF", "CCSD", "CCSD(T)", "FCI", "NQS − FCI (mHa)",
                             "CCSD(T) − FCI (mHa)", "steps"], rows, align=["right"] * 10)]
    within = [p.summary.within_chemical_accuracy for p in points if p.error_mha is not None]
    if within:
        worst = max(abs(p.error_mha) for p in points if p.error_mha is not None)
        lines.append(f"max |NQS − FCI| = {worst:.4g} mHa over {len(within)} points ({sum(within)} within chemical "
                     f"accuracy, {CHEMICAL_ACCURACY_MHA} mHa)")
    return "\n".join(lines)


def write_json(points, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([p.record() for p in points], indent=1) + "\n")


METHODS = (("HF", "e_hf", ":", "s", "tab:blue"), ("CCSD", "e_ccsd", "--", "^", "tab:orange"),
           ("CCSD(T)", "e_ccsd_t", "-.", "v", "tab:green"), ("FCI", "e_fci", "-", None, "tab:red"))


def plot_curve(points, path: Path, title: str) -> None:
    """Energies vs r (NQS with error bars, HF, CCSD, CCSD(T), FCI) and |E - E_FCI| vs r on a log scale;
    one colour per method in both panels, the legend beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = [p.r for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.4, 7.2), sharex=True)
    floor = 1e-13
    for label, key, line, marker, colour in METHODS:
        values = [getattr(p.summary, key) for p in points]
        if all(v is not None for v in values):
            top.plot(r, values, line, color=colour, lw=1.2, label=label)
        pairs = [(p.r, abs(getattr(p.summary, key) - p.summary.e_fci)) for p in points
                 if marker and getattr(p.summary, key) is not None and p.summary.e_fci is not None]
        if pairs:
            bottom.semilogy([a for a, _ in pairs], [max(b, floor) for _, b in pairs], line, marker=marker, ms=4,
                            lw=1, color=colour)
    if points and all(p.summary.exact for p in points) and abs(points[0].e_nuc - points[0].summary.energy) < 1e-6:
        top.plot(r, [p.e_nuc for p in points], "-", color="0.75", lw=5, zorder=0, label="Coulomb Z₁Z₂/R")
    top.errorbar(r, [p.summary.energy for p in points], yerr=[p.summary.energy_err for p in points], fmt="o", ms=4,
                 color="k", label="NQS", zorder=3)
    bottom.semilogy(r, [max(abs(p.error_mha) / 1e3, floor) if p.error_mha is not None else float("nan")
                        for p in points], "-o", color="k", ms=4, lw=1, zorder=3)
    bottom.axhline(CHEMICAL_ACCURACY_MHA / 1e3, color="0.4", lw=0.8, ls=(0, (6, 3)),
                   label=f"chemical accuracy ({CHEMICAL_ACCURACY_MHA} mHa)")
    top.set_ylabel("energy (Ha)")
    top.set_title(title)
    bottom.set_ylabel(f"|E − E_FCI| (Ha; floor {floor:g})")
    bottom.set_xlabel("r (Å)")
    handles = top.get_legend_handles_labels()[0] + bottom.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg, settings, out, notes = resolve_curve(args)
    configure_process(cfg.run.threads)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own deprecation, once per geometry
    from nqs.curve import curve_lock, run_curve, settings_record

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the curve directory {out} ({exc.strerror}): choose another --out") from None
    start = time.perf_counter()
    with curve_lock(out):
        (out / "curve.yaml").write_text(yaml.safe_dump(settings_record(cfg, settings, notes), sort_keys=False))
        print(f"curve directory: {out}", flush=True)
        for note in notes:
            print(f"note: {note}", flush=True)
        try:
            points = run_curve(cfg, settings, out, log=lambda line: print(line, flush=True),
                               stop_after=args.stop_after_points, parallel=args.parallel_chains, notes=notes,
                               initializer=configure_process)
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished geometries are kept in {out}; continue with nqs-curve --resume {out}",
                  file=sys.stderr)
            raise SystemExit(130) from None
    print(curve_table(points))
    print(f"wall time {time.perf_counter() - start:.1f} s for this command")
    if args.json:
        write_json(points, Path(args.json))
    if args.plot:
        name = points[0].summary.molecule if points else cfg.label
        plot_curve(points, Path(args.plot), f"{name}: {cfg.model.ansatz} NQS vs references")


if __name__ == "__main__":
    main()
