"""Defaults chosen by the molecule's size, for `nqs-train` runs that do not choose an optimiser.

Up to `LARGE_QUBITS - 2` qubits the plain defaults (AdamW, cosine learning rate, annealing over half the run)
reach chemical accuracy (LiH, H2O: docs/benchmarks.md, "Time to accuracy"). From `LARGE_QUBITS` qubits on (N2:
20 qubits) they do not within the run (+4 to +41 mHa after 1,200 steps), and the recipe below is used: Adam
through a fixed annealing of `anneal_steps`, then stochastic reconfiguration (`adam+sr`), which takes the
state from ~15 mHa to below 1.6 mHa in a few hundred steps, with a warmup-stable-decay learning rate. Its step
counts per ansatz keep the whole command within about 300 s on one CPU thread for N2 (measured there only;
16–18-qubit molecules use it untested). MADE has no recipe (none found that reaches 1.6 mHa on N2). Only options that no layer (preset, --config, flags, the run's own
config.yaml) set are changed, and what was chosen is printed and saved in config.yaml and the run's notes.
"""
from __future__ import annotations

LARGE_QUBITS = 16

_COMMON = {"optimizer": "adam+sr", "lr_schedule": "wsd", "anneal_steps": 400, "sr_from": 420, "sr_trust": 0.05,
           "sr_rows": 256, "sr_shift_final": 1e-3}  # a constant shift: falling to 1e-4, steps blew up (+80 mHa)
LARGE = {"transformer": {**_COMMON, "sr_lr": 0.3, "decay": 50, "steps": 800},
         "retnet": {**_COMMON, "sr_lr": 0.4, "sr_shift": 1e-3, "sr_shift_final": 2e-4, "sr_shift_steps": 200,
                    "decay": 80, "steps": 660},  # +2.21 mHa in 284 s on N2: short of 1.6 mHa (docs/benchmarks.md)
         # MADE: no recipe. Adam+SR (1,000-1,800 annealing steps) ended on a +25 mHa plateau in 280 s, the plain
         # defaults on +41 mHa in 113 s: neither reaches 1.6 mHa on N2 (docs/benchmarks.md)
         }


def recipe(n_qubits: int, ansatz: str) -> dict:
    """The options this size of problem gets when the run does not choose an optimiser ({} : the defaults)."""
    return dict(LARGE.get(ansatz, {})) if n_qubits >= LARGE_QUBITS else {}


def describe(values: dict, n_qubits: int) -> str:
    """One line for the output and the run's notes."""
    text = ", ".join(f"{k} {v}" for k, v in values.items())
    return (f"defaults for {n_qubits} qubits (no optimizer given; nqs.training.recipes): {text}; set any of them "
            f"to override, or --optimizer adam for the plain defaults")
