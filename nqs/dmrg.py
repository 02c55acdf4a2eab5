"""DMRG reference energies through block2 (an optional dependency: `pip install 'nqs-scaling[dmrg]'`).

`run_dmrg(integrals)` runs spin-adapted (SU(2)) two-site DMRG on the active-space integrals (`nqs.problem` passes
them in Boys-localized orbitals, `nqs.chem.localized_integrals`), with the orbitals in block2's Fiedler order: a
forward schedule of bond dimensions up to `max_bond` with decreasing noise, until the energy changes by less than
`tol` between sweeps at `max_bond`; then noiseless sweeps at smaller bond dimensions (a reverse schedule) give
energies E(w) against the discarded weight w, fitted linearly and extrapolated to w = 0. The reference is the
lowest variational energy of those sweeps (normally the one at `max_bond`; each is an upper bound of the exact
energy of its spin); its uncertainty is the largest of the distance to the extrapolated energy, the last forward
sweeps' energy change and the spread between the `max_bond` sweep and the lowest one (Davidson's tolerance), so the
exact energy lies within [energy - uncertainty, energy] when the extrapolation is sound.

`dmrg_state(integrals, max_bond, cutoff)` (`--init-state dmrg`) runs the same forward schedule without spin
adaptation (SZ: the (N_alpha, N_beta) sector itself) and returns the MPS's determinants with |c| >= cutoff in the
qubit basis (`block2_determinants`: block2's PySCF-convention signs over its Fiedler-ordered sites, mapped to the
interleaved order over our orbitals), the state a network is fitted to before VMC.

SU(2) DMRG finds the lowest state of total spin S = (N_alpha - N_beta) / 2; FCI here finds the lowest state of the
(N_alpha, N_beta) sector. They agree whenever the ground state has the lowest spin its sector allows, as for every
catalogue molecule (FCI <S^2> = S(S+1)) and chain; checked against FCI to <= 3e-10 Ha for H4-H10, N2 and H2O.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nqs.chem import Integrals
from nqs.errors import UserError

INSTALL_HINT = "pip install 'nqs-scaling[dmrg]' (block2 0.5.4) into this environment"
DEFAULT_MAX_BOND = 250
# bond dimensions of the noiseless reverse sweeps, as fractions of max_bond: close enough to max_bond for E(w) to be
# linear (N2/6-31G at M = 250: a 0.4 M point at w = 7e-3 pulled the fit 1.2 mHa off the other three's line)
REVERSE_FRACTIONS = (0.8, 0.6)


@dataclass(frozen=True)
class DMRGResult:
    """A DMRG reference: energies in Hartree, `sweeps` = (bond dimension, max discarded weight, energy)."""

    energy: float  # the lowest variational energy of the noiseless sweeps (normally at max_bond)
    uncertainty: float  # see the module's docstring
    extrapolated: float | None  # linear E(w) -> w = 0 over the noiseless sweeps; None when w = 0 throughout
    bond_dim: int
    discarded_weight: float  # at max_bond, last sweep
    converged: bool  # the energy at max_bond changed by less than tol between sweeps
    seconds: float
    sweeps: tuple = field(default=())

    def describe(self) -> str:
        extra = f", extrapolated {self.extrapolated:.8f}" if self.extrapolated is not None else ""
        state = "converged" if self.converged else "NOT converged in the sweeps allowed"
        return (f"DMRG (block2, SU2, Fiedler order): M = {self.bond_dim}, discarded weight {self.discarded_weight:.1e}"
                f"{extra}, uncertainty {self.uncertainty:.1e} Ha, {state}, {self.seconds:.1f} s")


def available() -> bool:
    try:
        import pyblock2.driver.core  # noqa: F401  (importable: block2 and its libraries load)
    except ImportError:
        return False
    return True


def _check_bond(max_bond: int) -> None:
    if max_bond < 4:
        raise UserError(f"--dmrg-max-bond {max_bond} is too small: use at least 4 (e.g. 500)")


def _driver_module():
    try:
        from pyblock2.driver import core
    except ImportError:
        raise UserError(f"the DMRG reference needs block2, which is not installed: {INSTALL_HINT}, or leave dmrg "
                        f"out of --references") from None
    return core


def run_dmrg(ints: Integrals, max_bond: int = DEFAULT_MAX_BOND, threads: int = 1, tol: float = 1e-8,
             max_sweeps: int = 40, scratch: str | None = None) -> DMRGResult:
    """Ground-state DMRG energy of the active-space Hamiltonian `ints` (see the module's docstring)."""
    _check_bond(max_bond)
    core = _driver_module()
    start = time.perf_counter()
    if ints.n_alpha + ints.n_beta == 0:
        return DMRGResult(ints.e_core, 0.0, None, 1, 0.0, True, 0.0)
    with tempfile.TemporaryDirectory(prefix="nqs-dmrg-", dir=scratch) as tmp:
        driver = core.DMRGDriver(scratch=tmp, symm_type=core.SymmetryTypes.SU2, n_threads=threads,
                                 stack_mem=2 << 30)
        _, mpo, ket, m, dws, energies = _ground_state(driver, ints, max_bond, tol, max_sweeps)
        converged = len(energies) < max_sweeps and int(m[-1]) == max_bond
        change = abs(energies[-1] - energies[-2]) if len(energies) > 1 else 0.0
        points = [(int(m[-1]), float(dws[-1]), energies[-1])]
        for fraction in REVERSE_FRACTIONS:  # noiseless sweeps at smaller M: E against the discarded weight
            bond = max(4, int(round(fraction * max_bond)))
            driver.dmrg(mpo, ket, n_sweeps=2, bond_dims=[bond], noises=[0.0], thrds=[1e-9], tol=0.0, iprint=0)
            rm, rdw, re = driver.get_dmrg_results()
            points.append((int(rm[-1]), float(rdw[-1]), float(np.min(re[-1]))))
    energy, weight = min(p[2] for p in points), points[0][1]  # each sweep's energy is an upper bound
    extrapolated = _extrapolate(points)
    uncertainty = max(change, points[0][2] - energy, abs(energy - extrapolated) if extrapolated is not None else 0.0)
    return DMRGResult(energy, uncertainty, extrapolated, max_bond, weight, converged,
                      time.perf_counter() - start, tuple(points))


@dataclass(frozen=True)
class DMRGState:
    """The DMRG ground state's largest determinants: bits (K, 2 n_orb) uint8 in the interleaved qubit order,
    amplitudes (K,) float64 as the MPS gives them (Σ amplitudes² = `weight` ≤ 1, the rest below the cutoff),
    the MPS's energy (Hartree), its bond dimension and last discarded weight, and the seconds taken."""

    bits: torch.Tensor
    amplitudes: torch.Tensor
    energy: float
    weight: float
    bond_dim: int
    discarded_weight: float
    seconds: float


def dmrg_state(ints: Integrals, max_bond: int = DEFAULT_MAX_BOND, cutoff: float = 1e-5, threads: int = 1,
               tol: float = 1e-8, max_sweeps: int = 40, scratch: str | None = None) -> DMRGState:
    """Non-spin-adapted (SZ) DMRG of `ints` with `run_dmrg`'s forward schedule (the (N_alpha, N_beta) sector
    itself, so open shells need no conversion), then every determinant whose amplitude is at least `cutoff` in
    magnitude (block2's DeterminantTRIE: a depth-first search of the MPS that prunes below the cutoff), in PySCF's
    sign convention over the sites, mapped to the qubits by `block2_determinants`. At the same M an SZ MPS is less
    accurate than `run_dmrg`'s SU2 one; as a state to fit it only has to be far closer to exact than CCSD's."""
    _check_bond(max_bond)
    if not 0 < cutoff < 1:
        raise UserError(f"the DMRG state's cutoff must lie in (0, 1), got {cutoff}")
    core = _driver_module()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nqs-dmrg-", dir=scratch) as tmp:
        driver = core.DMRGDriver(scratch=tmp, symm_type=core.SymmetryTypes.SZ, n_threads=threads,
                                 stack_mem=2 << 30)
        order, _, ket, m, dws, energies = _ground_state(driver, ints, max_bond, tol, max_sweeps)
        dets, values = driver.get_csf_coefficients(ket, cutoff=cutoff, fci_conv=True, iprint=0)
    bits, sign = block2_determinants(np.asarray(dets), order)
    amplitudes = torch.from_numpy(np.asarray(values, dtype=np.float64) * sign)
    return DMRGState(bits, amplitudes, energies[-1], float((amplitudes ** 2).sum()), int(m[-1]), float(dws[-1]),
                     time.perf_counter() - start)


def block2_determinants(dets: np.ndarray, order: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """block2's determinants (K, n) uint8 over the sites (0 empty, 1 alpha, 2 beta, 3 both; site i is orbital
    order[i]) as (bits (K, 2n) uint8 in the interleaved order over the orbitals, sign (K,) ±1.0) such that sign
    times an amplitude in PySCF's convention over the sites (all alpha creators in site order, then all beta) is
    the amplitude in ours. Two reorderings: alpha and beta interleaved per site, (−1)^{#(alpha at p, beta at q),
    p > q}; then the sites' blocks put in orbital order, (−1)^{n_i n_j} for each pair of sites i < j with
    order[i] > order[j]."""
    alpha = ((dets == 1) | (dets == 3)).astype(np.int64)
    beta = ((dets == 2) | (dets == 3)).astype(np.int64)
    alpha_above = np.cumsum(alpha[:, ::-1], axis=1)[:, ::-1] - alpha
    crossings = (alpha_above * beta).sum(axis=1)
    occupation = alpha + beta
    site = np.arange(order.size)
    inverted = ((site[:, None] < site[None, :]) & (order[:, None] > order[None, :])).astype(np.int64)
    swaps = np.einsum("ki,ij,kj->k", occupation, inverted, occupation)
    bits = np.zeros((dets.shape[0], 2 * order.size), dtype=np.uint8)
    bits[:, 2 * order], bits[:, 2 * order + 1] = alpha, beta
    return torch.from_numpy(bits), 1.0 - 2.0 * ((crossings + swaps) % 2)


def _ground_state(driver, ints: Integrals, max_bond: int, tol: float, max_sweeps: int):
    """Two-site DMRG of `ints` on a fresh `driver` (SU2 or SZ) in block2's Fiedler order: a forward schedule of
    bond dimensions up to `max_bond` with decreasing noise, until the energy changes by less than `tol` between
    sweeps. Returns (order (n,) — site i is orbital order[i] —, mpo, ket, bond dimensions, discarded weights,
    the sweeps' lowest energies (Hartree))."""
    n, n_elec, spin = ints.n_orb, ints.n_alpha + ints.n_beta, ints.n_alpha - ints.n_beta
    driver.initialize_system(n_sites=n, n_elec=n_elec, spin=spin)
    order = np.asarray(driver.orbital_reordering(ints.h1, ints.h2))
    h1 = ints.h1[order][:, order]
    h2 = ints.h2[order][:, order][:, :, order][:, :, :, order]
    mpo = driver.get_qc_mpo(h1e=h1, g2e=h2, ecore=ints.e_core, iprint=0)
    ket = driver.get_random_mps(tag="KET", bond_dim=max(4, max_bond // 4), nroots=1)
    bonds = [max(4, max_bond // 4)] * 4 + [max(4, max_bond // 2)] * 4 + [max_bond]
    noises = [1e-4] * 4 + [1e-5] * 4 + [1e-6] * 2 + [0.0]
    thrds = [1e-6] * 4 + [1e-7] * 4 + [1e-9]
    driver.dmrg(mpo, ket, n_sweeps=max_sweeps, bond_dims=bonds, noises=noises, thrds=thrds, tol=tol, iprint=0)
    m, dws, es = driver.get_dmrg_results()
    return order, mpo, ket, m, dws, [float(np.min(e)) for e in es]


def _extrapolate(points: list[tuple[int, float, float]]) -> float | None:
    """Linear least squares E = E0 + a w over the (M, w, E) points; None when every w is ~0 (nothing to fit)."""
    w = np.array([p[1] for p in points])
    e = np.array([p[2] for p in points])
    if np.ptp(w) < 1e-14:
        return None
    slope, intercept = np.polyfit(w, e, 1)
    return float(min(intercept, e.min()))  # never above the lowest variational energy
