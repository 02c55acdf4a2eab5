"""PySCF: mean field, molecular-orbital integrals in an (optional) active space, and reference energies.

Energies in Hartree. Closed shells use RHF, open shells ROHF (canonical orbitals of one set, so the
spin-orbital Hamiltonian is well defined); both are checked for internal instabilities and re-optimised
when a lower solution exists. Correlated references of open shells (MP2, CCSD, CCSD(T)) are UHF-based.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nqs.errors import UserError
from nqs.molecules import MoleculeSpec


@dataclass(frozen=True)
class OrbitalOptions:
    """Which orbitals form the qubit space: `frozen_core` lowest doubly-occupied orbitals removed, then
    `active_orbitals` kept (None: all the rest). `symmetry`: point-group symmetry-adapted orbitals."""

    frozen_core: int = 0
    active_orbitals: int | None = None
    symmetry: bool = True


@dataclass(frozen=True)
class Integrals:
    """Spatial-orbital integrals of the active space: H = e_core + h1_pq E_pq + 1/2 (pq|rs) ..."""

    h1: np.ndarray  # (n_orb, n_orb) Hartree
    h2: np.ndarray  # (n_orb, n_orb, n_orb, n_orb) chemists' notation (pq|rs), Hartree
    e_core: float  # nuclear repulsion plus the frozen core's energy, Hartree
    e_nuc: float
    n_alpha: int  # active electrons
    n_beta: int

    @property
    def n_orb(self) -> int:
        return self.h1.shape[0]


@dataclass(frozen=True)
class References:
    """Reference energies (Hartree; None: not computed, the notes say why). `dmrg`: `nqs.dmrg.DMRGResult` as a
    dict (bond dimension, discarded weight, extrapolated energy, uncertainty, sweeps). Selection and the best
    reference: `nqs.references`."""

    e_hf: float
    e_mp2: float | None = None
    e_ccsd: float | None = None
    e_ccsd_t: float | None = None
    e_fci: float | None = None
    s2_fci: float | None = None
    notes: tuple[str, ...] = ()
    e_dmrg: float | None = None
    dmrg: dict | None = None


def build_mole(spec: MoleculeSpec, symmetry: bool = True):
    import warnings

    from pyscf import gto

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PySCF suggests installing basis-set-exchange for unknown names
            mol = gto.M(atom=spec.pyscf_atom(), basis=spec.basis, charge=spec.charge, spin=spec.spin,
                        unit="Angstrom", symmetry=symmetry, verbose=0)
    except Exception as exc:  # PySCF raises several types for an unknown basis
        if "basis" in str(exc).lower() or type(exc).__name__ == "BasisNotFoundError":
            raise UserError(f"unknown basis '{spec.basis}' for {spec.name}: use a PySCF basis name such as "
                            f"sto-3g, 6-31g, cc-pvdz") from None
        raise UserError(f"PySCF cannot build {spec.name}: {exc}") from None
    if spec.n_alpha > mol.nao or spec.n_beta > mol.nao:
        raise UserError(f"{spec.n_electrons} electrons with 2S={spec.spin} do not fit in {mol.nao} orbitals of "
                        f"{spec.basis}: lower the spin or use a larger basis")
    return mol


def _stable(mf, notes: list[str], max_rounds: int = 4):
    """Follow internal instabilities of the converged SCF while they lower the energy."""
    from pyscf.lib.exceptions import LinearDependencyError

    for _ in range(max_rounds):
        try:
            mo_new, _, stable, _ = mf.stability(return_status=True)
        except LinearDependencyError:  # too few orbital rotations for Davidson (e.g. H2 STO-3G)
            return mf
        if stable:
            return mf
        e_old = mf.e_tot
        mo_old, occ_old = mf.mo_coeff, mf.mo_occ
        mf.kernel(mf.make_rdm1(mo_new, mf.mo_occ))
        if not mf.converged or mf.e_tot > e_old - 1e-9:
            mf.mo_coeff, mf.mo_occ, mf.e_tot = mo_old, occ_old, e_old
            return mf
        notes.append(f"{type(mf).__name__} internal instability followed: {mf.e_tot - e_old:+.3e} Ha")
    return mf


def run_scf(mol, notes: list[str]):
    """Converged, stable RHF (closed shell) or ROHF (open shell); None when there are no electrons."""
    from pyscf import scf

    if mol.nelectron == 0:
        return None
    mf = scf.RHF(mol) if mol.spin == 0 else scf.ROHF(mol)
    mf.conv_tol, mf.max_cycle = 1e-10, 200
    mf.kernel()
    if not mf.converged:
        mf = scf.newton(mf)
        mf.kernel()
    if not mf.converged:
        raise UserError("the SCF of this molecule did not converge: check the geometry, charge and spin")
    return _stable(mf, notes)


def mo_coefficients(mol, mf) -> np.ndarray:
    """Canonical MOs; without electrons, the eigenvectors of the core Hamiltonian."""
    if mf is not None:
        return mf.mo_coeff
    import scipy.linalg

    return scipy.linalg.eigh(mol.intor("int1e_kin") + mol.intor("int1e_nuc"), mol.intor("int1e_ovlp"))[1]


def active_space(mol, spec: MoleculeSpec, options: OrbitalOptions) -> tuple[int, int]:
    """(n_core, n_active) spatial orbitals, validated against the electron count."""
    n_core = options.frozen_core
    n_act = options.active_orbitals if options.active_orbitals is not None else mol.nao - n_core
    if n_core < 0 or n_core > min(spec.n_alpha, spec.n_beta):
        raise UserError(f"--frozen-core {n_core} is impossible: {spec.name} has only {min(spec.n_alpha, spec.n_beta)} "
                        f"doubly-occupied orbitals")
    na, nb = spec.n_alpha - n_core, spec.n_beta - n_core
    if n_act < 1 or n_core + n_act > mol.nao or max(na, nb) > n_act:
        raise UserError(f"--active-orbitals {n_act} does not fit: need between {max(na, nb, 1)} and "
                        f"{mol.nao - n_core} orbitals for {na}+{nb} active electrons")
    return n_core, n_act


def integrals(mol, mo: np.ndarray, n_core: int, n_act: int, n_alpha: int, n_beta: int) -> Integrals:
    """h1, (pq|rs) and the core energy over the orbitals mo[:, n_core:n_core+n_act] (any orthonormal set,
    canonical or matched to another geometry's), with the n_core orbitals mo[:, :n_core] frozen doubly occupied.

    PySCF's CASCI effective Hamiltonian: h1 = C_act^T (h + J_core - K_core/2) C_act, e_core = E_nuc + the
    frozen core's energy (checked against the explicit contraction to 1e-14 Ha on LiH, H2O and O2, canonical
    and rotated orbitals). Uses mol's own one-electron Hamiltonian (ECPs included)."""
    from pyscf import ao2mo, mcscf, scf

    cas = mcscf.CASCI(scf.RHF(mol), n_act, (n_alpha - n_core, n_beta - n_core), ncore=n_core)
    h1, e_core = cas.get_h1eff(mo)
    h2 = ao2mo.restore(1, cas.get_h2eff(mo), n_act)
    return Integrals(h1=np.asarray(h1), h2=np.asarray(h2), e_core=float(e_core), e_nuc=float(mol.energy_nuc()),
                     n_alpha=n_alpha - n_core, n_beta=n_beta - n_core)


