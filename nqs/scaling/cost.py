"""The measured cost of one VMC step per (ansatz, molecule), fitted from what runs log, for any size and cap.

FLOPs per step, for a model config φ (`nqs.flops`, exact given the counts) at unique cap B:

    C(φ, B) = κ·samp(φ, rows(U)) + fwd(φ)·n_evals(U) + c_H·U + grad(φ)·U  [+ SR: ng(φ, min(sr_rows, U))]

with U = U(B) the realised unique samples and rows(U)_j = min(P_j, U) the sampler's prefixes at position j
(`nqs.flops.full_tree_rows`, P_j the sector's valid prefixes). Fitted per (ansatz, molecule) from the runs'
metrics.jsonl (every step's n_unique, n_evals and per-phase FLOPs) and config.yaml:

* U(B) = ρ(B)·min(B, |sector|): ρ is the step-weighted mean of n_unique / min(B, |sector|) at each observed
  cap, interpolated linearly in log B between caps and held constant beyond them (one cap: its ratio). U is
  below the cap once a run's distribution concentrates (long runs, some seeds), and this run-to-run spread at
  one cap is most of the error of a run's cost predicted from its cap;
  `nqs.scaling.cost_check.CostCheck.count_error` is the rest.
* The SR phase: runs that switch to stochastic reconfiguration (the most common protocol among the runs: SR
  from step T0 with R rows, `sr_from` / `sr_rows`) concentrate their distribution, so U is fitted apart over
  their SR steps (ρ_SR); an SR step costs the terms above at that U plus ng(φ, min(R, U)), and
  `nqs.scaling.allocate` charges a run min(T, T0) plain steps and max(T − T0, 0) SR steps.
* n_evals(U) = clip(a·U^b, U, |sector|): a least-squares line in log-log through the runs' mean (U, n_evals),
  weighted by steps (b = 1, the mean ratio, when all runs share one U). The clip is the data's saturation:
  every sample is evaluated, and no more configurations exist than the sector holds.
* κ: logged sampling FLOPs over those of the full tree at each step's U, summed over steps (1 while the draw
  reaches every prefix; below 1 once the distribution concentrates and fewer prefixes are drawn).
* c_H: the local-energy kernel's FLOPs per unique sample (logged local energy minus the network's share).

Wall seconds per step (`t_step`): for each phase a non-negative intercept plus non-negative coefficients
on its cost terms, fitted by NNLS (`scipy.optimize.nnls`) on per-run means, each run's row divided by its
measured time (relative errors): sampling ~ 1, FLOPs, Σ rows; local energy ~ 1, network FLOPs, kernel
FLOPs; gradient ~ 1, FLOPs, SR FLOPs; framework ~ 1. Small CPU kernels are overhead-bound, so the intercepts
carry much of the time; through the FLOP and row terms the model extends to sizes and caps not run.

Sizes: a `SizeFamily` (`nqs.models.counts`) per ansatz holds the runs' fixed sizes (layers, heads, phase
layers: the most common) and median ratios (d_ff / d_model, phase_hidden / width); its members are every
realisable width from the smallest observed to 8x the largest. `StepCost.flops(n)` interpolates log FLOPs in
log N between members.
"""
from __future__ import annotations

import functools
import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from nqs import flops as fl
from nqs.errors import UserError
from nqs.hilbert import Sector
from nqs.models import ModelConfig
from nqs.models.counts import WIDTH, Member, SizeFamily, cached_counts, check_n, family_members
from nqs.record import METRICS_FILE, RunSummary, StepRecord, read_metrics
from nqs.training.config import TrainConfig, load_yaml, resolve

PHASES = {"sampling": ("intercept", "flops", "rows"), "local_energy": ("intercept", "flops", "kernel_flops"),
          "gradient": ("intercept", "flops", "sr_flops"), "framework": ("intercept",)}


