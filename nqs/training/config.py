"""The one resolved training configuration: defaults < preset / --config YAML < command-line flags.

`TrainConfig` groups frozen dataclasses — molecule, model (`nqs.models.ModelConfig`), sampling, optim, run —
whose field metadata carries the help text (with units) and whether the field changes a run's result. Files
and flags are flat: every field name is unique across the groups, so `d_model: 32` in YAML and `--d-model 32`
on the command line name the same field. Values are coerced from the fields' type hints; an unknown key or a
value of the wrong type is a `UserError` with a suggestion. The resolved config is written to the run
directory as flat config.yaml, and the config.yaml files of earlier versions load unchanged.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from nqs.errors import UserError
from nqs.local_energy_modes import SEMI_STOCHASTIC, LocalEnergyMode
from nqs.models import ModelConfig
from nqs.options import option
from nqs.problem import CONNECTIONS
from nqs.references import parse_references
from nqs.sampler import SCHEDULES, SampleSchedule
from nqs.training import schedules


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
GROUPS = {"molecule": MoleculeConfig, "model": ModelConfig, "sampling": SamplingConfig, "optim": OptimConfig,
          "stop": StopConfig, "run": RunConfig}


def _index() -> dict[str, tuple[str, dataclasses.Field]]:
    out = {}
    for group, cls in GROUPS.items():
        for f in fields(cls):
            assert f.name not in out, f"option {f.name} defined twice"
            out[f.name] = (group, f)
    return out


FIELDS = _index()  # flat option name -> (group, dataclass field)
HINTS = {name: typing.get_type_hints(GROUPS[group])[name] for name, (group, _) in FIELDS.items()}
RESULT_NEUTRAL = frozenset(n for n, (_, f) in FIELDS.items() if not f.metadata.get("affects_result", True))
USED_WHEN = {n: f.metadata["used_when"] for n, (_, f) in FIELDS.items() if f.metadata.get("used_when")}


@dataclass(frozen=True)
class TrainConfig:
    molecule: MoleculeConfig = field(default_factory=MoleculeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # --- flat views --------------------------------------------------------------------------------------
    def flat(self) -> dict:
        """{option name: value} over all groups."""
        return {name: getattr(getattr(self, group), name) for name, (group, _) in FIELDS.items()}

    @classmethod
    def from_flat(cls, values: dict, source: str = "config") -> "TrainConfig":
        """A validated config from flat {name: value} (names with dashes or underscores; values coerced)."""
        by_group: dict[str, dict] = {g: {} for g in GROUPS}
        for key, value in values.items():
            name = check_name(key, source)
            by_group[FIELDS[name][0]][name] = coerce(name, value, source)
        return cls(**{g: GROUPS[g](**kw) for g, kw in by_group.items()}).validate()

    def updated(self, **values) -> "TrainConfig":
        """A validated copy with the given flat options changed."""
        return TrainConfig.from_flat({**self.flat(), **values}, source="update")

    def to_yaml(self) -> str:
        data = self.flat()
        data["unique_window"] = list(data["unique_window"])
        return yaml.safe_dump(data, sort_keys=False)

    def result_fields(self) -> dict:
        """The options that change a run's result: not RESULT_NEUTRAL, and those with `used_when` only when the
        option they depend on has its value (e.g. the semi-stochastic threshold only with that estimator)."""
        flat = self.flat()
        return {k: v for k, v in flat.items() if k not in RESULT_NEUTRAL
                and (USED_WHEN.get(k) is None or flat[USED_WHEN[k][0]] in USED_WHEN[k][1])}

    # --- derived -----------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The molecule's name in run records: the catalogue name, else `name`, else 'custom'."""
        m = self.molecule
        return m.mol if m.geometry is None and m.mol else (m.name or "custom")

    def temperature(self, step: int) -> float:
        """Annealing temperature (Hartree) at `step`."""
        return schedules.temperature(self.optim, step)

    @property
    def connections_used(self) -> str:
        """The connections asked of the problem: `integrals` for the heat-bath estimator, else as configured."""
        return "integrals" if self.optim.local_energy == "heat-bath" else self.optim.connections

    def final_local_energy_mode(self) -> LocalEnergyMode:
        """The final energy's estimator: the exact one unless final_local_energy is as-trained."""
        as_trained = self.sampling.final_local_energy == "as-trained"
        chunk = int(self.optim.local_energy_memory * 2**30)
        return self.local_energy_mode() if as_trained else LocalEnergyMode(chunk_bytes=chunk)

    def local_energy_mode(self) -> LocalEnergyMode:
        o = self.optim
        return LocalEnergyMode(o.local_energy, o.semi_threshold, o.semi_draws, int(o.local_energy_memory * 2**30))

    def schedule(self) -> SampleSchedule:
        s = self.sampling
        return SampleSchedule(kind=s.sample_schedule, n_samples=s.samples, n_start=s.samples_start,
                              n_end=s.samples, unique_window=tuple(s.unique_window))

    def validate(self) -> "TrainConfig":
        s, o, r = self.sampling, self.optim, self.run
        self.model.validate()
        parse_references(self.molecule.references)  # a bad name fails before any work
        if self.molecule.orbitals not in ORBITAL_CHOICES:
            raise UserError(f"unknown orbitals {self.molecule.orbitals!r}: choose one of {', '.join(ORBITAL_CHOICES)}")
        if s.sample_schedule not in SCHEDULES:
            raise UserError(f"unknown sample_schedule {s.sample_schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if o.dtype not in ("float32", "float64"):
            raise UserError(f"dtype must be float32 or float64, got {o.dtype!r}")
        if r.threads < 0:
            raise UserError(f"threads must be >= 0 (0: all cores), got {r.threads}")
        if r.init_state is not None:
            from nqs.target_states import STATES
            if r.init_state not in STATES:
                raise UserError(f"unknown init_state {r.init_state!r}: choose one of {', '.join(STATES)}")
            if r.init_steps < 1 or r.init_lr <= 0 or (r.init_lr_final is not None and r.init_lr_final < 0):
                raise UserError("init_steps must be at least 1, init_lr positive and init_lr_final at least 0")
            if r.init_batch < 2 or (r.init_max_time is not None and r.init_max_time <= 0):
                raise UserError(f"init_batch must be at least 2 and init_max_time positive, got {r.init_batch} and "
                                f"{r.init_max_time}")
            if r.init_state == "dmrg" and (r.init_bond < 4 or not 0 < r.init_cutoff < 1):
                raise UserError(f"init_bond must be at least 4 and init_cutoff in (0, 1), got {r.init_bond} and "
                                f"{r.init_cutoff}")
        flat = self.flat()
        for name in ("steps", "unique", "final_unique", "devices", "num_nodes", "checkpoint_every", "eval_chunk"):
            if flat[name] < 1:
                raise UserError(f"{name} must be at least 1, got {flat[name]}")
        if not o.local_energy_memory > 0:
            raise UserError(f"local_energy_memory must be a positive number of GiB, got {o.local_energy_memory}")
        if s.final_tail < 0 or s.tail < 0:
            raise UserError(f"tail and final_tail must be >= 0, got {s.tail} and {s.final_tail}")
        if not (s.samples >= 1 and s.final_samples >= 1 and 1 <= s.samples_start <= s.samples):
            raise UserError("samples and final_samples must be >= 1, and 1 <= samples_start <= samples")
        if not (o.anneal_t0 >= 0 and 0 < o.anneal_fraction <= 1):
            raise UserError("anneal_t0 must be >= 0 and anneal_fraction in (0, 1]")
        if not (o.lr > 0 and o.lr_final > 0 and o.warmup >= 0):
            raise UserError("lr and lr_final must be positive and warmup non-negative")
        if o.optimizer not in ("adam", "sr", "adam+sr"):
            raise UserError(f"unknown optimizer {o.optimizer!r}: choose adam, sr or adam+sr")
        if o.sr_from < 0 or (o.sr_lr is not None and o.sr_lr <= 0):
            raise UserError("sr_from must be >= 0 and sr_lr positive")
        if o.lr_schedule not in schedules.LR_SCHEDULES:
            raise UserError(f"unknown lr_schedule {o.lr_schedule!r}: choose one of {', '.join(schedules.LR_SCHEDULES)}")
        if not (o.decay > 0 and (o.anneal_steps is None or o.anneal_steps >= 1)):
            raise UserError("decay must be positive and anneal_steps at least 1")
        if o.lr_schedule == "wsd" and schedules.decay_length(o) + o.warmup > o.steps:
            raise UserError(f"warmup {o.warmup} + decay {schedules.decay_length(o)} steps exceed steps {o.steps}")
        if not (o.sr_shift > 0 and o.sr_shift_final > 0 and o.sr_shift_steps >= 1 and o.sr_rows >= 1
                and o.sr_tail >= 0 and 0 <= o.sr_momentum < 1 and (o.sr_max_leak is None or o.sr_max_leak >= 0)
                and (o.sr_max_distance is None or o.sr_max_distance > 0)):
            raise UserError("sr_shift and sr_shift_final must be positive, sr_shift_steps and sr_rows at least 1, "
                            "sr_tail and sr_max_leak at least 0, sr_momentum in [0, 1), sr_max_distance positive")
        if o.optimizer != "adam" and (r.devices * r.num_nodes > 1 or r.strategy == "ddp"):
            raise UserError("--optimizer sr runs in one process (the Jacobian rows are not split across ranks): "
                            "use --devices 1 --num-nodes 1, or --optimizer adam for DDP")
        st = self.stop
        if (st.stop_window is not None and st.stop_window < 2) or st.stop_sigma <= 0 or (
                st.max_time is not None and st.max_time <= 0):
            raise UserError("stop_window must be at least 2, stop_sigma and max_time positive")
        if st.stop_patience is not None and st.stop_patience < 1:
            raise UserError(f"stop_patience must be at least 1 step, got {st.stop_patience}")
        if st.final_weights not in FINAL_WEIGHTS:
            raise UserError(f"unknown final_weights {st.final_weights!r}: choose one of {', '.join(FINAL_WEIGHTS)}")
        if r.strategy not in ("auto", "ddp"):
            raise UserError(f"strategy must be auto or ddp, got {r.strategy!r}")
        if r.device not in ("auto", "cpu") and not r.device.startswith("cuda"):
            raise UserError(f"unknown device '{r.device}': use auto, cpu or cuda")
        self.local_energy_mode()  # validates the mode's name, threshold and draws
        if o.connections not in CONNECTIONS:
            raise UserError(f"unknown connections {o.connections!r}: choose one of {', '.join(CONNECTIONS)}")
        if s.final_local_energy not in ("exact", "as-trained"):
            raise UserError(f"final_local_energy must be exact or as-trained, got {s.final_local_energy!r}")
        if s.final_local_energy == "as-trained" and o.local_energy not in SEMI_STOCHASTIC:
            raise UserError("--final-local-energy as-trained needs an unbiased estimator other than the exact one: "
                            "--local-energy semi-stochastic or heat-bath")
        if o.local_energy == "heat-bath" and o.connections == "pauli":
            raise UserError("--local-energy heat-bath reads the integrals: use --connections integrals or auto")
        self.schedule()
        return self


def check_name(key: str, source: str) -> str:
    """The option name of a YAML key or flag; an unknown one is a UserError with the closest names."""
    name = str(key).replace("-", "_")
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"{source}: unknown option '{key}'{hint}")
    return name


