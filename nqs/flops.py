"""Analytic FLOP counts of a VMC step (sampling, local energy, gradient) from the model sizes, and a measuring counter.

Convention (BRIEF): a multiply-add is 2 FLOPs. Counted are the matrix products as executed, the quantity that
`torch.utils.flop_counter.FlopCounterMode` measures: linear layers (weights only, biases not), attention and
retention score and value products, the output head, the phase MLP, and the local-energy kernel's GEMMs.
Not counted: embeddings (lookups), one-hot encodings, LayerNorm / GroupNorm, softmax and masks, activations
(ReLU, GELU, SiLU, tanh), rotary rotations, RetNet decay factors, residual additions, MADE's `weight * mask`
and the sampler's multinomial draws; each is O(elements) against the O(elements * width) of the products
beside it. Dense as executed: MADE's masked weight matrices count in full, the Transformer's causal attention
and RetNet's parallel retention count all T x T (query, key) pairs.

Sizes: T = n_orb tokens per configuration, n = 2 T qubits; d = d_model, f = d_ff, L = layers, H = heads;
MADE hidden width h with L_m hidden layers; phase MLP width p with L_p hidden layers. Per configuration:

* MADE       2 ((4T + 1) h + (L_m - 1) h^2 + 4T h)     (a constant input beside the 4T one-hot features)
* Transformer T (L (8 d^2 + 4 d f + 4 T d) + 8 d)     (qkv 6d^2, proj 2d^2, FFN 4df, attention 4Td, head 8d)
* RetNet      T (L (10 d^2 + 4 d f + 4 T d) + 8 d)    (qkvg 8d^2, out 2d^2, FFN 4df, retention 4Td, head 8d)
* phase MLP   2 (n p + (L_p - 1) p^2 + p)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from nqs.errors import UserError
from nqs.hilbert import Sector
from nqs.models import ANSATZE, ModelConfig, PhaseMLP

N_TOKENS = 4  # token alphabet: the MADE input/output features and the head width per orbital


@dataclass(frozen=True)
class NetworkFlops:
    """FLOPs split between the modulus network and the phase network."""

    modulus: float
    phase: float

    @property
    def total(self) -> float:
        return self.modulus + self.phase


def _check(cfg: ModelConfig) -> None:
    if cfg.ansatz not in ANSATZE:
        raise UserError(f"unknown ansatz {cfg.ansatz!r}: choose one of {', '.join(ANSATZE)}")


def _modulus_row(cfg: ModelConfig, n_orb: int) -> int:
    """Teacher-forced modulus forward FLOPs of one configuration (all n_orb positions)."""
    T, d, f, L = n_orb, cfg.d_model, cfg.d_ff, cfg.layers
    if cfg.ansatz == "made":
        h = cfg.hidden
        return 2 * ((2 * N_TOKENS * T + 1) * h + (cfg.made_layers - 1) * h * h)
    proj = 8 * d * d if cfg.ansatz == "transformer" else 10 * d * d  # qkv+proj, or qkvg+out
    return T * (L * (proj + 4 * d * f + 4 * T * d) + 2 * N_TOKENS * d)


def _phase_row(cfg: ModelConfig, n_qubits: int) -> int:
    """Phase MLP forward FLOPs of one configuration."""
    p = cfg.phase_hidden
    return 2 * (_phase_inputs(cfg, n_qubits) * p + (cfg.phase_layers - 1) * p * p + p)


def _phase_inputs(cfg: ModelConfig, n_qubits: int) -> int:
    """Width of the phase MLP's input (n, or 2n with the string parities)."""
    return PhaseMLP.n_inputs(n_qubits, cfg.phase_input)


def forward_breakdown(cfg: ModelConfig, sector: Sector, batch: int) -> NetworkFlops:
    """One teacher-forced `log_psi` pass over `batch` full configurations, split modulus / phase."""
    _check(cfg)
    return NetworkFlops(float(batch * _modulus_row(cfg, sector.n_orb)),
                        float(batch * _phase_row(cfg, sector.n_qubits)))


def forward_flops(cfg: ModelConfig, sector: Sector, batch: int) -> float:
    """FLOPs of `model.log_psi(bits)` on `batch` configurations: modulus plus phase network (module docstring)."""
    return forward_breakdown(cfg, sector, batch).total


