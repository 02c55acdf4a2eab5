"""Flags shared by the commands that build a molecular problem, and the device choice."""
from __future__ import annotations

import argparse

import torch

from nqs.chem import OrbitalOptions
from nqs.errors import UserError
from nqs.molecules import MoleculeSpec, resolve_molecule
from nqs.problem import DEFAULT_DMRG_MAX_BOND, DEFAULT_FCI_MAX_DETS, MolecularProblem, build_problem
from nqs.references import AUTO, KINDS, parse_references


def add_molecule_flags(parser: argparse.ArgumentParser, default_mol: str | None = None) -> None:
    g = parser.add_argument_group("molecule")
    g.add_argument("--mol", default=default_mol, help="catalogue molecule (nqs/hamiltonians/*.toml), e.g. N2, or a "
                   "hydrogen chain H4 ... H50")
    g.add_argument("--spacing", type=float, help="hydrogen chains: the H-H distance in Å (default 1.0)")
    g.add_argument("--geometry", help='custom geometry in Å, "H 0 0 0; H 0 0 0.74", or an .xyz file')
    g.add_argument("--basis", help="basis set (default: the catalogue's, else sto-3g)")
    g.add_argument("--charge", type=int, help="total charge")
    g.add_argument("--spin", type=int, help="2S = N_alpha - N_beta")
    g.add_argument("--frozen-core", type=int, default=0, help="freeze this many lowest doubly-occupied orbitals")
    g.add_argument("--active-orbitals", type=int, help="keep this many orbitals above the frozen core")
    g.add_argument("--no-symmetry", action="store_true", help="orbitals without point-group symmetry adaptation")
    g.add_argument("--fci-max-dets", type=float, default=DEFAULT_FCI_MAX_DETS,
                   help="skip FCI above this many determinants in the sector (default 1e7)")
    g.add_argument("--references", default=AUTO, help=f"reference energies: auto (HF, MP2, CCSD, CCSD(T), FCI up to "
                   f"--fci-max-dets, DMRG where FCI is skipped and block2 is installed), all, or a comma list of "
                   f"{', '.join(KINDS)} (default auto)")
    g.add_argument("--dmrg-max-bond", type=int, default=DEFAULT_DMRG_MAX_BOND,
                   help=f"DMRG's largest bond dimension M (default {DEFAULT_DMRG_MAX_BOND})")
    g.add_argument("--no-cache", action="store_true", help="rebuild instead of reading the Hamiltonian cache")


def molecule_from_args(args: argparse.Namespace) -> MoleculeSpec:
    mol = args.mol if args.geometry is None else None
    return resolve_molecule(mol=mol, geometry=args.geometry, charge=args.charge, spin=args.spin, basis=args.basis,
                            spacing=args.spacing)


def problem_from_args(args: argparse.Namespace) -> MolecularProblem:
    """The problem of the flags (Hamiltonian and the selected references, from the cache when there)."""
    selection = parse_references(args.references)  # bad names fail before any work
    spec = molecule_from_args(args)
    options = OrbitalOptions(frozen_core=args.frozen_core, active_orbitals=args.active_orbitals,
                             symmetry=not args.no_symmetry)
    return build_problem(spec, options, fci_max_dets=args.fci_max_dets, use_cache=not args.no_cache,
                         references=selection, dmrg_max_bond=args.dmrg_max_bond)


def parse_part(text: str) -> tuple[int, int]:
    """(I, P) from `--part I/P` (0 <= I < P): one share of a job that separate processes split; else a UserError."""
    try:
        part, parts = (int(s) for s in text.split("/"))
        assert 0 <= part < parts
    except (ValueError, AssertionError):
        raise UserError(f"--part {text!r}: give I/P with 0 <= I < P, e.g. 0/2") from None
    return part, parts


def configure_process(threads: int) -> None:
    """Process-wide settings, made once by a command's entry point (never by library code): CPU threads for
    torch and PySCF's OpenMP code (0: all cores), and Lightning's start-up chatter and data-loader warnings off
    (VMC has no data set)."""
    import gc
    import logging
    import os
    import warnings

    import lightning  # noqa: F401  (its import sets its loggers to INFO: lower them after it)
    from pyscf import lib

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    lib.num_threads(n)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import nqs.training.run  # noqa: F401  (the rest of the heavy imports, before the freeze below)

    # The libraries' millions of objects never become garbage; without the freeze a full collection walks them
    # at some step of a run (measured: one 228 ms step in a 1,200-step LiH run, 13 ms a step on average).
    gc.freeze()
    warnings.filterwarnings("ignore", message=".*(does not have many workers|IterableDataset|num_workers|LeafSpec).*")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; an unavailable 'cuda' is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for but CUDA is not available: use --device cpu or --device auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda")
    return torch.device(name)
