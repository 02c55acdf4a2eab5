"""A limit on the probability an SR step moves into configurations that none of its rows constrained.

The trust region of `nqs.natural_gradient` bounds a step in the metric of the sampled configurations, centred
and renormalised over them; it does not see probability that leaves them. The model is normalised, so what
leaves the sample and the tail rows (`nqs.sr_tail`) goes to configurations no row of the step constrained. On
N2 at a cap of 200 unique samples, d_model-8 RetNets with tail rows did exactly that: the kept mass fell from
0.99998 to 0.85 and the energy jumped by up to 38 Ha within single steps; with at most 1e-5 of probability
leaving per step, the same runs (seeds 0 and 2) ended at +7.5 and +3.2 mHa without an excursion above +65 mHa
(docs/scaling.md, "E3 with tail rows and a leak limit"). After the direction is chosen, the step is evaluated
on those configurations (one forward pass over them per try) and halved until the leak is within the limit.
"""
from __future__ import annotations

import torch
from torch.nn.utils import parameters_to_vector


def _assign(params: list, flat: torch.Tensor) -> None:
    """Copy `flat` (P,) into the parameters in place (torch's vector_to_parameters rebinds .data instead)."""
    offset = 0
    for p in params:
        p.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


@torch.no_grad()
def limit_leak(model: torch.nn.Module, bits: torch.Tensor, direction: torch.Tensor, lr: float, max_leak: float,
               before: float | None = None, max_halvings: int = 8) -> tuple[torch.Tensor, int, float]:
    """Halve the step θ → θ − lr·d (`direction` d, (P,)) until the probability that leaves the configurations
    `bits` (U, n), Σ|ψ_θ|² − Σ|ψ_θ'|² over them, is at most `max_leak`; after `max_halvings` the smallest step
    is kept. `before`: Σ|ψ_θ|² over `bits` when the caller has it (else one forward pass here). Returns (the
    direction, the halvings, the leak of the step returned). The model's parameters are as they were on
    return."""
    params = list(model.parameters())
    start = parameters_to_vector(params)
    mass = lambda: float(torch.exp(2 * model.log_psi(bits).real.to(torch.float64)).sum())  # noqa: E731
    if before is None:
        before = mass()
    for halvings in range(max_halvings + 1):
        _assign(params, start - lr * direction.to(start.dtype))
        leak = before - mass()
        if leak <= max_leak or halvings == max_halvings:
            break
        direction = direction / 2
    _assign(params, start)
    return direction, halvings, leak
