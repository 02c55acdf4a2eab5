"""Scaling-law fit: exact and planted recovery (shared and per-molecule floors), variable projection equal to
the joint fit, cluster bootstrap, status flags, validation scores on data with a known answer, allocation
against the closed form per molecule, robust run reading, and the nqs-fit CLI (synthetic run directories)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from nqs.errors import UserError
from nqs.scaling import collect_points, discover_runs, fit_scaling_law, load_runs, read_metrics
from nqs.scaling.allocate import allocate
from nqs.scaling.fit_solver import HUBER_DELTA
from nqs.scaling.runs import ScalingPoints
from nqs.scaling.validate import holdout_runs, validate

PLANTED = {"A0": 0.01, "A1": 5.0, "alpha1": 0.5, "A2": 2.0, "alpha2": 0.8}  # classic form A·x^-α


def law(n, d, p=PLANTED):
    return p["A0"] + p["A1"] * n ** -p["alpha1"] + p["A2"] * d ** -p["alpha2"]


def grid(k=10):
    n, d = np.meshgrid(np.logspace(3, 6, k), np.logspace(-1, 3, k))
    return n.ravel(), d.ravel()


def noisy(n, d, p=PLANTED, sigma=0.02, seed=0):
    return law(n, d, p) * np.exp(sigma * np.random.default_rng(seed).standard_normal(n.size))


def classic(fit, p="1", size=0):
    """A of the classic form A·N^-α from the reference-point amplitude: A_c·N_c^α."""
    law_ = fit.law
    centre = law_.n_centre[size] if p.startswith("1") else law_.d_centre
    return fit.params[f"A{p}"] * centre ** fit.params[f"alpha{p}"]


def write_run(root: Path, name: str, *, n_params=1e4, d_prime=10.0, vscore=0.1, error_mha=1.0,
              molecule="LiH", ansatz="transformer", seed=0, flops_total=None, metrics=None,
              summary=True, steps=100, **extra) -> Path:
    run = root / name
    run.mkdir(parents=True)
    e_fci = -7.882
    data = {"molecule": molecule, "ansatz": ansatz, "n_qubits": 12, "n_alpha": 2, "n_beta": 2,
            "sector_size": 225, "n_params": n_params, "n_params_effective": n_params, "n_params_modulus": n_params * 0.3,
            "n_params_phase": n_params * 0.7, "steps": steps, "samples": 1e6, "unique": 200,
            "energy": e_fci + error_mha / 1000, "energy_err": 1e-4, "variance": 1e-3, "vscore": vscore,
            "e_fci": e_fci, "e_ccsd_t": e_fci + 1e-5, "e_hf": e_fci + 10.0, "error_mha": error_mha,
            "d_prime": d_prime, "wall_s": 1.0, "seed": seed,
            "flops_total": flops_total if flops_total is not None else 3e4 * n_params * d_prime}
    data.update(extra)
    if summary:
        (run / "summary.json").write_text(json.dumps(data))
    lines = [json.dumps(m) for m in (metrics or [])]
    (run / "metrics.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))
    return run


def law_runs(root: Path, k=3, molecule="LiH", **kw) -> list[Path]:
    runs = []
    for i, n in enumerate(np.logspace(3, 6, k)):
        for j, d in enumerate(np.logspace(-1, 3, k)):
            runs.append(write_run(root, f"run_{i}_{j}", n_params=float(n), d_prime=float(d), steps=100 * (j + 1),
                                  vscore=float(law(n, d)), error_mha=float(100 * law(n, d)), molecule=molecule, **kw))
    return runs


# ---------------------------------------------------------------------------- the fit
def test_noise_free_recovery_exact():
    n, d = grid(7)
    fit = fit_scaling_law(n, d, law(n, d), n_bootstrap=0)
    assert fit.clean, (fit.status, fit.flags)
    assert fit.A0 == pytest.approx(PLANTED["A0"], rel=1e-6)
    for p in ("1", "2"):
        assert fit.params[f"alpha{p}"] == pytest.approx(PLANTED[f"alpha{p}"], rel=1e-6)
        assert classic(fit, p) == pytest.approx(PLANTED[f"A{p}"], rel=1e-5)
    assert fit.law.n_centre[0] == pytest.approx(math.exp(np.log(n).mean()))


def _joint_reference_fit(n, d, y):
    """An independent joint fit of all five parameters (log A, α) by L-BFGS-B from a grid of starts."""
    x, z, logl = np.log(n), np.log(d), np.log(y)

    def obj(t):
        a0, a1, al1, a2, al2 = t
        pred = np.logaddexp(a0, np.logaddexp(a1 - al1 * x, a2 - al2 * z))
        r = pred - logl
        return float(np.where(np.abs(r) <= HUBER_DELTA, 0.5 * r * r,
                              HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA)).sum() / HUBER_DELTA)

    best = None
    for a0 in (-5.0,):
        for al1 in (0.3, 1.0):
            for al2 in (0.3, 1.0):
                t0 = [a0, np.median(logl) + al1 * x.mean(), al1, np.median(logl) + al2 * z.mean(), al2]
                r = minimize(obj, t0, method="L-BFGS-B", bounds=[(None, None), (None, None), (0, 3), (None, None), (0, 3)],
                             options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
                if best is None or r.fun < best.fun:
                    best = r
    return best


def test_variable_projection_equals_the_joint_fit():
    n, d = grid(6)
    y = noisy(n, d, sigma=0.05, seed=3)
    fit = fit_scaling_law(n, d, y, n_bootstrap=0)
    ref = _joint_reference_fit(n, d, y)
    assert fit.loss <= ref.fun * (1 + 1e-6) + 1e-9  # never worse than the joint optimum
    assert fit.alpha1 == pytest.approx(ref.x[2], rel=2e-3) and fit.alpha2 == pytest.approx(ref.x[4], rel=2e-3)
    assert fit.A0 == pytest.approx(math.exp(ref.x[0]), rel=1e-2)


REALISTIC = {"A0": 1.0, "A1": 3e3, "alpha1": 0.6, "A2": 2e3, "alpha2": 0.9}


def realistic_design(seed, sigma=0.32):
    """5 sizes × 5 lengths × 2 seeds, log-normal noise σ (the measured seed scatter is 0.32)."""
    n, d = np.meshgrid(np.logspace(3, 5, 5), np.logspace(1, 3.5, 5))
    n, d = np.repeat(n.ravel(), 2), np.repeat(d.ravel(), 2)
    y = law(n, d, REALISTIC) * np.exp(sigma * np.random.default_rng(seed).standard_normal(n.size))
    return n, d, y, np.repeat(np.arange(25), 2)


def planted_replicates(k, n_bootstrap):
    est, cover = [], []
    for rep in range(k):
        n, d, y, cells = realistic_design(100 + rep)
        fit = fit_scaling_law(n, d, y, clusters=cells, n_bootstrap=n_bootstrap, seed=rep)
        est.append([fit.alpha1, fit.alpha2])
        cover.append([fit.ci[a][0] <= REALISTIC[a] <= fit.ci[a][1] for a in ("alpha1", "alpha2")])
    return np.array(est), np.array(cover)


@pytest.mark.slow  # 16-18 s; the other recovery tests cover the fast suite
def test_planted_recovery_on_a_realistic_design():
    est, cover = planted_replicates(6, n_bootstrap=60)
    med = np.median(est, axis=0)
    assert med[0] == pytest.approx(0.6, rel=0.15) and med[1] == pytest.approx(0.9, rel=0.15), est
    assert cover.sum(axis=0).min() >= 4, cover  # most 95% intervals cover the planted exponents (40 replicates: slow test)


@pytest.mark.slow
def test_planted_recovery_many_replicates():
    """40 replicates (see docs/scaling.md for the measured shares)."""
    est, cover = planted_replicates(40, n_bootstrap=100)
    within = (np.abs(est / [0.6, 0.9] - 1) < 0.15).mean(axis=0)
    assert np.all(np.abs(np.median(est, axis=0) / [0.6, 0.9] - 1) < 0.1)
    assert within[1] >= 0.7 and within[0] >= 0.45, within
    assert cover.mean(axis=0).min() >= 0.85, cover.mean(axis=0)


def test_cluster_bootstrap_resamples_cells_not_points():
    n, d = grid(5)
    y = noisy(n, d, sigma=0.1, seed=1)
    cells = np.arange(n.size)
    single = fit_scaling_law(n, d, y, clusters=cells, n_bootstrap=30, seed=4)
    twice = fit_scaling_law(np.r_[n, n], np.r_[d, d], np.r_[y, y], clusters=np.r_[cells, cells], n_bootstrap=30, seed=4)
    assert twice.n_clusters == single.n_clusters == n.size
    for k in ("alpha1", "alpha2", "elasticity_N", "allocation_exponent"):
        assert twice.ci[k] == pytest.approx(single.ci[k], rel=1e-4, abs=1e-8), k
    by_point = fit_scaling_law(np.r_[n, n], np.r_[d, d], np.r_[y, y], n_bootstrap=30, seed=4)
    width = lambda f: f.ci["alpha2"][1] - f.ci["alpha2"][0]  # noqa: E731
    assert width(by_point) < width(single)  # resampling points, duplicates look like twice the data


def test_flags_floor_at_zero_and_exponent_at_bound():
    n, d = grid(6)
    no_floor = {**PLANTED, "A0": 0.0}
    fit = fit_scaling_law(n, d, law(n, d, no_floor), n_bootstrap=0)
    assert any(f.startswith("A0 = 0") for f in fit.flags) and not fit.clean
    steep = {**PLANTED, "A1": 1e12, "alpha1": 4.0}  # the N term decays faster than the bound allows
    fit = fit_scaling_law(n, d, law(n, d, steep), n_bootstrap=0)
    assert "alpha1 at its bound 3" in fit.flags
    assert fit_scaling_law(n, d, law(n, d), n_bootstrap=0).flags == ()


def test_a_stalled_search_pinned_at_a_bound_counts_as_converged():
    """L-BFGS-B's status 2 at an exponent held at its bound is a converged fit flagged for the bound; the
    gradient components that push against a bound are not a failure, the free ones are."""
    from types import SimpleNamespace

    from nqs.scaling.fit_solver import FitStatus, outcome

    bounds = [(0.0, None), (0.0, 3.0)]
    pinned = SimpleNamespace(status=2, x=np.array([0.0, 3.0]), jac=np.array([5.0, -2.0]))
    assert outcome(pinned, bounds) is FitStatus.CONVERGED
    free = SimpleNamespace(status=2, x=np.array([0.4, 3.0]), jac=np.array([5.0, -2.0]))
    assert outcome(free, bounds) is FitStatus.FAILED
    outward = SimpleNamespace(status=2, x=np.array([0.0, 3.0]), jac=np.array([-5.0, 0.0]))
    assert outcome(outward, bounds) is FitStatus.FAILED


def test_derived_quantities_at_the_centre():
    n, d = grid(6)
    fit = fit_scaling_law(n, d, law(n, d), n_bootstrap=0)
    nc, dc = fit.law.n_centre[0], fit.law.d_centre
    h = 1e-6
    dlog = lambda f: -(np.log(f(1 + h)) - np.log(f(1 - h))) / (np.log(1 + h) - np.log(1 - h))  # noqa: E731
    assert fit.derived["elasticity_N"] == pytest.approx(dlog(lambda s: law(nc * s, dc)), rel=1e-5)
    assert fit.derived["elasticity_D"] == pytest.approx(dlog(lambda s: law(nc, dc * s)), rel=1e-5)
    assert fit.derived["allocation_exponent"] == pytest.approx(0.8 / 1.3, rel=1e-6)


def test_interaction_law_recovered_exactly():
    n, d = grid(7)
    u, v = (n / 1e4) ** -0.5, (d / 10.0) ** -0.8
    y = 0.01 + 0.05 * u + 0.3 * v + 0.2 * u * v  # the N slope grows with 1/D': what the H2O study saw
    fit = fit_scaling_law(n, d, y, interaction=True, n_bootstrap=0)
    assert fit.alpha1 == pytest.approx(0.5, rel=1e-5) and fit.alpha2 == pytest.approx(0.8, rel=1e-5)
    nc, dc = fit.law.n_centre[0], fit.law.d_centre
    assert fit.params["A12"] * (nc / 1e4) ** 0.5 * (dc / 10.0) ** 0.8 == pytest.approx(0.2, rel=1e-4)
    additive = fit_scaling_law(n, d, y, n_bootstrap=0)
    assert additive.residual_scale > 100 * max(fit.residual_scale, 1e-9)


def test_vanished_term_has_no_exponent_and_constant_axes_are_refused():
    n, d = grid(6)
    fit = fit_scaling_law(n, d, 0.5 + 2.0 * d ** -0.7, n_bootstrap=0)  # no N dependence at all
    assert math.isnan(fit.alpha1) and "A1 = 0 (term vanished)" in fit.flags
    with pytest.raises(UserError, match="N takes a single value"):
        fit_scaling_law(np.full(n.size, 1e4), d, law(n, d), n_bootstrap=0)


def test_too_few_points_is_a_user_error():
    n, d = grid(2)
    with pytest.raises(UserError, match="usable points"):
        fit_scaling_law(np.r_[n, 1e5], np.r_[d, 1.0], law(np.r_[n, 1e5], np.r_[d, 1.0]))


# ---------------------------------------------------------------------------- pooled molecules
SECTORS = {"A": 225.0, "B": 441.0, "C": 3136.0}
KAPPA = {"A": 2e3, "B": 5e3, "C": 6e4}  # FLOPs per parameter per unique sample per step


class LinearCost:
    """A synthetic cost model: c(N, B) = κ·N·B per step, U(B) = min(B, |sector|)."""

    def __init__(self, mol):
        self.sector_size, self.n_qubits, self.kappa = SECTORS[mol], 16, KAPPA[mol]

    def unique(self, cap):
        return min(cap, self.sector_size)

    def flops(self, n, cap, n_from="total"):
        return self.kappa * n * cap

    def seconds(self, n, cap, n_from="total"):
        return 1e-9 * self.flops(n, cap) + 1e-3


def pooled_design(seed, sigma=0.1, floors=None, scales=None):
    """Runs on the three molecules of SECTORS; `scales` multiply each molecule's power-law terms."""
    rows = []
    for mol, sector in SECTORS.items():
        for n in np.logspace(3, 5, 5):
            for t in (100, 200, 400, 800, 1600):
                for s in range(2):
                    rows.append((mol, n, t * min(200, sector) / sector, f"{mol}{n:.0f}{t}"))
    mol = np.array([r[0] for r in rows], dtype=object)
    n, d = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    p = {"A0": 0.0, "A1": 300.0, "alpha1": 0.5, "A2": 50.0, "alpha2": 0.7}
    floor = np.array([(floors or {}).get(m, 0.5) for m in mol])
    scale = np.array([(scales or {}).get(m, 1.0) for m in mol])
    y = (floor + scale * law(n, d, p)) * np.exp(sigma * np.random.default_rng(seed).standard_normal(n.size))
    return mol, n, d, y, np.array([r[3] for r in rows], dtype=object)


