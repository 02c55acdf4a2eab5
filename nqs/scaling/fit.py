"""Fit the parametric scaling law L(N, D') = A0 + A1·N^-α1 + A2·D'^-α2, Chinchilla approach 3.

Method (Hoffmann et al. 2022, approach 3; Besiroglu et al. 2024): with A_i = exp(a_i), fit
log L̂ = logsumexp(a0, a1 − α1·log N, a2 − α2·log D') to log L by minimising a Huber loss
(δ = 1e-3) of the log-residuals with L-BFGS-B from a grid of starting points, keep the best start,
and report the optimiser's status. Percentile bootstrap for 95% intervals, leave-one-out error of
the held-out log-residual, and the compute-optimal (N, D') for given FLOP budgets.
"""
from __future__ import annotations

import contextlib
import enum
import itertools
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import brentq, minimize, minimize_scalar
from threadpoolctl import threadpool_limits

from nqs.errors import UserError

HUBER_DELTA = 1e-3
ALPHA_BOUNDS = (0.0, 3.0)
PARAM_NAMES = ("A0", "A1", "alpha1", "A2", "alpha2")
JSON_KEYS = ("A0", "A1", "alpha1", "A2", "alpha2", "ci", "status", "n_points", "loss", "loo_error",
             "optimal")
CostModel = Callable[[float, float], float]


class FitStatus(str, enum.Enum):
    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    HIT_BOUND = "hit_bound"
    FAILED = "failed"


@dataclass(frozen=True)
class OptimalPoint:
    """The compute-optimal allocation for one budget and the law's prediction there."""

    budget: float
    n_params: float
    d_prime: float
    predicted: float

    def to_json(self) -> dict:
        return {"budget": self.budget, "n_params": self.n_params, "d_prime": self.d_prime,
                "predicted": self.predicted}


@dataclass(frozen=True)
class FitResult:
    """A fitted law. `loss` is the mean Huber loss per point of the log-residuals at the optimum;
    `loo_error` the RMS held-out log-residual; `ci` maps each parameter to its 95% interval."""

    A0: float
    A1: float
    alpha1: float
    A2: float
    alpha2: float
    ci: dict[str, tuple[float, float]]
    status: FitStatus
    n_points: int
    loss: float
    loo_error: float
    bound_hit: tuple[str, ...] = ()
    message: str = ""
    n_bootstrap: int = 0
    optimal: tuple[OptimalPoint, ...] = field(default=())

    @property
    def params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PARAM_NAMES}

    def predict(self, n, d) -> np.ndarray:
        """L(N, D') for arrays (broadcast) N and D'."""
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.A0 + self.A1 * n ** -self.alpha1 + self.A2 * d ** -self.alpha2

    def with_optimal(self, optimal: Sequence[OptimalPoint]) -> "FitResult":
        return replace(self, optimal=tuple(optimal))

    def to_json(self) -> dict:
        """A JSON-ready dict with exactly the keys of `JSON_KEYS` (NaN written as null)."""
        f = lambda v: float(v) if math.isfinite(v) else None  # noqa: E731
        return {**{k: f(v) for k, v in self.params.items()},
                "ci": {k: [f(lo), f(hi)] for k, (lo, hi) in self.ci.items()},
                "status": self.status.value, "n_points": self.n_points, "loss": f(self.loss),
                "loo_error": f(self.loo_error), "optimal": [p.to_json() for p in self.optimal]}


def _single_thread_blas() -> contextlib.AbstractContextManager:
    """Run BLAS single-threaded for the duration (threadpoolctl; restores the previous limits on exit).

    L-BFGS-B calls BLAS on 5-vectors thousands of times; with OpenBLAS threads competing against
    other busy processes each call can cost ~0.3 ms instead of ~µs (measured: 280 vs 5 ms a start).
    """
    return threadpool_limits(limits=1, user_api="blas")


