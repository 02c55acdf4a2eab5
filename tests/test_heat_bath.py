"""The heat-bath local energy (nqs.heat_bath, `--local-energy heat-bath`): its pairs against the enumerated
integral connections (threshold 0: the same set and elements, 1e-12 Ha), exact at threshold 0, unbiased above it,
only true connections drawn, past 62 qubits on random integrals, and one rank's share under DDP (in
tests/test_local_energy_modes.py) (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nqs.chem import Integrals
from nqs.errors import UserError
from nqs.excitations import IntegralHamiltonian, connections
from nqs.heat_bath import select
from nqs.hilbert import Sector
from nqs.local_energy_modes import LocalEnergyMode, estimate
from tests.test_local_energy_modes import in_chunks
from nqs.models import ModelConfig, build_model
from nqs.training.config import TrainConfig


def pair_table(sample, keys, element, weight=None) -> dict:
    """(sample, key) -> summed weight * element."""
    out: dict = {}
    weight = torch.ones_like(element) if weight is None else weight
    for s, k, e in zip(sample.tolist(), map(tuple, keys.tolist()), (weight * element).tolist()):
        out[(s, k)] = out.get((s, k), 0.0) + e
    return out


def random_hamiltonian(n_orb: int, n_alpha: int, n_beta: int, seed: int = 0) -> IntegralHamiltonian:
    """Real integrals with the 8-fold symmetry of (pq|rs), no point-group zeros."""
    rng = np.random.default_rng(seed)
    h1 = rng.normal(size=(n_orb, n_orb))
    g = rng.normal(size=(n_orb,) * 4) * 0.1
    g = g + g.transpose(1, 0, 2, 3)
    g = g + g.transpose(0, 1, 3, 2)
    g = g + g.transpose(2, 3, 0, 1)
    return IntegralHamiltonian(Integrals(h1 + h1.T, g, 0.5, 0.5, n_alpha, n_beta), n_alpha, n_beta)


def random_bits(sector: Sector, rows: int, seed: int = 0) -> torch.Tensor:
    """Distinct random configurations of the sector (rows, n) uint8."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.zeros(rows, sector.n_qubits, dtype=torch.uint8)
    for spin, m in ((0, sector.n_alpha), (1, sector.n_beta)):
        pick = torch.rand(rows, sector.n_orb, generator=g).argsort(1)[:, :m]
        bits[:, spin::2].scatter_(1, pick, 1)
    return torch.unique(bits, dim=0)


def make(sector):
    torch.manual_seed(0)
    return build_model(ModelConfig("transformer", d_model=8, heads=2, layers=1, phase_layers=2), sector).double()


@pytest.mark.parametrize("n_orb, electrons", [(6, (2, 2)), (32, (3, 2))])  # 12 and 64 qubits
def test_threshold_zero_selects_every_connection(n_orb, electrons):
    h = random_hamiltonian(n_orb, *electrons)
    bits = random_bits(Sector(n_orb, *electrons), 40)
    weights = torch.full((bits.shape[0],), 1.0 / bits.shape[0], dtype=torch.float64)
    space = bits[::2]  # half the batch is the sample set: in-set pairs by overlap, the rest from the tables
    diag, sample, keys, element, weight = select(h, bits, weights, 0.0, 4, torch.Generator(), space)
    ref_diag, ref_sample, ref_keys, ref_element = connections(h, bits)
    assert (diag - ref_diag).abs().max().item() < 1e-12 and bool((weight == 1).all())
    got, want = pair_table(sample, keys, element), pair_table(ref_sample, ref_keys, ref_element)
    assert got.keys() == want.keys() and len(got) == sample.numel()  # each connection once
    assert max(abs(got[k] - want[k]) for k in want) < 1e-12


