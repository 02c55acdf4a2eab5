"""`run(cfg, out)`: build the problem and the ansatz, train under Lightning, evaluate, write the run directory.

Run directory: config.yaml (resolved, flat), metrics.jsonl (one `nqs.record.StepRecord` per step, flushed),
summary.json (`nqs.record.RunSummary`), tensorboard/ event files, checkpoints/last.ckpt (written atomically
every `checkpoint_every` steps, at the end, and on Ctrl-C). Process-wide settings (threads, logging) are the
command-line entry points' business (`nqs.cli.common.configure_process`), not this module's.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import lightning as L
import torch

from nqs.errors import UserError
from nqs.problem import MolecularProblem
from nqs.record import (CHECKPOINT, ERROR_BAR_COVERS, LOWEST_CHECKPOINT, METRICS_FILE, TAIL_ERROR_BAR_COVERS,
                        RunSummary, StepRecord, branch_checkpoint)
from nqs.references import LABELS, best_reference
from nqs.training.build import build, check_device, fit_device, read_checkpoint
from nqs.training.config import TrainConfig
from nqs.training.module import VMCModule, evaluate_energy
from nqs.training.schedules import decay_length
from nqs.vmc import KEPT_MASS_WARNING


PROGRESS_EVERY_S = 5.0  # a progress line this often when stdout is not a terminal
TENSORBOARD_EVERY = 10  # steps between TensorBoard scalars (metrics.jsonl has every step); 0.02 ms a step


class StepStream(torch.utils.data.IterableDataset):
    """VMC has no data set: one dummy item per optimisation step."""

    def __init__(self, steps: int):
        self.steps = steps

    def __iter__(self):
        return iter(range(self.steps))


class RunFiles(L.Callback):
    """Per step: the real time since the previous step, the StepRecord appended to metrics.jsonl (rank 0,
    flushed), a few TensorBoard scalars, progress, and the atomically written last checkpoint."""

    def __init__(self, out: Path, cfg: TrainConfig, interrupt_after: int | None = None):
        self.out, self.cfg, self.interrupt_after = out, cfg, interrupt_after
        self.metrics = None
        self.interrupted = False
        self.mark = 0.0  # perf_counter at the end of the previous step
        self.progress = Progress(cfg.optim.steps) if cfg.run.progress else None

    def save(self, trainer: L.Trainer, name: Path = None) -> None:
        path = self.out / (name or CHECKPOINT)
        tmp = path.with_suffix(".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)

    def on_train_start(self, trainer, module) -> None:
        if trainer.is_global_zero:
            path = self.out / METRICS_FILE
            done = trainer.global_step  # on resume keep only the rows of completed steps
            rows = path.read_text().splitlines() if path.exists() else []
            kept = [r for r in rows if _row_step(r) is not None and _row_step(r) < done]
            path.write_text("".join(r + "\n" for r in kept))
            self.metrics = path.open("a")
        self.mark = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        record = module.finish_step(now - self.mark)
        self.mark = now
        if trainer.is_global_zero:
            self.metrics.write(json.dumps(record.to_json()) + "\n")
            self.metrics.flush()
            if record.step % TENSORBOARD_EVERY == 0 or trainer.global_step == self.cfg.optim.steps:
                log = trainer.logger.experiment
                for key in ("energy", "error_mha", "vscore", "variance", "n_unique", "lr"):
                    value = getattr(record, key)
                    if value is not None:
                        log.add_scalar(key, value, record.step)
            if self.progress is not None:
                self.progress.update(record)
        if trainer.global_step % self.cfg.run.checkpoint_every == 0:
            self.save(trainer)
        keep = self.cfg.run.keep_every
        if keep and trainer.global_step % keep == 0 and trainer.global_step < self.cfg.optim.steps:
            self.save(trainer, branch_checkpoint(trainer.global_step))
        if trainer.strategy.reduce_boolean_decision(module.stop_now, all=False):
            trainer.should_stop = True
        if self.interrupt_after is not None and trainer.global_step >= self.interrupt_after:
            raise KeyboardInterrupt  # testing aid: behave as a Ctrl-C after this many steps

    def on_train_end(self, trainer, module) -> None:
        self.save(trainer)
        if self.progress is not None and trainer.is_global_zero:
            self.progress.close()

    def on_exception(self, trainer, module, exception) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True
            self.save(trainer)  # parameters are consistent: the interrupted step had not updated them
        if self.metrics is not None:
            self.metrics.flush()


class Progress:
    """A carriage-return line on a terminal (at most 5 updates a second); otherwise one line every
    PROGRESS_EVERY_S seconds, so logs of nohup and CI runs stay readable. Written to stderr."""

    def __init__(self, steps: int, stream=None):
        self.steps, self.stream = steps, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.2 if self.tty else PROGRESS_EVERY_S
        self.last = time.perf_counter()
        self.pending = ""

    def update(self, r: StepRecord) -> None:
        err = f" {r.error_mha:+.3f} mHa" if r.error_mha is not None else ""
        if err and r.ref_kind not in (None, "fci"):
            err += f" vs {LABELS.get(r.ref_kind, r.ref_kind)}"
        self.show(f"step {r.step + 1}/{self.steps} E = {r.energy:.6f} Ha{err} ({r.wall_s:.1f} s)")

    def show(self, line: str) -> None:
        """`line` now if the last one is old enough, else kept for the next call or `close`."""
        self.pending = line
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(("\r" + self.pending) if self.tty else self.pending + "\n")
            self.stream.flush()
            self.pending = ""

    def close(self) -> None:
        if self.pending:
            self.stream.write(("\r" + self.pending + "\n") if self.tty else self.pending + "\n")
        elif self.tty:
            self.stream.write("\n")
        self.stream.flush()


def _row_step(line: str):
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def initial_state(cfg: TrainConfig, problem: MolecularProblem, model: torch.nn.Module) -> str:
    """Fit `model` (from `init_from`'s weights when given) to the state `cfg.run.init_state`
    (nqs.target_states; the fit: nqs.pretrain); the note that says how well."""
    from nqs.pretrain import describe, pretrain
    from nqs.target_states import target_state

    target = target_state(cfg.run.init_state, problem.integrals, cfg.run.init_bond, cfg.run.init_cutoff,
                          torch.get_num_threads())
    device = fit_device(cfg)
    progress = Progress(cfg.run.init_steps) if cfg.run.progress else None
    budget = "" if cfg.run.init_max_time is None else f" of {cfg.run.init_max_time:g}"
    report = None if progress is None else (
        lambda step, loss, seconds: progress.show(f"{cfg.run.init_state} fit: step {step}/{cfg.run.init_steps} "
                                                  f"loss {loss:.5f} ({seconds:.1f}{budget} s)"))
    info = pretrain(model.to(device), target, cfg.run.init_steps, cfg.run.init_lr, report, cfg.run.init_lr_final,
                    cfg.run.init_batch, cfg.run.init_max_time)
    if progress is not None:
        progress.close()
    model.cpu()  # where Lightning expects it; it moves the model to the run's device itself
    start = f"; the fit started from the weights of {cfg.run.init_from}" if cfg.run.init_from else ""
    return describe(target, info, problem.references.e_hf) + f" on {device}{start}"


def _trainer(cfg: TrainConfig, out: Path, files: RunFiles) -> L.Trainer:
    from lightning.pytorch.loggers import TensorBoardLogger

    r = cfg.run
    accelerator = {"auto": "auto", "cpu": "cpu"}.get(r.device, "gpu")
    strategy = r.strategy
    if strategy == "auto" and r.devices * r.num_nodes > 1:
        strategy = "ddp"
    return L.Trainer(max_steps=cfg.optim.steps, accelerator=accelerator, devices=r.devices, num_nodes=r.num_nodes,
                     strategy=strategy, logger=TensorBoardLogger(str(out), name="tensorboard", version=""),
                     callbacks=[files], enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, log_every_n_steps=10**9, num_sanity_val_steps=0, deterministic=False,
                     precision="64-true" if cfg.optim.dtype == "float64" else "32-true")


def make_run_dir(out: Path) -> None:
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot use {out} as the run directory ({exc.strerror}): choose another --out") from None


def run(cfg: TrainConfig, out: Path, resume: bool = False, interrupt_after: int | None = None,
        problem: MolecularProblem | None = None, scan: dict | None = None, notes: tuple = (),
        branch: dict | None = None) -> RunSummary | None:
    """Train, evaluate the final energy on a fresh large sample, and write summary.json; returns the summary
    (None on DDP ranks other than 0). `scan` (curve points) and `notes` (what the caller changed) go into it.
    `branch` = {"trunk": DIR, "step": S, "checkpoint": PATH}: a new run that continues the trunk's state after
    S steps (parameters, optimiser, schedule, totals) in `out`, whose metrics start with the trunk's first S."""
    check_device(cfg)
    make_run_dir(out)
    if resume:
        read_checkpoint(out / CHECKPOINT, "--resume")
    if branch is not None and not resume:
        read_checkpoint(Path(branch["checkpoint"]), "--branch-from")
        trunk_rows = (Path(branch["trunk"]) / METRICS_FILE).read_text().splitlines()
        kept = [r for r in trunk_rows if _row_step(r) is not None and _row_step(r) < branch["step"]]
        (out / METRICS_FILE).write_text("".join(r + "\n" for r in kept))
    start = time.perf_counter()
    built: list[str] = []
    problem, model = build(cfg, problem, built if not resume and branch is None else None)
    notes = (*notes, *built)
    if cfg.run.init_state and not resume and branch is None:  # a resumed run or a branch has its weights
        notes = (*notes, initial_state(cfg, problem, model))
    for note in notes:  # what the caller chose (e.g. the defaults by size): said before the training starts
        print(f"note: {note}", file=sys.stderr)
    if not resume:
        (out / "config.yaml").write_text(cfg.to_yaml())
    module = VMCModule(model, problem, cfg)
    files = RunFiles(out, cfg, interrupt_after)
    trainer = _trainer(cfg, out, files)
    loader = torch.utils.data.DataLoader(StepStream(cfg.optim.steps), batch_size=None)
    ckpt = str(out / CHECKPOINT) if resume else (str(branch["checkpoint"]) if branch is not None else None)
    L.seed_everything(cfg.run.seed, verbose=False)
    try:
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt)
    except SystemExit:  # Lightning turns a KeyboardInterrupt into sys.exit(1) after our on_exception
        if files.interrupted:
            raise KeyboardInterrupt from None
        raise
    if files.interrupted:
        raise KeyboardInterrupt
    module.to(module.hamiltonian.device)  # Lightning's teardown moved it to the CPU; the final energy is the run's
    model.eval()
    weights_used, weights_notes = final_weights(cfg, module, trainer.global_step, out, trainer.is_global_zero)
    final = evaluate_energy(model, module.hamiltonian, cfg.sampling.final_samples, cfg.sampling.final_unique,
                            cfg.run.seed, cfg.optim.eval_chunk, cfg.final_local_energy_mode(), cfg.sampling.final_tail)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # DDP is over: without this, gloo's threads outlive the interpreter and abort the exit about half the time
        torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:
        return None  # DDP: only rank 0 writes and reports
    told = len(notes)
    notes = list(notes) + weights_notes + reference_notes(problem.references)
    stats, tail = final.stats, final.tail
    if tail is not None:
        notes.append(f"the final sample kept {tail.head_mass:.8f} of the probability mass (unique cap "
                     f"{cfg.sampling.final_unique}); the rest came from a second draw of N_s = {tail.n_samples:.4g} "
                     f"({tail.draws:.0f} draws, {tail.unique} configurations outside the kept ones): it moved the "
                     f"energy by {tail.correction * 1e3:+.3f} ± {tail.error * 1e3:.3f} mHa (unbiased; final_tail)")
    elif stats.kept_mass < 1 - KEPT_MASS_WARNING:
        notes.append(f"the final sample kept {stats.kept_mass:.8f} of the probability mass (unique cap "
                     f"{cfg.sampling.final_unique}) and --final-tail 0 left the rest out: the energy is biased by "
                     f"the dropped part, which its error bar does not cover")
    estimator = cfg.local_energy_mode().estimator
    if estimator != "exact":
        final_with = ("it too (--final-local-energy as-trained; unbiased, taken twice with independent draws and "
                      "averaged, the noise between the two in the error bar)"
                      if cfg.final_local_energy_mode().estimator == estimator else "the exact one")
        notes.append(f"trained with the {estimator} local energy; the final energy uses {final_with}")
    for note in notes[told:]:
        print(f"note: {note}", file=sys.stderr)
    summary = run_summary(cfg, problem, model, module, final, trainer.global_step, time.perf_counter() - start,
                          scan, tuple(notes), branch, weights_used)
    summary.write(out)
    return summary