# ---------------------------------------------------------------------------- the objective
def _log_pred(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L̂ and the softmax weights of its three terms (3 × n)."""
    a0, a1, al1, a2, al2 = theta
    t = np.stack([np.full_like(x, a0), a1 - al1 * x, a2 - al2 * y])
    m = t.max(axis=0)
    e = np.exp(t - m)
    s = e.sum(axis=0)
    return m + np.log(s), e / s


def _objective(theta, x, y, logl, w, delta):
    """Σ w·Huber_δ(log L̂ − log L) / δ and its gradient (the 1/δ scale keeps gradients O(1))."""
    pred, soft = _log_pred(theta, x, y)
    r = pred - logl
    quad = np.abs(r) <= delta
    h = np.where(quad, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    dr = w * np.where(quad, r, delta * np.sign(r)) / delta
    grad = np.array([(dr * soft[0]).sum(), (dr * soft[1]).sum(), -(dr * soft[1] * x).sum(),
                     (dr * soft[2]).sum(), -(dr * soft[2] * y).sum()])
    return float((w * h).sum() / delta), grad


def _start_grid(x, y, logl, alpha_bounds) -> list[np.ndarray]:
    """Chinchilla-style grid: each power-law term worth a fraction of the median L at the median
    (N, D'), a floor A0 below the smallest L, exponents spread across the bounds."""
    lo, hi = alpha_bounds
    alphas = [a for a in (0.1, 0.4, 1.0, 2.0) if lo <= a <= hi] or [0.5 * (lo + hi)]
    lmin, lmed, xm, ym = logl.min(), np.median(logl), np.median(x), np.median(y)
    starts = []
    for da0, al1, al2, f in itertools.product((-3.0, -0.7), alphas, alphas, (0.1, 0.5)):
        starts.append(np.array([lmin + da0, lmed + math.log(f) + al1 * xm, al1,
                                lmed + math.log(f) + al2 * ym, al2]))
    return starts


def _minimise(theta0, x, y, logl, w, alpha_bounds, maxiter):
    bounds = [(None, None), (None, None), alpha_bounds, (None, None), alpha_bounds]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return minimize(_objective, theta0, args=(x, y, logl, w, HUBER_DELTA), jac=True,
                        method="L-BFGS-B", bounds=bounds,
                        options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 10})


def _best_fit(starts, x, y, logl, w, alpha_bounds, maxiter):
    """Minimise from every start; return (best result, all results sorted by objective)."""
    results = [_minimise(s, x, y, logl, w, alpha_bounds, maxiter) for s in starts]
    results = [r for r in results if np.isfinite(r.fun) and np.all(np.isfinite(r.x))]
    results.sort(key=lambda r: r.fun)
    return (results[0] if results else None), results


def _status(res, alpha_bounds) -> tuple[FitStatus, tuple[str, ...]]:
    if res is None:
        return FitStatus.FAILED, ()
    tol = 1e-6
    hit = tuple(name for name, v in (("alpha1", res.x[2]), ("alpha2", res.x[4]))
                if v <= alpha_bounds[0] + tol or v >= alpha_bounds[1] - tol)
    if hit:
        return FitStatus.HIT_BOUND, hit
    if res.status == 1:
        return FitStatus.MAX_ITERATIONS, ()
    if res.status == 0:
        return FitStatus.CONVERGED, ()
    # status 2 is mostly L-BFGS-B's line search stalling at a Huber kink at the minimum; accept it
    # when the projected gradient is small against the L1-regime scale (|∂/∂θ| ≤ Σw·|x|).
    return (FitStatus.CONVERGED if np.max(np.abs(res.jac)) < 1e-3 else FitStatus.FAILED), ()


def _theta_to_params(theta) -> list[float]:
    a0, a1, al1, a2, al2 = (float(v) for v in theta)
    return [math.exp(a0), math.exp(a1), al1, math.exp(a2), al2]


def fit_scaling_law(n_params, d_prime, loss, *, groups=None, n_bootstrap: int = 200, seed: int = 0,
                    alpha_bounds: tuple[float, float] = ALPHA_BOUNDS, maxiter: int = 3000,
                    loo: bool = True) -> FitResult:
    """Fit L(N, D') = A0 + A1·N^-α1 + A2·D'^-α2 to points (N, D', L), all positive and finite.

    `groups` (e.g. the run each point came from) makes the bootstrap resample, and the leave-one-out
    hold out, whole groups when there are at least 3 of them; otherwise single points. Bootstrap and
    leave-one-out fits start from the best few optima of the full fit.
    """
    n, d, l = (np.asarray(a, dtype=float).ravel() for a in (n_params, d_prime, loss))
    if not (n.size == d.size == l.size):
        raise UserError("N, D' and L must have the same number of points")
    if n.size <= len(PARAM_NAMES):
        raise UserError(f"{n.size} usable points for a law with {len(PARAM_NAMES)} parameters; "
                        f"need at least {len(PARAM_NAMES) + 1} (add runs, or use --along-training)")
    if not (np.all(np.isfinite(n * d * l)) and np.all(n > 0) and np.all(d > 0) and np.all(l > 0)):
        raise UserError("N, D' and L must all be positive and finite; drop the other points first")
    if n_bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {n_bootstrap}")
    x, y, logl = np.log(n), np.log(d), np.log(l)
    labels = np.asarray(groups).ravel() if groups is not None else np.arange(n.size)
    if labels.size != n.size:
        raise UserError("groups must have one label per point")
    if np.unique(labels).size < 3:
        labels = np.arange(n.size)
    with _single_thread_blas():
        starts = _start_grid(x, y, logl, alpha_bounds)
        best, ranked = _best_fit(starts, x, y, logl, np.ones_like(x), alpha_bounds, maxiter)
        status, hit = _status(best, alpha_bounds)
        if best is None:
            nan = float("nan")
            return FitResult(nan, nan, nan, nan, nan, {}, status, int(n.size), nan, nan,
                             message="every start failed")
        warm: list[np.ndarray] = []  # the best few distinct optima seed the refits
        for r in ranked:
            if len(warm) < 3 and all(np.max(np.abs(r.x - w)) > 1e-3 for w in warm):
                warm.append(r.x)
        ci, n_ok = _bootstrap(warm, x, y, logl, labels, n_bootstrap, seed, alpha_bounds, maxiter)
        loo_err = _leave_one_out(warm, x, y, logl, labels, alpha_bounds, maxiter) if loo else float("nan")
    A0, A1, al1, A2, al2 = _theta_to_params(best.x)
    return FitResult(A0=A0, A1=A1, alpha1=al1, A2=A2, alpha2=al2, ci=ci, status=status,
                     n_points=int(n.size), loss=float(best.fun) * HUBER_DELTA / n.size,
                     loo_error=loo_err, bound_hit=hit, message=str(best.message), n_bootstrap=n_ok)


def _bootstrap(warm, x, y, logl, labels, k, seed, alpha_bounds, maxiter):
    """Percentile 95% intervals from `k` resamples of the groups in `labels`, with replacement."""
    if k == 0:
        return {}, 0
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(labels, return_inverse=True)
    samples = []
    for _ in range(k):
        counts = np.bincount(rng.integers(0, uniq.size, uniq.size), minlength=uniq.size)
        w = counts[inverse].astype(float)
        if np.count_nonzero(w) <= len(PARAM_NAMES):
            continue
        res, _ = _best_fit(warm, x, y, logl, w, alpha_bounds, maxiter)
        if res is not None:
            samples.append(_theta_to_params(res.x))
    if not samples:
        return {}, 0
    arr = np.array(samples)
    lo, hi = np.percentile(arr, [2.5, 97.5], axis=0)
    return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(PARAM_NAMES)}, len(samples)


