"""The optimiser behind `nqs.scaling.fit.fit_scaling_law`: variable projection of the law's exponents.

For fixed exponents the law is linear in its non-negative coefficients (floors and amplitudes), solved by
Gauss–Newton on the log-residuals with Huber weights (IRLS, each step a non-negative least-squares problem, with
step halving: `solve_coefficients`); the exponents are searched on a grid (`grid_starts`) and refined by L-BFGS-B
on the profiled loss, whose gradient is the partial derivative at the solved coefficients (envelope theorem), then
polished jointly (`best_start`); `best_joint` refits from warm solutions (bootstrap, hold-outs). `outcome` reads
the optimiser's end as a `FitStatus`.
"""
from __future__ import annotations

import enum
import itertools
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import minimize, nnls

HUBER_DELTA = 1e-3
INNER_RTOL = 1e-10  # relative decrease of the loss at which the coefficient solve stops
GRID_ALPHAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.7)


class FitStatus(str, enum.Enum):
    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    FAILED = "failed"


@dataclass(frozen=True)
class ProfileData:
    z: np.ndarray  # (m, k+1): log(N_k/N_kc) ..., log(D'/D'_c)
    logl: np.ndarray  # (m,)
    floor_onehot: np.ndarray  # (m, n_floors)
    design: np.ndarray  # (terms × (k+1)): `nqs.scaling.law.term_design`
    amp_onehot: np.ndarray  # (m, H): the point's amplitude group (H = 1: shared amplitudes)

    @property
    def n_coef(self) -> int:
        return self.floor_onehot.shape[1] + self.design.shape[0] * self.amp_onehot.shape[1]


def basis(alpha: np.ndarray, data: ProfileData) -> np.ndarray:
    """(m × n_coef): the floors' indicators, then each term's shape times each amplitude group's indicator
    (term-major, the order of `Law.amplitudes`)."""
    shapes = np.exp(-(data.z * alpha) @ data.design.T)  # (m, terms)
    terms = (shapes[:, :, None] * data.amp_onehot[:, None, :]).reshape(shapes.shape[0], -1)
    return np.column_stack([data.floor_onehot, terms])


def _alpha_gradient(psi_over_pred: np.ndarray, phi: np.ndarray, coef: np.ndarray, data: ProfileData) -> np.ndarray:
    """∂/∂α_j of Σ ψ(r)·log L̂: −Σ_i (ψ/L̂)_i·z_ij·Σ_c E[c, j]·Σ_h A_ch·Φ_i(ch)."""
    nf = data.floor_onehot.shape[1]
    per_term = (phi[:, nf:] * coef[nf:]).reshape(phi.shape[0], data.design.shape[0], -1).sum(axis=2)  # (m, terms)
    weighted = per_term @ data.design  # (m, k+1)
    return -(psi_over_pred[:, None] * data.z * weighted).sum(axis=0)


def _huber(r: np.ndarray, w: np.ndarray) -> float:
    a = np.abs(r)
    return float((w * np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))).sum()
                 / HUBER_DELTA)


def solve_coefficients(phi: np.ndarray, logl: np.ndarray, w: np.ndarray, coef: np.ndarray | None = None,
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


def _profile(alpha: np.ndarray, data: ProfileData, w: np.ndarray, warm: dict) -> tuple[float, np.ndarray]:
    """The profiled loss at exponents `alpha` and its gradient (envelope theorem); caches A in `warm`."""
    phi = basis(alpha, data)
    coef, loss, ok = solve_coefficients(phi, data.logl, w, warm.get("coef"))
    warm["coef"], warm["ok"] = coef, ok
    pred = np.maximum(phi @ coef, 1e-300)
    r = np.log(pred) - data.logl
    psi = w * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA
    grad = _alpha_gradient(psi / pred, phi, coef, data)
    return loss, grad


def _refine(alpha0: np.ndarray, data: ProfileData, w: np.ndarray, bounds, maxiter: int):
    warm: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(_profile, alpha0, args=(data, w, warm), jac=True, method="L-BFGS-B",
                       bounds=[bounds] * alpha0.size, options={"maxiter": maxiter, "ftol": 1e-11, "gtol": 1e-7})
    coef, loss, ok = solve_coefficients(basis(res.x, data), data.logl, w, warm.get("coef"))
    return res, coef, loss, ok


def grid_starts(data: ProfileData, w: np.ndarray, bounds, keep: int = 3) -> list[np.ndarray]:
    """The `keep` best exponent vectors of a grid (fewer values per axis for more size terms)."""
    k = data.z.shape[1]
    values = [a for a in GRID_ALPHAS if bounds[0] <= a <= bounds[1]] or [0.5 * sum(bounds)]
    if k > 2:
        values = values[::2]
    scored = []
    for combo in itertools.product(values, repeat=k):
        alpha = np.array(combo)
        _, loss, _ = solve_coefficients(basis(alpha, data), data.logl, w, max_iter=30)
        scored.append((loss, alpha))
    scored.sort(key=lambda t: t[0])
    return [a for _, a in scored[:keep]]


def _joint_objective(x, data: ProfileData, w, scale: float):
    """Σ w·Huber(log L̂ − log L)/δ over x = (A/scale, α) jointly, and its gradient."""
    nc = data.n_coef
    coef, alpha = x[:nc] * scale, x[nc:]
    phi = basis(alpha, data)
    pred = np.maximum(phi @ coef, 1e-300)
    r = np.log(pred) - data.logl
    psi = w * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA
    g_coef = (psi / pred) @ phi * scale
    return _huber(r, w), np.concatenate([g_coef, _alpha_gradient(psi / pred, phi, coef, data)])


def _joint_bounds(n_coef: int, alpha_bounds, n_alpha: int) -> list:
    return [(0.0, None)] * n_coef + [alpha_bounds] * n_alpha


def _joint(coef0, alpha0, data: ProfileData, w, bounds, maxiter):
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


def outcome(res, bounds: Sequence[tuple[float | None, float | None]]) -> FitStatus:
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


def best_start(starts, data, w, bounds, maxiter):
    """Variable projection from each start (exponent vectors), then a joint polish; the lowest loss wins.
    Returns (alpha, coef, loss, ok, optimiser message) or None."""
    best = None
    for s in starts:
        res, coef, loss, ok = _refine(np.asarray(s, float), data, w, bounds, maxiter)
        jres, jcoef, jalpha, jloss = _joint(coef, res.x, data, w, bounds, maxiter)
        cand = (jalpha, jcoef, jloss, outcome(jres, _joint_bounds(coef.size, bounds, res.x.size)),
                str(jres.message)) if jloss < loss else \
            (res.x, coef, loss, outcome(res, [bounds] * res.x.size) if ok else FitStatus.MAX_ITERATIONS,
             str(res.message))
        if np.isfinite(cand[2]) and (best is None or cand[2] < best[2]):
            best = cand
    return best


def best_joint(warm, data, w, bounds, maxiter):
    """Refit from warm (alpha, coef) solutions by the joint optimiser only (bootstrap, hold-outs)."""
    best = None
    for alpha0, coef0 in warm:
        res, coef, alpha, loss = _joint(coef0, alpha0, data, w, bounds, maxiter)
        if np.isfinite(loss) and (best is None or loss < best[2]):
            best = (alpha, coef, loss, outcome(res, _joint_bounds(coef.size, bounds, alpha.size)), str(res.message))
    return best
