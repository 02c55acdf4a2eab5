"""Stratified samples (a capped head plus a tail draw): unbiased against exact enumeration where the cap drops mass."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nqs.exact import sector_matrix
from nqs.local_energy import local_energy
from nqs.models import ModelConfig, build_model
from nqs.vmc import surrogate_loss, vmc_step


def _spread_model(problem, seed: int = 3):
    """An untrained MADE in float64: spread (on LiH's 225 configurations a cap of 8 keeps about a fifth of the mass)."""
    torch.manual_seed(seed)
    return build_model(ModelConfig("made"), problem.sector).double()


def _exact(model, h, sector) -> tuple[float, float]:
    """<H> and Var(E_loc) under p = |psi|^2 by enumerating the sector (float64)."""
    _, bits = sector_matrix(h, sector)
    with torch.no_grad():
        e = local_energy(h, bits, model.log_psi).values
        p = torch.exp(2 * model.log_psi(bits).real)
    mean = float((p * e.real).sum())
    return mean, float((p * (e - mean).abs() ** 2).sum())


def _final(model, h, cap: int, n_tail: int, seed: int):
    """The capped step alone and the same step stratified with about n_tail tail draws (same head)."""
    head = vmc_step(model, h, 1e12, cap, torch.Generator().manual_seed(seed), with_loss=False)
    result = vmc_step(model, h, 1e12, cap, torch.Generator().manual_seed(seed), with_loss=False, tail_draws=n_tail)
    return head, result, result.tail


def test_tail_estimate_is_unbiased_and_its_error_bar_is_calibrated(problems):
    """30 independent tail draws: each within 5 sigma of the enumerated <H>, their mean within 4 sigma/sqrt(30), the
    spread of the z-scores ~1; the head alone is biased by far more than the error bar (this fails if the tail is
    left out or mis-weighted)."""
    p = problems("LiH")
    h, model = p.compiled(), _spread_model(p)
    exact, variance = _exact(model, h, p.sector)
    z, estimates = [], []
    for seed in range(30):
        head, result, tail = _final(model, h, 8, 400, seed)
        assert tail is not None and 0.2 < tail.head_mass < 0.95 and tail.draws > 300
        assert math.isclose(tail.head_mass, head.stats.kept_mass)
        assert result.samples.tail.n_head == head.samples.n_unique
        assert torch.equal(result.samples.bits[:head.samples.n_unique], head.samples.bits)
        z.append((result.stats.mean - exact) / result.stats.error)
        estimates.append(result.stats.mean)
        assert abs(result.stats.variance - variance) < 0.5 * variance
    z = torch.tensor(z)
    assert z.abs().max() < 5, z
    assert abs(float(z.mean())) < 4 / math.sqrt(len(z)), z
    assert 0.6 < float(z.std()) < 1.5, z
    assert abs(head.stats.mean - exact) > 10 * result.stats.error  # the bias the tail removes


def test_error_bar_is_the_estimators_exact_spread(problems):
    """The reported error matches the exact standard deviation of E^,
    (1/S) [sum_T p (E_L - c)^2 - (sum_T p (E_L - c))^2] enumerated over the tail T that the head left (within the
    noise of estimating it from ~400 draws)."""
    from nqs.keys import index_of, pack

    p = problems("LiH")
    h, model = p.compiled(), _spread_model(p)
    head, result, tail = _final(model, h, 8, 400, 0)
    _, bits = sector_matrix(h, p.sector)
    with torch.no_grad():
        e = local_energy(h, bits, model.log_psi).values.real
        prob = torch.exp(2 * model.log_psi(bits).real)
    in_tail = index_of(pack(head.samples.bits), pack(bits), bits.shape[1]) < 0
    d, q = e[in_tail] - tail.head_energy, prob[in_tail]
    exact_error = math.sqrt(float((q * d ** 2).sum() - (q * d).sum() ** 2) / tail.n_samples)
    assert abs(tail.error / exact_error - 1) < 0.15, (tail.error, exact_error)
    assert math.isclose(result.stats.mean, tail.head_energy + tail.correction, abs_tol=1e-12)
    assert math.isclose(float(q.sum()), 1 - tail.head_mass, rel_tol=1e-9)


def test_no_tail_when_the_head_kept_everything_or_when_asked(problems):
    p = problems("LiH")
    h, model = p.compiled(), _spread_model(p)
    head, result, tail = _final(model, h, 10_000, 400, 0)
    assert tail is None and result.samples.tail is None and result.stats == head.stats
    # 1e12 draws reach all 225 configurations: the count-weighted mean, within its multinomial noise (~2e-6 Ha)
    assert abs(head.stats.mean - _exact(model, h, p.sector)[0]) < 5 * head.stats.error
    head, result, tail = _final(model, h, 8, 0, 0)
    assert tail is None and result.stats == head.stats


def test_a_capped_run_records_its_tail(tmp_path, capsys):
    """nqs-train with a small final cap: the summary carries final_tail and the tail's error-bar text, the note
    says what the second draw moved; --final-tail 0 keeps the biased head and says so."""
    from nqs.cli.train import main
    from nqs.record import TAIL_ERROR_BAR_COVERS, read_summary

    args = ["--mol", "LiH", "--no-progress", "--steps", "5", "--unique", "100", "--samples", "1e6", "--threads", "1",
            "--final-unique", "20"]
    main([*args, "--out", str(tmp_path / "tail")])
    printed = capsys.readouterr().err
    summary = read_summary(tmp_path / "tail")
    tail = summary.final_tail
    assert tail is not None and summary.error_bar_covers == TAIL_ERROR_BAR_COVERS
    assert math.isclose(summary.energy, tail["head_energy"] + tail["correction"], abs_tol=1e-12)
    assert tail["draws"] > 3000 and "the rest came from a second draw" in printed
    assert json.loads((tmp_path / "tail" / "summary.json").read_text())["final_tail"] == tail
    script = Path(__file__).resolve().parent.parent / "scripts" / "evaluate_energy.py"
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "tail")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    row = json.loads(again.stdout.splitlines()[0])  # the same weights, sample and tail: the same energy
    assert math.isclose(row["energy"], summary.energy, abs_tol=1e-9) and row["tail"]["draws"] == tail["draws"]
    main([*args, "--final-tail", "0", "--out", str(tmp_path / "head")])
    assert "--final-tail 0 left the rest out" in capsys.readouterr().err
    head = read_summary(tmp_path / "head")
    assert head.final_tail is None and math.isclose(head.energy, tail["head_energy"], abs_tol=1e-6)


