"""Variational Monte Carlo on count-weighted unique samples: statistics, V-score and the gradient surrogate.

With unique samples x_i of multinomial counts c_i (weights w_i = c_i / sum c), E = sum_i w_i E_loc(x_i) and
grad E = 2 Re sum_i w_i (E_loc(x_i) - E)^* grad log psi(x_i); the surrogate loss below has that gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stats:
    """Count-weighted statistics of the local energy (Hartree)."""

    mean: float  # Re E
    error: float  # statistical error of the mean, sqrt(Var / N_s) for N_s multinomial samples
    variance: float  # Var(E_loc) = sum w |E_loc - E|^2
    imag: float  # Im E (zero for the exact estimator up to noise)

    def vscore(self, n_electrons: int, e_inf: float) -> float:
        """V = N_e Var(E_loc) / (E - E_inf)^2 (Wu et al., Science 2024); E_inf = Tr H / dim of the sector."""
        denom = (self.mean - e_inf) ** 2
        return n_electrons * self.variance / denom if denom > 0 else float("nan")


def weighted_sums(e_loc: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Partial sums that add across ranks: [sum w, sum w Re E, sum w Im E, sum w |E|^2] (float64)."""
    w = weights.to(torch.float64)
    e = e_loc.to(torch.complex128)
    return torch.stack([w.sum(), (w * e.real).sum(), (w * e.imag).sum(), (w * e.abs() ** 2).sum()])


def stats_from_sums(sums: torch.Tensor, n_samples: float) -> Stats:
    """Statistics from the all-reduced sums; `n_samples` is the non-unique count N_s behind the weights."""
    w, wr, wi, wabs2 = (float(v) for v in sums)
    mean, imag = wr / w, wi / w
    variance = max(wabs2 / w - mean * mean - imag * imag, 0.0)
    return Stats(mean, math.sqrt(variance / n_samples), variance, imag)


def clip_local_energy(e_loc: torch.Tensor, weights: torch.Tensor, mean: float, width: float | None) -> torch.Tensor:
    """Clip Re E_loc to mean ± width * (weighted mean absolute deviation), as FermiNet does; None: no clipping."""
    if width is None:
        return e_loc
    w = weights.to(torch.float64) / weights.sum()
    mad = float((w * (e_loc.real - mean).abs()).sum())
    real = e_loc.real.clamp(mean - width * mad, mean + width * mad)
    return torch.complex(real, e_loc.imag)


def surrogate_loss(log_psi: torch.Tensor, e_loc: torch.Tensor, weights: torch.Tensor, mean: complex) -> torch.Tensor:
    """Real scalar whose gradient is 2 Re sum_i w_i (E_loc,i - E)^* grad log psi_i (w normalised globally).

    log_psi (U,) complex with grad; e_loc (U,) complex128 detached; weights (U,) sum to 1 over all ranks.
    """
    centred = (e_loc - mean).conj().detach().to(log_psi.dtype)
    return 2.0 * (weights.to(log_psi.real.dtype) * (centred * log_psi).real).sum()
