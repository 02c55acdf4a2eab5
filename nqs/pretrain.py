"""Fit a network to a target state (`nqs.target_states`: CISD, CCSD or DMRG determinants) before VMC.

* `pretrain(model, target, steps, lr)`: Adam (on a stratified draw of `--init-batch` determinants a step when the
  target has more: the largest half always, the rest drawn in proportion to c², which keeps both sums unbiased)
  on the modulus and the phases separately (`split_loss`): the cross-entropy −Σ_k c_k² log p_θ(x_k) (the KL
  divergence from the target's distribution, up to its entropy)
  plus −log of the phases' mean resultant length |Σ_k c_k² exp(i(φ_θ(x_k) − arg c_k))| / Σ_k c_k² (1 when
  every phase matches up to a global one). Progress is reported as the fidelity F = |Σ_k c_k ψ_θ(x_k)|² of the
  normalised model with the normalised target. The fit keeps the weights of its lowest check on a fixed batch,
  and undoes a collapse of the phases (a sudden loss of fidelity at a rate that suits the moduli) by going back to
  them at half the rate.

Why not Adam on −log F: its gradient with respect to a determinant's modulus has the sign of cos(phase error),
so where the phase network starts wrong F is raised by emptying the determinant rather than turning its phase,
and once p(x) ≈ 0 neither gradient (both ∝ |ψ(x)|) brings it back. Fitting H6's FCI vector over the whole
sector, −log F stalled at F = 0.980 (+38 mHa) with determinants of FCI weight 3.4e-3 each at p < 1e-10; the split
loss, whose gradients do not vanish with p, reached 0.9993 (+1.5 mHa) (`scripts/sector_capacity.py`;
docs/benchmarks.md, "The sign trap").
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from nqs.errors import UserError
from nqs.target_states import TargetState
from nqs.training.schedules import cosine


def _amplitude_pairs(model: torch.nn.Module, target: TargetState, chunk: int):
    """(c, ψ_θ) over the target's determinants, `chunk` at a time: both (≤ chunk,) complex128 on the model's
    device (differentiable in ψ_θ)."""
    device = next(model.parameters()).device
    for i in range(0, target.bits.shape[0], chunk):
        psi = torch.exp(model.log_psi(target.bits[i:i + chunk].to(device)).to(torch.complex128))
        yield target.amplitudes[i:i + chunk].to(device).to(torch.complex128), psi


@torch.no_grad()
def amplitudes_on(model: torch.nn.Module, bits: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """ψ_θ (K,) complex128 on the CPU of `model` on `bits` (K, n), `chunk` determinants a forward pass: normalised
    over the whole sector, not over the set."""
    device = next(model.parameters()).device
    return torch.cat([torch.exp(model.log_psi(bits[i:i + chunk].to(device)).to(torch.complex128)).cpu()
                      for i in range(0, bits.shape[0], chunk)])


def amplitudes_and_mass_gradient(model: torch.nn.Module, bits: torch.Tensor, chunk: int = 1 << 14
                                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ψ_θ (K,) as `amplitudes_on`, and ∇M_S, the gradient of the model's probability on the set,
    M_S = Σ_S |ψ_θ|² (one tensor per parameter): what the control variate's batches estimate (`control_term`),
    for a fit to take off again. One forward and backward pass over the set, `chunk` determinants at a time."""
    device = next(model.parameters()).device
    params = [w for w in model.parameters() if w.requires_grad]
    total = [torch.zeros_like(w) for w in params]
    psi = []
    for i in range(0, bits.shape[0], chunk):
        log_psi = model.log_psi(bits[i:i + chunk].to(device))
        for t, g in zip(total, torch.autograd.grad(torch.exp(2 * log_psi.real).sum(), params, allow_unused=True)):
            if g is not None:
                t += g
        psi.append(torch.exp(log_psi.detach().to(torch.complex128)).cpu())
    return torch.cat(psi), total


