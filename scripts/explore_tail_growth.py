"""Exploration (issue 12): can a supervised term grow the tail an N2 run leaves empty?

A finished run's wavefunction misses FCI weight on configurations it gives probability below ~1e-12
(docs/benchmarks.md, session 5); their energy gradient is proportional to their amplitude, so training never
grows them back. This script continues a finished run from its final weights for `--steps` Adam steps with
the energy loss alone (`--beta 0`) or with an added term on the connected configurations x' outside the
step's samples whose imaginary-time target amplitude |tau (H psi)(x')| exceeds |psi(x')|: the `--rows`
largest gaps, weighted by tau^2 |(H psi)(x')|^2 (normalised), pulling log p(x') up to log of that target
(`--form linear`: w (log q - log p)_+, `squared`: w (log q - log p)_+^2), and with `--phase` the phase toward
arg(-(H psi)(x')). (H psi)(x') is summed over the step's samples only. Prints the exact energy (the whole
sector) and the FCI weight the model leaves below 1e-12, before and after.

    nqs-train --mol N2 --ansatz retnet --no-progress --threads 1 --out /tmp/tta5
    .venv/bin/python scripts/explore_tail_growth.py /tmp/tta5/N2-retnet-auto --beta 3e-3 --steps 150
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from nqs.exact import fci_state
from nqs.keys import index_of, pack, unique, unpack
from nqs.local_energy import connections, local_energy
from nqs.training.build import build, load_model_weights
from nqs.training.config import TrainConfig
from nqs.vmc import vmc_step


def exact_error(model, h, bits_all, psi_fci, e_fci) -> tuple[float, float]:
    """(<psi|H|psi> - E_FCI in mHa over the whole sector, FCI weight where the model's p < 1e-12)."""
    with torch.no_grad():
        p = torch.exp(2 * model.log_psi(bits_all).real.to(torch.float64))
        p = p / p.sum()
        e_loc = local_energy(h, bits_all, lambda b: model.log_psi(b)).values.real
    fci_weight = (psi_fci / psi_fci.norm()) ** 2
    return float((p * e_loc).sum() - e_fci) * 1e3, float(fci_weight[p < 1e-12].sum())


def tail_term(model, h, bits, tau: float, rows: int, form: str, phase: bool) -> tuple[torch.Tensor | None, int]:
    n = h.n_qubits
    with torch.no_grad():
        conn = connections(h, bits)
        psi_x = torch.exp(model.log_psi(bits).to(torch.complex128))
        distinct, inverse = unique(conn.keys, n)
        h_psi = torch.zeros(distinct.shape[0], dtype=torch.complex128).index_add_(
            0, inverse, conn.element.to(torch.complex128).conj() * psi_x.index_select(0, conn.sample))
        outside = index_of(pack(bits), distinct, n) < 0
        cand, h_psi = distinct[outside], h_psi[outside]
        target = (tau * h_psi.abs()) ** 2
        gap = target - torch.exp(2 * model.log_psi(unpack(cand, n)).real.to(torch.float64))
        k = min(rows, int((gap > 0).sum()))
        if k == 0:
            return None, 0
        top = torch.topk(gap, k).indices
    log_psi = model.log_psi(unpack(cand[top], n))
    w = (target[top] / target[top].sum()).to(log_psi.real.dtype)
    short = torch.relu(torch.log(target[top]).to(w.dtype) - 2 * log_psi.real)
    loss = (w * (short if form == "linear" else short ** 2)).sum()
    if phase:
        loss = loss + (w * (1 - torch.cos(log_psi.imag - torch.angle(-h_psi[top]).to(w.dtype)))).sum()
    return loss, k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished nqs-train run directory (config.yaml, checkpoints)")
    parser.add_argument("--beta", type=float, default=3e-3, help="weight of the tail term (0: energy alone)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (a fresh Adam state)")
    parser.add_argument("--tau", type=float, default=0.5, help="imaginary-time step, 1/Hartree")
    parser.add_argument("--rows", type=int, default=256, help="tail configurations per step")
    parser.add_argument("--form", choices=("linear", "squared"), default="linear")
    parser.add_argument("--phase", action="store_true", help="also pull the phase toward arg(-(H psi)(x'))")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_flat(yaml.safe_load((args.run / "config.yaml").read_text()))
    problem, model = build(cfg)
    load_model_weights(model, args.run)
    h = problem.compiled("cpu")
    bits_all, psi_fci, e_fci = fci_state(problem)
    err, missing = exact_error(model, h, bits_all, psi_fci, e_fci)
    print(f"start: {err:+.3f} mHa, FCI weight at p < 1e-12: {missing:.2e}", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(args.steps):
        r = vmc_step(model, h, cfg.sampling.samples, cfg.sampling.unique, gen)
        loss, k = r.loss, 0
        if args.beta > 0:
            extra, k = tail_term(model, h, r.samples.bits, args.tau, args.rows, args.form, args.phase)
            if extra is not None:
                loss = loss + args.beta * extra
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"{step}: training estimate {(r.stats.mean - e_fci) * 1e3:+.3f} mHa, unique {r.samples.n_unique}, "
                  f"tail rows {k}, {time.time() - t0:.0f} s", flush=True)
    err, missing = exact_error(model, h, bits_all, psi_fci, e_fci)
    print(f"end: {err:+.3f} mHa, FCI weight at p < 1e-12: {missing:.2e}", flush=True)


if __name__ == "__main__":
    main()
