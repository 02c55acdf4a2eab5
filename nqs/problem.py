"""A molecular problem: the qubit Hamiltonian with its sector, reference energies and provenance, cached on disk.

`build_problem(spec, options)` runs PySCF -> OpenFermion -> grouped Pauli strings once and stores the result,
with its canonical orbitals, under a hash of everything that defines it; a second build loads the arrays and
energies from the cache. `build_problem(spec, options, orbitals=...)` writes the Hamiltonian in given orbitals
(e.g. matched to another geometry's by `nqs.orbitals.match`), cached under the canonical key and a hash of the
coefficients (no SCF, no Jordan-Wigner build the second time); its reference energies do not depend on the
orbitals and are the canonical problem's.

`references` chooses the reference energies (`nqs.references`: a comma list, 'all' or 'auto'); an entry computes
the ones it lacks when a later build asks for them. Past MAX_QUBITS the qubit Hamiltonian cannot be built
(configurations are packed into one int64): `build_problem` refuses before the SCF, unless `hamiltonian=False`
(nqs-hamiltonian), which builds the SCF, the integrals and the references and leaves `pauli` None.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nqs import chem
from nqs import dmrg as dmrg_module
from nqs.chem import Integrals, OrbitalOptions, References
from nqs.errors import UserError
from nqs.hilbert import MAX_QUBITS, Sector
from nqs.molecules import MoleculeSpec
from nqs.operator import CompiledHamiltonian, PauliHamiltonian
from nqs.orbitals import ORBITALS_FILE, Orbitals, canonical
from nqs.references import CLASSIC, Selection, best_reference, complete, parse_references, select

CACHE_VERSION = 1
DEFAULT_FCI_MAX_DETS = 1e7
DEFAULT_DMRG_MAX_BOND = dmrg_module.DEFAULT_MAX_BOND


@dataclass(frozen=True)
class SectorCounts:
    """The sector's counts past MAX_QUBITS, where `Sector` (which packs configurations) cannot exist."""

    n_orb: int
    n_alpha: int
    n_beta: int

    n_qubits = property(lambda self: 2 * self.n_orb)
    n_electrons = property(lambda self: self.n_alpha + self.n_beta)
    size = property(lambda self: math.comb(self.n_orb, self.n_alpha) * math.comb(self.n_orb, self.n_beta))


@dataclass(frozen=True)
class MolecularProblem:
    spec: MoleculeSpec
    options: OrbitalOptions
    sector: Sector | SectorCounts  # active orbitals and electrons (SectorCounts past MAX_QUBITS)
    integrals: Integrals
    pauli: PauliHamiltonian | None  # None past MAX_QUBITS (built with hamiltonian=False)
    references: References
    e_inf: float | None  # Tr H / dim over the sector, Hartree (None without the Hamiltonian)
    build_seconds: float
    from_cache: bool = False
    orbitals: Orbitals | None = None  # the orbitals the Hamiltonian is written in (canonical unless given)

    @property
    def n_qubits(self) -> int:
        return self.sector.n_qubits

    def compiled(self, device: str = "cpu") -> CompiledHamiltonian:
        return CompiledHamiltonian(self.pauli, self.sector.n_alpha, self.sector.n_beta, device)

    def summary(self) -> dict:
        """The JSON summary of `nqs-hamiltonian --json` (energies in Hartree)."""
        r, best = self.references, best_reference(self.references)
        return {"n_qubits": self.n_qubits, "n_orbitals": self.sector.n_orb, "n_alpha": self.sector.n_alpha,
                "n_beta": self.sector.n_beta, "n_pauli_terms": self.pauli.n_terms if self.pauli else None,
                "n_flip_masks": self.pauli.n_flip_masks if self.pauli else None, "sector_size": self.sector.size,
                "e_nuc": self.integrals.e_nuc, "e_inf": self.e_inf, "e_hf": r.e_hf, "e_mp2": r.e_mp2,
                "e_ccsd": r.e_ccsd, "e_ccsd_t": r.e_ccsd_t, "e_fci": r.e_fci, "s2_fci": r.s2_fci,
                "e_dmrg": r.e_dmrg, "dmrg": r.dmrg, "e_ref": best.energy if best else None,
                "ref_kind": best.kind if best else None, "ref_uncertainty": best.uncertainty if best else None,
                "hamiltonian_skipped": None if self.pauli else too_many_qubits(self.spec, self.sector.n_orb, False),
                "notes": list(r.notes), "build_seconds": self.build_seconds}