def test_pooled_recovery_and_per_molecule_floors():
    mol, n, d, y, cells = pooled_design(0)
    fit = fit_scaling_law(n, d, y, molecules=mol, clusters=cells, n_bootstrap=20)
    assert fit.alpha1 == pytest.approx(0.5, rel=0.1) and fit.alpha2 == pytest.approx(0.7, rel=0.1)
    assert fit.ci["A0"][0] <= 0.5 <= fit.ci["A0"][1]
    floors = {"A": 0.2, "B": 1.0, "C": 3.0}
    mol, n, d, y, cells = pooled_design(0, sigma=0.0, floors=floors)
    fit = fit_scaling_law(n, d, y, molecules=mol, clusters=cells, floors="molecule", n_bootstrap=0)
    for m, v in floors.items():
        assert fit.params[f"A0[{m}]"] == pytest.approx(v, rel=1e-5)
    assert fit.alpha1 == pytest.approx(0.5, rel=1e-5)


def test_per_molecule_amplitudes_share_the_exponents():
    """A planted law whose amplitudes differ by molecule (×0.3, ×1, ×4), exponents shared: recovered exactly with
    per-molecule amplitudes, predicted per molecule, and misfitted when the amplitudes are forced to be shared."""
    floors, scales = {"A": 0.2, "B": 1.0, "C": 3.0}, {"A": 0.3, "B": 1.0, "C": 4.0}
    mol, n, d, y, cells = pooled_design(0, sigma=0.0, floors=floors, scales=scales)
    fit = fit_scaling_law(n, d, y, molecules=mol, clusters=cells, floors="molecule", amplitudes="molecule",
                          n_bootstrap=0)
    nc, dc = fit.law.n_centre[0], fit.law.d_centre
    assert fit.alpha1 == pytest.approx(0.5, rel=1e-5) and fit.alpha2 == pytest.approx(0.7, rel=1e-5)
    for m in SECTORS:
        assert fit.params[f"A0[{m}]"] == pytest.approx(floors[m], rel=1e-5)
        assert fit.params[f"A1[{m}]"] == pytest.approx(scales[m] * 300.0 * nc ** -0.5, rel=1e-5)
        assert fit.params[f"A2[{m}]"] == pytest.approx(scales[m] * 50.0 * dc ** -0.7, rel=1e-5)
        e_d = 0.7 * fit.params[f"A2[{m}]"] / (floors[m] + fit.params[f"A1[{m}]"] + fit.params[f"A2[{m}]"])
        assert fit.derived[f"elasticity_D[{m}]"] == pytest.approx(e_d, rel=1e-9)
    np.testing.assert_allclose(fit.predict(n, d, mol), y, rtol=1e-5)
    with pytest.raises(UserError, match="per molecule; name the molecule"):
        fit.predict(n[:1], d[:1])
    shared = fit_scaling_law(n, d, y, molecules=mol, clusters=cells, floors="molecule", n_bootstrap=0)
    assert np.max(np.abs(np.log(shared.predict(n, d, mol) / y))) > 0.1


