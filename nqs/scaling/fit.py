"""Fit the scaling law L(N, D') = A0 + A1·(N/N_c)^-α1 + A2·(D'/D'_c)^-α2 by variable projection.

Method (../shared/SCALING-METHOD.md; Hoffmann et al. 2022, approach 3; Besiroglu et al. 2024):

* **Reference point.** N_c and D'_c are the data's geometric centre, so A1 and A2 are the terms' values there
  (without it A1 and α1 are nearly collinear). The law may carry several size terms (`--n-from split`:
  modulus and phase, each with its own centre), one floor per molecule (`floors="molecule"`) and one set of
  amplitudes per molecule (`amplitudes="molecule"`); the exponents are shared by the pooled molecules.
* **Loss.** The Huber loss (δ = 1e-3, so in effect L1) of the log-residuals log L̂ − log L, summed.
* **Variable projection** (`nqs.scaling.fit_solver`). For fixed exponents L̂ = Φ(α)·A is linear in the
  non-negative coefficients A (floors and amplitudes); they are solved by Gauss–Newton on the log-residuals with Huber weights (IRLS),
  each step a non-negative least-squares problem, with step halving. The exponents are searched on a grid,
  then refined by L-BFGS-B on the profiled loss, whose gradient is the partial derivative at the solved A
  (envelope theorem). The tests show this finds the same optimum as the joint five-parameter fit.
* **Status.** converged / max_iterations / failed, plus flags for a floor that collapsed to zero, an
  exponent at its bound and an amplitude at zero: such a fit is reported, never labelled clean.
* **Cluster bootstrap** (cluster = molecule × grid cell, resampled within each molecule) gives 95%
  intervals of every coefficient and of the derived quantities: the elasticities at the data centre
  e_N = α1·A1/L̂_c and e_D = α2·A2/L̂_c, and the allocation exponent a = α2/(α1 + α2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from nqs.errors import UserError
from nqs.scaling.fit_solver import (FitStatus, ProfileData, basis, best_joint, best_start, grid_starts,
                                   solve_coefficients)
from nqs.scaling.law import Law, term_design

ALPHA_BOUNDS = (0.0, 3.0)
ZERO_FLOOR = 1e-6  # a coefficient below this fraction of the median L counts as zero


@dataclass(frozen=True)
class FitResult:
    """A fitted law with its 95% cluster-bootstrap intervals (`ci`, for params and derived quantities),
    status and flags. `loss` is the summed Huber loss of the log-residuals; `residual_scale` their RMS over
    the final points with the fitted parameters' degrees of freedom removed (an RMS, not a robust MAD, so that
    heavy tails and lack of fit widen the prediction intervals instead of being hidden). `boot` keeps the bootstrap laws (for prediction intervals)."""

    law: Law
    ci: dict[str, tuple[float, float]]
    status: FitStatus
    flags: tuple[str, ...]
    n_points: int
    n_clusters: int
    loss: float
    residual_scale: float
    n_bootstrap: int = 0
    message: str = ""
    boot: tuple[Law, ...] = field(default=(), repr=False, compare=False)
    validation: dict | None = None
    optimal: tuple = ()

    def __getattr__(self, name):  # fit.A0, fit.alpha1, ... as in the law's params
        if name.startswith(("A", "alpha")):
            params = self.__dict__["law"].params()
            if name in params:
                return params[name]
        raise AttributeError(name)

    @property
    def params(self) -> dict[str, float]:
        return self.law.params()

    @property
    def derived(self) -> dict[str, float]:
        return self.law.derived()

    @property
    def clean(self) -> bool:
        return self.status is FitStatus.CONVERGED and not self.flags

    def predict(self, n, d, molecule=None) -> np.ndarray:
        return self.law.predict(n, d, molecule)

    def log_interval(self, n, d, molecule=None, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """(σ_fit, σ_total) of log L̂ at the points: the bootstrap spread of the prediction, and with the
        residual scale added in quadrature (a prediction interval is log L̂ ± z·σ_total)."""
        if self.boot:
            logs = np.log(np.maximum([b.predict(n, d, molecule) for b in self.boot], 1e-300))
            sd = logs.std(axis=0, ddof=1) if len(self.boot) > 1 else np.zeros(logs.shape[1])
        else:
            sd = np.zeros(np.atleast_1d(np.asarray(d)).size)
        return sd, np.sqrt(sd ** 2 + self.residual_scale ** 2)

    def with_validation(self, validation: dict) -> "FitResult":
        return replace(self, validation=validation)

    def with_optimal(self, optimal: Sequence) -> "FitResult":
        return replace(self, optimal=tuple(optimal))

    def to_json(self) -> dict:
        f = lambda v: float(v) if v is not None and math.isfinite(v) else None  # noqa: E731
        return {"law": self.law.to_json(), "params": {k: f(v) for k, v in self.params.items()},
                "derived": {k: f(v) for k, v in self.derived.items()},
                "ci": {k: [f(lo), f(hi)] for k, (lo, hi) in self.ci.items()},
                "status": self.status.value, "flags": list(self.flags), "clean": self.clean,
                "n_points": self.n_points, "n_clusters": self.n_clusters, "loss": f(self.loss),
                "residual_scale": f(self.residual_scale), "n_bootstrap": self.n_bootstrap,
                "validation": self.validation, "optimal": [p.to_json() for p in self.optimal]}


# ---------------------------------------------------------------------------- the public fit
def fit_scaling_law(n, d_prime, loss, *, molecules=None, clusters=None, floors: str = "shared",
                    amplitudes: str = "shared", size_terms: Sequence[str] = ("N",), n_bootstrap: int = 200, seed: int = 0,
                    alpha_bounds: tuple[float, float] = ALPHA_BOUNDS, maxiter: int = 500,
                    centre: tuple[tuple[float, ...], float] | None = None, warm: Law | None = None,
                    interaction: bool = False, weights=None, final=None) -> FitResult:
    """Fit the law to points (N, D', L), N of shape (m,) or (m, k) for k size terms, all positive and finite.

    `molecules` (one name per point) stratifies the bootstrap and, with floors="molecule", gives each
    molecule its own floor A0, with amplitudes="molecule" its own amplitudes A1, A2 (and A12); the exponents
    are shared. `clusters` (one label per point, e.g. molecule × grid cell) are the units the
    bootstrap resamples (default: each point). `centre` fixes (N_c, D'_c) instead of the data's. `warm`, a
    law of the same shape, skips the exponent grid: a joint refit from it (its centre kept), as the
    leave-one-out refits do. `interaction` adds the A12·(N/N_c)^-α1·(D'/D'_c)^-α2 term (one size term).
    `weights` scale each point's loss (e.g. 1/points of its run with --along-training); `final` marks the
    points the residual scale is taken from (default all).
    """
    n = np.asarray(n, dtype=float)
    d, l = (np.asarray(a, dtype=float).ravel() for a in (d_prime, loss))
    n = n.reshape(d.size, -1) if n.size == d.size * len(size_terms) else n
    if n.ndim == 1:
        n = n[:, None]
    if n.shape != (d.size, len(size_terms)) or l.size != d.size:
        raise UserError(f"N ({n.shape}), D' ({d.size}) and L ({l.size}) must describe the same points, with "
                        f"{len(size_terms)} size column(s)")
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(d * l)) and np.all(n > 0) and np.all(d > 0) and np.all(l > 0)):
        raise UserError("N, D' and L must all be positive and finite; drop the other points first")
    if n_bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {n_bootstrap}")
    mols = np.asarray(molecules if molecules is not None else ["all"] * d.size, dtype=object).ravel()
    for name, value in (("floors", floors), ("amplitudes", amplitudes)):
        if value not in ("shared", "molecule"):
            raise UserError(f"{name} must be 'shared' or 'molecule', got {value!r}")
    if interaction and len(size_terms) != 1:
        raise UserError("the interaction law takes one size term; drop --n-from split or use --law additive")
    for name, col in [(s_, n[:, k]) for k, s_ in enumerate(size_terms)] + [("D'", d)]:
        if np.unique(col).size < 2:
            raise UserError(f"{name} takes a single value across the points: its exponent cannot be fitted; "
                            "add runs that vary it")
    groups = tuple(sorted(set(mols))) if floors == "molecule" else ("all",)
    amp_groups = tuple(sorted(set(mols))) if amplitudes == "molecule" else ("all",)
    n_coef = len(groups) + (len(size_terms) + 1 + int(interaction)) * len(amp_groups)
    if d.size <= n_coef + len(size_terms) + 1:
        raise UserError(f"{d.size} usable points for a law with {n_coef + len(size_terms) + 1} parameters; "
                        "add runs (or use --along-training)")
    if warm is not None:
        centre = (warm.n_centre, warm.d_centre)
    if centre is None:
        centre = (tuple(np.exp(np.log(n).mean(axis=0))), float(np.exp(np.log(d).mean())))
    n_c, d_c = np.asarray(centre[0], float), float(centre[1])

    def onehot(names):
        return (mols[:, None] == np.array(names, dtype=object)[None, :]).astype(float) if len(names) > 1 \
            else np.ones((d.size, 1))

    design = term_design(len(size_terms) + 1, interaction)
    data = ProfileData(z=np.column_stack([np.log(n / n_c), np.log(d / d_c)]), logl=np.log(l),
                       floor_onehot=onehot(groups), design=design, amp_onehot=onehot(amp_groups))
    labels = np.asarray(clusters, dtype=object).ravel() if clusters is not None else np.arange(d.size)
    if labels.size != d.size:
        raise UserError("clusters must have one label per point")

    def make_law(alpha, coef) -> Law:
        nf = len(groups)
        return Law(tuple(size_terms), tuple(float(v) for v in n_c), d_c, groups,
                   tuple(float(v) for v in coef[:nf]), tuple(float(v) for v in coef[nf:]),
                   tuple(float(v) for v in alpha), interaction, amp_groups)

    w = np.ones(d.size) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.size != d.size or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise UserError("weights must be one finite non-negative number per point")
    with threadpool_limits(limits=1, user_api="blas"):
        if warm is not None and warm.floor_groups == groups and warm.amplitude_groups == amp_groups \
                and warm.size_terms == tuple(size_terms) and warm.interaction == interaction:
            best = best_joint([(np.array(warm.exponents), np.array(warm.floors + warm.amplitudes))], data, w,
                               alpha_bounds, maxiter)
        else:
            best = best_start(grid_starts(data, w, alpha_bounds), data, w, alpha_bounds, maxiter)
        if best is None:
            raise UserError("the fit failed from every start; check the points (nqs-fit --json shows them)")
        alpha, coef, total, status, message = best
        law = make_law(alpha, coef)
        warm_starts = [(alpha, coef)]
        if warm is None and n_bootstrap:  # a second basin for the resamples to move to, when there is one
            for a in grid_starts(data, w, alpha_bounds, keep=2):
                if np.max(np.abs(a - alpha)) > 0.1:
                    warm_starts.append((a, solve_coefficients(basis(a, data), data.logl, w)[0]))
                    break
        boot = _bootstrap(warm_starts, data, labels, mols, w, n_bootstrap, seed, alpha_bounds, maxiter, make_law)
    resid = np.log(law.predict(n, d, mols)) - data.logl
    keep = np.ones(d.size, bool) if final is None else np.asarray(final, bool).ravel()
    dof = max(int(keep.sum()) - n_coef - len(size_terms) - 1, 1)
    scale = float(np.sqrt(np.sum(resid[keep] ** 2) / dof))
    return FitResult(law=law, ci=_intervals(boot), status=status, flags=_flags(law, l, alpha_bounds),
                     n_points=int(d.size), n_clusters=int(np.unique(labels.astype(str)).size), loss=float(total),
                     residual_scale=scale, n_bootstrap=len(boot), message=message, boot=tuple(boot))


def _flags(law: Law, loss: np.ndarray, bounds) -> tuple[str, ...]:
    scale = float(np.median(loss))
    params = law.params()
    out = [f"{k} = 0 (floor collapsed to zero)" for k, v in params.items() if k.startswith("A0") and v < ZERO_FLOOR * scale]
    out += [f"{k} = 0 (term vanished)" for k, v in params.items()
            if k.startswith("A") and not k.startswith("A0") and v < ZERO_FLOOR * scale]
    out += [f"{k} at its bound {v:g}" for k, v in params.items()
            if k.startswith("alpha") and (v <= bounds[0] + 1e-6 or v >= bounds[1] - 1e-6)]
    return tuple(out)


def _bootstrap(warm, data, labels, mols, w0, k, seed, bounds, maxiter, make_law) -> list[Law]:
    """Laws refitted on `k` resamples of the clusters, with replacement, within each molecule."""
    if k == 0:
        return []
    rng = np.random.default_rng(seed)
    keys = np.array([f"{m}\x00{c}" for m, c in zip(mols, labels)], dtype=object)
    uniq, inverse = np.unique(keys, return_inverse=True)
    strata = [np.flatnonzero(np.array([u.split("\x00")[0] == m for u in uniq])) for m in sorted(set(mols))]
    out = []
    for _ in range(k):
        counts = np.zeros(uniq.size)
        for s in strata:
            np.add.at(counts, s[rng.integers(0, s.size, s.size)], 1)
        w = counts[inverse] * w0
        if np.count_nonzero(w) <= data.n_coef + data.z.shape[1]:
            continue
        best = best_joint(warm, data, w, bounds, maxiter)
        if best is not None and best[3] is not FitStatus.FAILED:
            out.append(make_law(best[0], best[1]))
    return out


def _intervals(boot: Sequence[Law]) -> dict[str, tuple[float, float]]:
    if len(boot) < 2:
        return {}
    rows = [{**b.params(), **b.derived()} for b in boot]
    out = {}
    for key in rows[0]:
        vals = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size >= 2:
            lo, hi = np.percentile(vals, [2.5, 97.5])
            out[key] = (float(lo), float(hi))
    return out
