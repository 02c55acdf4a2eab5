"""What a config names, built: its problem (`build_cfg_problem`), and its model (`build`), warm-started from
another run's weights (`load_model_weights`, `read_checkpoint`); the devices a run may use (`fit_device`,
`check_device`). Shared by `nqs.training.run` and the scripts that rebuild a run's network."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nqs.chem import OrbitalOptions
from nqs.errors import UserError
from nqs.models import build_model
from nqs.models.widen import deepen_weights, describe_widening, widen_weights
from nqs.molecules import resolve_molecule
from nqs.orbitals import localize
from nqs.problem import MolecularProblem, build_problem
from nqs.record import CHECKPOINT
from nqs.training.config import TrainConfig


def molecule_of(cfg: TrainConfig):
    """(MoleculeSpec, OrbitalOptions) of the config's molecule group."""
    m = cfg.molecule
    spec = resolve_molecule(mol=m.mol, geometry=m.geometry, charge=m.charge, spin=m.spin, basis=m.basis,
                            spacing=m.spacing)
    return spec, OrbitalOptions(frozen_core=m.frozen_core, active_orbitals=m.active_orbitals, symmetry=m.symmetry)


def build_cfg_problem(cfg: TrainConfig) -> MolecularProblem:
    """The config's problem, in its canonical orbitals or (`orbitals: split`) in split-localized ones."""
    spec, options = molecule_of(cfg)
    m = cfg.molecule
    problem = build_problem(spec, options, fci_max_dets=m.fci_max_dets, references=m.references,
                            dmrg_max_bond=m.dmrg_max_bond)
    if m.orbitals == "split":
        problem = build_problem(spec, options, fci_max_dets=m.fci_max_dets, references=m.references,
                                dmrg_max_bond=m.dmrg_max_bond, orbitals=localize(problem.orbitals, split=True))
    return problem


def build(cfg: TrainConfig, problem: MolecularProblem | None = None,
          notes: list[str] | None = None) -> tuple[MolecularProblem, torch.nn.Module]:
    """The problem (unless given, e.g. with orbitals matched to another geometry's by nqs.curve) and the model;
    what the building changed (a widened `init_from` network) is appended to `notes` when given."""
    if problem is None:
        problem = build_cfg_problem(cfg)
    problem.connections(cfg.connections_used)  # `pauli` past 62 qubits fails here, before any training
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, problem.sector)
    if cfg.optim.dtype == "float64":
        model = model.double()
    if cfg.run.init_from:
        widened = load_model_weights(model, Path(cfg.run.init_from))
        if widened and notes is not None:
            notes.append(widened)
    return problem, model


def fit_device(cfg: TrainConfig) -> torch.device:
    """The device of a fit before training: the run's GPU (a DDP rank's own, LOCAL_RANK), else the CPU."""
    if cfg.run.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def read_checkpoint(path: Path, what: str) -> dict:
    """A checkpoint's contents; a truncated or foreign file is a UserError naming it (the file is left alone)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        state["state_dict"]
    except Exception as exc:  # pickle, zip and key errors alike
        raise UserError(f"{what}: {path} is not a readable nqs-train checkpoint ({type(exc).__name__}); restore "
                        f"it or start a new run with another --out") from None
    return state


def load_model_weights(model: torch.nn.Module, path: Path) -> str | None:
    """Warm start from a run's checkpoint (a run directory or a .ckpt file). Sizes must match, except that a
    MADE's and the phase network's hidden layers may be wider here, and a MADE's more (nqs.models.widen: the
    function is kept); returns the note saying so, None when the sizes were equal."""
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise UserError(f"init_from: {path} not found: give a run directory or a .ckpt file")
    state = read_checkpoint(path, "init_from")["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        weights, added = deepen_weights(model, weights)
        widened = widen_weights(model, weights)
    except ValueError as exc:
        raise UserError(f"init_from: {path} holds a model of other sizes or ansatz ({exc}): give the same "
                        f"ansatz and layers, wider (or a MADE's more) hidden layers at most") from None
    changes = ([f"deepened ({added} modulus hidden layer{'s' if added > 1 else ''} added as the identity)"]
               if added else [])
    if widened:
        changes.append(f"widened ({describe_widening(model, weights, widened)}; new units' weights into the old "
                       "units and the outputs start at zero)")
    if changes:
        return f"the network of {path} was {' and '.join(changes)} without changing its function"
    return None


def check_device(cfg: TrainConfig) -> None:
    if cfg.run.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for but CUDA is not available here: use --device cpu or --device auto")


def rebuild_fitted(run: Path, state: str | None = None, threads: int = 1):
    """A run fitted to a state, rebuilt from its directory: (config, problem, network with the run's saved weights,
    the target state: its config's `init_state`, or `state`, built or read from the cache with the run's
    settings). A run without config.yaml or without a state to name is a UserError."""
    from nqs.target_states import target_state
    from nqs.training.config import load_yaml, resolve

    if not (config := run / "config.yaml").is_file():
        raise UserError(f"{run}: no config.yaml: give a run directory of nqs-train")
    saved = load_yaml(config)
    state = state or saved.get("init_state")
    if state is None:
        raise UserError(f"{run} was not fitted to a state (no init_state): name the set with --state")
    cfg = resolve([(str(config), {k: v for k, v in saved.items() if k not in ("init_state", "out")}
                    | {"init_from": str(run)})]).validate()
    problem, model = build(cfg)
    return cfg, problem, model, target_state(state, problem.integrals, cfg.run.init_bond, cfg.run.init_cutoff,
                                             threads)
