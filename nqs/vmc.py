"""Variational Monte Carlo on count-weighted unique samples: the VMC step, statistics, V-score, the surrogate.

With unique samples x_i of multinomial counts c_i (weights w_i = c_i / sum c), E = sum_i w_i E_loc(x_i) and
grad E = 2 Re sum_i w_i (E_loc(x_i) - E)^* grad log psi(x_i); the surrogate loss below has that gradient.
`vmc_step` is the one VMC step (samples -> local energy -> statistics -> loss) that training, the final
evaluation and the step benchmark all run. A sample stratified by `nqs.sampler.add_tail` (the capped sample
plus a second draw of what the cap dropped) has weights p(x) and n_x / S instead, and `stratified_stats`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from nqs.local_energy import LocalEnergy
from nqs.local_energy_modes import SEMI_STOCHASTIC, LocalEnergyMode, estimate
from nqs.sampler import Samples, add_tail, sample

KEPT_MASS_WARNING = 1e-6  # warn when the unique cap / the draw dropped more probability mass than this


@dataclass(frozen=True)
class Stats:
    """Count-weighted statistics of the local energy (Hartree)."""

    mean: float  # Re E
    error: float  # statistical error of the mean, sqrt(Var / N_s) for the N_s kept multinomial samples
    variance: float  # Var(E_loc) = sum w |E_loc - E|^2
    imag: float  # Im E (zero for the exact estimator up to noise)
    n_samples: float = float("nan")  # N_s behind the weights (the kept samples)
    n_requested: float = float("nan")  # N_s asked of the sampler
    kept_mass: float = float("nan")  # sum of p(x) over the sampled configurations; the error ignores 1 - this

    def vscore(self, n_electrons: int, e_inf: float) -> float:
        """V = N_e Var(E_loc) / (E - E_inf)^2 (Wu et al., Science 2024); E_inf = Tr H / dim of the sector."""
        denom = (self.mean - e_inf) ** 2
        return n_electrons * self.variance / denom if denom > 0 else float("nan")


def weighted_sums(e_loc: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Partial sums that add across ranks: [sum w, sum w Re E, sum w Im E, sum w |E|^2] (float64)."""
    w = weights.to(torch.float64)
    e = e_loc.to(torch.complex128)
    return torch.stack([w.sum(), (w * e.real).sum(), (w * e.imag).sum(), (w * e.abs() ** 2).sum()])


def stats_from_sums(sums: torch.Tensor, n_samples: float, n_requested: float = float("nan"),
                    kept_mass: float = float("nan")) -> Stats:
    """Statistics from the all-reduced sums; `n_samples` is the non-unique count N_s behind the weights."""
    w, wr, wi, wabs2 = (float(v) for v in sums)
    mean, imag = wr / w, wi / w
    variance = max(wabs2 / w - mean * mean - imag * imag, 0.0)
    return Stats(mean, math.sqrt(variance / n_samples), variance, imag, n_samples, n_requested, kept_mass)


@dataclass(frozen=True)
class TailEstimate:
    """What a stratified sample's tail measured (energies in Hartree); `to_json` is the summary's `final_tail`."""

    head_mass: float  # P_K, the exact mass of the capped sample K
    head_energy: float  # c, the head's conditional mean of Re E_loc
    n_samples: float  # S, the second draw's N_s
    draws: float  # its draws outside K (expected: the n_tail asked for)
    unique: int  # its distinct configurations outside K
    correction: float  # E^ - c
    error: float  # the standard error of E^ (the head is summed exactly)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _moments(e_loc: torch.Tensor) -> torch.Tensor:
    """(B, 3) float64 [Re E_loc, Im E_loc, |E_loc|^2]."""
    e = e_loc.to(torch.complex128)
    return torch.stack([e.real, e.imag, e.abs() ** 2], dim=1)


def stratified_stats(e_loc: torch.Tensor, samples: Samples, part: slice,
                     ranks: "Ranks") -> tuple[Stats, TailEstimate]:
    """Unbiased statistics of a sample stratified by `nqs.sampler.add_tail`, from this rank's rows `part`.

    The head K is summed with its exact p(x); the tail, from the second draw D of S samples, enters as a control
    variate around the head's mean c = sum_K p E_loc / P_K:

        E = c + sum_{x not in K} p(x) (E_loc(x) - c)
        E^ = c + (1/S) sum_{x in D, x not in K} n_x (E_loc(x) - c)

    E[n_x] = S p(x), so E^ is unbiased for any c that K fixes; around c its variance,
    (1/S) [sum_T p (E_loc - c)^2 - (sum_T p (E_loc - c))^2], is of order (1 - P_K)^2 Var_T / n_tail. The same form
    gives <|E_loc|^2> and so Var(E_loc). e_loc (R,) complex: this rank's rows."""
    t = samples.tail
    head = _fixed_rows(samples, part, e_loc.device)
    w = samples.counts[part].to(e_loc.device) / t.scale  # p(x) on the head, n_x / S on the tail
    f = _moments(e_loc)
    c = ranks.all_reduce((w[head, None] * f[head]).sum(0)) / t.head_mass
    d, wt = f[~head] - c, w[~head]
    sums = ranks.all_reduce(torch.cat([(wt[:, None] * d).sum(0), (wt * d[:, 0] ** 2).sum().view(1),
                                       (wt * t.n_samples).sum().view(1), (~head).sum().view(1).to(torch.float64)]))
    correction, m2 = sums[:3], float(sums[3])
    mean, imag, second = (float(v) for v in c + correction)
    error = math.sqrt(max(m2 - float(correction[0]) ** 2, 0.0) / t.n_samples)
    variance = max(second - mean * mean - imag * imag, 0.0)
    stats = Stats(mean, error, variance, imag, samples.n_samples, samples.n_requested, samples.kept_mass)
    return stats, TailEstimate(t.head_mass, float(c[0]), t.n_samples, float(sums[4]), int(sums[5]),
                               float(correction[0]), error)