def _leave_one_out(warm, x, y, logl, labels, alpha_bounds, maxiter) -> float:
    """RMS of the held-out log-residuals, holding out one group (one point by default) at a time."""
    resid = []
    for g in np.unique(labels):
        out = labels == g
        w = (~out).astype(float)
        if np.count_nonzero(w) < len(PARAM_NAMES):
            continue
        res, _ = _best_fit(warm, x, y, logl, w, alpha_bounds, maxiter)
        if res is not None:
            resid.extend(_log_pred(res.x, x[out], y[out])[0] - logl[out])
    return float(np.sqrt(np.mean(np.square(resid)))) if resid else float("nan")


# ---------------------------------------------------------------------------- compute-optimal
@dataclass(frozen=True)
class ProductCost:
    """The FLOP model C(N, D') = κ·N·D'."""

    kappa: float

    def __call__(self, n: float, d: float) -> float:
        return self.kappa * n * d


def estimate_kappa(records, n_from: str = "total") -> float:
    """κ = median over runs of flops_total / (N·d_prime), with N the count chosen by `n_from`."""
    ratios = []
    for r in records:
        n = r.n_from(n_from) if hasattr(r, "n_from") else r.n_params
        vals = (r.flops_total, n, r.d_prime)
        if all(v is not None and math.isfinite(v) and v > 0 for v in vals):
            ratios.append(r.flops_total / (n * r.d_prime))
    if not ratios:
        raise UserError("no run has a positive flops_total, n_params and d_prime to estimate the FLOP "
                        "model C = κ·N·D'; re-run with a version of nqs-train that counts FLOPs")
    return float(np.median(ratios))


