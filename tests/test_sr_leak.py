"""The limits on an SR step checked on the step itself (nqs.sr_leak): the probability it moves out of its sample
and tail rows (`--sr-max-leak`) against the sector's enumeration, its realised Fubini–Study distance
(`--sr-max-distance`) against a direct overlap, the halving, and a run that records both."""
from __future__ import annotations

import math

import torch

from torch.nn.utils import parameters_to_vector, vector_to_parameters

from nqs.sr_leak import limit_step


def _model_and_sample(problems):
    from nqs.models import build_model
    from tests.test_natural_gradient import SMALL

    p = problems("LiH")
    torch.manual_seed(3)
    model = build_model(SMALL["transformer"], p.sector).double()
    bits = p.sector.enumerate_bits()
    with torch.no_grad():
        prob = torch.exp(2 * model.log_psi(bits).real)
    assert abs(float(prob.sum()) - 1) < 1e-10  # normalised over the sector: what leaves S goes elsewhere in it
    sample = torch.argsort(prob, descending=True)[:30]
    mass = torch.exp(2 * model.log_psi(bits[sample]).real).sum()  # the step θ − lr·∇mass moves probability out
    direction = torch.cat([g.reshape(-1) for g in torch.autograd.grad(mass, list(model.parameters()))])
    return model, bits, sample, direction


def test_the_leak_is_the_probability_that_leaves_the_configurations(problems):
    model, bits, sample, direction = _model_and_sample(problems)
    start = parameters_to_vector(model.parameters())
    lr = 5.0
    free = limit_step(model, bits[sample], direction, lr, math.inf, None)
    leak = free.leak
    assert free.halvings == 0 and torch.equal(free.direction, direction) and free.evaluations == 2 * len(sample)
    assert torch.equal(parameters_to_vector(model.parameters()), start)
    with torch.no_grad():
        before = torch.exp(2 * model.log_psi(bits).real)
        vector_to_parameters(start - lr * direction, model.parameters())
        after = torch.exp(2 * model.log_psi(bits).real)
        vector_to_parameters(start, model.parameters())
    inside = torch.zeros(len(bits), dtype=torch.bool)
    inside[sample] = True
    assert abs(leak - float(before[inside].sum() - after[inside].sum())) < 1e-12
    assert abs(leak - float(after[~inside].sum() - before[~inside].sum())) < 1e-10  # where it went
    assert leak > 1e-3  # a random step of this size leaks: the limit below has something to do
    with torch.no_grad():
        log_psi = model.log_psi(bits[sample])
    given = limit_step(model, bits[sample], direction, lr, math.inf, None, log_psi)
    assert abs(given.leak - leak) < 1e-12 and given.evaluations == len(sample)  # log ψ from the caller: one pass less


def test_the_step_is_halved_until_the_leak_is_within_the_limit(problems):
    model, bits, sample, direction = _model_and_sample(problems)
    start = parameters_to_vector(model.parameters())
    limit = limit_step(model, bits[sample], direction, 5.0, math.inf, None).leak / 20
    limited = limit_step(model, bits[sample], direction, 5.0, limit, None)
    halvings = limited.halvings
    assert halvings >= 1 and torch.equal(limited.direction, direction / 2 ** halvings) and limited.leak <= limit
    previous = limit_step(model, bits[sample], direction / 2 ** (halvings - 1), 5.0, math.inf, None).leak
    assert previous > limit  # one halving fewer would not have done
    assert torch.equal(parameters_to_vector(model.parameters()), start)


def test_the_realised_distance_is_the_fubini_study_angle_and_bounds_the_step(problems):
    model, bits, sample, direction = _model_and_sample(problems)
    start = parameters_to_vector(model.parameters())
    lr = 5.0
    with torch.no_grad():
        psi = torch.exp(model.log_psi(bits[sample]).to(torch.complex128))
        vector_to_parameters(start - lr * direction, model.parameters())
        phi = torch.exp(model.log_psi(bits[sample]).to(torch.complex128))
        vector_to_parameters(start, model.parameters())
    fidelity = float((psi.conj() * phi).sum().abs() ** 2 / ((psi.abs() ** 2).sum() * (phi.abs() ** 2).sum()))
    free = limit_step(model, bits[sample], direction, lr, None, None)
    assert abs(math.cos(free.distance) ** 2 - fidelity) < 1e-10
    assert free.distance > 0.05  # this step moves the state: the limit below has something to do
    limited = limit_step(model, bits[sample], direction, lr, None, free.distance / 4)
    assert limited.halvings >= 1 and limited.distance <= free.distance / 4
    assert limit_step(model, bits[sample], direction / 2 ** (limited.halvings - 1), lr, None, None).distance \
        > free.distance / 4  # one halving fewer would not have done
    assert torch.equal(parameters_to_vector(model.parameters()), start)
    assert limit_step(model, bits[sample], 0 * direction, lr, None, None).distance < 1e-6  # no step: no distance


def test_a_run_with_a_leak_limit_records_it(tmp_path):
    from nqs.cli.train import main
    from nqs.record import read_metrics, read_summary

    out = tmp_path / "run"
    main(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "12", "--optimizer", "sr", "--sr-lr", "2",
          "--sr-trust", "1", "--sr-max-leak", "1e-6", "--sr-max-distance", "0.2", "--warmup", "0", "--unique", "16", "--samples", "1e6",
          "--final-unique", "500", "--out", str(out)])
    rows = read_metrics(out)
    assert all(r.sr_leak is not None and ((r.sr_leak <= 1e-6 and r.sr_distance <= 0.2) or r.sr_leak_halvings == 8)
               for r in rows)
    assert any(r.sr_leak_halvings for r in rows)
    assert math.isfinite(read_summary(out).energy)
