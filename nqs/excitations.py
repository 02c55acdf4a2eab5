"""Connections from the integrals: Slater-Condon rules in the Jordan-Wigner occupation basis, no Pauli table.

H = e_core + sum_pq h_pq sum_s a+_ps a_qs + 1/2 sum_pqrs (pq|rs) sum_st a+_ps a+_rt a_st a_qs, with `nqs.chem.Integrals`'
spatial h1 and chemists' (pq|rs): the operator `nqs.operator.interaction_operator` hands to Jordan-Wigner.
The integrals are used exactly. The Pauli tables are not quite: OpenFermion zeroes integrals below its
EQ_TOLERANCE = 1e-8 (`spinorb_from_spatial`) and drops Pauli strings whose running sum falls below it
(`SymbolicOperator.__iadd__`), which moves elements by up to 3e-7 Ha where small integrals survive symmetry
(NH3, PH3, LiCl); with those truncations off, both paths agree to 1e-10 Ha (tests/test_excitations.py). Qubit
2p is alpha of spatial orbital p, 2p+1 beta; capitals below are spatial orbitals, n_P = n_Pa + n_Pb occupations.

* diagonal  H_xx = e_core + sum_P h_PP n_P + 1/2 n^T J n - 1/2 sum_s n_s^T K n_s,  J_PQ = (PP|QQ), K_PQ = (PQ|QP).
* single    x' = a+_a a_i x (same spin s):  H_x'x = sgn * F_s(x)_AI,
            F_s(x)_AI = h_AI + sum_K n_K (AI|KK) - sum_K n_Ks (AK|KI)  (the k = i terms cancel).
* double    x' = a+_a a+_b a_j a_i x:  H_x'x = sgn * (<ab|ij> - <ab|ji>),  <ab|ij> = (AI|BJ) d(s_a,s_i) d(s_b,s_j).
* sgn       <x'|a+_a a+_b a_j a_i|x> = (-1)^(c_i + c_j - [i<j] + c_b - [i<b] - [j<b] + c_a - [i<a] - [j<a] + [b<a]),
            c_q = electrons of x on qubits below q (Jordan-Wigner: a_q carries Z_0 ... Z_{q-1}); singles:
            (-1)^(c_i + c_a - [i<a]). The integrals are real, so H_xx' = H_x'x.

Every x of the (N_a, N_b) sector has the same numbers of occupied and empty orbitals per spin, so the excitations
come in five classes of fixed shape (single alpha, single beta, double alpha-alpha, beta-beta, alpha-beta), each
every combination of an occupied row (i, or a pair i < j) and an empty row (a, or a pair a < b) of the sample's
sorted occupied and empty qubits: E = N_a V_a + N_b V_b + C(N_a,2) C(V_a,2) + C(N_b,2) C(V_b,2) + N_a N_b V_a V_b
candidates per sample (V_s = n_orb - N_s; `n_candidates`). A class is one (C, V, O) block of broadcast index
arithmetic and gathers: the flat index of (AI|BJ) splits as (A n^3 + B n) + (I n^2 + J), and the parity as
(c_i + c_j + [i<j]) + (c_a + c_b + [b<a]) + [i between a, b] + [j between a, b] (mod 2). Candidates with
|H_xx'| <= tol are dropped (point-group zeros included). Work and memory per sample grow with E, not with the
Pauli table's K flip masks.

Memory bound: a block of C samples x T candidates holds at most BYTES_PER_CANDIDATE = 128 bytes per candidate
(int64 flat indices and gathered integrals, the parity, the signed element, the mask; ~70 bytes counted), and
blocks are sized so that BYTES_PER_CANDIDATE * C * T <= `memory_bytes` (whole samples while one fits, else slices
of a class's empty rows). Beyond the block, a call holds its output pairs (16 + 8 W bytes each, W key words; twice
that while they are concatenated), the samples' keys, and the integrals (8 n_orb^4 + 16 n_orb^3 bytes, held once
per IntegralHamiltonian: 50 MB at 50 orbitals).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from nqs.chem import Integrals
from nqs.keys import flip, n_words, pack

BYTES_PER_CANDIDATE = 128


def _pairs(first: np.ndarray, second: np.ndarray | None = None) -> torch.Tensor:
    """(P, 2) int64 slot pairs: i < j within `first`, or every (i, j) of first x second."""
    if second is None:
        return torch.from_numpy(np.array(list(itertools.combinations(first, 2)), dtype=np.int64).reshape(-1, 2))
    return torch.from_numpy(np.stack(np.meshgrid(first, second, indexing="ij"), -1).reshape(-1, 2))


def _classes(n_orb: int, n_alpha: int, n_beta: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Excitation classes as (kind, occupied slots (O, m), empty slots (V, m)), slots into each sample's
    occupied qubits [occ_a, occ_b] and empty qubits [vir_a, vir_b]; kind: single-a, single-b, double-same,
    double-mixed. A class's excitations are every (empty row, occupied row) combination."""
    oa, ob = np.arange(n_alpha), n_alpha + np.arange(n_beta)
    va, vb = np.arange(n_orb - n_alpha), n_orb - n_alpha + np.arange(n_orb - n_beta)
    classes = [("single-a", torch.from_numpy(oa)[:, None], torch.from_numpy(va)[:, None]),
               ("single-b", torch.from_numpy(ob)[:, None], torch.from_numpy(vb)[:, None]),
               ("double-same", _pairs(oa), _pairs(va)), ("double-same", _pairs(ob), _pairs(vb)),
               ("double-mixed", _pairs(oa, ob), _pairs(va, vb))]
    return [c for c in classes if c[1].shape[0] and c[2].shape[0]]


