"""Pattern tables against a brute-force evaluation of the grouped Pauli sum; popcount; the int32 row guard."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nqs.pattern_tables import INT32_LIMIT, build_pattern_tables, check_int32_rows, popcount


def _tables(pauli):
    coeffs = pauli.term_coeffs.real.astype(np.float64)
    assert np.abs(pauli.term_coeffs.imag).max() < 1e-12  # molecular Hamiltonians: real elements
    return build_pattern_tables(pauli.n_qubits, pauli.flip_masks, pauli.term_group, pauli.term_signs, coeffs,
                                torch.device("cpu")), coeffs


def _brute_force(pauli, coeffs, packed: np.ndarray) -> np.ndarray:
    """H_k(x) = sum_{t in group k} c_t (-1)^{popcount(x & z_t)} for every x and flip mask k: (B, K) float64."""
    parity = np.array([[bin(int(x) & int(z)).count("1") & 1 for z in pauli.term_signs] for x in packed])
    out = np.zeros((len(packed), pauli.n_flip_masks))
    np.add.at(out.T, pauli.term_group, (coeffs[None, :] * (1 - 2 * parity)).T)
    return out


def _from_tables(t, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tables read by hand in float64 (not through nqs.local_energy): diagonal, elements, allowed."""
    x = bits.astype(np.float64)
    value = (t.bias.double().numpy() + x @ t.weights_t.double().numpy()).astype(np.int64)  # (B, K')
    rows, odd = value >> t.shift, value & 1
    linear = x @ t.linear_t.numpy()  # (B, R + 1)
    element = t.constant.numpy()[rows] + np.take_along_axis(linear, t.linear_row.numpy()[rows], axis=1)
    element *= 1 - 2 * odd
    diagonal = np.einsum("bi,ij,bj->b", x, t.diag_quadratic.numpy(), x) + t.diag_constant
    return diagonal, element, t.allowed.numpy()[rows]


@pytest.mark.parametrize("name", ["H2", "LiH"])
def test_tables_equal_the_brute_force_pauli_sum(problems, name):
    p = problems(name)
    pauli, n = p.pauli, p.n_qubits
    tables, coeffs = _tables(pauli)
    assert tables is not None and tables.constant.dtype == torch.float64
    bits = p.sector.enumerate_bits().numpy()
    packed = (bits.astype(np.int64) << np.arange(n)).sum(1)
    exact = _brute_force(pauli, coeffs, packed)
    diagonal, element, allowed = _from_tables(tables, bits)
    np.testing.assert_allclose(diagonal, exact[:, 0], rtol=0, atol=1e-10)

    sector = set(packed.tolist())
    target = packed[:, None] ^ pauli.flip_masks[None, 1:]
    in_sector = np.vectorize(sector.__contains__)(target)
    assert not (allowed & ~in_sector).any()  # the tables never leave the sector
    off = exact[:, 1:]
    np.testing.assert_allclose(np.where(allowed, element, 0.0), np.where(in_sector, off, 0.0), rtol=0, atol=1e-10)
    assert (np.abs(off[in_sector & ~allowed]) < 1e-10).all()  # a dropped pair has no element
    assert (allowed.sum(1) >= 1).all()  # every configuration has connections: the check covered real elements


def test_popcount_equals_int_bit_count():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(-2**63, 2**63 - 1, 1000, dtype=np.int64, endpoint=True),
                        np.array([0, 1, -1, 2**62 - 1, 2**63 - 1, -2**63], np.int64)])
    expected = np.array([(int(v) & (2**64 - 1)).bit_count() for v in a])
    got = popcount(a.reshape(2, -1))
    assert got.dtype == np.int64 and got.shape == (2, a.size // 2)
    assert np.array_equal(got.reshape(-1), expected)


def test_int32_guard_bound_is_tight():
    """At the limit the largest GEMM value (last mask, last pattern, all chain bits) is exactly 2^31 - 1."""
    n_off, width, shift = 131072, 256, 6
    largest = (n_off - 1) * (width << shift) + ((width - 1) << shift) + (1 << shift) - 1
    assert largest == INT32_LIMIT - 1 == torch.iinfo(torch.int32).max
    check_int32_rows(n_off, width, shift)  # fits
    with pytest.raises(ValueError, match=r"131073 off-diagonal flip masks x 256 patterns x 2\^6 = 2,147,500,032"):
        check_int32_rows(n_off + 1, width, shift)
    assert torch.tensor(float(largest + 1)).to(torch.int64).to(torch.int32).item() < 0  # why the guard exists


def test_build_refuses_tables_beyond_int32():
    """A 62-qubit Hamiltonian with 131,073 off-diagonal masks of up to 8 flipped qubits: a ValueError, at once."""
    n = 62
    candidates = np.arange(1, 2**19, dtype=np.int64)
    masks = candidates[popcount(candidates) <= 8][:131073]
    assert masks.size == 131073 and popcount(masks).max() == 8
    flip_masks = np.concatenate([[0], masks])
    group = np.arange(flip_masks.size, dtype=np.int64)
    with pytest.raises(ValueError, match="too large for int32"):
        build_pattern_tables(n, flip_masks, group, np.zeros_like(group), np.ones(group.size), torch.device("cpu"))
