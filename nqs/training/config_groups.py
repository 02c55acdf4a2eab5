"""The option groups of `nqs.training.config.TrainConfig` (the model's is `nqs.models.ModelConfig`): frozen
dataclasses whose fields carry their help text (with units), whether they change a run's result, and when they
are used (`nqs.options.option`)."""
from __future__ import annotations

from dataclasses import dataclass

from nqs.local_energy_modes import SEMI_STOCHASTIC
from nqs.options import option


ORBITAL_CHOICES = ("canonical", "split")


@dataclass(frozen=True)
class MoleculeConfig:
    """Which Hamiltonian: a catalogue molecule or a custom geometry, and the orbital space."""

    mol: str | None = option("LiH", "catalogue molecule, e.g. LiH, N2 (one TOML file each in nqs/hamiltonians/)")
    name: str | None = option(None, "label of a custom geometry in the run record (default 'custom')")
    geometry: str | None = option(None, 'custom geometry "H 0 0 0; H 0 0 0.74" (Å) or an .xyz file')
    basis: str | None = option(None, "basis set (default: the catalogue's, else sto-3g)")
    charge: int | None = option(None, "total charge (e)")
    spin: int | None = option(None, "2S = N_alpha - N_beta")
    frozen_core: int = option(0, "freeze this many lowest doubly occupied orbitals")
    active_orbitals: int | None = option(None, "keep this many orbitals above the frozen core")
    symmetry: bool = option(True, "point-group symmetry-adapted orbitals")
    orbitals: str = option("canonical", "active orbitals: canonical (the SCF's, by energy) | split (the occupied and "
                           "the virtual ones Boys-localized apart, each block ordered along the molecule: the HF "
                           "determinant, CISD and CCSD states and every energy unchanged, their amplitudes local; "
                           "nqs.orbitals.localize)")
    fci_max_dets: float = option(1e7, "skip FCI above this many determinants in the sector")
    spacing: float | None = option(None, "hydrogen chains (mol H4 ... H50): the H-H distance in Å (default 1.0)")
    references: str = option("auto", "reference energies: auto, all, or a comma list of hf, mp2, ccsd, ccsd_t, fci, "
                             "dmrg (docs/guide.md, References)", affects_result=False)
    dmrg_max_bond: int = option(250, "DMRG's largest bond dimension M", affects_result=False)


