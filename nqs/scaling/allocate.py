"""Compute-optimal allocation in (N, T, B) under the measured cost model, with bootstrap intervals.

For a molecule m and a budget C (FLOPs, or seconds of one CPU thread), a run of N parameters, T steps and
unique-sample cap B costs T·c_m(N, B) (`nqs.scaling.cost.StepCost`: FLOPs or measured seconds per step) and
reaches D' = T·s_m(B), with s_m(B) the S_F per step by `--d-from`: realised U(B)/|sector|, nominal
min(B, |sector|)/|sector|, or U(B)/2^n. When the runs switch to stochastic reconfiguration at step T0 (the
cost model's protocol), the steps from T0 on cost an SR step's c^SR_m(N, B) and see that phase's unique count:
C = min(T, T0)·c + max(T − T0, 0)·c^SR, and D' likewise, so T at a budget is piecewise linear in C.
The optimum minimises the fitted L(N, D') over N (a log grid over
the family of model sizes) and B (the caps the runs used: the law cannot tell B from T beyond them).
FLOP-optimal and time-optimal allocations differ because small CPU kernels are overhead-bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nqs.errors import UserError
from nqs.scaling.fit import FitResult, Law

KINDS = {"flops": "FLOPs", "seconds": "s"}
N_GRID = 321


@dataclass(frozen=True)
class Allocation:
    """The optimum for one molecule, budget and cost kind; `ci` holds 95% bootstrap intervals."""

    molecule: str
    kind: str  # flops | seconds
    budget: float
    n: float
    steps: float
    cap: float
    d_prime: float
    predicted: float
    ci: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"molecule": self.molecule, "kind": self.kind, "budget": self.budget, "n": self.n,
                "steps": self.steps, "cap": self.cap, "d_prime": self.d_prime, "predicted": self.predicted,
                "ci": {k: list(v) for k, v in self.ci.items()}, "warnings": list(self.warnings)}


def s_f_per_step(cost, cap: float, d_from: str, sr: bool = False) -> float:
    """S_F of one step at cap B under the cost model's unique-count fit (see the module docstring); `sr`: of
    an SR step of the protocol."""
    if d_from == "nominal":
        return min(cap, cost.sector_size) / cost.sector_size
    u = cost.unique(cap, sr=True) if sr else cost.unique(cap)
    return u / cost.sector_size if d_from == "realised" else u / 2.0 ** cost.n_qubits


def _split(steps, sr_from: int | None):
    """(plain steps, SR steps) of a run of `steps` steps whose SR phase starts at `sr_from` (None: never)."""
    if sr_from is None:
        return steps, 0.0 * steps
    return np.minimum(steps, sr_from), np.maximum(steps - sr_from, 0.0)


def run_cost(steps, plain, sr, sr_from: int | None):
    """Cost of a run of `steps` steps: plain steps at `plain` each, SR steps (from `sr_from`) at `sr` each."""
    head, tail = _split(steps, sr_from)
    return head * plain + tail * sr


def run_d_prime(steps, s_f, s_f_sr, sr_from: int | None):
    """D' of a run of `steps` steps: S_F per plain step `s_f`, per SR step `s_f_sr`."""
    head, tail = _split(steps, sr_from)
    return head * s_f + tail * s_f_sr


def steps_for_budget(budget, plain, sr, sr_from: int | None):
    """The T whose `run_cost` equals the budget (the inverse of a piecewise-linear increasing function)."""
    if sr_from is None:
        return budget / plain
    head = sr_from * plain
    return np.where(budget <= head, budget / plain, sr_from + (budget - head) / sr)


