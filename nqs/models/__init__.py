"""Autoregressive ansatze (MADE, Transformer, RetNet) with a phase MLP, built from one flat config."""
from __future__ import annotations

from dataclasses import dataclass

from nqs.errors import UserError
from nqs.hilbert import Sector
from nqs.models.base import AutoregressiveAnsatz
from nqs.models.made import MADE
from nqs.models.phase import PhaseMLP
from nqs.models.retnet import RetNet
from nqs.models.transformer import Transformer

ANSATZE = ("made", "transformer", "retnet")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of every ansatz (defaults: the reference code's). `hidden`, `made_layers`: MADE only;
    `d_model`, `heads`, `layers`, `d_ff`: Transformer and RetNet; `phase_*`: the phase MLP of all three."""

    ansatz: str
    d_model: int = 16
    heads: int = 2
    layers: int = 1
    d_ff: int = 64
    hidden: int = 64
    made_layers: int = 2
    phase_hidden: int = 64
    phase_layers: int = 3


def build_model(cfg: ModelConfig, sector: Sector) -> AutoregressiveAnsatz:
    """The ansatz named by `cfg.ansatz` over `sector`, float32, randomly initialised (seed torch yourself)."""
    if cfg.ansatz not in ANSATZE:
        raise UserError(f"unknown ansatz {cfg.ansatz!r}: choose one of {', '.join(ANSATZE)}")
    sizes = {k: getattr(cfg, k) for k in ("d_model", "heads", "layers", "d_ff", "hidden", "made_layers",
                                           "phase_hidden", "phase_layers")}
    if any(v < 1 for v in sizes.values()):
        raise UserError(f"model sizes must be positive integers, got {sizes}")
    if cfg.ansatz != "made" and cfg.d_model % cfg.heads:
        raise UserError(f"d_model={cfg.d_model} must be divisible by heads={cfg.heads}")
    phase = PhaseMLP(sector.n_qubits, cfg.phase_hidden, cfg.phase_layers)
    if cfg.ansatz == "made":
        return MADE(sector, phase, cfg.hidden, cfg.made_layers)
    cls = Transformer if cfg.ansatz == "transformer" else RetNet
    return cls(sector, phase, cfg.d_model, cfg.heads, cfg.layers, cfg.d_ff)


__all__ = ["ANSATZE", "AutoregressiveAnsatz", "MADE", "ModelConfig", "PhaseMLP", "RetNet", "Transformer",
           "build_model"]
