"""Parameter counts of an ansatz from its sizes, without building it, and families of sizes (a family's
members are counted by the hundred): all parameters, the modulus and phase networks', and the effective ones.

Effective: the parameters that some configuration's log psi depends on (`AutoregressiveAnsatz.n_params_effective`):
MADE's unmasked weights into live units and their biases; for the Transformer and RetNet all but the embedding
and head rows that reach no live conditional (and the Transformer's key biases). The phase MLP has no unused
parameters. `tests/test_models.py` checks these counts against built models and against a brute-force count
of the parameter entries with a non-zero gradient.
"""
from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

from nqs.errors import UserError
from nqs.hilbert import Sector
from nqs.models import ModelConfig
from nqs.models.base import N_TOKENS, unused_sequence_params
from nqs.models.made import made_live_params, made_masks
from nqs.models.phase import PhaseMLP
from nqs.models.transformer import transformer_unused_params

COUNTS = ("total", "modulus", "phase", "effective", "effective_modulus")
WIDTH = {"made": "hidden", "transformer": "d_model", "retnet": "d_model"}  # the option a family scales
FIXED = {"made": ("made_layers", "phase_layers", "phase_input"),
         "transformer": ("layers", "heads", "phase_layers", "phase_input"),
         "retnet": ("layers", "heads", "phase_layers", "phase_input")}


def _sequence_model(sector: Sector, d: int, f: int, layers: int, retnet: bool) -> int:
    """Embeddings (4 tokens + start, n_orb positions), blocks, final LayerNorm and the 4-way head."""
    attention = 5 * d * d if retnet else 4 * d * d + 4 * d  # qkvg + out (no biases), or qkv + proj with biases
    norms = 6 * d if retnet else 4 * d  # two LayerNorms, and RetNet's GroupNorm
    block = attention + norms + 2 * d * f + f + d  # ... and the FFN
    return (N_TOKENS + 1) * d + sector.n_orb * d + layers * block + 2 * d + N_TOKENS * d + N_TOKENS


def param_counts(cfg, sector: Sector) -> dict[str, int]:
    """{"total", "modulus", "phase", "effective", "effective_modulus"} of `build_model(cfg, sector)`;
    `cfg` is a `nqs.models.ModelConfig` (or anything with its fields)."""
    phase = PhaseMLP.count_params(sector.n_qubits, cfg.phase_hidden, cfg.phase_layers, cfg.phase_input)
    if cfg.ansatz == "made":
        masks = made_masks(sector.n_orb, cfg.hidden, cfg.made_layers)
        modulus = sum(m.size + m.shape[0] for m in masks)
        live = made_live_params(sector, masks)
    else:
        retnet = cfg.ansatz == "retnet"
        modulus = _sequence_model(sector, cfg.d_model, cfg.d_ff, cfg.layers, retnet)
        unused = (unused_sequence_params(sector, cfg.d_model) if retnet
                  else transformer_unused_params(sector, cfg.d_model, cfg.layers))
        live = modulus - unused
    return {"total": modulus + phase, "modulus": modulus, "phase": phase, "effective": live + phase,
            "effective_modulus": live}


cached_counts = functools.lru_cache(maxsize=4096)(param_counts)  # ModelConfig and Sector are frozen


@dataclass(frozen=True)
class Member:
    """One realisable size: its options for nqs-train and its parameter counts (`nqs.models.counts.COUNTS`)."""

    options: dict
    counts: dict


def _sector_of(where) -> Sector:
    return where if isinstance(where, Sector) else where.sector


@dataclass(frozen=True)
class SizeFamily:
    """One ansatz's model-size family, from its runs' configs: fixed depth / heads / phase layers, a width
    (d_model or MADE's hidden) with d_ff and phase_hidden at the runs' median ratios to it."""

    ansatz: str
    widths: tuple[int, ...]  # observed widths, ascending
    fixed: tuple[tuple[str, int | str], ...]  # (option, value): the runs' most common
    d_ff_ratio: float | None  # median d_ff / d_model (Transformer, RetNet)
    phase_ratio: float  # median phase_hidden / width
    span: float = 8.0  # members reach span x the largest observed width

    @classmethod
    def from_configs(cls, ansatz: str, configs: Sequence[ModelConfig]) -> "SizeFamily":
        key = WIDTH[ansatz]
        widths = [getattr(c, key) for c in configs]
        fixed = tuple((k, Counter(getattr(c, k) for c in configs).most_common(1)[0][0]) for k in FIXED[ansatz])
        d_ff = statistics.median(c.d_ff / c.d_model for c in configs) if key == "d_model" else None
        phase = statistics.median(c.phase_hidden / getattr(c, key) for c in configs)
        return cls(ansatz, tuple(sorted(set(widths))), fixed, d_ff, phase)

    @property
    def step(self) -> int:
        """Widths are multiples of this (the heads, which must divide d_model; 1 for MADE)."""
        return dict(self.fixed).get("heads", 1)

    def options(self, width: int) -> dict:
        """The nqs-train size options of the member of this width."""
        out = {WIDTH[self.ansatz]: int(width), **dict(self.fixed),
               "phase_hidden": max(1, round(self.phase_ratio * width))}
        if self.d_ff_ratio is not None:
            out["d_ff"] = max(1, round(self.d_ff_ratio * width))
        return out

    def members(self, where) -> list[Member]:
        """The realisable members for a sector (or anything with `.sector`, e.g. a MolecularProblem), by width:
        multiples of `step` from the smallest observed width to `span` x the largest."""
        return list(family_members(self, _sector_of(where)))

    def options_for(self, n: float, n_from: str, where) -> tuple[dict, dict]:
        """(size options, counts) of the member whose `n_from` count is nearest to n in log distance (ties:
        the smaller)."""
        check_n(n, n_from)
        members = family_members(self, _sector_of(where))
        best = min(members, key=lambda m: abs(math.log(m.counts[n_from] / n)))
        return dict(best.options), dict(best.counts)

    def to_json(self) -> dict:
        return {**asdict(self), "fixed": dict(self.fixed)}


@functools.lru_cache(maxsize=256)
def family_members(family: SizeFamily, sector: Sector) -> tuple[Member, ...]:
    s = family.step
    lo = max(s, math.ceil(min(family.widths) / s) * s)
    hi = max(lo, math.floor(family.span * max(family.widths) / s) * s)
    out = []
    for w in range(lo, hi + 1, s):
        opts = family.options(w)
        out.append(Member(opts, cached_counts(ModelConfig(family.ansatz, **opts), sector)))
    return tuple(out)


def check_n(n: float, n_from: str) -> None:
    if n_from not in COUNTS:
        raise UserError(f"unknown parameter count {n_from!r}: choose one of {', '.join(COUNTS)}")
    if not (n > 0 and math.isfinite(n)):
        raise UserError(f"a parameter count must be a positive number, got {n}")


__all__ = ["COUNTS", "Member", "SizeFamily", "family_members", "param_counts"]
