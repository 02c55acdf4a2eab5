"""How low can the local-energy overhead go on one CPU core? A fused compiled kernel, measured stage by stage.

    .venv/bin/pip install -c constraints.txt -e '.[bench]'   # numba, used by this script only
    .venv/bin/python scripts/bench_fused_floor.py [--molecule N2] [--batch 1024] [--threads 1] [--repeats 30]

Issue 2 asks for overhead_fraction <= 0.25 on N2 with psi a 2x64 MLP, i.e. at most a third of the psi time
spent outside psi. On the FCI batch of `bench_local_energy.py` (same draw, same MLP) psi is cheap: 1,024
configurations connect to ~91k (sample, x') pairs, but only ~1,800 distinct configurations, so psi costs
~0.7 ms. This script asks whether compiled code could fit the rest into a third of that. It runs, on the
same batch and in the same process:

* `torch`: our kernel (`nqs.local_energy.local_energy`), overhead fraction as in `bench_local_energy.py`;
* `fused`: the same algorithm as one compiled numba loop per stage, reading our pattern tables
  (A: enumerate every (sample, flip mask) and keep the allowed ones, branch-free; B: element, sign and
  deduplication through an open-addressing hash table, one pass per candidate; diagonal; accumulation of
  H_xx' psi(x') / psi(x)), checked against `torch` to 1e-10 Ha;
* `floor`: the parts of the fused kernel that every deduplicating kernel must do once per pair, each timed
  alone on precomputed inputs (hash lookup of the pair keys, element + sign from the tables, accumulation)
  plus the diagonal. Their sum against psi's time is a lower bound on overhead_fraction for scalar
  compiled code; it leaves out enumeration entirely.

Prints one JSON line and a table (times in microseconds, best of --repeats).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

try:
    import numba
    from numba.core.extending import intrinsic
except ImportError:
    print("bench_fused_floor.py needs numba: .venv/bin/pip install -c constraints.txt -e '.[bench]'", file=sys.stderr)
    raise SystemExit(2)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_local_energy import best_of, draw_batch, make_mlp, timed_psi_call  # noqa: E402
from nqs.exact import fci_state  # noqa: E402
from nqs.hilbert import pack, unpack  # noqa: E402
from nqs.local_energy import local_energy  # noqa: E402
from nqs.molecules import resolve_molecule  # noqa: E402
from nqs.problem import build_problem  # noqa: E402

GOLDEN = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as a signed 64-bit integer


@numba.njit(cache=True)
def _slot(table, slot_of, unique, n_unique, key):
    """Slot of `key` in an open-addressing table (capacity = len(table), a power of two), inserting it if new."""
    mask = table.shape[0] - 1
    i = ((key * GOLDEN) >> 20) & mask
    while True:
        k = table[i]
        if k == key:
            return slot_of[i], n_unique
        if k == -1:
            table[i], slot_of[i], unique[n_unique] = key, n_unique, key
            return n_unique, n_unique + 1
        i = (i + 1) & mask


@intrinsic
def _popcount(typingctx, value):
    """The CPU's popcnt through LLVM's ctpop (numba has no builtin for it)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return value(value), codegen


@numba.njit(cache=True)
def _parity(y):
    return _popcount(y) & 1


@numba.njit(cache=True)
def stage_enumerate(bits_t, qubits4, width, allowed):
    """A: allowed (sample, mask) candidates, mask-major. bits_t (n + 1, B) int32 with a zero last row."""
    n_masks, batch = qubits4.shape[0], bits_t.shape[1]
    cand_b = np.empty(n_masks * batch, np.int32)
    cand_k = np.empty(n_masks * batch, np.int32)
    cand_r = np.empty(n_masks * batch, np.int32)
    row = np.empty(batch, np.int32)
    count = 0
    for k in range(n_masks):
        r0, r1, r2, r3 = bits_t[qubits4[k, 0]], bits_t[qubits4[k, 1]], bits_t[qubits4[k, 2]], bits_t[qubits4[k, 3]]
        base = k * width
        for b in range(batch):  # vectorised by LLVM
            row[b] = base + (r0[b] | (r1[b] << 1) | (r2[b] << 2) | (r3[b] << 3))
        for b in range(batch):  # branch-free compaction
            cand_b[count], cand_k[count], cand_r[count] = b, k, row[b]
            count += allowed[row[b]]
    return cand_b[:count], cand_k[:count], cand_r[:count]


