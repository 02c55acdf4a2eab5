"""nqs.problem: the cache of canonical problems and of problems in given (matched) orbitals."""
from __future__ import annotations

import numpy as np
import pytest

from nqs import chem
from nqs import problem as problem_mod
from nqs.chem import OrbitalOptions
from nqs.molecules import resolve_molecule
from nqs.orbitals import match
from nqs.problem import build_problem, cache_dir, cache_key
from nqs.scan import make_scan


def lih_pair():
    lih = resolve_molecule("LiH")
    scan = make_scan(lih, "2.25,2.5")
    return scan.geometry(lih, 2.25), scan.geometry(lih, 2.5)


def test_matched_problem_is_cached_and_has_the_canonical_spectrum(monkeypatch):
    """LiH at 2.25 and 2.5 Å (the sigma* orbital flips sign between them): the 2.5 Å Hamiltonian in orbitals
    matched to 2.25 Å has the canonical FCI energy to 1e-10 Ha; a second build reads it from the cache (no
    SCF, no Jordan-Wigner) with equal arrays."""
    a, b = lih_pair()
    options = OrbitalOptions(frozen_core=1)
    ref = build_problem(a, options).orbitals
    canonical = build_problem(b, options)
    matching = match(canonical.orbitals, ref)
    assert matching.matched and matching.resigned > 0
    first = build_problem(b, options, orbitals=matching.orbitals)
    assert not first.from_cache and first.references == canonical.references
    assert not np.allclose(first.integrals.h1, canonical.integrals.h1)  # other orbitals ...
    for p in (canonical, first):  # ... the same spectrum
        e_fci, _, _ = chem.fci(p.integrals, 1e7, [])
        assert e_fci == pytest.approx(canonical.references.e_fci, abs=1e-10)
    assert first.e_inf == pytest.approx(canonical.e_inf, abs=1e-10)

    def boom(*_args, **_kwargs):
        raise AssertionError("rebuilt")

    for name in ("_compute", "_in_orbitals", "_scf_orbitals"):
        monkeypatch.setattr(problem_mod, name, boom)
    monkeypatch.setattr(chem, "run_scf", boom)
    second = build_problem(b, options, orbitals=matching.orbitals)
    assert second.from_cache
    assert np.array_equal(second.integrals.h1, first.integrals.h1)
    assert np.array_equal(second.integrals.h2, first.integrals.h2)
    for key, value in first.pauli.arrays().items():
        assert np.array_equal(second.pauli.arrays()[key], value)
    assert np.array_equal(second.orbitals.mo, matching.orbitals.mo)


def test_canonical_entries_keep_their_orbitals_and_old_entries_gain_them():
    a, _ = lih_pair()
    first = build_problem(a)
    entry = cache_dir() / cache_key(a, OrbitalOptions())
    assert (entry / "orbitals.npz").is_file() and first.orbitals is not None
    (entry / "orbitals.npz").unlink()  # an entry written before orbitals were kept
    again = build_problem(a)
    assert again.from_cache and (entry / "orbitals.npz").is_file()
    assert np.allclose(np.abs(again.orbitals.mo), np.abs(first.orbitals.mo), atol=1e-8)
    mol = chem.build_mole(a)  # the Hamiltonian is the one in the orbitals recorded with it
    ints = chem.integrals(mol, again.orbitals.mo, 0, mol.nao, a.n_alpha, a.n_beta)
    assert np.allclose(ints.h1, again.integrals.h1, atol=1e-10) and np.allclose(ints.h2, again.integrals.h2, atol=1e-10)
