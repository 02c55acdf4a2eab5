"""What an `--init-state` fit aims at: the target state's size and its exact variational energy.

For each molecule, builds the state `nqs.target_states.target_state` gives (`--state cisd`, `ccsd` or `dmrg`;
for ccsd also `--max-rank` and `--tol` of `nqs.coupled_cluster.ccsd_state`, for dmrg `--bond` and `--cutoff` of
`nqs.dmrg.dmrg_state`), in canonical or `--orbitals split` orbitals, then ⟨c|H|c⟩ with H taken exactly within
its determinants (`nqs.exact.subset_energies`; `scripts/support_energy.py` does the same for a run's network,
and by |c| threshold), against the best reference of the molecule's cache (`--references`, e.g. hf,ccsd_t,dmrg:
a DMRG energy is read from the cache, or computed once). Prints one JSON line per molecule and a table.

    .venv/bin/python scripts/target_state_energy.py --mol H10 H16 --state ccsd --references hf,ccsd_t,dmrg
    .venv/bin/python scripts/target_state_energy.py --mol H16 --state dmrg --orbitals split --references hf,ccsd_t,dmrg
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from nqs.coupled_cluster import MAX_RANK, TOL, ccsd_state
from nqs.exact import subset_energies
from nqs.excitations import IntegralHamiltonian
from nqs.molecules import resolve_molecule
from nqs.orbitals import localize
from nqs.target_states import cisd_state, dmrg_target
from nqs.problem import build_problem
from nqs.references import best_reference

def variational_energy(problem, bits: torch.Tensor, amplitudes: torch.Tensor) -> float:
    """⟨c|H|c⟩ / ⟨c|c⟩ (Hartree) of the state c on `bits`, exactly within its determinants."""
    h = IntegralHamiltonian(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
    numerator, norm = subset_energies(h, bits, amplitudes)
    return float(numerator[0].real / norm[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mol", nargs="+", required=True, help="catalogue molecules")
    parser.add_argument("--state", choices=("cisd", "ccsd", "dmrg"), default="ccsd")
    parser.add_argument("--bond", type=int, default=250, help="dmrg: the SZ MPS's largest bond dimension")
    parser.add_argument("--cutoff", type=float, default=1e-5, help="dmrg: smallest |c| kept")
    parser.add_argument("--orbitals", choices=("canonical", "split"), default="canonical",
                        help="as nqs-train's --orbitals")
    parser.add_argument("--max-rank", type=int, default=MAX_RANK, help="ccsd: highest excitation rank kept")
    parser.add_argument("--tol", type=float, default=TOL, help="ccsd: smallest |c| kept (c_HF = 1)")
    parser.add_argument("--references", default="auto", help="as nqs-train's --references")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.mol:
        problem = build_problem(resolve_molecule(name), references=args.references)
        if args.orbitals == "split":
            problem = build_problem(resolve_molecule(name), references=args.references,
                                    orbitals=localize(problem.orbitals, split=True))
        start = time.perf_counter()
        if args.state == "dmrg":
            state = dmrg_target(problem.integrals, args.bond, args.cutoff)
        else:
            state = (cisd_state(problem.integrals) if args.state == "cisd"
                     else ccsd_state(problem.integrals, args.max_rank, args.tol))
        built = time.perf_counter() - start
        energy = variational_energy(problem, state.bits, state.amplitudes)
        ref = best_reference(problem.references)
        row = {"molecule": name, "state": args.state, "orbitals": args.orbitals,
               "determinants": state.bits.shape[0], "detail": state.detail,
               "e_state": state.energy, "e_variational": energy, "reference": ref.kind,
               "e_reference": ref.energy, "error_mha": 1000 * (energy - ref.energy),
               "state_error_mha": 1000 * (state.energy - ref.energy), "build_s": round(built, 1),
               "energy_s": round(time.perf_counter() - start - built, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| molecule | state | determinants | E_variational (Ha) | vs reference (mHa) | the method's own energy "
          "vs reference (mHa) |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['molecule']} | {r['state']} | {r['determinants']:,} | {r['e_variational']:.8f} | "
              f"{r['error_mha']:+.2f} ({r['reference']}) | {r['state_error_mha']:+.2f} |")


if __name__ == "__main__":
    main()
