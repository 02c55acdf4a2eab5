"""Session 28: H restricted to H16's DMRG determinants with |c| >= T, in row parts saved as CSR (float32 values).

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s28/build_h.py RUN T PARTS OUTDIR [PART ...]

RUN a run fitted to the DMRG state (its config names the molecule, orbitals and the state's settings). Each part
is OUTDIR/h-PART-of-PARTS.npz (scipy.sparse.save_npz), plus OUTDIR/set.npz (the set's rows in the state's order)."""
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from nqs.excitations import IntegralHamiltonian
from nqs.exact import subset_hamiltonian
from nqs.target_states import target_state
from nqs.training.build import build_cfg_problem
from nqs.training.config import load_yaml, resolve

torch.set_num_threads(1)
run, threshold, parts, out = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
which = [int(p) for p in sys.argv[5:]] or list(range(parts))
saved = load_yaml(run / "config.yaml")
cfg = resolve([(str(run / "config.yaml"), {k: v for k, v in saved.items() if k not in ("init_state", "out")}
                | {"init_from": None})]).validate()
problem = build_cfg_problem(cfg)
target = target_state("dmrg", problem.integrals, cfg.run.init_bond, cfg.run.init_cutoff, 1)
keep = torch.nonzero(target.amplitudes.abs() >= threshold).squeeze(1)
out.mkdir(parents=True, exist_ok=True)
np.savez(out / "set.npz", rows=keep.numpy(), threshold=threshold, determinants=target.bits.shape[0])
bits = target.bits[keep]
K = bits.shape[0]
h = IntegralHamiltonian(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
for part in which:
    start = time.perf_counter()
    rows = (K * part // parts, K * (part + 1) // parts)
    m = subset_hamiltonian(h, bits, rows, dtype=np.float32)
    scipy.sparse.save_npz(out / f"h-{part}-of-{parts}.npz", m, compressed=False)
    print(f"part {part}/{parts}: rows {rows}, {m.nnz:,} elements, {time.perf_counter() - start:.0f} s", flush=True)
