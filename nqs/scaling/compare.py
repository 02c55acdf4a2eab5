"""Compare runs: V-score and |E − E_ref| per molecule × ansatz, beside HF / CCSD / CCSD(T); E_ref is each run's best
available reference (FCI, else DMRG, ...: `ref_kind` in its summary), named in the table."""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from nqs.scaling.runs import RunRecord
from nqs.tables import markdown_table

DASH = "—"


@dataclass(frozen=True)
class CompareRow:
    """One molecule × ansatz (× model size with `by_size`). Spreads are sample std (None below 2
    values); `*_n` count the runs that had the value. Errors are against the runs' reference (`ref_kind`: fci,
    dmrg, ...; several kinds joined by '/'), in mHa."""

    molecule: str
    ansatz: str
    n_runs: int
    n_params: float | None
    vscore_mean: float | None
    vscore_std: float | None
    vscore_n: int
    abs_error_mean: float | None
    abs_error_std: float | None
    abs_error_n: int
    hf_error: float | None
    ccsd_error: float | None
    ccsd_t_error: float | None
    ref_kind: str = "fci"

    def to_json(self) -> dict:
        return asdict(self)


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None, 0
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return float(np.mean(vals)), std, len(vals)


def _reference(records: Sequence[RunRecord], attr: str, label: str) -> float | None:
    vals = [getattr(r, attr) for r in records]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return None
    if max(vals) - min(vals) > 1e-3:  # 1 µHa: same molecule, same basis and geometry should agree
        warnings.warn(f"{label}: reference errors differ across runs ({min(vals):.4g} to {max(vals):.4g} "
                      "mHa); different geometries or bases grouped together? Using the median",
                      stacklevel=3)
    return float(np.median(vals))


def compare_runs(records: Sequence[RunRecord], by_size: bool = False) -> tuple[CompareRow, ...]:
    """Group runs by molecule × ansatz (and n_params with `by_size`) and summarise each group."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        key = (r.molecule, r.ansatz, r.n_params if by_size else None)
        groups.setdefault(key, []).append(r)
    rows = []
    for (mol, ans, size), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        label = f"{mol} / {ans}"
        sizes = {r.n_params for r in runs}
        if not by_size and len(sizes) > 1:
            warnings.warn(f"{label}: averaging runs of {len(sizes)} different model sizes; "
                          "pass --by-size to compare each size on its own", stacklevel=2)
        vm, vs, vn = _stats([r.vscore for r in runs])
        em, es, en = _stats([r.abs_error_mha for r in runs])
        rows.append(CompareRow(
            molecule=mol, ansatz=ans, n_runs=len(runs), n_params=size,
            vscore_mean=vm, vscore_std=vs, vscore_n=vn, abs_error_mean=em, abs_error_std=es, abs_error_n=en,
            hf_error=_reference(runs, "hf_error_mha", label),
            ccsd_error=_reference(runs, "ccsd_error_mha", label),
            ccsd_t_error=_reference(runs, "ccsd_t_error_mha", label),
            ref_kind="/".join(sorted({r.ref_kind or "fci" for r in runs}))))
    return tuple(rows)


def _cell(mean: float | None, std: float | None, n: int, n_runs: int, fmt: str, std_fmt: str) -> str:
    if mean is None:
        return DASH
    text = format(mean, fmt) + ("" if std is None else " ± " + format(std, std_fmt))
    return text + ("" if n == n_runs else f" (n={n})")


def format_markdown(rows: Sequence[CompareRow]) -> str:
    """The comparison as a markdown table; a missing value (e.g. no CCSD energy) shows as '—'.
    A mean over fewer runs than the group has says `(n=k)`; no cell contains a '|'."""
    by_size = any(r.n_params is not None for r in rows)
    head = ["molecule", "ansatz"] + (["N"] if by_size else []) + [
        "runs", "reference", "V-score (mean ± std)", "abs(E − E_ref) mHa (mean ± std)",
        "HF − E_ref mHa", "CCSD − E_ref mHa", "CCSD(T) − E_ref mHa"]
    ref = lambda v: DASH if v is None else f"{v:.3f}"  # noqa: E731
    body = []
    for r in rows:
        body.append([r.molecule, r.ansatz] + ([DASH if r.n_params is None else f"{r.n_params:.0f}"]
                                              if by_size else []) + [
            str(r.n_runs), r.ref_kind.upper(),
            _cell(r.vscore_mean, r.vscore_std, r.vscore_n, r.n_runs, ".3e", ".1e"),
            _cell(r.abs_error_mean, r.abs_error_std, r.abs_error_n, r.n_runs, ".3f", ".2g"),
            ref(r.hf_error), ref(r.ccsd_error), ref(r.ccsd_t_error)])
    return markdown_table(head, body)