@dataclass(frozen=True)
class CostTable:
    """Per-step cost on a grid of N (log-spaced) × caps, computed once and reused for every bootstrap law."""

    log_n: np.ndarray
    caps: np.ndarray
    per_step: np.ndarray  # (len(log_n), len(caps)): a plain step
    s_f: np.ndarray  # (len(caps),)
    per_step_sr: np.ndarray  # the same for an SR step of the protocol (= per_step without one)
    s_f_sr: np.ndarray
    sr_from: int | None

    @classmethod
    def build(cls, cost, kind: str, n_from: str, caps: Sequence[float], n_range: tuple[float, float],
              d_from: str) -> "CostTable":
        if kind not in KINDS:
            raise UserError(f"unknown cost kind {kind!r}: flops or seconds")
        log_n = np.linspace(math.log(n_range[0]), math.log(n_range[1]), N_GRID)
        caps = np.asarray(sorted(set(float(c) for c in caps)))
        fn = cost.flops if kind == "flops" else cost.seconds
        sr_from = getattr(cost, "sr_from", None)
        kw = [{}, {"sr": True} if sr_from is not None else {}]  # a plain step, an SR step of the protocol
        tables = [np.array([[fn(math.exp(u), c, n_from, **k) for c in caps] for u in log_n], dtype=float) for k in kw]
        if any(not np.all(np.isfinite(t)) or np.any(t <= 0) for t in tables):
            raise UserError(f"the {kind} cost model gives a non-positive cost in N ∈ [{n_range[0]:.3g}, "
                            f"{n_range[1]:.3g}]; refit it on runs with logged {kind}")
        s_f = [np.array([s_f_per_step(cost, c, d_from, sr) for c in caps]) for sr in (False, sr_from is not None)]
        return cls(log_n, caps, tables[0], s_f[0], tables[1], s_f[1], sr_from)


def _optimum(law: Law, table: CostTable, budget: float, molecule: str) -> tuple[float, float, float, float, float, int]:
    """(N, T, B, D', L̂, grid index of N) minimising L̂ on the table, refined by a parabola in log N."""
    steps = steps_for_budget(budget, table.per_step, table.per_step_sr, table.sr_from)  # (n, caps)
    d = run_d_prime(steps, table.s_f[None, :], table.s_f_sr[None, :], table.sr_from)
    n = np.exp(table.log_n)[:, None].repeat(table.caps.size, axis=1)
    loss = law.predict(n.ravel(), d.ravel(), molecule).reshape(n.shape)
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    u = table.log_n[i]
    if 0 < i < table.log_n.size - 1:  # parabola through the three grid points around the minimum
        y0, y1, y2 = np.log(loss[i - 1:i + 2, j])
        den = y0 - 2 * y1 + y2
        if den > 0:
            u = table.log_n[i] + 0.5 * (y0 - y2) / den * (table.log_n[1] - table.log_n[0])
    c, c_sr = (float(np.exp(np.interp(u, table.log_n, np.log(t[:, j])))) for t in (table.per_step, table.per_step_sr))
    t = float(steps_for_budget(budget, c, c_sr, table.sr_from))
    dp = float(run_d_prime(t, table.s_f[j], table.s_f_sr[j], table.sr_from))
    return math.exp(u), t, float(table.caps[j]), dp, float(law.predict(math.exp(u), dp, molecule)[0]), int(i)


