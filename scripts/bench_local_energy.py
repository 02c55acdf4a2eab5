"""Benchmark of the exact local-energy kernel (issue 2) against a scipy CSR row-slicing baseline.

    .venv/bin/python scripts/bench_local_energy.py [--molecules H2O N2] [--batch 1024] [--threads 1] [--repeats 3]

For every molecule:

* the batch: B distinct configurations drawn with `torch.multinomial(p, B, replacement=False)` (seeded)
  from p = |psi_FCI|^2 over the (N_alpha, N_beta) sector. Only configurations with p > 0 in float64 are
  eligible, so B is capped at their number (H2O's whole sector has 441 configurations < 1024; the JSON
  `batch` is the B actually used and `batch_requested` the one asked for).
* kernel: `nqs.local_energy.local_energy(problem.compiled(), bits, amplitude_lookup(fci bits, psi))`,
  best of `--repeats` -> `kernel_configs_per_s` = B / seconds.
* CSR baseline: OpenFermion's sector-restricted sparse matrix
  `get_number_preserving_sparse_operator(get_fermion_operator(interaction_operator(ints)), n, N_e,
  spin_preserving=True, reference_determinant=HF)`; its basis is OpenFermion's `_iterate_basis_` order
  (by excitation rank from the reference determinant, boolean occupation per spin-orbital, qubit 2p = alpha
  p), which we rebuild and map to our packed bits. `csr_build_s` = OpenFermion build + tocsr();
  `csr_configs_per_s` = B / seconds of `(H[rows] @ psi) / psi[rows]` (row slicing and product only).
  Checked: lowest eigenvalue of that matrix = E_FCI, the matrix equals ours (`nqs.exact.sector_matrix`)
  element by element, and its E_loc equals the kernel's to 1e-10 where |psi(x)| > 1e-4 (below that E_loc
  of the exact state is round-off over round-off: symmetry-forbidden amplitudes are ~1e-15).
* `evals_per_config_naive` = K flip masks (the reference code evaluates B*K configurations),
  `evals_per_config` = kernel n_evals / B (after the sector filter and deduplication).
* `overhead_fraction` = (total - psi time) / total with psi a 2x64 tanh MLP (float32, bits -> two real
  outputs -> complex log psi), psi time accumulated by a perf_counter wrapper around each log_psi call.
  Extras: the same on B configurations drawn uniformly from the sector (`uniform_*`: less deduplication,
  closer to an untrained network's samples), the overhead per configuration in microseconds, and
  `naive_psi_s`: the MLP alone on all B*K flipped configurations (what the reference code evaluates).
  `kernel_dense_configs_per_s`, `dense_overhead_fraction`: the same kernel through its per-string path
  (`dense=True`) instead of the pattern tables, in the same run; `tables_speedup` = their time ratio.
* `peak_rss_mb`: ru_maxrss of a fresh subprocess (a grandchild, see `measure_rss`) that builds the problem
  (from the cache), loads a batch of `--rss-batch` (4096) configurations drawn as above, and runs the kernel
  with the MLP and default chunking; `rss_baseline_mb` is ru_maxrss of the same subprocess right after the
  imports and the problem build. (N2 has only ~1,800 configurations with |psi|^2 > 1e-20; the rest of a
  4096 batch are symmetry-forbidden ones with round-off amplitudes, which connect to many more x'.)
  `--profile` prints a per-operator torch.profiler table of the kernel (psi = MLP) to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nqs.exact import amplitude_lookup, fci_state, sector_matrix  # noqa: E402
from nqs.hilbert import pack, unpack  # noqa: E402
from nqs.local_energy import local_energy  # noqa: E402
from nqs.molecules import resolve_molecule  # noqa: E402
from nqs.problem import build_problem  # noqa: E402

KEYS = ["molecule", "batch", "kernel_configs_per_s", "csr_configs_per_s", "csr_build_s", "evals_per_config_naive",
        "evals_per_config", "overhead_fraction", "peak_rss_mb"]
MLP_SEED = 1234


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class MLP(torch.nn.Module):
    """2 x 64 tanh MLP over the configuration bits; two real outputs -> complex log psi = out0 + i out1."""

    def __init__(self, n_qubits: int, width: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_qubits, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, 2))

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        out = self.net(bits.to(torch.float32))
        return torch.complex(out[:, 0], out[:, 1])


def make_mlp(n_qubits: int) -> MLP:
    torch.manual_seed(MLP_SEED)
    return MLP(n_qubits).eval()


class TimedLogPsi:
    """Wraps a log_psi callable and accumulates the wall time (and thread CPU time) spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds, self.cpu_seconds, self.calls, self.rows = fn, 0.0, 0.0, 0, 0

    def __call__(self, bits: torch.Tensor) -> torch.Tensor:
        start, start_cpu = time.perf_counter(), time.thread_time()
        out = self.fn(bits)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.thread_time() - start_cpu
        self.calls += 1
        self.rows += bits.shape[0]
        return out


