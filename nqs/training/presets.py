"""Named configuration presets: the YAML files of `nqs/presets/`, shipped inside the package.

A preset is a flat mapping of `nqs-train` options (the same keys as `--config FILE.yaml`), applied before a
config file and the flags. Read with `importlib.resources`, so presets work from a wheel install as well as
from a source checkout; the library reads them here and never through the command-line modules.
"""
from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

import yaml

from nqs.errors import UserError

SUFFIX = ".yaml"


def presets_dir() -> Traversable:
    """The package folder of preset files (`nqs/presets/`)."""
    return files("nqs") / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted (e.g. ['large', 'medium', 'reference', 'small'])."""
    folder = presets_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.is_file())


def load_preset(name: str) -> dict:
    """The options of preset `name` as a mapping; UserError naming the choices for an unknown name."""
    names = preset_names()
    if name not in names:
        raise UserError(f"unknown preset '{name}': choose one of {', '.join(names) or '(none installed)'}")
    resource = presets_dir() / f"{name}{SUFFIX}"
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"preset file {resource} is not valid YAML: {str(exc).splitlines()[0]}; "
                        f"reinstall the package") from None
    if not isinstance(data, dict):
        raise UserError(f"preset file {resource} must be a mapping of option: value; reinstall the package")
    return data