@numba.njit(cache=True)
def stage_pairs(keys, cand_b, cand_k, cand_r, masks, chain, constant, linear_row, linear, tol, capacity):
    """B: element, sign and hash slot of every candidate; the batch takes the first slots."""
    table = np.full(capacity, -1, np.int64)
    slot_of = np.zeros(capacity, np.int64)
    unique = np.empty(capacity // 2, np.int64)
    n_unique = 0
    batch_slot = np.empty(keys.shape[0], np.int64)
    for b in range(keys.shape[0]):
        batch_slot[b], n_unique = _slot(table, slot_of, unique, n_unique, keys[b])
    n = cand_b.shape[0]
    pair_b, pair_s, pair_e = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.float64)
    no_linear = linear.shape[0] - 1
    count = 0
    for c in range(n):
        b, k, r = cand_b[c], cand_k[c], cand_r[c]
        x = keys[b]
        e = constant[r]
        if linear_row[r] != no_linear:
            for i in range(linear.shape[1]):
                if (x >> i) & 1:
                    e += linear[linear_row[r], i]
        if _parity(x & chain[k]):
            e = -e
        if abs(e) <= tol:  # cancels for this x (rare): x' is not evaluated
            continue
        if n_unique >= unique.shape[0]:
            raise ValueError("hash table full: raise capacity")
        pair_b[count] = b
        pair_s[count], n_unique = _slot(table, slot_of, unique, n_unique, x ^ masks[k])
        pair_e[count] = e
        count += 1
    return batch_slot, unique[:n_unique].copy(), pair_b[:count], pair_s[:count], pair_e[:count]


def stage_diagonal(bits, constant, quadratic):
    """H_xx = c0 + x^T Q x for (B, n) float64 bits: numpy's GEMM beat a compiled loop over occupied pairs."""
    return ((bits @ quadratic) * bits).sum(1) + constant


@numba.njit(cache=True)
def stage_accumulate(diagonal, batch_slot, pair_b, pair_s, pair_e, psi_re, psi_im):
    """E_loc(b) = H_bb + sum_pairs H psi(x') / psi(x_b), psi scaled by the batch's largest amplitude."""
    num_re, num_im = np.zeros(diagonal.shape[0]), np.zeros(diagonal.shape[0])
    for q in range(pair_b.shape[0]):
        s, b, e = pair_s[q], pair_b[q], pair_e[q]
        num_re[b] += e * psi_re[s]
        num_im[b] += e * psi_im[s]
    out = np.empty(diagonal.shape[0], np.complex128)
    for b in range(diagonal.shape[0]):
        s = batch_slot[b]
        out[b] = diagonal[b] + complex(num_re[b], num_im[b]) / complex(psi_re[s], psi_im[s])
    return out


