"""The CCSD state e^{T1+T2}|HF⟩ as determinants in the qubit basis (`--init-state ccsd`).

Why: on the hydrogen chains VMC from the CISD fit ends near CISD's own energy (H16: +43.2 mHa against DMRG,
CISD +42.3; docs/benchmarks.md), and CISD is not size-extensive: its error grows with the chain. The CCSD
wave function carries the disconnected quadruples (T2²/2) that CISD lacks, and its projective energy is within a
few mHa of the exact one (H16: +5.5 mHa). Its determinants up to a rank, screened, are what the network is fitted
to; VMC then takes the variational energy from there.

* `ccsd_amplitudes(ints)`: PySCF's RHF CCSD on the active space's own orbitals (`nqs.target_states._mean_field`: the
  HF reference is the identity in them), t1 (o, v) and t2 (o, o, v, v), and E_CCSD (Hartree, with e_core).
* `spin_orbital_excitations(t1, t2)`: T1 and T2 as spin-orbital excitation operators on the interleaved qubits
  (2p alpha, 2p+1 beta), T1 = Σ t_i^a a_a† a_i, T2 = Σ_{I<J, A<B} t_IJ^AB a_A† a_B† a_J a_I with the same-spin
  amplitudes antisymmetrised (t_ij^ab − t_ij^ba) and the alpha-beta ones PySCF's t2[i, j, a, b].
* `cc_expansion(...)`: Σ_k T^k/k! |HF⟩ restricted to determinants of excitation rank ≤ `max_rank` (exact there:
  T only raises the rank), each operator applied with its Jordan–Wigner signs (a_p on |x⟩ gives (−1)^{#occupied
  q < p}, OpenFermion's convention and ours).

Tests (tests/test_coupled_cluster.py): E_loc(HF) is E_CCSD under our Hamiltonian, and on every single and double
D the CCSD equations hold, (Hψ)_D = E_CCSD ψ_D, which needs the triples and quadruples with their signs; where
nothing is truncated (H4) the expansion equals OpenFermion's expm(T)|HF⟩.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nqs.errors import UserError
from nqs.keys import sum_by_key, unpack

PAIRS_PER_CHUNK = 1 << 22  # (determinant, operator) pairs tried at once: the expansion's memory, not its result


@dataclass(frozen=True)
class Excitations:
    """m excitation operators of one order k: annihilate (m, k) and create (m, k) qubit indices in the order they
    act (right to left in the operator string), amplitude (m,) float64."""

    annihilate: np.ndarray
    create: np.ndarray
    amplitude: np.ndarray


def ccsd_amplitudes(ints) -> tuple[np.ndarray, np.ndarray, float]:
    """(t1 (o, v), t2 (o, o, v, v), E_CCSD in Hartree) of the closed-shell active space; UserError when CCSD does
    not converge."""
    from pyscf import cc

    from nqs.target_states import _mean_field

    solver = cc.CCSD(_mean_field(ints))
    solver.verbose, solver.conv_tol, solver.conv_tol_normt, solver.max_cycle = 0, 1e-11, 1e-8, 200
    solver.kernel()
    if not solver.converged:
        raise UserError("--init-state ccsd: PySCF's CCSD did not converge on this molecule: use --init-state cisd")
    return np.asarray(solver.t1), np.asarray(solver.t2), float(solver.e_tot)


def spin_orbital_excitations(t1: np.ndarray, t2: np.ndarray) -> tuple[Excitations, Excitations]:
    """(singles, doubles) of the restricted amplitudes on the interleaved qubits; occupied spatial orbital i is
    qubits 2i, 2i + 1 and virtual a is 2(o + a), 2(o + a) + 1."""
    o, v = t1.shape
    occ = lambda i, s: 2 * i + s  # noqa: E731
    vir = lambda a, s: 2 * (o + a) + s  # noqa: E731
    i, a = np.meshgrid(np.arange(o), np.arange(v), indexing="ij")
    singles = Excitations(
        np.concatenate([occ(i, s).reshape(-1, 1) for s in (0, 1)]),
        np.concatenate([vir(a, s).reshape(-1, 1) for s in (0, 1)]),
        np.concatenate([t1.ravel(), t1.ravel()]))
    i, j, a, b = (x.ravel() for x in np.meshgrid(np.arange(o), np.arange(o), np.arange(v), np.arange(v),
                                                  indexing="ij"))
    annihilate = [np.stack([occ(i, 0), occ(j, 1)], 1)]  # a_{a alpha}† a_{b beta}† a_{j beta} a_{i alpha}
    create = [np.stack([vir(b, 1), vir(a, 0)], 1)]
    amplitude = [t2.ravel()]
    same = (t2 - t2.transpose(0, 1, 3, 2)).ravel()
    pair = (i < j) & (a < b)
    for s in (0, 1):  # a_A† a_B† a_J a_I, I < J and A < B of one spin
        annihilate.append(np.stack([occ(i[pair], s), occ(j[pair], s)], 1))
        create.append(np.stack([vir(b[pair], s), vir(a[pair], s)], 1))
        amplitude.append(same[pair])
    doubles = Excitations(np.concatenate(annihilate), np.concatenate(create), np.concatenate(amplitude))
    return singles, doubles


def _parity(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(np.int64) & 1


def _below(p: np.ndarray) -> np.ndarray:
    return (np.int64(1) << p) - 1


def _combine(keys: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One entry per distinct key (sorted), the values summed (`nqs.keys.sum_by_key`); exact zeros dropped."""
    distinct, total = sum_by_key(torch.from_numpy(np.concatenate(keys)).unsqueeze(1),
                                 torch.from_numpy(np.concatenate(values)))
    distinct, total = distinct[:, 0].numpy(), total.numpy()
    return distinct[total != 0], total[total != 0]


