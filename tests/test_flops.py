"""Analytic FLOP counts against torch's FlopCounterMode: forward, gradient, sampling, local energy, per ansatz."""
from __future__ import annotations

import pytest
import torch

from nqs.flops import (flop_counter, forward_breakdown, forward_flops, gradient_breakdown, gradient_flops,
                       hamiltonian_flops, local_energy_flops, sampling_flops, step_flops)
from nqs.hilbert import Sector
from nqs.local_energy import connections, local_energy
from nqs.models import ModelConfig, build_model
from nqs.sampler import sample

LIH = Sector(6, 2, 2)
BIG = Sector(10, 7, 7)  # n = 20, 14400 determinants
SECTORS = [LIH, BIG]
REL = 1e-6  # the brief asks for 10%; the counts are exact (matmuls as executed), so hold them to that

CONFIGS = [
    ModelConfig("made", hidden=32, made_layers=2, phase_hidden=32, phase_layers=2),
    ModelConfig("made", hidden=64, made_layers=2),
    ModelConfig("made", hidden=128, made_layers=3, phase_hidden=128, phase_layers=2),
    ModelConfig("transformer", d_model=16, heads=2, layers=1, d_ff=64),
    ModelConfig("transformer", d_model=32, heads=4, layers=2, d_ff=64, phase_hidden=32, phase_layers=2),
    ModelConfig("transformer", d_model=64, heads=4, layers=2, d_ff=128, phase_hidden=128, phase_layers=2),
    ModelConfig("retnet", d_model=16, heads=2, layers=1, d_ff=64),
    ModelConfig("retnet", d_model=32, heads=4, layers=2, d_ff=64, phase_hidden=32, phase_layers=2),
    ModelConfig("retnet", d_model=64, heads=4, layers=2, d_ff=128, phase_hidden=128, phase_layers=2),
    ModelConfig("made", hidden=32, made_layers=2, phase_hidden=32, phase_layers=2, phase_input="strings"),
    ModelConfig("transformer", d_model=16, heads=2, layers=1, d_ff=64, phase_input="strings"),
]


def _id(cfg: ModelConfig) -> str:
    width = f"h{cfg.hidden}x{cfg.made_layers}" if cfg.ansatz == "made" else f"d{cfg.d_model}x{cfg.layers}"
    return f"{cfg.ansatz}-{width}-p{cfg.phase_hidden}x{cfg.phase_layers}-{cfg.phase_input}"


def random_bits(sector: Sector, batch: int, seed: int = 0) -> torch.Tensor:
    all_bits = sector.enumerate_bits()
    index = torch.randperm(len(all_bits), generator=torch.Generator().manual_seed(seed))[:batch]
    return all_bits[index]


def make(cfg: ModelConfig, sector: Sector):
    torch.manual_seed(0)
    return build_model(cfg, sector)


def measured(fn) -> float:
    with flop_counter() as counter:
        fn()
    return float(counter.get_total_flops())