def draw_batch(psi: torch.Tensor, batch: int, seed: int) -> torch.Tensor:
    """Indices of min(batch, #{p > 0}) distinct configurations drawn from p = |psi|^2 without replacement."""
    p = psi.abs().to(torch.float64) ** 2
    b = min(batch, int((p > 0).sum()))
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(p / p.sum(), b, replacement=False, generator=g)


def openfermion_sector(problem):
    """OpenFermion's number- and Sz-preserving sparse H (CSR) and its basis as (S, n) uint8 bits, plus timings."""
    import openfermion
    from openfermion.linalg.sparse_tools import _iterate_basis_

    from nqs.operator import interaction_operator

    n, sec = problem.n_qubits, problem.sector
    reference = np.zeros(n, dtype=bool)  # HF-like: alpha orbitals 0..N_alpha-1, beta 0..N_beta-1
    reference[0:2 * sec.n_alpha:2] = True
    reference[1:2 * sec.n_beta:2] = True
    start, start_cpu = time.perf_counter(), time.thread_time()
    fermion_op = openfermion.get_fermion_operator(interaction_operator(problem.integrals))
    matrix = openfermion.linalg.get_number_preserving_sparse_operator(
        fermion_op, n, sec.n_electrons, spin_preserving=True, reference_determinant=reference)
    matrix = matrix.tocsr()
    build_s, build_cpu_s = time.perf_counter() - start, time.thread_time() - start_cpu
    # the basis order of that matrix: the same iterator OpenFermion uses internally (row i <-> state_array[i])
    states = np.asarray(list(_iterate_basis_(reference, sec.n_electrons, True)), dtype=np.uint8)
    return matrix, torch.from_numpy(states), build_s, build_cpu_s


