"""`option(...)`: a dataclass field whose metadata carries its help text and whether it changes a result.

Config dataclasses (`nqs.models.ModelConfig`, the groups of `nqs.training.config.TrainConfig`) declare their
fields with it; `--help` shows the text, sweeps and curves compare only the fields that change a result
(those with `used_when` only when the option they depend on takes its value).
"""
from __future__ import annotations

import dataclasses


def option(default, help: str, affects_result: bool = True, used_when: tuple[str, tuple] | None = None):
    """A frozen-dataclass field with `default` (tuples and scalars only) and its help text (with units).
    `used_when` = (other option, values): the field changes a result only when that option has one of them."""
    return dataclasses.field(default=default, metadata={"help": help, "affects_result": affects_result,
                                                        "used_when": used_when})
