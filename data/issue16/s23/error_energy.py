"""Where a fitted model's energy error sits. With c the target (DMRG) state and ψ the normalised model,
δ = ψ − ⟨c|ψ⟩c is the error (|δ|² = 1 − F) and E(ψ) − E0 ≈ ⟨δ|H − E0|δ⟩. `bands` gives, by |c| band over the
target's determinants, |δ|² split into its modulus part (|ψ| − |c|)² and phase part 2|ψ||c|(1 − cos Δφ), and the
diagonal energy Σ (H_xx − E0)|δ_x|² of each (mHa; the off-diagonal part is not computed).
python data/issue16/s23/error_energy.py RUN_DIR   (a run whose config has init_state dmrg; threads 1)"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from nqs.excitations import IntegralHamiltonian

BANDS = [(1e-1, 1), (1e-2, 1e-1), (1e-3, 1e-2), (1e-4, 1e-3), (0, 1e-4)]


@torch.no_grad()
def bands(model, problem, target, chunk=65536) -> list[dict]:
    bits, c = target.bits, target.amplitudes.to(torch.complex128)
    c = c / c.norm()
    psi = torch.cat([torch.exp(model.log_psi(bits[i:i + chunk]).to(torch.complex128))
                     for i in range(0, len(bits), chunk)])
    s = (c.conj() * psi).sum()
    psi = psi * (s.abs() / s)  # global phase aligned: ⟨c|ψ⟩ real positive
    delta = psi - s.abs() * c
    h = IntegralHamiltonian(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
    b = bits.double()
    gap = torch.cat([h.diagonal(b[i:i + chunk, 0::2], b[i:i + chunk, 1::2])
                     for i in range(0, len(b), chunk)]).numpy() - target.energy
    a, r = c.abs().numpy(), psi.abs().numpy()
    dphi = np.angle(psi.numpy() * np.conj(c.numpy()))
    d2 = (delta.abs() ** 2).numpy()
    mod2, ph2 = (r - a) ** 2, 2 * r * a * (1 - np.cos(dphi))
    rows = [{"fidelity": float(s.abs() ** 2), "model_mass_on_target": float((r ** 2).sum()),
             "delta2_on_target": float(d2.sum()), "diag_mHa": 1e3 * float((gap * d2).sum())}]
    for lo, hi in BANDS:
        m = (a >= lo) & (a < hi)
        rows.append({"band": f"{lo:g}<=|c|<{hi:g}", "n": int(m.sum()), "c2": float((a[m] ** 2).sum()),
                     "delta2": float(d2[m].sum()), "modulus2": float(mod2[m].sum()), "phase2": float(ph2[m].sum()),
                     "mean_gap_Ha": float((gap[m] * a[m] ** 2).sum() / (a[m] ** 2).sum()),
                     "diag_mHa": 1e3 * float((gap[m] * d2[m]).sum()),
                     "diag_modulus_mHa": 1e3 * float((gap[m] * mod2[m]).sum()),
                     "diag_phase_mHa": 1e3 * float((gap[m] * ph2[m]).sum())})
    return rows


if __name__ == "__main__":
    from nqs.target_states import target_state
    from nqs.training.build import build, build_cfg_problem
    from nqs.training.config import load_yaml, resolve

    torch.set_num_threads(1)
    run = Path(sys.argv[1])
    cfg = resolve([("run", {k: v for k, v in load_yaml(run / "config.yaml").items()
                            if k not in ("init_state", "out")} | {"init_from": str(run)})])
    problem = build_cfg_problem(cfg)
    _, model = build(cfg, problem)
    target = target_state("dmrg", problem.integrals, cfg.run.init_bond, cfg.run.init_cutoff, 1)
    for row in bands(model.eval(), problem, target):
        print(json.dumps(row))
