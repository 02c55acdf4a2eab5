"""nqs.chem and nqs.orbitals against PySCF computed independently: SCF, active spaces, frozen-core integrals,
orbital records and matching."""
from __future__ import annotations

import numpy as np
import pytest

from nqs import chem
from nqs.chem import OrbitalOptions
from nqs.errors import UserError
from nqs.molecules import resolve_molecule
from nqs.orbitals import Orbitals, canonical, match


def lih_orbitals(frozen_core: int = 1):
    spec = resolve_molecule("LiH")
    mol = chem.build_mole(spec)
    mf = chem.run_scf(mol, [])
    n_core, n_act = chem.active_space(mol, spec, OrbitalOptions(frozen_core=frozen_core))
    return spec, mol, mf, canonical(spec, chem.mo_coefficients(mol, mf), mf.mo_occ, n_core, n_act)


def test_scf_energy_of_h2_is_pyscfs():
    from pyscf import gto, scf

    spec = resolve_molecule("H2")
    mf = chem.run_scf(chem.build_mole(spec), [])
    plain = scf.RHF(gto.M(atom=spec.pyscf_atom(), basis="sto-3g", unit="Angstrom", verbose=0))
    plain.conv_tol = 1e-10
    assert mf.converged and mf.e_tot == pytest.approx(plain.kernel(), abs=1e-9)


def test_active_space_of_lih_with_a_frozen_core():
    spec = resolve_molecule("LiH")
    mol = chem.build_mole(spec)
    assert chem.active_space(mol, spec, OrbitalOptions()) == (0, 6)
    assert chem.active_space(mol, spec, OrbitalOptions(frozen_core=1)) == (1, 5)
    assert chem.active_space(mol, spec, OrbitalOptions(frozen_core=1, active_orbitals=3)) == (1, 3)
    for bad in (OrbitalOptions(frozen_core=3), OrbitalOptions(frozen_core=1, active_orbitals=6),
                OrbitalOptions(active_orbitals=1)):  # 2 doubly occupied only; 1 + 6 > 6 orbitals; 2 alpha in 1
        with pytest.raises(UserError):
            chem.active_space(mol, spec, bad)


@pytest.mark.parametrize("rotate", [False, True])
def test_frozen_core_integrals_match_an_explicit_ao_to_mo_transform(rotate):
    """LiH, 1 frozen core orbital, canonical or arbitrarily rotated orbitals: h1, (pq|rs) and the core energy
    from the full AO integrals by hand, to 1e-10."""
    spec, mol, _, orbitals = lih_orbitals()
    mo = orbitals.mo
    if rotate:
        q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((mo.shape[1],) * 2))
        mo = mo @ q
    ints = chem.integrals(mol, mo, 1, 5, spec.n_alpha, spec.n_beta)
    hcore = mol.intor("int1e_kin") + mol.intor("int1e_nuc")
    eri = mol.intor("int2e")  # (mu nu | lambda sigma)
    core, act = mo[:, :1], mo[:, 1:]
    dm = 2 * core @ core.T
    veff = np.einsum("mnls,ls->mn", eri, dm) - 0.5 * np.einsum("mlsn,ls->mn", eri, dm)
    e_core = mol.energy_nuc() + np.einsum("mn,nm->", dm, hcore + 0.5 * veff)
    h2 = np.einsum("mnls,mp,nq,lr,st->pqrt", eri, act, act, act, act, optimize=True)
    assert np.abs(ints.h1 - act.T @ (hcore + veff) @ act).max() < 1e-10
    assert np.abs(ints.h2 - h2).max() < 1e-10
    assert ints.e_core == pytest.approx(e_core, abs=1e-10)
    assert (ints.n_alpha, ints.n_beta, ints.n_orb) == (1, 1, 5)


def test_matching_recovers_permuted_and_sign_flipped_orbitals():
    """A reference that is the same orbitals reordered within their blocks and re-signed is recovered exactly."""
    _, _, _, orbitals = lih_orbitals(frozen_core=0)
    mo, blocks = orbitals.mo, orbitals.blocks
    order = np.arange(mo.shape[1])
    virtual = np.flatnonzero(blocks == blocks[-1])
    order[virtual] = virtual[::-1]  # reverse the virtual orbitals
    order[[0, 1]] = [1, 0]  # swap the two occupied ones
    signs = np.where(np.arange(mo.shape[1]) % 2 == 0, -1.0, 1.0)
    reference = Orbitals(mo[:, order] * signs, blocks, orbitals.geometry, orbitals.basis, orbitals.charge,
                         orbitals.spin)
    result = match(orbitals, reference)
    assert result.matched and result.notes == ()
    assert np.array_equal(result.orbitals.mo, reference.mo)
    assert result.reordered == 2 + len(virtual) - len(virtual) % 2 and result.resigned == (mo.shape[1] + 1) // 2
    assert match(orbitals, orbitals).reordered == match(orbitals, orbitals).resigned == 0


def test_matching_says_when_it_cannot_match(tmp_path):
    """Another basis (other orbital count): the canonical orbitals come back with a note, never silently."""
    _, _, _, orbitals = lih_orbitals()
    spec = resolve_molecule("LiH", basis="6-31g")
    mol = chem.build_mole(spec)
    mf = chem.run_scf(mol, [])
    other = canonical(spec, mf.mo_coeff, mf.mo_occ, 1, mol.nao - 1)
    result = match(other, orbitals, label="r=1.600")
    assert not result.matched and result.orbitals is other
    assert "not matched to r=1.600" in result.notes[0] and "canonical orbitals used" in result.notes[0]


def test_orbital_records_round_trip_and_damage_is_an_error(tmp_path):
    _, _, _, orbitals = lih_orbitals()
    orbitals.save(tmp_path / "orbitals.npz")
    back = Orbitals.load(tmp_path / "orbitals.npz")
    assert np.array_equal(back.mo, orbitals.mo) and np.array_equal(back.blocks, orbitals.blocks)
    assert back.digest() == orbitals.digest() and back.spec().atoms == resolve_molecule("LiH").atoms
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="damaged"):
        Orbitals.load(tmp_path / "bad.npz")
