"""VMC statistics and the gradient estimator against exact enumeration."""
from __future__ import annotations

import math

import torch

from nqs.exact import sector_matrix
from nqs.local_energy import local_energy
from nqs.models import ModelConfig, build_model
from nqs.vmc import stats_from_sums, surrogate_loss, weighted_sums


def test_weighted_statistics():
    g = torch.Generator().manual_seed(0)
    e = torch.complex(torch.randn(50, generator=g, dtype=torch.float64), 0.1 * torch.randn(50, generator=g, dtype=torch.float64))
    counts = torch.randint(1, 100, (50,), generator=g).to(torch.float64)
    stats = stats_from_sums(weighted_sums(e, counts / counts.sum()), float(counts.sum()))
    w = counts / counts.sum()
    mean = (w * e).sum()
    assert math.isclose(stats.mean, mean.real.item(), abs_tol=1e-12)
    var = (w * (e - mean).abs() ** 2).sum().item()
    assert math.isclose(stats.variance, var, rel_tol=1e-10)
    assert math.isclose(stats.error, math.sqrt(var / counts.sum().item()), rel_tol=1e-10)
    assert math.isclose(stats.vscore(4, -10.0), 4 * var / (mean.real.item() + 10.0) ** 2, rel_tol=1e-10)


def test_surrogate_gradient_equals_exact_energy_gradient(problems):
    """With exact weights |psi|^2 over the whole sector, the surrogate's gradient is dE/dtheta of <H>."""
    p = problems("LiH")
    torch.manual_seed(1)
    for ansatz in ("made", "transformer", "retnet"):
        model = build_model(ModelConfig(ansatz), p.sector).double()
        matrix, bits = sector_matrix(p.compiled(), p.sector)
        h = torch.tensor(matrix.toarray(), dtype=torch.complex128)
        psi = torch.exp(model.log_psi(bits))
        energy = (psi.conj() @ (h @ psi)).real / (psi.abs() ** 2).sum()
        exact = torch.autograd.grad(energy, list(model.parameters()))
        with torch.no_grad():
            e_loc = local_energy(p.compiled(), bits, model.log_psi).values
            w = torch.exp(2 * model.log_psi(bits).real)
            w = w / w.sum()
            mean = complex((w * e_loc).sum())
        estimate = torch.autograd.grad(surrogate_loss(model.log_psi(bits), e_loc, w, mean), list(model.parameters()))
        worst = max((a - b).abs().max().item() for a, b in zip(exact, estimate))
        assert worst < 1e-10, ansatz


def test_vmc_step_is_the_composition_of_its_parts(problems):
    """The step's statistics equal E_loc of its samples by hand; its loss has the VMC gradient."""
    from nqs.sampler import sample
    from nqs.vmc import vmc_step

    p = problems("LiH")
    torch.manual_seed(2)
    model = build_model(ModelConfig("made"), p.sector).double()
    h = p.compiled()
    r = vmc_step(model, h, 1e6, 100, torch.Generator().manual_seed(5), temperature=0.1)
    s = sample(model, 1e6, 100, torch.Generator().manual_seed(5))
    assert torch.equal(r.samples.bits, s.bits) and torch.equal(r.samples.counts, s.counts)
    w = s.counts / s.counts.sum()
    e = local_energy(h, s.bits, model.log_psi).values
    assert math.isclose(r.stats.mean, float((w * e.real).sum()), abs_tol=1e-12)
    log_psi = model.log_psi(s.bits)
    log_p = 2 * log_psi.real.detach()
    mean = complex((w * e).sum()) + 0.1 * float((w * log_p).sum())
    expected = surrogate_loss(log_psi, e + 0.1 * log_p, w, mean)
    assert math.isclose(float(r.loss), float(expected), rel_tol=1e-12, abs_tol=1e-12)
    assert r.stats.n_requested == 1e6 and r.stats.n_samples == float(s.counts.sum())


def test_kept_mass_is_the_probability_of_the_returned_configurations(problems):
    """kept_mass = sum of |psi(x)|^2 over the sampled configurations (float64), below 1 under a tight cap."""
    from nqs.sampler import sample

    p = problems("LiH")
    torch.manual_seed(3)
    model = build_model(ModelConfig("transformer"), p.sector).double()
    for cap, expect_full in ((10, False), (1000, True)):
        s = sample(model, 1e12, cap, torch.Generator().manual_seed(0))
        exact = float(torch.exp(2 * model.log_psi(s.bits).real).sum())
        assert math.isclose(s.kept_mass, exact, rel_tol=1e-10)
        assert (s.kept_mass > 1 - 1e-9) == expect_full
