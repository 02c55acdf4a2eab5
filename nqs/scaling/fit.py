"""Fit the scaling law L(N, D') = A0 + A1·(N/N_c)^-α1 + A2·(D'/D'_c)^-α2 by variable projection.

Method (../shared/SCALING-METHOD.md; Hoffmann et al. 2022, approach 3; Besiroglu et al. 2024):

* **Reference point.** N_c and D'_c are the data's geometric centre, so A1 and A2 are the terms' values there
  (without it A1 and α1 are nearly collinear). The law may carry several size terms (`--n-from split`:
  modulus and phase, each with its own centre), one floor per molecule (`floors="molecule"`) and one set of
  amplitudes per molecule (`amplitudes="molecule"`); the exponents are shared by the pooled molecules.
* **Loss.** The Huber loss (δ = 1e-3, so in effect L1) of the log-residuals log L̂ − log L, summed.
* **Variable projection.** For fixed exponents L̂ = Φ(α)·A is linear in the non-negative coefficients A
  (floors and amplitudes); they are solved by Gauss–Newton on the log-residuals with Huber weights (IRLS),
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

import enum
import itertools
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
from scipy.optimize import minimize, nnls
from threadpoolctl import threadpool_limits

from nqs.errors import UserError
from nqs.scaling.law import Law, term_design

HUBER_DELTA = 1e-3
ALPHA_BOUNDS = (0.0, 3.0)
ZERO_FLOOR = 1e-6
INNER_RTOL = 1e-10  # relative decrease of the loss at which the coefficient solve stops  # a coefficient below this fraction of the median L counts as zero
GRID_ALPHAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.7)


class FitStatus(str, enum.Enum):
    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    FAILED = "failed"


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


# ---------------------------------------------------------------------------- the profiled objective
@dataclass(frozen=True)
class _Data:
    z: np.ndarray  # (m, k+1): log(N_k/N_kc) ..., log(D'/D'_c)
    logl: np.ndarray  # (m,)
    floor_onehot: np.ndarray  # (m, n_floors)
    design: np.ndarray  # (terms × (k+1)): `nqs.scaling.law.term_design`
    amp_onehot: np.ndarray  # (m, H): the point's amplitude group (H = 1: shared amplitudes)

    @property
    def n_coef(self) -> int:
        return self.floor_onehot.shape[1] + self.design.shape[0] * self.amp_onehot.shape[1]


def _basis(alpha: np.ndarray, data: _Data) -> np.ndarray:
    """(m × n_coef): the floors' indicators, then each term's shape times each amplitude group's indicator
    (term-major, the order of `Law.amplitudes`)."""
    shapes = np.exp(-(data.z * alpha) @ data.design.T)  # (m, terms)
    terms = (shapes[:, :, None] * data.amp_onehot[:, None, :]).reshape(shapes.shape[0], -1)
    return np.column_stack([data.floor_onehot, terms])


def _alpha_gradient(psi_over_pred: np.ndarray, phi: np.ndarray, coef: np.ndarray, data: _Data) -> np.ndarray:
    """∂/∂α_j of Σ ψ(r)·log L̂: −Σ_i (ψ/L̂)_i·z_ij·Σ_c E[c, j]·Σ_h A_ch·Φ_i(ch)."""
    nf = data.floor_onehot.shape[1]
    per_term = (phi[:, nf:] * coef[nf:]).reshape(phi.shape[0], data.design.shape[0], -1).sum(axis=2)  # (m, terms)
    weighted = per_term @ data.design  # (m, k+1)
    return -(psi_over_pred[:, None] * data.z * weighted).sum(axis=0)


def _huber(r: np.ndarray, w: np.ndarray) -> float:
    a = np.abs(r)
    return float((w * np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))).sum()
                 / HUBER_DELTA)


def _solve_coefficients(phi: np.ndarray, logl: np.ndarray, w: np.ndarray, coef: np.ndarray | None = None,
                        max_iter: int = 100) -> tuple[np.ndarray, float, bool]:
    """min over A ≥ 0 of Σ w·Huber(log(Φ A) − log L): Gauss–Newton with Huber weights, NNLS steps.

    Returns (A, loss, converged). Linearising log(Φ(A + Δ)) ≈ log(ΦA) + (Φ/ΦA)·Δ and using (Φ/ΦA)·A = 1,
    each step solves min Σ ω (G A' − (1 − r))² over A' ≥ 0 with G = Φ/ΦA and ω the Huber weights."""
    live = w > 0
    if coef is None or not np.all(np.isfinite(coef)) or not np.any(phi[live] @ coef > 0):
        target = np.exp(logl)
        sw = np.sqrt(w)[:, None]
        coef = nnls(phi / target[:, None] * sw, np.sqrt(w), maxiter=50 * phi.shape[1])[0]
        if not np.all(phi[live] @ coef > 0):
            coef = coef + np.exp(np.median(logl[live])) / phi.shape[1]
    pred = phi @ coef
    r = np.log(np.maximum(pred, 1e-300)) - logl
    loss = _huber(r, w)
    for _ in range(max_iter):
        omega = w * np.where(np.abs(r) <= HUBER_DELTA, 1.0, HUBER_DELTA / np.maximum(np.abs(r), 1e-300))
        s = np.sqrt(omega)[:, None]
        g = phi / np.maximum(pred, 1e-300)[:, None]
        try:
            proposal = nnls(g * s, (1.0 - r) * s[:, 0], maxiter=50 * phi.shape[1])[0]
        except RuntimeError:
            return coef, loss, False
        step, t = proposal - coef, 1.0
        while t > 1e-8:
            trial = coef + t * step
            p = phi @ trial
            if np.all(p[live] > 0):
                r_t = np.log(np.maximum(p, 1e-300)) - logl
                l_t = _huber(r_t, w)
                if l_t <= loss:
                    break
            t *= 0.5
        else:
            return coef, loss, True  # no descent along the Gauss–Newton direction: at the minimum
        done = loss - l_t <= INNER_RTOL * max(loss, 1e-12)
        coef, pred, r, loss = trial, p, r_t, l_t
        if done:
            return coef, loss, True
    return coef, loss, False


def _profile(alpha: np.ndarray, data: _Data, w: np.ndarray, warm: dict) -> tuple[float, np.ndarray]:
    """The profiled loss at exponents `alpha` and its gradient (envelope theorem); caches A in `warm`."""
    phi = _basis(alpha, data)
    coef, loss, ok = _solve_coefficients(phi, data.logl, w, warm.get("coef"))
    warm["coef"], warm["ok"] = coef, ok
    pred = np.maximum(phi @ coef, 1e-300)
    r = np.log(pred) - data.logl
    psi = w * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA
    grad = _alpha_gradient(psi / pred, phi, coef, data)
    return loss, grad


def _refine(alpha0: np.ndarray, data: _Data, w: np.ndarray, bounds, maxiter: int):
    warm: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(_profile, alpha0, args=(data, w, warm), jac=True, method="L-BFGS-B",
                       bounds=[bounds] * alpha0.size, options={"maxiter": maxiter, "ftol": 1e-11, "gtol": 1e-7})
    coef, loss, ok = _solve_coefficients(_basis(res.x, data), data.logl, w, warm.get("coef"))
    return res, coef, loss, ok


def _grid_starts(data: _Data, w: np.ndarray, bounds, keep: int = 3) -> list[np.ndarray]:
    """The `keep` best exponent vectors of a grid (fewer values per axis for more size terms)."""
    k = data.z.shape[1]
    values = [a for a in GRID_ALPHAS if bounds[0] <= a <= bounds[1]] or [0.5 * sum(bounds)]
    if k > 2:
        values = values[::2]
    scored = []
    for combo in itertools.product(values, repeat=k):
        alpha = np.array(combo)
        _, loss, _ = _solve_coefficients(_basis(alpha, data), data.logl, w, max_iter=30)
        scored.append((loss, alpha))
    scored.sort(key=lambda t: t[0])
    return [a for _, a in scored[:keep]]


def _joint_objective(x, data: _Data, w, scale: float):
    """Σ w·Huber(log L̂ − log L)/δ over x = (A/scale, α) jointly, and its gradient."""
    nc = data.n_coef
    coef, alpha = x[:nc] * scale, x[nc:]
    phi = _basis(alpha, data)
    pred = np.maximum(phi @ coef, 1e-300)
    r = np.log(pred) - data.logl
    psi = w * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA
    g_coef = (psi / pred) @ phi * scale
    return _huber(r, w), np.concatenate([g_coef, _alpha_gradient(psi / pred, phi, coef, data)])


def _joint_bounds(n_coef: int, alpha_bounds, n_alpha: int) -> list:
    return [(0.0, None)] * n_coef + [alpha_bounds] * n_alpha


def _joint(coef0, alpha0, data: _Data, w, bounds, maxiter):
    """Joint L-BFGS-B over (A ≥ 0, α) from a variable-projection solution: used to polish and to refit
    bootstrap and hold-out resamples (the tests check it lands on the variable-projection optimum)."""
    scale = float(np.exp(np.median(data.logl)))
    x0 = np.concatenate([np.asarray(coef0) / scale, alpha0])
    nc = coef0.size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(_joint_objective, x0, args=(data, w, scale), jac=True, method="L-BFGS-B",
                       bounds=_joint_bounds(nc, bounds, alpha0.size),
                       options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8, "maxcor": 20})
    return res, res.x[:nc] * scale, res.x[nc:], float(res.fun)


def _outcome(res, bounds: Sequence[tuple[float | None, float | None]]) -> FitStatus:
    """L-BFGS-B's end: 0 converged; 1 the iteration limit; 2 (a line search that stalled) is accepted as
    converged only at a small projected gradient (the components that push a variable against its bound, an
    exponent at 3 or an amplitude at 0, do not count), which on this nearly-L1 loss is a kink at the minimum."""
    if res.status == 0:
        return FitStatus.CONVERGED
    if res.status == 1:
        return FitStatus.MAX_ITERATIONS
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    g = np.asarray(res.jac, dtype=float)
    pinned = ((res.x <= lo + 1e-9) & (g > 0)) | ((res.x >= hi - 1e-9) & (g < 0))
    return FitStatus.CONVERGED if np.max(np.abs(np.where(pinned, 0.0, g))) < 1e-3 else FitStatus.FAILED


def _best(starts, data, w, bounds, maxiter):
    """Variable projection from each start (exponent vectors), then a joint polish; the lowest loss wins.
    Returns (alpha, coef, loss, ok, optimiser message) or None."""
    best = None
    for s in starts:
        res, coef, loss, ok = _refine(np.asarray(s, float), data, w, bounds, maxiter)
        jres, jcoef, jalpha, jloss = _joint(coef, res.x, data, w, bounds, maxiter)
        cand = (jalpha, jcoef, jloss, _outcome(jres, _joint_bounds(coef.size, bounds, res.x.size)),
                str(jres.message)) if jloss < loss else \
            (res.x, coef, loss, _outcome(res, [bounds] * res.x.size) if ok else FitStatus.MAX_ITERATIONS,
             str(res.message))
        if np.isfinite(cand[2]) and (best is None or cand[2] < best[2]):
            best = cand
    return best


def _best_joint(warm, data, w, bounds, maxiter):
    """Refit from warm (alpha, coef) solutions by the joint optimiser only (bootstrap, hold-outs)."""
    best = None
    for alpha0, coef0 in warm:
        res, coef, alpha, loss = _joint(coef0, alpha0, data, w, bounds, maxiter)
        if np.isfinite(loss) and (best is None or loss < best[2]):
            best = (alpha, coef, loss, _outcome(res, _joint_bounds(coef.size, bounds, alpha.size)), str(res.message))
    return best


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
    data = _Data(z=np.column_stack([np.log(n / n_c), np.log(d / d_c)]), logl=np.log(l), floor_onehot=onehot(groups),
                 design=design, amp_onehot=onehot(amp_groups))
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
            best = _best_joint([(np.array(warm.exponents), np.array(warm.floors + warm.amplitudes))], data, w,
                               alpha_bounds, maxiter)
        else:
            best = _best(_grid_starts(data, w, alpha_bounds), data, w, alpha_bounds, maxiter)
        if best is None:
            raise UserError("the fit failed from every start; check the points (nqs-fit --json shows them)")
        alpha, coef, total, status, message = best
        law = make_law(alpha, coef)
        warm_starts = [(alpha, coef)]
        if warm is None and n_bootstrap:  # a second basin for the resamples to move to, when there is one
            for a in _grid_starts(data, w, alpha_bounds, keep=2):
                if np.max(np.abs(a - alpha)) > 0.1:
                    warm_starts.append((a, _solve_coefficients(_basis(a, data), data.logl, w)[0]))
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
        best = _best_joint(warm, data, w, bounds, maxiter)
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
