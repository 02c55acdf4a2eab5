"""`run(cfg)`: build the problem and the ansatz, train under Lightning, evaluate, write the run directory.

Run directory: config.yaml (resolved), metrics.jsonl (one object per step, flushed), summary.json,
tensorboard/ event files, checkpoints/last.ckpt (written atomically every `checkpoint_every` steps, at the end,
and on Ctrl-C).
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from nqs.chem import OrbitalOptions
from nqs.models import build_model
from nqs.molecules import resolve_molecule
from nqs.problem import MolecularProblem, build_problem
from nqs.training.config import TrainConfig, to_yaml
from nqs.training.module import VMCModule, evaluate_energy

CHECKPOINT = Path("checkpoints") / "last.ckpt"


class StepStream(torch.utils.data.IterableDataset):
    """VMC has no data set: one dummy item per optimisation step."""

    def __init__(self, steps: int):
        self.steps = steps

    def __iter__(self):
        return iter(range(self.steps))


class RunFiles(L.Callback):
    """metrics.jsonl rows (rank 0, flushed each step) and the atomically written last checkpoint."""

    def __init__(self, out: Path, every: int, interrupt_after: int | None = None):
        self.out, self.every, self.interrupt_after = out, every, interrupt_after
        self.metrics = None
        self.interrupted = False

    def write_row(self, trainer: L.Trainer, row: dict) -> None:
        if trainer.is_global_zero:
            self.metrics.write(json.dumps(row) + "\n")
            self.metrics.flush()

    def save(self, trainer: L.Trainer) -> None:
        path = self.out / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)

    def on_train_start(self, trainer, module) -> None:
        if trainer.is_global_zero:
            path = self.out / "metrics.jsonl"
            done = trainer.global_step  # on resume keep only the rows of completed steps
            rows = path.read_text().splitlines() if path.exists() else []
            kept = [r for r in rows if _row_step(r) is not None and _row_step(r) < done]
            path.write_text("".join(r + "\n" for r in kept))
            self.metrics = path.open("a")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.write_row(trainer, module.finish_step())
        if trainer.global_step % self.every == 0:
            self.save(trainer)
        if self.interrupt_after is not None and trainer.global_step >= self.interrupt_after:
            raise KeyboardInterrupt  # testing aid: behave as a Ctrl-C after this many steps

    def on_train_end(self, trainer, module) -> None:
        self.save(trainer)

    def on_exception(self, trainer, module, exception) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True
            self.save(trainer)  # parameters are consistent: the interrupted step had not updated them
        if self.metrics is not None:
            self.metrics.flush()


def _row_step(line: str):
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def build_cfg_problem(cfg: TrainConfig) -> MolecularProblem:
    spec = resolve_molecule(mol=cfg.mol, geometry=cfg.geometry, charge=cfg.charge, spin=cfg.spin, basis=cfg.basis)
    options = OrbitalOptions(frozen_core=cfg.frozen_core, active_orbitals=cfg.active_orbitals,
                             symmetry=cfg.symmetry)
    return build_problem(spec, options, fci_max_dets=cfg.fci_max_dets)


def build(cfg: TrainConfig, problem: MolecularProblem | None = None) -> tuple[MolecularProblem, torch.nn.Module]:
    """The problem (unless given, e.g. with orbitals matched to another geometry's by nqs.curve) and the model."""
    if problem is None:
        problem = build_cfg_problem(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_config(), problem.sector)
    if cfg.dtype == "float64":
        model = model.double()
    if cfg.init_from:
        load_model_weights(model, Path(cfg.init_from))
    return problem, model


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Warm start from a run's checkpoint (a run directory or a .ckpt file); sizes must match."""
    from nqs.errors import UserError

    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise UserError(f"init_from: {path} not found: give a run directory or a .ckpt file")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"init_from: {path} holds a model of other sizes or ansatz ({str(exc).splitlines()[0]})") from None