def apply_excitations(keys: np.ndarray, values: np.ndarray, ops: Excitations, reference: int,
                      max_rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Σ_m t_m E_m |v⟩ for the state v = Σ values |keys⟩ (packed int64 determinants), keeping the results of rank
    ≤ max_rank (rank: electrons outside the reference's spin-orbitals)."""
    order = ops.annihilate.shape[1]
    room = np.bitwise_count(keys & ~np.int64(reference)) + order <= max_rank
    keys, values = keys[room], values[room]
    one = np.int64(1)
    occupied = np.bitwise_or.reduce(one << ops.annihilate, axis=1)
    empty = np.bitwise_or.reduce(one << ops.create, axis=1)
    out_keys, out_values = [np.zeros(0, np.int64)], [np.zeros(0)]
    rows = max(1, PAIRS_PER_CHUNK // max(1, ops.amplitude.size))
    for start in range(0, keys.size, rows):
        x = keys[start:start + rows, None]
        det, op = np.nonzero(((x & occupied) == occupied) & ((x & empty) == 0))
        y, sign = keys[start + det], np.zeros(det.size, np.int64)
        for col in range(order):
            p = ops.annihilate[op, col]
            sign ^= _parity(y & _below(p))
            y = y ^ (one << p)
        for col in range(order):
            p = ops.create[op, col]
            sign ^= _parity(y & _below(p))
            y = y | (one << p)
        amp = values[start + det] * ops.amplitude[op] * (1 - 2 * sign)
        if y.size:
            k, c = _combine([y], [amp])
            out_keys.append(k)
            out_values.append(c)
    return _combine(out_keys, out_values)


def cc_expansion(singles: Excitations, doubles: Excitations, reference: int, max_rank: int,
                 prune: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """e^{T1+T2}|reference⟩ on the determinants of rank ≤ max_rank: (keys (K,) int64 sorted, amplitudes (K,)
    float64, the reference's 1). `prune` > 0 drops terms of T^k/k! below it before T is applied again (what they
    would add is below prune × |t|); 0 keeps every term."""
    keys, values = np.array([reference], np.int64), np.ones(1)
    all_keys, all_values = [keys], [values]
    for k in range(1, max_rank + 1):
        parts = [apply_excitations(keys, values, ops, reference, max_rank) for ops in (singles, doubles)]
        keys, values = _combine([p[0] for p in parts], [p[1] for p in parts])
        values = values / k
        if prune > 0:
            keys, values = keys[np.abs(values) >= prune], values[np.abs(values) >= prune]
        all_keys.append(keys)
        all_values.append(values)
        if keys.size == 0:
            break
    return _combine(all_keys, all_values)


MAX_RANK, TOL = 4, 1e-5  # H10: 10,074 determinants, screened weight 1.4e-8; H16: 451,103, 2.5e-6


def ccsd_state(ints, max_rank: int = MAX_RANK, tol: float = TOL):
    """The CCSD state's determinants of rank ≤ max_rank with |c| ≥ tol (c_HF = 1), as a `TargetState` sorted by
    |c| (largest first), normalised over what is kept; its energy is E_CCSD (projective: the kept state's
    variational energy lies above it; H10 +1.1 mHa). Its detail names the rank, tol and the screened weight."""
    from nqs.target_states import TargetState

    if ints.n_alpha != ints.n_beta:
        raise UserError(f"--init-state ccsd needs a closed shell (N_alpha = N_beta; this molecule has "
                        f"{ints.n_alpha}, {ints.n_beta}): drop --init-state")
    n = 2 * ints.n_orb
    if n > 62:
        raise UserError(f"--init-state ccsd packs a determinant in one 64-bit word: at most 62 qubits (this molecule "
                        f"has {n}): use --init-state cisd")
    t1, t2, energy = ccsd_amplitudes(ints)
    singles, doubles = spin_orbital_excitations(t1, t2)
    reference = (1 << (2 * ints.n_alpha)) - 1
    keys, values = cc_expansion(singles, doubles, reference, max_rank, prune=tol / 100)
    norm2 = float((values ** 2).sum())
    kept = np.abs(values) >= tol
    keys, values = keys[kept], values[kept]
    order = np.argsort(-np.abs(values), kind="stable")
    keys, values = keys[order], values[order]
    bits = unpack(torch.from_numpy(keys).unsqueeze(-1), n)
    amplitudes = torch.from_numpy(values / np.sqrt((values ** 2).sum()))
    dropped = 1.0 - float((values ** 2).sum()) / norm2
    return TargetState(bits, amplitudes, energy, "ccsd",
                       f" of excitation rank <= {max_rank} with |c| >= {tol:g}, screened weight {dropped:.1e}; "
                       f"E is CCSD's projective energy")
