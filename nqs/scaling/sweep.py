"""Sweeps: a grid of `nqs-train` runs from one YAML file, run one after another in this process, resumable.

File format (every key but `grid` optional)::

    description: free text
    preset: reference          # a preset name (nqs/presets/), applied before `base`
    out: runs/sweeps/demo      # root folder; one run directory per grid point below it
    base: {mol: H2O, unique: 2000}           # any nqs-train option (a flat TrainConfig option name)
    grid:                      # a mapping, or a list of mappings whose expansions are concatenated
      ansatz: [transformer]                  # option -> list of values
      size: [{d_model: 8, d_ff: 32}, {d_model: 16, d_ff: 64}]   # group -> list of option mappings
      steps: [100, 200]

Each mapping of `grid` expands to the Cartesian product of its entries, in the order written. A key that
is an option name takes a list of values; any other key names a group whose values are mappings of options
set together (a model size). A run's directory name joins the options its grid point sets, in grid order
(`transformer_dm8_ff32_T100`); a run's resolved configuration is preset < base < grid point.

A run directory with summary.json is finished and skipped; one with checkpoints/last.ckpt is resumed; either
must hold the configuration the sweep asks for (else a `UserError`: change `out` or remove the directory).

Lengths as decay branches of one trunk (Hägele et al. 2024; ../shared/SCALING-METHOD.md rule 1)::

    branches: {steps: [650, 900, 1400], decay: [50, 100, 200]}

makes every grid point a warmup-stable-decay trunk (its own `steps` and `decay`, in steps) and, after it,
one branch per entry: a run that continues the trunk's kept checkpoint at step S = steps - decay and
decays over `decay` steps (`nqs-train --branch-from`), in `OUT/<name>_T<steps>`. The trunk keeps the
checkpoints it needs (keep_every = the steps' greatest common divisor unless set).
"""
from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from nqs.errors import UserError
from nqs.record import CHECKPOINT, SUMMARY_FILE, RunSummary, branch_checkpoint, read_summary
from nqs.tables import markdown_table
from nqs.training.config import FIELDS, TrainConfig, check_name, load_yaml, resolve
from nqs.training.presets import load_preset

TOP_KEYS = ("description", "preset", "out", "base", "grid", "branches")
FORBIDDEN = ("out",)  # set by the sweep: `out` at the top level is the root of all runs
ABBREV = {"ansatz": "", "mol": "", "d_model": "dm", "d_ff": "ff", "layers": "L", "heads": "H", "hidden": "h",
          "made_layers": "ml", "phase_hidden": "ph", "phase_layers": "pl", "steps": "T", "samples": "Ns",
          "unique": "B", "seed": "seed", "lr": "lr", "dtype": ""}


@dataclass(frozen=True)
class PlannedRun:
    """One grid point: its 1-based index, directory name, the options its grid point sets, the config."""

    index: int
    name: str
    varied: tuple[tuple[str, Any], ...]
    config: TrainConfig
    trunk: Path | None = None  # a branch: the trunk's run directory and the step it continues from
    branch_step: int | None = None

    @property
    def out(self) -> Path:
        return Path(self.config.run.out)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.varied)

    def status(self) -> str:
        """'done' (summary.json), 'resume' (a checkpoint, no summary) or 'new'."""
        if (self.out / SUMMARY_FILE).is_file():
            return "done"
        if (self.out / CHECKPOINT).is_file() and (self.out / "config.yaml").is_file():
            return "resume"
        return "new"


@dataclass(frozen=True)
class Sweep:
    path: Path
    out: Path
    runs: tuple[PlannedRun, ...]
    description: str = ""


@dataclass(frozen=True)
class RunOutcome:
    run: PlannedRun
    status: str  # ran | resumed | skipped | failed
    wall_s: float
    summary: RunSummary | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------- planning
def _option(key: Any, where: str) -> str:
    name = check_name(key, where)  # an unknown name: UserError with difflib's closest option names
    if name in FORBIDDEN:
        raise UserError(f"{where}: '{key}' is set by the sweep; give the root folder as the top-level out:")
    return name


def _axis(key: Any, values: Any, where: str) -> list[tuple[tuple[str, Any], ...]]:
    """One grid entry -> its list of assignments, each a tuple of (option, value)."""
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: grid entry '{key}' must be a non-empty list of values, got {values!r}")
    name = str(key).replace("-", "_")
    if name in FIELDS:
        _option(key, where)
        bad = [v for v in values if isinstance(v, (dict, list))]
        if bad:
            raise UserError(f"{where}: grid entry '{key}' takes plain values, got {bad[0]!r}")
        return [((name, v),) for v in values]
    if not all(isinstance(v, dict) and v for v in values):
        close = difflib.get_close_matches(name, FIELDS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"{where}: unknown option '{key}' in grid{hint}; a grid key is an nqs-train option with a "
                        f"list of values, or a group such as sizes: [{{d_model: 8, d_ff: 32}}, ...] whose values "
                        f"are mappings of options")
    return [tuple((_option(k, f"{where}: grid entry '{key}'"), v) for k, v in value.items()) for value in values]