def test_draws_are_connections_with_their_elements():
    h = random_hamiltonian(32, 3, 3, seed=1)  # 64 qubits
    bits = random_bits(Sector(32, 3, 3), 30, seed=1)
    weights = torch.full((bits.shape[0],), 1.0 / bits.shape[0], dtype=torch.float64)
    _, sample, keys, element, weight = select(h, bits, weights, 0.5, 8, torch.Generator().manual_seed(0), bits)
    want = pair_table(*connections(h, bits)[1:])
    drawn = weight != 1
    assert drawn.any() and (weight[drawn] > 0).all()
    for s, k, e in zip(sample.tolist(), map(tuple, keys.tolist()), element.tolist()):
        assert abs(want[(s, k)] - e) < 1e-12


@pytest.mark.parametrize("known,chunked", [(False, False), (True, False), (True, True)])
def test_heat_bath_with_zero_threshold_is_exact(problems, known, chunked):
    """threshold 0: every pair, exact values and evaluations (`chunked`: selected 9 samples a call, with the
    whole batch as the sample set and the x' deduplicated across calls)."""
    p = problems("H2O")
    h, model = p.compiled(connections="integrals"), make(p.sector)
    bits = random_bits(p.sector, 120, seed=2)
    log_psi = model.log_psi(bits).detach() if known else None
    exact = estimate(model, h, bits, LocalEnergyMode("exact-dense"))
    mode = LocalEnergyMode("heat-bath", threshold=0.0)
    mode = in_chunks(mode, h, 9, bits.shape[0]) if chunked else mode
    hb = estimate(model, h, bits, mode, torch.Generator(), log_psi_bits=log_psi)
    assert (hb.values - exact.values).abs().max().item() < 1e-10
    assert hb.n_connected == exact.n_connected
    assert hb.n_evals == exact.n_evals - (bits.shape[0] if known else 0)


@pytest.mark.parametrize("chunked", [False, True])
def test_heat_bath_is_unbiased(problems, chunked):
    """Per sample, the mean of 400 estimates against exact: z-scores of a correct estimator, skewed weights
    (`chunked`: 16 samples selected in two uneven calls, 9 and 7; the calls, not the samples, take the time)."""
    p = problems("LiH")
    h, model = p.compiled(connections="integrals"), make(p.sector)
    bits = random_bits(p.sector, 16 if chunked else 30, seed=4)
    with torch.no_grad():
        log_psi = model.log_psi(bits)
    weights = torch.rand(bits.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2)) ** 3
    weights /= weights.sum()
    exact = estimate(model, h, bits, LocalEnergyMode("exact-dense")).values.real
    mode, g, reps = LocalEnergyMode("heat-bath", threshold=1e-3, draws=4), torch.Generator().manual_seed(5), 400
    mode = in_chunks(mode, h, 9, bits.shape[0]) if chunked else mode
    runs = torch.stack([estimate(model, h, bits, mode, g, log_psi_bits=log_psi, weights=weights).values.real
                        for _ in range(reps)])
    spread = runs.std(0)
    drawn = spread > 0
    assert drawn.sum() >= 10  # most samples draw
    z = (runs.mean(0) - exact)[drawn] / (spread[drawn] / reps ** 0.5)
    assert z.abs().max().item() < 4.5 and (z ** 2).mean().item() < 2.0
    assert (runs.mean(0) - exact)[~drawn].abs().max().item() < 1e-10 if (~drawn).any() else True


def test_heat_bath_needs_the_integrals(problems):
    p = problems("LiH")
    with pytest.raises(UserError, match="heat-bath reads the integrals"):
        estimate(make(p.sector), p.compiled(connections="pauli"), random_bits(p.sector, 4),
                 LocalEnergyMode("heat-bath"), torch.Generator())
    with pytest.raises(UserError, match="heat-bath reads the integrals"):
        TrainConfig().updated(local_energy="heat-bath", connections="pauli")
    cfg = TrainConfig().updated(local_energy="heat-bath")
    assert cfg.connections_used == "integrals" and "semi_threshold" in cfg.result_fields()
    assert LocalEnergyMode("heat-bath", 1e-4, 2).estimator == "heat-bath(weighted_threshold=0.0001,draws=2)"
