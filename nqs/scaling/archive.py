"""Run archives: a study's run directories (config, summary and every step's metrics, no checkpoints) in one
xz-compressed JSONL file, so that `nqs-fit`, `nqs-compare` and `scripts/scaling_study.py` reproduce a study's
numbers from the repository alone.

    nqs-fit --export data/scaling/e2_collapse.runs.jsonl.xz runs/sweeps/e2_collapse               # write
    nqs-fit data/scaling/e2_collapse.runs.jsonl.xz --metric abs_error                              # read

Line 1 is a header {"format": "nqs-runs/1", "runs": n}; then one line per run: {"run": its path relative to the
runs' common parent, "config": the config.yaml text, "summary": summary.json, "metrics": {field: [value per
step]}} (metrics.jsonl as columns). Floats in the metrics other than energies and errors are kept to 7
significant digits (timings, FLOPs, S_F: far below their own noise); energies, errors and the summaries are
exact. Reading unpacks the runs under a temporary directory that lives as long as the process, with their
relative paths, so run names and grid cells are the same as in the original folders; `unpack(path, dest)`
restores them for good (to continue a sweep: its finished runs are skipped).
"""
from __future__ import annotations

import atexit
import json
import lzma
import os
import shutil
import tempfile
from pathlib import Path

from nqs.errors import UserError
from nqs.record import METRICS_FILE, SUMMARY_FILE

FORMAT = "nqs-runs/1"
SUFFIX = ".runs.jsonl.xz"
EXACT_FIELDS = ("energy", "energy_err", "e_fci", "e_ref", "error_mha", "variance", "vscore")
_UNPACKED: dict[Path, list[Path]] = {}


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).endswith(SUFFIX)


def _round(value, digits: int = 7):
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def _columns(rows: list[dict]) -> dict[str, list]:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return {k: [row.get(k) if k in EXACT_FIELDS else _round(row.get(k)) for row in rows] for k in keys}


def _rows(columns: dict[str, list]) -> list[dict]:
    n = max((len(v) for v in columns.values()), default=0)
    return [{k: v[i] for k, v in columns.items() if v[i] is not None or k in EXACT_FIELDS} for i in range(n)]


def write(out: str | os.PathLike, run_dirs: list[Path]) -> int:
    """Write the finished runs among `run_dirs` (those with summary.json) to `out`; returns the count."""
    runs = [Path(d) for d in run_dirs if (Path(d) / SUMMARY_FILE).is_file()]
    if not runs:
        raise UserError("no finished run (summary.json) among the given paths: nothing to archive")
    root = Path(os.path.commonpath([str(d.resolve().parent) for d in runs]))
    out = Path(out)
    if not is_archive(out):
        raise UserError(f"{out}: an archive's name must end in {SUFFIX}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(out, "wt", preset=9) as fh:
        fh.write(json.dumps({"format": FORMAT, "runs": len(runs)}) + "\n")
        for d in runs:
            metrics = d / METRICS_FILE
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] \
                if metrics.is_file() else []
            config = (d / "config.yaml").read_text() if (d / "config.yaml").is_file() else None
            fh.write(json.dumps({"run": str(d.resolve().relative_to(root)), "config": config,
                                 "summary": json.loads((d / SUMMARY_FILE).read_text()),
                                 "metrics": _columns(rows)}) + "\n")
    return len(runs)


def unpack(path: str | os.PathLike, dest: str | os.PathLike | None = None) -> list[Path]:
    """The run directories of archive `path`, unpacked (once per process) under a temporary directory, or under
    `dest` to keep (`dest`/<archive name>/<run>: e.g. `runs/sweeps` restores `runs/sweeps/e2_samples/...`, where
    `nqs-sweep` skips the finished runs; a run directory already there is left as it is)."""
    path = Path(path).resolve()
    if dest is None and path in _UNPACKED:
        return _UNPACKED[path]
    if not path.is_file():
        raise UserError(f"{path}: no such archive")
    keep = dest is not None
    if keep:
        dest = Path(dest)
    else:
        dest = Path(tempfile.mkdtemp(prefix="nqs-runs-"))
        atexit.register(shutil.rmtree, dest, True)
    found = []
    try:
        with lzma.open(path, "rt") as fh:
            header = json.loads(fh.readline())
            if header.get("format") != FORMAT:
                raise UserError(f"{path}: not a run archive of format {FORMAT} (header {header})")
            for line in fh:
                entry = json.loads(line)
                run = dest / path.name.removesuffix(SUFFIX) / entry["run"]
                found.append(run)
                if keep and run.exists():
                    continue
                run.mkdir(parents=True, exist_ok=True)
                if entry["config"] is not None:
                    (run / "config.yaml").write_text(entry["config"])
                (run / SUMMARY_FILE).write_text(json.dumps(entry["summary"]))
                rows = _rows(entry["metrics"])
                if rows:
                    (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    except (lzma.LZMAError, json.JSONDecodeError, KeyError, EOFError) as exc:
        raise UserError(f"{path}: damaged run archive ({type(exc).__name__}: {exc}); restore it from git") from None
    if not keep:
        _UNPACKED[path] = found
    return found