def index_of(keys_basis: torch.Tensor, keys_query: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(keys_basis)
    pos = torch.searchsorted(keys_basis[order], keys_query)
    idx = order[pos.clamp(max=len(order) - 1)]
    if not bool((keys_basis[idx] == keys_query).all()):
        raise RuntimeError("configuration missing from the basis")
    return idx


def best_of(repeats: int, fn):
    """(min wall seconds, result of that call, min CPU seconds of this thread): the CPU time is the
    contention-robust figure on a shared machine (torch runs intra-op work inline with one thread)."""
    best, result, best_cpu = float("inf"), None, float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        out = fn()
        seconds, cpu = time.perf_counter() - start, time.thread_time() - start_cpu
        best_cpu = min(best_cpu, cpu)
        if seconds < best:
            best, result = seconds, out
    return best, result, best_cpu


def vm_hwm_mb() -> float:
    """Peak RSS of this process's address space (VmHWM), MiB: a cross-check of ru_maxrss."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024.0


def rss_child(args) -> None:
    """Fresh process: build (cached) problem -> baseline RSS; kernel with the MLP on the saved batch -> peak."""
    torch.set_num_threads(args.threads)
    problem = build_problem(resolve_molecule(args.rss_child))
    h = problem.compiled()
    baseline = maxrss_mb()
    bits = torch.from_numpy(np.load(args.rss_bits))
    mlp = make_mlp(problem.n_qubits)
    start = time.perf_counter()
    result = local_energy(h, bits, mlp)  # default eval_chunk and memory_bytes
    seconds = time.perf_counter() - start
    print(json.dumps({"rss_baseline_mb": baseline, "peak_rss_mb": maxrss_mb(), "vm_hwm_mb": vm_hwm_mb(),
                      "rss_batch": int(bits.shape[0]), "rss_n_evals": result.n_evals, "rss_seconds": seconds}))


def measure_rss(name: str, fci_bits: torch.Tensor, psi: torch.Tensor, args) -> dict:
    """Run `rss_child` as a grandchild: `sh` forks it, so its ru_maxrss does not inherit this process's peak.

    (A direct fork+exec child starts with ru_maxrss = the parent's RSS at fork: Linux keeps the high-water
    mark of the pre-exec address space in the signal struct, which survives exec.)
    """
    index = draw_batch(psi, args.rss_batch, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bits.npy"
        np.save(path, fci_bits[index].numpy())
        command = [sys.executable, os.path.abspath(__file__), "--rss-child", name, "--rss-bits", str(path),
                   "--threads", str(args.threads)]
        out = subprocess.run(["sh", "-c", '"$@" & wait $!', "sh", *command], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"RSS subprocess failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_psi_call(fn, log_psi, repeats: int):
    """fn(timed log_psi) best of repeats: (total s, psi s inside that run, its result) in wall time, and
    (total s, psi s) of the repeat with the least thread CPU time."""
    best_total, best_psi, best_result = float("inf"), 0.0, None
    best_cpu, best_cpu_psi = float("inf"), 0.0
    for _ in range(repeats):
        timed = TimedLogPsi(log_psi)
        start, start_cpu = time.perf_counter(), time.thread_time()
        result = fn(timed)
        total, cpu = time.perf_counter() - start, time.thread_time() - start_cpu
        if total < best_total:
            best_total, best_psi, best_result = total, timed.seconds, result
        if cpu < best_cpu:
            best_cpu, best_cpu_psi = cpu, timed.cpu_seconds
    return best_total, best_psi, best_result, best_cpu, best_cpu_psi


def timed_local_energy(h, bits: torch.Tensor, log_psi, repeats: int, dense: bool = False):
    """`timed_psi_call` of the kernel, with the psi evaluations made in place of the result."""
    total, psi, result, cpu, cpu_psi = timed_psi_call(lambda timed: local_energy(h, bits, timed, dense=dense),
                                                      log_psi, repeats)
    return total, psi, result.n_evals, cpu, cpu_psi


def profile_ops(name: str, h, bits: torch.Tensor, mlp, repeats: int) -> None:
    """Per-operator CPU time of the kernel with psi = MLP (torch.profiler), printed to stderr."""
    local_energy(h, bits, mlp)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeats):
            local_energy(h, bits, mlp)
    print(f"# profile {name}: {repeats} calls, B = {bits.shape[0]}", file=sys.stderr)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20,
                                                             max_name_column_width=24, max_shapes_column_width=50),
          file=sys.stderr)


def bench_molecule(name: str, args) -> dict:
    problem = build_problem(resolve_molecule(name))
    h = problem.compiled()
    fci_bits, psi, e_fci = fci_state(problem)
    index = draw_batch(psi, args.batch, args.seed)
    bits = fci_bits[index]
    batch = bits.shape[0]
    lookup = amplitude_lookup(fci_bits, psi)

    # our kernel, psi looked up in the FCI vector
    kernel_s, result, kernel_cpu_s = best_of(args.repeats, lambda: local_energy(h, bits, lookup))
    e_ours = result.values
    dense_s, dense_result, _ = best_of(args.repeats, lambda: local_energy(h, bits, lookup, dense=True))
    tables_vs_dense = float((dense_result.values - e_ours).abs().max())

    # OpenFermion's sector matrix, mapped to our bits
    matrix, of_bits, csr_build_s, csr_build_cpu_s = openfermion_sector(problem)
    of_keys = pack(of_bits)
    if len(of_keys) != problem.sector.size or len(torch.unique(of_keys)) != len(of_keys) \
            or not bool(problem.sector.contains(of_bits).all()):
        raise RuntimeError("OpenFermion's basis is not the sector")
    psi_of = np.zeros(len(of_keys))
    psi_of[index_of(of_keys, pack(fci_bits)).numpy()] = psi.numpy()
    rows = index_of(of_keys, pack(bits)).numpy()

    def csr_eloc():
        return (matrix[rows] @ psi_of) / psi_of[rows]

    csr_s, e_csr, csr_cpu_s = best_of(args.repeats, csr_eloc)

    # checks: the matrix is ours, its ground state is E_FCI, and E_loc agrees
    ours_matrix, our_bits = sector_matrix(h, problem.sector)
    perm = index_of(of_keys, pack(our_bits)).numpy()  # our row i <-> OpenFermion row perm[i]
    matrix_diff = float(abs(ours_matrix - matrix[perm][:, perm]).max())
    if matrix.shape[0] <= 2000:
        lowest = float(np.linalg.eigvalsh(matrix.toarray())[0])
    else:
        import scipy.sparse.linalg
        lowest = float(scipy.sparse.linalg.eigsh(matrix, k=1, which="SA", tol=1e-12)[0][0])
    residual = float(np.linalg.norm(matrix @ psi_of - e_fci * psi_of))
    significant = (psi[index].abs() > 1e-4).numpy()
    diff = np.abs(e_ours.numpy() - e_csr)
    eloc_diff_significant = float(diff[significant].max()) if significant.any() else float("nan")
    weighted_diff_all = float((np.abs(psi_of[rows]) * diff).max())
    eloc_vs_fci = float(np.abs(e_csr[significant] - e_fci).max()) if significant.any() else float("nan")
    checks_pass = bool(abs(lowest - e_fci) < 1e-8 and matrix_diff < 1e-10 and eloc_diff_significant < 1e-10)
    if not checks_pass:
        print(f"WARNING {name}: OpenFermion sector matrix check failed", file=sys.stderr)

    # overhead with a small network as psi: on the FCI batch, and on B configurations uniform over the sector
    mlp = make_mlp(problem.n_qubits)
    best_total, best_psi, mlp_evals, mlp_cpu, mlp_cpu_psi = timed_local_energy(h, bits, mlp, args.repeats)
    overhead = (best_total - best_psi) / best_total
    dense_total, dense_psi, _, _, _ = timed_local_energy(h, bits, mlp, args.repeats, dense=True)
    g = torch.Generator().manual_seed(args.seed)
    sector_bits = problem.sector.enumerate_bits()
    uniform = sector_bits[torch.randperm(len(sector_bits), generator=g)[:batch]]
    uni_total, uni_psi, uni_evals, _, _ = timed_local_energy(h, uniform, mlp, args.repeats)
    # what the reference code evaluates: psi on all B*K flipped configurations (psi only, no connections)
    flipped = unpack((pack(bits).unsqueeze(1) ^ h.flip_masks.unsqueeze(0)).reshape(-1), problem.n_qubits)
    with torch.no_grad():
        naive_psi_s, _, naive_psi_cpu_s = best_of(args.repeats, lambda: [mlp(flipped[i:i + 65536])
                                                        for i in range(0, len(flipped), 65536)])
    if args.profile:
        profile_ops(name, h, bits, mlp, 10)

    rss = measure_rss(name, fci_bits, psi, args) if not args.no_rss else {}

    record = {
        "molecule": name,
        "batch": batch,
        "kernel_configs_per_s": batch / kernel_s,
        "csr_configs_per_s": batch / csr_s,
        "csr_build_s": csr_build_s,
        "evals_per_config_naive": h.n_flip_masks,
        "evals_per_config": result.n_evals / batch,
        "overhead_fraction": overhead,
        "peak_rss_mb": rss.get("peak_rss_mb"),
        # extras
        "batch_requested": args.batch,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "n_qubits": problem.n_qubits,
        "sector_size": problem.sector.size,
        "n_pauli_terms": h.n_terms,
        "n_flip_masks": h.n_flip_masks,
        "kernel_s": kernel_s,
        "kernel_dense_configs_per_s": batch / dense_s,  # the per-string path (dense=True), same run
        "tables_speedup": dense_s / kernel_s,
        "dense_overhead_fraction": (dense_total - dense_psi) / dense_total,
        "check_tables_minus_dense_eloc": tables_vs_dense,
        "csr_s": csr_s,
        "kernel_over_csr": csr_s and kernel_s / csr_s,
        "kernel_configs_per_cpu_s": batch / kernel_cpu_s,
        "csr_configs_per_cpu_s": batch / csr_cpu_s,
        "csr_build_cpu_s": csr_build_cpu_s,
        "overhead_fraction_cpu": (mlp_cpu - mlp_cpu_psi) / mlp_cpu,
        "overhead_cpu_us_per_config": 1e6 * (mlp_cpu - mlp_cpu_psi) / batch,
        "mlp_total_cpu_s": mlp_cpu,
        "naive_psi_cpu_s": naive_psi_cpu_s,
        "pairs_survival_fraction": result.n_connected / result.n_pairs_naive,
        "connected_per_config": result.n_connected / batch,
        "mlp_total_s": best_total,
        "mlp_psi_s": best_psi,
        "mlp_evals": mlp_evals,
        "overhead_us_per_config": 1e6 * (best_total - best_psi) / batch,
        "psi_us_per_eval": 1e6 * best_psi / mlp_evals,
        "naive_psi_s": naive_psi_s,
        "naive_psi_over_ours": naive_psi_s / best_total,
        "uniform_overhead_fraction": (uni_total - uni_psi) / uni_total,
        "uniform_evals_per_config": uni_evals / batch,
        "uniform_total_s": uni_total,
        "uniform_psi_s": uni_psi,
        "rss_baseline_mb": rss.get("rss_baseline_mb"),
        "rss_batch": rss.get("rss_batch"),
        "rss_kernel_share_mb": rss and rss["peak_rss_mb"] - rss["rss_baseline_mb"],
        "rss_vm_hwm_mb": rss.get("vm_hwm_mb"),
        "rss_n_evals": rss.get("rss_n_evals"),
        "rss_kernel_s": rss.get("rss_seconds"),
        "checks_pass": checks_pass,
        "check_lowest_eig_minus_fci": lowest - e_fci,
        "check_matrix_max_abs_diff": matrix_diff,
        "check_fci_residual_norm": residual,
        "check_eloc_max_abs_diff_psi_gt_1e-4": eloc_diff_significant,
        "check_psi_weighted_eloc_diff_all": weighted_diff_all,
        "check_eloc_minus_fci_psi_gt_1e-4": eloc_vs_fci,
        "n_significant_in_batch": int(significant.sum()),
        "seed": args.seed,
    }
    return record


def table(records: list[dict]) -> str:
    cols = [("molecule", "{}"), ("batch", "{}"), ("kernel_configs_per_s", "{:.0f}"), ("csr_configs_per_s", "{:.0f}"),
            ("csr_build_s", "{:.2f}"), ("evals_per_config_naive", "{}"), ("evals_per_config", "{:.1f}"),
            ("overhead_fraction", "{:.3f}"), ("uniform_overhead_fraction", "{:.3f}"),
            ("overhead_us_per_config", "{:.1f}"), ("kernel_configs_per_cpu_s", "{:.0f}"),
            ("overhead_fraction_cpu", "{:.3f}"),
            ("peak_rss_mb", "{:.0f}"), ("rss_baseline_mb", "{:.0f}")]
    head = ["molecule", "B", "kernel cfg/s", "CSR cfg/s", "CSR build s", "evals naive", "evals", "overhead",
            "overhead unif.", "overhead us/cfg", "kernel cfg/CPU-s", "overhead (CPU)", "peak RSS MB",
            "base RSS MB"]
    rows = [[("-" if r.get(k) is None else f.format(r[k])) for k, f in cols] for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", nargs="+", default=["H2O", "N2"])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rss-batch", type=int, default=4096)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocess")
    parser.add_argument("--profile", action="store_true", help="print a per-operator profile (stderr)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-bits", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args)
        return
    records = []
    for name in args.molecules:
        record = bench_molecule(name, args)
        assert list(record)[:len(KEYS)] == KEYS
        print(json.dumps(record), flush=True)
        records.append(record)
    print()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(table(records))


if __name__ == "__main__":
    main()
