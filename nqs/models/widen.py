"""A trained network's weights placed in a wider (or, for a MADE, deeper) one, without changing its function.

A fit that has flattened at one width (H16's MADE 512 / 256 fitted to its DMRG state: fidelity 0.9984 after
36,000 steps, 0.9985 after 48,000; docs/benchmarks.md, session 23) can go on at a larger width from where it
stands instead of from scratch. Each widened weight (out, in) keeps the trained block [:out₀, :in₀]; the rows of
the new units [out₀:, :] keep the wider network's fresh initialisation, and the old units' weights from new
units [:out₀, in₀:] are set to zero, as are those of the fixed-size outputs. Old units therefore see only old
units, the outputs see only old units, and the network computes exactly what it did (the new units are live: the
zero weights out of them get gradients at once). The rule holds for any stack of linear maps with element-wise
activations whose widened units are appended: the MADE's masked layers (hidden unit i has degree i mod n_orb at
every width, so the trained units keep their masks) and the phase MLP. A Transformer or RetNet's layer norms mix
every feature, so those are refused. Zero-initialised outgoing weights rather than Net2Net's split units (Chen,
Goodfellow & Shlens, ICLR 2016): the new units start with fresh, diverse features.

A MADE can also gain hidden layers (`deepen_weights`, Net2Net's "deeper"): each is inserted after the last
trained one as the identity with zero biases. Its inputs come out of a ReLU, so they are ≥ 0 and ReLU(I·h) = h;
the identity is allowed by the masks (a unit sees units of its own degree), and its off-diagonal weights, zero
at first, get gradients at once.
"""
from __future__ import annotations

import torch

from nqs.models.made import MADE


def widen_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load `weights` (a state dict of the same ansatz, hidden layers no wider than `model`'s) into `model`.
    Tensors of equal shape are copied; wider ones as the module docstring says. Returns the names of the widened
    tensors (empty: the sizes were equal). ValueError when the two are not one network at two widths."""
    own = model.state_dict()
    if set(own) != set(weights):
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise ValueError(f"other layers (missing {missing[:3]}, unexpected {extra[:3]})")
    widened = [k for k in own if own[k].shape != weights[k].shape]
    for key in widened:
        old, new = weights[key], own[key]
        if not _widenable(model, key):
            raise ValueError(f"{key} is {tuple(old.shape)} there, {tuple(new.shape)} here, and only a MADE's and "
                             "the phase network's hidden widths can grow")
        if old.dim() != new.dim() or any(o > w for o, w in zip(old.shape, new.shape)):
            raise ValueError(f"{key} is {tuple(old.shape)} there, {tuple(new.shape)} here: a network can only be "
                             "widened (or a MADE deepened), never narrowed")
    for prefix in ("net.", "phase_net.net."):  # only hidden widths: a network's inputs and outputs stay
        layers = _layer_keys(own, prefix)
        if layers and (own[layers[0]].shape[1] != weights[layers[0]].shape[1]
                       or own[layers[-1]].shape[0] != weights[layers[-1]].shape[0]):
            raise ValueError(f"{prefix.removesuffix('.')}'s inputs or outputs differ (another molecule, basis or "
                             "phase input?): only hidden widths can grow")
    with torch.no_grad():
        for key, tensor in own.items():
            old = weights[key].to(tensor.dtype)
            if key not in widened:
                tensor.copy_(old)
                continue
            block = tuple(slice(0, s) for s in old.shape)
            if tensor.dim() == 2:
                tensor[: old.shape[0], old.shape[1]:] = 0.0  # old units and outputs do not see the new units
            tensor[block] = old
    return widened


def deepen_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """`weights` of a MADE with fewer hidden layers than `model`'s, re-keyed for `model`: the trained layers keep
    their places, the output layer moves to the top, and each added hidden layer is the identity (`model`'s
    width) with zero biases. Returns (the weights, the layers added); a state of as many layers or more, or of
    another ansatz, is returned as it is (and `widen_weights` judges it)."""
    if not isinstance(model, MADE):
        return weights, 0
    own = model.state_dict()
    new, old = _layer_keys(own, "net."), _layer_keys(weights, "net.")
    if not old or len(old) >= len(new):
        return weights, 0
    mapped = {k: v for k, v in weights.items() if not k.startswith("net.")}
    for source, target in (*zip(old[:-1], new), (old[-1], new[-1])):  # the output layer goes to the top
        for part in ("weight", "bias"):
            mapped[target.replace("weight", part)] = weights[source.replace("weight", part)]
    for key in new[len(old) - 1:-1]:
        mapped[key] = torch.eye(*own[key].shape, dtype=own[key].dtype)
        mapped[key.replace("weight", "bias")] = torch.zeros_like(own[key.replace("weight", "bias")])
    return mapped, len(new) - len(old)


def _layer_keys(state: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """The weight keys of the linear layers of the nn.Sequential at `prefix` ("net." or "phase_net.net.") in a
    state dict, in the order of their positions."""
    keys = [k for k in state if k.startswith(prefix) and k.endswith(".weight")]
    return sorted(keys, key=lambda k: int(k.removeprefix(prefix).split(".")[0]))


def _widenable(model: torch.nn.Module, key: str) -> bool:
    return key.startswith("phase_net.") or (isinstance(model, MADE) and key.startswith("net."))


def describe_widening(model: torch.nn.Module, weights: dict[str, torch.Tensor], widened: list[str]) -> str:
    """'modulus 512 -> 1024, phase 256 -> 512 hidden units' for the note (the first widened layer of each)."""
    own, parts = model.state_dict(), []
    for name, prefix in (("modulus", "net."), ("phase", "phase_net.")):
        keys = [k for k in widened if k.startswith(prefix) and k.endswith("weight")]
        if keys:
            parts.append(f"{name} {weights[keys[0]].shape[0]} -> {own[keys[0]].shape[0]}")
    return ", ".join(parts) + " hidden units"