def expand_grid(grid: Any, where: str) -> list[tuple[tuple[str, Any], ...]]:
    """The grid points in order: each a tuple of (option, value) in grid order."""
    blocks = grid if isinstance(grid, list) else [grid]
    if not blocks or not all(isinstance(b, dict) and b for b in blocks):
        raise UserError(f"{where}: grid must be a mapping of key: [values], or a list of such mappings")
    points = []
    for i, block in enumerate(blocks):
        at = where if len(blocks) == 1 else f"{where} (grid block {i + 1})"
        axes = [_axis(k, v, at) for k, v in block.items()]
        for combo in itertools.product(*axes):
            flat = tuple(pair for part in combo for pair in part)
            keys = [k for k, _ in flat]
            twice = sorted({k for k in keys if keys.count(k) > 1})
            if twice:
                raise UserError(f"{at}: option {', '.join(twice)} is set by two grid entries")
            points.append(flat)
    return points


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}".replace("+", "")
    return str(value)


def run_name(varied: tuple[tuple[str, Any], ...]) -> str:
    """Directory name of a grid point: `ABBREV[option] + value` joined by '_' (unlisted options: name-value)."""
    parts = []
    for key, value in varied:
        prefix = ABBREV.get(key, f"{key}-")
        parts.append(re.sub(r"[^A-Za-z0-9.+-]", "-", prefix + _fmt(value)))
    return "_".join(parts)


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Read and expand a sweep file; every run's config is resolved and validated before anything runs."""
    path = Path(path)
    spec = load_yaml(path)
    for key in spec:
        if key not in TOP_KEYS:
            raise UserError(f"{path}: unknown key '{key}' (a sweep file has {', '.join(TOP_KEYS)})")
    if "grid" not in spec:
        raise UserError(f"{path}: no grid: give grid: {{option: [values], ...}}")
    base = spec.get("base") or {}
    if not isinstance(base, dict):
        raise UserError(f"{path}: base must be a mapping of option: value")
    for key in base:
        _option(key, f"{path}: base")
    layers: list[tuple[str, dict]] = []
    if spec.get("preset"):
        try:
            preset = load_preset(str(spec["preset"]))
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        layers.append((f"preset {spec['preset']}", preset))
    layers.append((f"{path}: base", base))
    root = Path(out if out is not None else spec.get("out") or Path("runs") / "sweeps" / path.stem)
    runs, names = [], {}
    for i, varied in enumerate(expand_grid(spec["grid"], str(path)), start=1):
        name = run_name(varied)
        if name in names:
            raise UserError(f"{path}: grid points {names[name]} and {i} share the run name '{name}'; "
                            f"make the grid values distinct")
        names[name] = i
        extra = {"out": str(root / name), "progress": base.get("progress", False)}
        try:
            cfg = resolve([*layers, (f"{path}: grid point {name}", dict(varied)), ("sweep", extra)])
        except UserError as exc:
            if str(path) in str(exc):
                raise
            raise UserError(f"{path}: grid point {name}: {exc}") from None
        if cfg.run.devices * cfg.run.num_nodes > 1:
            raise UserError(f"{path}: grid point {name}: devices / num_nodes > 1 (DDP) cannot run inside nqs-sweep; "
                            f"run it with nqs-train --devices")
        trunk = PlannedRun(index=i, name=name, varied=varied, config=cfg)
        runs.extend([trunk, *_branches(trunk, spec.get("branches"), path)])
    runs = [replace(r, index=k) for k, r in enumerate(runs, start=1)]
    sweep = Sweep(path=path, out=root, runs=tuple(runs), description=str(spec.get("description") or ""))
    for run in sweep.runs:
        check_existing(run)
    return sweep


def _branches(trunk: PlannedRun, spec: Any, path: Path) -> list[PlannedRun]:
    """The decay branches of one trunk (module docstring); the trunk's keep_every is set to what they need."""
    if not spec:
        return []
    if not isinstance(spec, dict) or set(spec) != {"steps", "decay"} or len(spec["steps"]) != len(spec["decay"]):
        raise UserError(f"{path}: branches must be {{steps: [T, ...], decay: [K, ...]}} with one decay per length")
    o = trunk.config.optim
    if o.lr_schedule != "wsd" or o.decay < 1:
        raise UserError(f"{path}: branches decay a WSD trunk: set lr_schedule: wsd and decay in steps (>= 1) in base")
    pairs = [(int(t), int(k)) for t, k in zip(spec["steps"], spec["decay"])]
    stable_end = o.steps - int(o.decay)
    for t, k in pairs:
        if not (1 <= k < t and o.warmup <= t - k <= stable_end):
            raise UserError(f"{path}: branch steps {t} with decay {k} starts at {t - k}, outside the trunk's stable "
                            f"phase {o.warmup}..{stable_end}")
    keep = trunk.config.run.keep_every or math.gcd(*[t - k for t, k in pairs])
    if any((t - k) % keep for t, k in pairs):
        raise UserError(f"{path}: keep_every {keep} does not divide every branch step {[t - k for t, k in pairs]}")
    object.__setattr__(trunk, "config", trunk.config.updated(keep_every=keep))
    out = []
    for t, k in pairs:
        name = f"{trunk.name}_T{t}"
        cfg = trunk.config.updated(steps=t, decay=k, out=str(trunk.out.parent / name), keep_every=None)
        out.append(PlannedRun(index=trunk.index, name=name, varied=trunk.varied + (("steps", t), ("decay", k)),
                              config=cfg, trunk=trunk.out, branch_step=t - k))
    return out