class IntegralHamiltonian:
    """The integrals as torch tensors on one device, read by `connections`; the same sector fields as
    `nqs.operator.CompiledHamiltonian` (n_qubits, n_alpha, n_beta, device, is_real, patterns = None)."""

    def __init__(self, ints: Integrals, n_alpha: int, n_beta: int, device: str | torch.device = "cpu"):
        dev = torch.device(device)
        n = ints.n_orb
        self.n_orb, self.n_qubits, self.n_alpha, self.n_beta, self.device = n, 2 * n, n_alpha, n_beta, dev
        self.is_real, self.patterns = True, None
        eri = torch.as_tensor(np.ascontiguousarray(ints.h2), dtype=torch.float64, device=dev)  # (A,I,B,J)
        self.eri_flat = eri.reshape(-1)
        self.h1 = torch.as_tensor(ints.h1, dtype=torch.float64, device=dev)
        self.e_core = float(ints.e_core)
        idx = torch.arange(n, device=dev)
        self.coulomb = eri[idx, idx][:, idx, idx].contiguous()  # J_PQ = (PP|QQ)
        self.exchange = eri[idx[:, None], idx[None, :], idx[None, :], idx[:, None]].contiguous()  # K_PQ = (PQ|QP)
        # F_s(x) = h1 + n @ fock_j - n_s @ fock_k, flattened over (A, I)
        self.fock_j = eri.diagonal(dim1=2, dim2=3).permute(2, 0, 1).reshape(n, n * n).contiguous()  # (K, A*n+I)
        self.fock_k = eri.diagonal(dim1=1, dim2=2).permute(2, 0, 1).reshape(n, n * n).contiguous()  # (AK|KI)
        self.classes = [(kind, o.to(dev), v.to(dev)) for kind, o, v in _classes(n, n_alpha, n_beta)]
        self.n_candidates = n_candidates(n, n_alpha, n_beta)

    @property
    def gemm_columns(self) -> int:
        """GEMM columns per sample in `nqs.flops.hamiltonian_flops` units (2 n_qubits FLOPs each): the two Fock
        builds, 2 * n_orb * n_orb^2 FLOPs per spin; the excitations' gathers move memory and add no GEMM."""
        return self.n_orb ** 2

    def diagonal(self, n_a: torch.Tensor, n_b: torch.Tensor) -> torch.Tensor:
        """H_xx (C,) float64 Hartree from spin occupations (C, n_orb) float64."""
        n = n_a + n_b
        return (self.e_core + n @ self.h1.diagonal() + 0.5 * ((n @ self.coulomb) * n).sum(1)
                - 0.5 * ((n_a @ self.exchange) * n_a).sum(1) - 0.5 * ((n_b @ self.exchange) * n_b).sum(1))