def d_for_budget(cost: CostModel, n: float, budget: float, log_d_range=(-60.0, 60.0)) -> float | None:
    """D' with cost(n, D') = budget (cost increasing in D'), or None if outside the range."""
    lo, hi = log_d_range
    f = lambda u: math.log(cost(n, math.exp(u))) - math.log(budget)  # noqa: E731
    try:
        flo, fhi = f(lo), f(hi)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    if not (flo <= 0 <= fhi):
        return None
    return math.exp(brentq(f, lo, hi, xtol=1e-12, rtol=1e-14))


def compute_optimal(fit: FitResult, budgets: Sequence[float], cost: CostModel,
                    n_range: tuple[float, float] = (1.0, 1e15), n_grid: int = 241) -> tuple[OptimalPoint, ...]:
    """For each budget, minimise L(N, D') subject to cost(N, D') = budget over log N.

    `cost` is any callable increasing in D'; D'(N) is solved by root-finding. A coarse grid over
    log N in `n_range` picks the basin, then a bounded 1-D minimisation refines it. An optimum at the
    edge of `n_range` is returned with a warning.
    """
    out = []
    grid = np.linspace(math.log(n_range[0]), math.log(n_range[1]), n_grid)

    def objective(u: float, budget: float) -> float:
        d = d_for_budget(cost, math.exp(u), budget)
        return float("inf") if d is None else float(fit.predict(math.exp(u), d))

    for budget in budgets:
        if not (budget > 0 and math.isfinite(budget)):
            raise UserError(f"budget {budget!r} must be a positive number of FLOPs")
        vals = np.array([objective(u, budget) for u in grid])
        if not np.any(np.isfinite(vals)):
            raise UserError(f"no (N, D') in N ∈ {n_range} meets the budget {budget:.3g} FLOPs "
                            "under the cost model; check the budget's order of magnitude")
        i = int(np.nanargmin(vals))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        res = minimize_scalar(objective, bounds=(lo, hi), args=(budget,), method="bounded",
                              options={"xatol": 1e-10})
        u = float(res.x) if res.fun <= vals[i] else float(grid[i])
        if i in (0, grid.size - 1):
            warnings.warn(f"the optimum for budget {budget:.3g} lies at the edge of N ∈ {n_range}; "
                          "the fitted law has no interior optimum there", stacklevel=2)
        n_opt = math.exp(u)
        d_opt = d_for_budget(cost, n_opt, budget)
        out.append(OptimalPoint(float(budget), n_opt, d_opt, float(fit.predict(n_opt, d_opt))))
    return tuple(out)


def closed_form_optimal(fit: FitResult, budget: float, kappa: float) -> OptimalPoint:
    """The optimum for C = κ·N·D' (Lagrange): α1·A1·N^-α1 = α2·A2·D'^-α2 with N·D' = C/κ, i.e.
    N* = (α1·A1 / (α2·A2))^(1/(α1+α2)) · (C/κ)^(α2/(α1+α2))."""
    if fit.alpha1 <= 0 or fit.alpha2 <= 0:
        raise UserError("the closed form needs α1 > 0 and α2 > 0; use compute_optimal")
    g = budget / kappa
    s = fit.alpha1 + fit.alpha2
    n = (fit.alpha1 * fit.A1 / (fit.alpha2 * fit.A2)) ** (1 / s) * g ** (fit.alpha2 / s)
    d = g / n
    return OptimalPoint(float(budget), float(n), float(d), float(fit.predict(n, d)))
