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

Two more projections act on a state over a set of determinants (`Projector` applies all three):
- `SpinProjection`: Löwdin's projector Π_{S'≠S} (S² − S'(S'+1)) / (S(S+1) − S'(S'+1)) onto total spin S, with S²
  on the set (`spin_squared`; exchanges that leave the set are dropped, so on a set not closed under them it is
  near a projector, not one). With the spin flip in the group, the S' of the other parity are gone already and
  only those of S's parity are taken out.
- `real_part`: H is real, so its eigenstates are real up to one global phase; e^{iθ} Re(e^{−iθ} ψ), θ making the
  real part largest, keeps that part. H real gives E(ψ) = (|R|² E(R) + |I|² E(I)) / |ψ|² for ψ = e^{iθ}(R + iI).

The projection P ψ = (1/|G|) Σ_g χ_g U_g ψ keeps the part of ψ in the characters' representation; where the
exact state has that symmetry, the part taken away is the network's error alone, and the variational energy of
P ψ is the network's with that error taken out (H16 at session 32's weights, on the DMRG determinants with
|c| ≥ 2e-5: +4.454 mHa, +4.041 with the spin flip, +3.256 with the flip and the mirror; docs/benchmarks.md,
session 33; session 33's last weights: Pψ +2.615, with S = 0 +2.442, and real as well +2.333; session 34).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import sys

import numpy as np
import scipy.sparse
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


def spin_squared(bits: torch.Tensor) -> tuple[scipy.sparse.csr_matrix, float]:
    """(S² on the set `bits` (K, n) of 0/1, (K, K) float64 CSR; the share of its off-diagonal moves that stay in
    the set). S² = S₋S₊ + S_z + S_z²: its diagonal is S_z² + S_z + the singly occupied β orbitals; S₋S₊ moves β
    from open orbital i to i's α and α from open j to j's β, with sign +1 (each orbital's α and β are neighbours
    in the Jordan–Wigner order, so each pair of operators leaves every other mode's parity as it was)."""
    x = bits.numpy().astype(bool)
    alpha, beta = x[:, 0::2], x[:, 1::2]
    open_alpha, open_beta = alpha & ~beta, beta & ~alpha
    sz = (alpha.sum(1) - beta.sum(1)) / 2.0
    K, n_orb = alpha.shape
    index = KeyIndex(pack(bits), bits.shape[1])
    rows, cols, moves = [np.arange(K)], [np.arange(K)], 0
    for i in range(n_orb):
        for j in range(n_orb):
            if i == j or not (found := np.flatnonzero(open_beta[:, i] & open_alpha[:, j])).size:
                continue
            moved = bits[found].clone()
            moved[:, [2 * i, 2 * i + 1, 2 * j, 2 * j + 1]] = torch.tensor([1, 0, 0, 1], dtype=bits.dtype)
            col = index(pack(moved)).numpy()
            moves += found.size
            rows.append(found[col >= 0])
            cols.append(col[col >= 0])
    kept = sum(len(r) for r in rows[1:])
    values = np.concatenate([sz ** 2 + sz + open_beta.sum(1), np.ones(kept)])
    matrix = scipy.sparse.csr_matrix((values, (np.concatenate(rows), np.concatenate(cols))), shape=(K, K))
    return matrix, (kept / moves if moves else 1.0)


@dataclass(frozen=True)
class SpinProjection:
    """Löwdin's projector onto total spin `spin` on a set: S² there and the S' taken out."""

    s_squared: scipy.sparse.csr_matrix  # (K, K)
    spin: float  # S kept
    removed: tuple[float, ...]  # the S' taken out
    closed: float  # the share of S²'s moves that stay in the set

    def __call__(self, psi: torch.Tensor) -> torch.Tensor:
        """(K,) complex128 → (K,) complex128."""
        keep = self.spin * (self.spin + 1)
        for s in self.removed:
            other = s * (s + 1)
            psi = (self.apply(psi) - other * psi) / (keep - other)
        return psi

    def apply(self, psi: torch.Tensor) -> torch.Tensor:
        """S²ψ, (K,) complex128."""
        v = psi.resolve_conj().numpy()
        return torch.from_numpy(self.s_squared @ v.real + 1j * (self.s_squared @ v.imag))

    def expectation(self, psi: torch.Tensor) -> float:
        """⟨S²⟩ of ψ on the set."""
        return float(torch.vdot(psi, self.apply(psi)).real / torch.vdot(psi, psi).real)


