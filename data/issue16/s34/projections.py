"""The exact energy on S' (the DMRG determinants with |c| ≥ 2e-5, H read from a refit's matrix parts) of a run's
network ψ and of the DMRG state under each of `nqs.symmetry`'s projections: the group's (spin flip and mirror), with
the real part, with the total spin, and all three (what `--symmetrize` applies), with ⟨S²⟩ on the set; then all
three with S² kept only on the families of determinants (one spatial occupation, every α/β assignment of its open
orbitals) wholly in the set, the projector leaving the other rows as they are.

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s34/projections.py RUN MATRIX_DIR PARTS
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
print(json.dumps(said))
c = target.amplitudes.to(torch.complex128)
choices = [("none", Projector()), ("group", Projector(full.group)), ("group, real", Projector(full.group, None, True)),
           ("group, spin", Projector(full.group, full.spin)), ("all", full), ("real", Projector(None, None, True))]
x = target.bits.numpy().astype(bool)
alpha, beta = x[:, 0::2], x[:, 1::2]
powers = 1 << np.arange(alpha.shape[1], dtype=np.int64)
family = ((alpha & beta).astype(np.int64) @ powers) * (1 << alpha.shape[1]) + (alpha ^ beta).astype(np.int64) @ powers
_, where, found = np.unique(family, return_inverse=True, return_counts=True)
whole = found[where] == np.array([comb(int(n), int(k)) for n, k in zip((alpha ^ beta).sum(1), (alpha & ~beta).sum(1))])
weight = (c.abs() ** 2).numpy()
print(json.dumps({"rows_in_whole_families": float(whole.mean()), "families": len(found),
                  "dmrg_weight_in_whole_families": float(weight[whole].sum() / weight.sum())}))
keep = scipy.sparse.diags(whole.astype(float))  # other rows: S² = 0 = S(S+1), so the projector leaves them
families = SpinProjection((keep @ full.spin.s_squared @ keep).tocsr(), full.spin.spin, full.spin.removed, 1.0)
choices.append(("all, S² on whole families", Projector(full.group, families, True)))
for name, P in choices:
    for state, v in [("network", psi), ("dmrg", c)]:
        w = P(v)
        print(json.dumps({"projection": name, "state": state, "error_mha": (operator.energy(w) - best.energy) * 1e3,
                          "s2": full.spin.expectation(w), "norm": float(torch.vdot(w, w).real)}), flush=True)
