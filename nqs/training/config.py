"""The one resolved training configuration: defaults < preset / --config YAML < command-line flags.

Every field is settable from YAML under the same name (dashes or underscores); an unknown key or a value of
the wrong type is a `UserError`. The resolved config is written to the run directory as config.yaml.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from nqs.errors import UserError
from nqs.models import ANSATZE, ModelConfig
from nqs.sampler import SCHEDULES, SampleSchedule


@dataclass(frozen=True)
class TrainConfig:
    # molecule
    mol: str | None = "LiH"
    geometry: str | None = None
    basis: str | None = None
    charge: int | None = None
    spin: int | None = None
    frozen_core: int = 0
    active_orbitals: int | None = None
    symmetry: bool = True
    fci_max_dets: float = 1e7
    # ansatz
    ansatz: str = "transformer"
    d_model: int = 16
    heads: int = 2
    layers: int = 1
    d_ff: int = 64
    hidden: int = 64
    made_layers: int = 2
    phase_hidden: int = 64
    phase_layers: int = 3
    dtype: str = "float32"
    # sampling
    samples: float = 1e12  # non-unique N_s per step (constant schedule; the end value of geometric)
    samples_start: float = 1e2  # geometric / adaptive lower end
    sample_schedule: str = "constant"
    unique: int = 2000  # cap B on unique samples per step
    unique_window: tuple[int, int] = (1000, 2000)
    final_samples: float = 1e12  # fresh sample for the final energy
    final_unique: int = 20000
    # optimisation
    steps: int = 1200
    lr: float = 1e-2
    lr_final: float = 1e-3  # cosine decay from lr to lr_final after warm-up
    warmup: int = 20
    phase_lr_scale: float = 1.0  # the phase network's learning rate relative to lr
    # variational annealing (Hibat-Allah et al. 2021): minimise E - T S[p], T falling linearly from anneal_t0
    # (Hartree) to 0 at anneal_fraction of the steps; keeps the modulus from collapsing onto the Hartree-Fock
    # determinant before the phase network has found the signs of the excitations
    anneal_t0: float = 0.5
    anneal_fraction: float = 0.5
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # gradient-norm clipping; null: off
    clip_local_energy: float | None = None  # clip Re E_loc to mean ± k * MAD; null: off
    eval_chunk: int = 65536
    # run
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp
    threads: int = 1  # CPU threads (torch and PySCF) per process; 0: all cores. One is as fast for the small
    # default models and immune to the OpenMP stalls that slow two threads 30x when another process holds a core
    out: str | None = None
    init_from: str | None = None  # checkpoint whose model weights start this run (warm start; same sizes)
    checkpoint_every: int = 50
    progress: bool = True

    def model_config(self) -> ModelConfig:
        return ModelConfig(ansatz=self.ansatz, d_model=self.d_model, heads=self.heads, layers=self.layers,
                           d_ff=self.d_ff, hidden=self.hidden, made_layers=self.made_layers,
                           phase_hidden=self.phase_hidden, phase_layers=self.phase_layers)

    def temperature(self, step: int) -> float:
        """Annealing temperature (Hartree) at `step`."""
        return self.anneal_t0 * max(0.0, 1.0 - step / (self.anneal_fraction * self.steps))

    def schedule(self) -> SampleSchedule:
        return SampleSchedule(kind=self.sample_schedule, n_samples=self.samples, n_start=self.samples_start,
                              n_end=self.samples, unique_window=tuple(self.unique_window))

    def validate(self) -> "TrainConfig":
        if self.ansatz not in ANSATZE:
            raise UserError(f"unknown ansatz {self.ansatz!r}: choose one of {', '.join(ANSATZE)}")
        if self.sample_schedule not in SCHEDULES:
            raise UserError(f"unknown sample_schedule {self.sample_schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.threads < 0:
            raise UserError(f"threads must be >= 0 (0: all cores), got {self.threads}")
        for name in ("steps", "unique", "final_unique", "devices", "num_nodes", "checkpoint_every", "eval_chunk"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.samples >= 1 and self.final_samples >= 1 and 1 <= self.samples_start <= self.samples):
            raise UserError("samples and final_samples must be >= 1, and 1 <= samples_start <= samples")
        if not (self.anneal_t0 >= 0 and 0 < self.anneal_fraction <= 1):
            raise UserError("anneal_t0 must be >= 0 and anneal_fraction in (0, 1]")
        if not (self.lr > 0 and self.lr_final > 0 and self.warmup >= 0):
            raise UserError("lr and lr_final must be positive and warmup non-negative")
        if self.strategy not in ("auto", "ddp"):
            raise UserError(f"strategy must be auto or ddp, got {self.strategy!r}")
        self.model_config()  # sizes are checked when the model is built
        self.schedule()
        return self


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _coerce(name: str, value, source: str):
    """Check a YAML/flag value against the field's annotated type."""
    if value is None:
        return None
    kind = _FIELDS[name].type
    try:
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind.startswith("tuple"):
            lo, hi = value
            return int(lo), int(hi)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {name} = {value!r} is not a valid {kind}") from None


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of option: value")
    return data


def resolve(layers: list[tuple[str, dict]]) -> TrainConfig:
    """Merge (source, mapping) layers in order, later winning; unknown keys are errors naming the source."""
    values: dict = {}
    for source, mapping in layers:
        for key, value in mapping.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                close = [f for f in _FIELDS if f.startswith(name[:3])]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise UserError(f"{source}: unknown option '{key}'{hint}")
            values[name] = _coerce(name, value, source)
    if values.get("geometry") is not None and "mol" not in values:
        values["mol"] = None
    return TrainConfig(**values).validate()


def to_yaml(cfg: TrainConfig) -> str:
    data = dataclasses.asdict(cfg)
    data["unique_window"] = list(cfg.unique_window)
    return yaml.safe_dump(data, sort_keys=False)
