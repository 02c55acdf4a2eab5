"""Stochastic reconfiguration: the Woodbury/minimum-step update against the dense natural gradient computed by
enumerating the sector (float64), the vmapped Jacobian against autograd, the trust region."""
from __future__ import annotations

import pytest
import torch

from nqs.local_energy import local_energy
from nqs.models import ModelConfig, build_model
from nqs.natural_gradient import SRSettings, log_psi_jacobian, metric_norm, natural_gradient, sr_direction
from nqs.vmc import surrogate_loss

SMALL = {"made": ModelConfig("made", hidden=16, made_layers=2, phase_hidden=8, phase_layers=2),
         "transformer": ModelConfig("transformer", d_model=8, heads=2, layers=1, d_ff=16, phase_hidden=8,
                                    phase_layers=2),
         "retnet": ModelConfig("retnet", d_model=8, heads=2, layers=1, d_ff=16, phase_hidden=8, phase_layers=2)}


def exact_quantities(p, ansatz: str):
    torch.manual_seed(4)
    model = build_model(SMALL[ansatz], p.sector).double()
    bits = p.sector.enumerate_bits()
    with torch.no_grad():
        w = torch.exp(2 * model.log_psi(bits).real)
        w = w / w.sum()
        e_loc = local_energy(p.compiled(), bits, model.log_psi).values
    mean = complex((w * e_loc).sum())
    model.zero_grad()
    surrogate_loss(model.log_psi(bits), e_loc, w, mean).backward()
    grad = torch.cat([q.grad.reshape(-1) for q in model.parameters()])
    rows = []  # O_x = d log psi(x) / d theta by one backward per configuration and part: independent of vmap
    for x in bits:
        z = model.log_psi(x.unsqueeze(0)).squeeze(0)
        re = torch.autograd.grad(z.real, list(model.parameters()), retain_graph=True)
        im = torch.autograd.grad(z.imag, list(model.parameters()))
        rows.append(torch.complex(torch.cat([g.reshape(-1) for g in re]), torch.cat([g.reshape(-1) for g in im])))
    o = torch.stack(rows)  # (U, P) complex128
    return model, bits, w, e_loc, mean, grad, o


@pytest.mark.parametrize("ansatz", ["made", "transformer", "retnet"])
def test_update_equals_the_enumerated_natural_gradient(problems, ansatz):
    p = problems("LiH")
    model, bits, w, e_loc, mean, grad, o = exact_quantities(p, ansatz)
    centred = o - (w[:, None] * o).sum(0)
    s = ((centred.conj().T * w) @ centred).real  # (P, P): S_kl = Re sum_x w (O_k - <O_k>)* (O_l - <O_l>)
    f = (w[:, None] * centred.conj() * (e_loc - mean)[:, None]).sum(0).real
    assert torch.allclose(f, grad / 2, rtol=1e-9, atol=1e-12)  # the surrogate's gradient is 2 F
    jac = log_psi_jacobian(model, bits)
    dense = jac.dense()  # the two blocks, the structural zeros between them put back
    assert torch.allclose(torch.complex(dense[:, 0], dense[:, 1]), o, rtol=1e-9, atol=1e-12)
    assert o.imag[:, jac.index_modulus].abs().max() == 0 and o.real[:, jac.index_phase].abs().max() == 0
    for shift in (1e-2, 1e-4):
        reference = torch.linalg.solve(s + shift * torch.eye(s.shape[0], dtype=s.dtype), f)
        ours = natural_gradient(grad, jac, w, shift)
        assert torch.linalg.vector_norm(ours - reference) <= 1e-8 * torch.linalg.vector_norm(reference)
        assert metric_norm(ours, jac, w) == pytest.approx(float(torch.sqrt(ours @ s @ ours)), rel=1e-9)