def localized_integrals(mol, mo: np.ndarray, n_core: int, n_act: int, n_alpha: int, n_beta: int) -> Integrals:
    """`integrals` over Boys-localized active orbitals: a unitary rotation among the active orbitals, so every
    active-space energy (FCI, DMRG) is unchanged, while DMRG converges at far smaller bond dimensions (H10
    STO-3G at M = 100: 3e-10 Ha from FCI in localized orbitals, 1e-4 Ha in canonical ones)."""
    return integrals(mol, boys_active(mol, mo, n_core, n_act), n_core, n_act, n_alpha, n_beta)


def boys_active(mol, mo: np.ndarray, n_core: int, n_act: int) -> np.ndarray:
    """`mo` (n_ao, n_mo) with its active columns n_core : n_core + n_act Boys-localized (a unitary rotation among
    them, in PySCF's order and signs); the other columns unchanged."""
    from pyscf import lo

    rotated = np.array(mo, copy=True)
    if n_act > 1:
        rotated[:, n_core:n_core + n_act] = lo.Boys(mol, mo[:, n_core:n_core + n_act]).kernel()
    return rotated


def nuclear_repulsion(spec: MoleculeSpec) -> float:
    """sum_{i<j} Z_i Z_j / R_ij in Hartree (PySCF's `energy_nuc`): the energy of a molecule with no electrons."""
    return float(build_mole(spec, symmetry=False).energy_nuc())


