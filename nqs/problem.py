"""A molecular problem: the qubit Hamiltonian with its sector, reference energies and provenance, cached on disk.

`build_problem(spec, options)` runs PySCF -> OpenFermion -> grouped Pauli strings once and stores the result
under a hash of everything that defines it; a second build loads the arrays and energies from the cache.
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
from nqs.chem import Integrals, OrbitalOptions, References
from nqs.hilbert import Sector
from nqs.molecules import MoleculeSpec
from nqs.operator import CompiledHamiltonian, PauliHamiltonian

CACHE_VERSION = 1
DEFAULT_FCI_MAX_DETS = 1e7


@dataclass(frozen=True)
class MolecularProblem:
    spec: MoleculeSpec
    options: OrbitalOptions
    sector: Sector  # active orbitals and electrons
    integrals: Integrals
    pauli: PauliHamiltonian
    references: References
    e_inf: float  # Tr H / dim over the sector, Hartree
    build_seconds: float
    from_cache: bool = False

    @property
    def n_qubits(self) -> int:
        return self.sector.n_qubits

    def compiled(self, device: str = "cpu") -> CompiledHamiltonian:
        return CompiledHamiltonian(self.pauli, self.sector.n_alpha, self.sector.n_beta, device)

    def summary(self) -> dict:
        """The JSON summary of `nqs-hamiltonian --json` (energies in Hartree)."""
        r = self.references
        return {"n_qubits": self.n_qubits, "n_orbitals": self.sector.n_orb, "n_alpha": self.sector.n_alpha,
                "n_beta": self.sector.n_beta, "n_pauli_terms": self.pauli.n_terms,
                "n_flip_masks": self.pauli.n_flip_masks, "sector_size": self.sector.size,
                "e_nuc": self.integrals.e_nuc, "e_inf": self.e_inf, "e_hf": r.e_hf, "e_mp2": r.e_mp2,
                "e_ccsd": r.e_ccsd, "e_ccsd_t": r.e_ccsd_t, "e_fci": r.e_fci, "s2_fci": r.s2_fci,
                "build_seconds": self.build_seconds}


def cache_dir() -> Path:
    return Path(os.environ.get("NQS_CACHE_DIR", Path.home() / ".cache" / "nqs-scaling" / "hamiltonians"))


def cache_key(spec: MoleculeSpec, options: OrbitalOptions) -> str:
    from importlib.metadata import version

    blob = json.dumps({"atoms": [[a[0].upper(), *(round(c, 10) for c in a[1:])] for a in spec.atoms],
                       "charge": spec.charge, "spin": spec.spin, "basis": spec.basis.lower(),
                       "options": dataclasses.asdict(options), "version": CACHE_VERSION,
                       "pyscf": version("pyscf"), "openfermion": version("openfermion")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _compute(spec: MoleculeSpec, options: OrbitalOptions, fci_max_dets: float):
    notes: list[str] = []
    mol = chem.build_mole(spec, options.symmetry)
    mf = chem.run_scf(mol, notes)
    n_core, n_act = chem.active_space(mol, spec, options)
    ints = chem.integrals(mol, chem.mo_coefficients(mol, mf), n_core, n_act, spec.n_alpha, spec.n_beta)
    pauli = PauliHamiltonian.from_integrals(ints)
    e_hf = float(mf.e_tot) if mf is not None else ints.e_core
    frozen = list(range(n_core)) + list(range(n_core + n_act, mol.nao))
    if mf is None:
        e_mp2 = e_ccsd = e_ccsd_t = e_hf
    else:
        e_mp2, e_ccsd, e_ccsd_t = chem.correlated_references(mol, mf, frozen, notes)
    e_fci, s2, _ = chem.fci(ints, fci_max_dets, notes)
    refs = References(e_hf, e_mp2, e_ccsd, e_ccsd_t, e_fci, s2, tuple(notes))
    return ints, pauli, refs


def _save(path: Path, ints: Integrals, pauli: PauliHamiltonian, refs: References, meta: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "arrays.tmp.npz"
    np.savez(tmp, h1=ints.h1, h2=ints.h2, **pauli.arrays())
    tmp.replace(path / "arrays.npz")
    record = {"integrals": {"e_core": ints.e_core, "e_nuc": ints.e_nuc, "n_alpha": ints.n_alpha,
                            "n_beta": ints.n_beta},
              "references": dataclasses.asdict(refs), "n_qubits": pauli.n_qubits, **meta}
    (path / "meta.tmp.json").write_text(json.dumps(record, indent=1))
    (path / "meta.tmp.json").replace(path / "meta.json")


def _load(path: Path):
    record = json.loads((path / "meta.json").read_text())
    with np.load(path / "arrays.npz") as z:
        ints = Integrals(h1=z["h1"], h2=z["h2"], **record["integrals"])
        pauli = PauliHamiltonian(record["n_qubits"], z["flip_masks"], z["term_group"], z["term_signs"],
                                 z["term_coeffs"])
    ref = record["references"]
    ref["notes"] = tuple(ref["notes"])
    return ints, pauli, References(**ref), record


def build_problem(spec: MoleculeSpec, options: OrbitalOptions = OrbitalOptions(),
                  fci_max_dets: float = DEFAULT_FCI_MAX_DETS, use_cache: bool = True) -> MolecularProblem:
    """Hamiltonian and references for a validated molecule; cached under `cache_dir()`."""
    start = time.perf_counter()
    path = cache_dir() / cache_key(spec, options)
    loaded = None
    if use_cache and (path / "meta.json").is_file() and (path / "arrays.npz").is_file():
        try:
            loaded = _load(path)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            loaded = None  # a corrupt cache entry is rebuilt
    if loaded is not None:
        ints, pauli, refs, record = loaded
        dims = math.comb(ints.n_orb, ints.n_alpha) * math.comb(ints.n_orb, ints.n_beta)
        if refs.e_fci is None and dims <= fci_max_dets:  # FCI skipped earlier under a lower limit
            notes = [n for n in refs.notes if not n.startswith("FCI skipped")]
            e_fci, s2, _ = chem.fci(ints, fci_max_dets, notes)
            refs = dataclasses.replace(refs, e_fci=e_fci, s2_fci=s2, notes=tuple(notes))
            _save(path, ints, pauli, refs, {"build_seconds_first": record.get("build_seconds_first")})
        from_cache = True
    else:
        ints, pauli, refs = _compute(spec, options, fci_max_dets)
        from_cache = False
    sector = Sector(ints.n_orb, ints.n_alpha, ints.n_beta)
    e_inf = float(pauli.sector_trace(sector.n_alpha, sector.n_beta)) / sector.size
    seconds = time.perf_counter() - start
    if use_cache and not from_cache:
        _save(path, ints, pauli, refs, {"build_seconds_first": seconds})
    return MolecularProblem(spec, options, sector, ints, pauli, refs, e_inf, seconds, from_cache)