def snapshot(model: torch.nn.Module) -> dict:
    """A detached copy of the model's weights (to keep the best seen and load them back)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fidelity(model: torch.nn.Module, target: TargetState, chunk: int = 1 << 15) -> torch.Tensor:
    """|Σ_k c_k ψ_θ(x_k)|² for the normalised target c (differentiable; float64), `chunk` determinants a pass."""
    return sum((c * psi).sum() for c, psi in _amplitude_pairs(model, target, chunk)).abs() ** 2


@torch.no_grad()
def fit_quality(model: torch.nn.Module, target: TargetState, chunk: int = 1 << 15) -> dict:
    """Where a fit falls short, over the normalised target c: "fidelity" |Σ_k c_k ψ_θ(x_k)|²; "moduli"
    (Σ_k |c_k| |ψ_θ(x_k)|)², the fidelity the model's moduli allow were every phase right (so fidelity < moduli
    is the phases' share of the loss); "mass" Σ_k |ψ_θ(x_k)|², the model's probability on the target's
    determinants (moduli ≤ mass by Cauchy–Schwarz)."""
    overlap = moduli = mass = 0.0
    for c, psi in _amplitude_pairs(model, target, chunk):
        overlap, moduli = overlap + (c * psi).sum(), moduli + (c.abs() * psi.abs()).sum()
        mass = mass + (psi.abs() ** 2).sum()
    return {"fidelity": float(abs(overlap)) ** 2, "moduli": float(moduli) ** 2, "mass": float(mass)}


def _phase(c: torch.Tensor) -> torch.Tensor:
    """The target amplitudes' phases (K,): arg c, or 0 / π for real amplitudes."""
    return c.angle() if c.is_complex() else torch.where(c < 0, torch.pi, 0.0)


def split_loss(log_psi: torch.Tensor, amplitudes: torch.Tensor, rest: float = 0.0,
               probability: torch.Tensor | None = None) -> torch.Tensor:
    """The fit's loss for a model's log ψ (K,) (complex, with grad) on the target's determinants, the target's
    amplitudes (K,) (real or complex, any scale) and `rest`, the target's probability outside them on the scale
    of Σ|c|²: cross-entropy of the modulus over the K determinants and the rest (its model probability
    1 − Σ_K p_θ), plus −log of the phases' mean resultant length. Float64; 0 only when p_θ matches |c|² and
    every phase matches up to one global phase.

    With `probability` (K,), q_k = |c_k|²/Σ|c|² of each determinant in the whole target (a batch's: `rest` 0),
    the value is the same and the gradient is that of the cross-entropy plus the model's probability on the
    target's determinants, M_S = Σ_S p_θ, whose batch estimate weights each determinant by (1 − p_θ/q) instead
    of 1 (`control_term`). A fit using it takes off ∇M_S, computed over the whole set
    (`amplitudes_and_mass_gradient`), as `nqs.imaginary_time` does: without that it would minimise CE + M_S,
    which does not hold the model's probability on S (H16: it fell from 0.99978 to 0.99972 in 1,500 steps)."""
    log_psi = log_psi.to(torch.complex128)
    c = amplitudes.to(log_psi.device)
    weight = c.abs().to(torch.float64) ** 2
    total = weight.sum() + rest
    modulus = -(weight * 2 * log_psi.real).sum() / total
    if rest > 0:
        if probability is not None:
            raise ValueError("the control variate needs a target whole on its determinants (rest 0)")
        inside = torch.exp(2 * log_psi.real).sum()
        modulus = modulus - rest / total * torch.log((1 - inside).clamp_min(1e-300))
    if probability is not None:
        modulus = modulus + control_term(log_psi, weight, total, probability)
    phase_error = log_psi.imag - _phase(c)
    resultant = torch.complex(weight * torch.cos(phase_error), weight * torch.sin(phase_error)).sum().abs()
    return modulus - torch.log((resultant / weight.sum()).clamp_min(1e-300))


