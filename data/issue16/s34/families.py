"""The spin projection on S' two ways, on a run's network and the DMRG state: with S² as it is on the set
(`nqs.symmetry.spin_squared`, what `--symmetrize` uses) and with S² kept only on the families of determinants
(one spatial occupation, every α/β assignment of its open orbitals) wholly in the set, the projector leaving the
other rows as they are. Both after the group's projection and with the real part.

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s34/families.py RUN MATRIX_DIR PARTS
"""
import json
import sys
from math import comb
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from nqs.imaginary_time import load_operator, restrict
from nqs.pretrain import amplitudes_on
from nqs.references import best_reference
from nqs.symmetry import Projector, SpinProjection, target_projection
from nqs.training.build import rebuild_fitted

torch.set_num_threads(1)
run, matrix_dir, parts = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
_, problem, model, target = rebuild_fitted(run, None, 1)
target = restrict(target, 2e-5)
operator = load_operator(target.bits, matrix_dir, parts)
best = best_reference(problem.references)
with torch.no_grad():
    psi = amplitudes_on(model, target.bits)
full, said = target_projection(problem, target)
x = target.bits.numpy().astype(bool)
a, b = x[:, 0::2], x[:, 1::2]
openm = a ^ b
key = (a & b).astype(np.int64) @ (1 << np.arange(16)) * (1 << 16) + openm.astype(np.int64) @ (1 << np.arange(16))
_, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
nopen = openm.sum(1); nopa = (a & ~b).sum(1)
expected = np.array([comb(int(n), int(k)) for n, k in zip(nopen, nopa)])
complete = counts[inv] == expected
print(json.dumps({"rows_complete": float(complete.mean()), "families": len(counts)}))
S2 = full.spin.s_squared
keep = scipy.sparse.diags(complete.astype(float))
S2c = keep @ S2 @ keep  # rows of incomplete families: S² = 0 = S(S+1), so the projector leaves them
sp = SpinProjection(S2c.tocsr(), full.spin.spin, full.spin.removed, 1.0)
c = target.amplitudes.to(torch.complex128)
w = c.abs() ** 2
print(json.dumps({"dmrg_weight_in_complete": float(w[torch.from_numpy(complete)].sum() / w.sum())}))
for name, P in [("all (truncated S2)", full), ("all (complete families)", Projector(full.group, sp, True))]:
    for state, v in [("network", psi), ("dmrg", c)]:
        u = P(v)
        print(json.dumps({"projection": name, "state": state, "error_mha": (operator.energy(u) - best.energy) * 1e3,
                          "s2": full.spin.expectation(u)}), flush=True)
