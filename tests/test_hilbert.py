"""The (N_alpha, N_beta) sector and the three encodings of a configuration (bits, packed int64, tokens)."""
from __future__ import annotations

import math

import pytest
import torch

from nqs.hilbert import MAX_QUBITS, Sector, bits_to_tokens, pack, tokens_to_bits, unpack


@pytest.mark.parametrize("n_orb,n_alpha,n_beta", [(2, 1, 1), (6, 2, 2), (7, 5, 5), (7, 5, 3), (4, 0, 0), (5, 5, 0)])
def test_enumeration_is_the_whole_sector_once(n_orb, n_alpha, n_beta):
    s = Sector(n_orb, n_alpha, n_beta)
    bits = s.enumerate_bits()
    assert s.size == math.comb(n_orb, n_alpha) * math.comb(n_orb, n_beta) == bits.shape[0]
    assert bits.shape[1] == s.n_qubits == 2 * n_orb and bits.dtype == torch.uint8
    assert set(bits.unique().tolist()) <= {0, 1}
    assert (bits[:, 0::2].sum(1) == n_alpha).all() and (bits[:, 1::2].sum(1) == n_beta).all()  # 2p alpha
    assert pack(bits).unique().numel() == s.size  # no configuration twice
    assert s.contains(bits).all() and s.n_electrons == n_alpha + n_beta


def test_enumeration_agrees_with_brute_force_over_all_strings():
    s = Sector(4, 2, 1)
    every = unpack(torch.arange(1 << s.n_qubits), s.n_qubits)
    members = every[s.contains(every)]
    assert sorted(pack(members).tolist()) == sorted(pack(s.enumerate_bits()).tolist())
    assert members.shape[0] == s.size == 6 * 4


def test_contains_rejects_other_electron_counts():
    s = Sector(3, 2, 1)
    inside = torch.tensor([[1, 0, 1, 0, 0, 1]], dtype=torch.uint8)  # 2p = alpha: alpha at 0, 2; beta at 2
    swapped = torch.tensor([[0, 1, 0, 1, 1, 0]], dtype=torch.uint8)  # same N = 3, spins (1, 2)
    extra = torch.tensor([[1, 0, 1, 0, 1, 1]], dtype=torch.uint8)  # a third alpha electron
    empty = torch.zeros(1, 6, dtype=torch.uint8)
    assert s.contains(torch.cat([inside, swapped, extra, empty])).tolist() == [True, False, False, False]


def test_impossible_sector_is_refused():
    with pytest.raises(ValueError, match="impossible"):
        Sector(3, 4, 0)
    with pytest.raises(ValueError, match="impossible"):
        Sector(3, 0, -1)


def test_pack_unpack_round_trip_up_to_the_limit():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 12, 31, 32, MAX_QUBITS):
        bits = torch.randint(0, 2, (64, n), generator=gen, dtype=torch.uint8)
        bits[0] = 1  # every bit set, the top one included
        packed = pack(bits)
        assert packed.dtype == torch.int64 and (packed >= 0).all()
        assert packed[0].item() == (1 << n) - 1
        assert torch.equal(unpack(packed, n), bits)
        assert torch.equal(unpack(packed, n, dtype=torch.float32), bits.float())
    assert pack(torch.tensor([[1, 0, 1, 1]])).item() == 0b1101  # bit i = x_i


def test_more_qubits_than_the_packing_holds_are_refused():
    over = MAX_QUBITS + 2
    with pytest.raises(ValueError, match=f"{over} qubits exceed the packed int64 encoding's limit of {MAX_QUBITS}"):
        pack(torch.ones(1, over, dtype=torch.uint8))
    with pytest.raises(ValueError, match="packed int64 encoding"):
        unpack(torch.zeros(1, dtype=torch.int64), over)
    assert Sector(over // 2, 1, 1).n_qubits == over  # a sector has no qubit limit (keys: nqs.keys)


def test_tokens_round_trip_and_alphabet():
    bits = Sector(5, 3, 2).enumerate_bits()
    tokens = bits_to_tokens(bits)
    assert tokens.shape == (bits.shape[0], 5) and tokens.dtype == torch.int64
    assert torch.equal(tokens_to_bits(tokens), bits)
    x = torch.tensor([[0, 0, 1, 0, 0, 1, 1, 1]], dtype=torch.uint8)  # empty, alpha, beta, both
    assert bits_to_tokens(x).tolist() == [[0, 1, 2, 3]]
