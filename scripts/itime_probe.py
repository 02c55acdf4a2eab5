"""A probe, not an optimiser of nqs-train: VMC by imaginary-time fits on the sample. Each step fits the network
to one imaginary-time step of itself, ψ̃ = (1 − τ(H − E)) ψ, on the sampled configurations and the SR tail rows,
with the split loss of `nqs.pretrain` (supervised wavefunction optimisation: Kochkov & Clark, arXiv:1811.12423).

Why: the energy gradient and SR both move log|ψ| and φ continuously, and for a real Hamiltonian the phase
gradient vanishes where the phases are 0 or π; a determinant whose sign is wrong raises the energy, so the step
empties it instead of turning it, and once |ψ(x)| ≈ 0 neither gradient brings it back (both ∝ |ψ(x)|). This is
the plateau of the hydrogen chains: on H6, minimising the exact energy over the whole sector with Adam stalls at
+47 mHa with 2.3% of FCI weight on determinants of the wrong sign; fitting (1 − τ(H − E))ψ with the split loss,
from the same random start, reaches +1.2 mHa (`scripts/sector_capacity.py`; docs/benchmarks.md, "The sign
trap"). ψ̃ flips a determinant's sign outright where τ(E_loc − E) > 1, and the split loss turns the phase
towards it without emptying the determinant.

The step at a sampled x, with the diagonal implicit where it would shrink the amplitude (as in `nqs.sr_tail`):
ψ̃(x) = ψ(x)(1 − τ(E_loc(x) − H_xx)) · g(x), g = 1/(1 + τ(H_xx − E)) where H_xx > E, else 1 − τ(H_xx − E).
At a tail row x' (a connected configuration the sample misses), `nqs.sr_tail`'s target. The probability
outside both keeps its present value (the loss's rest term).

Measured (docs/benchmarks.md, "The sign trap"): H6 from random weights +5.9 mHa after 100 steps; H10 (RetNet
defaults, B = 2,000, 32 tail rows, τ = 0.3, 10 Adam steps of 1e-3 per step) +29.8 mHa after 400 steps from
random weights and +16.2 from the CISD state, no better than Adam from the CISD state (+15.8): on H10 the limit
is elsewhere (the model's capacity; "The sign trap"), so it is not an optimiser of nqs-train.

    .venv/bin/python scripts/itime_probe.py --mol H10 --steps 400 [--cisd 3000]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from nqs.local_energy import connections
from nqs.local_energy_modes import LocalEnergyMode
from nqs.models import ModelConfig, build_model
from nqs.molecules import resolve_molecule
from nqs.pretrain import pretrain, split_loss
from nqs.target_states import cisd_state
from nqs.problem import build_problem
from nqs.sr_tail import TailRows, tail_rows
from nqs.vmc import vmc_step


def itime_target(hamiltonian, bits: torch.Tensor, log_psi: torch.Tensor, e_loc: torch.Tensor, energy: float,
                 tau: float, tail: TailRows | None = None, kept_mass: float = 1.0):
    """(bits (K, n), amplitudes (K,) complex128 of ψ̃, rest): the step's target on the U sampled configurations
    `bits` (their log ψ (U,) and E_loc (U,), Hartree) and the tail rows, on the scale where Σ_S |ψ|² =
    `kept_mass`, and the probability outside them. `tau` in 1/Hartree, `energy` E in Hartree."""
    diagonal = connections(hamiltonian, bits).diagonal.real.to(torch.float64)
    shift = diagonal - energy
    g = torch.where(shift > 0, 1 / (1 + tau * shift.clamp_min(0)), 1 - tau * shift)
    psi = torch.exp(log_psi.to(torch.complex128))
    amplitudes = psi * (1 - tau * (e_loc.to(torch.complex128) - diagonal)) * g
    rest = max(0.0, 1.0 - kept_mass)
    if tail is not None and tail.bits.shape[0]:
        bits = torch.cat([bits, tail.bits])
        amplitudes = torch.cat([amplitudes, torch.exp(tail.log_psi + tail.target)])
        rest = max(0.0, rest - float(torch.exp(2 * tail.log_psi.real).sum()))
    return bits, amplitudes, rest


def fit(model, optimizer, bits: torch.Tensor, amplitudes: torch.Tensor, rest: float, steps: int) -> float:
    """`steps` steps of `optimizer` on the split loss towards the target; the last loss."""
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = split_loss(model.log_psi(bits), amplitudes, rest)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mol", default="H10")
    parser.add_argument("--ansatz", default="retnet")
    parser.add_argument("--tau", type=float, default=0.3, help="imaginary-time step (1/Hartree)")
    parser.add_argument("--inner", type=int, default=10, help="Adam steps of each fit")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--unique", type=int, default=2000, help="unique-sample cap B")
    parser.add_argument("--tail", type=int, default=32, help="tail rows (nqs.sr_tail; 0: none)")
    parser.add_argument("--cisd", type=int, default=0, metavar="STEPS", help="first fit the CISD state")
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = build_problem(resolve_molecule(args.mol))
    h = problem.compiled("cpu")
    torch.manual_seed(0)
    model = build_model(ModelConfig(args.ansatz), problem.sector)
    if args.cisd:
        print(json.dumps(pretrain(model, cisd_state(problem.integrals), args.cisd, 3e-3)), flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    for step in range(args.steps):
        r = vmc_step(model, h, 1e12, args.unique, torch.Generator().manual_seed(step), with_loss=False,
                     mode=LocalEnergyMode("exact-trie"))
        bits, kept = r.samples.bits, r.samples.kept_mass
        with torch.no_grad():
            log_psi = model.log_psi(bits)
        tail = tail_rows(model, h, bits, r.stats.mean, args.tau, args.tail, log_psi_bits=log_psi,
                         missing=1 - kept) if args.tail else None
        loss = fit(model, optimizer, *itime_target(h, bits, log_psi, r.e_loc, r.stats.mean, args.tau, tail, kept),
                   args.inner)
        if step % args.every == 0 or step == args.steps - 1:
            print(json.dumps({"step": step, "error_mha": round(1e3 * (r.stats.mean - problem.references.e_fci), 3),
                              "unique": r.samples.n_unique, "kept_mass": kept, "loss": round(loss, 5),
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
