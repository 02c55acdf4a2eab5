"""Symmetries of H as signed permutations of spin-orbitals, and a state's projection onto one of their characters.

A symmetry U maps a†_p → s_p a†_{π(p)} (spin-orbitals in Jordan–Wigner order: 2i is orbital i's α, 2i + 1 its β).
On a determinant |x⟩ = a†_{p1} … a†_{pk}|0⟩ (p1 < … < pk) it gives U|x⟩ = sign_U(x) |π(x)⟩ with
sign_U(x) = Π s_p · (−1)^{inversions of π(p1) … π(pk)}. Here every U is an involution (U² = 1), so
(Uψ)(x) = sign_U(π(x)) ψ(π(x)), and the group they generate is abelian with characters χ_U = ±1.

- `spin_flip(n_orb)`: α ↔ β in every orbital; a symmetry of every spin-free H in the sector N_α = N_β
  (on a singlet, ψ(x') = ±(−1)^{n_doubly occupied} ψ(x)).
- `orbital_symmetries(integrals)`: the orbital permutation that swaps the pairs of orbitals alike in h1_ii and
  (ii|ii), with the orbital signs that make h1 and (pq|rs) invariant to `tol` (a chain's Boys-localised
  orbitals: its mirror, H16 to 3e-15 Ha; LiH's canonical ones: 2p_x ↔ 2p_y).

The projection P ψ = (1/|G|) Σ_g χ_g U_g ψ keeps the part of ψ in the characters' representation; where the
exact state has that symmetry, the part taken away is the network's error alone, and the variational energy of
P ψ is the network's with that error taken out (H16 at session 32's weights, on the DMRG determinants with
|c| ≥ 2e-5: +4.454 mHa, +4.041 with the spin flip, +3.256 with the flip and the mirror; docs/benchmarks.md,
session 33).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import sys

import numpy as np
import torch

from nqs.errors import UserError
from nqs.keys import KeyIndex, pack


@dataclass(frozen=True)
class Symmetry:
    """U: a†_p → signs[p] a†_{perm[p]} over n spin-orbitals (an involution)."""

    name: str
    perm: tuple[int, ...]  # (n,) spin-orbital p goes to perm[p]
    signs: tuple[int, ...]  # (n,) ±1
    residual: float = 0.0  # Hartree: the largest change of an integral of H under U (Boys orbitals: ~1e-8)

    def __post_init__(self):
        p = np.asarray(self.perm)
        if sorted(self.perm) != list(range(len(p))) or not np.array_equal(p[p], np.arange(len(p))):
            raise ValueError(f"{self.name}: not an involution of the spin-orbitals: {self.perm}")
        if len(self.signs) != len(p) or any(s not in (1, -1) for s in self.signs):
            raise ValueError(f"{self.name}: signs must be ±1, one per spin-orbital")

    def then(self, other: Symmetry) -> Symmetry:
        """`other` after `self` (both involutions that commute, so the product is one too)."""
        perm = tuple(other.perm[q] for q in self.perm)
        signs = tuple(s * other.signs[q] for s, q in zip(self.signs, self.perm))
        return Symmetry(f"{self.name}·{other.name}", perm, signs, max(self.residual, other.residual))

    def apply(self, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(π(x) (K, n) like `bits`, sign_U(x) (K,) float64) for determinants `bits` (K, n) of 0/1."""
        perm = torch.as_tensor(self.perm)
        mapped = torch.zeros_like(bits)
        mapped[:, perm] = bits
        x = bits.to(torch.float64)
        # inversions: pairs p < q, both occupied, with perm[p] > perm[q]
        later = torch.triu(torch.ones(len(perm), len(perm), dtype=torch.bool), 1)
        crossing = (later & (perm[:, None] > perm[None, :])).to(torch.float64)
        inversions = ((x @ crossing) * x).sum(1)
        flips = (x * (torch.as_tensor(self.signs) < 0)).sum(1) + inversions
        return mapped, 1.0 - 2.0 * torch.remainder(flips, 2)


