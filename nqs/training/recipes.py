"""Defaults chosen by the molecule's size, for `nqs-train` runs that do not choose an optimiser.

Up to `LARGE_QUBITS - 2` qubits the plain defaults (AdamW, cosine learning rate, annealing over half of 1,200
steps) reach chemical accuracy (LiH, H2O: docs/benchmarks.md, "Time to accuracy") for MADE. The Transformer
and the RetNet get `SMALL`: the annealing over a fixed 400 steps and a warmup-stable-decay learning rate over
750 steps. Measured on H2O (seeds 0, 1, 2): RetNet +0.60 / +0.37 / +0.74 mHa against the plain defaults' +2.87
for seed 1, Transformer +0.95 / +0.28 / +0.84; LiH +0.19 (Transformer) and +0.17 (RetNet) against +0.18 /
+0.14; and 750 steps instead of 1,200 (the main job and H2O within their time targets). MADE on H2O fell onto
a +4.1 mHa plateau with it and keeps the plain defaults. From `LARGE_QUBITS` qubits on (N2:
20 qubits) they do not within the run (+4 to +41 mHa after 1,200 steps), and the recipe below is used: Adam
through a fixed annealing of `anneal_steps`, then stochastic reconfiguration (`adam+sr`) with 32 tail rows
(`nqs.sr_tail`: imaginary-time targets for the connected configurations the sample misses, without which the
model loses FCI weight it never regains; up to `TAIL_MAX_QUBITS` qubits), a leak limit and a limit on the
realised step (`nqs.sr_leak`), with a warmup-stable-decay learning rate. Its step counts per
ansatz keep the whole command within about 300 s on one CPU thread for N2 (measured there only; 16–18-qubit
molecules use it untested). MADE gets a wider network and keeps the plain Adam schedule. Only options that no
layer (preset, --config, flags, the run's own config.yaml) set are changed, and what was chosen is printed
and saved in config.yaml and the run's notes.
"""
from __future__ import annotations

LARGE_QUBITS = 16
TAIL_MAX_QUBITS = 30  # the tail search enumerates every sample's connections: measured on N2 (20 qubits) only

_COMMON = {"optimizer": "adam+sr", "lr_schedule": "wsd", "anneal_steps": 400, "sr_from": 420, "sr_trust": 0.05,
           "sr_rows": 256, "sr_shift_final": 1e-3,  # a constant shift: falling to 1e-4, steps blew up (+80 mHa)
           "sr_tail": 32,  # SR rows for the configurations the sample misses (nqs.sr_tail): N2 +1.78 -> +0.047 mHa
           "sr_max_leak": 1e-5,  # at most this probability may leave the sample and tail rows per step (nqs.sr_leak)
           # and the step may move at most 0.1 rad in realised Fubini-Study distance (twice the trust radius): the
           # RetNet's SR-phase excursions on N2, seeds 0/1/2, fell from +119/+1842/+79 to +17/+27/+32 mHa, final
           # energies +0.136/+0.227/+0.356 -> +0.126/+0.545/+0.378 mHa; the Transformer's steps never reach it
           # (docs/benchmarks.md, "Time to accuracy", session 11)
           "sr_max_distance": 0.1}
SMALL = {ansatz: {"lr_schedule": "wsd", "anneal_steps": 400, "decay": 200, "steps": 750}
         for ansatz in ("transformer", "retnet")}
LARGE = {"transformer": {**_COMMON, "sr_lr": 0.3, "decay": 50, "steps": 800},
         # without tail rows the model dropped ~6e-4 of FCI weight into configurations of p < 1e-16, which no
         # gradient grows back (+1.36 / +1.44 / +1.78 mHa for seed 0 as float32 rounding changed between code
         # versions; seeds 1 and 2 on +7.6 and +27 mHa plateaus); with 32 tail rows, 800 steps end at +0.047 /
         # +0.136 / +0.087 mHa for seeds 0 / 1 / 2 (session 8), and with the session-9 tail rows and the leak
         # limit at +0.090 / +0.483 / +0.367 (docs/benchmarks.md, "Time to accuracy", session 9)
         "retnet": {**_COMMON, "anneal_steps": 320, "sr_from": 450, "sr_lr": 0.4, "sr_shift": 1e-3,
                    "sr_shift_final": 2e-4, "sr_shift_steps": 160, "decay": 250, "steps": 800, "warmup": 16},
         # MADE: a wider network (2 x 256 instead of 2 x 64) and the plain Adam schedule: +8.9 mHa on N2 against
         # +41.5 with 2 x 64; SR on it costs ~10x more per step and ended on plateaus (+25 mHa): no recipe reaches
         # 1.6 mHa on N2 within 300 s here
         "made": {"hidden": 256},
         }


# options counted in steps: kept as they are when a run is longer than the recipe (the extra steps lengthen the
# stable phase), shrunk in proportion when it is shorter (else the annealing or the decay would not fit)
STEP_COUNTS = ("anneal_steps", "decay", "sr_from", "sr_shift_steps")


def recipe(n_qubits: int, ansatz: str, steps: int | None = None, warmup: int = 0) -> dict:
    """The options this size of problem gets when the run does not choose an optimiser ({} : the defaults).
    `steps`: the run's length when the run sets it (then the recipe's own `steps` is left out); a shorter run
    also gets its `warmup` shrunk, so that warm-up and decay fit."""
    chosen = dict((LARGE if n_qubits >= LARGE_QUBITS else SMALL).get(ansatz, {}))
    if n_qubits > TAIL_MAX_QUBITS:
        chosen.pop("sr_tail", None)
    if steps is None or "steps" not in chosen:
        return chosen
    scale = min(1.0, steps / chosen.pop("steps"))
    if scale < 1:
        chosen["warmup"] = round(warmup * scale)
    return {k: max(1, round(v * scale)) if k in STEP_COUNTS else v for k, v in chosen.items()}


def describe(values: dict, n_qubits: int) -> str:
    """One line for the output and the run's notes."""
    text = ", ".join(f"{k} {v}" for k, v in values.items())
    return (f"defaults for {n_qubits} qubits (no optimizer given; nqs.training.recipes): {text}; set any of them "
            f"to override, or --optimizer adam for the plain defaults")