def control_term(log_psi: torch.Tensor, weight: torch.Tensor, total: torch.Tensor, probability: torch.Tensor
                 ) -> torch.Tensor:
    """A term of value 0 whose gradient is the batch's estimate of ∇M_S = Σ_S p_θ ∇log p_θ (weights w_k/total
    estimate q_k, so (w_k/total)(p_θ/q_k) estimates p_θ). Added to the cross-entropy's −Σ_k (w_k/total) ∇log p_θ,
    each determinant weighs (w_k/total)(1 − p_θ/q_k): the estimate's noise vanishes as the fit converges, where
    the cross-entropy's alone stays at the Fisher information's (the noise floor of a fit on batches)."""
    p = torch.exp(2 * log_psi.real.detach())
    term = (weight / total * p / probability.to(weight.device) * 2 * log_psi.real).sum()
    return term - term.detach()


def fit_loss(model: torch.nn.Module, target: TargetState) -> torch.Tensor:
    """`split_loss` of the model on the target's determinants (the target normalised, nothing outside)."""
    return split_loss(model.log_psi(target.bits.to(next(model.parameters()).device)), target.amplitudes,
                      probability=target.probability)


FIT_CHUNK = 4096  # determinants per forward and backward pass of the fit: its memory, not its result


def fit_gradient(model: torch.nn.Module, target: TargetState, chunk: int = FIT_CHUNK) -> float:
    """Accumulate the gradient of `fit_loss` into the parameters' .grad, `chunk` determinants at a time, and
    return the loss. Exact: the modulus term is a sum over determinants; the phase term −log|R|, R = Σ_k w_k
    e^{iΔφ_k}, has the gradient −Re(R̄ ∂R)/|R|², so a first pass without gradients gives R and each chunk then
    back-propagates −Re(R̄ Σ_chunk w_k e^{iΔφ_k})/|R|². Memory: the activations of one chunk (H32's 47,489 CISD
    determinants, RetNet d_model 32: a two-step fit peaked at 8.9 GiB in one pass, 3.7 GiB in chunks)."""
    device = next(model.parameters()).device
    bits = target.bits.to(device)
    if bits.shape[0] <= chunk:
        loss = fit_loss(model, target)
        if torch.isfinite(loss):
            loss.backward()
        return float(loss.detach())
    c = target.amplitudes.to(device)
    weight = c.abs().to(torch.float64) ** 2
    total, wanted = weight.sum(), _phase(c)
    parts = range(0, bits.shape[0], chunk)
    with torch.no_grad():
        log_psi = torch.cat([model.log_psi(bits[i:i + chunk]).to(torch.complex128) for i in parts])
        resultant = (weight * torch.exp(1j * (log_psi.imag - wanted))).sum()
        loss = split_loss(log_psi, c)
    q = target.probability
    if not torch.isfinite(loss):
        return float(loss)
    for i in parts:
        lp = model.log_psi(bits[i:i + chunk]).to(torch.complex128)
        w, phase = weight[i:i + chunk], torch.exp(1j * (lp.imag - wanted[i:i + chunk]))
        surrogate = (-(w * 2 * lp.real).sum() / total
                     - (resultant.conj() * (w * phase).sum()).real / resultant.abs() ** 2)
        if q is not None:
            surrogate = surrogate + control_term(lp, w, total, q[i:i + chunk])
        surrogate.backward()
    return float(loss)


FIT_BATCH = 4096  # determinants a fit step reads at most (H16's CCSD state: 451,103)
CHECK_BATCH = 16384  # determinants of the fixed batch the fit is checked on
CHECK_EVERY = 100  # steps between checks
CHECK_RISE = 0.01  # nats: a check this far above the best is a collapse (H16: 0.004 → 0.5 in < 1,000 steps)


