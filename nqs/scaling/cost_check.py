"""Each run's cost predicted by the cost model (`nqs.scaling.cost`) from its own config, steps and cap, against
what it logged: the check `nqs-fit` prints beside every fit."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nqs import flops as fl
from nqs.models.counts import cached_counts
from nqs.record import RunSummary
from nqs.scaling.cost import StepCost, _load, _predict, _Run


@dataclass(frozen=True)
class CostCheck:
    """One run's logged totals against the cost model's prediction from its config, steps and cap."""

    path: Path
    ansatz: str
    molecule: str
    steps: int
    cap: float
    unique_logged: float  # mean n_unique per step
    unique_predicted: float
    flops_logged: float  # summary.flops_total, its SR terms re-based on the current formula (`_logged_total`)
    flops_predicted: float
    flops_at_logged_unique: float  # predicted with the run's own mean n_unique: the count models' error alone
    seconds_logged: float | None  # summary.wall_s
    seconds_predicted: float | None

    @property
    def flops_error(self) -> float:
        """predicted / logged - 1."""
        return self.flops_predicted / self.flops_logged - 1

    @property
    def count_error(self) -> float:
        """flops_at_logged_unique / logged - 1: what is left of flops_error once U is the run's own."""
        return self.flops_at_logged_unique / self.flops_logged - 1

    @property
    def seconds_error(self) -> float | None:
        if not self.seconds_logged or self.seconds_predicted is None:
            return None
        return self.seconds_predicted / self.seconds_logged - 1


def _logged_total(run: _Run) -> float:
    """summary.flops_total with each SR step's logged natural-gradient term replaced by the current formula's.

    The other phases' FLOPs are counted as executed; the SR term is analytic, and runs logged before
    0191266 (SR in two blocks) carry the stacked form's larger estimate: re-based, every run is compared with
    the model on the same footing."""
    total = float(run.record.flops_total)
    if not run.sr_rows:
        return total
    n_params = cached_counts(run.cfg.model, run.sector)["total"]
    for s in run.steps:
        logged = s.flops_step.get("natural_gradient", 0.0)
        if logged:
            total += fl.natural_gradient_flops(run.cfg.model, run.sector, min(run.sr_rows, s.n_unique),
                                               n_params) - logged
    return total


def check_against_logs(records: Sequence[RunSummary], models: dict[tuple[str, str], StepCost]) -> list[CostCheck]:
    """Per run with a model and logged totals: its total FLOPs (and wall seconds) predicted from its own config,
    steps and cap, beside summary.flops_total (and wall_s). Runs that cannot be checked are skipped with a
    warning."""
    out = []
    for rec in records:
        run = _load(rec)
        model = None if run is None else models.get((rec.ansatz, rec.molecule))
        if run is None or model is None or not rec.flops_total:
            if run is not None:
                warnings.warn(f"{rec.path}: no cost model for {rec.ansatz} on {rec.molecule} or no flops_total; "
                              f"not checked", stacklevel=2)
            continue
        flops, seconds = _predict(model, run, rec.steps)
        u_logged = float(np.mean([s.n_unique for s in run.steps]))
        out.append(CostCheck(Path(rec.path), rec.ansatz, rec.molecule, rec.steps, run.cap, u_logged,
                             model.unique(run.cap), _logged_total(run), flops,
                             _predict(model, run, rec.steps, u_logged)[0], rec.wall_s, seconds))
    return out


__all__ = ["CostCheck", "check_against_logs"]
