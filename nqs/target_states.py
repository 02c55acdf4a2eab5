"""The states a network can be fitted to before VMC, signs included, as determinants in the qubit basis: CISD's
vector (`--init-state cisd`), the CCSD state e^{T1+T2}|HF⟩ up to quadruples (`--init-state ccsd`,
`nqs.coupled_cluster`) or the largest determinants of a DMRG ground state (`--init-state dmrg`,
`nqs.dmrg.dmrg_state`; block2). `nqs.pretrain` fits a network to one.

Why: on hydrogen chains a randomly initialised network settles on a plateau whose error is mostly the sign
structure (H10, +24 mHa against FCI: 1.6e-3 of FCI weight on determinants with the wrong sign, in the sampled
band too; docs/benchmarks.md, "Why the chains plateau"). CISD's singles and doubles carry the leading signs of
the exact state at the cost of one CISD calculation; hybrid starts of this kind (a tensor-network or CI state
fitted first) are how PyNQS reached chemical accuracy on H50 (Wu et al., arXiv 2507.19276).

* `cisd_state(ints)`: PySCF's RHF CISD on the active-space integrals (the orbitals the qubits use, kept as they
  are: the HF reference is the identity in them), its c0, c1, c2 written as determinants in the qubit basis
  (`cisd_determinants`): PySCF's addresses and signs of `pyscf.ci.cisd.to_fcivec`, without building the FCI
  vector, then the interleaved order's sign (`nqs.hilbert.from_pyscf_strings`). Closed shells only.
* `dmrg_target(ints, max_bond, cutoff)`: the DMRG state's determinants with |c| ≥ cutoff, kept in the
  Hamiltonian cache.
* `target_state(kind, ints, ...)`: the one `--init-state` names.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nqs.chem import Integrals
from nqs.errors import UserError
from nqs.hilbert import from_pyscf_strings

STATES = ("cisd", "ccsd", "dmrg")
ZERO = 1e-13  # amplitudes below this fraction of the largest are dropped (symmetry zeros, ~1e-16)


@dataclass(frozen=True)
class TargetState:
    """bits (K, n) uint8 of the determinants, amplitudes (K,) float64 normalised, energy (Hartree, with
    e_core), kind, and `detail`: what the notes add about how it was built. A fit's batch (`nqs.pretrain`) may
    carry `probability` (K,) float64: each determinant's |c|²/Σ|c|² in the state it was drawn from, for the fit's
    control variate."""

    bits: torch.Tensor
    amplitudes: torch.Tensor
    energy: float
    kind: str
    detail: str = ""
    probability: torch.Tensor | None = None


def _mean_field(ints: Integrals):
    """A PySCF RHF object whose orbitals are the active space's own (mo_coeff = 1): no SCF is run, so no orbital
    is rotated or changes sign."""
    from pyscf import ao2mo, gto, scf

    n, n_occ = ints.n_orb, ints.n_alpha
    mol = gto.M(verbose=0)
    mol.nelectron = ints.n_alpha + ints.n_beta
    mol.incore_anyway = True
    mf = scf.RHF(mol)
    mf.get_hcore = lambda *args: ints.h1
    mf.get_ovlp = lambda *args: np.eye(n)
    mf.energy_nuc = lambda *args: ints.e_core
    mf._eri = ao2mo.restore(8, ints.h2, n)
    mf.mo_coeff = np.eye(n)
    mf.mo_occ = np.array([2.0] * n_occ + [0.0] * (n - n_occ))
    dm = mf.make_rdm1()
    mf.mo_energy = np.diag(mf.get_fock(dm=dm)).copy()
    mf.e_tot = float(mf.energy_tot(dm=dm))
    mf.converged = True
    return mf


def cisd_determinants(civec: np.ndarray, n_orb: int, n_occ: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PySCF's RHF CISD vector `civec` as (bits (K, 2 n_orb) uint8, amplitudes (K,) float64) in the qubit basis:
    the entries `pyscf.ci.cisd.to_fcivec` would write (reference, alpha and beta singles, alpha-beta doubles,
    alpha-alpha and beta-beta doubles), with its signs, without the FCI-sized array."""
    from pyscf.ci import cisd
    from pyscf.fci import cistring

    n_vir = n_orb - n_occ
    c0, c1, c2 = cisd.cisdvec_to_amplitudes(civec, n_orb, n_occ, copy=False)
    hf = np.array([0])
    a1, s1 = (np.asarray(x, dtype=np.int64) for x in cisd.tn_addrs_signs(n_orb, n_occ, 1))
    rows, cols, values = [hf], [hf], [np.array([c0])]
    if a1.size:
        single = c1.ravel() * s1
        rows += [hf.repeat(a1.size), a1]
        cols += [a1, hf.repeat(a1.size)]
        values += [single, single]
        c2ab = np.einsum("i,j,ij->ij", s1, s1, c2.transpose(0, 2, 1, 3).reshape(n_occ * n_vir, -1))
        rows.append(np.repeat(a1, a1.size))
        cols.append(np.tile(a1, a1.size))
        values.append(c2ab.ravel())
    if n_occ > 1 and n_vir > 1:
        c2aa = c2 - c2.transpose(1, 0, 2, 3)
        oo, vv = np.tril_indices(n_occ, -1), np.tril_indices(n_vir, -1)
        a2, s2 = (np.asarray(x, dtype=np.int64) for x in cisd.tn_addrs_signs(n_orb, n_occ, 2))
        double = c2aa[oo][:, vv[0], vv[1]].ravel() * s2
        rows += [hf.repeat(a2.size), a2]
        cols += [a2, hf.repeat(a2.size)]
        values += [double, double]
    rows, cols, values = np.concatenate(rows), np.concatenate(cols), np.concatenate(values)
    alpha = cistring.addrs2str(n_orb, n_occ, rows)
    beta = cistring.addrs2str(n_orb, n_occ, cols)
    bits, sign = from_pyscf_strings(alpha, beta, n_orb)
    return bits, torch.from_numpy(values * sign)