@dataclass(frozen=True)
class StepCost:
    """The cost model of one (ansatz, molecule); see the module docstring for its form. FLOPs and seconds are
    per optimisation step; caps and unique counts are unique samples per step."""

    ansatz: str
    molecule: str
    sector_size: float
    n_qubits: int
    n_alpha: int
    n_beta: int
    family: SizeFamily
    caps: tuple[float, ...]  # observed caps B, ascending
    unique_ratio: tuple[float, ...]  # ρ at each cap: mean n_unique / min(B, |sector|)
    evals_a: float  # n_evals = clip(a·U^b, U, |sector|)
    evals_b: float
    sampling_scale: float  # κ
    kernel_flops_per_sample: float  # c_H
    time: tuple[tuple[str, tuple[float, ...]], ...] | None  # phase -> coefficients (PHASES), None: no timings
    flops_residual: float  # rms relative error of the runs' logged FLOPs predicted from their configs and caps
    seconds_residual: float | None  # rms relative error of the runs' mean t_step from their realised terms
    n_runs: int
    n_steps: int
    network_scale: float = 1.0  # executed / full-pass network FLOPs of the local energy (< 1 for the prefix trie)
    sr_from: int | None = None  # the runs' protocol: SR steps from this step on (None: Adam only)
    sr_rows: int | None = None  # Jacobian rows of an SR step
    sr_unique_ratio: tuple[float, ...] | None = None  # ρ at each cap over the SR steps (the state is sharper)

    @property
    def sector(self) -> Sector:
        return Sector(self.n_qubits // 2, self.n_alpha, self.n_beta)

    def unique(self, cap: float, sr: bool = False) -> float:
        """Expected realised unique samples per step at cap B: ρ(B)·min(B, |sector|) <= min(B, |sector|); with
        `sr`, over the protocol's SR steps (their own ρ where the runs had SR steps)."""
        if not cap >= 1:
            raise UserError(f"the unique cap must be at least 1, got {cap}")
        ratios = self.sr_unique_ratio if sr and self.sr_unique_ratio else self.unique_ratio
        ratio = float(np.interp(math.log(cap), np.log(self.caps), ratios))
        return min(ratio, 1.0) * min(float(cap), self.sector_size)

    def n_evals(self, unique: float) -> float:
        """Deduplicated configurations the local energy evaluates for U unique samples."""
        return min(max(self.evals_a * unique ** self.evals_b, unique), self.sector_size)

    def config(self, size_options: dict) -> ModelConfig:
        """The ModelConfig of these size options; the family's member of the same width fills the rest."""
        base = self.family.options(size_options.get(WIDTH[self.ansatz], self.family.widths[0]))
        return ModelConfig(self.ansatz, **{**base, **size_options}).validate()

    def terms(self, size_options: dict, cap: float, sr_rows: int | None = None) -> dict[str, float]:
        """Per-step cost terms at cap B: FLOPs {"sampling", "local_energy", "gradient", "natural_gradient",
        "total"}, and the time model's regressors ("rows", "network_flops", "kernel_flops")."""
        return self._terms(self.config(size_options), self.unique(cap, sr=bool(sr_rows)), sr_rows)

    def _terms(self, cfg: ModelConfig, u: float, sr_rows: int | None, n_evals: float | None = None) -> dict:
        sector = self.sector
        rows = fl.full_tree_rows(sector, u)
        net = self.network_scale * fl.forward_flops(cfg, sector, self.n_evals(u) if n_evals is None else n_evals)
        kernel = self.kernel_flops_per_sample * u
        out = {"sampling": self.sampling_scale * fl.sampling_flops(cfg, sector, rows),
               "local_energy": net + kernel, "gradient": fl.gradient_flops(cfg, sector, u),
               "natural_gradient": 0.0 if not sr_rows else fl.natural_gradient_flops(
                   cfg, sector, min(sr_rows, u), cached_counts(cfg, sector)["total"]),
               "rows": sum(rows), "network_flops": net, "kernel_flops": kernel}
        out["total"] = out["sampling"] + out["local_energy"] + out["gradient"] + out["natural_gradient"]
        return out

    def flops_for_options(self, size_options: dict, cap: float, sr_rows: int | None = None) -> float:
        """FLOPs of one step of the config with these size options at cap B (`sr_rows`: an SR step's rows)."""
        return self.terms(size_options, cap, sr_rows)["total"]

    def seconds_for_options(self, size_options: dict, cap: float, sr_rows: int | None = None) -> float:
        """Measured-model wall seconds of one step (t_step) of the config with these size options at cap B."""
        return self._seconds(self.terms(size_options, cap, sr_rows))

    def _seconds(self, t: dict) -> float:
        if self.time is None:
            raise UserError(f"the runs of {self.ansatz} on {self.molecule} logged no step times; re-run them with "
                            f"the current nqs-train to fit a time model")
        x = _regressors(t)
        return float(sum(np.dot(c, x[phase]) for phase, c in self.time))

    def flops(self, n: float, cap: float, n_from: str = "total", sr: bool = False) -> float:
        """FLOPs per step of the family member of size N = n (count `n_from`) at cap B: log-log interpolation
        between the realisable members (exact at a member; beyond them the end segments extend). `sr`: an SR
        step of the runs' protocol (`sr_rows` rows); a plain step otherwise."""
        return _interpolate(self, cap, n_from, "flops", n, sr)

    def seconds(self, n: float, cap: float, n_from: str = "total", sr: bool = False) -> float:
        """Wall seconds per step of the family member of size N = n at cap B, interpolated as `flops`."""
        return _interpolate(self, cap, n_from, "seconds", n, sr)

    def to_json(self) -> dict:
        return {"ansatz": self.ansatz, "molecule": self.molecule, "sector_size": self.sector_size,
                "n_qubits": self.n_qubits, "n_alpha": self.n_alpha, "n_beta": self.n_beta,
                "unique": {"caps": list(self.caps), "ratio": list(self.unique_ratio)},
                "n_evals": {"a": self.evals_a, "b": self.evals_b}, "sampling_scale": self.sampling_scale,
                "kernel_flops_per_sample": self.kernel_flops_per_sample, "network_scale": self.network_scale,
                "seconds": None if self.time is None else
                {p: dict(zip(PHASES[p], c)) for p, c in self.time},
                "flops_residual": self.flops_residual, "seconds_residual": self.seconds_residual,
                "n_runs": self.n_runs, "n_steps": self.n_steps, "family": self.family.to_json(),
                "protocol": {"sr_from": self.sr_from, "sr_rows": self.sr_rows,
                             "sr_unique_ratio": None if self.sr_unique_ratio is None else list(self.sr_unique_ratio)}}


def _regressors(t: dict) -> dict[str, np.ndarray]:
    return {"sampling": np.array([1.0, t["sampling"], t["rows"]]),
            "local_energy": np.array([1.0, t["network_flops"], t["kernel_flops"]]),
            "gradient": np.array([1.0, t["gradient"], t["natural_gradient"]]), "framework": np.array([1.0])}


@functools.lru_cache(maxsize=1024)
def _curve(cost: StepCost, cap: float, n_from: str, what: str, sr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(log N, log cost) over the family's members, ascending in N, one point per distinct N (the smallest
    width where several members share one count); `sr`: of an SR step of the protocol."""
    points: dict[int, float] = {}
    rows = cost.sr_rows if sr else None
    for m in family_members(cost.family, cost.sector):
        n = m.counts[n_from]
        if n not in points:
            cost_of = cost.seconds_for_options if what == "seconds" else cost.flops_for_options
            points[n] = cost_of(m.options, cap, rows)
    ns = sorted(points)
    return np.log(np.array(ns, dtype=float)), np.log(np.array([points[n] for n in ns]))


def _interpolate(cost: StepCost, cap: float, n_from: str, what: str, n: float, sr: bool = False) -> float:
    check_n(n, n_from)
    x, y = _curve(cost, float(cap), n_from, what, bool(sr and cost.sr_rows))
    v = math.log(n)
    if len(x) == 1:
        return float(math.exp(y[0]))
    if v < x[0] or v > x[-1]:
        i = 0 if v < x[0] else len(x) - 2
        return float(math.exp(y[i] + (y[i + 1] - y[i]) / (x[i + 1] - x[i]) * (v - x[i])))
    return float(math.exp(np.interp(v, x, y)))


# --- fitting -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Run:
    record: RunSummary
    cfg: TrainConfig
    sector: Sector
    steps: tuple[StepRecord, ...]  # the logged steps with per-phase FLOPs

    @property
    def cap(self) -> float:
        return float(self.cfg.sampling.unique)

    @property
    def sr_rows(self) -> int | None:
        return self.cfg.optim.sr_rows if self.cfg.optim.optimizer != "adam" else None

    def sr_steps(self, steps: int) -> int:
        start = self.cfg.optim.sr_start
        return 0 if start is None else max(steps - start, 0)


def _load(rec: RunSummary) -> _Run | None:
    """The run's config, sector and logged steps; None (with a warning naming the run) when unusable."""
    where = rec.path if rec.path is not None else f"{rec.molecule}/{rec.ansatz} (no run directory)"

    def skip(why: str) -> None:
        warnings.warn(f"{where}: {why}; skipping it in the cost model", stacklevel=3)

    if rec.path is None or not (Path(rec.path) / METRICS_FILE).is_file():
        return skip(f"no {METRICS_FILE}")
    if not (Path(rec.path) / "config.yaml").is_file():
        return skip("no config.yaml")
    if None in (rec.n_qubits, rec.n_alpha, rec.n_beta, rec.sector_size, rec.steps):
        return skip("its summary lacks the sector (n_qubits, n_alpha, n_beta) or steps")
    try:
        cfg = resolve([(str(Path(rec.path) / "config.yaml"), load_yaml(Path(rec.path) / "config.yaml"))])
    except UserError as exc:
        return skip(f"unreadable config ({exc})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a corrupt line is one step fewer here
        rows = tuple(r for r in read_metrics(rec.path) if r.n_unique > 0 and r.n_evals > 0
                     and all(k in r.flops_step for k in ("sampling", "local_energy", "gradient")))
    if not rows:
        return skip("no logged step with per-phase FLOPs (flops_step)")
    return _Run(rec, cfg, Sector(rec.n_qubits // 2, rec.n_alpha, rec.n_beta), rows)


def fit_cost_models(records: Sequence[RunSummary]) -> dict[tuple[str, str], StepCost]:
    """One StepCost per (ansatz, molecule) from the runs' logs; runs without metrics.jsonl, config.yaml or
    per-step FLOPs are skipped with a warning naming the run directory; UserError if none is usable."""
    runs = [r for r in (_load(rec) for rec in records) if r is not None]
    if not runs:
        raise UserError("no run with metrics.jsonl, config.yaml and per-step FLOPs among the given runs; pass "
                        "directories written by nqs-train")
    families = {a: SizeFamily.from_configs(a, [r.cfg.model for r in runs if r.record.ansatz == a])
                for a in {r.record.ansatz for r in runs}}
    groups: dict[tuple[str, str], list[_Run]] = defaultdict(list)
    for r in runs:
        groups[(r.record.ansatz, r.record.molecule)].append(r)
    return {key: _fit(group, families[key[0]]) for key, group in sorted(groups.items())}


def _fit(runs: list[_Run], family: SizeFamily) -> StepCost:
    sector = Counter(r.sector for r in runs).most_common(1)[0][0]
    for r in runs:
        if r.sector != sector:  # one label, other orbitals (custom geometries, active spaces)
            warnings.warn(f"{r.record.path}: sector {r.sector} differs from its molecule's {sector}; skipping it in "
                          f"the cost model", stacklevel=3)
    runs = [r for r in runs if r.sector == sector]
    rec = runs[0].record
    size = float(sector.size)
    caps = sorted({r.cap for r in runs})
    def ratios(steps_of):
        out = []
        for c in caps:
            chosen = [s for r in runs if r.cap == c for s in steps_of(r)]
            out.append(sum(s.n_unique for s in chosen) / (len(chosen) * min(c, size)) if chosen else math.nan)
        return out

    ratio = ratios(lambda r: r.steps)
    sr_ratio = ratios(lambda r: [s for s in r.steps if "natural_gradient" in s.flops_step])
    sr_ratio = None if all(math.isnan(x) for x in sr_ratio) else tuple(  # a cap without SR steps: its plain ρ
        min(b if math.isnan(x) else x, 1.0) for x, b in zip(sr_ratio, ratio))
    protocols = Counter((r.cfg.optim.sr_start, r.sr_rows) for r in runs)
    (sr_from, sr_rows), _ = protocols.most_common(1)[0]
    if len(protocols) > 1:
        warnings.warn(f"{rec.ansatz} on {rec.molecule}: the runs mix SR protocols {sorted(protocols, key=str)}; the "
                      f"cost model allocates with the most common (SR from step {sr_from}, {sr_rows} rows)",
                      stacklevel=3)
    u = np.array([np.mean([s.n_unique for s in r.steps]) for r in runs])
    ev = np.array([np.mean([s.n_evals for s in r.steps]) for r in runs])
    w = np.array([len(r.steps) for r in runs], dtype=float)
    if np.ptp(np.log(u)) > 1e-3:
        b, log_a = np.polyfit(np.log(u), np.log(ev), 1, w=np.sqrt(w))
        a = float(np.exp(log_a))
    else:
        a, b = float((w * ev).sum() / (w * u).sum()), 1.0
    samp_logged = samp_tree = 0.0
    le_rows, le_logged = [], []
    for r in runs:
        for s in r.steps:
            samp_logged += s.flops_step["sampling"]
            samp_tree += fl.sampling_flops(r.cfg.model, sector, fl.full_tree_rows(sector, s.n_unique))
            le_rows.append((fl.forward_flops(r.cfg.model, sector, s.n_evals), s.n_unique))
            le_logged.append(s.flops_step["local_energy"])
    # local energy = s·(full-pass network FLOPs) + c_H·U: s = 1 for the dense path, < 1 for the prefix trie
    # (issue 15), which evaluates distinct prefixes only; non-negative least squares, rows scaled to unit size
    a_mat, y = np.array(le_rows, dtype=float), np.array(le_logged, dtype=float)
    scale = np.maximum(y, 1.0)
    (net_scale, kernel_per_sample), _ = nnls(a_mat / scale[:, None], y / scale)
    if len({getattr(s, "local_energy", None) or "exact-dense" for r in runs for s in r.steps}) > 1:
        warnings.warn(f"{rec.ansatz} on {rec.molecule}: runs of several local-energy modes share one cost model "
                      "(its network scale is their average)", stacklevel=3)
    draft = StepCost(rec.ansatz, rec.molecule, size, sector.n_qubits, sector.n_alpha, sector.n_beta, family,
                     tuple(caps), tuple(min(x, 1.0) for x in ratio), a, float(b),
                     samp_logged / samp_tree if samp_tree > 0 else 1.0, float(kernel_per_sample),
                     None, 0.0, None, len(runs), sum(len(r.steps) for r in runs), float(net_scale),
                     sr_from, sr_rows, sr_ratio)
    time, t_resid = _fit_time(draft, runs)
    f_err = [_predict(draft, r, len(r.steps))[0] / sum(s.flops_step["total"] for s in r.steps) - 1 for r in runs]
    return replace(draft, time=time, seconds_residual=t_resid,
                   flops_residual=float(np.sqrt(np.mean(np.square(f_err)))))


def _fit_time(cost: StepCost, runs: list[_Run]):
    """NNLS per phase on per-run means, rows weighted by 1/measured time; (coefficients, rms relative error
    of the runs' mean t_step) or (None, None) without timings."""
    timed = [r for r in runs if all(s.t_step is not None for s in r.steps)]
    if not timed:
        return None, None
    x: dict[str, list] = defaultdict(list)
    y: dict[str, list] = defaultdict(list)
    for r in timed:
        terms = [cost._terms(r.cfg.model, s.n_unique, r.sr_rows if "natural_gradient" in s.flops_step else None,
                             s.n_evals) for s in r.steps]
        mean = {k: float(np.mean([t[k] for t in terms])) for k in terms[0]}
        for phase, reg in _regressors(mean).items():
            x[phase].append(reg)
        y["sampling"].append(np.mean([s.t_sampling for s in r.steps]))
        y["local_energy"].append(np.mean([s.t_local_energy for s in r.steps]))
        y["gradient"].append(np.mean([s.t_backward for s in r.steps]))
        y["framework"].append(np.mean([_framework(s) for s in r.steps]))
    coef = []
    for phase in PHASES:
        a, b = np.array(x[phase]), np.array(y[phase])
        scale = np.where(a.max(0) > 0, a.max(0), 1.0)  # columns of order 1 for NNLS
        weight = 1.0 / np.maximum(b, 1e-6)
        c, _ = nnls(a / scale * weight[:, None], b * weight)
        coef.append((phase, tuple(float(v) for v in c / scale)))
    pred = sum(np.array(x[p]) @ np.array(c) for p, c in coef)
    meas = np.array([np.mean([s.t_step for s in r.steps]) for r in timed])
    return tuple(coef), float(np.sqrt(np.mean(np.square(pred / meas - 1))))


def _framework(s: StepRecord) -> float:
    if s.t_framework is not None:
        return s.t_framework
    return max(s.t_step - s.t_sampling - s.t_local_energy - s.t_backward, 0.0)


# --- a run's predicted cost (the fit's residual here; against its log in nqs.scaling.cost_check) -------------
def _predict(model: StepCost, run: _Run, steps: int, unique: float | None = None) -> tuple[float, float | None]:
    """(FLOPs, wall seconds or None) of `steps` steps of this run's config at its cap (or at `unique` samples
    per step), its SR steps with the natural-gradient term."""
    u = model.unique(run.cap) if unique is None else unique
    u_sr = model.unique(run.cap, sr=True) if unique is None else unique
    plain = model._terms(run.cfg.model, u, None)
    sr = model._terms(run.cfg.model, u_sr, run.sr_rows) if run.sr_rows else plain
    n_sr = run.sr_steps(steps)
    flops = (steps - n_sr) * plain["total"] + n_sr * sr["total"]
    seconds = None if model.time is None else (steps - n_sr) * model._seconds(plain) + n_sr * model._seconds(sr)
    return flops, seconds



__all__ = ["Member", "SizeFamily", "StepCost", "fit_cost_models"]
