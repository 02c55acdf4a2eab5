"""Autoregressive ansatze (MADE, Transformer, RetNet) with a phase MLP, built from one flat config."""
from __future__ import annotations

from dataclasses import dataclass

from nqs.errors import UserError
from nqs.hilbert import Sector
from nqs.models.base import AutoregressiveAnsatz
from nqs.models.made import MADE
from nqs.models.phase import PHASE_INPUTS, PhaseMLP
from nqs.models.retnet import RetNet
from nqs.models.transformer import Transformer
from nqs.options import option

ANSATZE = ("made", "transformer", "retnet")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of every ansatz (defaults: the reference code's). `hidden`, `made_layers`: MADE only;
    `d_model`, `heads`, `layers`, `d_ff`: Transformer and RetNet; `phase_*`: the phase MLP of all three."""

    ansatz: str = option("transformer", "made | transformer | retnet (the modulus network)")
    d_model: int = option(16, "Transformer/RetNet embedding width")
    heads: int = option(2, "Transformer/RetNet attention (retention) heads; must divide d_model")
    layers: int = option(1, "Transformer/RetNet blocks")
    d_ff: int = option(64, "Transformer/RetNet feed-forward width")
    hidden: int = option(64, "MADE hidden width")
    made_layers: int = option(2, "MADE hidden layers")
    phase_hidden: int = option(64, "phase MLP hidden width (all ansätze)")
    phase_layers: int = option(3, "phase MLP layers (all ansätze)")
    phase_input: str = option("bits", "phase MLP inputs: bits (the ±1 occupations) | strings (those and the "
                              "Jordan-Wigner string parities; signs of excitations become products of a few "
                              "inputs; H16's DMRG fit: the phases' factor on the fidelity 0.9956 -> 0.9978, "
                              "nqs.models.phase)")


    def validate(self) -> "ModelConfig":
        """UserError for an unknown ansatz, a non-positive size, or heads that do not divide d_model."""
        if self.ansatz not in ANSATZE:
            raise UserError(f"unknown ansatz {self.ansatz!r}: choose one of {', '.join(ANSATZE)}")
        sizes = {k: getattr(self, k) for k in ("d_model", "heads", "layers", "d_ff", "hidden", "made_layers",
                                                "phase_hidden", "phase_layers")}
        if self.phase_input not in PHASE_INPUTS:
            raise UserError(f"unknown phase_input {self.phase_input!r}: choose one of {', '.join(PHASE_INPUTS)}")
        if any(v < 1 for v in sizes.values()):
            raise UserError(f"model sizes must be positive integers, got {sizes}")
        if self.ansatz != "made" and self.d_model % self.heads:
            raise UserError(f"d_model={self.d_model} must be divisible by heads={self.heads}")
        return self


def build_model(cfg: ModelConfig, sector: Sector) -> AutoregressiveAnsatz:
    """The ansatz named by `cfg.ansatz` over `sector`, float32, randomly initialised (seed torch yourself)."""
    cfg.validate()
    phase = PhaseMLP(sector.n_qubits, cfg.phase_hidden, cfg.phase_layers, cfg.phase_input)
    if cfg.ansatz == "made":
        return MADE(sector, phase, cfg.hidden, cfg.made_layers)
    cls = Transformer if cfg.ansatz == "transformer" else RetNet
    return cls(sector, phase, cfg.d_model, cfg.heads, cfg.layers, cfg.d_ff)


__all__ = ["ANSATZE", "AutoregressiveAnsatz", "MADE", "ModelConfig", "PhaseMLP", "RetNet", "Transformer",
           "build_model"]
