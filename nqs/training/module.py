"""The LightningModule: a thin wrapper that runs `nqs.vmc.vmc_step` and the optimiser, and keeps run totals.

Lightning supplies devices, DDP, precision and checkpoints; the step itself is `vmc_step` (identical samples
on every rank from a generator seeded by (seed, step), each rank's share of E_loc, all-reduced statistics). The
optimisation is manual (backward, gradient-norm clipping, AdamW, learning-rate schedule) so that every part of
the step is timed here and the framework's share of a step can be recorded apart.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
import torch.distributed as dist

from nqs import flops as flop_model
from nqs.errors import UserError
from nqs.local_energy_modes import LocalEnergyMode
from nqs.models.base import AutoregressiveAnsatz
from nqs.problem import MolecularProblem
from nqs.record import StepRecord
from nqs.references import best_reference
from nqs.natural_gradient import SRSettings, flat_grad, set_flat_grad, sr_direction
from nqs.sr_leak import limit_step
from nqs.sr_tail import tail_rows
from nqs.training.config import TrainConfig
from nqs.training.schedules import StopMonitor, StopState, lr_factor
from nqs.vmc import Ranks, StepResult, _sync, vmc_step


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 12345) % (2**63 - 1)


FINAL_STEP = 10**9  # the generator seed of the final energy's sample


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


def ddp_ranks() -> Ranks:
    """This process's place among the DDP processes (one process: rank 0 of 1)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Ranks(dist.get_rank(), dist.get_world_size(), _all_reduce)
    return Ranks()


