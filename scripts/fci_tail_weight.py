"""Where a trained state misses FCI weight: a finished run's model against the FCI vector over the whole sector.

Loads RUN's final weights, evaluates log ψ on every determinant of the sector and compares with the FCI vector
(`nqs.exact.fci_state`). For the determinants above 1e-8 of FCI weight, grouped by the model's probability
(p >= 1e-12, the sampling floor at N_s = 1e12; 1e-16..1e-12; below 1e-16), it prints how many there are, their
FCI weight, how many have the wrong sign relative to the largest determinant, and the median |cos| of their
relative phase. Then the exact variational energy over the sector against the run's own final estimate.
Sectors up to a few 1e5 determinants (N2: 14,400).

    .venv/bin/python scripts/fci_tail_weight.py runs/N2-retnet-...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from nqs.exact import fci_state
from nqs.local_energy import local_energy
from nqs.training.build import build, load_model_weights
from nqs.training.config import TrainConfig

BANDS = ((1e-12, 2.0), (1e-16, 1e-12), (0.0, 1e-16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished nqs-train run directory")
    parser.add_argument("--min-weight", type=float, default=1e-8, help="FCI weight of the determinants counted")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_flat(yaml.safe_load((args.run / "config.yaml").read_text()))
    problem, model = build(cfg)
    load_model_weights(model, args.run)
    bits, psi_fci, e_fci = fci_state(problem)
    with torch.no_grad():
        log_psi = model.log_psi(bits).to(torch.complex128)
        e_loc = local_energy(problem.compiled("cpu"), bits, lambda b: model.log_psi(b)).values.real
    p = torch.exp(2 * log_psi.real)
    p = p / p.sum()
    fci = (psi_fci / psi_fci.norm()).to(torch.float64)
    weight = fci ** 2
    top = int(torch.argmax(weight))
    cos = torch.cos(log_psi.imag - log_psi.imag[top])
    wrong = torch.sign(cos) != torch.sign(fci * fci[top])
    print(f"{args.run}: {int((weight > args.min_weight).sum())} determinants above {args.min_weight:g} of FCI weight")
    print("| model p | determinants | their FCI weight | wrong sign | their FCI weight | median abs cos |")
    print("|---|---:|---:|---:|---:|---:|")
    for lo, hi in BANDS:
        m = (p >= lo) & (p < hi) & (weight > args.min_weight)
        bad = m & wrong
        median = f"{float(cos[m].abs().median()):.3f}" if bool(m.any()) else "—"
        print(f"| [{lo:g}, {hi:g}) | {int(m.sum())} | {float(weight[m].sum()):.2e} | {int(bad.sum())} | "
              f"{float(weight[bad].sum()):.2e} | {median} |")
    exact = float((p * e_loc).sum() - e_fci) * 1e3
    summary = json.loads((args.run / "summary.json").read_text())
    print(f"FCI weight at p < 1e-12: {float(weight[p < 1e-12].sum()):.2e}; exact variational energy over the sector "
          f"{exact:+.4f} mHa vs FCI; the run's final estimate {summary['error_mha']:+.4f} mHa")


if __name__ == "__main__":
    main()