def coerce(name: str, value, source: str):
    """`value` checked against and converted to the option's type hint (None allowed where Optional)."""
    hint = HINTS[name]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise UserError(f"{source}: {name} cannot be null")
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if typing.get_origin(base) is tuple:
            items = tuple(value)
            if len(items) != len(typing.get_args(base)):
                raise TypeError
            return tuple(coerce_item(t, v) for t, v in zip(typing.get_args(base), items))
        if isinstance(value, (dict, list)):
            raise TypeError
        return str(value)
    except (TypeError, ValueError):
        kind = getattr(base, "__name__", str(base))
        raise UserError(f"{source}: {name} = {value!r} is not a valid {kind}") from None


def coerce_item(kind: type, value):
    if isinstance(value, bool) or float(value) != kind(float(value)):
        raise TypeError
    return kind(float(value))


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of option: value")
    return data


def resolve(layers: list[tuple[str, dict]]) -> TrainConfig:
    """Merge (source, mapping) layers in order, later winning; unknown keys are errors naming the source.

    A geometry given without a molecule name in a layer after the defaults means a custom molecule."""
    values: dict = {}
    for source, mapping in layers:
        for key, value in mapping.items():
            name = check_name(key, source)
            values[name] = coerce(name, value, source)
    if values.get("geometry") is not None and "mol" not in values:
        values["mol"] = None
    return TrainConfig.from_flat(values, source="config")
