"""Lower a network's energy on a fixed set of determinants by projected imaginary time: refit it, again and
again, to φ = (1 − τ(H − E))ψ.

On a set S (e.g. a DMRG state's determinants, `nqs.target_states`) H is exact and kept as a sparse matrix
(`SubsetOperator`, from `nqs.exact.subset_hamiltonian`). Every `refresh` steps ψ, the network's amplitudes on S,
is evaluated on all of S; its energy E = ψ†Hψ/ψ†ψ is computed exactly; and the next steps fit the network to
φ = (1 − τ(H − E))ψ with the fit of `nqs.pretrain` (`split_loss` on stratified batches of φ, one Adam throughout).
For τ below 2/(E_max − E) the step lowers the energy: to first order by 2τ Var_S(H) (H16, 673,258 determinants,
session 26's network: +2.86 mHa against DMRG; φ at τ = 0.1, 0.2, 0.3: +1.69, +1.01, +0.79; at τ = 1: +12.4).
A fit cannot take the whole step: the network keeps what it can represent, and the weights of the lowest
refresh are the result.

With `control` each step's batch gradient carries a control variate (`nqs.pretrain.control_term`): a determinant
weighs (1 − p_θ/q) instead of 1, and ∇M_S of the model's probability on S, computed over all of S at the refresh
(one backward pass more: the refresh costs ~2×), is taken off, so the step is the plain fit's on average with
the batches' scatter cut by ~Σ q (1 − p_θ/q)² (H16 at +4.68 mHa, batches of 4,096: 8.7× less). Near a fit the
plain fit's steps are mostly noise (there: the mean gradient's square 3e-6 against one batch's scatter 4e-4).

Why not Adam along the energy's gradient with E_loc = Hψ/ψ from the last refresh (cheaper per step): a stale
gradient keeps pushing past the minimum (H16: +2.86 → +153.5 mHa in 100 steps at lr 2e-4), while the target φ
stays where it was put. This is supervised imaginary-time evolution (Kochkov & Clark 2018, arXiv:1811.12423;
Giuliani et al. 2023, PRB 107, 195158) with H exact on S instead of sampled.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from nqs.errors import UserError
from nqs.exact import subset_hamiltonian
from nqs.excitations import IntegralHamiltonian
from nqs.keys import pack
from nqs.pretrain import StratifiedSampler, amplitudes_and_mass_gradient, amplitudes_on, fit_gradient, snapshot
from nqs.target_states import TargetState
from nqs.training.schedules import cosine

class SubsetOperator:
    """H on a set of K determinants as CSR row parts (K_i x K each, rows in order), float32 or float64 values.
    `apply(v)` is Hv for a complex vector (the real and imaginary parts multiplied separately, or as two columns,
    so the values are never copied to complex); float32 values give energies to ~1e-6 relative (H16: 0.007 mHa).
    The parts are scipy matrices on the CPU, or, after `to(device)`, torch CSR tensors there, for a network on a
    GPU (H16's first quarter, 1.5e8 elements, on one CPU thread: scipy's two products 0.47 s, torch's one of two
    columns 0.33 s, the same sums; session 31)."""

    def __init__(self, parts: list[scipy.sparse.csr_matrix]):
        self.parts = parts
        self.size = sum(p.shape[0] for p in parts)
        self.elements = sum(p.nnz for p in parts)  # stored matrix elements
        self.tensors: list[torch.Tensor] | None = None  # the parts as torch CSR tensors, after `to`
        if any(p.shape[1] != self.size for p in parts):
            raise ValueError(f"the row parts ({[p.shape for p in parts]}) do not make a square matrix")

    def to(self, device: str | torch.device) -> "SubsetOperator":
        """The parts as torch CSR tensors on `device` (CPU included), in place; the scipy parts are dropped, so
        the host keeps no second copy."""
        def csr(p: scipy.sparse.csr_matrix) -> torch.Tensor:  # torch wants one index type for both arrays
            index = np.result_type(p.indptr, p.indices)
            return torch.sparse_csr_tensor(torch.from_numpy(p.indptr.astype(index, copy=False)),
                                           torch.from_numpy(p.indices.astype(index, copy=False)),
                                           torch.from_numpy(p.data), size=p.shape).to(device)

        with warnings.catch_warnings():  # torch calls its CSR support beta
            warnings.simplefilter("ignore", UserWarning)
            self.tensors = [csr(p) for p in self.parts]
        self.parts = []
        return self

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """Hv (K,) complex128 on the CPU for v (K,) complex128 (Hartree)."""
        if self.tensors is not None:
            t = self.tensors[0]
            columns = torch.stack([v.real, v.imag], 1).to(device=t.device, dtype=t.dtype)
            out = torch.cat([part @ columns for part in self.tensors]).to("cpu", torch.float64)
            return torch.complex(out[:, 0].contiguous(), out[:, 1].contiguous())
        dtype = self.parts[0].dtype  # two products: scipy's with two columns at once takes twice as long
        re, im = (np.ascontiguousarray(x.numpy(), dtype=dtype) for x in (v.real, v.imag))
        out = [np.concatenate([p @ x for p in self.parts]).astype(np.float64) for x in (re, im)]
        return torch.complex(torch.from_numpy(out[0]), torch.from_numpy(out[1]))

    def energy(self, v: torch.Tensor, hv: torch.Tensor | None = None) -> float:
        """v†Hv / v†v (Hartree)."""
        hv = self.apply(v) if hv is None else hv
        return float(torch.vdot(v, hv).real) / float(torch.vdot(v, v).real)


def _fingerprint(bits: torch.Tensor) -> str:
    """A checksum of the set's keys, in their order: a saved matrix belongs to exactly this set."""
    return hashlib.sha256(pack(bits).numpy().tobytes()).hexdigest()[:24]