def test_spring_solves_the_regularised_least_squares(problems):
    """SPRING: with momentum μ and the previous direction d_prev, (S + λ I) d = g/2 + λμ d_prev (dense float64
    solve over the enumerated sector), with rows limited too; μ = 0 or no previous direction is MinSR."""
    p = problems("LiH")
    model, bits, w, e_loc, mean, grad, o = exact_quantities(p, "retnet")
    top = torch.topk(w, 40).indices
    rows = o[top] - (w[top, None] / w[top].sum() * o[top]).sum(0)
    s = ((rows.conj().T * (w[top] / w[top].sum())) @ rows).real
    previous = torch.linspace(-1.0, 1.0, grad.numel(), dtype=grad.dtype)
    for shift in (1e-2, 1e-4):
        settings = SRSettings(shift=shift, shift_final=shift, trust=None, max_rows=40, momentum=0.9)
        ours, _ = sr_direction(model, bits, w, grad, settings, step=0, lr=0.1, previous=previous)
        reference = torch.linalg.solve(s + shift * torch.eye(s.shape[0], dtype=s.dtype), grad / 2 + shift * 0.9 * previous)
        assert torch.linalg.vector_norm(ours - reference) <= 1e-8 * torch.linalg.vector_norm(reference)
        minsr, _ = sr_direction(model, bits, w, grad, SRSettings(shift=shift, shift_final=shift, trust=None,
                                                                  max_rows=40), step=0, lr=0.1, previous=previous)
        fresh, _ = sr_direction(model, bits, w, grad, settings, step=0, lr=0.1)
        assert torch.equal(minsr, fresh)
        assert torch.linalg.vector_norm(ours - minsr) > 1e-3 * torch.linalg.vector_norm(minsr)  # the term acts
    # its trust region is in S + λ I: lr·√(dᵀSd + λ|d|²) ≤ trust
    tight = SRSettings(shift=1e-4, shift_final=1e-4, trust=1e-4, max_rows=40, momentum=0.9)
    d, info = sr_direction(model, bits, w, grad, tight, step=0, lr=0.1, previous=previous)
    assert info["scaled"] and info["metric_step"] == pytest.approx(1e-4)
    assert 0.1 * float(torch.sqrt(d @ s @ d + 1e-4 * d @ d)) == pytest.approx(1e-4, rel=1e-6)


def test_trust_region_and_row_limit(problems):
    p = problems("LiH")
    model, bits, w, e_loc, mean, grad, o = exact_quantities(p, "retnet")
    settings = SRSettings(shift=1e-3, shift_final=1e-3, trust=1e-3, max_rows=50)
    d, info = sr_direction(model, bits, w, grad, settings, step=0, lr=0.1)
    assert info["rows"] == 50 and info["scaled"] and info["metric_step"] == pytest.approx(1e-3)
    top = torch.topk(w, 50).indices
    assert 0.1 * metric_norm(d, log_psi_jacobian(model, bits[top]), w[top]) == pytest.approx(1e-3, rel=1e-9)
    assert SRSettings(shift=1e-2, shift_final=1e-4, shift_steps=100).shift_at(50) == pytest.approx(1e-3)


def test_sr_training_is_deterministic_and_recorded(tmp_path):
    """Two same-seed SR runs give the same energies; the record names the optimiser and each step's shift."""
    from nqs.cli.train import main
    from nqs.record import read_metrics, read_summary

    args = ["--mol", "LiH", "--no-progress", "--unique", "100", "--samples", "1e6", "--final-unique", "200",
            "--optimizer", "sr", "--lr", "0.5", "--steps", "3", "--sr-rows", "32"]
    main([*args, "--out", str(tmp_path / "a")])
    main([*args, "--out", str(tmp_path / "b")])
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r.energy for r in a] == [r.energy for r in b]
    assert all(r.sr_shift is not None and r.sr_metric_step <= 0.1 + 1e-12 for r in a)
    assert a[-1].flops_step["natural_gradient"] > 0
    assert read_summary(tmp_path / "a").optimizer == "sr"
