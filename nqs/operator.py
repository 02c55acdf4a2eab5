"""The qubit Hamiltonian: OpenFermion InteractionOperator -> Jordan-Wigner -> Pauli strings grouped by flip mask.

A Pauli string P with flip mask f (X or Y positions), sign mask z (Z or Y positions) and n_Y Y's has
<x|P|x XOR f> = (-i)^{n_Y} (-1)^{popcount(x & z)}. Strings are grouped by f, so the matrix element
between x and x XOR f_k is H_k(x) = sum_{t in group k} c~_t (-1)^{popcount(x & z_t)} with c~_t = c_t (-i)^{n_Y}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nqs.chem import Integrals
from nqs.pattern_tables import build_pattern_tables

COEFF_TOL = 1e-12


def interaction_operator(ints: Integrals):
    """OpenFermion InteractionOperator over 2*n_orb spin-orbitals (2p alpha, 2p+1 beta)."""
    from openfermion import InteractionOperator
    from openfermion.chem.molecular_data import spinorb_from_spatial

    two_body = np.asarray(ints.h2.transpose(0, 2, 3, 1), order="C")  # (pq|rs) -> OpenFermion's <pq|..> layout
    one, two = spinorb_from_spatial(ints.h1, two_body)
    return InteractionOperator(ints.e_core, one, 0.5 * two)


@dataclass(frozen=True)
class PauliHamiltonian:
    """Grouped Pauli strings as numpy arrays (K flip masks, M strings; packed int64 bit masks)."""

    n_qubits: int
    flip_masks: np.ndarray  # (K,) int64, flip_masks[0] == 0 (the diagonal group)
    term_group: np.ndarray  # (M,) int64 index into flip_masks, sorted
    term_signs: np.ndarray  # (M,) int64 sign masks z_t
    term_coeffs: np.ndarray  # (M,) complex128 c~_t = c_t (-i)^{n_Y}, Hartree

    @property
    def n_terms(self) -> int:
        return len(self.term_coeffs)

    @property
    def n_flip_masks(self) -> int:
        return len(self.flip_masks)

    @classmethod
    def from_qubit_operator(cls, op, n_qubits: int) -> "PauliHamiltonian":
        flips, signs, coeffs = [], [], []
        for term, coeff in op.terms.items():
            if abs(coeff) <= COEFF_TOL:
                continue
            f = z = n_y = 0
            for qubit, pauli in term:
                if pauli in "XY":
                    f |= 1 << qubit
                if pauli in "YZ":
                    z |= 1 << qubit
                n_y += pauli == "Y"
            flips.append(f)
            signs.append(z)
            coeffs.append(complex(coeff) * (-1j) ** n_y)
        if not flips:  # H = 0
            flips, signs, coeffs = [0], [0], [0j]
        flips, signs, coeffs = np.array(flips, np.int64), np.array(signs, np.int64), np.array(coeffs, np.complex128)
        masks, group = np.unique(flips, return_inverse=True)  # sorted: the diagonal mask 0 comes first
        if masks[0] != 0:
            masks, group = np.concatenate([[0], masks]), group + 1
        order = np.lexsort((signs, group))
        return cls(n_qubits, masks, group[order], signs[order], coeffs[order])

    @classmethod
    def from_integrals(cls, ints: Integrals) -> "PauliHamiltonian":
        from openfermion import jordan_wigner

        return cls.from_qubit_operator(jordan_wigner(interaction_operator(ints)), 2 * ints.n_orb)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"flip_masks": self.flip_masks, "term_group": self.term_group, "term_signs": self.term_signs,
                "term_coeffs": self.term_coeffs}

    def sector_trace(self, n_alpha: int, n_beta: int) -> float:
        """Tr H over the (N_alpha, N_beta) sector, exactly, from the diagonal strings.

        For a Z string with a alpha and b beta positions, sum_x (-1)^{x.z} over the sector factorises into
        K(a; n_orb, N_alpha) * K(b; n_orb, N_beta) with K(a; n, N) = sum_k (-1)^k C(a, k) C(n - a, N - k).
        """
        n_orb = self.n_qubits // 2
        alpha_bits = sum(1 << (2 * p) for p in range(n_orb))
        total = 0.0
        for z, c in zip(self.term_signs[self.term_group == 0], self.term_coeffs[self.term_group == 0]):
            a = bin(int(z) & alpha_bits).count("1")
            b = bin(int(z) & ~alpha_bits).count("1")
            total += c.real * _kraw(a, n_orb, n_alpha) * _kraw(b, n_orb, n_beta)
        return total


def _kraw(a: int, n: int, occupied: int) -> int:
    """sum over occupations of `occupied` electrons in n orbitals of (-1)^{electrons among a fixed a orbitals}."""
    return sum((-1) ** k * math.comb(a, k) * math.comb(n - a, occupied - k) for k in range(0, min(a, occupied) + 1))


class CompiledHamiltonian:
    """Torch tensors of a PauliHamiltonian on one device, read by the local-energy kernel.

    flip_bits (n, K) and sign_bits (n, M) are float matrices so that overlaps and parities become GEMMs.
    """

    def __init__(self, pauli: PauliHamiltonian, n_alpha: int, n_beta: int, device: str | torch.device = "cpu"):
        dev = torch.device(device)
        n = pauli.n_qubits
        self.n_qubits, self.n_alpha, self.n_beta, self.device = n, n_alpha, n_beta, dev
        self.flip_masks = torch.as_tensor(pauli.flip_masks, device=dev)
        self.term_group = torch.as_tensor(pauli.term_group, device=dev)
        shifts = torch.arange(n, device=dev)
        flip_bits = ((self.flip_masks.unsqueeze(0) >> shifts.unsqueeze(1)) & 1).to(torch.float64)  # (n, K)
        self.flip_alpha = flip_bits[0::2]  # (n_orb, K)
        self.flip_beta = flip_bits[1::2]
        self.half_alpha = self.flip_alpha.sum(0) / 2  # x XOR f keeps N_alpha iff |x & f_alpha| = |f_alpha| / 2
        self.half_beta = self.flip_beta.sum(0) / 2
        signs = torch.as_tensor(pauli.term_signs, device=dev)
        self.sign_bits = ((signs.unsqueeze(0) >> shifts.unsqueeze(1)) & 1).to(torch.float64)  # (n, M)
        coeffs = torch.as_tensor(pauli.term_coeffs, device=dev)
        self.is_real = bool(coeffs.imag.abs().max() < COEFF_TOL)
        self.term_coeffs = coeffs.real.contiguous() if self.is_real else coeffs
        self.n_flip_masks = len(pauli.flip_masks)
        self.n_terms = len(pauli.term_coeffs)
        # transposed tables for the kernel's (M, C) / (K, C) layout: all float GEMM results are small integers
        # (or halves of them), exact in float32/float64
        self.half_sign_rows = (0.5 * self.sign_bits.T).contiguous()  # (M, n) float64
        self.flip_alpha_rows = self.flip_alpha.T.contiguous().to(torch.float32)  # (K, n_orb)
        self.flip_beta_rows = self.flip_beta.T.contiguous().to(torch.float32)
        self.half_alpha_col = self.half_alpha.to(torch.float32).unsqueeze(1)  # (K, 1)
        self.half_beta_col = self.half_beta.to(torch.float32).unsqueeze(1)
        self.coeff_col = self.term_coeffs.unsqueeze(1)  # (M, 1)
        self.minus4_coeff_col = -4.0 * self.coeff_col
        self.patterns = build_pattern_tables(n, pauli.flip_masks, pauli.term_group, pauli.term_signs,
                                             pauli.term_coeffs.real if self.is_real else pauli.term_coeffs, dev)

    @property
    def gemm_columns(self) -> int:
        """Columns of the kernel's GEMMs per sample (FLOPs = 2 * batch * n_qubits * gemm_columns)."""
        if self.patterns is not None:
            return self.patterns.gemm_columns
        return self.n_terms + self.n_flip_masks  # parities against every string, sector overlaps
