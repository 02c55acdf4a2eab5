"""The CCSD state e^{T1+T2}|HF⟩ (nqs.coupled_cluster, `--init-state ccsd`): the CCSD equations hold for it under our
Hamiltonian, the truncated expansion equals the dense exponential where nothing is truncated, and the stratified
batches of the fit are unbiased."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nqs.coupled_cluster import ccsd_amplitudes, ccsd_state, cc_expansion, spin_orbital_excitations
from nqs.exact import amplitude_lookup
from nqs.keys import unpack
from nqs.local_energy import local_energy
from nqs.pretrain import StratifiedSampler, stratified_batch
from nqs.target_states import TargetState


def _expansion(ints, max_rank):
    t1, t2, energy = ccsd_amplitudes(ints)
    singles, doubles = spin_orbital_excitations(t1, t2)
    reference = (1 << (2 * ints.n_alpha)) - 1
    keys, values = cc_expansion(singles, doubles, reference, max_rank)
    bits = unpack(torch.from_numpy(keys).unsqueeze(-1), 2 * ints.n_orb)
    rank = np.bitwise_count(keys & ~np.int64(reference))
    return bits, torch.from_numpy(values), torch.from_numpy(rank), energy, (singles, doubles)


@pytest.mark.parametrize("name", ["LiH", "H2O", "H6"])
def test_the_ccsd_state_solves_the_ccsd_equations_under_our_hamiltonian(problems, name):
    """⟨HF|H|ψ⟩ = E_CCSD and (Hψ)_D = E_CCSD ψ_D on every single and double D, with ψ = e^T|HF⟩ up to
    quadruples (all H reaches from a double): a wrong sign or factor on any triple or quadruple breaks it."""
    p = problems(name)
    bits, psi, rank, energy, _ = _expansion(p.integrals, 4)
    assert int(rank.max()) == 4 and psi[rank == 0].item() == 1.0
    low = rank <= 2
    e_loc = local_energy(p.compiled(), bits[low], amplitude_lookup(bits, psi)).values.real
    assert float(e_loc[rank[low] == 0]) == pytest.approx(energy, abs=1e-9)
    residual = (e_loc - energy) * psi[low]  # (Hψ)_D − E ψ_D, in Hartree
    assert float(residual.abs().max()) < 1e-7
    assert energy < p.references.e_hf - 1e-3


def test_the_expansion_where_nothing_is_truncated_is_the_exponential(problems):
    """H4 (4 electrons): Σ_k T^k/k! |HF⟩ up to rank 4 equals expm(T)|HF⟩ with T built by OpenFermion from the same
    operators (its Jordan–Wigner matrices), every amplitude to 1e-12."""
    import scipy.sparse.linalg
    from openfermion import FermionOperator, get_sparse_operator

    ints = problems("H4").integrals
    bits, psi, _, _, excitations = _expansion(ints, 4)
    n = 2 * ints.n_orb
    t = FermionOperator()
    for ops in excitations:
        for ann, cre, amp in zip(ops.annihilate, ops.create, ops.amplitude):
            # acting order a_ann[0] first ... a†_cre[-1] last: the string reads right to left
            term = tuple((int(q), 1) for q in cre[::-1]) + tuple((int(q), 0) for q in ann[::-1])
            t += FermionOperator(term, float(amp))
    matrix = get_sparse_operator(t, n_qubits=n).tocsc()
    hf = np.zeros(2 ** n)
    hf[int("1" * (2 * ints.n_alpha) + "0" * (n - 2 * ints.n_alpha), 2)] = 1.0
    dense = scipy.sparse.linalg.expm_multiply(matrix, hf)
    index = (bits.to(torch.int64) * (2 ** torch.arange(n - 1, -1, -1))).sum(-1).numpy()
    assert np.allclose(dense[index], psi.numpy(), atol=1e-12, rtol=0)
    dense[index] = 0
    assert np.abs(dense).max() < 1e-12  # nothing outside the expansion


def test_the_ccsd_state_is_screened_sorted_and_normalised(problems):
    ints = problems("H6").integrals
    state = ccsd_state(ints, tol=1e-4)
    full = ccsd_state(ints, tol=0.0)
    c = state.amplitudes.abs()
    assert state.kind == "ccsd" and "screened weight" in state.detail and "rank <= 4" in state.detail
    assert torch.all(c[:-1] >= c[1:]) and float(state.amplitudes.norm()) == pytest.approx(1.0, abs=1e-12)
    assert 0 < state.bits.shape[0] < full.bits.shape[0]
    assert float(c.min() / c.max()) >= 1e-4 * 0.99  # |c| >= tol with c_HF = 1, after normalising


def test_open_shells_are_refused_with_one_line():
    from nqs.errors import UserError
    from nqs.molecules import resolve_molecule
    from nqs.problem import build_problem

    with pytest.raises(UserError, match="closed shell"):
        ccsd_state(build_problem(resolve_molecule("CH2")).integrals)


def test_a_stratified_batch_gives_unbiased_sums():
    """Over many draws the batch's Σ c² f(x) averages to the target's, for any f; the head is always whole."""
    torch.manual_seed(0)
    k, size = 5000, 200
    amplitudes = torch.randn(k, dtype=torch.float64) * torch.exp(-torch.arange(k) / 800.0)
    amplitudes = amplitudes / amplitudes.norm()
    bits = torch.arange(k).unsqueeze(-1)  # row ids stand in for the determinants
    target = TargetState(bits, amplitudes, 0.0, "test")
    f = torch.sin(torch.arange(k, dtype=torch.float64))
    exact = float((amplitudes ** 2 * f).sum())
    estimates = []
    for _ in range(400):
        batch = stratified_batch(target, size)
        assert batch.bits.shape[0] == size
        assert float((batch.amplitudes ** 2).sum()) == pytest.approx(1.0, abs=1e-12)
        assert torch.equal(torch.sign(batch.amplitudes), torch.sign(amplitudes[batch.bits[:, 0]]))
        estimates.append(float((batch.amplitudes ** 2 * f[batch.bits[:, 0]]).sum()))
    estimates = np.array(estimates)
    assert abs(estimates.mean() - exact) < 4 * estimates.std() / np.sqrt(len(estimates))
    assert stratified_batch(target, k) is target
    sampler = StratifiedSampler(target, size)  # kept by a fit: the head found once, the rest drawn by its weights
    head = set(torch.topk(amplitudes.abs(), size // 2).indices.tolist())
    drawn = torch.cat([sampler.draw().bits[size // 2:, 0] for _ in range(200)])
    assert not head & set(drawn.tolist())  # a head determinant is never drawn again
    counts = torch.bincount(drawn, minlength=k).to(torch.float64)
    rest = amplitudes ** 2
    rest[list(head)] = 0
    expected = rest / rest.sum() * drawn.numel()
    frequent = expected > 20
    assert float(((counts - expected)[frequent] ** 2 / expected[frequent]).sum()) < 2 * int(frequent.sum())  # χ²
    first, second = (sampler.draw(torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first.bits, second.bits) and torch.equal(first.amplitudes, second.amplitudes)


def test_a_run_from_the_ccsd_state_records_it(tmp_path):
    from nqs.cli.train import main
    from nqs.record import read_summary

    out = tmp_path / "run"
    main(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "3", "--init-state", "ccsd",
          "--init-steps", "30", "--init-lr", "1e-2", "--unique", "64", "--final-unique", "500", "--out", str(out)])
    notes = [n for n in read_summary(out).notes if n.startswith("initial state")]
    assert len(notes) == 1 and "CCSD state" in notes[0] and "projective" in notes[0] and "fidelity" in notes[0]