def test_allocation_per_molecule_matches_the_closed_form():
    mol, n, d, y, cells = pooled_design(0, sigma=0.0, floors={"A": 0.5, "B": 0.5, "C": 0.5})
    fit = fit_scaling_law(n, d, y, molecules=mol, clusters=cells, n_bootstrap=0)
    a1, al1, a2, al2 = fit.A1, fit.alpha1, fit.A2, fit.alpha2
    nc, dc = fit.law.n_centre[0], fit.law.d_centre
    for m in SECTORS:
        cost = LinearCost(m)
        (opt,) = allocate(fit, cost, molecule=m, kind="flops", budgets=[1e13], n_from="total", d_from="nominal",
                          caps=[200.0], n_range=(10.0, 1e9))
        g = 1e13 * min(200, SECTORS[m]) / SECTORS[m] / (cost.kappa * 200)  # N·D' on the budget
        # α1·A1·(N/N_c)^-α1 = α2·A2·(D'/D'_c)^-α2 with D' = g/N
        f = lambda u: al1 * a1 * (math.exp(u) / nc) ** -al1 - al2 * a2 * (g / math.exp(u) / dc) ** -al2  # noqa: E731
        from scipy.optimize import brentq

        exact = math.exp(brentq(f, math.log(10.0), math.log(1e9)))
        assert opt.n == pytest.approx(exact, rel=0.01), m
        assert opt.steps * cost.flops(opt.n, opt.cap) == pytest.approx(1e13, rel=0.02)
    assert opt.warnings == (f"B* = 200 is the runs' only cap: B is not allocated (the law cannot tell B from T beyond "
                            "the caps the runs used)",)


