"""The local-energy estimators (nqs.local_energy_modes) against the exact one on tiny molecules (float64)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nqs import local_energy_modes
from nqs.errors import UserError
from nqs.exact import sector_matrix
from nqs.flops import flop_counter, step_flops
from nqs.keys import index_of, pack, unique, unpack
from nqs.local_energy import connections, from_connections
from nqs.local_energy_modes import LocalEnergyMode, estimate, sampled_space, selection_rows
from nqs.models import ModelConfig, build_model
from nqs.vmc import vmc_step


def make(ansatz: str, sector, dtype=torch.float64):
    torch.manual_seed(0)
    return build_model(ModelConfig(ansatz, phase_layers=2), sector).to(dtype)


def in_chunks(mode: LocalEnergyMode, h, rows: int, batch: int) -> LocalEnergyMode:
    """`mode` with a chunk budget of about `rows` samples (fewer than the batch's `batch`)."""
    heat_bath = mode.name == "heat-bath"
    per_row = 2**40 // selection_rows(h, heat_bath, 2**40)
    mode = replace(mode, chunk_bytes=rows * per_row)
    assert 1 < selection_rows(h, heat_bath, mode.chunk_bytes) < batch
    return mode


@pytest.mark.parametrize("ansatz", ["transformer", "retnet", "made"])
def test_exact_paths_agree(problems, ansatz):
    p = problems("LiH")
    h, model = p.compiled(), make(ansatz, p.sector)
    bits = p.sector.enumerate_bits()[::3]
    dense = estimate(model, h, bits, LocalEnergyMode("exact-dense"))
    exact = estimate(model, h, bits, LocalEnergyMode("exact"))
    assert (exact.values - dense.values).abs().max().item() < 1e-10 and exact.n_evals == dense.n_evals
    assert not exact.rows_per_position  # LiH: 12 qubits, below TRIE_MIN_QUBITS, exact means exact-dense
    trie = estimate(model, h, bits, LocalEnergyMode("exact-trie"))  # every ansatz has an incremental step
    assert (trie.values - dense.values).abs().max().item() < 1e-10 and trie.rows_per_position


@pytest.mark.parametrize("name", ["exact-dense", "exact-trie"])
def test_exact_in_chunks_equals_one_call(problems, name):
    """With the chunk budget shrunk to 6 samples, the exact local energy holds one chunk's pairs at a time and
    gives the same values (1e-12 Ha) and connections; the chunks' memory of evaluated configurations evaluates
    each distinct one once, and without room in it (capacity 0) a configuration two chunks share is evaluated
    in each."""
    p = problems("LiH")
    h, model = p.compiled(), make("transformer", p.sector)
    bits = p.sector.enumerate_bits()[::3]
    whole = estimate(model, h, bits, LocalEnergyMode(name))
    chunked = estimate(model, h, bits, in_chunks(LocalEnergyMode(name), h, 6, bits.shape[0]))
    assert (chunked.values - whole.values).abs().max().item() < 1e-12
    assert chunked.n_connected == whole.n_connected and chunked.n_evals == whole.n_evals
    assert bool(chunked.rows_per_position) == (name == "exact-trie")
    forgetful = local_energy_modes._Remembered(lambda keys: model.log_psi(unpack(keys, h.n_qubits)), h.n_qubits, 0)
    rows = selection_rows(h, False, in_chunks(LocalEnergyMode(name), h, 6, bits.shape[0]).chunk_bytes)
    values = torch.cat([from_connections(h, b, connections(h, b), forgetful).values for b in torch.split(bits, rows)])
    assert (values - whole.values).abs().max().item() < 1e-12 and forgetful.n_evals > whole.n_evals


def test_exact_takes_the_trie_from_sixteen_qubits(problems):
    from nqs.local_energy_modes import TRIE_MIN_QUBITS

    small, large = problems("LiH").sector, problems("NH3").sector  # 12 and 16 qubits
    assert 2 * small.n_orb < TRIE_MIN_QUBITS <= 2 * large.n_orb
    assert LocalEnergyMode("exact").resolve(make("transformer", small)).name == "exact-dense"
    assert LocalEnergyMode("exact").resolve(make("transformer", large)).name == "exact-trie"
    assert LocalEnergyMode("exact").resolve(make("made", large)).name == "exact-dense"  # not faster (measured)


@pytest.mark.parametrize("ansatz", ["transformer", "made"])
def test_sampled_space_equals_exact_on_the_whole_sector(problems, ansatz):
    p = problems("H2O")
    h, model = p.compiled(), make(ansatz, p.sector)
    bits = p.sector.enumerate_bits()
    with torch.no_grad():
        log_psi = model.log_psi(bits)
    exact = estimate(model, h, bits, LocalEnergyMode("exact-dense"))
    sampled = estimate(model, h, bits, LocalEnergyMode("sampled"), log_psi_bits=log_psi)
    assert (sampled.values - exact.values).abs().max().item() < 1e-10
    assert sampled.n_evals == 0 and sampled.n_connected == exact.n_connected


def test_sampled_space_is_the_restricted_sum(problems):
    """On a subset S: E_loc(x) = sum_{x' in S} H_xx' psi(x') / psi(x), against the sector matrix."""
    p = problems("LiH")
    h, model = p.compiled(), make("retnet", p.sector)
    all_bits = p.sector.enumerate_bits()
    matrix, _ = sector_matrix(h, p.sector)  # rows/columns in enumerate_bits order
    keep = torch.randperm(len(all_bits), generator=torch.Generator().manual_seed(4))[:60].sort().values
    with torch.no_grad():
        log_psi = model.log_psi(all_bits[keep])
    got = sampled_space(h, all_bits[keep], log_psi).values
    sub = torch.as_tensor(matrix[keep.numpy()][:, keep.numpy()].toarray(), dtype=torch.complex128)
    psi = torch.exp(log_psi.to(torch.complex128))
    assert (got - (sub @ psi) / psi).abs().max().item() < 1e-10


@pytest.mark.parametrize("known,chunked", [(False, False), (True, False), (True, True)])
def test_semi_stochastic_with_zero_threshold_is_exact(problems, known, chunked):
    """threshold 0: every pair exact; with log psi of the sample set given, only the x' outside it are evaluated
    (also when the pairs are selected a few samples at a time: the x' are still deduplicated across chunks)."""
    p = problems("H2O")
    h, model = p.compiled(), make("transformer", p.sector)
    bits = p.sector.enumerate_bits()[::2]
    exact = estimate(model, h, bits, LocalEnergyMode("exact"))
    mode = LocalEnergyMode("semi-stochastic", threshold=0.0, draws=1)
    mode = in_chunks(mode, h, 7, bits.shape[0]) if chunked else mode
    with torch.no_grad():
        log_psi = model.log_psi(bits) if known else None
    semi = estimate(model, h, bits, mode, torch.Generator().manual_seed(0), log_psi_bits=log_psi)
    assert (semi.values - exact.values).abs().max().item() < 1e-12
    conn = connections(h, bits)
    outside = index_of(pack(bits), unique(conn.keys, h.n_qubits)[0], h.n_qubits) < 0
    assert semi.n_evals == (int(outside.sum()) if known else exact.n_evals)


@pytest.mark.parametrize("name,path", [("semi-stochastic", "auto"), ("heat-bath", "integrals")])
def test_semi_stochastic_on_one_ranks_share_uses_the_whole_sample_set(problems, name, path):
    """Under DDP a rank holds every other sample; the set whose log psi is known (and whose x' are summed
    exactly) is the whole sample set: threshold 0 gives exact values, and only x' outside the set are evaluated
    (both unbiased estimators: the enumerating one and heat-bath)."""
    p = problems("H2O")
    h, model = p.compiled(connections=path), make("retnet", p.sector)
    space = p.sector.enumerate_bits()[::3]
    share = space[1::2]
    with torch.no_grad():
        log_space = model.log_psi(space)
    exact = estimate(model, h, share, LocalEnergyMode("exact"))
    semi = estimate(model, h, share, LocalEnergyMode(name, threshold=0.0), torch.Generator(),
                    log_psi_bits=log_space[1::2], space_bits=space, space_log_psi=log_space)
    assert (semi.values - exact.values).abs().max().item() < 1e-12
    distinct = unique(connections(h, share).keys, h.n_qubits)[0]
    assert semi.n_evals == int((index_of(pack(space), distinct, h.n_qubits) < 0).sum())


@pytest.mark.parametrize("threshold,draws,known,chunked", [(2e-3, 2, True, False), (10.0, 3, True, False),
                                                           (2e-3, 2, False, False), (2e-3, 2, True, True)])
def test_semi_stochastic_is_unbiased(problems, threshold, draws, known, chunked):
    """Mean over 300 draws within 3 sigma of exact: the weighted energy, and every sample's E_loc; on a
    subset of the sector, so that pairs inside and outside the sample set both occur (`chunked`: selected five
    samples at a time)."""
    p = problems("LiH")
    h, model = p.compiled(), make("retnet", p.sector)
    bits = p.sector.enumerate_bits()[::5]
    weights = torch.rand(len(bits), generator=torch.Generator().manual_seed(2), dtype=torch.float64) ** 4
    weights = weights / weights.sum()
    with torch.no_grad():
        log_psi = model.log_psi(bits) if known else None
    exact = estimate(model, h, bits, LocalEnergyMode("exact")).values
    mode, g = LocalEnergyMode("semi-stochastic", threshold=threshold, draws=draws), torch.Generator().manual_seed(3)
    mode = in_chunks(mode, h, 5, bits.shape[0]) if chunked else mode
    draws_ = torch.stack([estimate(model, h, bits, mode, g, log_psi_bits=log_psi, weights=weights).values
                          for _ in range(300)])  # (300, B)
    sigma = draws_.real.std(0) / 300 ** 0.5
    assert bool((sigma > 0).any())  # something was drawn
    assert bool(((draws_.real.mean(0) - exact.real).abs() <= 3 * sigma + 1e-12).float().mean() >= 0.99)
    energies = (draws_ * weights).sum(1)
    e_exact = (exact * weights).sum().real
    assert abs(energies.real.mean() - e_exact) < 3 * energies.real.std() / 300 ** 0.5


def test_semi_stochastic_draws_for_light_samples_only(problems):
    """The threshold is on w_x |H_xx'|: a sample holding almost all the weight keeps every connection exact."""
    p = problems("LiH")
    h, model = p.compiled(), make("transformer", p.sector)
    bits = p.sector.enumerate_bits()[::7]
    weights = torch.full((len(bits),), 1e-9, dtype=torch.float64)
    weights[0] = 1.0
    exact = estimate(model, h, bits, LocalEnergyMode("exact")).values
    mode = LocalEnergyMode("semi-stochastic", threshold=1e-11, draws=1)
    got = estimate(model, h, bits, mode, torch.Generator().manual_seed(5), weights=weights / weights.sum()).values
    assert abs(got[0] - exact[0]).item() < 1e-10 and (got[1:] - exact[1:]).abs().max().item() > 1e-8


@pytest.mark.parametrize("mode", ["exact-dense", "exact-trie", "sampled", "semi-stochastic"])
def test_step_flops_match_each_mode(problems, mode):
    """The logged FLOPs of a whole step under each estimator against FlopCounterMode on that step."""
    p = problems("LiH")
    h = p.compiled()
    cfg = ModelConfig("transformer")
    torch.manual_seed(0)
    model = build_model(cfg, p.sector)
    out = {}

    def step():
        out["r"] = vmc_step(model, h, 1e6, 60, torch.Generator().manual_seed(1),
                            mode=LocalEnergyMode(mode, threshold=0.02, draws=2))
        out["r"].loss.backward()

    with flop_counter() as counter:
        step()
    r = out["r"]
    counts = step_flops(cfg, p.sector, r.samples.rows_per_position, r.n_evals, r.samples.n_unique,
                        h.gemm_columns, r.le_rows)
    assert counts["total"] == pytest.approx(counter.get_total_flops(), rel=1e-6)
    assert r.local_energy_mode == mode and (r.n_evals == 0) == (mode == "sampled")


def test_modes_are_validated():
    with pytest.raises(UserError, match="unknown local_energy 'fast'"):
        LocalEnergyMode("fast")
    with pytest.raises(UserError, match="semi_threshold"):
        LocalEnergyMode("semi-stochastic", threshold=-1.0)
    with pytest.raises(UserError, match="semi_draws"):
        LocalEnergyMode("semi-stochastic", draws=0)
    assert (LocalEnergyMode("semi-stochastic", 0.01, 8).estimator
            == "semi-stochastic(weighted_threshold=0.01,draws=8)")
    assert LocalEnergyMode("exact-dense").estimator == LocalEnergyMode("exact-trie").estimator == "exact"