def operator_part(h: IntegralHamiltonian, bits: torch.Tensor, directory: Path, part: int, parts: int,
                  dtype=np.float32, report=None) -> Path:
    """Build and save the rows of part `part` of `parts` of H on `bits` as `directory`/h-PART-of-PARTS.npz, with
    the set's fingerprint beside it (so parts may be built by separate processes); returns the file."""
    K = bits.shape[0]
    directory.mkdir(parents=True, exist_ok=True)
    rows = (K * part // parts, K * (part + 1) // parts)
    matrix = subset_hamiltonian(h, bits, rows, dtype=dtype, report=report)
    path = directory / f"h-{part}-of-{parts}.npz"
    tmp = directory / f".h-{part}-of-{parts}.tmp.npz"
    scipy.sparse.save_npz(tmp, matrix, compressed=False)
    tmp.replace(path)
    (directory / "set.json").write_text(json.dumps({"determinants": K, "fingerprint": _fingerprint(bits)}))
    return path


def load_operator(bits: torch.Tensor, directory: Path, parts: int) -> SubsetOperator | None:
    """The saved operator on `bits` in `parts` parts, or None when a part is missing; a directory holding
    another set's matrix is a UserError."""
    manifest = directory / "set.json"
    if not manifest.is_file():
        return None
    saved = json.loads(manifest.read_text())
    if saved.get("fingerprint") != _fingerprint(bits):
        raise UserError(f"{directory} holds H on another set of determinants ({saved.get('determinants')} of them): "
                        f"give another --matrix-dir or remove it")
    paths = [directory / f"h-{i}-of-{parts}.npz" for i in range(parts)]
    if not all(p.is_file() for p in paths):
        return None
    return SubsetOperator([scipy.sparse.load_npz(p).tocsr() for p in paths])


@dataclass(frozen=True)
class Refresh:
    """One exact look at the network on the set: step, seconds since the start, E (Hartree), Σ_S |ψ|² (the
    network's probability on the set)."""

    step: int
    seconds: float
    energy: float
    mass: float


def projected(psi: torch.Tensor, h_psi: torch.Tensor, energy: float, tau: float) -> torch.Tensor:
    """φ = (1 − τ(H − E))ψ (K,) complex128, from ψ and Hψ."""
    return psi - tau * (h_psi - energy * psi)


def imaginary_time_fit(model: torch.nn.Module, bits: torch.Tensor, operator: SubsetOperator, seconds: float,
                       tau: float = 0.2, lr: float = 1e-4, lr_final: float | None = 1e-5, batch: int = 4096,
                       refresh: int = 300, steps: int | None = None, seed: int = 0, report=None,
                       on_best=None, on_refresh=None, resume: dict | None = None, control: bool = False,
                       project=None) -> dict:
    """Refit `model` to φ = (1 − τ(H − E))ψ on the set `bits` (K, n) every `refresh` steps (Adam; the rate from
    `lr` down a cosine to `lr_final` over the seconds, or over `steps` when given) until `seconds` or `steps` are
    spent; the weights of the lowest refresh are loaded at the end. `report(Refresh)` after each refresh;
    `on_best(Refresh, weights)` whenever a refresh is the lowest so far (the first included), with a detached copy
    of its weights, so a caller can save them as they come.

    `on_refresh(state)` after each refresh (after `report`) hands the whole state of the refit: {"step",
    "seconds", "weights", "optimiser", "generator", "refreshes", "best", "best_weights"} (tensors shared with the
    refit: save them during the call). Given back as `resume`, the refit goes on from that refresh as if it had
    never stopped (the same steps, rates and draws; the seconds already spent count against `seconds`), so a killed
    refit loses at most `refresh` steps.

    `project` (P, a `nqs.symmetry.Projector` on the set): each refresh's energy is that of Pψ, the
    symmetry-projected network (each Refresh's `mass` stays the network's own probability on the set), and the
    network is fitted to φ = ψ − τ(H − E)Pψ, whose projection is the step (1 − τ(H − E))Pψ (P commutes with H;
    the real part is linear over the reals, which is all the step needs; the spin's, near a projector on a set
    not closed under S², near enough):
    the part of ψ that P takes away is left where it is, not fitted away. (Fitted to (1 − τ(H − E))Pψ itself, the
    network spends its steps on that part: H16's Pψ rose from +3.26 to +3.78 mHa in 900 steps; session 33.)

    Returns {"refreshes": [Refresh...], "best": Refresh, "steps", "seconds", "tau", "lr", "lr_final", "batch",
    "refresh", "control"}."""
    if bits.shape[0] != operator.size:
        raise ValueError(f"the operator is on {operator.size} determinants, the set has {bits.shape[0]}")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    log, step, spent, best = [], 0, 0.0, None
    if resume is not None:
        model.load_state_dict(resume["weights"])
        optimiser.load_state_dict(resume["optimiser"])
        generator.set_state(resume["generator"])
        log, step, spent = list(resume["refreshes"]), resume["step"], resume["seconds"]
        best = (resume["best"], resume["best_weights"])
    start = time.perf_counter() - spent

    def look(best: tuple[Refresh, dict] | None, again: bool = False) -> tuple[tuple[Refresh, dict], StratifiedSampler]:
        """An exact look at ψ: the lowest refresh so far (with its weights) and the sampler of the next φ (`again`:
        the look of a resumed refit, already in the log)."""
        nonlocal mass_gradient
        if control:
            psi, mass_gradient = amplitudes_and_mass_gradient(model, bits)
        else:
            psi = amplitudes_on(model, bits)
        mass = float((psi.abs() ** 2).sum())
        network, psi = psi, psi if project is None else project(psi)
        h_psi = operator.apply(psi)
        energy = operator.energy(psi, h_psi)
        if not again:
            seen = Refresh(step, time.perf_counter() - start, energy, mass)
            log.append(seen)
            if best is None or seen.energy < best[0].energy:
                best = (seen, snapshot(model))
                if on_best is not None:
                    on_best(*best)
            if report is not None:
                report(seen)  # after on_best: a reported refresh that is the lowest has been handed over
            if on_refresh is not None:
                on_refresh({"step": step, "seconds": seen.seconds, "weights": model.state_dict(),
                            "optimiser": optimiser.state_dict(), "generator": generator.get_state(),
                            "refreshes": list(log), "best": best[0], "best_weights": best[1]})
        phi = projected(psi, h_psi, energy, tau) + (network - psi)  # with `project`: P of it is (1 − τ(H − E))Pψ
        return best, StratifiedSampler(TargetState(bits, phi, energy, "projected"), batch, control)

    def progress() -> float:  # the share of the steps or of the seconds spent
        return step / steps if steps else (time.perf_counter() - start) / seconds

    mass_gradient = None  # ∇M_S at the last refresh, with `control`
    best, sampler = look(best, again=resume is not None)
    while (done := progress()) < 1:
        step += 1
        for group in optimiser.param_groups:
            group["lr"] = lr if lr_final is None else cosine(lr, lr_final, done)
        optimiser.zero_grad(set_to_none=True)
        fit_gradient(model, sampler.draw(generator))
        if control:  # the batch's control variate estimates ∇M_S now; take off ∇M_S at the refresh
            for w, g in zip((w for w in model.parameters() if w.requires_grad), mass_gradient):
                w.grad = -g if w.grad is None else w.grad - g
        optimiser.step()
        if step % refresh == 0 or progress() >= 1:  # and the last step's weights are looked at too
            best, sampler = look(best)
    model.load_state_dict(best[1])
    return {"refreshes": log, "best": best[0], "steps": step, "seconds": time.perf_counter() - start, "tau": tau,
            "lr": lr, "lr_final": lr_final, "batch": min(batch, bits.shape[0]), "refresh": refresh, "control": control}


def restrict(target: TargetState, threshold: float) -> TargetState:
    """The target's determinants with |c| ≥ threshold (amplitudes as they are, not renormalised)."""
    keep = target.amplitudes.abs() >= threshold
    return replace(target, bits=target.bits[keep], amplitudes=target.amplitudes[keep])
