"""Limits on what an SR step does to the state, checked on the step itself rather than its linearisation.

The trust region of `nqs.natural_gradient` bounds a step in the metric of the sampled configurations, centred
and renormalised over them: lr·√(dᵀ S d) is the Fubini–Study distance the step would move *if the network
responded linearly*. Two things escape it, and both were seen:
- **Leak.** The model is normalised, so what leaves the sample and the tail rows (`nqs.sr_tail`) goes to
  configurations no row of the step constrained. On N2 at a cap of 200 unique samples, d_model-8 RetNets with
  tail rows did exactly that: the kept mass fell from 0.99998 to 0.85 and the energy jumped by up to 38 Ha
  within single steps; with at most 1e-5 of probability leaving per step, the same runs (seeds 0 and 2) ended at
  +7.5 and +3.2 mHa without an excursion above +65 mHa (docs/scaling.md, "E3 with tail rows and a leak limit").
- **A non-linear response.** On H2O a d_model-8 RetNet took a step of linearised length 0.013 (trust 0.05) with
  no leak, and the energy rose from +1 to +202 mHa (docs/scaling.md, "E3 with tail rows: all four molecules").
  The realised distance, arccos of the fidelity between the states before and after the step restricted to the
  fitted configurations, measures what the step did; `max_distance` bounds it. On the N2 RetNet defaults one
  step of linearised length 0.006 moved 1.41 rad (+1.84 Ha); with 0.1 rad the SR-phase excursions of three seeds
  stayed below +32 mHa (docs/benchmarks.md, "Time to accuracy", session 11).
After the direction is chosen, the step is evaluated on those configurations (one forward pass over them per
try) and halved until both limits hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.utils import parameters_to_vector


@dataclass(frozen=True)
class CheckedStep:
    """direction (P,) to take; halvings applied; leak = Σ|ψ_θ|² − Σ|ψ_θ'|² over the configurations; distance:
    the realised Fubini–Study distance arccos(|⟨ψ_θ|ψ_θ'⟩| / ‖ψ_θ‖‖ψ_θ'‖) over them (radians); evaluations:
    the configurations' log ψ evaluated (one forward pass over them per try)."""

    direction: torch.Tensor
    halvings: int
    leak: float
    distance: float
    evaluations: int


def _assign(params: list, flat: torch.Tensor) -> None:
    """Copy `flat` (P,) into the parameters in place (torch's vector_to_parameters rebinds .data instead)."""
    offset = 0
    for p in params:
        p.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def _distance(before: torch.Tensor, after: torch.Tensor) -> float:
    """Fubini–Study distance between the states with log amplitudes `before` and `after` (U,) complex128."""
    shift = before.real.max()  # a common scale: the ratio is unchanged, the sums stay in range
    psi, phi = torch.exp(before - shift), torch.exp(after - shift)
    overlap = (psi.conj() * phi).sum().abs() / torch.sqrt((psi.abs() ** 2).sum() * (phi.abs() ** 2).sum())
    return math.acos(min(1.0, float(overlap)))


@torch.no_grad()
def limit_step(model: torch.nn.Module, bits: torch.Tensor, direction: torch.Tensor, lr: float,
               max_leak: float | None, max_distance: float | None, log_psi: torch.Tensor | None = None,
               max_halvings: int = 8) -> CheckedStep:
    """Halve the step θ → θ − lr·d (`direction` d, (P,)) until, over the configurations `bits` (U, n), the leak
    is at most `max_leak` and the realised distance at most `max_distance` (None: that limit off); after
    `max_halvings` the smallest step is kept. `log_psi` (U,) complex: log ψ_θ(bits) when the caller has it (else
    one forward pass here). The model's parameters are as they were on return."""
    params = list(model.parameters())
    start = parameters_to_vector(params)
    evaluations = 0
    if log_psi is None:
        log_psi, evaluations = model.log_psi(bits), bits.shape[0]
    before = log_psi.to(torch.complex128)
    mass_before = float(torch.exp(2 * before.real).sum())
    for halvings in range(max_halvings + 1):
        _assign(params, start - lr * direction.to(start.dtype))
        after = model.log_psi(bits).to(torch.complex128)
        evaluations += bits.shape[0]
        leak = mass_before - float(torch.exp(2 * after.real).sum())
        distance = _distance(before, after)
        within = (max_leak is None or leak <= max_leak) and (max_distance is None or distance <= max_distance)
        if within or halvings == max_halvings:
            break
        direction = direction / 2
    _assign(params, start)
    return CheckedStep(direction, halvings, leak, distance, evaluations)
