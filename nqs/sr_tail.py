"""Tail rows for stochastic reconfiguration: imaginary-time targets where the sample has no configuration.

SR moves log ψ along -τ(E_loc - E) on the sampled configurations only. A configuration whose probability the
model has driven below the sampling floor (N_s = 1e12: p < ~1e-12) is never sampled, and the energy gradient
along its amplitude is proportional to the amplitude itself, so no step brings it back: an N2 run ends with
~170 determinants of 5.5e-4 FCI weight at p < 1e-16 (docs/benchmarks.md, session 8). One imaginary-time step
does not share that blind spot; with the diagonal taken implicitly (a step τ too long for a configuration of
high diagonal energy would otherwise flip and grow it), at such an x'
ψ̃(x') = (ψ(x') − τ Σ_{x∈S} H_{x'x} ψ(x)) / (1 + τ(H_{x'x'} − E)), and where ψ(x') ≈ 0 the sum, which the
sampled configurations determine, is all that is left (for τ → ∞ it is first-order perturbation theory).
This module finds the connected x' outside the sample that the step would grow most and gives each a row
of the SR least-squares problem with the nonlinear log-space target log(ψ̃(x')/ψ(x')) (the linearised one,
−τ(E_loc − E), is meaningless when ψ(x') ≈ 0) and the weight |ψ̃(x')|² that a fidelity between ψ_θ+dθ and ψ̃
gives it. On N2 (RetNet, 32 rows) the missing FCI weight falls from 6e-4 to 4e-8 and the final error from
+1.78 to +0.047 mHa (session 8, explicit diagonal).

Approximations, stated: the off-diagonal part of (Hψ)(x') is summed over the sample set S, and a candidate is
used only where that sum exceeds twice the most the rest could add (at the default cap on N2 the configurations
outside S carry < 1e-7 of the probability; at a cap of 200, ~1e-4); the diagonal's factor is 1 where
H_x'x' < E; and the modulus part of a target is capped at `cap` (amplitude at most e^cap larger per step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nqs.keys import index_of, pack, sum_by_key, unpack
from nqs.local_energy import connections


@dataclass(frozen=True)
class TailRows:
    """bits (K, n) of connected configurations outside the sample; weights (K,) |ψ̃(x')|² on the scale where
    the sample's weights sum to 1; target (K,) complex: the wanted change of log ψ in one step; evaluations:
    the network calls (log ψ of one configuration) spent finding them; log_psi (K,) complex: log ψ(x') now."""

    bits: torch.Tensor
    weights: torch.Tensor
    target: torch.Tensor
    evaluations: int
    log_psi: torch.Tensor


@torch.no_grad()
def tail_rows(model, hamiltonian, bits: torch.Tensor, energy: float, tau: float, k: int, cap: float = 2.0,
              pool: int = 4, log_psi_bits: torch.Tensor | None = None, missing: float = 0.0,
              memory_bytes: int = 256 * 2**20) -> TailRows:
    """The `k` configurations x' ∉ `bits` (U, n) of largest |ψ̃(x')|² among those the imaginary-time step
    ψ̃ = (ψ − τ H_off ψ) / (1 + τ(H_x'x' − E)) (τ in 1/Hartree, `energy` E in Hartree) grows at least
    e^½-fold (none: K = 0).
    Candidates: the `pool`·k connections of largest |(Hψ)_S(x')|, whose log ψ is then evaluated.
    `log_psi_bits` (U,): the samples' log ψ when the step already has it (else evaluated here). `missing`: the
    probability outside the sample, 1 − Σ_S |ψ|²; a candidate is kept only where its sum over the sample exceeds
    twice the most the rest could add, √missing·‖H_x'·‖ (Cauchy–Schwarz), so that the step is the sample's.
    Memory: the sample's connections and the candidates' own are held about `memory_bytes` of pairs at a time
    (`_largest_outside`, `_candidate_rows`), whatever the sample size and n."""
    n = bits.shape[1]
    evaluations = 0 if log_psi_bits is not None else bits.shape[0]
    psi = torch.exp((model.log_psi(bits) if log_psi_bits is None else log_psi_bits).to(torch.complex128))
    sample_keys = pack(bits)
    candidates = _largest_outside(hamiltonian, bits, sample_keys, psi, pool * k, memory_bytes)
    cand_bits = unpack(candidates, n).to(bits.dtype)
    if not cand_bits.shape[0]:  # the sample holds every connection (a small sector)
        none = torch.zeros(0, dtype=torch.complex128, device=bits.device)
        return TailRows(cand_bits, none.real, none, evaluations, none)
    # (Hψ)_S(x') taken exactly from the candidates' own rows (the blocks' partial sums only ranked them)
    h_psi, diagonal, row_norm = _candidate_rows(hamiltonian, cand_bits, sample_keys, psi, memory_bytes)
    log_psi_c = model.log_psi(cand_bits).to(torch.complex128)
    psi_c = torch.exp(log_psi_c)
    determined = h_psi.abs() > 2.0 * math.sqrt(max(missing, 0.0)) * row_norm
    stepped = (psi_c - tau * h_psi) / (1 + tau * (diagonal - energy).real.clamp_min(0))  # implicit diagonal
    grows = (stepped.abs() > psi_c.abs() * math.exp(0.5)) & determined
    score = torch.where(grows, stepped.abs() ** 2, torch.zeros_like(stepped.real))
    keep = torch.topk(score, min(k, int(grows.sum()))).indices
    new, old = stepped[keep], psi_c[keep]
    target = torch.complex(torch.log(new.abs() / old.abs().clamp_min(1e-300)).clamp(max=cap),
                           torch.angle(new * old.conj()))
    return TailRows(cand_bits[keep], (new.abs() ** 2).to(torch.float64), target, evaluations + cand_bits.shape[0],
                    log_psi_c[keep])


PAIR_BYTES = 160  # a (sample, x') pair held while a block is reduced: sample, key words, element, the sort's copies


def _rows_per_block(hamiltonian, memory_bytes: int) -> int:
    """Configurations whose connections (at most n_candidates or K pairs each) fit `memory_bytes`: at least 1."""
    per_row = getattr(hamiltonian, "n_candidates", None) or hamiltonian.n_flip_masks
    return max(1, memory_bytes // (PAIR_BYTES * per_row))


def _largest_outside(hamiltonian, bits: torch.Tensor, sample_keys: torch.Tensor, psi: torch.Tensor, count: int,
                     memory_bytes: int):
    """Keys (C, W) of up to `count` configurations x' ∉ S connected to the sample S = `bits` (U, n), keys
    `sample_keys` (U, W), ranked by (Hψ)_S(x') = Σ_{x∈S} H_x'x ψ(x), largest |·| first, reading the sample's
    connections a block of samples at a time, about `memory_bytes` of pairs each. One block (the sample fits):
    the `count` largest of the exact sums. Several: the union of each block's `count` largest partial sums,
    re-ranked by their sums over the blocks that kept them (the caller retakes the exact sums); an x' that is
    large only in total, small in every block, can be missed."""
    n = bits.shape[1]
    rows = _rows_per_block(hamiltonian, memory_bytes)
    keys, sums = [], []
    for start in range(0, bits.shape[0], rows):
        conn = connections(hamiltonian, bits[start:start + rows], memory_bytes=memory_bytes)
        distinct, h = sum_by_key(conn.keys, conn.element.to(torch.complex128).conj()
                                  * psi[start:start + rows].index_select(0, conn.sample), n)
        outside = index_of(sample_keys, distinct, n) < 0
        distinct, h = distinct[outside], h[outside]
        top = torch.topk(h.abs(), min(count, h.shape[0])).indices
        keys.append(distinct[top])
        sums.append(h[top])
    distinct, h = sum_by_key(torch.cat(keys), torch.cat(sums), n)
    return distinct[torch.topk(h.abs(), min(count, h.shape[0])).indices]


def _candidate_rows(hamiltonian, cand_bits: torch.Tensor, sample_keys: torch.Tensor, psi: torch.Tensor,
                    memory_bytes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For candidates x' (C, n) outside the sample (keys (U, W), amplitudes ψ (U,)): (Hψ)_S(x') =
    Σ_{x∈S} H_x'x ψ(x) (C,) complex128, H_x'x' (C,) complex128 and ‖H_x'·‖ off the diagonal (C,) float64, from
    the candidates' own connections read a block of candidates at a time, about `memory_bytes` of pairs each."""
    n, count = cand_bits.shape[1], cand_bits.shape[0]
    rows = _rows_per_block(hamiltonian, memory_bytes)
    h_psi = torch.zeros(count, dtype=torch.complex128, device=cand_bits.device)
    norm2 = torch.zeros(count, dtype=torch.float64, device=cand_bits.device)
    diagonal = []
    for start in range(0, count, rows):
        own = connections(hamiltonian, cand_bits[start:start + rows], memory_bytes=memory_bytes)
        at = own.sample + start
        row = index_of(sample_keys, own.keys, n)
        inside = row >= 0
        h_psi.index_add_(0, at[inside], own.element[inside].to(torch.complex128) * psi.index_select(0, row[inside]))
        norm2.index_add_(0, at, own.element.abs().to(torch.float64) ** 2)
        diagonal.append(own.diagonal.to(torch.complex128))
    return h_psi, torch.cat(diagonal), norm2.sqrt()
