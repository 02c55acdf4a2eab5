"""The exact energy on S' (the DMRG determinants with |c| ≥ 2e-5, H read from a refit's matrix parts) of a run's
network ψ and of the DMRG state under each of `nqs.symmetry`'s projections: the group's (spin flip and mirror), with
the real part, with the total spin, and all three (what `--symmetrize` applies), with ⟨S²⟩ on the set.

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s34/projections.py RUN MATRIX_DIR PARTS
"""
import json
import sys
from pathlib import Path

import torch

from nqs.imaginary_time import load_operator, restrict
from nqs.pretrain import amplitudes_on
from nqs.references import best_reference
from nqs.symmetry import Projector, target_projection
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
for name, P in choices:
    for state, v in [("network", psi), ("dmrg", c)]:
        w = P(v)
        print(json.dumps({"projection": name, "state": state, "error_mha": (operator.energy(w) - best.energy) * 1e3,
                          "s2": full.spin.expectation(w), "norm": float(torch.vdot(w, w).real)}), flush=True)