def final_weights(cfg: TrainConfig, module: VMCModule, steps: int, out: Path, write: bool) -> tuple[dict, list[str]]:
    """The weights the final energy is evaluated with, as the summary's record ({"kind", "step", ...}) and notes.
    `--final-weights lowest` loads the lowest-energy step's (`VMCModule.lowest_weights`) into the model and, on rank 0
    (`write`), saves them as checkpoints/lowest.ckpt, a file `--init-from` reads; last.ckpt keeps the training
    state that `--resume` continues."""
    last = {"kind": "last", "step": steps}
    if cfg.stop.final_weights != "lowest":
        return last, []
    low, weights = module.stopping.state, module.lowest_weights
    if weights is None:
        return last, ["final weights: no lowest step's weights were kept (every step annealed, or a branch's "
                      "trunk held a lower energy), so the last step's are used (--final-weights lowest)"]
    module.model.load_state_dict(weights)
    if write:
        path = out / LOWEST_CHECKPOINT
        torch.save({"state_dict": {"model." + k: v.cpu() for k, v in weights.items()}, "step": low.lowest_step,
                    "energy": low.lowest_energy}, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    final_step = "" if module.last is None else f"; the last step's: {module.last.stats.mean:.8f} Ha"
    return ({"kind": "lowest", "step": low.lowest_step, "training_energy": low.lowest_energy,
             "training_energy_err": low.lowest_energy_err},
            [f"final weights: those of step {low.lowest_step}, the lowest training energy ({low.lowest_energy:.8f} "
             f"Ha{final_step}; --final-weights lowest), saved as {LOWEST_CHECKPOINT} for --init-from"])


def reference_notes(refs) -> list[str]:
    """The references' notes (skipped ones and why), and which reference the error is taken against."""
    best = best_reference(refs)
    out = [f"reference: {n}" for n in refs.notes]
    if best is None:
        out.append("no reference energy: the error is unknown")
    elif best.kind != "fci":
        out.append(f"the error is taken against {best.label}, not FCI (FCI not available)")
    return out


def peak_memory_gib(device: torch.device) -> dict:
    """{peak_rss_gib, peak_device_gib}: the process's peak resident memory (Linux reports KiB) and, on CUDA, the
    most memory torch's allocator held allocated on the device."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gpu = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"peak_rss_gib": round(rss, 3), "peak_device_gib": None if gpu is None else round(gpu, 3)}


def run_summary(cfg: TrainConfig, problem: MolecularProblem, model, module: VMCModule, final, steps: int,
                command_wall_s: float, scan: dict | None, notes: tuple, branch: dict | None = None,
                weights_used: dict | None = None) -> RunSummary:
    refs, stats, tail, t, o = problem.references, final.stats, final.tail, module.totals, cfg.optim
    best = best_reference(refs)
    stop = module.stopping.record(steps)
    schedule = {"kind": o.lr_schedule, "warmup": o.warmup, "lr": o.lr, "lr_final": o.lr_final,
                "decay_steps": decay_length(o) if o.lr_schedule == "wsd" else None,
                "decay_start": (stop["decay_start"] if stop["decay_start"] is not None else o.steps - decay_length(o))
                if o.lr_schedule == "wsd" else None,
                "anneal_t0": o.anneal_t0, "anneal_steps": o.anneal_steps if o.anneal_steps is not None
                else round(o.anneal_fraction * o.steps)}
    return RunSummary(
        molecule=cfg.label if cfg.molecule.geometry is not None else problem.spec.name, ansatz=cfg.model.ansatz,
        n_qubits=problem.n_qubits, n_alpha=problem.sector.n_alpha, n_beta=problem.sector.n_beta,
        sector_size=problem.sector.size, n_params=model.n_params, n_params_modulus=model.n_params_modulus,
        n_params_phase=model.n_params_phase, n_params_effective=model.n_params_effective, steps=steps,
        samples=cfg.sampling.samples, unique=cfg.sampling.unique,
        energy=stats.mean, energy_err=stats.error,
        error_bar_covers=ERROR_BAR_COVERS if tail is None else TAIL_ERROR_BAR_COVERS, variance=stats.variance,
        vscore=stats.vscore(problem.sector.n_electrons, problem.e_inf), final_n_unique=final.samples.n_unique,
        final_n_samples=final.samples.n_samples, final_n_requested=final.samples.n_requested,
        final_kept_mass=stats.kept_mass, final_tail=None if tail is None else tail.to_json(), e_fci=refs.e_fci,
        e_dmrg=refs.e_dmrg,
        e_ref=best.energy if best else None, ref_kind=best.kind if best else None,
        ref_uncertainty=best.uncertainty if best else None,
        e_ccsd_t=refs.e_ccsd_t, e_ccsd=refs.e_ccsd, e_mp2=refs.e_mp2, e_hf=refs.e_hf, e_inf=problem.e_inf,
        d_prime=t.d_prime, d_prime_full=t.d_prime_full, d_prime_nominal=t.d_prime_nominal, flops_total=t.flops_total,
        wall_s=t.wall_s,
        t_framework_s=t.framework_s, command_wall_s=command_wall_s, seed=cfg.run.seed, device=str(module.device),
        torch_threads=torch.get_num_threads(), **peak_memory_gib(module.device), optimizer=o.optimizer,
        schedule=schedule,
        local_energy=module.local_energy_mode.resolve(model).name, estimator=module.local_energy_mode.estimator,
        connections=problem.connections(cfg.connections_used),
        stop_reason=stop["stop_reason"], criteria_met=stop["criteria_met"], final_weights=weights_used,
        branch=None if branch is None else {"trunk": str(branch["trunk"]), "step": branch["step"]},
        scan=scan, notes=notes)