class StratifiedSampler:
    """Draws a target's stratified batches of `size` determinants: its size/2 largest with their amplitudes and
    size/2 drawn from the rest in proportion to |c|² (with replacement), each drawn one with amplitude
    sgn(c)·√(W_rest/(size/2)) (sgn c = c/|c|, for real or complex targets), W_rest the rest's weight: every
    weighted sum over a batch is then an unbiased estimate of the sum over the target. The head and the rest's
    cumulative weights are found once, on the target's device, so a draw costs O(size log K) (H16's 1,256,599 DMRG
    determinants: one `stratified_batch` call took 18 ms on one core, most of it finding the head again). Batches
    are not normalised (`split_loss` takes any scale). With `control`, each batch carries its determinants'
    probabilities in the target (`TargetState.probability`), and the fit subtracts its control variate."""

    def __init__(self, target: TargetState, size: int = FIT_BATCH, control: bool = False):
        self.target, self.size = target, size
        self.probability = None
        if control:
            weight = target.amplitudes.abs().to(torch.float64) ** 2
            self.probability = weight / weight.sum()
        if target.bits.shape[0] <= size:
            return
        c = target.amplitudes
        self.head = torch.topk(c.abs(), size // 2).indices
        rest = c.abs().to(torch.float64) ** 2
        rest[self.head] = 0
        self.cumulative = torch.cumsum(rest, 0)
        self.scale = math.sqrt(float(self.cumulative[-1]) / (size - self.head.numel()))

    def draw(self, generator: torch.Generator | None = None) -> TargetState:
        """One batch (the target itself when it has ≤ size determinants); `generator`, or torch's global one on
        the target's device, draws it."""
        t = self.target
        if t.bits.shape[0] <= self.size:
            return t if self.probability is None else replace(t, probability=self.probability)
        device, n = t.amplitudes.device, self.size - self.head.numel()
        u = torch.rand(n, dtype=torch.float64, generator=generator,
                       device=device if generator is None else generator.device).to(device)
        drawn = torch.searchsorted(self.cumulative, u * self.cumulative[-1], right=True)
        drawn = drawn.clamp_max(t.bits.shape[0] - 1)
        c = t.amplitudes
        amplitudes = torch.cat([c[self.head], torch.sgn(c[drawn]) * self.scale])  # sgn: ±1, or c/|c| if complex
        chosen = torch.cat([self.head, drawn])
        return TargetState(t.bits[chosen], amplitudes, t.energy, t.kind,
                           probability=None if self.probability is None else self.probability[chosen])


def stratified_batch(target: TargetState, size: int = FIT_BATCH, generator: torch.Generator | None = None
                     ) -> TargetState:
    """One `StratifiedSampler` batch of `size` determinants of `target` (for one draw; a fit keeps the sampler)."""
    return StratifiedSampler(target, size).draw(generator)


def check_loss(model: torch.nn.Module, check: TargetState, chunk: int = FIT_CHUNK) -> float:
    """`fit_loss` on the fixed batch `check`, without gradients, `chunk` determinants a pass."""
    bits = check.bits.to(next(model.parameters()).device)
    with torch.no_grad():
        log_psi = torch.cat([model.log_psi(bits[i:i + chunk]) for i in range(0, bits.shape[0], chunk)])
        return float(split_loss(log_psi, check.amplitudes))


def fit_rate(lr: float, lr_final: float | None, step: int, steps: int, seconds: float = 0.0,
             max_seconds: float | None = None) -> float:
    """The fit's learning rate at `step` (from 1) of `steps`, `seconds` into a budget of `max_seconds`: `lr`, or
    a cosine from `lr` at the start to `lr_final` at the end of the steps or of the seconds, whichever is nearer."""
    if lr_final is None:
        return lr
    progress = (step - 1) / (steps - 1) if steps > 1 else 0.0
    if max_seconds is not None:
        progress = max(progress, min(1.0, seconds / max_seconds))
    return cosine(lr, lr_final, progress)


def pretrain(model: torch.nn.Module, target: TargetState, steps: int, lr: float = 1e-3, report=None,
             lr_final: float | None = None, batch: int | None = None, max_seconds: float | None = None) -> dict:
    """Adam on `fit_loss` (gradients from `fit_gradient`; on a stratified batch of `batch` determinants, default
    FIT_BATCH, each step when the target has more: `StratifiedSampler`) for `steps` steps or until `max_seconds`
    have passed, whichever comes first (learning rate `lr`, or from `lr` down a cosine to `lr_final` at the end,
    over the steps or the seconds, whichever runs out sooner: the batches' noise then averages out instead of
    setting a floor). The target is moved to the model's device once.

    Every CHECK_EVERY steps, and at the last, the loss on one fixed stratified batch of CHECK_BATCH determinants
    is checked: the weights of the lowest check are kept and are the fit's result. A check more than CHECK_RISE
    above the lowest is a collapse (the phase network's, in practice: H16's DMRG fit fell from fidelity 0.993 to
    0.59 within 1,000 steps at the rate that fits it fastest, its moduli untouched); the fit then goes back to the
    kept weights with fresh Adam moments at half its learning rate.

    Returns {"fidelity_start", "fidelity", "moduli", "mass", "steps", "seconds", "lr", "lr_final", "best_step",
    "restarts", "lr_scale", "batch", "max_seconds", "timed_out"}: the fidelity over the whole target before the
    first step and of the kept weights, their `fit_quality`, the steps made, the step the kept weights come from,
    the collapses met, the rate's factor at the end, and whether the seconds ended the fit.
    `report(step, loss, seconds)`, when given, is called after each step."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    target = replace(target, bits=target.bits.to(device), amplitudes=target.amplitudes.to(device))
    batch = FIT_BATCH if batch is None else batch
    sampler = StratifiedSampler(target, batch)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    check = StratifiedSampler(target, CHECK_BATCH).draw(torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = float(fidelity(model, target))
    best = (check_loss(model, check), 0, snapshot(model))
    scale, restarts, step, timed_out = 1.0, 0, 0, False
    while step < steps and not timed_out:
        step += 1
        rate = fit_rate(lr, lr_final, step, steps, time.perf_counter() - start, max_seconds)
        for group in optimiser.param_groups:
            group["lr"] = scale * rate
        optimiser.zero_grad(set_to_none=True)
        loss = fit_gradient(model, sampler.draw())
        if not math.isfinite(loss):
            raise UserError("--init-state: the fit became non-finite: lower --init-lr")
        optimiser.step()
        if report is not None:
            report(step, loss, time.perf_counter() - start)
        timed_out = max_seconds is not None and time.perf_counter() - start >= max_seconds and step < steps
        last = step == steps or timed_out
        if step % CHECK_EVERY and not last:
            continue
        value = check_loss(model, check)
        if value < best[0]:
            best = (value, step, snapshot(model))
        elif value > best[0] + CHECK_RISE and not last:
            model.load_state_dict(best[2])
            optimiser.state.clear()
            scale, restarts = scale / 2, restarts + 1
    model.load_state_dict(best[2])
    return {"fidelity_start": first, **fit_quality(model, target), "steps": step,
            "seconds": time.perf_counter() - start, "lr": lr, "lr_final": lr_final, "best_step": best[1],
            "restarts": restarts, "lr_scale": scale, "batch": min(batch, target.bits.shape[0]),
            "max_seconds": max_seconds, "timed_out": timed_out}


def describe(target: TargetState, info: dict, e_hf: float | None) -> str:
    """One line for the notes: what was fitted and how well."""
    hf = "" if e_hf is None else f" ({1000 * (target.energy - e_hf):+.3f} mHa from HF)"
    decay = "" if info.get("lr_final") is None else f" (lr {info['lr']:g} -> {info['lr_final']:g}, cosine)"
    n = info["restarts"]
    restarts = (f"; {n} collapse{'s' if n > 1 else ''} of the fit undone, each by going back to the lowest check's "
                f"weights at half the learning rate" if n else "")
    k = target.bits.shape[0]
    batches = f" on stratified batches of {info['batch']:,}" if info.get("batch", k) < k else ""
    budget = ("" if info.get("max_seconds") is None else
              f", stopped by its {info['max_seconds']:g} s budget" if info.get("timed_out") else
              f", within its {info['max_seconds']:g} s budget")
    return (f"initial state: the network was fitted to the {target.kind.upper()} state ({target.bits.shape[0]:,} "
            f"determinants{target.detail}, E = {target.energy:.8f} Ha{hf}) for {info['steps']} Adam "
            f"step{'s' if info['steps'] != 1 else ''}{batches}{decay}{budget} in "
            f"{info['seconds']:.1f} s: fidelity {info['fidelity_start']:.4f} -> {info['fidelity']:.4f} (the moduli "
            f"alone {info['moduli']:.4f}; the model's probability on these determinants {info['mass']:.4f}); the "
            f"weights of step {info['best_step']} kept (the lowest check){restarts}")

