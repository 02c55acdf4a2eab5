"""Tail rows of stochastic reconfiguration (nqs.sr_tail, `--sr-tail K`): the configurations and targets against
the sector's matrix (float64), the stacked solve against the dense least-squares problem, a run that uses them."""
from __future__ import annotations

import math

import torch

from nqs.exact import sector_matrix
from nqs.keys import index_of, pack
from nqs.natural_gradient import _solve_with_tail, log_psi_jacobian
from nqs.sr_tail import tail_rows
from tests.test_natural_gradient import SMALL


def _setup(problems):
    p = problems("LiH")
    torch.manual_seed(7)
    from nqs.models import build_model

    model = build_model(SMALL["transformer"], p.sector).double()
    h = p.compiled()
    matrix, bits = sector_matrix(h, p.sector)
    with torch.no_grad():
        psi = torch.exp(model.log_psi(bits).to(torch.complex128))
    order = torch.argsort(psi.abs(), descending=True)
    sample = order[:40]  # the "sample": the 40 configurations of largest probability
    return model, h, matrix, bits, psi, sample


def _energy(matrix, psi) -> float:
    """<ψ|H|ψ> / <ψ|ψ> of the model over the sector (Hartree)."""
    return float((psi.conj() @ torch.from_numpy(matrix @ psi.numpy())).real / (psi.abs() ** 2).sum())


def test_tail_rows_are_the_imaginary_time_step_outside_the_sample(problems):
    model, h, matrix, bits, psi, sample = _setup(problems)
    energy, tau, k = _energy(matrix, psi), 2.0, 12  # τ 2/Ha: 10 of the candidates grow
    rows = tail_rows(model, h, bits[sample], energy, tau, k, cap=2.0, pool=10**6)  # pool: every candidate
    with torch.no_grad():
        given = tail_rows(model, h, bits[sample], energy, tau, k, cap=2.0, pool=10**6,
                          log_psi_bits=model.log_psi(bits[sample]))  # the step's own log ψ, reused
    assert torch.equal(given.bits, rows.bits) and torch.equal(given.target, rows.target)
    assert rows.evaluations - given.evaluations == len(sample)
    # reference: (H ψ_S)(x') with ψ_S = ψ on the sample, 0 elsewhere, from the sector's sparse matrix
    psi_s = torch.zeros_like(psi)
    psi_s[sample] = psi[sample]
    h_psi = torch.from_numpy(matrix @ psi_s.numpy())
    inside = torch.zeros(len(bits), dtype=torch.bool)
    inside[sample] = True
    connected = (h_psi.abs() > 0) & ~inside
    diagonal = torch.from_numpy(matrix.diagonal()).to(torch.complex128)
    stepped = (psi - tau * h_psi) / (1 + tau * (diagonal - energy).real.clamp_min(0))
    grows = connected & (stepped.abs() > psi.abs() * math.e ** 0.5)
    expected = torch.argsort(torch.where(grows, stepped.abs() ** 2, torch.zeros(len(bits), dtype=torch.float64)),
                             descending=True)[:min(k, int(grows.sum()))]
    assert 2 <= len(expected) == rows.bits.shape[0]
    at = index_of(pack(bits), pack(rows.bits), h.n_qubits)
    assert sorted(at.tolist()) == sorted(expected.tolist())  # the same configurations, none inside the sample
    assert not inside[at].any()
    assert torch.allclose(rows.weights, stepped[at].abs() ** 2, rtol=1e-10, atol=0)
    ratio = stepped[at] / psi[at]
    assert torch.allclose(rows.target.real, torch.log(ratio.abs()).clamp(max=2.0), rtol=1e-10, atol=1e-12)
    assert torch.allclose(torch.polar(torch.ones_like(ratio.real), rows.target.imag), ratio / ratio.abs(),
                          rtol=1e-10, atol=1e-12)


def test_the_stacked_solve_is_the_dense_least_squares_step(problems):
    model, h, matrix, bits, psi, sample = _setup(problems)
    rows = tail_rows(model, h, bits[sample], _energy(matrix, psi), 2.0, 12)
    w = (psi[sample].abs() ** 2).to(torch.float64)
    jac, tail_jac = log_psi_jacobian(model, bits[sample]), log_psi_jacobian(model, rows.bits)
    n_params = sum(q.numel() for q in model.parameters())
    torch.manual_seed(0)
    grad = torch.randn(n_params, dtype=torch.float64)
    lr, shift = 0.4, 1e-3
    ours = _solve_with_tail(grad, jac, w, tail_jac, rows, lr, shift)
    # dense: rows [√w (O − Ō)] for the sample and [√w_t (O_t − Ō)] for the tail, per block (Re: modulus, Im: phase)
    wn = w / w.sum()
    for part, idx, target in ((0, jac.index_modulus, rows.target.real), (1, jac.index_phase, rows.target.imag)):
        o, o_t = jac.dense()[:, part][:, idx], tail_jac.dense()[:, part][:, idx]
        mean = wn @ o
        j = (o - mean) * wn.sqrt()[:, None]
        j_t = (o_t - mean) * rows.weights.sqrt()[:, None]
        lhs = j.T @ j + j_t.T @ j_t + shift * torch.eye(idx.numel(), dtype=torch.float64)
        rhs = grad[idx] / 2 - j_t.T @ (rows.weights.sqrt() * target / lr)
        reference = torch.linalg.solve(lhs, rhs)
        assert torch.linalg.vector_norm(ours[idx] - reference) <= 1e-8 * torch.linalg.vector_norm(reference)
        # the step −lr·d moves each tail row's log ψ toward its target (a least-squares compromise, not exactly)
        moved = -lr * (o_t - mean) @ reference
        assert float((moved * target).sum()) > 0
        # SPRING's prior μ·d_prev enters the right-hand side as λμ d_prev
        prior = torch.linspace(-1.0, 1.0, n_params, dtype=torch.float64)
        spring = _solve_with_tail(grad, jac, w, tail_jac, rows, lr, shift, 0.9 * prior)
        reference = torch.linalg.solve(lhs, rhs + shift * 0.9 * prior[idx])
        assert torch.linalg.vector_norm(spring[idx] - reference) <= 1e-8 * torch.linalg.vector_norm(reference)


