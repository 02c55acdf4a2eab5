"""Molecular orbitals of one geometry, saved as orbitals.npz, and their matching to another geometry's.

Canonical orbitals come out of the eigensolver with arbitrary signs, and orbitals of equal occupation swap
places when their energies cross; a model warm-started across geometries then meets configurations whose
amplitudes changed sign or position (LiH STO-3G: the sigma* orbital flips sign between 2.25 and 2.5 Å; N2:
occupied orbitals reorder at 1.0, 1.2, 1.4 Å). `match` reorders and re-signs one geometry's orbitals to follow
a reference geometry's: within each block of equal region (frozen core / active / frozen virtual) and
occupation, by the largest |<phi_ref|phi>| (cross-geometry AO overlap, Hungarian assignment), each orbital then
signed to overlap positively. This relabels orbitals and flips signs only: the Hamiltonian's spectrum is
unchanged. When the orbitals cannot be matched the canonical ones are kept and `Matching.notes` says so.
`localize` gives Boys-localized active orbitals (`nqs.chem.boys_active`) in the molecule's spatial order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nqs.molecules import MoleculeSpec, parse_geometry
from nqs.scan import geometry_text

ORBITALS_FILE = "orbitals.npz"  # in a run directory and a cache entry: the orbitals its Hamiltonian is written in
CORE, ACTIVE, VIRTUAL = 0, 1, 2  # regions; an orbital's block is 10 * region + occupation


@dataclass(frozen=True, eq=False)
class Orbitals:
    """MO coefficients of one geometry and the block of each orbital (10 * region + occupation 0/1/2); the
    molecule is kept as text so that its AO basis can be rebuilt for a cross-geometry overlap."""

    mo: np.ndarray  # (n_ao, n_mo) coefficients over the AO basis
    blocks: np.ndarray  # (n_mo,) int
    geometry: str  # 'SYMBOL x y z; ...' in Å
    basis: str
    charge: int
    spin: int  # 2S

    def spec(self) -> MoleculeSpec:
        return replace(parse_geometry(self.geometry), basis=self.basis, charge=self.charge, spin=self.spin)

    def digest(self) -> str:
        """A hash of the coefficients and blocks (bitwise): the cache key of a Hamiltonian in these orbitals."""
        h = hashlib.sha256(np.ascontiguousarray(self.mo, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.blocks, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> None:
        """Write an .npz file atomically (the keys of the orbitals.npz written by earlier versions)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, mo=self.mo, blocks=self.blocks, geometry=np.array(self.geometry),
                 basis=np.array(self.basis), charge=self.charge, spin=self.spin)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Orbitals:
        """Read an .npz file written by `save`; raises ValueError when it is damaged or incomplete."""
        try:
            with np.load(path) as z:
                return cls(mo=np.asarray(z["mo"], dtype=np.float64), blocks=np.asarray(z["blocks"]).astype(int),
                           geometry=str(z["geometry"]), basis=str(z["basis"]), charge=int(z["charge"]),
                           spin=int(z["spin"]))
        except (OSError, KeyError, ValueError, TypeError, EOFError) as exc:
            raise ValueError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None


def canonical(spec: MoleculeSpec, mo: np.ndarray, occupations: np.ndarray, n_core: int, n_act: int) -> Orbitals:
    """The record of canonical orbitals `mo` with their SCF occupations, the first n_core frozen and the next
    n_act active."""
    n_mo = mo.shape[1]
    region = np.array([CORE] * n_core + [ACTIVE] * n_act + [VIRTUAL] * (n_mo - n_core - n_act))
    blocks = 10 * region + np.asarray(occupations).round().astype(int)
    return Orbitals(mo=np.asarray(mo, dtype=np.float64), blocks=blocks, geometry=geometry_text(spec),
                    basis=spec.basis, charge=spec.charge, spin=spec.spin)


@dataclass(frozen=True, eq=False)
class Matching:
    """`orbitals`: matched to the reference (`matched`), or the canonical ones with `notes` saying why not.
    `reordered`: orbitals that moved; `resigned`: orbitals whose sign was flipped."""

    orbitals: Orbitals
    matched: bool
    notes: tuple[str, ...] = ()
    reordered: int = 0
    resigned: int = 0

    def describe(self) -> str:
        if not self.matched:
            return "canonical orbitals"
        return f"orbitals matched ({self.reordered} reordered, {self.resigned} re-signed)"


