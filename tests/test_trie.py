"""Prefix-trie evaluation of log psi (nqs.trie) against the full teacher-forced pass, and its FLOP count."""
from __future__ import annotations

import copy

import pytest
import torch

from nqs.flops import flop_counter, forward_breakdown, sampling_flops
from nqs.hilbert import Sector, bits_to_tokens
from nqs.models import ModelConfig, build_model
from nqs.trie import first_difference, token_order, trie_log_psi

LIH = Sector(6, 2, 2)
H2O = Sector(7, 5, 5)
ANSATZE = ["transformer", "retnet", "made"]


def make(ansatz: str, sector: Sector, dtype=torch.float32):
    torch.manual_seed(0)
    return build_model(ModelConfig(ansatz, layers=2, heads=2, d_model=16, phase_layers=2), sector).to(dtype)


def shared_prefixes(sector: Sector, seed: int) -> torch.Tensor:
    """Configurations sharing random prefixes (of random lengths), with duplicates, in random order."""
    g = torch.Generator().manual_seed(seed)
    bits = sector.enumerate_bits()
    tokens = bits_to_tokens(bits)
    picks = []
    for _ in range(6):
        anchor = tokens[torch.randint(len(bits), (1,), generator=g)]
        k = int(torch.randint(1, sector.n_orb, (1,), generator=g))
        picks.append(bits[(tokens[:, :k] == anchor[:, :k]).all(1)])
    picks.append(bits[torch.randint(len(bits), (40,), generator=g)])  # random ones, duplicates likely
    out = torch.cat(picks)
    out = torch.cat([out, out[:5]])  # certain duplicates
    return out[torch.randperm(len(out), generator=g)]


def cases(sector: Sector):
    bits = sector.enumerate_bits()
    return {"shared-prefixes": shared_prefixes(sector, 1), "single": bits[7:8], "whole-sector": bits}


@pytest.mark.parametrize("sector", [LIH, H2O], ids=["LiH", "H2O"])
@pytest.mark.parametrize("ansatz", ANSATZE)
def test_trie_equals_full_pass(ansatz, sector):
    """float32: within 1e-6 of the float64 network's log psi (the float32 full pass is ~1e-6 off it too) and
    within 1e-6 relative of the float32 full pass; float64: within 1e-10 of the full pass."""
    model32, model64 = make(ansatz, sector), make(ansatz, sector, torch.float64)
    for name, bits in cases(sector).items():
        with torch.no_grad():
            full32, full64 = model32.log_psi(bits).to(torch.complex128), model64.log_psi(bits)
        for chunk in (65536, 37):
            trie32 = trie_log_psi(model32, bits, chunk).log_psi
            trie64 = trie_log_psi(model64, bits, chunk).log_psi
            assert (trie64 - full64).abs().max().item() < 1e-10, (name, chunk)
            assert (trie32 - full64).abs().max().item() < 1e-6, (name, chunk)
            assert ((trie32 - full32).abs() / full32.abs()).max().item() < 1e-6, (name, chunk)


def test_nodes_are_the_distinct_prefixes():
    bits = shared_prefixes(H2O, 2)
    tokens = bits_to_tokens(bits).tolist()
    result = trie_log_psi(make("retnet", H2O), bits)
    expected = tuple(len({tuple(t[:j]) for t in tokens}) for j in range(H2O.n_orb - 1))
    assert result.rows_per_position == expected
    chunked = trie_log_psi(make("retnet", H2O), bits, chunk=10).rows_per_position
    assert all(c >= e for c, e in zip(chunked, expected)) and chunked[0] == -(-len(bits) // 10)


def test_sorting_and_first_difference():
    tokens = torch.tensor([[2, 1, 0], [0, 3, 1], [0, 3, 1], [0, 1, 2], [2, 0, 0]])
    order = token_order(tokens)
    assert tokens[order].tolist() == sorted(tokens.tolist())
    assert first_difference(tokens[order]).tolist() == [-1, 1, 3, 0, 1]


@pytest.mark.parametrize("ansatz", ["transformer", "retnet", "made"])
def test_trie_flops_match_flop_counter(ansatz):
    """What runs is counted: the incremental step once per trie node (the sampler's count) plus the phase MLP."""
    cfg = ModelConfig(ansatz, layers=2, heads=2, d_model=16, phase_layers=2)
    torch.manual_seed(0)
    model = build_model(cfg, H2O)
    bits = shared_prefixes(H2O, 3)
    out = {}
    with flop_counter() as counter:
        out["r"] = trie_log_psi(model, bits, chunk=50)
    rows = out["r"].rows_per_position
    expected = sampling_flops(cfg, H2O, rows) + forward_breakdown(cfg, H2O, len(bits)).phase
    assert expected == pytest.approx(counter.get_total_flops(), rel=1e-6)
    assert sum(rows) < (H2O.n_orb - 1) * len(bits)


@pytest.mark.gpu
def test_trie_on_cuda_equals_cpu():
    model = make("transformer", H2O)
    bits = H2O.enumerate_bits()
    cpu = trie_log_psi(model, bits).log_psi
    gpu = trie_log_psi(copy.deepcopy(model).cuda(), bits.cuda()).log_psi.cpu()
    assert (cpu - gpu).abs().max().item() < 1e-5
