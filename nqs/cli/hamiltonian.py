"""`nqs-hamiltonian`: build a molecule's qubit Hamiltonian and print its summary and reference energies."""
from __future__ import annotations

import argparse
import json
import sys

from nqs.cli.common import add_molecule_flags, problem_from_args
from nqs.errors import cli_entry
from nqs.problem import MolecularProblem
from nqs.references import KINDS, LABELS, best_reference, uncertainty


def format_summary(p: MolecularProblem) -> str:
    s, r = p.summary(), p.references
    spec = p.spec
    lines = [f"{spec.name}  ({spec.basis}, charge {spec.charge:+d}, 2S={spec.spin})  geometry: {spec.source}",
             f"  qubits {s['n_qubits']} ({s['n_orbitals']} spatial orbitals), electrons "
             f"(N_alpha, N_beta) = ({s['n_alpha']}, {s['n_beta']}), sector size {s['sector_size']:,}"]
    if p.pauli is not None:
        lines.append(f"  Pauli strings {s['n_pauli_terms']:,} in {s['n_flip_masks']:,} flip masks")
    else:
        lines.append(f"  Pauli table: not built ({s['hamiltonian_skipped']})")
    lines += [f"  connections (auto): {p.connections()}", f"  E_nuc  {s['e_nuc']:16.8f} Ha",
              f"  E_inf  {s['e_inf']:16.8f} Ha  (Tr H / dim over the sector)"]
    for kind in KINDS:
        value = getattr(r, f"e_{kind}")
        text = f"{value:16.8f} Ha" if value is not None else "         skipped"
        if kind == "fci" and r.s2_fci is not None:
            text += f"  <S^2> = {r.s2_fci:.4f}"
        if kind == "dmrg" and value is not None:
            text += f"  ± {uncertainty(r, 'dmrg'):.1e}"
        lines.append(f"  {LABELS[kind]:7s}{text}")
    best = best_reference(r)
    if best is not None:
        lines.append(f"  best reference: {best.label}")
    lines += [f"  note: {n}" for n in r.notes]
    lines.append(f"  built in {s['build_seconds']:.3f} s{' (from cache)' if p.from_cache else ''}")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nqs-hamiltonian", description=__doc__)
    add_molecule_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    args = parser.parse_args(argv)
    if args.mol is None and args.geometry is None:
        args.mol = "LiH"
    problem = problem_from_args(args)
    print(json.dumps(problem.summary()) if args.json else format_summary(problem))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
