"""The exact energy on S' (the DMRG determinants with |c| ≥ 2e-5, H read from a refit's matrix parts) of a run's
network ψ and of its projections P ψ onto the DMRG state's characters of each symmetry group `nqs.symmetry`
finds (the spin flip, the chain's mirror, both).

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s33/projected_energy.py RUN MATRIX_DIR PARTS
"""
import json
import sys
import time
from pathlib import Path

import torch

from nqs.imaginary_time import load_operator, restrict
from nqs.pretrain import amplitudes_on
from nqs.references import best_reference
from nqs.symmetry import projection, symmetries_of
from nqs.training.build import rebuild_fitted

torch.set_num_threads(1)
run, matrix_dir, parts = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
_, problem, model, target = rebuild_fitted(run, None, 1)
target = restrict(target, 2e-5)
bits, c = target.bits, target.amplitudes.to(torch.complex128)
generators = symmetries_of(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
print(json.dumps({"generators": [(g.name, g.residual) for g in generators]}), flush=True)
operator = load_operator(bits, matrix_dir, parts)
best = best_reference(problem.references)
with torch.no_grad():
    psi = amplitudes_on(model, bits)
print(json.dumps({"determinants": len(bits), "forward_s": round(time.perf_counter() - t0, 1)}), flush=True)


def report(name, v, extra=None):
    e = operator.energy(v)
    print(json.dumps({"state": name, "error_mha": (e - best.energy) * 1e3, "energy": e,
                      "norm_on_set": float((v.abs() ** 2).sum())} | (extra or {})), flush=True)


report("network", psi)
report("DMRG state on the set", c)
for chosen in ([generators[0]], generators[1:], generators):
    if not chosen:
        continue
    P = projection(bits, chosen, c)  # the characters of the DMRG state
    own = projection(bits, chosen, psi)
    report("P " + " + ".join(g.name for g in chosen), P(psi),
           {"characters": P.characters, "network_characters": own.characters, "closed": P.closed,
            "target_kept": float(torch.vdot(P(c), P(c)).real / torch.vdot(c, c).real)})
