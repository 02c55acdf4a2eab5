"""Multi-word configuration keys (nqs.keys) at 64, 100 and 128 qubits, against Python tuples as the brute force."""
from __future__ import annotations

import pytest
import torch

from nqs import hilbert
from nqs.hilbert import Sector
from nqs.keys import BITS_PER_WORD, flip, index_of, lexsort, n_words, pack, unique, unpack


def _in_sector(n_orb: int, n_alpha: int, n_beta: int, rows: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, 2 n_orb) uint8 random configurations of the sector, some repeated."""
    out = torch.zeros(rows, 2 * n_orb, dtype=torch.uint8)
    for spin, m in ((0, n_alpha), (1, n_beta)):
        occ = torch.rand(rows, n_orb, generator=gen).argsort(1)[:, :m]
        out[:, spin::2].scatter_(1, occ, 1)
    return torch.cat([out, out[: rows // 3]])  # duplicates for the deduplication


@pytest.mark.parametrize("n", [64, 100, 128])
def test_round_trip_and_word_layout(n):
    gen = torch.Generator().manual_seed(n)
    bits = torch.randint(0, 2, (50, n), generator=gen, dtype=torch.uint8)
    bits[0] = 1  # every bit set: no word may turn negative
    keys = pack(bits)
    assert keys.shape == (50, n_words(n)) and n_words(n) == -(-n // 63) and (keys >= 0).all()
    assert torch.equal(unpack(keys, n), bits) and torch.equal(unpack(keys, n, torch.float32), bits.float())
    for i in (0, 62, 63, n - 1):  # bit i of x is bit i % 63 of word i // 63
        one = torch.zeros(1, n, dtype=torch.uint8)
        one[0, i] = 1
        expected = torch.zeros(1, n_words(n), dtype=torch.int64)
        expected[0, i // BITS_PER_WORD] = 1 << (i % BITS_PER_WORD)
        assert torch.equal(pack(one), expected)


def test_one_word_keys_are_the_packed_encoding():
    bits = Sector(6, 3, 2).enumerate_bits()
    assert torch.equal(pack(bits)[:, 0], hilbert.pack(bits)) and pack(bits).shape[1] == 1


@pytest.mark.parametrize("n_orb", [32, 50, 64])
def test_unique_lookup_and_flip_against_python_tuples(n_orb):
    gen = torch.Generator().manual_seed(n_orb)
    n_alpha, n_beta = n_orb // 2, n_orb // 2 - 1
    bits = _in_sector(n_orb, n_alpha, n_beta, 300, gen)
    sector = Sector(n_orb, n_alpha, n_beta)
    assert bool(sector.contains(bits).all()) and sector.n_qubits == 2 * n_orb
    keys = pack(bits)
    distinct, inverse = unique(keys, 2 * n_orb)
    rows = [tuple(r) for r in bits.tolist()]
    assert len(set(rows)) == distinct.shape[0] and torch.equal(distinct[inverse], keys)
    assert {tuple(r) for r in unpack(distinct, 2 * n_orb).tolist()} == set(rows)
    assert bool(sector.contains(unpack(distinct, 2 * n_orb)).all())  # deduplication keeps the sector
    order = lexsort(distinct)
    assert torch.equal(order, torch.arange(distinct.shape[0]))  # unique returns them sorted
    # a sector-preserving double excitation (alpha i -> a, beta j -> b) flipped on the keys equals it on the bits
    x = bits[:40].clone()
    i = x[:, 0::2].argmax(1) * 2
    a = (1 - x[:, 0::2]).argmax(1) * 2
    j = x[:, 1::2].argmax(1) * 2 + 1
    b = (1 - x[:, 1::2]).argmax(1) * 2 + 1
    moved = flip(pack(x), torch.stack([i, a, j, b], 1))
    for q in (i, a, j, b):
        x[torch.arange(40), q] ^= 1
    assert torch.equal(moved, pack(x)) and bool(sector.contains(x).all())
    # lookup: every moved key found where it is, the absent ones -1
    table = distinct
    found = index_of(table, moved, 2 * n_orb)
    known = {tuple(r): k for k, r in enumerate(unpack(table, 2 * n_orb).tolist())}
    assert found.tolist() == [known.get(tuple(r), -1) for r in x.tolist()]
    assert index_of(table, table).tolist() == list(range(table.shape[0]))
    assert index_of(table[:0], table).tolist() == [-1] * table.shape[0]


def test_lookup_stays_exact_when_two_table_keys_share_a_hash():
    from nqs.keys import _fold

    table = torch.tensor([[0, 5], [1, 5 + 7046029254386353131]])  # word 0 times the multiplier cancels the offset
    assert _fold(table)[0] == _fold(table)[1]
    queries = torch.tensor([[1, 5 + 7046029254386353131], [0, 5], [0, 6]])
    assert index_of(table, queries).tolist() == [1, 0, -1]


@pytest.mark.parametrize("n", [30, 100])
def test_a_kept_index_answers_as_index_of_on_every_lookup(n):
    from nqs.keys import KeyIndex

    g = torch.Generator().manual_seed(n)
    table = unique(pack((torch.rand(300, n, generator=g) < 0.5).to(torch.uint8)))[0]
    index = KeyIndex(table)
    for _ in range(3):  # the sorted table is reused: each answer must still be the fresh lookup's
        queries = torch.cat([table[torch.randint(0, len(table), (50,), generator=g)],
                             pack((torch.rand(20, n, generator=g) < 0.5).to(torch.uint8))])
        rows = index(queries)
        assert torch.equal(rows, index_of(table, queries))
        assert torch.equal(table[rows[rows >= 0]], queries[rows >= 0]) and (rows[:50] >= 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("n_orb", [50, 64])
def test_keys_on_cuda_equal_cpu(n_orb):
    """The same functions on CUDA: packing, deduplication, order, lookup and flips agree with the CPU exactly."""
    gen = torch.Generator().manual_seed(n_orb)
    n = 2 * n_orb
    bits = _in_sector(n_orb, n_orb // 2, n_orb // 2, 2000, gen)
    keys, gpu_keys = pack(bits), pack(bits.cuda())
    assert gpu_keys.is_cuda and torch.equal(gpu_keys.cpu(), keys)
    assert torch.equal(unpack(gpu_keys, n).cpu(), bits)
    distinct, inverse = unique(keys, n)
    gpu_distinct, gpu_inverse = unique(gpu_keys, n)
    assert torch.equal(gpu_distinct.cpu(), distinct) and torch.equal(gpu_inverse.cpu(), inverse)
    assert torch.equal(lexsort(gpu_keys).cpu(), lexsort(keys))
    qubits = torch.stack([torch.randperm(n, generator=gen)[:4] for _ in range(len(bits))])
    moved = flip(keys, qubits)
    assert torch.equal(flip(gpu_keys, qubits.cuda()).cpu(), moved)
    queries = torch.cat([moved, keys])
    assert torch.equal(index_of(gpu_distinct, queries.cuda(), n).cpu(), index_of(distinct, queries, n))