def spin_projection(bits: torch.Tensor, state: torch.Tensor, n_electrons: int, spin_flip_kept: bool
                    ) -> SpinProjection:
    """The projector onto the total spin S of `state` (K,) on `bits` (S from its ⟨S²⟩, to the nearest allowed
    value), taking out every other S' of the sector, or, with `spin_flip_kept` (the group's spin flip has taken
    out the other parity already), those of S's parity."""
    matrix, closed = spin_squared(bits)
    x = bits.numpy().astype(bool)
    sz = abs(int(x[0, 0::2].sum()) - int(x[0, 1::2].sum())) / 2.0
    n_orb = bits.shape[1] // 2
    allowed = np.arange(sz, min(n_electrons, 2 * n_orb - n_electrons) / 2 + 0.25, 1.0)
    probe = SpinProjection(matrix, 0.0, (), closed)
    seen = probe.expectation(state.to(torch.complex128))
    spin = float(allowed[np.argmin(np.abs(allowed * (allowed + 1) - seen))])
    removed = tuple(float(s) for s in allowed if s != spin and (not spin_flip_kept or (s - spin) % 2 == 0))
    return SpinProjection(matrix, spin, removed, closed)


def real_part(psi: torch.Tensor) -> torch.Tensor:
    """e^{iθ} Re(e^{−iθ} ψ) (K,) complex128, θ = arg(Σ ψ²)/2: the largest real part over global phases."""
    total = torch.sum(psi * psi)
    phase = total / total.abs() if total.abs() > 0 else torch.ones((), dtype=psi.dtype)
    return (psi + phase * psi.conj()) / 2


@dataclass(frozen=True)
class Projector:
    """The group's projection, then the spin's, then the real part (each optional), (K,) → (K,) complex128."""

    group: Projection | None = None
    spin: SpinProjection | None = None
    real: bool = False

    def __call__(self, psi: torch.Tensor) -> torch.Tensor:
        psi = psi.to(torch.complex128)
        if self.group is not None:
            psi = self.group(psi)
        if self.spin is not None:
            psi = self.spin(psi)
        return real_part(psi) if self.real else psi


def target_projection(problem, target, flag: str = "--symmetrize", spin: bool = True, real: bool = True
                      ) -> tuple[Projector, dict]:
    """The projector on a target state's set (`nqs.target_states.TargetState`: its determinants) for the problem's
    symmetries with the state's own characters, then (`spin`) onto the state's total spin and (`real`, for a real
    H) onto the real part, and what a record says of it {"generators", "characters", "closed", "spin", "real"};
    one line on stderr. A problem with no symmetry at all is a UserError naming `flag`."""
    generators = symmetries_of(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
    real = real and not np.iscomplexobj(problem.integrals.h1) and not np.iscomplexobj(problem.integrals.h2)
    if not generators and not spin and not real:
        raise UserError(f"{flag}: no spin flip (N_α ≠ N_β) and no orbital swap in this molecule's orbitals: "
                        f"drop {flag}")
    c = target.amplitudes.to(torch.complex128)
    p = projection(target.bits, generators, c) if generators else None
    flip = any(g.name == "spin flip" for g in generators)
    n_electrons = problem.sector.n_alpha + problem.sector.n_beta
    s = spin_projection(target.bits, c, n_electrons, flip) if spin else None
    said = {"generators": [{"name": g.name, "residual_ha": g.residual} for g in generators],
            "characters": list(p.characters) if p else [], "closed": p.closed if p else 1.0,
            "spin": None if s is None else {"S": s.spin, "removed": list(s.removed), "closed": s.closed},
            "real": real}
    parts = ([f"{', '.join(g.name for g in generators)} (characters {list(p.characters)} from the {target.kind} "
              f"state; {p.closed:.4%} of the set's images in the set)"] if p else [])
    if s is not None:
        parts.append(f"total spin S = {s.spin:g} (S² on the set, {s.closed:.4%} of its moves in the set)")
    if real:
        parts.append("the real part (H is real)")
    print(f"note: {flag}: the energies are of Pψ, the network projected onto " + "; ".join(parts),
          file=sys.stderr, flush=True)
    return Projector(p, s, real), said
