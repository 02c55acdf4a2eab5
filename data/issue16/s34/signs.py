"""Where Pψ's error lies, on S' (the DMRG determinants with |c| ≥ 2e-5): Pψ's signs against the DMRG state's,
and the exact energies of Pψ's moduli with the DMRG signs, of the DMRG moduli with Pψ's signs, of Pψ's real part,
and of Pψ with its signs set to the DMRG state's in one band of |c| at a time. A diagnosis only: the DMRG signs
are the reference's, not a method.

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s34/signs.py RUN MATRIX_DIR PARTS
"""
import json
import sys
from pathlib import Path

import torch

from nqs.imaginary_time import load_operator, restrict
from nqs.pretrain import amplitudes_on
from nqs.references import best_reference
from nqs.symmetry import projection, symmetries_of  # the group only
from nqs.training.build import rebuild_fitted

torch.set_num_threads(1)
run, matrix_dir, parts = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
_, problem, model, target = rebuild_fitted(run, None, 1)
target = restrict(target, 2e-5)
bits, c = target.bits, target.amplitudes.to(torch.complex128)
operator = load_operator(bits, matrix_dir, parts)
best = best_reference(problem.references)
with torch.no_grad():
    psi = amplitudes_on(model, bits)
P = projection(bits, symmetries_of(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta), c)
v = P(psi)
ov = torch.vdot(c, v)
v = v * (ov.abs() / ov)  # the global phase of the DMRG state's


def rep(name, x):
    e = operator.energy(x.to(torch.complex128))
    print(json.dumps({"state": name, "error_mha": (e - best.energy) * 1e3}), flush=True)


cr, vr = c.real, v.real
print(json.dumps({"imag_share": float((v.imag**2).sum() / (v.abs()**2).sum())}))
wrong = torch.sign(cr) != torch.sign(vr)
w = c.abs()**2 / (c.abs()**2).sum()
print(json.dumps({"wrong_sign_dets": int(wrong.sum()), "wrong_sign_weight_c": float(w[wrong].sum()),
                  "infidelity": float(1 - ov.abs()**2 / (torch.vdot(c, c).real * torch.vdot(v,v).real))}))
rep("Ppsi", v)
rep("|Ppsi| with DMRG signs", v.abs() * torch.sign(cr))
rep("|c| with Ppsi signs", c.abs() * torch.sign(vr))
rep("Re Ppsi", vr.to(torch.complex128))
# the DMRG signs in one band of |c| at a time
for lo, hi in [(1e-2, 1), (1e-3, 1e-2), (1e-4, 1e-3), (2e-5, 1e-4)]:
    m = (c.abs() >= lo) & (c.abs() < hi)
    fix = torch.where(m, v.abs() * torch.sign(cr), v)
    print(json.dumps({"band": [lo, hi], "dets": int(m.sum()), "wrong": int((wrong & m).sum()),
                      "fix_signs_mha": (operator.energy(fix) - best.energy) * 1e3}), flush=True)