def cache_dir() -> Path:
    return Path(os.environ.get("NQS_CACHE_DIR", Path.home() / ".cache" / "nqs-scaling" / "hamiltonians"))


def cache_key(spec: MoleculeSpec, options: OrbitalOptions) -> str:
    from importlib.metadata import version

    blob = json.dumps({"atoms": [[a[0].upper(), *(round(c, 10) for c in a[1:])] for a in spec.atoms],
                       "charge": spec.charge, "spin": spec.spin, "basis": spec.basis.lower(),
                       "options": dataclasses.asdict(options), "version": CACHE_VERSION,
                       "pyscf": version("pyscf"), "openfermion": version("openfermion")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def too_many_qubits(spec: MoleculeSpec, n_act: int, hamiltonian: bool) -> str:
    """Why the qubit Hamiltonian of more than MAX_QUBITS qubits is not built, in one line."""
    what = (f"the qubit Hamiltonian of {spec.name} ({spec.basis}, {n_act} active orbitals = {2 * n_act} qubits) is "
            f"not built: configurations are packed into one int64, at most {MAX_QUBITS} qubits")
    if hamiltonian:
        return (f"{what}; choose a smaller basis, --active-orbitals {MAX_QUBITS // 2} or fewer, or --frozen-core "
                f"(nqs-hamiltonian still gives the SCF and the reference energies)")
    return f"{what}; the SCF and the reference energies were computed"


def _scf(spec: MoleculeSpec, options: OrbitalOptions, notes: list[str]):
    """(mol, mf, frozen orbital indices) of the SCF, for the coupled-cluster references."""
    mol = chem.build_mole(spec, options.symmetry)
    mf = chem.run_scf(mol, notes)
    n_core, n_act = chem.active_space(mol, spec, options)
    return mol, mf, list(range(n_core)) + list(range(n_core + n_act, mol.nao))


def _compute(spec: MoleculeSpec, options: OrbitalOptions, fci_max_dets: float, sel: Selection | None = None,
             dmrg_max_bond: int = DEFAULT_DMRG_MAX_BOND, hamiltonian: bool = True):
    notes: list[str] = []
    mol = chem.build_mole(spec, options.symmetry)
    n_core, n_act = chem.active_space(mol, spec, options)
    if 2 * n_act > MAX_QUBITS and hamiltonian:
        raise UserError(too_many_qubits(spec, n_act, True))
    mf = chem.run_scf(mol, notes)
    orbitals = _canonical_orbitals(spec, mol, mf, n_core, n_act)
    ints = chem.integrals(mol, orbitals.mo, n_core, n_act, spec.n_alpha, spec.n_beta)
    pauli = PauliHamiltonian.from_integrals(ints) if 2 * n_act <= MAX_QUBITS else None
    e_hf = float(mf.e_tot) if mf is not None else ints.e_core
    frozen = list(range(n_core)) + list(range(n_core + n_act, mol.nao))
    refs = complete(References(e_hf, notes=tuple(notes)), ints, sel or parse_references(CLASSIC), fci_max_dets,
                    dmrg_max_bond, lambda: (mol, mf, frozen), lambda: chem.localized_integrals(
                        mol, orbitals.mo, n_core, n_act, spec.n_alpha, spec.n_beta))
    return ints, pauli, refs, orbitals


def _canonical_orbitals(spec: MoleculeSpec, mol, mf, n_core: int, n_act: int) -> Orbitals:
    occupations = mf.mo_occ if mf is not None else np.zeros(mol.nao)
    return canonical(spec, chem.mo_coefficients(mol, mf), occupations, n_core, n_act)


def _localized(spec: MoleculeSpec, options: OrbitalOptions, orbitals: Orbitals) -> Integrals:
    """The active space's integrals in Boys-localized orbitals (for DMRG; no SCF)."""
    mol = chem.build_mole(spec, options.symmetry)
    n_core, n_act = chem.active_space(mol, spec, options)
    return chem.localized_integrals(mol, orbitals.mo, n_core, n_act, spec.n_alpha, spec.n_beta)


def _scf_orbitals(spec: MoleculeSpec, options: OrbitalOptions) -> Orbitals:
    """The canonical orbitals alone, for a cache entry written before entries kept them."""
    mol = chem.build_mole(spec, options.symmetry)
    mf = chem.run_scf(mol, [])
    n_core, n_act = chem.active_space(mol, spec, options)
    return _canonical_orbitals(spec, mol, mf, n_core, n_act)


def _in_orbitals(spec: MoleculeSpec, options: OrbitalOptions, orbitals: Orbitals) -> Integrals:
    """Integrals over the given orbitals (no SCF)."""
    mol = chem.build_mole(spec, options.symmetry)
    n_core, n_act = chem.active_space(mol, spec, options)
    if orbitals.mo.shape != (mol.nao, mol.nao):
        raise ValueError(f"orbitals of shape {orbitals.mo.shape} do not fit {spec.name} in {spec.basis} "
                         f"({mol.nao} AOs)")
    return chem.integrals(mol, orbitals.mo, n_core, n_act, spec.n_alpha, spec.n_beta)


def _save(path: Path, ints: Integrals, pauli: PauliHamiltonian, refs: References | None,
          orbitals: Orbitals | None, meta: dict) -> None:
    """One cache entry: arrays.npz, orbitals.npz, then meta.json (an entry without it is not read)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "arrays.tmp.npz"
    np.savez(tmp, h1=ints.h1, h2=ints.h2, **(pauli.arrays() if pauli is not None else {}))
    tmp.replace(path / "arrays.npz")
    if orbitals is not None:
        orbitals.save(path / ORBITALS_FILE)
    record = {"integrals": {"e_core": ints.e_core, "e_nuc": ints.e_nuc, "n_alpha": ints.n_alpha,
                            "n_beta": ints.n_beta}, "n_qubits": 2 * ints.n_orb, **meta}
    if refs is not None:  # an entry in given orbitals takes the canonical entry's
        record["references"] = dataclasses.asdict(refs)
    (path / "meta.tmp.json").write_text(json.dumps(record, indent=1))
    (path / "meta.tmp.json").replace(path / "meta.json")


def _load(path: Path, use_cache: bool):
    """(integrals, pauli, references or None, orbitals or None, meta) of a cache entry; None when there is none
    or it is damaged (it is then rebuilt)."""
    if not (use_cache and (path / "meta.json").is_file() and (path / "arrays.npz").is_file()):
        return None
    try:
        record = json.loads((path / "meta.json").read_text())
        with np.load(path / "arrays.npz") as z:
            ints = Integrals(h1=z["h1"], h2=z["h2"], **record["integrals"])
            pauli = None  # an entry past MAX_QUBITS holds no Hamiltonian
            if "flip_masks" in z:
                pauli = PauliHamiltonian(record["n_qubits"], z["flip_masks"], z["term_group"], z["term_signs"],
                                         z["term_coeffs"])
        refs = None
        if "references" in record:
            refs = References(**{**record["references"], "notes": tuple(record["references"]["notes"])})
        orbitals = Orbitals.load(path / ORBITALS_FILE) if (path / ORBITALS_FILE).is_file() else None
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return ints, pauli, refs, orbitals, record


def build_problem(spec: MoleculeSpec, options: OrbitalOptions = OrbitalOptions(),
                  fci_max_dets: float = DEFAULT_FCI_MAX_DETS, use_cache: bool = True,
                  orbitals: Orbitals | None = None, references: str | Selection = CLASSIC,
                  dmrg_max_bond: int = DEFAULT_DMRG_MAX_BOND, hamiltonian: bool = True) -> MolecularProblem:
    """Hamiltonian and references for a validated molecule, cached under `cache_dir()`: in its canonical
    orbitals, or in `orbitals` (AO coefficients of this geometry, e.g. matched to another's). `references`:
    `nqs.references.parse_references`; `hamiltonian=False`: past MAX_QUBITS, the references without `pauli`."""
    sel = parse_references(references)
    if orbitals is not None:
        return _build_in_orbitals(spec, options, fci_max_dets, use_cache, orbitals, sel, dmrg_max_bond)
    start = time.perf_counter()
    path = cache_dir() / cache_key(spec, options)
    loaded = _load(path, use_cache)
    if loaded is not None and loaded[2] is not None and loaded[1] is None and 2 * loaded[0].n_orb > MAX_QUBITS \
            and hamiltonian:
        raise UserError(too_many_qubits(spec, loaded[0].n_orb, True))
    if loaded is not None and loaded[2] is not None:
        ints, pauli, refs, orbitals, record = loaded
        meta = {"build_seconds_first": record.get("build_seconds_first")}
        if pauli is None and 2 * ints.n_orb <= MAX_QUBITS:  # an entry written under a lower qubit limit
            pauli = PauliHamiltonian.from_integrals(ints)
            _save(path, ints, pauli, refs, orbitals, meta)
        if orbitals is None:  # written before entries kept their orbitals: add them once, with the Hamiltonian
            orbitals = _scf_orbitals(spec, options)  # rebuilt if this SCF's orbitals differ (e.g. in sign)
            fresh = _in_orbitals(spec, options, orbitals)
            if not (np.allclose(fresh.h1, ints.h1, rtol=0, atol=1e-10)
                    and np.allclose(fresh.h2, ints.h2, rtol=0, atol=1e-10)):
                ints, pauli = fresh, PauliHamiltonian.from_integrals(fresh)
            _save(path, ints, pauli, refs, orbitals, meta)
        more = complete(refs, ints, sel, fci_max_dets, dmrg_max_bond, lambda: _scf(spec, options, []),
                        lambda: _localized(spec, options, orbitals))
        if more != refs:  # a reference asked for now that the entry lacked
            refs = more
            _save(path, ints, pauli, refs, orbitals, meta)
        from_cache = True
    else:
        ints, pauli, refs, orbitals = _compute(spec, options, fci_max_dets, sel, dmrg_max_bond, hamiltonian)
        from_cache = False
    sector = (Sector if pauli is not None else SectorCounts)(ints.n_orb, ints.n_alpha, ints.n_beta)
    e_inf = float(pauli.sector_trace(sector.n_alpha, sector.n_beta)) / sector.size if pauli is not None else None
    seconds = time.perf_counter() - start
    if use_cache and not from_cache:
        _save(path, ints, pauli, refs, orbitals, {"build_seconds_first": seconds})
    refs = select(refs, sel, ints.n_orb)
    if pauli is None:
        refs = dataclasses.replace(refs, notes=refs.notes + (too_many_qubits(spec, ints.n_orb, False),))
    return MolecularProblem(spec, options, sector, ints, pauli, refs, e_inf, seconds, from_cache, orbitals)


def _build_in_orbitals(spec: MoleculeSpec, options: OrbitalOptions, fci_max_dets: float, use_cache: bool,
                       orbitals: Orbitals, sel: Selection, dmrg_max_bond: int) -> MolecularProblem:
    """The Hamiltonian in `orbitals`, cached under the canonical key and the orbitals' digest; the reference
    energies (orbital-independent) from the canonical problem."""
    refs = build_problem(spec, options, fci_max_dets, use_cache, references=sel, dmrg_max_bond=dmrg_max_bond).references
    start = time.perf_counter()
    path = cache_dir() / f"{cache_key(spec, options)}-{orbitals.digest()}"
    loaded = _load(path, use_cache)
    if loaded is not None:
        ints, pauli = loaded[0], loaded[1]
    else:
        ints = _in_orbitals(spec, options, orbitals)
        pauli = PauliHamiltonian.from_integrals(ints)
    sector = Sector(ints.n_orb, ints.n_alpha, ints.n_beta)
    e_inf = float(pauli.sector_trace(sector.n_alpha, sector.n_beta)) / sector.size
    seconds = time.perf_counter() - start
    if use_cache and loaded is None:
        _save(path, ints, pauli, None, orbitals, {"build_seconds_first": seconds})
    return MolecularProblem(spec, options, sector, ints, pauli, refs, e_inf, seconds, loaded is not None, orbitals)