def gradient_breakdown(cfg: ModelConfig, sector: Sector, batch: int) -> NetworkFlops:
    """Forward plus backward of a real loss of `log_psi` over `batch` configurations, split modulus / phase.

    Backward = 2 x forward (each product Y = X W needs dX and dW), so the total is ~3 x forward, less the
    input gradient of a network's first layer where its input carries no gradient: MADE's one-hot input
    (2 (4T + 1) h per configuration) and the phase MLP's bits (2 n p). Transformer and RetNet inputs are trainable
    embeddings, so their first products get both gradients. This is what autograd executes.
    """
    fwd = forward_breakdown(cfg, sector, batch)
    made_input = 2 * (N_TOKENS * sector.n_orb + 1) * cfg.hidden if cfg.ansatz == "made" else 0
    phase_input = 2 * _phase_inputs(cfg, sector.n_qubits) * cfg.phase_hidden
    return NetworkFlops(3 * fwd.modulus - batch * made_input, 3 * fwd.phase - batch * phase_input)


def gradient_flops(cfg: ModelConfig, sector: Sector, batch: int) -> float:
    """FLOPs of the gradient step on `batch` unique samples: forward + backward (~3 x forward), see
    `gradient_breakdown`."""
    return gradient_breakdown(cfg, sector, batch).total


