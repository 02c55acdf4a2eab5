"""`nqs-train`: train an autoregressive NQS by VMC, e.g. `nqs-train --ansatz retnet --mol N2`.

With no flags: the Transformer on LiH (STO-3G) to chemical accuracy in well under a minute on 2 CPU cores.
Every option of `TrainConfig` is a flag (--d-model 32) and a YAML key (d_model: 32); precedence:
defaults < --preset < --config FILE.yaml < flags. --resume DIR continues an interrupted run.
"""
from __future__ import annotations

import argparse
import sys
import time
import typing
from pathlib import Path

from nqs.cli.common import configure_process
from nqs.errors import UserError, cli_entry
from nqs.record import CHECKPOINT, CHEMICAL_ACCURACY_MHA, RunSummary, branch_checkpoint, error_mha, read_summary
from nqs.tables import markdown_table
from nqs.training.config import FIELDS, GROUPS, HINTS, TrainConfig, load_yaml, resolve
from nqs.training.presets import load_preset, preset_names




def build_parser() -> argparse.ArgumentParser:
    """Every option of TrainConfig as a flag, grouped as the config is, with the field's help text."""
    parser = argparse.ArgumentParser(prog="nqs-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of options (any option below, by its name)")
    parser.add_argument("--preset", help=f"named preset shipped with the package ({', '.join(preset_names())})")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from checkpoints/last.ckpt")
    parser.add_argument("--branch-from", metavar="TRUNK", help="start a new run from the trunk run TRUNK's kept "
                        "checkpoint after --branch-step steps (its config is the base; lr_schedule wsd): it decays "
                        "over --decay steps, so runs of several lengths share one trunk")
    parser.add_argument("--branch-step", type=int, metavar="S", help="the trunk step the branch starts from")
    parser.add_argument("--interrupt-after", type=int, help=argparse.SUPPRESS)  # testing aid: a Ctrl-C after K steps
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for name, (group, f) in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        text = f"{f.metadata.get('help', '')} (default: {f.default})"
        g = groups[group]
        if HINTS[name] is bool:
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(HINTS[name]) is tuple:
            g.add_argument(flag, dest=name, nargs=2, default=None, metavar=("LO", "HI"), help=text)
        else:
            g.add_argument(flag, dest=name, default=None, help=text)
    return parser


