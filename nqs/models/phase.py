"""The phase network: a plain MLP over the occupation bits, phi(x) in R (psi = sqrt(p) * exp(i phi))."""
from __future__ import annotations

import torch
from torch import nn


class PhaseMLP(nn.Module):
    """bits (B, n) {0,1} float -> phi (B,); `layers` hidden layers of width `hidden`, tanh activations.

    The bits are mapped to +-1 first. Parameters: n*h + h + (layers-1)*(h*h + h) + h + 1.
    """

    def __init__(self, n_qubits: int, hidden: int = 64, layers: int = 3):
        super().__init__()
        if layers < 1:
            raise ValueError("PhaseMLP needs at least one hidden layer")
        sizes = [n_qubits] + [hidden] * layers
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(sizes, sizes[1:]):
            blocks += [nn.Linear(d_in, d_out), nn.Tanh()]
        blocks.append(nn.Linear(hidden, 1))
        self.net = nn.Sequential(*blocks)

    @staticmethod
    def count_params(n_qubits: int, hidden: int, layers: int) -> int:
        """Analytic parameter count of PhaseMLP(n_qubits, hidden, layers)."""
        return n_qubits * hidden + hidden + (layers - 1) * (hidden * hidden + hidden) + hidden + 1

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        return self.net(2 * bits - 1).squeeze(-1)