# ---------------------------------------------------------------------------- validation
def points(n, d, y, mol=None, cells=None, steps=None, flops=None):
    m = n.size
    return ScalingPoints(n=n, d=d, loss=y, run=np.arange(m), molecule=np.asarray(mol if mol is not None else ["X"] * m, dtype=object),
                         cell=np.asarray(cells if cells is not None else np.arange(m).astype(str), dtype=object),
                         flops=np.asarray(flops if flops is not None else n * d, float),
                         steps=np.asarray(steps if steps is not None else d, float), final=np.ones(m, bool),
                         weight=np.ones(m))


def test_holdouts_are_fixed_by_the_design():
    n, d = grid(5)
    pts = points(n, d, law(n, d))
    held = holdout_runs(pts)
    assert set(held["largest_N"]) == set(np.flatnonzero(n == n.max()))
    assert set(held["largest_T"]) == set(np.flatnonzero(d == d.max()))
    cost = n * d
    assert set(held["top_compute_decile"]) == set(np.flatnonzero(cost >= np.quantile(cost, 0.9)))


def test_largest_n_and_t_are_held_out_per_molecule():
    n, d = grid(4)
    pts = points(np.r_[n, 1.02 * n], np.r_[d, d], np.r_[law(n, d), law(n, d)], mol=["A"] * n.size + ["B"] * n.size)
    held = holdout_runs(pts)["largest_N"]
    assert set(pts.molecule[held]) == {"A", "B"} and held.size == 8