def _step_row(cfg: ModelConfig, n_orb: int, position: int) -> int:
    """Modulus FLOPs of one prefix at `position` in `model.step` (the sampler's path)."""
    d, f, L = cfg.d_model, cfg.d_ff, cfg.layers
    if cfg.ansatz == "made":  # the units of degree `position` into each layer above, then 4 scores (the new
        h = cfg.hidden        # token's column added to layer 1 is an add, not a GEMM)
        units = len(range(position, h, n_orb))
        return 2 * (cfg.made_layers - 1) * h * units + 2 * N_TOKENS * h
    if cfg.ansatz == "transformer":  # one new token's projections, attention over position + 1 cached keys
        return L * (8 * d * d + 4 * d * f + 4 * (position + 1) * d) + 2 * N_TOKENS * d
    # RetNet recurrent: k^T v (an addcmul) and q S cost 2 d d_head each, whatever the position
    return L * (10 * d * d + 4 * d * f + 4 * d * (d // cfg.heads)) + 2 * N_TOKENS * d


def sampling_flops(cfg: ModelConfig, sector: Sector, rows_per_position: Sequence[int]) -> float:
    """FLOPs of `nqs.sampler.sample` given the prefixes evaluated at each position (`Samples.rows_per_position`).

    As implemented: the Transformer runs one token per step against its KV cache (projections of one token,
    attention over j + 1 keys at position j); RetNet runs its recurrent form (O(d^2) per step, independent
    of j); MADE adds the hidden units that became complete at position j (degree j: ~hidden/n_orb per layer)
    to the layer above and computes orbital j's 4 scores, ~1/n_orb of a full pass. The phase network is not
    run while sampling.
    """
    _check(cfg)
    if len(rows_per_position) > sector.n_orb:
        raise UserError(f"{len(rows_per_position)} positions recorded, the sector has {sector.n_orb}")
    return float(sum(rows * _step_row(cfg, sector.n_orb, j) for j, rows in enumerate(rows_per_position)))


@functools.lru_cache(maxsize=256)
def _prefix_counts(sector: Sector) -> tuple[int, ...]:
    def strings(n: int, j: int) -> int:
        return sum(math.comb(j, a) for a in range(max(0, n - (sector.n_orb - j)), min(n, j) + 1))

    return tuple(strings(sector.n_alpha, j) * strings(sector.n_beta, j) for j in range(sector.n_orb))


def prefix_counts(sector: Sector) -> list[int]:
    """The valid prefixes of each length j = 0 .. n_orb - 1 (those the sector can still be completed from): the
    sampler's rows at position j when its draw reaches every one. Per spin, a prefix of j orbitals holding a
    electrons is valid for max(0, N - (n_orb - j)) <= a <= min(N, j); the spins combine freely."""
    return list(_prefix_counts(sector))


def full_tree_rows(sector: Sector, unique: float) -> list[float]:
    """`Samples.rows_per_position` of a draw that reaches every valid prefix and keeps at most `unique` of them
    at each position: min(P_j, unique) with P_j = `prefix_counts`. Exact while the sample is broad (every
    prefix drawn, as with N_s = 1e12 early in training); an upper bound once the distribution concentrates."""
    return [min(float(p), float(unique)) for p in _prefix_counts(sector)]


def hamiltonian_flops(n_qubits: int, batch: int, gemm_columns: int) -> float:
    """GEMMs of `nqs.local_energy.connections` on `batch` samples: (B x n) @ (n x gemm_columns), with
    `CompiledHamiltonian.gemm_columns`. Pattern tables: the K - 1 flip-mask patterns, the R + 1 linear rows and
    the n x n diagonal form; dense path: the parities against all M strings and the K sector overlaps."""
    return float(2 * batch * n_qubits * gemm_columns)


def local_energy_flops(cfg: ModelConfig, sector: Sector, n_evals: int, batch: int,
                       gemm_columns: int, trie_rows: Sequence[int] = ()) -> dict[str, float]:
    """FLOPs of `nqs.local_energy.local_energy`: {"psi", "hamiltonian", "total"}.

    psi: `log_psi` (modulus + phase) on the `n_evals` unique configurations actually evaluated
    (`LocalEnergy.n_evals`: the batch plus its in-sector, deduplicated connections); when they went through the
    prefix trie (`nqs.trie`; `trie_rows` = `LocalEnergy.rows_per_position`, the distinct prefixes evaluated at
    each position) the modulus is the incremental step once per trie node, as `sampling_flops` counts it, and
    the phase network runs on the n_evals configurations. hamiltonian: the kernel's own GEMMs on the `batch`
    samples (`hamiltonian_flops`). The sampled-space estimator evaluates nothing (n_evals = 0).
    """
    if trie_rows:
        psi = sampling_flops(cfg, sector, trie_rows) + forward_breakdown(cfg, sector, n_evals).phase
    else:
        psi = forward_flops(cfg, sector, n_evals)
    ham = hamiltonian_flops(sector.n_qubits, batch, gemm_columns)
    return {"psi": psi, "hamiltonian": ham, "total": psi + ham}


def natural_gradient_flops(cfg: ModelConfig, sector: Sector, rows: int, n_params: int) -> float:
    """Estimated FLOPs of one SR direction (`nqs.natural_gradient.sr_direction`) on `rows` samples: the
    Jacobian's two blocks (Re log ψ through the modulus network, φ through the phase network: one forward and
    reverse pass per sample, ~ gradient_flops), the block Gram matrices (2·rows²·P over both blocks), the
    products J g, Jᵀ(·), J d and the centring (~8·rows·P), and two rows³/3 solves. Not checked against
    FlopCounterMode (vmap's batched backward). Before 2026-12-02 (session 4) SR stacked Re and Im rows over all
    parameters and this estimate was 2·gradient_flops + 2·(2 rows)²·P + 16·rows·P + (2 rows)³/3."""
    return float(gradient_flops(cfg, sector, rows) + 2 * rows * rows * n_params + 8 * rows * n_params
                 + 2 * rows ** 3 / 3)


def step_flops(cfg: ModelConfig, sector: Sector, rows_per_position: Sequence[int], n_evals: int, batch: int,
               gemm_columns: int, trie_rows: Sequence[int] = ()) -> dict[str, float]:
    """One VMC step: {"sampling", "local_energy", "gradient", "total"}; `batch` is the number of unique
    samples (the gradient runs over them, the local energy's GEMMs too); `trie_rows`: see
    `local_energy_flops`."""
    out = {"sampling": sampling_flops(cfg, sector, rows_per_position),
           "local_energy": local_energy_flops(cfg, sector, n_evals, batch, gemm_columns, trie_rows)["total"],
           "gradient": gradient_flops(cfg, sector, batch)}
    out["total"] = out["sampling"] + out["local_energy"] + out["gradient"]
    return out


# --- measuring -------------------------------------------------------------------------------------------
def _sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and (scores) V of (B, heads, T_q, d) against (B, heads, T_k, d): all pairs, causal or not."""
    b, h, t_q, d = query
    return 4 * b * h * t_q * key[-2] * d


def _sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return 2 * _sdpa(query, key, value)


def _addcmul(input, tensor1, tensor2, *args, out_shape=None, **kwargs) -> int:
    """input + t1 * t2 broadcast to `out_shape`: one multiply-add per output element (RetNet's k^T v update)."""
    return 2 * math.prod(out_shape)


def flop_counter(display: bool = False) -> FlopCounterMode:
    """A FlopCounterMode that also counts PyTorch's CPU fused attention and `addcmul`.

    On CPU, `F.scaled_dot_product_attention` dispatches to `aten._scaled_dot_product_flash_attention_for_cpu`
    (and its backward), which torch's FLOP registry leaves out (it has the CUDA flash / efficient / cuDNN
    kernels only); they are counted here with torch's own SDPA formula (all T_q x T_k pairs, backward 2x).
    The RetNet's recurrent state update S = gamma S + k^T v runs as one broadcast `addcmul` (an outer product
    as a K = 1 batched matmul is several times slower on CPU); it is counted as the product it is.
    """
    aten = torch.ops.aten
    mapping = {aten.addcmul: _addcmul}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_backward
    return FlopCounterMode(display=display, depth=None, custom_mapping=mapping)


__all__ = ["NetworkFlops", "flop_counter", "forward_breakdown", "forward_flops", "full_tree_rows",
           "gradient_breakdown", "gradient_flops", "hamiltonian_flops", "local_energy_flops", "prefix_counts",
           "sampling_flops", "step_flops"]