def check_existing(run: PlannedRun) -> None:
    """UserError when the run directory holds a run of another configuration than the sweep asks for."""
    stored = run.out / "config.yaml"
    if run.status() == "new" or not stored.is_file():
        return
    try:
        old = resolve([(str(stored), load_yaml(stored))])
    except UserError as exc:
        raise UserError(f"{run.out} holds a run this version cannot read ({exc}); remove it or change out") from None
    there, asked = old.result_fields(), run.config.result_fields()  # options that change a result only
    diff = [k for k in asked if there.get(k) != asked[k]]
    if diff:
        shown = ", ".join(f"{k}: {there.get(k)!r} there, {asked[k]!r} asked" for k in diff[:3])
        raise UserError(f"{run.out} holds a run of another configuration ({shown}); remove that directory or "
                        f"set another out:")


# ---------------------------------------------------------------------------------------------- running
def result_line(outcome: RunOutcome, total: int) -> str:
    """`[ 3/32] ansatz=made hidden=16 steps=100 | +12.345 mHa  V 1.2e-03  N 1,741  D' 88.2 | 4.1 s ran`."""
    run, s = outcome.run, outcome.summary
    head = f"[{run.index:>{len(str(total))}}/{total}] {run.label}"
    if outcome.status == "failed":
        return f"{head} | FAILED after {outcome.wall_s:.1f} s: {outcome.error}"
    err = s.error_mha
    err_text = "error —" if err is None else f"error {err:+.3f} mHa"
    vs = s.vscore
    vs_text = "V —" if vs is None or not math.isfinite(vs) else f"V {vs:.2e}"
    return (f"{head} | {err_text}  {vs_text}  N {s.n_params or 0:,}  D' {s.d_prime or 0:.1f} | "
            f"{outcome.wall_s:.1f} s {outcome.status}")


def run_one(run: PlannedRun) -> RunOutcome:
    """Skip a finished run, resume an interrupted one, or start it; a UserError (divergence) is a failure."""
    from nqs.training.run import run as train

    status = run.status()
    if status == "done":
        summary = read_summary(run.out)  # a damaged summary.json: UserError naming the file
        return RunOutcome(run, "skipped", float(summary.command_wall_s or 0.0), summary)
    start = time.perf_counter()
    branch = None if run.trunk is None else {"trunk": run.trunk, "step": run.branch_step,
                                             "checkpoint": run.trunk / branch_checkpoint(run.branch_step)}
    try:
        summary = train(run.config, run.out, resume=status == "resume", branch=branch)
    except UserError as exc:
        return RunOutcome(run, "failed", time.perf_counter() - start, error=str(exc))
    if summary is None:  # nqs.training.run.run returns None off rank 0; read what rank 0 wrote
        summary = read_summary(run.out)
    return RunOutcome(run, "resumed" if status == "resume" else "ran", time.perf_counter() - start, summary)


def execute(sweep: Sweep, echo: Callable[[str], None] = print) -> list[RunOutcome]:
    """Run every planned run in order, echoing one line per run; KeyboardInterrupt propagates (the
    interrupted run's checkpoint is saved, so running the sweep again resumes it)."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    (sweep.out / "sweep.yaml").write_text(sweep.path.read_text())
    outcomes = []
    for run in sweep.runs:
        outcome = run_one(run)
        outcomes.append(outcome)
        echo(result_line(outcome, len(sweep.runs)))
        with (sweep.out / "sweep_log.jsonl").open("a") as log:
            log.write(json.dumps({"name": run.name, "status": outcome.status, "wall_s": outcome.wall_s,
                                  "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "error": outcome.error}) + "\n")
    return outcomes


def plan_table(sweep: Sweep) -> str:
    """The dry-run listing: a Markdown table of the runs (status, directory, grid options), then the totals."""
    rows = [[run.index, run.status(), run.out, run.label] for run in sweep.runs]
    lines = [markdown_table(["#", "status", "run directory", "options set by the grid"], rows,
                            align=["right", None, None, None])]
    counts = {s: sum(r.status() == s for r in sweep.runs) for s in ("done", "resume", "new")}
    steps = sum(r.config.optim.steps - (r.branch_step or 0) for r in sweep.runs if r.status() != "done")
    lines.append(f"{len(sweep.runs)} runs: {counts['done']} finished (skipped), {counts['resume']} to resume, "
                 f"{counts['new']} new; {steps:,} optimisation steps to go (at most)")
    return "\n".join(lines)
