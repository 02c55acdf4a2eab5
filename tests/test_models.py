"""Exact checks of the autoregressive ansatze on small sectors: normalisation, autoregressive property,
cached / recurrent step path = teacher-forced path, parameter counts."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from nqs.errors import UserError
from nqs.hilbert import Sector, bits_to_tokens
from nqs.models import ANSATZE, ModelConfig, PhaseMLP, RetNet, build_model
from nqs.models.base import TOKEN_ALPHA, TOKEN_BETA

H2O = Sector(7, 5, 5)  # STO-3G water: 441 determinants
# default sizes, plus deeper / wider ones (RetNet with d_model 12, 4 heads has an odd head width 3)
CONFIGS = [ModelConfig(a) for a in ANSATZE] + [
    ModelConfig("made", hidden=32, made_layers=3),
    ModelConfig("transformer", d_model=24, heads=4, layers=2, d_ff=32),
    ModelConfig("retnet", d_model=12, heads=4, layers=2, d_ff=32),
    ModelConfig("made", hidden=32, phase_hidden=16, phase_input="strings"),
]
IDS = list(ANSATZE) + ["made-3x32", "transformer-2L-4H", "retnet-2L-4H-odd", "made-phase-strings"]


def make(cfg: ModelConfig, sector: Sector = H2O, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg, sector).double()


def sector_tokens(sector: Sector = H2O) -> torch.Tensor:
    return bits_to_tokens(sector.enumerate_bits())


def step_conditionals(model, tokens: torch.Tensor) -> torch.Tensor:
    """Masked conditionals (B, n_orb, 4) through the cached `step` path, teacher-forced on `tokens`."""
    B = tokens.shape[0]
    state, prev = model.init_state(B, tokens.device), None
    alpha = torch.zeros(B, dtype=torch.int64)
    beta = torch.zeros(B, dtype=torch.int64)
    out = []
    for j in range(model.sector.n_orb):
        cond, state = model.step(prev, j, state, alpha, beta)
        out.append(cond)
        prev = tokens[:, j]
        alpha = alpha + torch.tensor(TOKEN_ALPHA)[prev]
        beta = beta + torch.tensor(TOKEN_BETA)[prev]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_normalised_over_sector(cfg):
    model = make(cfg)
    log_p = model.log_prob(sector_tokens())
    assert log_p.shape == (H2O.size,) == (441,)
    assert abs(log_p.exp().sum().item() - 1.0) < 1e-10


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_autoregressive(cfg):
    model = make(cfg)
    gen = torch.Generator().manual_seed(1)
    tokens = sector_tokens()[torch.randperm(H2O.size, generator=gen)[:32]]
    base = model.conditionals(tokens)
    for j in range(H2O.n_orb):
        changed = tokens.clone()
        changed[:, j] = (changed[:, j] + torch.randint(1, 4, (32,), generator=gen)) % 4
        new = model.conditionals(changed)
        torch.testing.assert_close(new[:, : j + 1], base[:, : j + 1], rtol=0, atol=0)
        if j + 1 < H2O.n_orb:  # the scores after j do see token j
            assert not torch.allclose(model.logits(changed)[:, j + 1], model.logits(tokens)[:, j + 1])


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_step_path_equals_teacher_forced(cfg):
    model = make(cfg)
    tokens = sector_tokens()
    full = model.conditionals(tokens)
    stepped = step_conditionals(model, tokens)
    assert torch.equal(torch.isfinite(full), torch.isfinite(stepped))
    finite = torch.isfinite(full)
    assert (full[finite] - stepped[finite]).abs().max().item() < 1e-6


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.ansatz == "retnet"], ids=["default", "2L-4H-odd"])
def test_retnet_recurrent_equals_parallel(cfg):
    model = make(cfg)
    assert isinstance(model, RetNet)
    tokens = sector_tokens()
    torch.testing.assert_close(model.logits_recurrent(tokens), model.logits(tokens), rtol=0, atol=1e-6)
    diff = (model.log_prob_recurrent(tokens) - model.log_prob(tokens)).abs().max().item()
    assert diff < 1e-6


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_param_counts(cfg):
    model = make(cfg)
    assert model.n_params_modulus + model.n_params_phase == model.n_params
    assert model.n_params_phase == PhaseMLP.count_params(H2O.n_qubits, cfg.phase_hidden, cfg.phase_layers,
                                                         cfg.phase_input)
    assert model.n_params_modulus > 0


def test_reference_sizes():
    """Default phase MLP 64x3 on 14 qubits: 9,345 parameters, ~70% of the Transformer (as the brief says)."""
    model = make(ModelConfig("transformer"))
    assert model.n_params_phase == 14 * 64 + 64 + 2 * (64 * 64 + 64) + 65
    assert 0.6 < model.n_params_phase / model.n_params < 0.8


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_log_psi_and_gradients(ansatz):
    torch.manual_seed(0)
    model = build_model(ModelConfig(ansatz), H2O)  # float32, as in training
    bits = H2O.enumerate_bits()[:50]
    log_psi = model.log_psi(bits)
    assert log_psi.shape == (50,) and log_psi.is_complex()
    assert torch.isfinite(log_psi.real).all() and torch.isfinite(log_psi.imag).all()
    (log_psi.real.sum() + log_psi.imag.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_build_model_errors():
    with pytest.raises(UserError, match="unknown ansatz"):
        build_model(ModelConfig("lstm"), H2O)
    with pytest.raises(UserError, match="divisible"):
        build_model(ModelConfig("transformer", d_model=10, heads=3), H2O)
    with pytest.raises(UserError, match="phase_input"):
        build_model(ModelConfig("made", phase_input="parity"), H2O)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig("made").hidden = 3


def test_phase_strings_are_the_jordan_wigner_parities_and_give_excitation_signs():
    """The "strings" inputs are s_k = (-1)^(sum_{j<k} x_j) after the ±1 bits (brute force over H2O's sector),
    and the sign of a single excitation a†_p a_q (p > q) on x, (-1)^(occupied strictly between q and p), is
    s_{q+1}(x) s_p(x): a product of two of the inputs (OpenFermion's matrix element as the reference)."""
    torch.manual_seed(0)
    phase = PhaseMLP(H2O.n_qubits, 8, 1, inputs="strings")
    bits = H2O.enumerate_bits().double()
    features = phase.double().features(bits)
    n = H2O.n_qubits
    assert torch.equal(features[:, :n], 2 * bits - 1)
    brute = torch.tensor([[(-1.0) ** int(x[:k].sum()) for k in range(n)] for x in bits], dtype=torch.float64)
    assert torch.equal(features[:, n:], brute)
    from openfermion import FermionOperator, get_sparse_operator

    checked = 0
    for q, p in [(0, 5), (2, 9), (4, 13)]:
        op = get_sparse_operator(FermionOperator(f"{p}^ {q}"), n_qubits=n)
        for x, f in zip(bits[:40], features[:40]):
            if x[q] != 1 or x[p] != 0:
                continue
            index = int(sum(int(b) << (n - 1 - i) for i, b in enumerate(x)))  # OpenFermion: qubit 0 is the MSB
            sign = op[:, index].toarray().ravel()
            assert float(sign[sign != 0][0]) == float(f[n + q + 1] * f[n + p])
            checked += 1
    assert checked > 20


def nonzero_gradient_entries(model, sector: Sector) -> int:
    """Brute force: parameter entries whose gradient of Re or Im log psi is non-zero for some configuration of
    the sector (two random combinations over all configurations; MADE's biases raised so every ReLU is on and
    only the structure can zero a gradient)."""
    from nqs.models.made import MaskedLinear

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MaskedLinear):
                m.bias.fill_(10.0)
    bits, gen = sector.enumerate_bits().double(), torch.Generator().manual_seed(0)
    acc = [torch.zeros_like(p) for p in model.parameters()]
    for _ in range(2):
        lp = model.log_psi(bits)
        c = torch.randn(2, len(bits), generator=gen, dtype=torch.float64)
        grads = torch.autograd.grad((c[0] * lp.real).sum() + (c[1] * lp.imag).sum(), list(model.parameters()),
                                    allow_unused=True)
        for a, g in zip(acc, grads):
            if g is not None:
                a += g.abs()
    scale = max(float(a.max()) for a in acc)
    return sum(int((a > 1e-10 * scale).sum()) for a in acc)


TINY = [ModelConfig("made", hidden=13, made_layers=2, phase_hidden=5, phase_layers=2),
        ModelConfig("made", hidden=7, made_layers=1, phase_hidden=3, phase_layers=1),
        ModelConfig("transformer", d_model=4, heads=2, layers=2, d_ff=8, phase_hidden=5, phase_layers=2),
        ModelConfig("retnet", d_model=4, heads=2, layers=2, d_ff=8, phase_hidden=5, phase_layers=2)]


@pytest.mark.parametrize("sector", [Sector(6, 2, 2), Sector(2, 1, 1), Sector(4, 1, 2)], ids=["LiH", "H2", "4-1-2"])
@pytest.mark.parametrize("cfg", TINY, ids=["made-2x13", "made-1x7", "transformer", "retnet"])
def test_effective_params_are_those_with_a_gradient(cfg, sector):
    model = make(cfg, sector)
    assert model.n_params_effective == nonzero_gradient_entries(model, sector)
    assert model.n_params_effective < model.n_params


def test_made_effective_count_is_unmasked_weights_of_live_units():
    """MADE on LiH: the last orbital's scores are fixed, so its 4 outputs and the hidden units of degree
    n_orb - 1 (which feed only them) are unused; the rest is mask ones + biases (one-hot inputs all occur)."""
    from nqs.models.made import MaskedLinear

    model = make(ModelConfig("made", hidden=12, made_layers=1, phase_hidden=4, phase_layers=1), Sector(6, 2, 2))
    first, last = [m for m in model.net if isinstance(m, MaskedLinear)]
    live_hidden = torch.arange(12) % 6 != 5
    live_out = torch.arange(24) < 20
    expected = (int(first.mask[live_hidden].sum()) + int(live_hidden.sum())
                + int(last.mask[live_out][:, live_hidden].sum()) + int(live_out.sum()))
    assert model.n_params_effective - model.n_params_phase == expected
    assert int(first.mask.sum() + last.mask.sum()) + 12 + 24 > expected  # the masks alone would count more


@pytest.mark.parametrize("cfg", CONFIGS + TINY, ids=IDS + ["made-2x13", "made-1x7", "transformer-tiny", "retnet-tiny"])
@pytest.mark.parametrize("sector", [H2O, Sector(2, 1, 1)], ids=["H2O", "H2"])
def test_param_counts_without_building_match_the_model(cfg, sector):
    from nqs.models.counts import param_counts

    model = make(cfg, sector)
    assert param_counts(cfg, sector) == {
        "total": model.n_params, "modulus": model.n_params_modulus, "phase": model.n_params_phase,
        "effective": model.n_params_effective, "effective_modulus": model.n_params_effective - model.n_params_phase}