def test_a_run_with_tail_rows_records_them(tmp_path):
    """Adam without annealing concentrates LiH on a few configurations within 20 steps; the SR steps after it
    find connected configurations outside a 24-configuration sample that an imaginary-time step would grow."""
    from nqs.cli.train import main
    from nqs.record import read_metrics, read_summary

    out = tmp_path / "run"
    main(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "24", "--optimizer", "adam+sr", "--sr-from",
          "20", "--sr-tail", "8", "--sr-lr", "0.5", "--warmup", "0", "--anneal-t0", "0", "--lr", "0.05", "--unique",
          "24", "--samples", "1e6", "--final-unique", "500", "--out", str(out)])
    rows = read_metrics(out)
    assert all(r.sr_tail_rows is None for r in rows[:20])  # Adam steps
    assert all(0 <= r.sr_tail_rows <= 8 for r in rows[20:]) and any(r.sr_tail_rows for r in rows[20:])
    assert math.isfinite(read_summary(out).energy)


def test_rows_are_kept_only_where_the_sample_determines_the_step(problems):
    """With probability `missing` outside the sample, the configurations outside it could add up to
    √missing·‖H_x'·‖ to (Hψ)(x') (Cauchy–Schwarz); a row needs its sum over the sample to exceed twice that."""
    model, h, matrix, bits, psi, sample = _setup(problems)
    energy = _energy(matrix, psi)
    every = tail_rows(model, h, bits[sample], energy, 2.0, 10**6, pool=1)  # every growing candidate
    missing = 1e-3
    kept = tail_rows(model, h, bits[sample], energy, 2.0, 10**6, pool=1, missing=missing)
    psi_s = torch.zeros_like(psi)
    psi_s[sample] = psi[sample]
    h_psi = torch.from_numpy(matrix @ psi_s.numpy())
    off = matrix.copy()
    off.setdiag(0)
    row_norm = torch.from_numpy(abs(off).power(2).sum(axis=1).A1).sqrt()
    at_every = index_of(pack(bits), pack(every.bits), h.n_qubits)
    determined = h_psi[at_every].abs() > 2 * missing ** 0.5 * row_norm[at_every]
    assert 0 < int(determined.sum()) < len(at_every)  # the bound bites on some, not all
    at_kept = index_of(pack(bits), pack(kept.bits), h.n_qubits)
    assert sorted(at_kept.tolist()) == sorted(at_every[determined].tolist())


def test_no_tail_rows_when_the_sample_is_the_whole_sector(problems):
    model, h, matrix, bits, psi, sample = _setup(problems)
    rows = tail_rows(model, h, bits, _energy(matrix, psi), 0.5, 12)
    assert rows.bits.shape[0] == 0 and rows.evaluations == len(bits)


def test_blocks_of_the_sample_give_the_exact_step(problems):
    """Memory (issue 16): the sample's connections are read a few samples at a time. With every candidate kept
    per block the rows equal the one-block rows (the sums over the sample re-taken from the candidates' own
    connections); with a small pool each row kept is still the exact imaginary-time step of its configuration."""
    from nqs.sr_tail import PAIR_BYTES

    model, h, matrix, bits, psi, sample = _setup(problems)
    energy, tau, k = _energy(matrix, psi), 2.0, 12
    three = 3 * PAIR_BYTES * h.n_flip_masks  # three samples a block: 14 blocks

    def by_key(rows):
        return dict(zip(map(tuple, pack(rows.bits).tolist()), rows.target.tolist()))

    whole = by_key(tail_rows(model, h, bits[sample], energy, tau, k, pool=10**6))
    blocks = by_key(tail_rows(model, h, bits[sample], energy, tau, k, pool=10**6, memory_bytes=three))
    assert whole.keys() == blocks.keys() and len(whole) >= 2
    assert max(abs(whole[key] - blocks[key]) for key in whole) < 1e-12
    psi_s = torch.zeros_like(psi)
    psi_s[sample] = psi[sample]
    h_psi = torch.from_numpy(matrix @ psi_s.numpy())
    diagonal = torch.from_numpy(matrix.diagonal()).to(torch.complex128)
    stepped = (psi - tau * h_psi) / (1 + tau * (diagonal - energy).real.clamp_min(0))
    few = tail_rows(model, h, bits[sample], energy, tau, k, pool=1, memory_bytes=three)
    at = index_of(pack(bits), pack(few.bits), h.n_qubits)
    expected = torch.complex(torch.log(stepped[at].abs() / psi[at].abs()).clamp(max=2.0),
                             torch.angle(stepped[at] * psi[at].conj()))
    assert 1 <= len(at) and (few.target - expected).abs().max().item() < 1e-10
