"""The scaling law L(N, D') in its reference-point form, as fitted by `nqs.scaling.fit`.

L(N, D') = A0[g] + Σ_k A_k[h]·(N_k/N_kc)^-α_k + A_D[h]·(D'/D'_c)^-α_D, with (N_c, D'_c) the data's geometric
centre, so that each amplitude is its term's value at the centre (the classic A·N^-α form has A = A_k·N_kc^α_k).
The floors (g) and the amplitudes (h) are either shared by all molecules or one per molecule; the exponents are
always shared, so that a pooled fit measures one law whose scale may differ from molecule to molecule.
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
    """L(N, D') = A0[g] + Σ_k A_k[h]·(N_k/N_kc)^-α_k + A_D[h]·(D'/D'_c)^-α_D, g and h the point's groups.

    `size_terms` names the N columns ("N", or "N_modulus" and "N_phase"); `floor_groups` is ("all",) or the
    molecules, one floor each; `exponents` list the size terms, then the D' term; `amplitudes` the same terms,
    then A12 when `interaction` (one size term only), each term once per `amplitude_groups` entry (term-major:
    amplitudes[c·H + h]), ("all",) or the molecules."""

    size_terms: tuple[str, ...]
    n_centre: tuple[float, ...]
    d_centre: float
    floor_groups: tuple[str, ...]
    floors: tuple[float, ...]
    amplitudes: tuple[float, ...]
    exponents: tuple[float, ...]
    interaction: bool = False
    amplitude_groups: tuple[str, ...] = ("all",)

    @property
    def design(self) -> np.ndarray:
        """(terms × exponents) 0/1 matrix: term c is exp(−Σ_j E[c, j]·α_j·log(x_j/x_jc))."""
        return term_design(len(self.exponents), self.interaction)

    @property
    def amplitude_matrix(self) -> np.ndarray:
        """(terms × amplitude groups) amplitudes."""
        return np.asarray(self.amplitudes, dtype=float).reshape(-1, len(self.amplitude_groups))

    @property
    def groups(self) -> tuple[str, ...]:
        """The molecules the law has coefficients for, or ("all",) when every coefficient is shared."""
        per = [g for g in (self.floor_groups, self.amplitude_groups) if len(g) > 1]
        return per[0] if per else ("all",)

    def _index(self, groups: tuple[str, ...], molecule: str | None, what: str) -> int:
        if len(groups) == 1:
            return 0
        if molecule is None:
            raise UserError(f"this law has one {what} per molecule; name the molecule")
        try:
            return groups.index(molecule)
        except ValueError:
            raise UserError(f"no {what} for {molecule!r}: the law was fitted on {', '.join(groups)}") from None

    def floor(self, molecule: str | None = None) -> float:
        return self.floors[self._index(self.floor_groups, molecule, "floor")]

    def amplitudes_for(self, molecule: str | None = None) -> np.ndarray:
        """The amplitudes (terms,) that apply to `molecule`."""
        return self.amplitude_matrix[:, self._index(self.amplitude_groups, molecule, "set of amplitudes")]

    def _per_point(self, groups: tuple[str, ...], molecule, size: int, what: str) -> np.ndarray:
        """(size,) index into `groups` for each point; `molecule` a name or one per point."""
        if len(groups) == 1:
            return np.zeros(size, dtype=int)
        mols = np.broadcast_to(np.asarray(molecule, dtype=object), (size,))
        lookup = {m: self._index(groups, m, what) for m in set(mols.tolist())}
        return np.array([lookup[m] for m in mols], dtype=int)

    def terms(self, n, d, molecule=None) -> np.ndarray:
        """The power-law terms (m × terms) without the floor, for N of shape (m,) or (m, k), D' (m,) and
        `molecule` a name or one per point (needed with per-molecule amplitudes)."""
        d = np.atleast_1d(np.asarray(d, dtype=float)).ravel()
        n = np.asarray(n, dtype=float).reshape(d.size, -1)
        z = np.column_stack([np.log(n / np.asarray(self.n_centre)), np.log(d / self.d_centre)])
        shapes = np.exp(-(z * np.asarray(self.exponents)) @ self.design.T)
        group = self._per_point(self.amplitude_groups, molecule, d.size, "set of amplitudes")
        return self.amplitude_matrix[:, group].T * shapes

    def predict(self, n, d, molecule=None) -> np.ndarray:
        """L̂ for N (m,) or (m, k) and D' (m,); `molecule` a name or one per point (needed with per-molecule
        floors or amplitudes)."""
        d = np.atleast_1d(np.asarray(d, dtype=float))
        floor = np.asarray(self.floors)[self._per_point(self.floor_groups, molecule, d.size, "floor")]
        return floor + self.terms(n, d, molecule).sum(axis=1)

    def params(self) -> dict[str, float]:
        """Named coefficients: A0 (or A0[molecule]), A1/alpha1 (or A1_modulus, ...; A1[molecule] with
        per-molecule amplitudes), A2/alpha2, A12. An exponent whose term vanished (amplitude 0 for every
        molecule, and no interaction carrying it) is NaN: not identified."""
        out = {}
        for g, v in zip(self.floor_groups, self.floors):
            out["A0" if len(self.floors) == 1 else f"A0[{g}]"] = v
        amp = self.amplitude_matrix  # (terms × H)
        scale = np.mean(self.floors) + amp.sum(axis=0).mean()
        carried = self.design * amp.max(axis=1)[:, None] > VANISHED * scale  # (terms × exponents)
        names = [*term_names(self.size_terms), *(["12"] if self.interaction else [])]
        for c, name in enumerate(names):
            for h, g in enumerate(self.amplitude_groups):
                out[f"A{name}" if len(self.amplitude_groups) == 1 else f"A{name}[{g}]"] = float(amp[c, h])
            if c < len(self.exponents):
                out[f"alpha{name}"] = self.exponents[c] if carried[:, c].any() else float("nan")
        return out

    def derived(self) -> dict[str, float]:
        """Elasticities −∂log L/∂log x at the data centre (per molecule with per-molecule floors or amplitudes)
        and, for the additive law with one size term, the allocation exponent a = α2/(α1 + α2) of a cost
        ∝ N·D'."""
        names = [s for s in self.size_terms] + ["D"]
        out = {}
        for g in self.groups:
            m = None if g == "all" else g
            amp = self.amplitudes_for(m)
            slopes = (self.design * amp[:, None]).sum(axis=0) * np.asarray(self.exponents)  # Σ_c E[c,j]·A_c·α_j
            tag = "" if g == "all" else f"[{g}]"
            lc = self.floor(m) + amp.sum()
            out.update({f"elasticity_{s}{tag}": float(v / lc) for s, v in zip(names, slopes)})
        if len(self.size_terms) == 1 and not self.interaction:
            s = self.exponents[0] + self.exponents[1]
            out["allocation_exponent"] = self.exponents[1] / s if s > 0 else float("nan")
        return out

    def to_json(self) -> dict:
        return {"size_terms": list(self.size_terms), "n_centre": list(self.n_centre), "d_centre": self.d_centre,
                "floor_groups": list(self.floor_groups), "amplitude_groups": list(self.amplitude_groups),
                "interaction": self.interaction,
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
