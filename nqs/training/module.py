"""The LightningModule: a thin VMC wrapper over a plain ansatz `nn.Module` and the local-energy kernel.

One training step: sample unique configurations with counts (identically on every rank, from a generator
seeded by (seed, step)), split them across ranks, compute E_loc on the rank's share, all-reduce the weighted
sums for the energy statistics, and return the surrogate loss whose gradient is the VMC gradient (scaled by
the world size because DDP averages gradients).
"""
from __future__ import annotations

import math
import time

import lightning as L
import torch
import torch.distributed as dist

from nqs import flops as flop_model
from nqs.local_energy import local_energy
from nqs.models.base import AutoregressiveAnsatz
from nqs.problem import MolecularProblem
from nqs.sampler import Samples, sample
from nqs.training.config import TrainConfig
from nqs.vmc import Stats, clip_local_energy, stats_from_sums, surrogate_loss, weighted_sums


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 12345) % (2**63 - 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if _world()[1] > 1:
        dist.all_reduce(t)
    return t


def evaluate_energy(model: AutoregressiveAnsatz, problem: MolecularProblem, hamiltonian, n_samples: float,
                    max_unique: int, seed: int, eval_chunk: int = 65536) -> tuple[Stats, Samples]:
    """Energy statistics from a fresh sample (every rank computes its share; sums are all-reduced)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(step_seed(seed, 10**9))
    samples = sample(model, n_samples, max_unique, gen)
    rank, world = _world()
    part = slice(rank, None, world)
    weights = samples.counts / samples.counts.sum()
    with torch.no_grad():
        le = local_energy(hamiltonian, samples.bits[part], model.log_psi, eval_chunk=eval_chunk)
    sums = _all_reduce(weighted_sums(le.values, weights[part].to(le.values.device)))
    return stats_from_sums(sums, samples.n_samples), samples


class VMCModule(L.LightningModule):
    def __init__(self, model: AutoregressiveAnsatz, problem: MolecularProblem, cfg: TrainConfig):
        super().__init__()
        self.model, self.problem, self.cfg = model, problem, cfg
        self.schedule = cfg.schedule()
        self.hamiltonian = None
        self.n_samples = self.schedule.n_samples_at(0, cfg.steps)  # adaptive schedule state
        self.d_prime = self.d_prime_full = self.flops_total = self.wall_s = 0.0
        self.automatic_optimization = True
        self._record: dict = {}

    # --- Lightning plumbing -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.hamiltonian = self.problem.compiled(self.device)

    def on_fit_start(self) -> None:
        self.hamiltonian = self.problem.compiled(self.device)

    def configure_optimizers(self):
        cfg = self.cfg
        phase = list(self.model.phase_net.parameters())
        ids = {id(q) for q in phase}
        modulus = [q for q in self.model.parameters() if id(q) not in ids]
        groups = [{"params": modulus, "lr": cfg.lr}, {"params": phase, "lr": cfg.lr * cfg.phase_lr_scale}]
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        ratio = cfg.lr_final / cfg.lr

        def factor(step: int) -> float:
            if step < cfg.warmup:
                return (step + 1) / cfg.warmup
            progress = min((step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1), 1.0)
            return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vmc_state"] = {"n_samples": self.n_samples, "d_prime": self.d_prime,
                                   "d_prime_full": self.d_prime_full, "flops_total": self.flops_total,
                                   "wall_s": self.wall_s}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for key, value in checkpoint.get("vmc_state", {}).items():
            setattr(self, key, value)

    # --- the VMC step -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        cfg, step, device = self.cfg, self.global_step, self.device
        t0 = time.perf_counter()
        if self.schedule.kind != "adaptive":
            self.n_samples = self.schedule.n_samples_at(step, cfg.steps)
        gen = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, step))
        samples = sample(self.model, self.n_samples, cfg.unique, gen)
        _sync(device)
        t1 = time.perf_counter()
        rank, world = _world()
        part = slice(rank, None, world)
        bits = samples.bits[part]
        weights = (samples.counts / samples.counts.sum())[part].to(device)
        le = local_energy(self.hamiltonian, bits, self.model.log_psi, eval_chunk=cfg.eval_chunk)
        sums = weighted_sums(le.values, weights)
        counts = torch.tensor([le.n_evals, le.n_connected], dtype=torch.float64, device=device)
        _all_reduce(sums), _all_reduce(counts)
        stats = stats_from_sums(sums, samples.n_samples)
        _sync(device)
        t2 = time.perf_counter()
        if not math.isfinite(stats.mean) or not math.isfinite(stats.variance):
            from nqs.errors import UserError

            raise UserError(f"training diverged at step {step} (energy {stats.mean}): lower --lr (now {cfg.lr:g}) "
                            f"or set --clip-local-energy 5; the last checkpoint is intact, resume with --resume")
        e_loc = clip_local_energy(le.values, weights, stats.mean, cfg.clip_local_energy)
        log_psi = self.model.log_psi(bits)
        mean = complex(stats.mean, stats.imag)
        temperature = cfg.temperature(step)
        if temperature > 0:  # free energy F = E - T S: the local term E_loc + T log p(x)
            log_p = 2.0 * log_psi.real.detach().to(torch.float64)
            mean_log_p = float(_all_reduce((weights * log_p).sum()))
            e_loc = e_loc + temperature * log_p
            mean = mean + temperature * mean_log_p
        loss = surrogate_loss(log_psi, e_loc, weights, mean) * world
        self._record = {"step": step, "stats": stats, "samples": samples, "n_evals": int(counts[0]),
                        "n_connected": int(counts[1]), "t_sampling": t1 - t0, "t_local_energy": t2 - t1,
                        "t_start": t0, "lr": self.optimizers().param_groups[0]["lr"], "temperature": temperature}
        return loss

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._record["t_backward_start"] = time.perf_counter()

    def on_after_backward(self) -> None:
        _sync(self.device)
        self._record["t_backward"] = time.perf_counter() - self._record["t_backward_start"]

    def finish_step(self) -> dict:
        """Book-keeping after the optimiser step (called by the run's callback before it checkpoints)."""
        r, cfg, p = self._record, self.cfg, self.problem
        stats, samples = r["stats"], r["samples"]
        self.wall_s += time.perf_counter() - r["t_start"]
        s_f = samples.n_unique / p.sector.size
        self.d_prime += s_f
        self.d_prime_full += samples.n_unique / 2.0 ** p.n_qubits
        if self.schedule.kind == "adaptive":
            self.n_samples = self.schedule.update(self.n_samples, samples.n_unique)
        fl = flop_model.step_flops(cfg.model_config(), p.sector, samples.rows_per_position, r["n_evals"],
                                   samples.n_unique, self.hamiltonian.gemm_columns)
        self.flops_total += fl["total"]
        e_fci = p.references.e_fci
        error_mha = (stats.mean - e_fci) * 1e3 if e_fci is not None else None
        row = {"step": r["step"], "energy": stats.mean, "energy_err": stats.error, "variance": stats.variance,
               "vscore": stats.vscore(p.sector.n_electrons, p.e_inf), "error_mha": error_mha,
               "n_unique": samples.n_unique, "n_samples": samples.n_samples, "s_f": s_f, "d_prime": self.d_prime,
               "lr": r["lr"], "wall_s": self.wall_s, "temperature": r["temperature"], "s_f_full": samples.n_unique / 2.0 ** p.n_qubits,
               "d_prime_full": self.d_prime_full, "n_evals": r["n_evals"], "n_connected": r["n_connected"],
               "t_sampling": r["t_sampling"], "t_local_energy": r["t_local_energy"],
               "t_backward": r.get("t_backward", 0.0), "flops_step": fl, "flops_total": self.flops_total}
        self.last_row = row
        self.log("energy", stats.mean, prog_bar=True, on_step=True, logger=True, sync_dist=False)
        if error_mha is not None:
            self.log("err_mHa", error_mha, prog_bar=True, on_step=True, logger=True)
        for key in ("energy_err", "variance", "vscore", "n_unique", "d_prime", "lr"):
            self.log(key, float(row[key]), on_step=True, logger=True)
        return row