def clip_local_energy(e_loc: torch.Tensor, weights: torch.Tensor, mean: float, width: float | None) -> torch.Tensor:
    """Clip Re E_loc to mean ± width * (weighted mean absolute deviation), as FermiNet does; None: no clipping."""
    if width is None:
        return e_loc
    w = weights.to(torch.float64) / weights.sum()
    mad = float((w * (e_loc.real - mean).abs()).sum())
    real = e_loc.real.clamp(mean - width * mad, mean + width * mad)
    return torch.complex(real, e_loc.imag)


def surrogate_loss(log_psi: torch.Tensor, e_loc: torch.Tensor, weights: torch.Tensor, mean: complex) -> torch.Tensor:
    """Real scalar whose gradient is 2 Re sum_i w_i (E_loc,i - E)^* grad log psi_i (w normalised globally).

    log_psi (U,) complex with grad; e_loc (U,) complex128 detached; weights (U,) sum to 1 over all ranks.
    """
    centred = (e_loc - mean).conj().detach().to(log_psi.dtype)
    return 2.0 * (weights.to(log_psi.real.dtype) * (centred * log_psi).real).sum()


# --- the VMC step --------------------------------------------------------------------------------------------
def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Ranks:
    """This process's share of the unique samples and the sum over processes (one process: identity)."""

    rank: int = 0
    world: int = 1
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = _identity


@dataclass(frozen=True)
class StepResult:
    """What one VMC step produced. `loss` is None when no gradient was asked for; times in seconds."""

    stats: Stats
    samples: Samples
    loss: torch.Tensor | None
    n_evals: int  # psi evaluations of the local energy (all ranks)
    n_connected: int  # surviving (sample, x') pairs (all ranks)
    t_sampling: float
    t_local_energy: float
    t_loss: float
    local_energy_mode: str = "exact-dense"  # the estimator as run (`LocalEnergyMode.resolve`)
    le_rows: tuple[int, ...] = ()  # trie nodes per position when the n_evals went through the trie (all ranks)
    log_psi: torch.Tensor | None = None  # (U,) this rank's samples' log ψ, detached, when the loss computed it
    e_loc: torch.Tensor | None = None  # (U,) complex128 this rank's samples' local energies (Hartree)
    tail: TailEstimate | None = None  # what the tail draw measured, when the sample was stratified


def _sync(device: torch.device) -> None:
    """Wait for the device, so that step timings measure the work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fixed_rows(samples: Samples, part: slice, device) -> torch.Tensor:
    """(R,) bool: this rank's rows whose weight is fixed (all of a plain sample; a stratified sample's head)."""
    rows = torch.arange(samples.n_unique, device=device)[part]
    return rows < (samples.tail.n_head if samples.tail is not None else samples.n_unique)


def _twice(first: LocalEnergy, again: LocalEnergy, fixed: torch.Tensor, weights: torch.Tensor,
           ranks: Ranks) -> tuple[LocalEnergy, float]:
    """`first` with the rows `fixed` estimated `again` with independent draws: their mean there, and the variance
    (Hartree^2) its noise adds to the energy through those rows, sum_x w_x^2 Var(mean_x) with
    Var(mean_x) ~ |e1 - e2|^2 / 4. The tail draw's rows are left as they are: its spread holds their noise."""
    values = first.values.clone()
    diff2 = (values[fixed] - again.values).real.to(torch.float64) ** 2
    values[fixed] = (values[fixed] + again.values) / 2
    noise = float(ranks.all_reduce((weights[fixed].to(torch.float64) ** 2 * diff2).sum() / 4))
    rows = tuple(a + b for a, b in zip(first.rows_per_position, again.rows_per_position)) or first.rows_per_position
    return LocalEnergy(values, first.n_evals + again.n_evals, first.n_connected + again.n_connected,
                       first.n_pairs_naive + again.n_pairs_naive, rows), noise