def cisd_state(ints: Integrals) -> TargetState:
    """The CISD ground state of the active space in the qubit basis (normalised; determinants of zero amplitude
    left out), and its energy."""
    from pyscf.ci import cisd

    if ints.n_alpha != ints.n_beta:
        raise UserError(f"--init-state cisd needs a closed shell (N_alpha = N_beta; this molecule has "
                        f"{ints.n_alpha}, {ints.n_beta}): drop --init-state")
    if ints.n_orb > 63:
        raise UserError(f"--init-state cisd reads PySCF's occupation strings, one 64-bit word per spin: at most "
                        f"63 orbitals (this molecule has {ints.n_orb}): drop --init-state")
    solver = cisd.CISD(_mean_field(ints))
    solver.verbose = 0
    energy, civec = solver.kernel()
    if not solver.converged:
        raise UserError("--init-state cisd: PySCF's CISD did not converge on this molecule: drop --init-state")
    bits, amplitudes = cisd_determinants(civec, ints.n_orb, ints.n_alpha)
    kept = amplitudes.abs() > ZERO * amplitudes.abs().max()  # point-group zeros: nothing to fit there
    bits, amplitudes = bits[kept], amplitudes[kept]
    amplitudes = amplitudes / amplitudes.norm()
    return TargetState(bits, amplitudes, float(solver.e_tot), "cisd")


def dmrg_target(ints: Integrals, max_bond: int, cutoff: float, threads: int = 1) -> TargetState:
    """The DMRG ground state's determinants with |c| ≥ `cutoff` (`nqs.dmrg.dmrg_state`), normalised; kept in the
    Hamiltonian cache (`nqs.problem.cache_dir()/states`), keyed by the integrals, M, the cutoff and block2's
    version, so a second run with the same settings reads it instead of running DMRG again."""
    from nqs.dmrg import DMRGState, dmrg_state

    path = _state_path(ints, max_bond, cutoff)
    cached = path.exists()
    if cached:
        with np.load(path) as f:
            state = DMRGState(torch.from_numpy(f["bits"]), torch.from_numpy(f["amplitudes"]),
                              *(float(f[k]) for k in ("energy", "weight")), int(f["bond_dim"]),
                              *(float(f[k]) for k in ("discarded_weight", "seconds")))
    else:
        print(f"note: DMRG state to fit: SZ, M = {max_bond} on {ints.n_orb} orbitals, {threads} thread(s); silent "
              f"until it ends", file=sys.stderr, flush=True)
        state = dmrg_state(ints, max_bond, cutoff, threads)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # one per process: two runs may write at once
        np.savez(tmp, bits=state.bits.numpy(), amplitudes=state.amplitudes.numpy(), energy=state.energy,
                 weight=state.weight, bond_dim=state.bond_dim, discarded_weight=state.discarded_weight,
                 seconds=state.seconds)
        tmp.replace(path)
    detail = (f"; an SZ MPS at M = {state.bond_dim}, discarded weight {state.discarded_weight:.1e}, "
              f"{state.seconds:.0f} s{' (read from the cache)' if cached else ''}; those with |c| >= {cutoff:g} hold "
              f"{state.weight:.6f} of its weight")
    return TargetState(state.bits, state.amplitudes / state.amplitudes.norm(), state.energy, "dmrg", detail)


def _state_path(ints: Integrals, max_bond: int, cutoff: float) -> Path:
    from importlib.metadata import version

    from nqs.problem import cache_dir

    h = hashlib.sha256()
    for array in (ints.h1, ints.h2):
        h.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    h.update(json.dumps([ints.e_core, ints.n_alpha, ints.n_beta, max_bond, cutoff, version("block2")]).encode())
    return cache_dir() / "states" / f"dmrg-{h.hexdigest()[:24]}.npz"


def target_state(kind: str, ints: Integrals, dmrg_max_bond: int = 250, dmrg_cutoff: float = 1e-5,
                 threads: int = 1) -> TargetState:
    """The state `kind` (one of STATES) of the active space; `dmrg_*` and `threads` serve the DMRG state."""
    if kind == "cisd":
        return cisd_state(ints)
    if kind == "ccsd":
        from nqs.coupled_cluster import ccsd_state

        return ccsd_state(ints)
    if kind == "dmrg":
        return dmrg_target(ints, dmrg_max_bond, dmrg_cutoff, threads)
    raise UserError(f"unknown --init-state {kind!r}: choose one of {', '.join(STATES)}")
