"""Stochastic reconfiguration (natural gradient) in the minimum-step form, for real parameters and complex log ψ.

With unique samples x_i of weights w_i (Σ w = 1) and O_ik = ∂ log ψ(x_i) / ∂θ_k, the centred, weighted
Jacobian stacks real and imaginary parts, J = [Re Ō; Im Ō] (2U × P) with Ō_ik = √w_i (O_ik − Σ_j w_j O_jk).
The quantum geometric tensor is S = JᵀJ (P × P) and the natural-gradient step solves (S + λ I) d = g / 2 for
the energy gradient g (= 2 Re Σ w (E_loc − E)* O, what `nqs.vmc.surrogate_loss` differentiates to). The
modulus network moves only Re log ψ and the phase network only Im log ψ, so J = diag(Re Ō_mod, Im Ō_ph) and S
is block-diagonal: each block is solved on its own. With P ≫ U this is done in sample space (Woodbury; MinSR,
Chen & Heyl 2024):

    d_b = (g_b/2 − J_bᵀ (J_b J_bᵀ + λ I)⁻¹ J_b g_b/2) / λ    for b in (modulus, phase),

two (U × U) solves: a quarter of the Gram-matrix work of the stacked (2U × 2U) form and half of its reverse
passes, with the same result. J is built from the `max_rows` unique samples of largest weight (all of them when U is
smaller): g keeps every sample, the curvature comes from the configurations that carry the probability. When
all samples are used this is exactly MinSR's Jᵀ(JJᵀ + λI)⁻¹ ε̄. The step is limited to a trust region in the
metric S: lr·√(dᵀ S d) ≤ `trust` (a bound on the Fubini–Study distance moved), and the diagonal shift falls
geometrically from `shift` to `shift_final` over `shift_steps` steps. With `momentum` μ > 0 the step is SPRING's
(Goldshmid et al., J. Comput. Phys. 2024): argmin_d |J d − ε|² + λ|d − μ d_prev|², i.e. (S + λ I) d = g/2 + λμ d_prev,
so the directions the sample's rows do not see keep μ times the previous step's (MinSR at μ = 0); its trust region
is then taken in S + λ I, lr·√(dᵀSd + λ|d|²) ≤ `trust`, as SPRING's norm constraint is. Tail rows (`nqs.sr_tail`): rows for
configurations outside the sample, with log-space targets, stacked into the same solve (`_solve_with_tail`).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad as func_grad, vmap

from nqs.hilbert import bits_to_tokens


@dataclass(frozen=True)
class SRSettings:
    """Diagonal shift λ (falls geometrically from `shift` to `shift_final` over `shift_steps`), the trust
    region `trust` (None: off) and the number of Jacobian rows (unique samples) `max_rows`."""

    shift: float = 1e-3
    shift_final: float = 1e-4
    shift_steps: int = 500
    trust: float | None = 0.1
    max_rows: int = 512
    chunk: int = 256  # samples per vmapped Jacobian call (memory: chunk × P numbers)
    momentum: float = 0.0  # SPRING's μ: the previous direction's weight in the regulariser (0: MinSR)

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


@dataclass(frozen=True)
class Jacobian:
    """Per-sample log-derivatives of an ansatz, log ψ = ½ log p + iφ, in its two independent blocks: the
    modulus parameters move only Re log ψ and the phase network's only Im log ψ, so the other two blocks of
    ∂(Re, Im) log ψ / ∂θ are exactly zero and S = JᵀJ is block-diagonal. Rows in the parameters' dtype.

    modulus: (U, P_mod) ∂ Re log ψ / ∂θ_mod;  phase: (U, P_ph) ∂ φ / ∂θ_ph;  index_modulus, index_phase: their
    positions in the flat `model.parameters()` vector (P,)."""

    modulus: torch.Tensor
    phase: torch.Tensor
    index_modulus: torch.Tensor
    index_phase: torch.Tensor

    def dense(self) -> torch.Tensor:
        """(U, 2, P): Re and Im log ψ per parameter, zeros included (tests, small systems)."""
        u, p = self.modulus.shape[0], self.index_modulus.numel() + self.index_phase.numel()
        out = self.modulus.new_zeros(u, 2, p)
        out[:, 0, self.index_modulus] = self.modulus
        out[:, 1, self.index_phase] = self.phase
        return out


class _HalfLogProb(torch.nn.Module):
    """Re log ψ = ½ log p of an ansatz as a module call (for torch.func.functional_call)."""

    def __init__(self, ansatz: torch.nn.Module):
        super().__init__()
        self.ansatz = ansatz

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.ansatz.log_prob(bits_to_tokens(bits))


def _rows(module: torch.nn.Module, params: dict, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
    """(U, Σ numel) gradients of the scalar module(x) for each row x of inputs, w.r.t. `params` (in order)."""
    def one(p, x):
        return functional_call(module, p, (x.unsqueeze(0),)).squeeze(0)

    grad_one = vmap(func_grad(one), in_dims=(None, 0))
    rows = []
    for start in range(0, inputs.shape[0], chunk):
        g = grad_one(params, inputs[start:start + chunk])
        rows.append(torch.cat([g[k].reshape(g[k].shape[0], -1) for k in params], dim=-1))
    return torch.cat(rows)


def log_psi_jacobian(model: torch.nn.Module, bits: torch.Tensor, chunk: int = 256) -> Jacobian:
    """The two blocks of ∂ log ψ / ∂θ for each configuration of `bits` (U, n): one reverse pass per sample
    through the modulus network (Re) and one through the phase network (Im), vmapped in chunks of `chunk`."""
    names = [name for name, _ in model.named_parameters()]
    sizes = torch.tensor([q.numel() for q in model.parameters()])
    offsets = torch.cumsum(sizes, 0) - sizes
    is_phase = [name.startswith("phase_net.") for name in names]

    def index(select: bool) -> torch.Tensor:
        parts = [torch.arange(int(o), int(o + s)) for o, s, ph in zip(offsets, sizes, is_phase) if ph == select]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    params = dict(model.named_parameters())
    modulus = {"ansatz." + k: v.detach() for k, v, ph in zip(names, params.values(), is_phase) if not ph}
    phase = {k.removeprefix("phase_net."): v.detach() for k, v, ph in zip(names, params.values(), is_phase) if ph}
    with _sdpa_math():
        j_mod = _rows(_HalfLogProb(model), modulus, bits, chunk)
        j_ph = _rows(model.phase_net, phase, bits.to(next(model.parameters()).dtype), chunk)
    device = bits.device
    return Jacobian(j_mod, j_ph, index(False).to(device), index(True).to(device))


def centred_rows(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """√w_i (O_i − Σ_j w_j O_j) for rows (U, P) and weights (U,), renormalised to sum 1 over these rows."""
    w = (weights / weights.sum()).to(rows.dtype)
    return (rows - w @ rows) * w.sqrt()[:, None]


def _centred_blocks(jac: Jacobian, weights: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(centred rows (U, P_b), their positions (P_b,))] for the non-empty blocks."""
    return [(centred_rows(rows, weights), idx) for rows, idx in
            ((jac.modulus, jac.index_modulus), (jac.phase, jac.index_phase)) if idx.numel()]