@pytest.mark.parametrize("sector", SECTORS, ids=["n12", "n20"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_forward_matches_flop_counter(cfg, sector):
    model, bits = make(cfg, sector), random_bits(sector, 48)
    with torch.no_grad():
        total = measured(lambda: model.log_psi(bits))
        phase = measured(lambda: model.phase_net(bits.float()))
    split = forward_breakdown(cfg, sector, 48)
    assert forward_flops(cfg, sector, 48) == split.total
    assert split.total == pytest.approx(total, rel=REL)
    assert split.phase == pytest.approx(phase, rel=REL)
    assert split.modulus == pytest.approx(total - phase, rel=REL)


@pytest.mark.parametrize("sector", SECTORS, ids=["n12", "n20"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_gradient_matches_flop_counter(cfg, sector):
    model, bits = make(cfg, sector), random_bits(sector, 32)
    weights = torch.randn(32, generator=torch.Generator().manual_seed(1))

    def step():
        log_psi = model.log_psi(bits)
        (weights * log_psi.real + weights.flip(0) * log_psi.imag).sum().backward()  # touches both networks

    got = measured(step)
    assert gradient_flops(cfg, sector, 32) == pytest.approx(got, rel=REL)
    assert gradient_flops(cfg, sector, 32) == gradient_breakdown(cfg, sector, 32).total
    assert 2.5 * forward_flops(cfg, sector, 32) < got <= 3 * forward_flops(cfg, sector, 32)  # ~3x forward


@pytest.mark.parametrize("sector", SECTORS, ids=["n12", "n20"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_sampling_matches_flop_counter(cfg, sector):
    model = make(cfg, sector)
    out = {}

    def draw():
        out["s"] = sample(model, 1e6, 300, torch.Generator().manual_seed(2))

    got = measured(draw)
    rows = out["s"].rows_per_position
    assert len(rows) == sector.n_orb and rows[0] == 1 and max(rows) <= 300
    assert sampling_flops(cfg, sector, rows) == pytest.approx(got, rel=REL)


def test_sampling_cost_grows_as_implemented():
    """Per-prefix cost vs position: RetNet flat, Transformer linear in the cached keys, MADE one degree's units
    per layer (the whole walk costs about one full pass, not n_orb of them); no phase net."""
    rows = (1,) * LIH.n_orb
    made, trf, ret = (ModelConfig(a, phase_hidden=1024) for a in ("made", "transformer", "retnet"))
    h = made.hidden
    walk = sampling_flops(made, LIH, rows)
    assert walk == 2 * (made.made_layers - 1) * h * h + 2 * 4 * h * LIH.n_orb
    assert walk < 1.1 * forward_breakdown(made, LIH, 1).modulus
    per_step = [sampling_flops(trf, LIH, (0,) * j + (1,)) for j in range(LIH.n_orb)]
    steps = torch.tensor(per_step).diff()
    assert torch.all(steps == steps[0]) and steps[0] == 4 * trf.layers * trf.d_model
    assert len({sampling_flops(ret, LIH, (0,) * j + (1,)) for j in range(LIH.n_orb)}) == 1


@pytest.mark.parametrize("ansatz", ["made", "transformer", "retnet"])
def test_local_energy_matches_flop_counter(problems, ansatz):
    p = problems("LiH")
    h = p.compiled()
    cfg = ModelConfig(ansatz)
    model = make(cfg, p.sector)
    bits = random_bits(p.sector, 40, seed=3)
    with torch.no_grad():
        ham = measured(lambda: connections(h, bits))
        out = {}
        total = measured(lambda: out.setdefault("le", local_energy(h, bits, model.log_psi)))
    le = out["le"]
    counts = local_energy_flops(cfg, p.sector, le.n_evals, 40, h.gemm_columns)
    assert counts["hamiltonian"] == hamiltonian_flops(p.n_qubits, 40, h.gemm_columns)
    assert counts["hamiltonian"] == pytest.approx(ham, rel=REL)
    assert counts["total"] == pytest.approx(total, rel=REL)
    assert counts["psi"] == forward_flops(cfg, p.sector, le.n_evals)


@pytest.mark.parametrize("ansatz", ["made", "transformer", "retnet"])
def test_step_flops_match_a_measured_vmc_step(problems, ansatz):
    """The logged FLOPs of one whole training step (sampling, local energy, loss and backward, as `nqs-train`
    runs it through `vmc_step`) against FlopCounterMode on that step."""
    from nqs.vmc import vmc_step

    p = problems("LiH")
    h = p.compiled()
    cfg = ModelConfig(ansatz)
    model = make(cfg, p.sector)
    out = {}

    def step():
        out["r"] = vmc_step(model, h, 1e6, 60, torch.Generator().manual_seed(1))
        out["r"].loss.backward()

    total = measured(step)
    r = out["r"]
    counts = step_flops(cfg, p.sector, r.samples.rows_per_position, r.n_evals, r.samples.n_unique, h.gemm_columns,
                        r.le_rows)
    assert set(counts) == {"sampling", "local_energy", "gradient", "total"}
    assert counts["total"] == pytest.approx(total, rel=REL)


def test_unknown_ansatz_is_a_user_error():
    from nqs.errors import UserError

    with pytest.raises(UserError):
        forward_flops(ModelConfig("lstm"), LIH, 1)
