"""The scaling law L(N, D') in its reference-point form, as fitted by `nqs.scaling.fit`.

L(N, D') = A0[g] + Σ_k A_k·(N_k/N_kc)^-α_k + A_D·(D'/D'_c)^-α_D, with (N_c, D'_c) the data's geometric centre,
so that each amplitude is its term's value at the centre (the classic A·N^-α form has A = A_k·N_kc^α_k).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nqs.errors import UserError


@dataclass(frozen=True)
class Law:
    """L(N, D') = A0[g] + Σ_k A_k·(N_k/N_kc)^-α_k + A_D·(D'/D'_c)^-α_D, g the point's floor group.

    `size_terms` names the N columns ("N", or "N_modulus" and "N_phase"); `floor_groups` is ("all",) or the
    molecules, one floor each; `amplitudes` and `exponents` list the size terms, then the D' term."""

    size_terms: tuple[str, ...]
    n_centre: tuple[float, ...]
    d_centre: float
    floor_groups: tuple[str, ...]
    floors: tuple[float, ...]
    amplitudes: tuple[float, ...]
    exponents: tuple[float, ...]

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
        return np.asarray(self.amplitudes) * np.exp(-np.asarray(self.exponents) * z)

    def predict(self, n, d, molecule=None) -> np.ndarray:
        """L̂ for N (m,) or (m, k) and D' (m,); `molecule` a name or one per point (needed with per-molecule floors)."""
        d = np.atleast_1d(np.asarray(d, dtype=float))
        mols = np.broadcast_to(np.asarray(molecule, dtype=object), d.shape) if molecule is not None else [None] * d.size
        floor = np.array([self.floor(m) for m in mols]) if len(self.floors) > 1 else self.floors[0]
        return floor + self.terms(n, d).sum(axis=1)

    @property
    def centre_value(self) -> float:
        """L̂ at the data centre (N_c, D'_c), with the floors averaged."""
        return float(np.mean(self.floors) + sum(self.amplitudes))

    def params(self) -> dict[str, float]:
        """Named coefficients: A0 (or A0[molecule]), A1/alpha1 (or A1_modulus, ...), A2/alpha2."""
        out = {}
        for g, v in zip(self.floor_groups, self.floors):
            out["A0" if len(self.floors) == 1 else f"A0[{g}]"] = v
        for name, a, al in zip(term_names(self.size_terms), self.amplitudes, self.exponents):
            out[f"A{name}"], out[f"alpha{name}"] = a, al
        return out

    def derived(self) -> dict[str, float]:
        """Elasticities −∂log L/∂log x at the data centre and, for one size term, a = α2/(α1 + α2)."""
        lc = self.centre_value
        out = {f"elasticity_{s}": a * al / lc for s, a, al in
               zip(self.size_terms + ("D",), self.amplitudes, self.exponents)}
        if len(self.size_terms) == 1:
            s = self.exponents[0] + self.exponents[1]
            out["allocation_exponent"] = self.exponents[1] / s if s > 0 else float("nan")
        return out

    def to_json(self) -> dict:
        return {"size_terms": list(self.size_terms), "n_centre": list(self.n_centre), "d_centre": self.d_centre,
                "floor_groups": list(self.floor_groups), "params": self.params(), "derived": self.derived()}


def term_names(size_terms: Sequence[str]) -> list[str]:
    """Suffixes of the amplitude/exponent names: ["1", "2"] or ["1_modulus", "1_phase", "2"]."""
    if len(size_terms) == 1:
        return ["1", "2"]
    return [f"1_{s.removeprefix('N_')}" for s in size_terms] + ["2"]
