"""The scaling law L(N, D') in its reference-point form, as fitted by `nqs.scaling.fit`.

L(N, D') = A0[g] + Σ_k A_k·(N_k/N_kc)^-α_k + A_D·(D'/D'_c)^-α_D, with (N_c, D'_c) the data's geometric centre,
so that each amplitude is its term's value at the centre (the classic A·N^-α form has A = A_k·N_kc^α_k).
The interaction form adds A12·(N/N_c)^-α1·(D'/D'_c)^-α2: the error's slope in N then grows with D' and its
slope in D' with N, as the first H2O study measured (../shared/SCALING-METHOD.md, design rule 7).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nqs.errors import UserError

VANISHED = 1e-6  # an amplitude below this fraction of L̂ at the centre counts as zero


@dataclass(frozen=True)
class Law:
    """L(N, D') = A0[g] + Σ_k A_k·(N_k/N_kc)^-α_k + A_D·(D'/D'_c)^-α_D, g the point's floor group.

    `size_terms` names the N columns ("N", or "N_modulus" and "N_phase"); `floor_groups` is ("all",) or the
    molecules, one floor each; `exponents` list the size terms, then the D' term; `amplitudes` the same terms,
    then A12 when `interaction` (one size term only)."""

    size_terms: tuple[str, ...]
    n_centre: tuple[float, ...]
    d_centre: float
    floor_groups: tuple[str, ...]
    floors: tuple[float, ...]
    amplitudes: tuple[float, ...]
    exponents: tuple[float, ...]
    interaction: bool = False

    @property
    def design(self) -> np.ndarray:
        """(terms × exponents) 0/1 matrix: term c is exp(−Σ_j E[c, j]·α_j·log(x_j/x_jc))."""
        return term_design(len(self.exponents), self.interaction)

    def floor(self, molecule: str | None = None) -> float:
        if len(self.floors) == 1:
            return self.floors[0]
        if molecule is None:
            raise UserError("this law has one floor per molecule; name the molecule")
        try:
            return self.floors[self.floor_groups.index(molecule)]
        except ValueError:
            raise UserError(f"no floor for {molecule!r}: the law was fitted on "
                            f"{', '.join(self.floor_groups)}") from None

    def terms(self, n, d) -> np.ndarray:
        """The power-law terms (m × (k+1)) without the floor, for N of shape (m,) or (m, k) and D' (m,)."""
        n = np.asarray(n, dtype=float).reshape(np.asarray(d, dtype=float).size, -1)
        z = np.column_stack([np.log(n / np.asarray(self.n_centre)), np.log(np.asarray(d, float).ravel() / self.d_centre)])
        return np.asarray(self.amplitudes) * np.exp(-(z * np.asarray(self.exponents)) @ self.design.T)

    def predict(self, n, d, molecule=None) -> np.ndarray:
        """L̂ for N (m,) or (m, k) and D' (m,); `molecule` a name or one per point (needed with per-molecule floors)."""
        d = np.atleast_1d(np.asarray(d, dtype=float))
        mols = np.broadcast_to(np.asarray(molecule, dtype=object), d.shape) if molecule is not None else [None] * d.size
        floor = np.array([self.floor(m) for m in mols]) if len(self.floors) > 1 else self.floors[0]
        return floor + self.terms(n, d).sum(axis=1)

    def params(self) -> dict[str, float]:
        """Named coefficients: A0 (or A0[molecule]), A1/alpha1 (or A1_modulus, ...), A2/alpha2, A12. An
        exponent whose term vanished (amplitude 0, and no interaction carrying it) is NaN: not identified."""
        out = {}
        for g, v in zip(self.floor_groups, self.floors):
            out["A0" if len(self.floors) == 1 else f"A0[{g}]"] = v
        amp = np.asarray(self.amplitudes)
        carried = self.design * amp[:, None] > VANISHED * (np.mean(self.floors) + amp.sum())  # (terms × exponents)
        for j, (name, a, al) in enumerate(zip(term_names(self.size_terms), self.amplitudes, self.exponents)):
            out[f"A{name}"], out[f"alpha{name}"] = a, (al if carried[:, j].any() else float("nan"))
        if self.interaction:
            out["A12"] = self.amplitudes[-1]
        return out

    def derived(self) -> dict[str, float]:
        """Elasticities −∂log L/∂log x at the data centre (per molecule with per-molecule floors) and, for the
        additive law with one size term, the allocation exponent a = α2/(α1 + α2) of a cost ∝ N·D'."""
        amp = np.asarray(self.amplitudes)
        slopes = (self.design * amp[:, None]).sum(axis=0) * np.asarray(self.exponents)  # Σ_c E[c,j]·A_c·α_j
        names = [s for s in self.size_terms] + ["D"]
        out = {}
        for g, floor in zip(self.floor_groups, self.floors):
            tag = "" if len(self.floors) == 1 else f"[{g}]"
            lc = floor + amp.sum()
            out.update({f"elasticity_{s}{tag}": float(v / lc) for s, v in zip(names, slopes)})
        if len(self.size_terms) == 1 and not self.interaction:
            s = self.exponents[0] + self.exponents[1]
            out["allocation_exponent"] = self.exponents[1] / s if s > 0 else float("nan")
        return out

    def to_json(self) -> dict:
        return {"size_terms": list(self.size_terms), "n_centre": list(self.n_centre), "d_centre": self.d_centre,
                "floor_groups": list(self.floor_groups), "interaction": self.interaction,
                "params": self.params(), "derived": self.derived()}


def term_design(n_exponents: int, interaction: bool) -> np.ndarray:
    """The identity (one term per exponent), plus a row of ones for the N × D' interaction term."""
    eye = np.eye(n_exponents)
    return np.vstack([eye, np.ones((1, n_exponents))]) if interaction else eye


def term_names(size_terms: Sequence[str]) -> list[str]:
    """Suffixes of the amplitude/exponent names: ["1", "2"] or ["1_modulus", "1_phase", "2"]."""
    if len(size_terms) == 1:
        return ["1", "2"]
    return [f"1_{s.removeprefix('N_')}" for s in size_terms] + ["2"]