def match(current: Orbitals, reference: Orbitals, label: str = "the reference") -> Matching:
    """`current` reordered and re-signed to follow `reference` (another geometry of the same molecule and basis),
    block by block; `label` names the reference in the note written when they cannot be matched."""
    from pyscf import gto
    from scipy.optimize import linear_sum_assignment

    from nqs.chem import build_mole

    mo, blocks = current.mo, current.blocks
    if reference.mo.shape != mo.shape or not np.array_equal(np.sort(reference.blocks), np.sort(blocks)):
        note = (f"orbitals not matched to {label}: its orbitals ({reference.mo.shape[1]} MOs over "
                f"{reference.mo.shape[0]} AOs, blocks {_counts(reference.blocks)}) are not those of this geometry "
                f"({mo.shape[1]} over {mo.shape[0]}, blocks {_counts(blocks)}); canonical orbitals used, so the warm "
                f"start may meet re-signed or reordered orbitals")
        return Matching(current, False, (note,))
    cross = gto.intor_cross("int1e_ovlp", build_mole(reference.spec(), False), build_mole(current.spec(), False))
    overlap = reference.mo.T @ cross @ mo  # (ref MO, current MO)
    out = np.empty_like(mo)
    reordered = resigned = 0
    for b in np.unique(blocks):
        cols, ref_cols = np.flatnonzero(blocks == b), np.flatnonzero(reference.blocks == b)
        rows, pick = linear_sum_assignment(-np.abs(overlap[np.ix_(ref_cols, cols)]))
        for i, j in zip(rows, pick):
            sign = -1.0 if overlap[ref_cols[i], cols[j]] < 0 else 1.0
            out[:, ref_cols[i]] = sign * mo[:, cols[j]]
            reordered += int(ref_cols[i] != cols[j])
            resigned += int(sign < 0)
    return Matching(replace(current, mo=out, blocks=np.array(reference.blocks)), True, (), reordered, resigned)


def read_reference(run_dir: Path) -> tuple[Orbitals | None, tuple[str, ...]]:
    """The orbitals of the run in `run_dir` (its orbitals.npz), or None with a note saying why there are none."""
    path = Path(run_dir) / ORBITALS_FILE
    if not path.is_file():
        note = f"orbitals not matched: {run_dir} has no {ORBITALS_FILE} (not written by nqs-curve); canonical orbitals used"
        return None, (note,)
    try:
        return Orbitals.load(path), ()
    except ValueError as exc:
        return None, (f"orbitals not matched: {exc}; canonical orbitals used",)


def _counts(blocks: np.ndarray) -> str:
    values, counts = np.unique(blocks, return_counts=True)
    return "{" + ", ".join(f"{v}: {c}" for v, c in zip(values, counts)) + "}"


def localize(orbitals: Orbitals, split: bool = False) -> Orbitals:
    """The active orbitals Boys-localized (a unitary rotation among them, so every active-space energy is
    unchanged), ordered by their centroid along the molecule's longest axis and signed so that each one's
    largest AO coefficient is positive, so an autoregressive model conditions each orbital on its spatial
    neighbours. `split`: the doubly occupied, singly occupied and virtual orbitals are localized apart and kept in
    that order (each block along the axis), so the HF determinant, and the CISD and CCSD states, are unchanged;
    their amplitudes become local (H16's CCSD state: fitted to fidelity 0.9952 against 0.9863 in canonical
    orbitals; docs/benchmarks.md, session 20). Without `split` (a probe, `scripts/sector_capacity.py --orbitals
    boys`) the state spreads over far more determinants than in canonical orbitals (benchmarks, session 13)."""
    from nqs.chem import boys_active, build_mole

    mol = build_mole(orbitals.spec(), symmetry=False)
    active = np.flatnonzero(orbitals.blocks // 10 == ACTIVE)  # contiguous: after the frozen core
    if active.size < 2:
        return orbitals
    if split:  # each occupation apart (doubly, singly occupied, virtual): the HF determinant stays one state
        mo = np.array(orbitals.mo, copy=True)
        for occupation in (2, 1, 0):
            block = active[orbitals.blocks[active] % 10 == occupation]
            mo[:, block] = boys_active(mol, mo[:, block], 0, block.size)
    else:
        mo = boys_active(mol, orbitals.mo, int(active[0]), active.size)
    local = mo[:, active]
    coords = mol.atom_coords(unit="Angstrom")
    axis = np.linalg.svd(coords - coords.mean(0))[2][0] if len(coords) > 1 else np.array([0.0, 0.0, 1.0])
    axis = axis if axis[np.argmax(np.abs(axis))] > 0 else -axis
    r = mol.intor_symmetric("int1e_r")  # (3, n_ao, n_ao) dipole integrals: the centroids <phi|r|phi>
    centroid = np.einsum("xij,ip,jp->px", r, local, local) @ axis
    blocks = np.array(orbitals.blocks)
    if split:  # the occupied block first, as in canonical order: the HF determinant is still the first N orbitals
        order = np.lexsort((centroid, -(blocks[active] % 10)))
    else:
        order = np.argsort(centroid, kind="stable")
        blocks[active] = 10 * ACTIVE + 9  # one block: localized orbitals have no occupation
    local = local[:, order]
    local *= np.where(local[np.argmax(np.abs(local), axis=0), np.arange(local.shape[1])] < 0, -1.0, 1.0)
    mo[:, active] = local
    return replace(orbitals, mo=mo, blocks=blocks)