def vmc_step(model, hamiltonian, n_samples: float, max_unique: int, generator: torch.Generator, *,
             temperature: float = 0.0, clip_width: float | None = None, eval_chunk: int = 65536,
             with_loss: bool = True, ranks: Ranks = Ranks(), mode: LocalEnergyMode = LocalEnergyMode(),
             tail_draws: int = 0, noise_check: bool = False) -> StepResult:
    """Sample, evaluate E_loc on this rank's share, reduce the statistics and build the surrogate loss.

    Sampling is identical on every rank (same `generator` state); rank r takes unique samples r, r + world, ...
    The loss is that of the free energy F = E - T S (T = `temperature`, Hartree; the local term gains
    T log p(x)) with Re E_loc clipped to mean ± clip_width·MAD when `clip_width` is set; it is multiplied by
    `ranks.world` because DDP averages gradients. `mode` picks the local-energy estimator
    (`nqs.local_energy_modes`); the sampled-space and semi-stochastic ones take log psi of the samples from the
    loss's forward pass (timed with the loss), and, with several ranks, evaluate the whole sample set once more
    (counted in n_evals). The semi-stochastic draws use `generator` after the sampler. Raises FloatingPointError on a
    non-finite energy. With `tail_draws` > 0 and mass dropped by the cap, the sample is stratified
    (`nqs.sampler.add_tail`: a second draw of about that many configurations outside it) and the statistics, the
    weights and so the loss are unbiased (`stratified_stats`). `noise_check` (the final energy): a semi-stochastic
    or heat-bath E_loc is estimated twice with independent draws and averaged, and the error bar gains the
    noise this leaves on the configurations summed with fixed weights (`_twice`)."""
    device = next(model.parameters()).device
    mode = mode.resolve(model)
    t0 = time.perf_counter()
    samples = add_tail(model, sample(model, n_samples, max_unique, generator), tail_draws, generator)
    _sync(device)
    t1 = time.perf_counter()
    part = slice(ranks.rank, None, ranks.world)
    bits = samples.bits[part]
    weights = (samples.counts / samples.counts.sum())[part].to(device)
    log_psi, t_forward, extra = None, 0.0, {}
    if mode.reuses_sample_log_psi:
        with torch.set_grad_enabled(with_loss and torch.is_grad_enabled()):
            log_psi = model.log_psi(bits)
        if ranks.world > 1:
            with torch.no_grad():
                extra = {"space_bits": samples.bits, "space_log_psi": model.log_psi(samples.bits)}
        _sync(device)
        t_forward = time.perf_counter() - t1
    t1b = time.perf_counter()
    le = estimate(model, hamiltonian, bits, mode, generator, eval_chunk, log_psi_bits=log_psi, weights=weights, **extra)
    noise = None
    if noise_check and mode.name in SEMI_STOCHASTIC:
        fixed = _fixed_rows(samples, part, weights.device)
        again = estimate(model, hamiltonian, bits[fixed], mode, generator, eval_chunk, weights=weights[fixed],
                         log_psi_bits=None if log_psi is None else log_psi[fixed], **extra)
        le, noise = _twice(le, again, fixed, weights, ranks)
    n_evals = le.n_evals + (samples.n_unique if extra else 0) + (0 if with_loss or log_psi is None else bits.shape[0])
    counts = ranks.all_reduce(torch.tensor([n_evals, le.n_connected, *le.rows_per_position], dtype=torch.float64,
                                           device=device))
    tail = None
    if samples.tail is None:
        sums = ranks.all_reduce(weighted_sums(le.values, weights))
        stats = stats_from_sums(sums, samples.n_samples, samples.n_requested, samples.kept_mass)
    else:
        stats, tail = stratified_stats(le.values, samples, part, ranks)
    if noise is not None:
        stats = dataclasses.replace(stats, error=math.sqrt(stats.error ** 2 + noise))
    _sync(device)
    t2 = time.perf_counter()
    t_local_energy = t2 - t1b + (0.0 if with_loss else t_forward)
    if not math.isfinite(stats.mean) or not math.isfinite(stats.variance):
        raise FloatingPointError(f"non-finite energy {stats.mean}")
    loss = None
    if with_loss:
        e_loc = clip_local_energy(le.values, weights, stats.mean, clip_width)
        if log_psi is None:
            log_psi = model.log_psi(bits)
        mean = complex(stats.mean, stats.imag)
        if temperature > 0:
            log_p = 2.0 * log_psi.real.detach().to(torch.float64)
            e_loc = e_loc + temperature * log_p
            mean = mean + temperature * float(ranks.all_reduce((weights * log_p).sum()))
        loss = surrogate_loss(log_psi, e_loc, weights, mean) * ranks.world
    t_loss = time.perf_counter() - t2 + (t_forward if with_loss else 0.0)
    rows = tuple(int(c) for c in counts[2:].tolist())
    return StepResult(stats, samples, loss, int(counts[0]), int(counts[1]), t1 - t0, t_local_energy, t_loss,
                      mode.name, rows, None if log_psi is None else log_psi.detach(), le.values, tail)
