"""A molecular problem: the qubit Hamiltonian with its sector, reference energies and provenance, cached on disk.

`build_problem(spec, options)` runs PySCF -> OpenFermion -> grouped Pauli strings once and stores the result,
with its canonical orbitals, under a hash of everything that defines it; a second build loads the arrays and
energies from the cache. `build_problem(spec, options, orbitals=...)` writes the Hamiltonian in given orbitals
(e.g. matched to another geometry's by `nqs.orbitals.match`), cached under the canonical key and a hash of the
coefficients (no SCF, no Jordan-Wigner build the second time); its reference energies do not depend on the
orbitals and are the canonical problem's.

`references` chooses the reference energies (`nqs.references`: a comma list, 'all' or 'auto'); an entry computes
the ones it lacks when a later build asks for them.

Past MAX_QUBITS (62) no Pauli table is built (`pauli` None): its flip and sign masks are one int64 each, and the
Jordan-Wigner build loops over every term in Python from a dense spin-orbital tensor (minutes and GiB at 100
qubits). The problem is then integral-driven: `compiled` gives an `nqs.excitations.IntegralHamiltonian`, whose
connections come from h1 and (pq|rs) by the Slater-Condon rules, and E_inf is the sector mean of the diagonal in
closed form (`nqs.excitations.mean_diagonal`, equal to the Pauli table's trace to 1e-12 Ha where both exist).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nqs import chem
from nqs import dmrg as dmrg_module
from nqs.chem import Integrals, OrbitalOptions, References
from nqs.errors import UserError
from nqs.excitations import IntegralHamiltonian, mean_diagonal, n_candidates
from nqs.hilbert import MAX_QUBITS, Sector
from nqs.molecules import MoleculeSpec
from nqs.operator import CompiledHamiltonian, PauliHamiltonian
from nqs.orbitals import ORBITALS_FILE, Orbitals, canonical
from nqs.references import CLASSIC, Selection, best_reference, complete, parse_references, select

CACHE_VERSION = 1
DEFAULT_FCI_MAX_DETS = 1e7
DEFAULT_DMRG_MAX_BOND = dmrg_module.DEFAULT_MAX_BOND
CONNECTIONS = ("auto", "pauli", "integrals")
# auto: the Pauli tables unless their K flip masks exceed this many times the E excitations of the integral path.
# Per candidate the integral path took ~3x the tables' time per flip mask (N2: 56 vs 26 ns, H16: 50 vs 16 ns,
# docs/benchmarks.md, issue 16 session 3), so it wins once K > 3 E; past 62 qubits there is no table at all.
PAULI_PER_INTEGRAL_COST = 3


def choose_connections(requested: str, pauli: PauliHamiltonian | None, sector: Sector) -> str:
    """'pauli' or 'integrals' for `requested` in CONNECTIONS (the rule above); UserError when it cannot apply."""
    if requested not in CONNECTIONS:
        raise UserError(f"unknown connections {requested!r}: choose one of {', '.join(CONNECTIONS)}")
    if requested == "pauli" and pauli is None:
        raise UserError(f"--connections pauli needs the Pauli table, which is not built past {MAX_QUBITS} qubits "
                        f"(this problem has {sector.n_qubits}): use --connections integrals or auto")
    if requested != "auto":
        return requested
    if pauli is None:
        return "integrals"
    excitations = n_candidates(sector.n_orb, sector.n_alpha, sector.n_beta)
    return "integrals" if pauli.n_flip_masks - 1 > PAULI_PER_INTEGRAL_COST * excitations else "pauli"


@dataclass(frozen=True)
class MolecularProblem:
    spec: MoleculeSpec
    options: OrbitalOptions
    sector: Sector  # active orbitals and electrons
    integrals: Integrals
    pauli: PauliHamiltonian | None  # None past MAX_QUBITS (module docstring)
    references: References
    e_inf: float  # Tr H / dim over the sector, Hartree
    build_seconds: float
    from_cache: bool = False
    orbitals: Orbitals | None = None  # the orbitals the Hamiltonian is written in (canonical unless given)

    @property
    def n_qubits(self) -> int:
        return self.sector.n_qubits

    def connections(self, requested: str = "auto") -> str:
        """Which connections `compiled(requested=...)` uses: 'pauli' or 'integrals' (`choose_connections`)."""
        return choose_connections(requested, self.pauli, self.sector)

    def compiled(self, device: str = "cpu", connections: str = "auto") -> CompiledHamiltonian | IntegralHamiltonian:
        """The Hamiltonian the local energy reads: the Pauli tables or the integrals (`choose_connections`)."""
        s = self.sector
        if self.connections(connections) == "integrals":
            return IntegralHamiltonian(self.integrals, s.n_alpha, s.n_beta, device)
        return CompiledHamiltonian(self.pauli, s.n_alpha, s.n_beta, device)

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
                "hamiltonian_skipped": None if self.pauli else no_pauli_table(self.n_qubits),
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


def no_pauli_table(n_qubits: int) -> str:
    """Why a problem has no Pauli table, in one line."""
    return (f"no Pauli table past {MAX_QUBITS} qubits ({n_qubits} here; one-int64 masks, a Python Jordan-Wigner "
            f"build): the Hamiltonian is integral-driven (connections from h1 and (pq|rs))")


def _pauli(ints: Integrals) -> PauliHamiltonian | None:
    """The Pauli table up to MAX_QUBITS; None past it (module docstring: one-int64 masks, a Python JW build)."""
    return PauliHamiltonian.from_integrals(ints) if 2 * ints.n_orb <= MAX_QUBITS else None


def _scf(spec: MoleculeSpec, options: OrbitalOptions, notes: list[str]):
    """(mol, mf, frozen orbital indices) of the SCF, for the coupled-cluster references."""
    mol = chem.build_mole(spec, options.symmetry)
    mf = chem.run_scf(mol, notes)
    n_core, n_act = chem.active_space(mol, spec, options)
    return mol, mf, list(range(n_core)) + list(range(n_core + n_act, mol.nao))


def _compute(spec: MoleculeSpec, options: OrbitalOptions, fci_max_dets: float, sel: Selection | None = None,
             dmrg_max_bond: int = DEFAULT_DMRG_MAX_BOND):
    notes: list[str] = []
    mol = chem.build_mole(spec, options.symmetry)
    n_core, n_act = chem.active_space(mol, spec, options)
    mf = chem.run_scf(mol, notes)
    orbitals = _canonical_orbitals(spec, mol, mf, n_core, n_act)
    ints = chem.integrals(mol, orbitals.mo, n_core, n_act, spec.n_alpha, spec.n_beta)
    pauli = _pauli(ints)
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
                  dmrg_max_bond: int = DEFAULT_DMRG_MAX_BOND) -> MolecularProblem:
    """Hamiltonian and references for a validated molecule, cached under `cache_dir()`: in its canonical
    orbitals, or in `orbitals` (AO coefficients of this geometry, e.g. matched to another's). `references`:
    `nqs.references.parse_references`. Every problem has a Hamiltonian: the Pauli table up to MAX_QUBITS, the
    integrals past it."""
    sel = parse_references(references)
    if orbitals is not None:
        return _build_in_orbitals(spec, options, fci_max_dets, use_cache, orbitals, sel, dmrg_max_bond)
    start = time.perf_counter()
    path = cache_dir() / cache_key(spec, options)
    loaded = _load(path, use_cache)
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
                ints, pauli = fresh, _pauli(fresh)
            _save(path, ints, pauli, refs, orbitals, meta)
        more = complete(refs, ints, sel, fci_max_dets, dmrg_max_bond, lambda: _scf(spec, options, []),
                        lambda: _localized(spec, options, orbitals))
        if more != refs:  # a reference asked for now that the entry lacked
            refs = more
            _save(path, ints, pauli, refs, orbitals, meta)
        from_cache = True
    else:
        ints, pauli, refs, orbitals = _compute(spec, options, fci_max_dets, sel, dmrg_max_bond)
        from_cache = False
    sector = Sector(ints.n_orb, ints.n_alpha, ints.n_beta)
    e_inf = mean_diagonal(ints)
    seconds = time.perf_counter() - start
    if use_cache and not from_cache:
        _save(path, ints, pauli, refs, orbitals, {"build_seconds_first": seconds})
    refs = select(refs, sel, ints.n_orb)
    if pauli is None:
        refs = dataclasses.replace(refs, notes=refs.notes + (no_pauli_table(2 * ints.n_orb),))
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
        pauli = _pauli(ints)
    sector = Sector(ints.n_orb, ints.n_alpha, ints.n_beta)
    e_inf = mean_diagonal(ints)
    seconds = time.perf_counter() - start
    if use_cache and loaded is None:
        _save(path, ints, pauli, None, orbitals, {"build_seconds_first": seconds})
    return MolecularProblem(spec, options, sector, ints, pauli, refs, e_inf, seconds, loaded is not None, orbitals)