@dataclass(frozen=True)
class SamplingConfig:
    """How many samples each step draws, and the final energy's sample."""

    samples: float = option(1e12, "non-unique samples N_s per step (constant schedule; end value of geometric)")
    samples_start: float = option(1e2, "lower end of N_s for the geometric and adaptive schedules")
    sample_schedule: str = option("constant", "constant | geometric (samples_start -> samples at 90%% of the "
                                  "steps) | adaptive (N_s follows unique_window)")
    unique: int = option(2000, "cap B on unique samples per step (the most frequent are kept)")
    unique_window: tuple[int, int] = option((1000, 2000), "adaptive schedule: keep the unique count in [LO, HI]")
    tail: int = option(0, "expected draws per step of a second sample outside the capped one, which makes the "
                       "step's energy unbiased and its gradient nearly so (a stratified step; docs/guide.md); 0: off")
    final_samples: float = option(1e12, "N_s of the fresh sample behind the final energy")
    final_unique: int = option(20000, "unique cap of the final energy's sample")
    final_tail: int = option(4096, "expected draws of an independent second sample that estimates the part of "
                             "the final energy the unique cap dropped (unbiased; docs/guide.md); 0 leaves that "
                             "part out, and the energy is then biased by it")
    final_local_energy: str = option("exact", "the final energy's local energy: exact, or as-trained (the "
                                     "training estimator, semi-stochastic or heat-bath: unbiased, taken twice "
                                     "and averaged, its noise in the error bar; for sizes where the exact one is "
                                     "too slow, e.g. H32)")


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser, its schedules and the loss."""

    steps: int = option(1200, "optimisation steps (the most; a stopping rule may end the run earlier)")
    optimizer: str = option("adam", "adam (AdamW) | sr (stochastic reconfiguration, minimum-step form; one "
                            "process) | adam+sr (Adam until sr_from, then SR)")
    lr: float = option(1e-2, "peak learning rate")
    lr_final: float = option(1e-3, "learning rate at the end of the decay")
    lr_schedule: str = option("cosine", "cosine (warm-up, cosine decay to lr_final at the last step) | wsd "
                              "(warm-up, constant, linear decay to lr_final over the last `decay` steps)")
    decay: float = option(0.2, "wsd: the final decay, steps (>= 1) or a fraction of the steps (< 1)")
    warmup: int = option(20, "linear learning-rate warm-up, steps")
    phase_lr_scale: float = option(1.0, "adam: the phase network's learning rate relative to lr")
    # variational annealing (Hibat-Allah et al. 2021): minimise E - T S[p], T falling linearly to 0; keeps the
    # modulus from collapsing onto the Hartree-Fock determinant before the phase network has found the signs
    anneal_t0: float = option(0.5, "initial annealing temperature T0 (Hartree) of F = E - T S")
    anneal_fraction: float = option(0.5, "T reaches 0 at this fraction of the steps (unless anneal_steps)")
    anneal_steps: int | None = option(None, "T reaches 0 after this many steps, whatever the run's length")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float | None = option(1.0, "adam: gradient-norm clipping (null: off)")
    sr_lr: float | None = option(None, "sr: peak learning rate of the SR steps (null: lr)")
    sr_from: int = option(0, "adam+sr: the step at which SR takes over from Adam")
    sr_shift: float = option(1e-3, "sr: initial diagonal shift λ of S + λI (falls from sr_from on)")
    sr_shift_final: float = option(1e-4, "sr: the shift falls geometrically to this")
    sr_shift_steps: int = option(500, "sr: ... over this many steps")
    sr_trust: float | None = option(0.1, "sr: the most a step may move in the metric S, lr·√(dᵀSd) (null: off)")
    sr_rows: int = option(512, "sr: unique samples of largest weight whose log ψ gradients form S")
    sr_momentum: float = option(0.0, "sr: SPRING's momentum μ (Goldshmid et al. 2024): each step solves min "
                                "|J d - ε|² + λ|d - μ d_prev|², so directions the sample's rows do not see keep μ "
                                "times the last step's (0: MinSR)")
    sr_tail: int = option(0, "sr: rows for connected configurations outside the sample that an imaginary-time "
                          "step would grow, with log-space targets (nqs.sr_tail; 0: off)")
    sr_max_leak: float | None = option(None, "sr: the most probability a step may move out of the sample and "
                                       "the tail rows (halved until it does not; nqs.sr_leak; null: off)")
    sr_max_distance: float | None = option(None, "sr: the most a step may move in realised Fubini-Study distance "
                                           "over the sample and tail rows, measured after the step (radians; "
                                           "halved until it does not; nqs.sr_leak; null: off)")
    clip_local_energy: float | None = option(None, "clip Re E_loc to mean ± k·MAD (null: off)")
    dtype: str = option("float32", "float32 | float64 parameters and activations")
    eval_chunk: int = option(65536, "configurations per network call in the local energy (memory bound)",
                             affects_result=False)
    local_energy_memory: float = option(1.0, "GiB of candidate pairs one chunk of the local energy's samples may "
                                        "hold (memory bound; nqs.local_energy_modes.selection_rows): more samples "
                                        "than fit are taken in chunks; the energy is unchanged; the exact modes "
                                        "keep up to as much again of the configurations evaluated, so chunks "
                                        "evaluate a shared one once)",
                                        affects_result=False)
    # exact: the prefix trie where the ansatz has an incremental step (N2: 1.9-2.1x faster steps, same energies;
    # docs/benchmarks.md); the cost model fits the trie's executed share (nqs.scaling.cost, network_scale)
    local_energy: str = option("exact", "local-energy estimator: exact-dense | exact (exact-trie for "
                               "transformer/retnet, exact-dense for made) | exact-trie | sampled (connections "
                               "within the step's samples only; biased) | semi-stochastic | heat-bath (the "
                               "semi-stochastic split with the doubles from sorted integrals, never enumerated: "
                               "past ~40 qubits; reads the integrals)")
    connections: str = option("auto", "how E_loc finds each sample's connected x': auto (the Pauli tables up to 62 "
                              "qubits unless the integral path is cheaper there, else the integrals) | pauli | "
                              "integrals (Slater-Condon rules from h1 and (pq|rs); same elements)", affects_result=False)
    semi_threshold: float = option(1e-5, "semi-stochastic, heat-bath: connections outside the sample set with "
                                   "w_x |H_xx'| >= this (Hartree; w_x the sample's weight) are summed exactly, the "
                                   "rest drawn", used_when=("local_energy", SEMI_STOCHASTIC))
    semi_draws: int = option(4, "semi-stochastic, heat-bath: connections drawn per sample from the rest, ∝ |H_xx'|",
                             used_when=("local_energy", SEMI_STOCHASTIC))

    @property
    def sr_start(self) -> int | None:
        """The first step that takes an SR direction: 0 for sr, sr_from for adam+sr, None for adam."""
        return {"adam": None, "sr": 0}.get(self.optimizer, self.sr_from)


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes."""

    seed: int = option(0, "seed of the initial parameters and of every step's sample")
    device: str = option("auto", "auto | cpu | cuda")
    devices: int = option(1, "processes / GPUs per node (DDP when > 1)", affects_result=False)
    num_nodes: int = option(1, "nodes (DDP)", affects_result=False)
    strategy: str = option("auto", "auto | ddp", affects_result=False)
    # One thread is as fast for the small default models and immune to the OpenMP stalls that slow two
    # threads 30x when another process holds a core.
    threads: int = option(1, "CPU threads (torch and PySCF) per process; 0: all cores", affects_result=False)
    out: str | None = option(None, "run directory (default runs/<molecule>-<ansatz>-<timestamp>)",
                             affects_result=False)
    init_from: str | None = option(None, "run directory or .ckpt whose weights start this run (same sizes, or a "
                                   "MADE's and the phase network's hidden layers wider, a MADE's more: "
                                   "nqs.models.widen); with "
                                   "init_state, the fit starts from them (a long fit continued in parts)")
    init_state: str | None = option(None, "fit the network to a quantum-chemistry state before VMC: cisd (the CISD "
                                    "vector, signs included; closed shells; nqs.target_states), ccsd (e^T|HF> up to "
                                    "quadruples, screened; nqs.coupled_cluster), dmrg (the largest determinants of "
                                    "an SZ DMRG ground state; block2; nqs.dmrg.dmrg_state); null: none")
    init_bond: int = option(250, "init_state dmrg: the MPS's largest bond dimension M (non-spin-adapted; H16 at "
                            "250: 131 s on one core)",
                            used_when=("init_state", ("dmrg",)))
    init_cutoff: float = option(1e-5, "init_state dmrg: fit the determinants whose amplitude is at least this in "
                                "magnitude (the weight they hold is in the notes)", used_when=("init_state", ("dmrg",)))
    init_steps: int = option(3000, "init_state: Adam steps of the fit (H10's CISD state: fidelity 0.977 after "
                             "1,000, 0.997 after 3,000, in 36 s on one core; H16's 2,913 determinants: ~0.2 s a step)")
    init_lr: float = option(3e-3, "init_state: Adam learning rate of the fit")
    init_lr_final: float | None = option(None, "init_state: the fit's learning rate falls from init_lr along a cosine "
                                         "to this at its last step (null: constant)")
    init_batch: int = option(4096, "init_state: determinants a fit step reads: the whole target when it has no more, "
                             "else a stratified batch (its init_batch/2 largest, the rest drawn by weight)")
    init_max_time: float | None = option(None, "init_state: the fit's wall-time budget, seconds: it ends at "
                                         "init_steps or here, whichever comes first, and the cosine to "
                                         "init_lr_final runs over the shorter (null: no budget)")
    checkpoint_every: int = option(200, "write checkpoints/last.ckpt every this many steps (a kill -9 loses at most "
                                   "these; each write costs ~10 ms on CPU)", affects_result=False)
    keep_every: int | None = option(None, "also keep checkpoints/step-NNNNNN.ckpt every this many steps, the "
                                    "points a branch can start from (nqs-train --branch-from)", affects_result=False)
    progress: bool = option(True, "show progress (a bar on a terminal, a line every few seconds otherwise)",
                            affects_result=False)


@dataclass(frozen=True)
class StopConfig:
    """When a run ends before `steps` (nqs.training.schedules): convergence or a wall-time budget."""

    stop_window: int | None = option(None, "energy test: steps per window; converged when the last two windows' "
                                     "mean energies differ by < stop_sigma standard errors (null: off)")
    stop_sigma: float = option(2.0, "energy test: the tolerance in standard errors of the windows' means")
    stop_vscore: float | None = option(None, "V-score test: converged when the window's mean V-score is below "
                                       "this (null: off)")
    max_time: float | None = option(None, "training wall-time budget, seconds (wsd: the decay is fitted in)")
    stop_patience: int | None = option(None, "end the run when this many steps have passed since the lowest "
                                       "training energy at T = 0 (e.g. after a divergence; null: off)")
    final_weights: str = option("last", "the weights of the final energy: last (the last step's) | lowest (those "
                                "of the step with the lowest training energy at T = 0, kept in the checkpoint and "
                                "written to checkpoints/lowest.ckpt; the summary names the step)")


FINAL_WEIGHTS = ("last", "lowest")
