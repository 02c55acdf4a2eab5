"""What a model of a given size can hold, without sampling: fits over the whole sector of a small molecule.

Four objectives, all exact (every determinant of the sector evaluated each step, float64 sums):

* `fit`: the model fitted to the FCI vector (`nqs.exact.fci_state`) with `nqs.pretrain.split_loss` (modulus and
  phases apart; `--min-weight`: only the determinants above it, the rest as one term). The fitted state's
  energy bounds from above what the model can hold at this size.
* `fidelity`: Adam on −log |<FCI|ψ_θ>|² instead, which falls into the sign trap that `nqs.pretrain` explains.
* `energy`: Adam on E(θ) = <ψ_θ|H|ψ_θ> over the sector (the model is normalised over it), i.e. VMC with the
  exact gradient: what the optimisation reaches when sampling and the local-energy estimator are taken away.
* `itime`: each step fits the model (`--inner` Adam steps, split loss) to (1 − τ(H − E))ψ over the sector.

`--init-cisd N` first fits the CISD state as `nqs-train --init-state cisd` does. `--orbitals boys` writes the
Hamiltonian in Boys-localized active orbitals ordered along the molecule (`nqs.orbitals.localize`; same FCI energy).
H ψ is PySCF's `direct_spin1.contract_2e` on the active-space integrals (ψ mapped into PySCF's determinant
order and sign with `nqs.exact.pyscf_determinants`), so a step costs one forward and backward pass over the
sector (H10: 63,504 determinants). Prints how concentrated the FCI state is (its largest weight, the determinants
holding 90 / 99 / 99.9% of the weight), then a JSON line every `--every` steps and a final one:
fidelity, the modulus' fidelity (Σ|c||ψ|)², the FCI weight on determinants whose sign the model gets wrong,
E − E_FCI in mHa, seconds.

    .venv/bin/python scripts/sector_capacity.py --mol H10 --ansatz retnet --objective fit --steps 1000
    .venv/bin/python scripts/sector_capacity.py --mol H10 --ansatz retnet --d-model 32 --layers 2 --objective energy
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from nqs.exact import fci_state, pyscf_determinants
from nqs.models import ModelConfig, build_model
from nqs.molecules import resolve_molecule
from nqs.orbitals import localize
from nqs.pretrain import pretrain, split_loss
from nqs.target_states import cisd_state
from nqs.problem import build_problem


class SectorEnergy:
    """E(ψ) = <ψ|H|ψ>/<ψ|ψ> in Hartree for ψ given on the sector's determinants in PySCF's order (complex128)."""

    def __init__(self, ints):
        from pyscf.fci import direct_spin1

        self.n, self.nelec, self.e_core = ints.n_orb, (ints.n_alpha, ints.n_beta), ints.e_core
        self.h2e = direct_spin1.absorb_h1e(ints.h1, ints.h2, self.n, self.nelec, 0.5)
        self.contract = direct_spin1.contract_2e

    def apply(self, psi: np.ndarray) -> np.ndarray:
        """H ψ (without e_core) for complex ψ: H is real, so real and imaginary parts separately."""
        return (self.contract(self.h2e, np.ascontiguousarray(psi.real), self.n, self.nelec).reshape(-1)
                + 1j * self.contract(self.h2e, np.ascontiguousarray(psi.imag), self.n, self.nelec).reshape(-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mol", default="H10")
    parser.add_argument("--ansatz", default="retnet")
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--d-ff", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64, help="MADE hidden width")
    parser.add_argument("--phase-hidden", type=int, default=64)
    parser.add_argument("--phase-layers", type=int, default=3)
    parser.add_argument("--objective", choices=("fit", "fidelity", "energy", "itime"), default="fit")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--init-cisd", type=int, default=0, metavar="STEPS",
                        help="first fit the model to the CISD state for STEPS steps (nqs.pretrain, --init-state cisd)")
    parser.add_argument("--phase-lr-scale", type=float, default=1.0, help="the phase network's learning rate / lr")
    parser.add_argument("--tau", type=float, default=0.05, help="itime: the step (1/Hartree)")
    parser.add_argument("--inner", type=int, default=20, help="itime: Adam steps of each fit")
    parser.add_argument("--min-weight", type=float, default=0.0,
                        help="fit: only the FCI determinants above this weight (the rest as one term)")
    parser.add_argument("--orbitals", choices=("canonical", "boys", "split"), default="canonical",
                        help="boys: active orbitals Boys-localized, ordered along the molecule; split: the occupied and "
                             "the virtual ones localized apart, occupied first (nqs.orbitals.localize)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = resolve_molecule(args.mol)
    problem = build_problem(spec)
    if args.orbitals != "canonical":
        problem = build_problem(spec, orbitals=localize(problem.orbitals, split=args.orbitals == "split"))
    ints = problem.integrals
    bits, psi_fci, e_fci = fci_state(problem)  # PySCF's order, its sign folded in
    _, sign, shape = pyscf_determinants(ints)
    sign_t = torch.from_numpy(sign).to(torch.complex128)
    fci = (psi_fci / psi_fci.norm()).to(torch.float64)
    target = fci.to(torch.complex128)
    cumulative = np.cumsum(np.sort((fci ** 2).numpy())[::-1])
    print(json.dumps({"mol": args.mol, "orbitals": args.orbitals, "determinants": len(cumulative),
                      "largest_weight": round(float(cumulative[0]), 6),
                      **{f"determinants_for_{q}": int(np.searchsorted(cumulative, q)) + 1
                         for q in (0.9, 0.99, 0.999)}}),
          flush=True)
    h = SectorEnergy(ints)
    torch.manual_seed(args.seed)
    cfg = ModelConfig(args.ansatz, d_model=args.d_model, heads=args.heads, layers=args.layers, d_ff=args.d_ff,
                      hidden=args.hidden, phase_hidden=args.phase_hidden, phase_layers=args.phase_layers)
    model = build_model(cfg, problem.sector)
    n_params = sum(p.numel() for p in model.parameters())
    if args.init_cisd:
        info = pretrain(model, cisd_state(ints), args.init_cisd, args.lr)
        print(json.dumps({"init": "cisd", **{k: round(v, 6) for k, v in info.items()}}), flush=True)
    phase = list(model.phase_net.parameters())
    modulus = [p for p in model.parameters() if all(p is not q for q in phase)]
    optimiser = torch.optim.Adam([{"params": modulus}, {"params": phase, "lr": args.lr * args.phase_lr_scale}],
                                 lr=args.lr)
    start = time.perf_counter()

    def report(step: int, psi: torch.Tensor) -> dict:
        with torch.no_grad():
            q = psi.detach()
            fid = float((target.conj() * q).sum().abs() ** 2 / (q.abs() ** 2).sum())
            modulus = float((target.abs() * q.abs()).sum() ** 2 / (q.abs() ** 2).sum())
            top = int(torch.argmax(target.abs()))
            relative = q * target[top].conj() / q[top]  # the model's phase relative to FCI's largest determinant
            wrong = float((target.abs() ** 2)[(relative * target.conj()).real < 0].sum())
            qp = (q * sign_t).numpy().reshape(shape)  # PySCF's layout and sign
            e = float(np.vdot(qp.reshape(-1), h.apply(qp)).real / np.vdot(qp, qp).real) + h.e_core
        row = {"mol": args.mol, "ansatz": args.ansatz, "d_model": args.d_model, "layers": args.layers,
               "phase_hidden": args.phase_hidden, "objective": args.objective, "orbitals": args.orbitals,
               "params": n_params, "step": step,
               "fidelity": round(fid, 6), "modulus_fidelity": round(modulus, 6),
               "wrong_sign_weight": float(f"{wrong:.3g}"), "error_mha": round(1e3 * (e - e_fci), 4),
               "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row), flush=True)
        return row

    psi = None
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps or args.objective != "fit":
            psi = torch.exp(model.log_psi(bits).to(torch.complex128))
        if step % args.every == 0 or step == args.steps:
            report(step, psi)
        if step == args.steps:
            break
        if args.objective == "itime":  # fit ψ to (1 − τ(H − E)) ψ with the split loss
            with torch.no_grad():
                q = psi.detach()
                v = torch.from_numpy(h.apply((q * sign_t).numpy().reshape(shape))) * sign_t
                e = float((q.conj() * v).sum().real / (q.abs() ** 2).sum())
                new = q - args.tau * (v - e * q)
            for _ in range(args.inner):
                optimiser.zero_grad(set_to_none=True)
                split_loss(model.log_psi(bits), new).backward()
                optimiser.step()
            continue
        optimiser.zero_grad(set_to_none=True)
        if args.objective == "fit":
            big = fci ** 2 > args.min_weight
            loss = split_loss(model.log_psi(bits[big]), fci[big], float((fci[~big] ** 2).sum()))
        elif args.objective == "fidelity":
            loss = -torch.log((target.conj() * psi).sum().abs() ** 2)
        else:  # dE = 2 Re Σ conj(dψ) (Hψ): H ψ held fixed (the model is normalised over the sector)
            with torch.no_grad():
                v = torch.from_numpy(h.apply((psi.detach() * sign_t).numpy().reshape(shape))) * sign_t
            loss = 2 * (psi.conj() * v).sum().real
        loss.backward()
        optimiser.step()


if __name__ == "__main__":
    main()
