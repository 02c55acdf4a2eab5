"""Batch autoregressive sampler with counts: sector, totals, frequencies vs |psi|^2, determinism, cap; schedules."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from nqs.errors import UserError
from nqs.hilbert import Sector, bits_to_tokens, pack
from nqs.models import ANSATZE, ModelConfig, build_model
from nqs.models.base import TOKEN_ALPHA, TOKEN_BETA
from nqs.sampler import SampleSchedule, most_frequent, multinomial_counts, sample

H2O = Sector(7, 5, 5)
LIH = Sector(6, 2, 2)  # 225 determinants


def make(ansatz: str, sector: Sector, seed: int = 0, double: bool = True):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(ansatz), sector)
    return model.double() if double else model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("ansatz", ANSATZE)
@pytest.mark.parametrize("double", [True, False], ids=["f64", "f32"])
def test_samples_in_sector_and_counts_sum(ansatz, double):
    model = make(ansatz, H2O, double=double)
    s = sample(model, 1e12, max_unique=10_000, generator=gen())
    assert s.bits.dtype == torch.uint8 and s.bits.shape == (s.n_unique, 14)
    assert s.counts.dtype == torch.float64 and (s.counts > 0).all()
    assert H2O.contains(s.bits).all()
    assert s.n_samples == 1e12 and s.counts.sum().item() == 1e12
    assert torch.unique(pack(s.bits)).numel() == s.n_unique  # unique
    assert s.n_unique == H2O.size  # 1e12 samples reach every determinant of a random-init model


def pooled_chisquare(observed: np.ndarray, expected: np.ndarray, min_expected: float = 5.0) -> float:
    """Chi-square p-value, cells with expected count < min_expected pooled into one."""
    small = expected < min_expected
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return scipy.stats.chisquare(obs, exp).pvalue


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_frequencies_match_born_rule(ansatz):
    model = make(ansatz, LIH)
    n_s = 1e5
    s = sample(model, n_s, max_unique=10_000, generator=gen(123))
    all_bits = LIH.enumerate_bits()
    probs = model.log_prob(bits_to_tokens(all_bits)).exp().detach().numpy()
    index = {int(k): i for i, k in enumerate(pack(all_bits))}
    observed = np.zeros(LIH.size)
    for key, c in zip(pack(s.bits).tolist(), s.counts.tolist()):
        observed[index[key]] += c
    assert observed.sum() == n_s
    assert pooled_chisquare(observed, n_s * probs) > 1e-3


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_same_seed_same_samples(ansatz):
    model = make(ansatz, H2O)
    a = sample(model, 1e4, 200, gen(7))
    b = sample(model, 1e4, 200, gen(7))
    c = sample(model, 1e4, 200, gen(8))
    assert torch.equal(a.bits, b.bits) and torch.equal(a.counts, b.counts)
    assert not (a.bits.shape == c.bits.shape and torch.equal(a.bits, c.bits) and torch.equal(a.counts, c.counts))


def greedy_path(model) -> torch.Tensor:
    """Bits (1, n) of the argmax-at-every-position configuration."""
    state, prev = model.init_state(1, None), None
    alpha = beta = torch.zeros(1, dtype=torch.int64)
    tokens = []
    for j in range(model.sector.n_orb):
        log_p, state = model.step(prev, j, state, alpha, beta)
        prev = log_p.argmax(-1)
        tokens.append(prev)
        alpha, beta = alpha + torch.tensor(TOKEN_ALPHA)[prev], beta + torch.tensor(TOKEN_BETA)[prev]
    return torch.stack(tokens, dim=-1)


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_cap_keeps_most_frequent(ansatz):
    model = make(ansatz, H2O)
    capped = sample(model, 1e12, max_unique=25, generator=gen(3))
    assert capped.n_unique == 25 and H2O.contains(capped.bits).all()
    assert capped.n_samples < 1e12  # dropped prefixes take their counts with them
    # with max_unique = 1 and N_s = 1e12 (relative noise 1e-6) the sampler follows the greedy path
    with torch.no_grad():
        greedy = greedy_path(model)
    one = sample(model, 1e12, max_unique=1, generator=gen(3))
    assert torch.equal(bits_to_tokens(one.bits), greedy)


def test_most_frequent_ties():
    counts = torch.tensor([3.0, 5.0, 3.0, 1.0, 5.0, 3.0], dtype=torch.float64)
    assert most_frequent(counts, 3).tolist() == [0, 1, 4]
    assert most_frequent(counts, 4).tolist() == [0, 1, 2, 4]


def test_multinomial_counts_exact_edges():
    counts = torch.tensor([1e12, 1e12, 1e12, 1e12, 7.0, 2.0 ** 53, 0.0], dtype=torch.float64)
    probs = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0.5, 0, 0.5, 0],
                          [0.25] * 4, [0.1, 0.2, 0.3, 0.4], [0.25] * 4], dtype=torch.float64)
    out = multinomial_counts(counts, probs, gen())
    assert torch.equal(out.sum(-1), counts)
    assert (out[probs == 0] == 0).all() and (out >= 0).all() and torch.equal(out, out.round())
    assert out[0, 0] == 1e12 and out[1, 3] == 1e12 and out[2, 1] == 1e12
    # float32 probabilities that do not sum to 1 exactly, tiny probabilities
    p32 = torch.softmax(torch.tensor([[0.0, -30.0, 1.0, 2.0]] * 2000), -1)
    out = multinomial_counts(torch.full((2000,), 1e12, dtype=torch.float64), p32, gen(1))
    assert torch.equal(out.sum(-1), torch.full((2000,), 1e12, dtype=torch.float64))
    rel = out.mean(0) / 1e12 - p32[0].double()
    assert rel[[0, 2, 3]].abs().max() < 1e-5 and out[:, 1].mean() < 10


def test_sample_rejects_bad_counts():
    model = make("made", LIH)
    for bad in (0, 1.5, 1e17):
        with pytest.raises(UserError):
            sample(model, bad, 10, gen())


def test_schedules():
    const = SampleSchedule("constant", n_samples=1e5)
    assert const.n_samples_at(0, 100) == const.n_samples_at(99, 100) == 1e5
    geo = SampleSchedule("geometric", n_start=1e2, n_end=1e12, reach_fraction=0.9)
    values = [geo.n_samples_at(t, 1000) for t in range(1000)]
    assert values[0] == 1e2 and values[900] == 1e12 and values[-1] == 1e12
    assert values[450] == pytest.approx(1e7, rel=1e-9)  # geometric midpoint
    assert all(a <= b for a, b in zip(values, values[1:]))
    ada = SampleSchedule("adaptive", n_samples=1e4, n_start=1e2, n_end=1e6, unique_window=(100, 200))
    n = ada.n_samples_at(0, 10)
    assert n == 1e4
    assert ada.update(n, 50) == 2e4 and ada.update(n, 300) == 5e3 and ada.update(n, 150) == 1e4
    assert ada.update(1e6, 10) == 1e6 and ada.update(1e2, 10_000) == 1e2  # clamped
    assert const.update(1e5, 1) == 1e5
    with pytest.raises(UserError, match="unknown sample schedule"):
        SampleSchedule("linear")


@pytest.mark.gpu
@pytest.mark.parametrize("ansatz", ANSATZE)
def test_sampling_on_cuda_past_62_qubits(ansatz):
    """H50's sector (100 qubits) sampled on CUDA: configurations in the sector, distinct, counts summing to N_s."""
    from nqs.keys import pack as pack_words
    from nqs.keys import unique as unique_keys

    sector = Sector(50, 25, 25)
    model = make(ansatz, sector).cuda()
    s = sample(model, 1e8, max_unique=3000, generator=torch.Generator("cuda").manual_seed(0))
    assert s.bits.is_cuda and s.bits.shape == (s.n_unique, 100) and 0 < s.n_unique <= 3000
    assert bool(sector.contains(s.bits).all()) and (s.counts > 0).all()
    assert unique_keys(pack_words(s.bits), 100)[0].shape[0] == s.n_unique
    assert s.n_requested == 1e8 and s.counts.sum().item() == s.n_samples <= 1e8  # the cap drops prefixes' counts
