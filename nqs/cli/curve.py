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
and continues an interrupted one. Every nqs-train option is accepted. Sectors of at most 16 configurations
(H2, H2+) train in float64 with lr 3e-2 unless --dtype / --lr are given; a one-configuration sector (no
electrons) is exact without training.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import yaml

from nqs.errors import UserError, cli_entry
from nqs.training.config import TrainConfig, load_yaml, resolve

# Training fields that do not change a curve's numbers: a rerun may differ in them.
NEUTRAL = {"out", "progress", "device", "devices", "num_nodes", "strategy", "checkpoint_every", "eval_chunk",
           "threads"}


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
    """(base TrainConfig, CurveSettings, curve directory) from --resume, presets, --config and flags."""
    from nqs.cli.train import preset_and_config_layers
    from nqs.curve import CurveSettings, settings_record

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    curve_flags = {k: getattr(args, k) for k in ("bond", "atom", "fragment", "first_steps", "steps_per_point",
                                                  "anneal_per_point", "lr_per_point", "meet") if getattr(args, k) is not None}
    layers, saved = [], None
    if args.resume:
        path = Path(args.resume) / "curve.yaml"
        if not path.is_file():
            raise UserError(f"--resume {args.resume}: no curve.yaml there; give a directory written by nqs-curve")
        saved = load_yaml(path)
        layers.append((str(path), saved.get("train", {})))
        curve_flags = {**saved.get("curve", {}), **curve_flags}
        flags["out"] = str(args.resume)
    layers += preset_and_config_layers(args)
    explicit = {k.replace("-", "_") for _, mapping in layers for k in mapping} | set(flags)
    flags.setdefault("progress", False)
    layers.append(("command line", flags))
    cfg = resolve(layers)
    if not curve_flags.get("bond"):
        raise UserError("give the scan: --bond START:STOP:STEP in Å (e.g. --bond 0.5:3.0:0.1) or a list 0.9,1.1")
    settings = CurveSettings(**{k: v for k, v in curve_flags.items() if v is not None})
    if args.parallel_chains and settings.meet is None:
        raise UserError("--parallel-chains trains the two chains of --meet R at once: add --meet R")
    if cfg.devices * cfg.num_nodes > 1:
        raise UserError("nqs-curve trains one geometry after another on one device: drop --devices/--num-nodes "
                        "(run several curves side by side instead)")
    name = cfg.mol if cfg.geometry is None else "custom"
    out = Path(cfg.out) if cfg.out else Path("runs") / f"curve-{name}-{cfg.ansatz}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = dataclasses.replace(cfg, out=str(out))
    cfg = _tiny_sector_defaults(cfg, settings, explicit)
    saved_path = out / "curve.yaml"
    if saved_path.is_file() and not args.resume:
        _check_same_curve(load_yaml(saved_path), settings_record(cfg, settings), out)
    return cfg, settings, out


def _tiny_sector_defaults(cfg: TrainConfig, settings, explicit: set[str]) -> TrainConfig:
    """Sectors of at most TINY_SECTOR configurations (H2, H2+): float64 and lr 3e-2 unless given. 1e-8 Ha
    needs float64; amplitudes that must vanish (symmetry-forbidden configurations) approach 0 only as fast as
    the logits run away, which lr 1e-2 makes slow. (Two H2, 36 configurations, can stall at lr 3e-2.)"""
    from nqs.curve import TINY_SECTOR, TINY_SECTOR_DEFAULTS, build_point_problem, chains, make_scan, point_config
    from nqs.molecules import resolve_molecule

    spec = resolve_molecule(mol=cfg.mol, geometry=cfg.geometry, charge=cfg.charge, spin=cfg.spin, basis=cfg.basis)
    scan = make_scan(spec, settings.bond, settings.atom, settings.fragment)
    chains(scan.values, settings.meet)  # a --meet off the scan fails now
    problem = build_point_problem(point_config(cfg, scan.geometry(spec, scan.values[0]), Path(cfg.out), 1, None))
    if problem.sector.size > TINY_SECTOR:
        return cfg
    return dataclasses.replace(cfg, **{k: v for k, v in TINY_SECTOR_DEFAULTS.items() if k not in explicit})


def _same(value):
    return tuple(value) if isinstance(value, list) else value


def _check_same_curve(saved: dict, new: dict, out: Path) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    old_train = {**defaults, **saved.get("train", {})}  # an option newer than the saved curve has its default
    differ = [k for k in new["train"] if k not in NEUTRAL and _same(old_train.get(k)) != _same(new["train"][k])]
    from nqs.curve import CurveSettings

    old_curve = {**{f.name: f.default for f in dataclasses.fields(CurveSettings)}, **saved.get("curve", {})}
    differ += [k for k in new["curve"] if k != "bond" and old_curve.get(k) != new["curve"][k]]
    if differ:
        old = saved.get("train", {}) | saved.get("curve", {})
        now = new["train"] | new["curve"]
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {now[k]!r} now" for k in differ[:3])
        raise UserError(f"{out} holds a curve with other settings ({detail}): continue it with nqs-curve --resume "
                        f"{out}, or choose another --out")


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
        values = [getattr(p, key) for p in points]
        if all(v is not None for v in values):
            top.plot(r, values, line, color=colour, lw=1.2, label=label)
        pairs = [(p.r, abs(getattr(p, key) - p.e_fci)) for p in points
                 if marker and getattr(p, key) is not None and p.e_fci is not None]
        if pairs:
            bottom.semilogy([a for a, _ in pairs], [max(b, floor) for _, b in pairs], line, marker=marker, ms=4,
                            lw=1, color=colour)
    if points and all(p.exact for p in points) and abs(points[0].e_nuc - points[0].energy) < 1e-6:
        top.plot(r, [p.e_nuc for p in points], "-", color="0.75", lw=5, zorder=0, label="Coulomb Z₁Z₂/R")
    top.errorbar(r, [p.energy for p in points], yerr=[p.energy_err for p in points], fmt="o", ms=4,
                 color="k", label="NQS", zorder=3)
    bottom.semilogy(r, [max(abs(p.energy - p.e_fci), floor) if p.e_fci is not None else float("nan")
                        for p in points], "-o", color="k", ms=4, lw=1, zorder=3)
    bottom.axhline(1.6e-3, color="0.4", lw=0.8, ls=(0, (6, 3)), label="chemical accuracy (1.6 mHa)")
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
    cfg, settings, out = resolve_curve(args)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own deprecation, once per geometry
    from nqs.curve import curve_lock, curve_table, run_curve, settings_record, write_json

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with curve_lock(out):
        (out / "curve.yaml").write_text(yaml.safe_dump(settings_record(cfg, settings), sort_keys=False))
        print(f"curve directory: {out}", flush=True)
        try:
            points = run_curve(cfg, settings, out, log=lambda line: print(line, flush=True),
                               stop_after=args.stop_after_points, parallel=args.parallel_chains)
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished geometries are kept in {out}; continue with nqs-curve --resume {out}",
                  file=sys.stderr)
            raise SystemExit(130) from None
    print(curve_table(points))
    print(f"wall time {time.perf_counter() - start:.1f} s for this command")
    if args.json:
        write_json(points, Path(args.json))
    if args.plot:
        name = cfg.mol if cfg.geometry is None else "custom geometry"
        plot_curve(points, Path(args.plot), f"{name}: {cfg.ansatz} NQS vs references")


if __name__ == "__main__":
    main()