def _between(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[lo < q < hi], broadcasting (e.g. (C, 1, O) x (C, V, 1) -> (C, V, O) bool)."""
    return (lo < q) & (q < hi)


def single_sign_odd(c_i: torch.Tensor, c_a: torch.Tensor, i: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Whether <x'|a+_a a_i|x> = -1 (broadcasting): c_i + c_a + [i < a] odd, c_q the electrons of x below q."""
    return ((c_i + c_a) & 1).bool() ^ (i < a)


def double_value(h: "IntegralHamiltonian", same_spin, i, j, a, b) -> torch.Tensor:
    """<ab|ij> - [same spin] <ab|ji> = (AI|BJ) - [same spin] (AJ|BI) (Hartree; broadcasting over int64 qubits, a
    paired with i and b with j; `same_spin` a bool or a bool tensor), the flat index of (AI|BJ) as
    (A n^3 + B n) + (I n^2 + J)."""
    n = h.n_orb
    si, sj, left = i >> 1, j >> 1, (a >> 1) * n ** 3 + (b >> 1) * n
    value = h.eri_flat[left + (si * n ** 2 + sj)]
    if isinstance(same_spin, torch.Tensor):
        return value - torch.where(same_spin, h.eri_flat[left + (sj * n ** 2 + si)], 0.0)
    return value - h.eri_flat[left + (sj * n ** 2 + si)] if same_spin else value


def double_sign_odd(i, j, a, b, c_ij, c_ab) -> torch.Tensor:
    """Whether <x'|a+_a a+_b a_j a_i|x> = -1 (broadcasting; c_ij = c_i + c_j, c_ab = c_a + c_b, electrons of x
    below each): (c_i + c_j + [i < j]) + (c_a + c_b + [b < a]) + [i between a, b] + [j between a, b] odd."""
    odd = ((c_ij + (i < j).long()) + (c_ab + (b < a).long())) & 1
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    return odd.bool() ^ _between(i, lo, hi) ^ _between(j, lo, hi)


def _block(h: IntegralHamiltonian, kind: str, occ: torch.Tensor, vir: torch.Tensor, counts: torch.Tensor,
           fock: torch.Tensor | None, tol: float):
    """One class for C samples: occupied (C, O, m) and empty (C, V, m) qubits of its excitations -> the
    survivors' sample (P,), rows (P,) into the flattened (C V) and (C O), and element (P,): H_x'x of moving o to v."""
    C, O, m = occ.shape
    V, n = vir.shape[1], h.n_orb
    co, cv = counts.gather(1, occ.reshape(C, -1)).view(C, O, m), counts.gather(1, vir.reshape(C, -1)).view(C, V, m)
    if m == 1:  # single o -> v: F_s[A, I]
        index = ((vir[..., 0] >> 1) * n).unsqueeze(2) + (occ[..., 0] >> 1).unsqueeze(1)  # (C, V, O)
        element = fock.gather(1, index.view(C, -1)).view(C, V, O)
        odd = single_sign_odd(co[..., 0].unsqueeze(1), cv[..., 0].unsqueeze(2), occ[..., 0].unsqueeze(1),
                              vir[..., 0].unsqueeze(2))
        element = torch.where(odd, -element, element)
    else:  # double (i, j) -> (a, b)
        i, j = occ[..., 0].unsqueeze(1), occ[..., 1].unsqueeze(1)
        a, b = vir[..., 0].unsqueeze(2), vir[..., 1].unsqueeze(2)
        element = double_value(h, kind == "double-same", i, j, a, b)
        element = torch.where(double_sign_odd(i, j, a, b, co.sum(2).unsqueeze(1), cv.sum(2).unsqueeze(2)),
                              -element, element)
    mask = element.abs() > tol
    c, v, o = mask.nonzero().unbind(1)  # row-major, as element[mask]
    return c, c * V + v, c * O + o, element[mask]


def _flips(qubits: torch.Tensor, W: int) -> torch.Tensor:
    """Key flip masks (C R, W) of qubit sets (C, R, m): XOR one with a key to flip those m qubits."""
    C, R, m = qubits.shape
    return flip(torch.zeros(C * R, W, dtype=torch.int64, device=qubits.device), qubits.reshape(C * R, m))


def connections(h: IntegralHamiltonian, bits: torch.Tensor, tol: float = 1e-12, memory_bytes: int = 256 * 2**20,
                keep=None, singles_only: bool = False):
    """Diagonal (B,) and the pairs (sample (P,), keys (P, W), element (P,)) of a batch of in-sector bits (B, n),
    C samples x T excitations at a time (module docstring: the memory bound). `keep`, when given, maps a block's
    keys (p, W) to a bool mask (p,) of the pairs to keep (e.g. those inside a sample set), applied per block.
    `singles_only`: the single excitations alone (`nqs.heat_bath` finds the doubles from sorted tables)."""
    bits = bits.to(h.device)
    B = bits.shape[0]
    keys_x = pack(bits)
    classes = [c for c in h.classes if c[0].startswith("single")] if singles_only else h.classes
    per_sample = h.n_alpha * (h.n_orb - h.n_alpha) + h.n_beta * (h.n_orb - h.n_beta) if singles_only else h.n_candidates
    rows = max(1, memory_bytes // (BYTES_PER_CANDIDATE * max(per_sample, 1)))
    span = max(1, memory_bytes // BYTES_PER_CANDIDATE)  # excitations per block when one sample exceeds the bound
    diag, samples, keys, elements = [], [], [], []
    for start in range(0, B, rows):
        x = bits[start:start + rows].to(torch.int64)
        C = x.shape[0]
        counts = torch.zeros(C, h.n_qubits + 1, dtype=torch.int64, device=h.device)
        torch.cumsum(x, 1, out=counts[:, 1:])  # electrons below each qubit
        spins = (x[:, 0::2], x[:, 1::2])
        order = [torch.sort(s, dim=1, descending=True, stable=True).indices for s in spins]  # occupied first
        occ = torch.cat([2 * order[0][:, :h.n_alpha], 2 * order[1][:, :h.n_beta] + 1], 1)  # (C, N_a + N_b)
        vir = torch.cat([2 * order[0][:, h.n_alpha:], 2 * order[1][:, h.n_beta:] + 1], 1)
        n_a, n_b = (s.to(torch.float64) for s in spins)
        diag.append(h.diagonal(n_a, n_b))
        n_tot = n_a + n_b
        focks = {"single-a": h.h1.reshape(1, -1) + n_tot @ h.fock_j - n_a @ h.fock_k,
                 "single-b": h.h1.reshape(1, -1) + n_tot @ h.fock_j - n_b @ h.fock_k}  # (C, n_orb^2)
        for kind, o_slots, v_slots in classes:
            o_q = occ[:, o_slots]  # (C, O, m)
            o_flip = _flips(o_q, keys_x.shape[1])
            step = max(1, span // (C * o_slots.shape[0]))
            for v0 in range(0, v_slots.shape[0], step):
                v_q = vir[:, v_slots[v0:v0 + step]]
                b, v_row, o_row, e = _block(h, kind, o_q, v_q, counts, focks.get(kind), tol)
                k = (keys_x.index_select(0, b + start) ^ _flips(v_q, keys_x.shape[1]).index_select(0, v_row)
                     ^ o_flip.index_select(0, o_row))
                if keep is not None:
                    mask = keep(k)
                    b, k, e = b[mask], k[mask], e[mask]
                samples.append(b + start)
                keys.append(k)
                elements.append(e)
    if not samples:  # no samples, or a sector without excitations
        dev, W = h.device, n_words(h.n_qubits)
        diag = diag or [torch.zeros(0, dtype=torch.float64, device=dev)]
        samples, keys = [torch.zeros(0, dtype=torch.int64, device=dev)], [torch.zeros(0, W, dtype=torch.int64, device=dev)]
        elements = [torch.zeros(0, dtype=torch.float64, device=dev)]
    return torch.cat(diag), torch.cat(samples), torch.cat(keys), torch.cat(elements)


def n_candidates(n_orb: int, n_alpha: int, n_beta: int) -> int:
    """E: the candidate excitations per sample (singles and doubles of the sector), before screening."""
    va, vb = n_orb - n_alpha, n_orb - n_beta
    return (n_alpha * va + n_beta * vb + math.comb(n_alpha, 2) * math.comb(va, 2)
            + math.comb(n_beta, 2) * math.comb(vb, 2) + n_alpha * n_beta * va * vb)


def mean_diagonal(ints: Integrals) -> float:
    """Tr H / dim over the (N_a, N_b) sector, Hartree, in closed form: the mean of the diagonal H_xx over
    uniformly random alpha and beta strings, with E[n_Ps] = N_s / n and, for P != Q,
    E[n_Ps n_Qs] = N_s (N_s - 1) / (n (n - 1)); alpha and beta are independent."""
    n = ints.n_orb
    h1, h2 = ints.h1, ints.h2
    idx = np.arange(n)
    coulomb, exchange = h2[idx, idx][:, idx, idx], h2[idx[:, None], idx[None, :], idx[None, :], idx[:, None]]

    def moments(m: int) -> np.ndarray:  # E[n_Ps n_Qs] (n, n)
        off = m * (m - 1) / (n * (n - 1)) if n > 1 else 0.0
        return np.where(np.eye(n, dtype=bool), m / n, off)

    pa, pb = moments(ints.n_alpha), moments(ints.n_beta)
    cross = 2 * ints.n_alpha * ints.n_beta / n ** 2  # E[n_Pa n_Qb] + E[n_Pb n_Qa]
    mean = (ints.e_core + np.trace(h1) * (ints.n_alpha + ints.n_beta) / n
            + 0.5 * np.sum(coulomb * (pa + pb + cross)) - 0.5 * np.sum(exchange * (pa + pb)))
    return float(mean)
