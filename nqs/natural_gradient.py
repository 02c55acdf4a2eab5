"""Stochastic reconfiguration (natural gradient) in the minimum-step form, for real parameters and complex log ψ.

With unique samples x_i of weights w_i (Σ w = 1) and O_ik = ∂ log ψ(x_i) / ∂θ_k, the centred, weighted
Jacobian stacks real and imaginary parts, J = [Re Ō; Im Ō] (2U × P) with Ō_ik = √w_i (O_ik − Σ_j w_j O_jk).
The quantum geometric tensor is S = JᵀJ (P × P) and the natural-gradient step solves (S + λ I) d = g / 2 for
the energy gradient g (= 2 Re Σ w (E_loc − E)* O, what `nqs.vmc.surrogate_loss` differentiates to). With
P ≫ U this is done in sample space (Woodbury; MinSR, Chen & Heyl 2024):

    d = (g/2 − Jᵀ (J Jᵀ + λ I)⁻¹ J g/2) / λ,

a (2U × 2U) solve. J is built from the `max_rows` unique samples of largest weight (all of them when U is
smaller): g keeps every sample, the curvature comes from the configurations that carry the probability. When
all samples are used this is exactly MinSR's Jᵀ(JJᵀ + λI)⁻¹ ε̄. The step is limited to a trust region in the
metric S: lr·√(dᵀ S d) ≤ `trust` (a bound on the Fubini–Study distance moved), and the diagonal shift falls
geometrically from `shift` to `shift_final` over `shift_steps` steps.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.func import functional_call, jacrev, vmap


@dataclass(frozen=True)
class SRSettings:
    """Diagonal shift λ (falls geometrically from `shift` to `shift_final` over `shift_steps`), the trust
    region `trust` (None: off) and the number of Jacobian rows (unique samples) `max_rows`."""

    shift: float = 1e-3
    shift_final: float = 1e-4
    shift_steps: int = 500
    trust: float | None = 0.1
    max_rows: int = 512
    chunk: int = 256  # samples per vmapped Jacobian call (memory: chunk × 2 × P numbers)

    def shift_at(self, step: int) -> float:
        frac = min(step / max(self.shift_steps, 1), 1.0)
        return self.shift * (self.shift_final / self.shift) ** frac


def _sdpa_math():
    """Scaled-dot-product attention decomposed into primitives: vmap has batching rules for those only."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # pragma: no cover - older torch
        return nullcontext()


def log_psi_jacobian(model: torch.nn.Module, bits: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """∂(Re, Im) log ψ / ∂θ for each configuration: (U, n) bits -> (U, 2, P) in the parameters' dtype, the
    parameters in `model.parameters()` order."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, x):
        z = functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)
        return torch.stack([z.real, z.imag])

    rows = []
    jac_one = vmap(jacrev(one), in_dims=(None, 0))
    with _sdpa_math():
        for start in range(0, bits.shape[0], chunk):
            j = jac_one(params, bits[start:start + chunk])
            rows.append(torch.cat([j[k].reshape(j[k].shape[0], 2, -1) for k in params], dim=-1))
    return torch.cat(rows)


def centred_jacobian(jac: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """J (2U, P) from per-sample gradients (U, 2, P): rows √w_i (O_i − Σ_j w_j O_j), real and imaginary part
    of each sample in turn; weights renormalised to sum 1 over these rows. In the Jacobian's dtype."""
    w = (weights / weights.sum()).to(jac.dtype)
    centred = (jac - torch.einsum("u,ukp->kp", w, jac)) * w.sqrt()[:, None, None]
    return centred.reshape(-1, jac.shape[-1])


def natural_gradient(grad: torch.Tensor, jac: torch.Tensor, weights: torch.Tensor, shift: float) -> torch.Tensor:
    """d = (S + λ I)⁻¹ g / 2 with S = JᵀJ from the rows of `jac` (U, 2, P) and weights (U,), via the (2U × 2U)
    Woodbury solve. grad (P,) is the full energy gradient. The products with J run in the Jacobian's dtype (a
    float32 Gram matrix errs by ~1e-7 relative, far below the shift), the small solve in float64."""
    return _woodbury(grad, centred_jacobian(jac, weights), shift)


def _woodbury(grad: torch.Tensor, j: torch.Tensor, shift: float) -> torch.Tensor:
    f = grad.to(j.dtype) / 2
    small = (j @ j.T).to(torch.float64)
    small.diagonal().add_(shift)
    inner = torch.linalg.solve(small, (j @ f).to(torch.float64)).to(j.dtype)
    return (f - j.T @ inner) / shift


def metric_norm(direction: torch.Tensor, jac: torch.Tensor, weights: torch.Tensor) -> float:
    """√(dᵀ S d) with S = JᵀJ from `jac` (U, 2, P), weights renormalised over the rows."""
    j = centred_jacobian(jac, weights)
    return float(torch.linalg.vector_norm((j @ direction.to(j.dtype)).to(torch.float64)))


def sr_direction(model: torch.nn.Module, bits: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor,
                 settings: SRSettings, step: int, lr: float) -> tuple[torch.Tensor, dict]:
    """The SR update direction (P,) for `grad` (P,), scaled into the trust region for learning rate `lr`, and
    what was done: {"shift", "rows", "metric_step", "scaled"}."""
    k = min(settings.max_rows, bits.shape[0])
    top = torch.topk(weights, k).indices if k < bits.shape[0] else torch.arange(bits.shape[0], device=bits.device)
    j = centred_jacobian(log_psi_jacobian(model, bits[top], settings.chunk), weights[top])
    shift = settings.shift_at(step)
    d = _woodbury(grad, j, shift)
    norm = lr * float(torch.linalg.vector_norm((j @ d).to(torch.float64)))
    scale = 1.0
    if settings.trust is not None and norm > settings.trust:
        scale = settings.trust / norm
    info = {"shift": shift, "rows": k, "metric_step": norm * scale, "scaled": scale < 1.0}
    return (d * scale).to(grad.dtype), info


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in model.parameters()])


def set_flat_grad(model: torch.nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    for p in model.parameters():
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
    assert offset == flat.numel()
