"""The phase network: a plain MLP over the occupation bits, phi(x) in R (psi = sqrt(p) * exp(i phi)).

Inputs (`inputs`): "bits", the n occupations as ±1; or "strings", those and the n Jordan–Wigner string parities
s_k(x) = Π_{j<k} (1 − 2 x_j) (±1). A fermionic excitation's sign is a product of string parities
(<x'| a†_p a_q |x> = ± s_p(x) s_q(x) up to the sites p, q themselves), so the signs a molecular ground state
carries relative to its leading determinants are products of a few of these inputs where from the bits alone
they are parities of many; an MLP learns the former far more easily. H16 in split-localized orbitals, MADE
512/256 fitted to the DMRG state (3,000 steps at 3e-3): the phases cost the fidelity a factor 0.9956 with "bits"
(0.9923 of the moduli's 0.9967) and 0.9978 with "strings" (0.9945) (docs/benchmarks.md, session 22).
"""
from __future__ import annotations

import torch
from torch import nn

PHASE_INPUTS = ("bits", "strings")


class PhaseMLP(nn.Module):
    """bits (B, n) {0,1} float -> phi (B,); `layers` hidden layers of width `hidden`, tanh activations, on the
    ±1 bits (`inputs="bits"`) or on the bits and their string parities (`inputs="strings"`, 2n inputs).

    Parameters: n_in*h + h + (layers-1)*(h*h + h) + h + 1, n_in = n or 2n.
    """

    def __init__(self, n_qubits: int, hidden: int = 64, layers: int = 3, inputs: str = "bits"):
        super().__init__()
        if layers < 1:
            raise ValueError("PhaseMLP needs at least one hidden layer")
        if inputs not in PHASE_INPUTS:
            raise ValueError(f"unknown phase inputs {inputs!r}: choose one of {', '.join(PHASE_INPUTS)}")
        self.inputs = inputs
        sizes = [self.n_inputs(n_qubits, inputs)] + [hidden] * layers
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(sizes, sizes[1:]):
            blocks += [nn.Linear(d_in, d_out), nn.Tanh()]
        blocks.append(nn.Linear(hidden, 1))
        self.net = nn.Sequential(*blocks)

    @staticmethod
    def n_inputs(n_qubits: int, inputs: str = "bits") -> int:
        """Width of the first layer's input: n for "bits", 2n for "strings"."""
        return 2 * n_qubits if inputs == "strings" else n_qubits

    @staticmethod
    def count_params(n_qubits: int, hidden: int, layers: int, inputs: str = "bits") -> int:
        """Analytic parameter count of PhaseMLP(n_qubits, hidden, layers, inputs)."""
        n_in = PhaseMLP.n_inputs(n_qubits, inputs)
        return n_in * hidden + hidden + (layers - 1) * (hidden * hidden + hidden) + hidden + 1

    def features(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, n) {0,1} -> (B, n_in) ±1: the bits, then (for "strings") s_k = Π_{j<k} (1 − 2 x_j), s_0 = 1."""
        spins = 2 * bits - 1
        if self.inputs == "bits":
            return spins
        shifted = torch.cat([torch.zeros_like(bits[..., :1]), bits[..., :-1]], dim=-1)
        strings = 1 - 2 * torch.remainder(torch.cumsum(shifted, dim=-1), 2)
        return torch.cat([spins, strings], dim=-1)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(bits)).squeeze(-1)