def test_negative_final_tail_is_refused(tmp_path, capsys):
    from nqs.cli.train import main

    with pytest.raises(SystemExit) as e:
        main(["--mol", "LiH", "--final-tail", "-1", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "tail and final_tail must be >= 0" in capsys.readouterr().err


def _flat_grad(model, loss) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_stratified_gradient_is_unbiased(problems):
    """The stratified step's loss gradient, projected on the exact energy gradient (enumerated), averages to it
    over 40 tail draws; the capped step's alone does not."""
    p = problems("LiH")
    h, model = p.compiled(), _spread_model(p)
    _, bits = sector_matrix(h, p.sector)
    with torch.no_grad():
        e_loc = local_energy(h, bits, model.log_psi).values
    log_psi = model.log_psi(bits)
    w = torch.exp(2 * log_psi.real.detach())
    exact = _flat_grad(model, surrogate_loss(log_psi, e_loc, w, complex((w * e_loc).sum())))
    unit = exact / exact.norm()
    stratified = [float(_flat_grad(model, vmc_step(model, h, 1e12, 8, torch.Generator().manual_seed(seed),
                                                   tail_draws=400).loss) @ unit) for seed in range(40)]
    capped = float(_flat_grad(model, vmc_step(model, h, 1e12, 8, torch.Generator().manual_seed(0)).loss) @ unit)
    mean, se = sum(stratified) / 40, float(torch.tensor(stratified).std()) / math.sqrt(40)
    target = float(exact.norm())
    assert abs(mean - target) < 4 * se, (mean, se, target)
    assert abs(capped - target) > 10 * se, (capped, target, se)


def test_training_steps_with_a_tail_record_it(tmp_path):
    """--tail N: every capped step is stratified; metrics.jsonl records what the tail moved, the sample holds the
    tail's configurations beyond the cap."""
    from nqs.cli.train import main
    from nqs.record import read_metrics

    main(["--mol", "LiH", "--no-progress", "--steps", "3", "--unique", "10", "--tail", "300", "--threads", "1",
          "--out", str(tmp_path / "run")])
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 3 and all(r.tail_correction is not None and r.n_unique > 10 for r in rows)
    assert all(math.isfinite(r.energy) and 0 < r.energy_err < 0.1 for r in rows)


def test_noise_check_puts_a_stochastic_local_energys_noise_in_the_error_bar(problems):
    """A semi-stochastic E_loc on H6 (400 configurations) capped at 100 with no tail: 30 evaluations with independent
    draws scatter about the same sample's exact mean as their noise-checked error bars say (z-scores' spread ~1),
    and thousands of times beyond the plain bar sqrt(Var / N_s), which at N_s = 1e12 misses the noise."""
    from nqs.local_energy_modes import LocalEnergyMode

    p = problems("H6")
    h, model = p.compiled(), _spread_model(p)
    mode = LocalEnergyMode("semi-stochastic", threshold=1e-2, draws=1)
    z, plain = [], []
    for seed in range(30):
        def step(**kwargs):
            return vmc_step(model, h, 1e12, 100, torch.Generator().manual_seed(seed), with_loss=False, **kwargs)
        exact = step().stats.mean  # the same sample (the sampler draws first), its exact E_loc
        checked, once = step(mode=mode, noise_check=True), step(mode=mode)
        z.append((checked.stats.mean - exact) / checked.stats.error)
        plain.append(abs(once.stats.mean - exact) / once.stats.error)
    z = torch.tensor(z)
    assert 0.6 < float(z.std()) < 1.5 and abs(float(z.mean())) < 4 / math.sqrt(30), z
    assert float(torch.tensor(plain).median()) > 100