def spin_flip(n_orb: int) -> Symmetry:
    perm = tuple(p ^ 1 for p in range(2 * n_orb))
    return Symmetry("spin flip", perm, (1,) * (2 * n_orb))


def orbital_symmetries(integrals, tol: float = 1e-6) -> list[Symmetry]:
    """The signed orbital permutation swapping each pair of orbitals with the same h1_ii and (ii|ii) (to `tol`,
    Hartree), when such pairs exist and h1, (pq|rs) are invariant under it to `tol` with some orbital signs (its
    `residual` says how closely); [] otherwise. Boys-localised orbitals are symmetric to their localisation's
    convergence (H6: 4e-8 Ha; H16: 3e-15)."""
    h1, h2 = np.asarray(integrals.h1), np.asarray(integrals.h2)
    n = h1.shape[0]
    signature = np.stack([np.diag(h1), np.einsum("iiii->i", h2)], 1)
    orbital = np.arange(n)
    for i, j in combinations(range(n), 2):
        if np.abs(signature[i] - signature[j]).max() < tol and orbital[i] == i and orbital[j] == j:
            orbital[i], orbital[j] = j, i
    if np.array_equal(orbital, np.arange(n)):
        return []
    found = _orbital_signs(h1, h2, orbital, tol)
    if found is None:
        return []
    signs, residual = found
    perm = tuple(int(2 * orbital[p // 2] + p % 2) for p in range(2 * n))
    return [Symmetry("orbital swap", perm, tuple(int(signs[p // 2]) for p in range(2 * n)), residual)]


def _orbital_signs(h1: np.ndarray, h2: np.ndarray, orbital: np.ndarray, tol: float
                   ) -> tuple[np.ndarray, float] | None:
    """(orbital signs σ with σ_p σ_q h1[π p, π q] = h1[p, q] and the same for (pq|rs) to `tol`, the largest
    change), or None: σ fixed along the strongest couplings (h1 and the (pq|rr) sums), then checked on every
    integral."""
    coupling = h1 + np.einsum("pqrr->pq", h2)
    mapped = coupling[np.ix_(orbital, orbital)]
    n, sigma = len(orbital), np.zeros(len(orbital))
    sigma[0] = 1
    while (sigma == 0).any():
        known, unknown = np.flatnonzero(sigma), np.flatnonzero(sigma == 0)
        block = np.abs(coupling[np.ix_(known, unknown)])
        a, b = np.unravel_index(np.argmax(block), block.shape)
        p, q = known[a], unknown[b]
        sigma[q] = sigma[p] * (np.sign(coupling[p, q] * mapped[p, q]) if block[a, b] > tol else 1.0)
    pair = np.outer(sigma, sigma)
    quad = np.einsum("pq,rs->pqrs", pair, pair)
    residual = max(np.abs(pair * h1[np.ix_(orbital, orbital)] - h1).max(),
                   np.abs(quad * h2[np.ix_(orbital, orbital, orbital, orbital)] - h2).max())
    return (sigma, float(residual)) if residual < tol and n > 0 else None


def symmetries_of(integrals, n_alpha: int, n_beta: int) -> list[Symmetry]:
    """The generators found for a problem: the spin flip where N_α = N_β, then `orbital_symmetries`."""
    found = [spin_flip(integrals.h1.shape[0])] if n_alpha == n_beta else []
    return found + orbital_symmetries(integrals)


def group(generators: list[Symmetry]) -> list[Symmetry]:
    """Every product of the (commuting) generators, the identity excluded: 2^g − 1 elements."""
    elements: list[Symmetry] = []
    for g in generators:
        elements += [g] + [e.then(g) for e in elements]
    return elements


@dataclass(frozen=True)
class Projection:
    """P on a set of determinants: for each group element g, each row's partner π_g(x) in the set (−1: absent)
    and sign_g; `characters` χ_g (±1) of the representation kept."""

    elements: tuple[Symmetry, ...]
    partners: tuple[torch.Tensor, ...]  # each (K,) int64
    signs: tuple[torch.Tensor, ...]  # each (K,) float64: sign_g(π_g(x)), the factor of ψ(π_g(x)) in (U_g ψ)(x)
    characters: tuple[int, ...]

    @property
    def closed(self) -> float:
        """The share of (row, element) pairs whose partner is in the set."""
        return float(torch.stack([(p >= 0).double().mean() for p in self.partners]).mean()) if self.partners else 1.0

    def images(self, psi: torch.Tensor) -> list[torch.Tensor]:
        """U_g ψ on the set for each g, (K,) like ψ; a row whose partner is absent keeps χ_g ψ(x) (its pair is
        taken as symmetric: P leaves it as it is)."""
        out = []
        for partner, sign, chi in zip(self.partners, self.signs, self.characters):
            found = partner >= 0
            out.append(torch.where(found, sign.to(psi.dtype) * psi[partner.clamp(min=0)], chi * psi))
        return out

    def __call__(self, psi: torch.Tensor) -> torch.Tensor:
        """P ψ = (ψ + Σ_g χ_g U_g ψ) / |G| on the set, (K,) like ψ."""
        total = psi.clone()
        for chi, image in zip(self.characters, self.images(psi)):
            total += chi * image
        return total / (len(self.elements) + 1)


def projection(bits: torch.Tensor, generators: list[Symmetry], psi: torch.Tensor,
               characters: tuple[int, ...] | None = None) -> Projection:
    """P on the set `bits` (K, n) for the group of `generators`; the characters are `characters` (one per group
    element, in `group`'s order) or read off ψ (K,): χ_g = sign Re⟨ψ|U_g ψ⟩ on the set, the representation ψ
    is nearest to."""
    elements = group(generators)
    index = KeyIndex(pack(bits), bits.shape[1])
    partners, signs = [], []
    for g in elements:
        mapped, _ = g.apply(bits)
        partner = index(pack(mapped))
        _, sign_there = g.apply(mapped)  # sign_g at π_g(x): the factor of ψ(π_g(x)) in (U_g ψ)(x)
        partners.append(partner)
        signs.append(sign_there)
    p = Projection(tuple(elements), tuple(partners), tuple(signs), (1,) * len(elements))
    if characters is None:
        characters = tuple(1 if float(torch.vdot(psi, image).real) >= 0 else -1 for image in p.images(psi))
    if len(characters) != len(elements):
        raise ValueError(f"{len(characters)} characters for {len(elements)} group elements")
    return Projection(tuple(elements), tuple(partners), tuple(signs), tuple(int(c) for c in characters))


def target_projection(problem, target, flag: str = "--symmetrize") -> tuple[Projection, dict]:
    """P on a target state's set (`nqs.target_states.TargetState`: its determinants) for the problem's symmetries,
    with the state's own characters, and what a record says of it {"generators", "characters", "closed"}; one
    line on stderr. A problem with none is a UserError naming `flag`."""
    generators = symmetries_of(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
    if not generators:
        raise UserError(f"{flag}: no spin flip (N_α ≠ N_β) and no orbital swap in this molecule's orbitals: "
                        f"drop {flag}")
    p = projection(target.bits, generators, target.amplitudes.to(torch.complex128))
    said = {"generators": [{"name": g.name, "residual_ha": g.residual} for g in generators],
            "characters": list(p.characters), "closed": p.closed}
    print(f"note: {flag}: the energies are of Pψ, the network projected over {', '.join(g.name for g in generators)}"
          f" (characters {list(p.characters)} from the {target.kind} state; {p.closed:.4%} of the set's images in "
          f"the set)", file=sys.stderr, flush=True)
    return p, said