def test_validation_scores_on_a_known_answer():
    n, d = grid(5)
    y = law(n, d)
    fit = fit_scaling_law(n, d, y, n_bootstrap=10)
    v = validate(points(n, d, y), fit, {}, n_bootstrap=10)
    assert v["loo"]["rms_log_error"] < 1e-4 and v["in_sample"]["rms_log_error"] < 1e-6
    for name in ("top_compute_decile", "largest_T", "largest_N"):
        assert v["holdouts"][name]["rms_log_error"] < 1e-4, name
    y2 = np.where(d == d.max(), 2 * y, y)  # the longest runs do twice as badly as the law of the others
    fit2 = fit_scaling_law(n, d, y2, n_bootstrap=10)
    h = validate(points(n, d, y2), fit2, {}, n_bootstrap=10)["holdouts"]["largest_T"]
    assert h["bias"] == pytest.approx(-math.log(2), abs=1e-3) and h["rms_log_error"] == pytest.approx(math.log(2), abs=1e-3)
    assert h["coverage_95"] == 0.0 and h["n_runs"] == 5


def test_seed_scatter_separates_noise_from_lack_of_fit():
    n, d = grid(5)
    n3, d3 = np.repeat(n, 3), np.repeat(d, 3)  # three seeds per cell, log-normal noise of SD 0.3
    cells = np.repeat(np.arange(n.size), 3).astype(str)
    y = noisy(n3, d3, sigma=0.3, seed=4)
    fit = fit_scaling_law(n3, d3, y, clusters=cells, n_bootstrap=10)
    v = validate(points(n3, d3, y, cells=cells), fit, {}, n_bootstrap=10)
    assert v["seed_scatter"] == pytest.approx(0.3, abs=0.05)
    assert v["in_sample"]["lack_of_fit"] < 0.1  # the right law: what is left is the seeds'
    assert v["in_sample"]["cell_mean_rms"] < 0.25  # seed means: about 0.3 / sqrt(3)
    y2 = np.where(d3 == d3.max(), 4 * y, y)  # the longest runs do 4x as badly as the law of the others
    fit2 = fit_scaling_law(n3, d3, y2, clusters=cells, n_bootstrap=10)
    h = validate(points(n3, d3, y2, cells=cells), fit2, {}, n_bootstrap=10)["holdouts"]["largest_T"]
    assert h["lack_of_fit"] == pytest.approx(math.log(4), abs=0.15) and h["cell_mean_rms"] > 1.2


