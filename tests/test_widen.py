"""A trained network continued at a larger width (nqs.models.widen): the function is kept exactly, the new
units learn, and what cannot be widened is refused."""
from __future__ import annotations

import pytest
import torch

from nqs.hilbert import Sector
from nqs.models import ModelConfig, build_model
from nqs.models.widen import deepen_weights, describe_widening, widen_weights
from tests.test_train import one_error_line, rows

SECTOR = Sector(6, 2, 2)  # LiH's: 225 configurations


def model(seed: int, **sizes):
    sizes.setdefault("ansatz", "made")
    torch.manual_seed(seed)
    return build_model(ModelConfig(phase_input="strings", **sizes), SECTOR).double()


@pytest.mark.parametrize("ansatz", ["made", "transformer"])
def test_a_widened_network_computes_what_the_narrow_one_did(ansatz):
    """Every configuration's log ψ (float64) agrees to 1e-12 after widening (MADE 16 -> 40 hidden units, the phase
    MLP 8 -> 20; a Transformer's phase network alone), and a fresh network of the wide sizes does not."""
    narrow = model(0, ansatz=ansatz, hidden=16, phase_hidden=8)
    wide = model(1, ansatz=ansatz, hidden=40, phase_hidden=20)
    bits = SECTOR.enumerate_bits()
    fresh = wide.log_psi(bits)
    widened = widen_weights(wide, narrow.state_dict())
    assert (wide.log_psi(bits) - narrow.log_psi(bits)).abs().max() < 1e-12
    assert (fresh - narrow.log_psi(bits)).abs().max() > 1e-2
    expected = "modulus 16 -> 40, phase 8 -> 20" if ansatz == "made" else "phase 8 -> 20"
    assert describe_widening(wide, narrow.state_dict(), widened) == expected + " hidden units"


def test_the_new_units_learn_at_once():
    """The zeroed weights out of the new units get gradients on the first step (else they would stay dead)."""
    narrow, wide = model(0, hidden=16, phase_hidden=8), model(1, hidden=40, phase_hidden=20)
    widen_weights(wide, narrow.state_dict())
    log_psi = wide.log_psi(SECTOR.enumerate_bits())
    (log_psi.real.sum() + log_psi.imag.sum()).backward()
    out = dict(wide.named_parameters())
    for name, old_rows in (("net.2.weight", 16), ("net.4.weight", None), ("phase_net.net.2.weight", 8),
                           ("phase_net.net.6.weight", None)):  # into old units (16, 8) or the outputs (all rows)
        weight, grad = out[name].detach()[:old_rows, -1], out[name].grad[:old_rows, -1]
        assert (weight == 0).all() and grad.abs().max() > 1e-8, name  # zero as widened, and moving


@pytest.mark.parametrize("narrow,wide,needle", [
    (dict(hidden=40), dict(hidden=16), "only be widened"),
    (dict(hidden=16, made_layers=2), dict(hidden=16, made_layers=3), "other layers"),  # deepen_weights' work
    (dict(hidden=16, made_layers=3), dict(hidden=16, made_layers=2), "other layers"),
    (dict(ansatz="transformer", d_model=8), dict(ansatz="transformer", d_model=16), "only a MADE's"),
])
def test_what_is_not_a_widening_is_refused(narrow, wide, needle):
    with pytest.raises(ValueError, match=needle):
        widen_weights(model(1, **wide), model(0, **narrow).state_dict())


@pytest.mark.parametrize("hidden", [16, 40])
def test_a_deepened_made_computes_what_the_shallow_one_did(hidden):
    """A MADE of 2 hidden layers (16 units) into one of 4 (16 units, or 40: deepened and widened): every
    configuration's log ψ agrees to 1e-12 in float64, a fresh network does not, and the added layers' weights,
    the identity at first, get gradients off the diagonal on the first step."""
    shallow = model(0, hidden=16, phase_hidden=8, made_layers=2)
    deep = model(1, hidden=hidden, phase_hidden=8, made_layers=4)
    bits = SECTOR.enumerate_bits()
    fresh = deep.log_psi(bits)
    weights, added = deepen_weights(deep, shallow.state_dict())
    widen_weights(deep, weights)
    assert added == 2
    log_psi = deep.log_psi(bits)
    assert (log_psi - shallow.log_psi(bits)).abs().max() < 1e-12
    assert (fresh - shallow.log_psi(bits)).abs().max() > 1e-2
    (log_psi.real.sum() + log_psi.imag.sum()).backward()
    for name in ("net.4.weight", "net.6.weight"):  # the added hidden layers (the output is net.8)
        weight, grad = dict(deep.named_parameters())[name], dict(deep.named_parameters())[name].grad
        off = ~torch.eye(hidden, dtype=torch.bool)
        assert torch.equal(weight.detach(), torch.eye(hidden, dtype=weight.dtype)), name
        assert (grad * deep.net[int(name.split(".")[1])].mask)[off].abs().max() > 1e-8, name


def test_another_molecules_network_is_not_a_widening():
    """A MADE of 6 orbitals into one of 8 (LiH's into a larger sector): inputs and outputs grow with the hidden
    layers, which zero-padding would not make the same network."""
    torch.manual_seed(0)
    other = build_model(ModelConfig(ansatz="made", hidden=16, phase_hidden=8, phase_input="strings"), Sector(8, 2, 2))
    with pytest.raises(ValueError, match="inputs or outputs differ"):
        widen_weights(other, model(0, hidden=8, phase_hidden=8).state_dict())


def test_a_run_continues_a_narrower_runs_state(tmp_path, capsys):
    """`--init-from` a MADE 16 run with `--hidden 32` and with `--made-layers 3`: with every configuration sampled
    (8e15 draws), each run's first energy is that of a run started from the same weights at the same sizes to
    1e-10 Ha, and the note says the network was widened or deepened. A narrower network than the run's is one
    error line, exit 2."""
    from nqs.cli.train import main
    from nqs.record import read_summary

    exact = ["--mol", "LiH", "--no-progress", "--ansatz", "made", "--unique", "1000", "--final-unique", "1000",
             "--samples", "8e15", "--final-samples", "8e15", "--dtype", "float64", "--optimizer", "adam",
             "--anneal-t0", "0"]
    narrow, same, wide, deep = (tmp_path / name for name in ("narrow", "same", "wide", "deep"))
    main([*exact, "--hidden", "16", "--steps", "3", "--lr", "0.05", "--out", str(narrow)])
    for out, sizes in ((same, []), (wide, ["--hidden", "32"]), (deep, ["--made-layers", "3"])):
        main([*exact, "--hidden", "16", *sizes, "--steps", "1", "--lr", "1e-12", "--lr-final", "1e-12",
              "--init-from", str(narrow), "--out", str(out)])
    assert rows(wide)[0]["energy"] == pytest.approx(rows(same)[0]["energy"], abs=1e-10)
    assert rows(deep)[0]["energy"] == pytest.approx(rows(same)[0]["energy"], abs=1e-10)
    assert rows(same)[0]["energy"] != pytest.approx(rows(narrow)[0]["energy"], abs=1e-3)  # the weights moved
    ckpt = narrow / "checkpoints" / "last.ckpt"
    assert any(f"network of {ckpt} was widened (modulus 16 -> 32 hidden units;" in n for n in read_summary(wide).notes)
    assert any(f"network of {ckpt} was deepened (1 modulus hidden layer added as the identity) without" in n
               for n in read_summary(deep).notes)
    one_error_line(capsys, *exact, "--hidden", "8", "--steps", "1", "--init-from", str(narrow), "--out",
                   str(tmp_path / "bad"), needle="only be widened")