def natural_gradient(grad: torch.Tensor, jac: Jacobian, weights: torch.Tensor, shift: float) -> torch.Tensor:
    """d = (S + λ I)⁻¹ g / 2 for the full energy gradient `grad` (P,), S = JᵀJ from the Jacobian's rows with
    weights (U,): S is block-diagonal (modulus, phase), so each block is one (U × U) Woodbury solve. The products
    with J run in the Jacobian's dtype (a float32 Gram matrix errs by ~1e-7 relative, far below the shift), the
    small solves in float64."""
    return _solve(grad, _centred_blocks(jac, weights), shift)


def _solve(grad: torch.Tensor, blocks: list, shift: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """(S + λ I)⁻¹ (g/2 + λ·prior) per block; `prior` (P,) is μ d_prev for SPRING, None for MinSR."""
    d = torch.zeros_like(grad)
    for j, idx in blocks:
        f = grad[idx].to(j.dtype) / 2
        d[idx] = _shifted_solve(f, j, shift, None if prior is None else prior[idx]).to(grad.dtype)
    return d


def _shifted_solve(f: torch.Tensor, j: torch.Tensor, shift: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """(JᵀJ + λ I)⁻¹ (f + λ·prior) for J (R, P), f and prior (P,), through the (R × R) system. The prior's part,
    prior − Jᵀ(JJᵀ + λ)⁻¹ J prior, is solved as a second right-hand side rather than added to f, where dividing
    by a small λ would amplify its rounding."""
    small = (j @ j.T).to(torch.float64)
    small.diagonal().add_(shift)
    rhs = f if prior is None else torch.stack([f, prior.to(j.dtype)], dim=1)
    inner = torch.linalg.solve(small, (j @ rhs).to(torch.float64)).to(j.dtype)
    out = rhs - j.T @ inner
    return out / shift if prior is None else out[:, 0] / shift + out[:, 1]


def _solve_with_tail(grad: torch.Tensor, jac: Jacobian, weights: torch.Tensor, tail_jac: Jacobian, tail,
                     lr: float, shift: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """argmin_d |J d − ε|² + Σ_t w_t |(O_t − Ō) d + target_t / lr|² + λ|d|² per block (modulus: Re targets,
    phase: Im), with Jᵀε = g/2 and the step −lr·d: (JᵀJ + J_tᵀJ_t + λ) d = g/2 − J_tᵀ b, b_t = √w_t target_t / lr,
    one stacked Woodbury solve (plus λ·prior on the right for SPRING)."""
    w = (weights / weights.sum())
    d = torch.zeros_like(grad)
    parts = ((jac.modulus, tail_jac.modulus, jac.index_modulus, tail.target.real),
             (jac.phase, tail_jac.phase, jac.index_phase, tail.target.imag))
    for rows, tail_rows, idx, target in parts:
        if not idx.numel():
            continue
        mean = w.to(rows.dtype) @ rows
        j = centred_rows(rows, w)
        root = tail.weights.sqrt().to(rows.dtype)
        j_tail = (tail_rows - mean) * root[:, None]
        f = grad[idx].to(rows.dtype) / 2 - j_tail.T @ (root * target.to(rows.dtype) / lr)  # the step is −lr·d
        d[idx] = _shifted_solve(f, torch.cat([j, j_tail]), shift,
                                None if prior is None else prior[idx]).to(grad.dtype)
    return d


def metric_norm(direction: torch.Tensor, jac: Jacobian, weights: torch.Tensor) -> float:
    """√(dᵀ S d) with S = JᵀJ from the Jacobian's rows, weights renormalised over the rows."""
    return _norm(direction, _centred_blocks(jac, weights))


def _norm(direction: torch.Tensor, blocks: list) -> float:
    return sum(float(torch.linalg.vector_norm((j @ direction[idx].to(j.dtype)).to(torch.float64))) ** 2
               for j, idx in blocks) ** 0.5


def sr_direction(model: torch.nn.Module, bits: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor,
                 settings: SRSettings, step: int, lr: float, tail=None,
                 previous: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The SR update direction (P,) for `grad` (P,), scaled into the trust region for learning rate `lr`, and
    what was done: {"shift", "rows", "tail_rows", "metric_step", "scaled"}. `previous` (P,): the direction the
    last SR step took (SPRING, when `settings.momentum` > 0). The centred Jacobian is built once
    for both. `tail` (`nqs.sr_tail.TailRows`): rows for configurations outside the sample, each asking
    lr·(O(x') − Ō)·d = its target with its weight; the trust region stays in the sample's metric (in S + λI
    with momentum)."""
    k = min(settings.max_rows, bits.shape[0])
    top = torch.topk(weights, k).indices if k < bits.shape[0] else torch.arange(bits.shape[0], device=bits.device)
    jac = log_psi_jacobian(model, bits[top], settings.chunk)
    blocks = _centred_blocks(jac, weights[top])
    shift = settings.shift_at(step)
    prior = None if previous is None or not settings.momentum else settings.momentum * previous.to(grad.dtype)
    if tail is None or not tail.bits.shape[0]:
        d = _solve(grad, blocks, shift, prior)
    else:
        d = _solve_with_tail(grad, jac, weights[top], log_psi_jacobian(model, tail.bits, settings.chunk), tail, lr,
                             shift, prior)
    norm = lr * _norm(d, blocks)
    if prior is not None:  # SPRING: the regularised metric S + λ I, so what the rows do not see is bounded too
        norm = (norm ** 2 + lr ** 2 * shift * float(torch.linalg.vector_norm(d.to(torch.float64))) ** 2) ** 0.5
    scale = 1.0
    if settings.trust is not None and norm > settings.trust:
        scale = settings.trust / norm
    info = {"shift": shift, "rows": k, "tail_rows": 0 if tail is None else int(tail.bits.shape[0]),
            "tail_evaluations": 0 if tail is None else tail.evaluations, "metric_step": norm * scale,
            "scaled": scale < 1.0}
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