@numba.njit(cache=True)
def floor_hash(all_keys, capacity):
    table, slot_of = np.full(capacity, -1, np.int64), np.zeros(capacity, np.int64)
    unique, slots = np.empty(capacity // 2, np.int64), np.empty(all_keys.shape[0], np.int32)
    n_unique = 0
    for q in range(all_keys.shape[0]):
        slots[q], n_unique = _slot(table, slot_of, unique, n_unique, all_keys[q])
    return slots


@numba.njit(cache=True)
def floor_elements(keys, cand_b, cand_k, cand_r, chain, constant):
    """Element and sign of every candidate from the tables (without the single excitations' linear term)."""
    out = np.empty(cand_b.shape[0])
    for c in range(cand_b.shape[0]):
        e = constant[cand_r[c]]
        out[c] = -e if _parity(keys[cand_b[c]] & chain[cand_k[c]]) else e
    return out


class Fused:
    """The pattern tables of a real CompiledHamiltonian (<= 4 flipped qubits per mask) as numpy arrays."""

    def __init__(self, h):
        t = h.patterns
        if t is None or not h.is_real:
            raise SystemExit("bench_fused_floor.py: needs a real Hamiltonian with pattern tables")
        n = h.n_qubits
        self.n, self.width = n, t.width
        self.masks = h.flip_masks[1:].numpy()
        weights = t.weights_t.double().numpy()  # (n, K'): 1 on the chain, 2^(shift + j) on flipped qubit j
        flipped = (self.masks[:, None] >> np.arange(n)) & 1  # (K', n)
        if flipped.sum(1).max() > 4:
            raise SystemExit("bench_fused_floor.py: a flip mask moves more than 4 qubits")
        self.qubits4 = np.full((len(self.masks), 4), n, np.int64)  # row n of bits_t is zeros
        for k, row in enumerate(flipped):
            q = np.flatnonzero(row)
            self.qubits4[k, :len(q)] = q
        self.chain = (((weights.T == 1.0) & (flipped == 0)).astype(np.int64) << np.arange(n)).sum(1)
        self.allowed = t.allowed.numpy().astype(np.int32)
        self.constant, self.linear_row = t.constant.numpy(), t.linear_row.numpy()
        self.linear = np.ascontiguousarray(t.linear_t.numpy().T)  # (R + 1, n), last row zeros
        self.diag_constant, self.quadratic = float(t.diag_constant), t.diag_quadratic.numpy()

    def connect(self, bits: torch.Tensor, tol: float = 1e-12):
        keys = pack(bits).numpy()
        bits_t = np.zeros((self.n + 1, len(keys)), np.int32)
        bits_t[:self.n] = bits.numpy().T
        cand = stage_enumerate(bits_t, self.qubits4, self.width, self.allowed)
        capacity = 1 << int(np.ceil(np.log2(4 * len(keys) + 64)))
        while True:
            try:
                pairs = stage_pairs(keys, *cand, self.masks, self.chain, self.constant, self.linear_row,
                                    self.linear, tol, capacity)
                break
            except ValueError:
                capacity *= 4
        return keys, bits_t, cand, pairs, capacity

    def local_energy(self, bits: torch.Tensor, log_psi):
        keys, _, _, (batch_slot, unique, pair_b, pair_s, pair_e), _ = self.connect(bits)
        diagonal = stage_diagonal(bits.numpy().astype(np.float64), self.diag_constant, self.quadratic)
        log_values = log_psi(unpack(torch.from_numpy(unique), self.n)).to(torch.complex128).numpy()
        psi = np.exp(log_values - log_values.real[batch_slot].max())
        return stage_accumulate(diagonal, batch_slot, pair_b, pair_s, pair_e, psi.real.copy(), psi.imag.copy())


def best_us(repeats: int, fn) -> float:
    return 1e6 * best_of(repeats, fn)[0]


def overhead(repeats: int, fn, mlp) -> tuple[float, float, float]:
    """(total us, psi us, overhead fraction) of the best-of-repeats run of fn(timed psi)."""
    total, psi = timed_psi_call(fn, mlp, repeats)[:2]
    return 1e6 * total, 1e6 * psi, (total - psi) / total


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecule", default="N2")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)

    problem = build_problem(resolve_molecule(args.molecule))
    h = problem.compiled()
    fci_bits, psi, _ = fci_state(problem)
    bits = fci_bits[draw_batch(psi, args.batch, args.seed)]
    mlp = make_mlp(problem.n_qubits)
    fused = Fused(h)

    reference = local_energy(h, bits, mlp).values.numpy()
    ours = fused.local_energy(bits, mlp)  # also compiles (or loads) every stage
    max_diff = float(np.abs(ours - reference).max())
    if max_diff > 1e-10:
        raise SystemExit(f"bench_fused_floor.py: fused E_loc differs from the kernel's by {max_diff:.2e} Ha")

    torch_total, torch_psi, torch_overhead = overhead(args.repeats, lambda p: local_energy(h, bits, p), mlp)
    fused_total, fused_psi, fused_overhead = overhead(args.repeats, lambda p: fused.local_energy(bits, p), mlp)

    keys, bits_t, cand, pairs, capacity = fused.connect(bits)
    batch_slot, unique, pair_b, pair_s, pair_e = pairs
    bits64 = bits.numpy().astype(np.float64)
    diagonal = stage_diagonal(bits64, fused.diag_constant, fused.quadratic)
    amplitudes = np.exp(0.1 * np.random.default_rng(0).standard_normal(len(unique)) + 0j)
    psi_re, psi_im = amplitudes.real.copy(), amplitudes.imag.copy()
    all_keys = np.concatenate([keys, unique[pair_s]])
    unique_bits = unpack(torch.from_numpy(unique), problem.n_qubits)
    floor_hash(all_keys, capacity)
    floor_elements(keys, *cand, fused.chain, fused.constant)
    r = args.repeats
    stages = {
        "psi_mlp_us": best_us(r, lambda: mlp(unique_bits)),
        "enumerate_us": best_us(r, lambda: stage_enumerate(bits_t, fused.qubits4, fused.width, fused.allowed)),
        "pairs_us": best_us(r, lambda: stage_pairs(keys, *cand, fused.masks, fused.chain, fused.constant,
                                                   fused.linear_row, fused.linear, 1e-12, capacity)),
        "diagonal_us": best_us(r, lambda: stage_diagonal(bits64, fused.diag_constant, fused.quadratic)),
        "accumulate_us": best_us(r, lambda: stage_accumulate(diagonal, batch_slot, pair_b, pair_s, pair_e,
                                                             psi_re, psi_im)),
        "floor_hash_us": best_us(r, lambda: floor_hash(all_keys, capacity)),
        "floor_elements_us": best_us(r, lambda: floor_elements(keys, *cand, fused.chain, fused.constant)),
    }
    floor = stages["floor_hash_us"] + stages["floor_elements_us"] + stages["accumulate_us"] + stages["diagonal_us"]
    record = {
        "molecule": args.molecule, "batch": len(keys), "n_flip_masks": h.n_flip_masks,
        "candidates": int(len(keys) * (h.n_flip_masks - 1)), "pairs": int(len(pair_b)), "unique": int(len(unique)),
        "torch_total_us": torch_total, "torch_psi_us": torch_psi, "torch_overhead_fraction": torch_overhead,
        "fused_total_us": fused_total, "fused_psi_us": fused_psi, "fused_overhead_fraction": fused_overhead,
        **stages, "floor_us": floor, "budget_us": stages["psi_mlp_us"] / 3,
        "floor_overhead_fraction": floor / (floor + stages["psi_mlp_us"]),
        "fused_minus_torch_eloc": max_diff, "threads": args.threads, "repeats": r,
        "numba": numba.__version__, "torch": torch.__version__, "machine": platform.machine(),
    }
    print(json.dumps(record))
    print(f"\n# {args.molecule}, B = {len(keys)}: {record['candidates']:,} (sample, mask) candidates, "
          f"{record['pairs']:,} pairs, {record['unique']:,} distinct configurations; "
          f"threads {args.threads}, best of {r}, times in us")
    print("| kernel | total | psi | overhead fraction |\n|---|---:|---:|---:|")
    print(f"| torch (ours) | {torch_total:.0f} | {torch_psi:.0f} | {torch_overhead:.3f} |")
    print(f"| fused (numba) | {fused_total:.0f} | {fused_psi:.0f} | {fused_overhead:.3f} |")
    print(f"| per-pair floor (no enumeration) | {floor + stages['psi_mlp_us']:.0f} | {stages['psi_mlp_us']:.0f} | "
          f"{record['floor_overhead_fraction']:.3f} |")
    print("\n| fused stage | us |\n|---|---:|")
    for key, value in stages.items():
        print(f"| {key[:-3]} | {value:.0f} |")
    print(f"| budget for 0.25 (psi / 3) | {record['budget_us']:.0f} |")


if __name__ == "__main__":
    main()
