"""The one resolved training configuration: defaults < preset / --config YAML < command-line flags.

`TrainConfig` groups frozen dataclasses — molecule, model (`nqs.models.ModelConfig`), sampling, optim, stop, run
(`nqs.training.config_groups`) — whose field metadata carries the help text (with units) and whether the field
changes a run's result. Files and flags are flat: every field name is unique across the groups, so `d_model: 32`
in YAML and `--d-model 32` on the command line name the same field. Values are coerced from the fields' type
hints; an unknown key or a value of the wrong type is a `UserError` with a suggestion. The resolved config is
written to the run directory as flat config.yaml, and the config.yaml files of earlier versions load unchanged.
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
from nqs.problem import CONNECTIONS
from nqs.references import parse_references
from nqs.sampler import SCHEDULES, SampleSchedule
from nqs.training import schedules
from nqs.training.config_groups import (FINAL_WEIGHTS, ORBITAL_CHOICES, MoleculeConfig, OptimConfig, RunConfig,
                                        SamplingConfig, StopConfig)


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