def correlated_references(mol, mf, frozen: list[int], notes: list[str], deepest: str = "ccsd_t") -> dict:
    """{"mp2", "ccsd", "ccsd_t"} total energies up to `deepest` (the rest None); UHF-based for open shells."""
    from pyscf import cc, mp, scf

    if mol.nelectron <= 1:
        return dict.fromkeys(("mp2", "ccsd", "ccsd_t"), mf.e_tot)  # no electron pairs: HF is exact
    if mol.spin == 0:
        ref = mf
    else:
        ref = scf.UHF(mol)
        ref.conv_tol = 1e-10
        ref.kernel()
        ref = _stable(ref, notes)
        notes.append(f"MP2/CCSD/CCSD(T) on UHF (E_UHF = {ref.e_tot:.8f})")
    frozen = frozen or None
    out = {"mp2": float(mp.MP2(ref, frozen=frozen).run().e_tot), "ccsd": None, "ccsd_t": None}
    if deepest == "mp2":
        return out
    ccsd = cc.CCSD(ref, frozen=frozen)
    ccsd.conv_tol = 1e-9
    ccsd.kernel()
    if not ccsd.converged:
        notes.append("CCSD did not converge: its energies are unreliable")
    out["ccsd"] = float(ccsd.e_tot)
    if deepest == "ccsd_t":
        out["ccsd_t"] = float(ccsd.e_tot + ccsd.ccsd_t())
    return out


def fci(ints: Integrals, max_determinants: float, notes: list[str], residual: float | None = None):
    """Lowest eigenpair of the (N_alpha, N_beta) sector: (energy, <S^2>, civector (n_a_str, n_b_str)) or Nones.

    Davidson from the default guesses can land on an excited root of the sector (C2 STO-3G converges to
    a triplet at -74.6405 Ha); we take the lowest of three roots and of a run from a random guess.
    `residual` tightens the eigenvector (the energy converges quadratically, the vector linearly).
    """
    from pyscf import fci as pyscf_fci

    n, na, nb = ints.n_orb, ints.n_alpha, ints.n_beta
    dim = math.comb(n, na) * math.comb(n, nb)
    if dim > max_determinants:
        notes.append(f"FCI skipped: {dim:.3e} determinants > limit {max_determinants:.0e} (raise --fci-max-dets)")
        return None, None, None
    if na + nb == 0:
        return ints.e_core, 0.0, np.ones((1, 1))
    solver = pyscf_fci.direct_spin1.FCI()
    solver.conv_tol, solver.max_cycle, solver.max_space = 1e-12, 400, 30
    solver.verbose = 0  # else check_sanity prints 'Overwritten attributes conv_tol_residual' to stdout
    solver.conv_tol_residual = residual  # None: PySCF's default, sqrt(conv_tol)
    if residual is not None:  # Davidson also stops once the squared residual reaches lindep
        solver.lindep = min(solver.lindep, 0.01 * residual**2)
    solver.nroots = min(3, dim)
    energies, vectors = solver.kernel(ints.h1, ints.h2, n, (na, nb), ecore=ints.e_core)
    energies, vectors = np.atleast_1d(energies), (vectors if solver.nroots > 1 else [vectors])
    candidates = list(zip(energies, vectors))
    if dim > 3:
        rng = np.random.default_rng(0)
        guess = rng.standard_normal((math.comb(n, na), math.comb(n, nb)))
        solver.nroots = 1
        e_r, c_r = solver.kernel(ints.h1, ints.h2, n, (na, nb), ecore=ints.e_core, ci0=guess / np.linalg.norm(guess))
        candidates.append((e_r, c_r))
    e_fci, civec = min(candidates, key=lambda ec: ec[0])
    s2 = float(solver.spin_square(civec, n, (na, nb))[0])
    if float(min(energies)) > float(e_fci) + 1e-6:
        notes.append(f"FCI: default Davidson guesses found {min(energies):.8f}; a random guess found the lower {e_fci:.8f}")
    return float(e_fci), s2, np.asarray(civec).reshape(math.comb(n, na), math.comb(n, nb))