# ---------------------------------------------------------------------------- reading runs
def test_corrupt_metrics_line_warns_with_file_and_line(tmp_path):
    run = write_run(tmp_path, "r", metrics=[{"step": 0, "energy": -7.88, "d_prime": 1.0, "vscore": 0.2}])
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 1, "d_prime": 2.0, "vsc\n')  # truncated mid-write
        fh.write(json.dumps({"step": 2, "energy": -7.88, "d_prime": 3.0, "vscore": 0.1,
                             "flops_step": {"sampling": 5.0}}) + "\n")
    with pytest.warns(UserWarning, match=r"metrics\.jsonl:2: skipped"):
        rows = read_metrics(run)
    assert [r.step for r in rows] == [0, 2] and rows[1].flops_step == {"sampling": 5.0}


def test_missing_summary_warns_and_is_skipped(tmp_path):
    write_run(tmp_path, "done")
    write_run(tmp_path, "unfinished", summary=False)
    with pytest.warns(UserWarning, match="unfinished: no summary.json"):
        records = load_runs([tmp_path])
    assert [r.path.name for r in records] == ["done"]


def test_bad_paths_are_user_errors(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is not a directory"):
        discover_runs([tmp_path / "file.txt"])
    with pytest.raises(UserError, match="neither summary.json nor metrics.jsonl"):
        discover_runs([tmp_path / "empty"])
    with pytest.raises(UserError, match="no such directory"):
        discover_runs([tmp_path / "missing"])


def test_sweep_folder_is_searched_recursively(tmp_path):
    write_run(tmp_path / "sweep" / "a", "seed0")
    write_run(tmp_path / "sweep" / "b", "seed1")
    assert [p.name for p in discover_runs([tmp_path / "sweep"])] == ["seed0", "seed1"]


def test_points_along_training_nominal_split_and_cells(tmp_path):
    metrics = [{"step": s, "energy": -7.884, "d_prime": 0.5 * (s + 1), "vscore": 0.3 / (s + 1), "error_mha": -2.0}
               for s in range(4)] + [{"step": 4, "energy": -7.88, "d_prime": 3.0, "vscore": None}]
    write_run(tmp_path, "a", n_params=1e4, d_prime=2.5, metrics=metrics, seed=0)
    write_run(tmp_path, "b", n_params=1e4, d_prime=2.6, seed=1)
    write_run(tmp_path, "c", n_params=2e4, d_prime=5.0, molecule="H2O")
    records = load_runs([tmp_path])
    with pytest.warns(UserWarning, match="dropped 1 of 8 points"):
        pts = collect_points(records, metric="vscore", along_training=True)
    assert len(pts) == 7 and pts.run.tolist() == [0, 0, 0, 0, 0, 1, 2]
    assert pts.final.tolist() == [True, False, False, False, False, True, True]
    assert pts.cell[0] == pts.cell[5] != pts.cell[6]  # seeds share a cell, molecules do not
    split = collect_points(records, n_from="split")
    assert split.n.shape == (3, 2) and split.n[0] == pytest.approx([3e3, 7e3])
    nominal = collect_points(records, d_from="nominal")  # old runs: steps·min(B, |sector|)/|sector|
    assert nominal.d == pytest.approx([100 * 200 / 225] * 3)
    with pytest.raises(UserError, match="--d-from"):
        collect_points(records, d_from="bogus")


# ---------------------------------------------------------------------------- the CLI
def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nqs.cli.fit", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_too_few_points_exits_2_with_one_line(tmp_path):
    for i in range(3):
        write_run(tmp_path, f"r{i}", n_params=1e3 * (i + 1), d_prime=10.0 * (i + 1))
    proc = run_cli(tmp_path, "--metric", "vscore")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 3 usable points"), proc.stderr


def test_one_law_per_molecule_is_validated_together(tmp_path, capsys):
    from nqs.cli.fit import main
    from nqs.scaling.validate import combine

    law_runs(tmp_path / "lih", k=4, molecule="LiH")
    law_runs(tmp_path / "h2o", k=4, molecule="H2O")
    out = tmp_path / "fit.json"
    assert main([str(tmp_path), "--metric", "vscore", "--laws", "molecule", "--json", str(out),
                 "--bootstrap", "10"]) == 0
    data = json.loads(out.read_text())["transformer"]
    assert set(data["per_molecule"]) == {"H2O", "LiH"} and data["laws"] == "molecule"
    each = [data["per_molecule"][m]["fit"]["validation"]["holdouts"]["largest_N"] for m in ("H2O", "LiH")]
    joint = data["validation"]["holdouts"]["largest_N"]
    assert joint["n_runs"] == sum(e["n_runs"] for e in each) == 8
    assert joint["rms_log_error"] == pytest.approx(math.sqrt(sum(e["n_runs"] * e["rms_log_error"] ** 2 for e in each)
                                                             / 8), rel=1e-12)
    assert "validated together" in capsys.readouterr().out
    two = [{"in_sample": {"n_runs": 1, "rms_log_error": 1.0, "bias": 1.0, "n_cells": 1, "cell_mean_rms": 1.0},
            "loo": {"n_runs": 0}, "holdouts": {}, "seed_scatter": 0.5, "seed_scatter_dof": 1},
           {"in_sample": {"n_runs": 3, "rms_log_error": 0.0, "bias": 0.0, "n_cells": 3, "cell_mean_rms": 0.0},
            "loo": {"n_runs": 0}, "holdouts": {}, "seed_scatter": 0.1, "seed_scatter_dof": 3}]
    joint = combine(two)
    assert joint["seed_scatter"] == pytest.approx(math.sqrt((0.25 + 3 * 0.01) / 4))  # pooled by degrees of freedom
    merged = joint["in_sample"]
    assert merged["rms_log_error"] == pytest.approx(0.5) and merged["bias"] == pytest.approx(0.25)
    assert merged["lack_of_fit"] == pytest.approx(math.sqrt(0.25 - joint["seed_scatter"] ** 2))
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--metric", "vscore", "--laws", "molecule", "--budget", "1e10"])
    assert stop.value.code == 2


def test_cli_pools_molecules_and_reports_validation(tmp_path, capsys):
    from nqs.cli.fit import main

    law_runs(tmp_path / "lih", molecule="LiH")
    law_runs(tmp_path / "h2o", molecule="H2O")
    out = tmp_path / "fit.json"
    assert main([str(tmp_path), "--metric", "vscore", "--json", str(out), "--bootstrap", "20"]) == 0
    data = json.loads(out.read_text())["transformer"]
    assert data["molecules"] == ["H2O", "LiH"] and data["fit"]["n_points"] == 18
    assert data["fit"]["params"]["alpha1"] == pytest.approx(0.5, rel=1e-3)  # noise-free points
    assert set(data["fit"]["validation"]["holdouts"]) == {"top_compute_decile", "largest_T", "largest_N"}
    assert "allocation_exponent" in data["fit"]["ci"]
    report = capsys.readouterr().out
    assert "95% CI" in report and "leave one grid cell out" in report and "status:" in report


def test_cli_bad_budget_and_split_allocation_exit_2(tmp_path):
    law_runs(tmp_path)
    proc = run_cli(tmp_path, "--budget", "-1")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --budget -1")
    proc = run_cli(tmp_path, "--n-from", "split", "--budget", "1e12")
    assert proc.returncode == 2 and "one size term" in proc.stderr


def test_cli_refuses_to_pool_estimators_unless_told(tmp_path, capsys):
    from nqs.cli.fit import main

    law_runs(tmp_path / "exact", molecule="LiH")  # no estimator field: written before it was recorded (exact)
    write_run(tmp_path / "sampled", "r0", n_params=5e3, d_prime=3.0, estimator="sampled")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--metric", "vscore", "--bootstrap", "0"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert "different local-energy estimators (exact, sampled)" in lines[0] and "--mix-estimators" in lines[0]
    assert main([str(tmp_path), "--metric", "vscore", "--bootstrap", "0", "--mix-estimators"]) == 0
    assert "pooled as asked" in capsys.readouterr().err