def set_threads(threads: int) -> None:
    """CPU threads for torch and PySCF's OpenMP code; 0: all cores."""
    from pyscf import lib

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    lib.num_threads(n)


def _trainer(cfg: TrainConfig, out: Path, files: RunFiles) -> L.Trainer:
    from lightning.pytorch.loggers import TensorBoardLogger

    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}[cfg.device]
    strategy = cfg.strategy
    if strategy == "auto" and cfg.devices * cfg.num_nodes > 1:
        strategy = "ddp"
    return L.Trainer(max_steps=cfg.steps, accelerator=accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                     strategy=strategy, logger=TensorBoardLogger(str(out), name="tensorboard", version=""),
                     callbacks=[files], enable_checkpointing=False, enable_progress_bar=cfg.progress,
                     enable_model_summary=False, gradient_clip_val=cfg.grad_clip, log_every_n_steps=1,
                     num_sanity_val_steps=0, deterministic=False, precision="64-true" if cfg.dtype == "float64" else "32-true")


def run(cfg: TrainConfig, out: Path, resume: bool = False, interrupt_after: int | None = None,
        problem: MolecularProblem | None = None) -> dict | None:
    """Train, evaluate the final energy on a fresh large sample, and write summary.json; returns the summary
    (None on DDP ranks other than 0)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|IterableDataset|num_workers).*")
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    start = time.perf_counter()
    set_threads(cfg.threads)
    problem, model = build(cfg, problem)
    if not resume:
        (out / "config.yaml").write_text(to_yaml(cfg))
    module = VMCModule(model, problem, cfg)
    files = RunFiles(out, cfg.checkpoint_every, interrupt_after)
    trainer = _trainer(cfg, out, files)
    loader = torch.utils.data.DataLoader(StepStream(cfg.steps), batch_size=None)
    ckpt = str(out / CHECKPOINT) if resume else None
    L.seed_everything(cfg.seed, verbose=False)
    try:
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt)
    except SystemExit:  # Lightning turns a KeyboardInterrupt into sys.exit(1) after our on_exception
        if files.interrupted:
            raise KeyboardInterrupt from None
        raise
    if files.interrupted:
        raise KeyboardInterrupt
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # DDP is over: without this, gloo's threads outlive the interpreter and abort the exit about half the time
        torch.distributed.destroy_process_group()
    model.eval()
    stats, final = evaluate_energy(model, problem, module.hamiltonian, cfg.final_samples, cfg.final_unique,
                                   cfg.seed, cfg.eval_chunk)
    refs = problem.references
    summary = {"molecule": problem.spec.name, "ansatz": cfg.ansatz, "n_qubits": problem.n_qubits,
               "n_alpha": problem.sector.n_alpha, "n_beta": problem.sector.n_beta,
               "sector_size": problem.sector.size, "n_params": model.n_params,
               "n_params_modulus": model.n_params_modulus, "n_params_phase": model.n_params_phase,
               "steps": trainer.global_step, "samples": cfg.samples, "unique": cfg.unique,
               "energy": stats.mean, "energy_err": stats.error, "variance": stats.variance,
               "vscore": stats.vscore(problem.sector.n_electrons, problem.e_inf), "e_fci": refs.e_fci,
               "e_ccsd_t": refs.e_ccsd_t, "e_hf": refs.e_hf,
               "error_mha": (stats.mean - refs.e_fci) * 1e3 if refs.e_fci is not None else None,
               "d_prime": module.d_prime, "wall_s": module.wall_s, "seed": cfg.seed,
               "e_ccsd": refs.e_ccsd, "e_mp2": refs.e_mp2, "e_inf": problem.e_inf, "d_prime_full": module.d_prime_full,
               "flops_total": module.flops_total, "final_n_unique": final.n_unique,
               "final_n_samples": final.n_samples, "command_wall_s": time.perf_counter() - start,
               "device": str(module.device), "torch_threads": torch.get_num_threads()}
    if not trainer.is_global_zero:
        return None  # DDP: only rank 0 writes and reports
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