def evaluate_energy(model: AutoregressiveAnsatz, hamiltonian, n_samples: float, max_unique: int, seed: int,
                    eval_chunk: int = 65536, mode: LocalEnergyMode = LocalEnergyMode(), n_tail: int = 0) -> StepResult:
    """The final energy: `vmc_step` without a loss on a fresh sample (every rank computes its share), with the
    exact local energy whatever estimator trained the model unless `mode` says otherwise, and the part the
    unique cap dropped from a second draw of about `n_tail` configurations (`tail`; none when nothing dropped).
    A semi-stochastic or heat-bath E_loc is taken twice and averaged, its noise in the error bar (`noise_check`)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(step_seed(seed, FINAL_STEP))
    with torch.no_grad():
        return vmc_step(model, hamiltonian, n_samples, max_unique, gen, eval_chunk=eval_chunk, with_loss=False,
                        ranks=ddp_ranks(), mode=mode, tail_draws=n_tail, noise_check=True)


@dataclass(frozen=True)
class Totals:
    """Run totals carried from step to step and through checkpoints."""

    n_samples: float  # N_s of the next step (the adaptive schedule's state)
    d_prime: float = 0.0  # sum of n_unique / |sector|
    d_prime_full: float = 0.0  # sum of n_unique / 2^n_qubits
    d_prime_nominal: float = 0.0  # sum of min(B, |sector|) / |sector|, B the step's unique cap
    flops_total: float = 0.0
    wall_s: float = 0.0  # sum of the real times between steps
    framework_s: float = 0.0  # the part of wall_s outside the VMC step and the optimiser


def make_optimizer(model: AutoregressiveAnsatz, cfg: TrainConfig, decay_start: Callable[[], int | None] = lambda: None):
    """The optimiser and its learning-rate schedule (`nqs.training.schedules.lr_factor`).

    adam: AdamW with two groups (modulus, phase at phase_lr_scale). sr: plain steps θ -= lr·d along the
    natural-gradient direction d that `optimisation_step` puts in the gradients. The schedule is one
    closed-form LambdaLR rather than torch's SequentialLR(LinearLR, CosineAnnealingLR): measured, the chained
    form drifts from the closed form by up to 2.6e-14 relative (its update is recursive), which changes
    same-seed trajectories, and its eta_min is one absolute rate for all groups, whereas the phase group's
    final rate must scale with phase_lr_scale. `decay_start` gives the WSD decay's start when a stopping rule
    moved it."""
    o = cfg.optim
    if o.optimizer == "sr":
        opt = torch.optim.SGD(model.parameters(), lr=o.sr_lr or o.lr)
    else:
        phase = list(model.phase_net.parameters())
        ids = {id(q) for q in phase}
        modulus = [q for q in model.parameters() if id(q) not in ids]
        groups = [{"params": modulus, "lr": o.lr}, {"params": phase, "lr": o.lr * o.phase_lr_scale}]
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(o, step, decay_start()))


def make_optimizers(model: AutoregressiveAnsatz, cfg: TrainConfig, decay_start: Callable[[], int | None]):
    """[(optimiser, schedule)]: one, or for adam+sr Adam's and then SR's (both schedules advance every step)."""
    if cfg.optim.optimizer != "adam+sr":
        return [make_optimizer(model, cfg, decay_start)]
    return [make_optimizer(model, cfg.updated(optimizer=name), decay_start) for name in ("adam", "sr")]


def _clip_norm(optimizer, value: float) -> None:
    params = [q for group in optimizer.param_groups for q in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, value)


def optimisation_step(loss: torch.Tensor, optimizer, scheduler, grad_clip: float | None, device: torch.device,
                      backward=torch.Tensor.backward, clip=_clip_norm,
                      precondition: Callable[[float], None] | None = None) -> tuple[float, float, float]:
    """Backward, gradient-norm clipping (or `precondition(lr)`, which replaces the gradients by the SR
    direction), the optimiser and the schedule: (t_backward s, t_optimizer s, the learning rate used).
    Lightning passes its own `backward` (DDP) and `clip` (precision plugins)."""
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    backward(loss)
    _sync(device)
    t1 = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    if precondition is not None:
        precondition(lr)
    elif grad_clip is not None:
        clip(optimizer, grad_clip)
    optimizer.step()
    scheduler.step()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1, lr


class VMCModule(L.LightningModule):
    def __init__(self, model: AutoregressiveAnsatz, problem: MolecularProblem, cfg: TrainConfig):
        super().__init__()
        self.model, self.problem, self.cfg = model, problem, cfg
        self.reference = best_reference(problem.references)  # what each step's error is taken against
        self.schedule = cfg.schedule()
        self.local_energy_mode = cfg.local_energy_mode()
        self.hamiltonian = None  # compiled once, on the run's device, in setup()
        self.automatic_optimization = False
        self.totals = Totals(n_samples=self.schedule.n_samples_at(0, cfg.optim.steps))
        self.stopping = StopMonitor(cfg)
        self.sr = SRSettings(cfg.optim.sr_shift, cfg.optim.sr_shift_final, cfg.optim.sr_shift_steps,
                             cfg.optim.sr_trust, cfg.optim.sr_rows, momentum=cfg.optim.sr_momentum)
        self.sr_info: dict = {}
        self.sr_previous: torch.Tensor | None = None  # the last SR direction taken (SPRING's d_prev)
        # --final-weights lowest: the weights the lowest step's energy was measured with (the step, its energy:
        # self.stopping.state), copies on the run's device taken before that step's update
        self.lowest_weights: dict | None = None
        self.stop_now = False
        self.last: StepResult | None = None
        self.t_backward = self.t_optimizer = 0.0

    # --- Lightning plumbing -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.hamiltonian is None:
            self.hamiltonian = self.problem.compiled(self.device, self.cfg.connections_used)

    def configure_optimizers(self):
        pairs = make_optimizers(self.model, self.cfg, lambda: self.stopping.state.decay_start)
        return [{"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}} for opt, sched in pairs]

    def active(self, step: int) -> tuple[int, bool]:
        """(index of the optimiser of `step`, whether it takes SR directions)."""
        o = self.cfg.optim
        if o.optimizer == "adam+sr":
            return (1, True) if step >= o.sr_start else (0, False)
        return 0, o.sr_start is not None

    def on_train_start(self) -> None:
        """Set the learning rate of the coming step from this run's schedule: after a restore the optimiser
        holds the rate the checkpoint's run set, which a branch's schedule replaces."""
        for sched in _as_list(self.lr_schedulers()):
            for group, base, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * factor(self.global_step)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vmc_totals"] = dataclasses.asdict(self.totals)
        checkpoint["vmc_stopping"] = self.stopping.state_dict()
        if self.sr_previous is not None:
            checkpoint["vmc_sr_previous"] = self.sr_previous.cpu()
        if self.lowest_weights is not None:
            checkpoint["vmc_lowest_weights"] = {k: v.cpu() for k, v in self.lowest_weights.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("vmc_totals", checkpoint.get("vmc_state"))  # vmc_state: before the Totals record
        if saved is not None:
            if "d_prime_nominal" not in saved:  # written before it was kept: every step so far at this cap
                saved = {**saved, "d_prime_nominal": checkpoint.get("global_step", 0) * self.nominal_fraction}
            self.totals = Totals(**saved)
        if "vmc_stopping" in checkpoint:
            self.stopping = StopMonitor(self.cfg, StopState(**checkpoint["vmc_stopping"]))
        if checkpoint.get("vmc_sr_previous") is not None:
            self.sr_previous = checkpoint["vmc_sr_previous"]
        if checkpoint.get("vmc_lowest_weights") is not None:
            self.lowest_weights = checkpoint["vmc_lowest_weights"]

    @property
    def nominal_fraction(self) -> float:
        """min(B, |sector|) / |sector| for this run's unique cap B: the nominal S_F of every step."""
        size = self.problem.sector.size
        return min(self.cfg.sampling.unique, size) / size

    # --- the VMC step -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        cfg, step, device = self.cfg, self.global_step, self.device
        if self.schedule.kind != "adaptive":
            self.totals = dataclasses.replace(self.totals, n_samples=self.schedule.n_samples_at(step, cfg.optim.steps))
        gen = torch.Generator(device=device).manual_seed(step_seed(cfg.run.seed, step))
        try:
            result = vmc_step(self.model, self.hamiltonian, self.totals.n_samples, cfg.sampling.unique, gen,
                              temperature=cfg.temperature(step), clip_width=cfg.optim.clip_local_energy,
                              eval_chunk=cfg.optim.eval_chunk, ranks=ddp_ranks(), mode=self.local_energy_mode,
                              tail_draws=cfg.sampling.tail)
        except FloatingPointError as exc:
            raise UserError(f"training diverged at step {step} ({exc}): lower --lr (now {cfg.optim.lr:g}) or set "
                            f"--clip-local-energy 5; the last checkpoint is intact, resume with --resume") from None
        self._keep_if_lowest(step, result)
        index, use_sr = self.active(step)
        opts, scheds = _as_list(self.optimizers()), _as_list(self.lr_schedulers())
        precondition = None
        if use_sr:
            sr_step = step - cfg.optim.sr_start

            def precondition(lr: float) -> None:
                weights = result.samples.counts / result.samples.counts.sum()
                tail = None if not cfg.optim.sr_tail else tail_rows(
                    self.model, self.hamiltonian, result.samples.bits, result.stats.mean, lr, cfg.optim.sr_tail,
                    log_psi_bits=result.log_psi, missing=1.0 - result.samples.kept_mass)
                d, self.sr_info = sr_direction(self.model, result.samples.bits, weights.to(device),
                                               flat_grad(self.model), self.sr, sr_step, lr, tail,
                                               previous=self._previous_direction(device))
                if cfg.optim.sr_max_leak is not None or cfg.optim.sr_max_distance is not None:
                    fitted = result.samples.bits if tail is None else torch.cat([result.samples.bits, tail.bits])
                    before = result.log_psi if tail is None else torch.cat([result.log_psi.to(torch.complex128),
                                                                            tail.log_psi])  # the loss's, the search's
                    checked = limit_step(self.model, fitted, d, lr, cfg.optim.sr_max_leak, cfg.optim.sr_max_distance,
                                         before)
                    d = checked.direction
                    self.sr_info.update(leak=checked.leak, leak_halvings=checked.halvings, distance=checked.distance,
                                        metric_step=self.sr_info["metric_step"] / 2 ** checked.halvings,
                                        leak_evaluations=checked.evaluations)
                set_flat_grad(self.model, d)
                if self.sr.momentum:
                    self.sr_previous = d.detach()  # set_flat_grad copied it into the gradients
        self.t_backward, self.t_optimizer, self.lr_used = optimisation_step(
            result.loss, opts[index], scheds[index], cfg.optim.grad_clip, device,
            backward=self.manual_backward, clip=lambda opt, value: self.clip_gradients(opt, value, "norm"),
            precondition=precondition)
        for other, sched in enumerate(scheds):
            if other != index:  # every schedule follows the step count, the idle optimiser's too
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=r".*lr_scheduler.step\(\)` before `optimizer.step")
                    sched.step()
        self.last = result

    def _keep_if_lowest(self, step: int, result: StepResult) -> None:
        """`--final-weights lowest`: copy the weights this step's energy was measured with when it is the lowest
        so far (`StopMonitor.is_new_lowest`; `StopMonitor.update` records the step and energy after it). The copy
        stays on the run's device (no host transfer on the step's path)."""
        if self.cfg.stop.final_weights == "lowest" and self.stopping.is_new_lowest(result.stats.mean,
                                                                                  self.cfg.temperature(step)):
            self.lowest_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _previous_direction(self, device: torch.device) -> torch.Tensor | None:
        """SPRING's d_prev on the run's device; None when momentum is off or no SR step was taken yet (a run
        continued with --init-from starts SPRING afresh: a checkpoint's direction belongs to its own run)."""
        if not self.sr.momentum or self.sr_previous is None:
            return None
        self.sr_previous = self.sr_previous.to(device)
        return self.sr_previous

    def finish_step(self, t_step: float) -> StepRecord:
        """The step's record and the run totals, after the optimiser step; `t_step` is the real time since the
        previous step ended (seconds)."""
        r, cfg, p = self.last, self.cfg, self.problem
        samples, stats = r.samples, r.stats
        s_f = samples.n_unique / p.sector.size
        s_f_full = samples.n_unique / 2.0 ** p.n_qubits
        s_f_nominal = self.nominal_fraction  # the cap vmc_step was given: cfg.sampling.unique
        fl = flop_model.step_flops(cfg.model, p.sector, samples.rows_per_position, r.n_evals, samples.n_unique,
                                   self.hamiltonian.gemm_columns, r.le_rows)
        if self.sr_info:
            info = self.sr_info  # tail rows: stacked onto the Jacobian, plus the search's forward passes
            fl["natural_gradient"] = (flop_model.natural_gradient_flops(cfg.model, p.sector, info["rows"]
                                                                        + info["tail_rows"], self.model.n_params)
                                      + flop_model.forward_flops(cfg.model, p.sector, info["tail_evaluations"]
                                                                 + info.get("leak_evaluations", 0)))
            fl["total"] += fl["natural_gradient"]
        t_vmc = r.t_sampling + r.t_local_energy + r.t_loss + self.t_backward + self.t_optimizer
        t = self.totals
        self.totals = Totals(n_samples=self.schedule.update(t.n_samples, samples.n_unique),
                             d_prime=t.d_prime + s_f, d_prime_full=t.d_prime_full + s_f_full,
                             d_prime_nominal=t.d_prime_nominal + s_f_nominal,
                             flops_total=t.flops_total + fl["total"], wall_s=t.wall_s + t_step,
                             framework_s=t.framework_s + max(t_step - t_vmc, 0.0))
        step, tot = self.global_step - 1, self.totals
        vscore = stats.vscore(p.sector.n_electrons, p.e_inf)
        self.stop_now = self.stopping.update(step, stats.mean, vscore, cfg.temperature(step), tot.wall_s,
                                             tot.wall_s / (step + 1), energy_err=stats.error)
        return StepRecord(step=step, energy=stats.mean, energy_err=stats.error, variance=stats.variance,
                          vscore=vscore, e_fci=p.references.e_fci,
                          e_ref=self.reference.energy if self.reference else None,
                          ref_kind=self.reference.kind if self.reference else None,
                          n_unique=samples.n_unique, n_samples=samples.n_samples, n_requested=samples.n_requested,
                          kept_mass=samples.kept_mass, tail_correction=None if r.tail is None else r.tail.correction,
                          s_f=s_f, d_prime=tot.d_prime, s_f_full=s_f_full, d_prime_full=tot.d_prime_full,
                          s_f_nominal=s_f_nominal, d_prime_nominal=tot.d_prime_nominal,
                          lr=self.lr_used, temperature=cfg.temperature(step), wall_s=tot.wall_s, t_step=t_step,
                          t_sampling=r.t_sampling, t_local_energy=r.t_local_energy,
                          t_backward=r.t_loss + self.t_backward + self.t_optimizer,
                          t_framework=max(t_step - t_vmc, 0.0), n_evals=r.n_evals, n_connected=r.n_connected,
                          local_energy=r.local_energy_mode,
                          flops_step=fl, flops_total=tot.flops_total, sr_shift=self.sr_info.get("shift"),
                          sr_metric_step=self.sr_info.get("metric_step"),
                          sr_tail_rows=self.sr_info.get("tail_rows") if cfg.optim.sr_tail else None,
                          sr_leak=self.sr_info.get("leak"), sr_leak_halvings=self.sr_info.get("leak_halvings"),
                          sr_distance=self.sr_info.get("distance"))


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


