"""The grouped training configuration: flat files and flags, coercion from type hints, help, suggestions."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nqs.cli.train import build_parser
from nqs.errors import UserError
from nqs.training.config import FIELDS, GROUPS, RESULT_NEUTRAL, TrainConfig, load_yaml, resolve

OLD_CONFIG = Path(__file__).parent / "data" / "run_v1" / "config.yaml"  # a config.yaml of the earlier code


def test_a_config_yaml_of_the_earlier_code_loads_and_round_trips():
    cfg = resolve([("old", load_yaml(OLD_CONFIG))])
    assert cfg.molecule.mol == "LiH" and cfg.optim.steps == 200 and cfg.model.ansatz == "transformer"
    assert cfg.sampling.unique_window == (1000, 2000)
    again = TrainConfig.from_flat(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg


def test_flat_names_route_to_their_groups():
    cfg = TrainConfig().updated(d_model=32, lr=3e-3, unique=500, seed=4, frozen_core=1)
    assert (cfg.model.d_model, cfg.optim.lr, cfg.sampling.unique, cfg.run.seed) == (32, 3e-3, 500, 4)
    assert cfg.molecule.frozen_core == 1 and cfg.flat()["d_model"] == 32
    assert TrainConfig().model.d_model == 16  # frozen: the default is untouched


@pytest.mark.parametrize("key,value,kind", [("steps", "ten", "int"), ("steps", 2.5, "int"), ("lr", True, "float"),
                                            ("symmetry", 3, "bool"), ("unique_window", [1], "tuple")])
def test_values_are_checked_against_the_type_hints(key, value, kind):
    with pytest.raises(UserError, match=f"{key} = .* is not a valid {kind}"):
        resolve([("f.yaml", {key: value})])


def test_coercion_of_strings_and_optionals():
    cfg = resolve([("flags", {"steps": "30", "lr": "1e-3", "grad_clip": None, "unique_window": ["10", "20"],
                              "symmetry": "false"})])
    assert cfg.optim.steps == 30 and cfg.optim.lr == 1e-3 and cfg.optim.grad_clip is None
    assert cfg.sampling.unique_window == (10, 20) and cfg.molecule.symmetry is False
    with pytest.raises(UserError, match="steps cannot be null"):
        resolve([("f.yaml", {"steps": None})])


def test_unknown_keys_get_close_suggestions():
    with pytest.raises(UserError, match=r"unknown option 'd_modle' \(did you mean d_model"):
        resolve([("f.yaml", {"d_modle": 8})])
    with pytest.raises(UserError, match=r"unknown option 'learning_rate'$"):
        resolve([("f.yaml", {"learning_rate": 0.1})])


def test_geometry_without_mol_is_a_custom_molecule_with_its_label():
    cfg = resolve([("flags", {"geometry": "H 0 0 0; H 0 0 0.74", "name": "H2"})])
    assert cfg.molecule.mol is None and cfg.label == "H2"
    assert resolve([("flags", {"geometry": "H 0 0 0; H 0 0 0.74"})]).label == "custom"
    assert TrainConfig().label == "LiH"


def test_result_neutral_options_are_declared_on_the_fields():
    assert {"out", "progress", "threads", "checkpoint_every", "eval_chunk", "local_energy_memory"} <= RESULT_NEUTRAL
    assert not {"lr", "steps", "seed", "unique", "samples", "d_model", "ansatz", "mol"} & RESULT_NEUTRAL
    a, b = TrainConfig(), TrainConfig().updated(threads=2, out="x")
    assert a.result_fields() == b.result_fields() and a != b
    # the semi-stochastic estimator's settings change a result only when it is used (runs made before its
    # defaults changed stay the same configuration for sweeps that resume them)
    c = TrainConfig().updated(semi_threshold=0.01, semi_draws=8)
    assert c.result_fields() == a.result_fields()
    semi = TrainConfig().updated(local_energy="semi-stochastic")
    assert semi.result_fields() != semi.updated(semi_threshold=0.01).result_fields()


def test_help_shows_each_options_text_with_units():
    text = build_parser().format_help()
    for name, (_, f) in FIELDS.items():
        assert "--" + name.replace("_", "-") in text
        assert f.metadata["help"], name
    assert "(Hartree)" in " ".join(text.split()) and "(Å)" in text


def test_invalid_values_are_caught_before_any_work():
    for values, needle in [({"ansatz": "lstm"}, "unknown ansatz"), ({"d_model": 10, "heads": 3}, "divisible"),
                           ({"anneal_fraction": 0}, "anneal_fraction"), ({"device": "tpu"}, "unknown device"),
                           ({"steps": 0}, "steps must be at least 1"),
                           ({"local_energy_memory": 0}, "local_energy_memory must be a positive")]:
        with pytest.raises(UserError, match=needle):
            TrainConfig().updated(**values)


def test_the_guides_option_table_lists_every_option_in_its_group():
    """docs/guide.md, "Configuration": one row per group, the options in the dataclass's order."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    for group, cls in GROUPS.items():
        row = f"| {group} | `{', '.join(f.name for f in dataclasses.fields(cls))}` |"
        assert row in guide, f"docs/guide.md's row for {group} is out of date: {row}"
