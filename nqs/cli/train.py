"""`nqs-train`: train an autoregressive NQS by VMC, e.g. `nqs-train --ansatz retnet --mol N2`.

With no flags: the Transformer on LiH (STO-3G) to chemical accuracy in well under a minute on 2 CPU cores.
Every option of `TrainConfig` is a flag (--d-model 32) and a YAML key (d_model: 32); precedence:
defaults < --preset < --config FILE.yaml < flags. --resume DIR continues an interrupted run.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from nqs.errors import UserError, cli_entry
from nqs.training.config import TrainConfig, load_yaml, resolve

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "presets"
HELP = {
    "mol": "catalogue molecule, e.g. LiH, N2 (see hamiltonians/)", "geometry": 'custom geometry "H 0 0 0; H 0 0 0.74" (Å) or an .xyz file',
    "spin": "2S = N_alpha - N_beta", "samples": "non-unique samples N_s per step (up to 1e12)",
    "unique": "cap B on unique samples per step (the most frequent are kept)",
    "sample_schedule": "constant | geometric (samples_start -> samples at 90%% of steps) | adaptive",
    "device": "auto | cpu | cuda", "devices": "processes / GPUs per node (DDP when > 1)",
    "out": "run directory (default runs/<molecule>-<ansatz>-<timestamp>)",
    "clip_local_energy": "clip Re E_loc to mean ± k·MAD (off by default)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nqs-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of options (any option below, by its name)")
    parser.add_argument("--preset", help=f"named preset from configs/presets/ ({', '.join(preset_names())})")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from checkpoints/last.ckpt")
    parser.add_argument("--interrupt-after", type=int, help=argparse.SUPPRESS)  # testing aid: a Ctrl-C after K steps
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=HELP.get(f.name, f"default {f.default}"))
        elif f.type.startswith("tuple"):
            parser.add_argument(flag, dest=f.name, nargs=2, type=int, default=None, metavar=("LO", "HI"),
                                help=HELP.get(f.name, f"default {f.default}"))
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=HELP.get(f.name, f"default {f.default}"))
    return parser


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def preset_and_config_layers(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """The --preset and --config layers, in that order (later wins)."""
    layers = []
    if args.preset:
        if args.preset not in preset_names():
            raise UserError(f"unknown preset '{args.preset}': choose one of {', '.join(preset_names())}")
        layers.append((f"preset {args.preset}", load_yaml(PRESETS / f"{args.preset}.yaml")))
    if args.config:
        layers.append((args.config, load_yaml(args.config)))
    return layers


def resolve_args(args: argparse.Namespace) -> tuple[TrainConfig, Path, bool]:
    """The config layers in precedence order, the run directory, and whether to resume."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    layers = []
    if args.resume:
        out = Path(args.resume)
        if not (out / "config.yaml").is_file() or not (out / "checkpoints" / "last.ckpt").is_file():
            raise UserError(f"--resume {out}: no config.yaml and checkpoints/last.ckpt there; give a run directory "
                            f"written by nqs-train")
        layers.append((str(out / "config.yaml"), load_yaml(out / "config.yaml")))
    layers += preset_and_config_layers(args)
    layers.append(("command line", flags))
    cfg = resolve(layers)
    if args.resume:
        return cfg, Path(args.resume), True
    name = cfg.mol if cfg.geometry is None else "custom"
    out = Path(cfg.out) if cfg.out else Path("runs") / f"{name}-{cfg.ansatz}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "checkpoints" / "last.ckpt").exists():
        raise UserError(f"{out} already holds a run: continue it with --resume {out}, or choose another --out")
    return dataclasses.replace(cfg, out=str(out)), out, False


def final_table(summary: dict) -> str:
    e_fci = summary["e_fci"]

    def row(label, e, err=None):
        if e is None:
            return f"| {label:22s} | {'—':>16s} | {'—':>12s} |"
        text = f"{e:16.8f}" if err is None else f"{e:.8f}±{err:.1e}"
        delta = f"{(e - e_fci) * 1e3:12.4f}" if e_fci is not None else f"{'—':>12s}"
        return f"| {label:22s} | {text:>16s} | {delta} |"

    lines = [f"{summary['molecule']} ({summary['n_qubits']} qubits, sector {summary['sector_size']:,}), "
             f"{summary['ansatz']} with {summary['n_params']:,} parameters "
             f"({summary['n_params_modulus']:,} modulus + {summary['n_params_phase']:,} phase), "
             f"{summary['steps']} steps in {summary['wall_s']:.1f} s",
             f"| {'method':22s} | {'energy (Ha)':>16s} | {'vs FCI (mHa)':>12s} |", f"|{'-' * 24}|{'-' * 18}|{'-' * 14}|",
             row("HF", summary["e_hf"]), row("CCSD", summary["e_ccsd"]), row("CCSD(T)", summary["e_ccsd_t"]),
             row(f"NQS ({summary['ansatz']})", summary["energy"], summary["energy_err"]), row("FCI", e_fci)]
    if summary["error_mha"] is not None:
        verdict = "within" if abs(summary["error_mha"]) < 1.6 else "outside"
        lines.append(f"NQS error {summary['error_mha']:+.4f} mHa: {verdict} chemical accuracy (1.6 mHa); "
                     f"V-score {summary['vscore']:.3e}")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg, out, resume = resolve_args(args)
    from nqs.training.run import run  # heavy imports after the arguments are checked

    try:
        summary = run(cfg, out, resume=resume, interrupt_after=args.interrupt_after)
    except KeyboardInterrupt:
        print(f"\ninterrupted: checkpoint in {out / 'checkpoints' / 'last.ckpt'}; continue with "
              f"nqs-train --resume {out}", file=sys.stderr)
        raise SystemExit(130) from None
    if summary is not None:
        print(final_table(summary))
        print(f"run directory: {out}")


if __name__ == "__main__":
    main()
