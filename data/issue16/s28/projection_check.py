"""Session 28: the exact energy over S' of φ = (1 − τ(H − E))ψ for a run's network ψ, for several τ (no fit),
and of φ's moduli with ψ's phases and ψ's moduli with φ's phases (which part of the step the energy needs).

    OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s28/projection_check.py RUN HDIR [TAU ...]"""
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from nqs.references import best_reference
from nqs.target_states import target_state
from nqs.training.build import build
from nqs.training.config import load_yaml, resolve

torch.set_num_threads(1)
run, hdir = Path(sys.argv[1]), Path(sys.argv[2])
taus = [float(t) for t in sys.argv[3:]] or [0.003, 0.01, 0.03, 0.1]
saved = load_yaml(run / "config.yaml")
cfg = resolve([(str(run / "config.yaml"), {k: v for k, v in saved.items() if k not in ("init_state", "out")}
                | {"init_from": str(run)})]).validate()
problem, model = build(cfg)
e_ref = best_reference(problem.references).energy
target = target_state("dmrg", problem.integrals, cfg.run.init_bond, cfg.run.init_cutoff, 1)
with np.load(hdir / "set.npz") as f:
    keep = torch.from_numpy(f["rows"])
bits = target.bits[keep]
H = [scipy.sparse.load_npz(p) for p in sorted(hdir.glob("h-*-of-*.npz"), key=lambda p: int(p.name.split("-")[1]))]


def apply(v: np.ndarray) -> np.ndarray:
    return (np.concatenate([m @ v.real.astype(np.float32) for m in H]).astype(np.float64)
            + 1j * np.concatenate([m @ v.imag.astype(np.float32) for m in H]).astype(np.float64))


def energy(v: np.ndarray, hv: np.ndarray) -> float:
    return float(np.vdot(v, hv).real / np.vdot(v, v).real)


with torch.no_grad():
    psi = torch.cat([torch.exp(model.log_psi(bits[i:i + 65536]).to(torch.complex128))
                     for i in range(0, bits.shape[0], 65536)]).numpy()
h_psi = apply(psi)
e = energy(psi, h_psi)
variance = float(np.vdot(h_psi - e * psi, h_psi - e * psi).real / np.vdot(psi, psi).real)
print(json.dumps({"tau": 0, "error_mha": (e - e_ref) * 1e3, "variance_ha2": variance}), flush=True)
for tau in taus:
    phi = psi - tau * (h_psi - e * psi)
    moduli = np.abs(phi) * np.exp(1j * np.angle(psi))  # φ's moduli with ψ's phases
    phases = np.abs(psi) * np.exp(1j * np.angle(phi))  # ψ's moduli with φ's phases
    print(json.dumps({"tau": tau, "error_mha": (energy(phi, apply(phi)) - e_ref) * 1e3,
                      "moduli_only_mha": (energy(moduli, apply(moduli)) - e_ref) * 1e3,
                      "phases_only_mha": (energy(phases, apply(phases)) - e_ref) * 1e3,
                      "sign_flips": int((np.real(phi / psi) < 0).sum()),
                      "fidelity_to_psi": float(abs(np.vdot(psi, phi)) ** 2 / (np.vdot(psi, psi).real
                                                                              * np.vdot(phi, phi).real))}),
          flush=True)