def allocate(fit: FitResult, cost, *, molecule: str, kind: str, budgets: Sequence[float], n_from: str,
             d_from: str, caps: Sequence[float], n_range: tuple[float, float],
             steps_range: tuple[float, float] | None = None,
             data_n: tuple[float, float] | None = None) -> list[Allocation]:
    """The optimum for each budget, with intervals from the fit's bootstrap laws and warnings when the
    optimum sits at the edge of the searched N range, beyond the runs' N (`data_n`) or T range, or when B
    had a single value to choose from."""
    if len(fit.law.size_terms) != 1:
        raise UserError("allocation needs one size term; the split law (--n-from split) has two: fit with "
                        "--n-from effective (or total) to allocate")
    bad = [b for b in budgets if not (b > 0 and math.isfinite(b))]
    if bad:
        raise UserError(f"budget {bad[0]!r} is not a positive number of {KINDS.get(kind, kind)}")
    table = CostTable.build(cost, kind, n_from, caps, n_range, d_from)
    out = []
    for budget in budgets:
        n, t, cap, dp, pred, i = _optimum(fit.law, table, budget, molecule)
        notes = []
        if i in (0, table.log_n.size - 1):
            notes.append(f"N* at the {'lower' if i == 0 else 'upper'} edge of the searched range "
                         f"[{n_range[0]:.3g}, {n_range[1]:.3g}]: the law has no interior optimum there")
        if data_n and not (data_n[0] <= n <= data_n[1]):
            notes.append(f"N* = {n:.4g} lies outside the runs' N range {data_n[0]:.4g}–{data_n[1]:.4g}: an extrapolation")
        if len(table.caps) == 1:
            notes.append(f"B* = {table.caps[0]:g} is the runs' only cap: B is not allocated (the law cannot tell B "
                         "from T beyond the caps the runs used)")
        if steps_range and not (steps_range[0] / 2 <= t <= 2 * steps_range[1]):
            notes.append(f"T* = {t:.3g} steps is outside the runs' range {steps_range[0]:g}–{steps_range[1]:g} "
                         "by more than 2×: an extrapolation")
        boots = np.array([_optimum(b, table, budget, molecule)[:5] for b in fit.boot]) if fit.boot else None
        ci = {}
        if boots is not None and len(boots) >= 2:
            for k, name in enumerate(("n", "steps", "cap", "d_prime", "predicted")):
                lo, hi = np.percentile(boots[:, k], [2.5, 97.5])
                ci[name] = (float(lo), float(hi))
        out.append(Allocation(molecule, kind, float(budget), n, t, cap, dp, pred, ci, tuple(notes)))
    return out


def format_allocations(allocs: Sequence[Allocation], metric_label: str) -> list[str]:
    from nqs.tables import markdown_table

    def ci(a, key, fmt="{:.3g}"):
        v = a.ci.get(key)
        return "" if v is None else f" [{fmt.format(v[0])}, {fmt.format(v[1])}]"

    rows = [[a.molecule, f"{a.budget:.3g} {KINDS[a.kind]}", f"{a.n:.4g}{ci(a, 'n')}", f"{a.steps:.4g}{ci(a, 'steps')}",
             f"{a.cap:g}", f"{a.d_prime:.4g}{ci(a, 'd_prime')}", f"{a.predicted:.4g}{ci(a, 'predicted')}"]
            for a in allocs]
    lines = markdown_table(["molecule", "budget", "N* [95%]", "T* [95%]", "B*", "D'* [95%]",
                            f"predicted {metric_label} [95%]"], rows).splitlines()
    for (mol, kind), group in _groups(allocs).items():
        if len(group) >= 2:
            lo, hi = group[0], group[-1]
            slope = math.log(hi.n / lo.n) / math.log(hi.budget / lo.budget)
            lines.append(f"{mol}, {kind}: N* ∝ C^{slope:.3f} between {lo.budget:.3g} and {hi.budget:.3g} "
                         f"{KINDS[kind]} under the measured cost model")
    said = set()
    for a in allocs:
        for w in a.warnings:
            if w.startswith("B* ="):  # the same for every budget of a molecule: once
                if (a.molecule, w) not in said:
                    said.add((a.molecule, w))
                    lines.append(f"note: {a.molecule}: {w}")
            else:
                lines.append(f"warning: {a.molecule} {a.budget:.3g} {KINDS[a.kind]}: {w}")
    return lines


def _groups(allocs: Sequence[Allocation]) -> dict[tuple[str, str], list[Allocation]]:
    out: dict[tuple[str, str], list[Allocation]] = {}
    for a in allocs:
        out.setdefault((a.molecule, a.kind), []).append(a)
    return {k: sorted(v, key=lambda a: a.budget) for k, v in out.items()}
