"""Schedules that do not depend on the run's length, and the stopping rules.

* Learning rate: `cosine` (warm-up, then cosine decay to lr_final at the last step: tied to `steps`) or `wsd`
  (warm-up, constant, then a linear decay to lr_final over the last `decay` steps; Hägele et al. 2024). The
  WSD decay starts at `steps - decay`, or earlier when a stopping rule fires, so a run's length can be decided
  by its convergence and runs of several lengths can branch off one trunk.
* Annealing temperature (Hartree): T0 falling linearly to 0 over `anneal_steps` steps, or over
  `anneal_fraction` of the steps when anneal_steps is not set.
* Stopping (`StopMonitor`): the energy's change between the last two windows of `stop_window` steps within
  `stop_sigma` standard errors (the windows' step-to-step scatter; annealing over), the window's mean V-score
  below `stop_vscore`, and the wall-time budget `max_time` (seconds). When the enabled convergence tests hold
  (or the budget is about to run out) a WSD run decays and stops; a cosine run stops at once.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

LR_SCHEDULES = ("cosine", "wsd")


def decay_length(optim) -> int:
    """The WSD decay in steps: `decay` steps when >= 1, else that fraction of `steps` (at least 1)."""
    d = optim.decay
    return max(1, int(round(d if d >= 1 else d * optim.steps)))


def cosine(start: float, end: float, progress: float) -> float:
    """A cosine from `start` (progress 0) to `end` (progress 1); the training's and the fit's learning rates."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_factor(optim, step: int, decay_start: int | None = None) -> float:
    """The learning rate at `step` as a factor of lr (each parameter group scales it)."""
    if step < optim.warmup:
        return (step + 1) / optim.warmup
    ratio = optim.lr_final / optim.lr
    if optim.lr_schedule == "cosine":
        progress = min((step - optim.warmup) / max(optim.steps - optim.warmup, 1), 1.0)
        return cosine(1.0, ratio, progress)
    length = decay_length(optim)
    start = optim.steps - length if decay_start is None else min(decay_start, optim.steps - length)
    if step < start:
        return 1.0
    return 1.0 + (ratio - 1.0) * min((step - start + 1) / length, 1.0)


def temperature(optim, step: int) -> float:
    """Annealing temperature (Hartree) at `step`."""
    span = optim.anneal_steps if optim.anneal_steps is not None else optim.anneal_fraction * optim.steps
    return optim.anneal_t0 * max(0.0, 1.0 - step / max(span, 1e-300))


@dataclass
class StopState:
    """What the stopping rules know after a step (kept in checkpoints)."""

    energies: list = field(default_factory=list)  # the last 2 * window training energies (Hartree)
    vscores: list = field(default_factory=list)
    met: dict = field(default_factory=dict)  # criterion -> first step at which it held
    decay_start: int | None = None  # WSD: the step the decay began (None: at steps - decay)
    stop_after: int | None = None  # the last step to run (None: steps)
    reason: str | None = None
    lowest_energy: float | None = None  # the lowest training energy of a step at T = 0 (Hartree)
    lowest_energy_err: float | None = None  # ... its standard error
    lowest_step: int | None = None  # ... and its step


class StopMonitor:
    """Applies the stopping rules of `cfg.stop` after each step; `state` is checkpointed."""

    def __init__(self, cfg, state: StopState | None = None):
        self.optim, self.stop = cfg.optim, cfg.stop
        self.state = state or StopState()

    def is_new_lowest(self, energy: float, temperature_now: float) -> bool:
        """Whether a step's training energy at this temperature would be the lowest so far: steps at T = 0
        only (an annealed step's weights minimise F = E - TS, not E)."""
        low = self.state.lowest_energy
        return temperature_now == 0 and (low is None or energy < low)

    def update(self, step: int, energy: float, vscore: float | None, temperature_now: float, elapsed: float,
               mean_step_s: float, energy_err: float | None = None) -> bool:
        """Record step `step`; True when the run must end after it."""
        st, s = self.state, self.stop
        if self.is_new_lowest(energy, temperature_now):
            st.lowest_energy, st.lowest_energy_err, st.lowest_step = energy, energy_err, step
        if s.stop_window is not None:
            st.energies = (st.energies + [energy])[-2 * s.stop_window:]
            if temperature_now == 0 and len(st.energies) == 2 * s.stop_window and self._energy_flat():
                st.met.setdefault("energy", step)
        if s.stop_vscore is not None and vscore is not None and math.isfinite(vscore):
            window = s.stop_window or 50
            st.vscores = (st.vscores + [vscore])[-window:]
            if temperature_now == 0 and len(st.vscores) == window and statistics.fmean(st.vscores) < s.stop_vscore:
                st.met.setdefault("vscore", step)
        converged = (s.stop_window is not None or s.stop_vscore is not None) and all(
            key in st.met for key, on in (("energy", s.stop_window), ("vscore", s.stop_vscore)) if on is not None)
        if converged:
            st.met.setdefault("converged", step)
        out_of_time = False
        if s.max_time is not None:
            reserve = decay_length(self.optim) * mean_step_s if self.optim.lr_schedule == "wsd" else 0.0
            if elapsed + reserve >= s.max_time:
                st.met.setdefault("max_time", step)
                out_of_time = True
        if (converged or out_of_time) and st.stop_after is None:
            st.reason = "converged" if converged else "max_time"
            if self.optim.lr_schedule == "wsd":
                natural = self.optim.steps - decay_length(self.optim)
                st.decay_start = min(step + 1, natural)
                st.stop_after = min(st.decay_start + decay_length(self.optim) - 1, self.optim.steps - 1)
            else:
                st.stop_after = step
        if s.max_time is not None and elapsed >= s.max_time and (st.stop_after is None or st.stop_after > step):
            st.stop_after, st.reason = step, "max_time"
        if (s.stop_patience is not None and st.lowest_step is not None and step - st.lowest_step >= s.stop_patience
                and (st.stop_after is None or st.stop_after > step)):
            st.met.setdefault("patience", step)
            st.stop_after, st.reason = step, "patience"
        return st.stop_after is not None and step >= st.stop_after

    def _energy_flat(self) -> bool:
        w = self.stop.stop_window
        a, b = self.state.energies[:w], self.state.energies[w:]
        se = math.sqrt(statistics.variance(a) / w + statistics.variance(b) / w)
        return abs(statistics.fmean(b) - statistics.fmean(a)) <= self.stop.stop_sigma * se

    def record(self, steps_run: int) -> dict:
        """For the run summary: why it stopped and when each criterion held."""
        st = self.state
        reason = st.reason if st.stop_after is not None and steps_run - 1 >= st.stop_after else "steps"
        return {"stop_reason": reason, "criteria_met": dict(st.met), "decay_start": st.decay_start}

    def state_dict(self) -> dict:
        return asdict(self.state)