def preset_and_config_layers(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """The --preset and --config layers, in that order (later wins)."""
    layers = []
    if args.preset:
        layers.append((f"preset {args.preset}", load_preset(args.preset)))
    if args.config:
        layers.append((args.config, load_yaml(args.config)))
    return layers


def resolve_args(args: argparse.Namespace) -> tuple[TrainConfig, Path, bool, set]:
    """The config layers in precedence order, the run directory, whether to resume, and the option names that
    some layer set (the rest are defaults)."""
    flags = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    layers = []
    if args.resume and args.branch_from:
        raise UserError("give --resume DIR or --branch-from TRUNK, not both")
    if args.resume:
        out = Path(args.resume)
        if not (out / "config.yaml").is_file() or not (out / CHECKPOINT).is_file():
            raise UserError(f"--resume {out}: no config.yaml and checkpoints/last.ckpt there; give a run directory "
                            f"written by nqs-train")
        layers.append((str(out / "config.yaml"), load_yaml(out / "config.yaml")))
    if args.branch_from:
        trunk = Path(args.branch_from)
        if not (trunk / "config.yaml").is_file():
            raise UserError(f"--branch-from {trunk}: no config.yaml there; give a run directory written by nqs-train")
        layers.append((str(trunk / "config.yaml"), load_yaml(trunk / "config.yaml")))
    layers += preset_and_config_layers(args)
    layers.append(("command line", flags))
    cfg = resolve(layers)
    given = {str(k).replace("-", "_") for _, mapping in layers for k in mapping}
    if args.resume:
        return cfg, Path(args.resume), True, given
    if args.branch_from:
        cfg = branch_config(cfg, Path(args.branch_from), args.branch_step)
    out = Path(cfg.run.out) if cfg.run.out else Path("runs") / f"{cfg.label}-{cfg.model.ansatz}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / CHECKPOINT).exists():
        raise UserError(f"{out} already holds a run: continue it with --resume {out}, or choose another --out")
    return cfg.updated(out=str(out)), out, False, given


def size_defaults(cfg: TrainConfig, given: set) -> tuple[TrainConfig, tuple]:
    """`nqs.training.recipes` for runs that choose no optimiser: the options no layer set, by the molecule's
    qubit count (a PySCF Mole is built for the orbital count; no SCF). Returns the config and its note."""
    if "optimizer" in given:
        return cfg, ()
    from nqs import chem
    from nqs.training.build import molecule_of
    from nqs.training.recipes import describe, recipe

    spec, options = molecule_of(cfg)
    n_qubits = 2 * chem.active_space(chem.build_mole(spec, options.symmetry), spec, options)[1]
    length = cfg.optim.steps if "steps" in given else None
    chosen = {k: v for k, v in recipe(n_qubits, cfg.model.ansatz, length, cfg.optim.warmup).items() if k not in given}
    if not chosen:
        return cfg, ()
    return cfg.updated(**chosen), (describe(chosen, n_qubits),)


def branch_config(cfg: TrainConfig, trunk: Path, step: int | None) -> TrainConfig:
    """The branch's config: the trunk's, with the flags given, steps = S + decay (decay in steps, WSD)."""
    if step is None:
        raise UserError("--branch-from needs --branch-step S (a step whose checkpoint the trunk kept)")
    if not (trunk / branch_checkpoint(step)).is_file():
        kept = sorted(p.name for p in (trunk / "checkpoints").glob("step-*.ckpt"))
        raise UserError(f"--branch-step {step}: {trunk / branch_checkpoint(step)} does not exist (kept: "
                        f"{', '.join(kept) or 'none; train the trunk with --keep-every N'})")
    o = cfg.optim
    if o.lr_schedule != "wsd" or o.decay < 1:
        raise UserError("a branch decays a WSD trunk: the trunk (or the flags) must set lr_schedule wsd and --decay K "
                        "in steps (K >= 1)")
    trunk_stable_end = read_trunk_decay_start(trunk)
    if step > trunk_stable_end or step < o.warmup:
        raise UserError(f"--branch-step {step} is outside the trunk's stable phase (steps {o.warmup}.."
                        f"{trunk_stable_end}): branch from a checkpoint before the trunk's decay")
    name = f"{trunk.name}-branch{step}+{int(o.decay)}"
    out = cfg.run.out if cfg.run.out and cfg.run.out != load_yaml(trunk / "config.yaml").get("out") else \
        str(trunk.parent / name)
    return cfg.updated(steps=step + int(o.decay), out=out)


def read_trunk_decay_start(trunk: Path) -> int:
    """The step at which the trunk's decay starts (its summary's, else from its config)."""
    from nqs.training.schedules import decay_length

    if (trunk / "summary.json").is_file():
        schedule = read_summary(trunk).schedule or {}
        if schedule.get("decay_start") is not None:
            return int(schedule["decay_start"])
    trunk_cfg = resolve([(str(trunk / "config.yaml"), load_yaml(trunk / "config.yaml"))])
    return trunk_cfg.optim.steps - decay_length(trunk_cfg.optim)


def final_table(s: RunSummary) -> str:
    """The final energy beside HF, CCSD, CCSD(T), FCI and DMRG (Hartree), errors in mHa against the best available
    reference, which the header and the verdict name (FCI; DMRG or CCSD(T) where FCI was skipped)."""
    ref, label = s.reference_energy, s.reference_label or "reference"
    rows = [("HF", s.e_hf, None), ("CCSD", s.e_ccsd, None), ("CCSD(T)", s.e_ccsd_t, None),
            (f"NQS ({s.ansatz})", s.energy, s.energy_err), ("FCI", s.e_fci, None), ("DMRG", s.e_dmrg, None)]
    body = [[name, "—" if e is None else (f"{e:.8f}" if err is None else f"{e:.8f}±{err:.1e}"),
             "—" if error_mha(e, ref) is None else f"{error_mha(e, ref):.4f}"] for name, e, err in rows
            if e is not None or name != "DMRG"]
    per_step = f"; framework {1e3 * s.t_framework_s / s.steps:.2f} ms/step" if s.steps and s.t_framework_s else ""
    effective = ""  # MADE's masked-out weights (and any unit no score depends on) count in n_params
    if s.n_params_effective is not None and s.n_params_effective != s.n_params:
        effective = f"; {s.n_params_effective:,} effective"
    lines = [f"{s.molecule} ({s.n_qubits} qubits, sector {s.sector_size:,}), {s.ansatz} with {s.n_params:,} "
             f"parameters ({s.n_params_modulus:,} modulus + {s.n_params_phase:,} phase{effective}), {s.steps} "
             f"steps in {s.wall_s:.1f} s{per_step}",
             markdown_table(["method", "energy (Ha)", f"vs {label} (mHa)"], body, align=["left", "right", "right"])]
    if s.error_mha is not None:
        verdict = "within" if s.within_chemical_accuracy else "outside"
        own = f" (reference uncertainty {1e3 * s.ref_uncertainty:.1g} mHa)" if s.ref_uncertainty else ""
        lines.append(f"NQS error {s.error_mha:+.4f} mHa vs {label}{own}: {verdict} chemical accuracy "
                     f"({CHEMICAL_ACCURACY_MHA} mHa); V-score {s.vscore:.3e}")
    else:
        lines.append("NQS error unknown: no reference energy (see the notes)")
    tail = s.final_tail
    rest = "" if not tail else (f"; the rest, from a second draw of {tail['draws']:.0f} outside it, moved the "
                                f"energy by {1e3 * tail['correction']:+.3f} ± {1e3 * tail['error']:.3f} mHa")
    lines.append(f"error bar: {s.error_bar_covers}; kept mass {s.final_kept_mass:.10f}{rest}")
    if s.peak_rss_gib is not None:
        on_gpu = "" if s.peak_device_gib is None else f", {s.peak_device_gib:.2f} GiB allocated on {s.device}"
        lines.append(f"peak memory: {s.peak_rss_gib:.2f} GiB resident{on_gpu}")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg, out, resume, given = resolve_args(args)
    configure_process(cfg.run.threads)
    from nqs.training.run import run  # heavy imports after the arguments are checked

    notes = ()
    if not resume:
        cfg, notes = size_defaults(cfg, given)  # printed by `run` once the run directory and model are built

    try:
        branch = None
        if args.branch_from and not resume:
            trunk = Path(args.branch_from)
            branch = {"trunk": str(trunk), "step": args.branch_step,
                      "checkpoint": str(trunk / branch_checkpoint(args.branch_step))}
        summary = run(cfg, out, resume=resume, interrupt_after=args.interrupt_after, branch=branch, notes=notes)
    except KeyboardInterrupt:
        print(f"\ninterrupted: checkpoint in {out / 'checkpoints' / 'last.ckpt'}; continue with "
              f"nqs-train --resume {out}", file=sys.stderr)
        raise SystemExit(130) from None
    if summary is not None:
        print(final_table(summary))
        print(f"run directory: {out}")


if __name__ == "__main__":
    main()
