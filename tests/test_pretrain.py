"""The initial state from CISD (nqs.pretrain, `--init-state cisd`): the determinants and signs against PySCF's
own FCI-sized vector, the CISD energy through our Hamiltonian, the interleaved sign convention against
`nqs.exact.fci_state`, and the fit of a network to the state."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nqs.exact import amplitude_lookup, fci_state
from nqs.hilbert import from_pyscf_strings
from nqs.keys import index_of, pack
from nqs.local_energy import local_energy
from nqs.pretrain import fidelity, fit_loss, fit_quality, pretrain
from nqs.target_states import TargetState, _mean_field, cisd_state


@pytest.mark.parametrize("name", ["LiH", "H2O", "H6"])
def test_cisd_determinants_equal_pyscfs_fci_sized_vector(problems, name):
    from pyscf.ci import cisd
    from pyscf.fci import cistring

    ints = problems(name).integrals
    n, occ = ints.n_orb, ints.n_alpha
    solver = cisd.CISD(_mean_field(ints))
    solver.verbose = 0
    _, civec = solver.kernel()
    dense = cisd.to_fcivec(civec, n, (occ, occ))  # PySCF's own conversion, (alpha strings, beta strings)
    strings = cistring.make_strings(range(n), occ)
    alpha, beta = np.meshgrid(strings, strings, indexing="ij")
    all_bits, sign = from_pyscf_strings(alpha.ravel(), beta.ravel(), n)
    expected = torch.from_numpy(dense.ravel() * sign)
    state = cisd_state(ints)
    keys = pack(all_bits)
    row = index_of(keys, pack(state.bits))
    assert (row >= 0).all() and len(set(row.tolist())) == row.numel()  # every determinant once
    norm = float(expected.norm())
    assert torch.allclose(state.amplitudes, expected[row] / norm, atol=1e-12, rtol=0)
    missing = torch.ones(expected.numel(), dtype=torch.bool)
    missing[row] = False
    assert float(expected[missing].abs().max()) < 1e-14 * norm  # the rest: zeros (outside CISD, or by symmetry)


@pytest.mark.parametrize("name", ["LiH", "H2O", "N2"])
def test_the_cisd_state_has_the_cisd_energy_under_our_hamiltonian(problems, name):
    """⟨c|H|c⟩ with our Jordan–Wigner Hamiltonian equals PySCF's CISD energy: a wrong sign on any determinant
    that H connects would change it."""
    p = problems(name)
    state = cisd_state(p.integrals)
    log_psi = amplitude_lookup(state.bits, state.amplitudes)
    e_loc = local_energy(p.compiled(), state.bits, log_psi).values
    energy = float((state.amplitudes ** 2 * e_loc.real).sum())
    assert energy == pytest.approx(state.energy, abs=1e-9)
    assert state.energy < p.references.e_hf - 1e-3  # a correlated state, not the reference alone


def test_pyscf_strings_give_fci_states_sign_convention(problems):
    """`from_pyscf_strings` is the convention `nqs.exact.fci_state` uses: the FCI state from it is an eigenvector
    of our Hamiltonian (local energy flat at E_FCI)."""
    p = problems("H2O")
    bits, psi, e_fci = fci_state(p)
    big = psi.abs() > 1e-6
    e_loc = local_energy(p.compiled(), bits[big], amplitude_lookup(bits, psi)).values
    assert torch.allclose(e_loc.real, torch.full_like(e_loc.real, e_fci), atol=1e-6)


def test_pretraining_raises_the_fidelity(problems):
    from nqs.models import build_model
    from tests.test_natural_gradient import SMALL

    p = problems("LiH")
    torch.manual_seed(0)
    model = build_model(SMALL["retnet"], p.sector).double()
    state = cisd_state(p.integrals)
    info = pretrain(model, state, steps=300, lr=1e-2)
    assert info["fidelity"] > 0.98 and info["fidelity_start"] < 0.5
    with torch.no_grad():
        assert float(fidelity(model, state)) == pytest.approx(info["fidelity"], abs=1e-12)
        assert float(fidelity(model, state, chunk=7)) == pytest.approx(info["fidelity"], abs=1e-12)
    assert info["fidelity"] <= info["moduli"] + 1e-12 and info["moduli"] <= info["mass"] + 1e-12 <= 1 + 2e-12


class _Table(torch.nn.Module):
    """A 'model' whose amplitudes are a table (for fit_quality)."""

    def __init__(self, bits, amplitudes):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.log_psi = amplitude_lookup(bits, amplitudes)


def test_fit_quality_splits_the_shortfall_into_moduli_and_phases(problems):
    """A model equal to the target has fidelity 1; with one large amplitude's sign flipped the moduli still allow
    1 and the fidelity drops by 4c²(1 − c²); a model whose probability leaves the target loses mass."""
    state = cisd_state(problems("LiH").integrals)
    c = state.amplitudes
    assert fit_quality(_Table(state.bits, c), state) == pytest.approx({"fidelity": 1, "moduli": 1, "mass": 1})
    k = int(c[1:].abs().argmax()) + 1
    flipped = c.clone()
    flipped[k] = -flipped[k]
    q = fit_quality(_Table(state.bits, flipped), state)
    assert q["moduli"] == pytest.approx(1) and q["mass"] == pytest.approx(1)
    assert q["fidelity"] == pytest.approx((1 - 2 * float(c[k]) ** 2) ** 2, abs=1e-12) and q["fidelity"] < 1 - 1e-6
    q = fit_quality(_Table(state.bits, c * 0.9), state)
    assert q == pytest.approx({"fidelity": 0.81, "moduli": 0.81, "mass": 0.81})


def test_a_target_larger_than_a_batch_is_fitted_on_stratified_batches(problems):
    """Above `batch` determinants (FIT_BATCH unless given) each step reads a stratified batch (the CCSD states of
    long chains): the fit still raises the fidelity over the whole target, and the note names the batches."""
    import nqs.pretrain
    from nqs.coupled_cluster import ccsd_state
    from nqs.models import build_model
    from tests.test_natural_gradient import SMALL

    p = problems("H6")
    torch.manual_seed(0)
    model = build_model(SMALL["retnet"], p.sector).double()
    state = ccsd_state(p.integrals)
    assert state.bits.shape[0] > 4 * 40
    info = pretrain(model, state, steps=200, lr=1e-2, batch=40)
    assert info["fidelity"] > 0.95 and info["fidelity_start"] < 0.5
    note = nqs.pretrain.describe(state, info, None)
    assert info["batch"] == 40 and "200 Adam steps on stratified batches of 40 " in note


def test_the_fits_rate_runs_its_cosine_over_the_steps_or_the_seconds_whichever_is_shorter():
    from nqs.pretrain import fit_rate

    assert [fit_rate(1e-2, 0.0, k, 3) for k in (1, 2, 3)] == pytest.approx([1e-2, 5e-3, 0.0], abs=1e-15)
    assert fit_rate(1e-2, None, 3, 3, 9.0, 1.0) == 1e-2  # no lr_final: constant
    assert fit_rate(1e-2, 0.0, 1, 1000, 2.5, 5.0) == pytest.approx(5e-3)  # half the seconds: half way
    assert fit_rate(1e-2, 0.0, 2, 1000, 7.0, 5.0) == 0.0  # past the budget: lr_final
    assert fit_rate(1e-2, 0.0, 2, 3, 0.1, 5.0) == pytest.approx(5e-3)  # the steps nearer their end
    assert fit_rate(1e-2, 1e-3, 1, 1, 0.0, None) == pytest.approx(1e-2)  # one step: lr


def test_a_fit_ends_at_its_time_budget_and_says_so(problems, monkeypatch):
    """`max_seconds` (a clock that reads 0, 1, 2, ... seconds, two readings a step): the fit stops after the step
    that ends past the budget, checks that step's weights, and its note says the budget ended it. Without a budget,
    or with one never reached, the steps end it, with the same weights."""
    import types

    import nqs.pretrain as fit
    from nqs.models import build_model
    from tests.test_natural_gradient import SMALL

    state = cisd_state(problems("LiH").integrals)
    checks = []
    real = fit.check_loss
    monkeypatch.setattr(fit, "check_loss", lambda model, check, chunk=4096: checks.append(1) or real(model, check))

    def fitted(steps, max_seconds):
        clock = iter(range(10 ** 6))
        monkeypatch.setattr(fit, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
        checks.clear()
        torch.manual_seed(0)
        model = build_model(SMALL["retnet"], problems("LiH").sector).double()
        info = fit.pretrain(model, state, steps=steps, lr=1e-2, lr_final=0.0, max_seconds=max_seconds)
        return torch.nn.utils.parameters_to_vector(model.parameters()).detach(), info

    _, info = fitted(1000, 5.0)  # step k reads the clock at 2k - 1 (its rate) and 2k (the budget): 3 steps
    assert info["steps"] == 3 and info["timed_out"] and len(checks) == 2  # the start's check and step 3's
    assert "3 Adam steps (lr 0.01 -> 0, cosine), stopped by its 5 s budget in" in fit.describe(state, info, None)
    by_steps, info = fitted(3, None)
    assert info["steps"] == 3 and not info["timed_out"] and "budget" not in fit.describe(state, info, None)
    unreached, info = fitted(3, 1e6)
    assert not info["timed_out"] and "within its 1e+06 s budget" in fit.describe(state, info, None)
    assert torch.allclose(unreached, by_steps, rtol=0, atol=1e-12)


@pytest.mark.parametrize("signs", ["real", "complex"])
def test_the_fit_in_chunks_has_the_full_gradient(problems, signs):
    """Memory (issue 16): the fit's gradient accumulated over chunks of determinants equals the one-pass
    gradient of `fit_loss` (float64, 1e-10 relative), and so does the loss; complex amplitudes check the phase
    term's outer derivative away from real signs, and carry the control variate's probabilities (`control_term`,
    its value 0)."""
    from nqs.models import build_model
    from nqs.pretrain import fit_gradient
    from tests.test_natural_gradient import SMALL

    p = problems("H2O")
    torch.manual_seed(1)
    model = build_model(SMALL["transformer"], p.sector).double()
    state = cisd_state(p.integrals)
    if signs == "complex":
        turn = torch.exp(1j * torch.linspace(0.0, 2.0, len(state.amplitudes), dtype=torch.float64))
        state = TargetState(state.bits, state.amplitudes * turn, state.energy, state.kind,
                            probability=state.amplitudes.abs() ** 2 * (1 + 0.1 * turn.real))
    loss = fit_loss(model, state)
    full = torch.autograd.grad(loss, list(model.parameters()))
    model.zero_grad(set_to_none=True)
    chunked = fit_gradient(model, state, chunk=5)
    assert len(state.amplitudes) > 5 * 5 and chunked == pytest.approx(float(loss.detach()), rel=1e-12)
    scale = max(float(g.abs().max()) for g in full)  # a parameter of zero gradient holds only rounding
    for g, q in zip(full, model.parameters()):
        assert torch.allclose(q.grad, g, rtol=1e-10, atol=1e-12 * scale)


def test_the_fit_turns_phases_instead_of_emptying_determinants(problems):
    """H4's FCI vector, the default Transformer, 500 Adam steps from one seed: Adam on −log F empties the
    determinants whose phase starts wrong (F 0.980, 1.4e-2 of FCI weight with the wrong sign); the split loss
    of `fit_loss` (cross-entropy of the modulus, resultant length of the phases) reaches F 0.9986."""
    from nqs.models import ModelConfig, build_model

    p = problems("H4")
    bits, psi, e_fci = fci_state(p)
    target = TargetState(bits, psi / psi.norm(), e_fci, "fci")
    results = {}
    for name in ("split", "-log F"):
        torch.manual_seed(0)
        model = build_model(ModelConfig("transformer"), p.sector)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(500):
            optimiser.zero_grad()
            loss = fit_loss(model, target) if name == "split" else -torch.log(fidelity(model, target))
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            results[name] = float(fidelity(model, target))
    assert results["split"] > 0.995 > results["-log F"], results


def test_open_shells_are_refused_with_one_line(problems):
    from nqs.errors import UserError
    from nqs.molecules import resolve_molecule
    from nqs.problem import build_problem

    with pytest.raises(UserError, match="closed shell"):
        cisd_state(build_problem(resolve_molecule("CH2")).integrals)


def test_a_run_from_the_cisd_state_records_it_and_bad_choices_exit_2(tmp_path, capsys):
    from nqs.cli.train import main
    from nqs.record import read_summary

    out = tmp_path / "run"
    main(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "3", "--init-state", "cisd",
          "--init-steps", "30", "--init-lr", "1e-2", "--unique", "64", "--final-unique", "500", "--out", str(out)])
    notes = [n for n in read_summary(out).notes if n.startswith("initial state")]
    assert len(notes) == 1 and "CISD state" in notes[0] and "fidelity" in notes[0] and notes[0].endswith("on cpu")
    main(["--mol", "LiH", "--d-model", "8", "--steps", "1", "--init-state", "cisd", "--init-steps", "30",
          "--unique", "64", "--final-unique", "500", "--out", str(tmp_path / "shown")])
    assert capsys.readouterr().err.count("cisd fit: step 30/30 loss") == 1  # progress: the fit's last line too
    for bad in (["--init-state", "mp2"], ["--init-state", "cisd", "--init-steps", "0"],
                ["--init-state", "cisd", "--init-from", str(tmp_path / "absent")],
                ["--init-state", "cisd", "--init-batch", "1"], ["--init-state", "cisd", "--init-max-time", "0"]):
        with pytest.raises(SystemExit) as stop:
            main(["--mol", "LiH", "--no-progress", "--steps", "3", "--out", str(tmp_path / "bad"), *bad])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "init" in err and "Traceback" not in err, bad


def test_a_fit_continues_from_init_from_weights(tmp_path):
    """`--init-state` with `--init-from`: the fit starts from the given run's weights (its starting fidelity is
    theirs, not a fresh network's) and the note says where it started."""
    import re

    from nqs.cli.train import main
    from nqs.pretrain import fidelity
    from nqs.target_states import cisd_state
    from nqs.record import read_summary
    from nqs.training.build import build
    from nqs.training.config import load_yaml, resolve

    args = ["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "1", "--lr", "1e-12", "--lr-final", "1e-12",
            "--warmup", "0", "--unique", "64", "--final-unique", "200", "--init-state", "cisd", "--init-lr", "1e-2"]
    first, second = tmp_path / "first", tmp_path / "second"
    main([*args, "--init-steps", "40", "--out", str(first)])
    cfg = resolve([("run", load_yaml(first / "config.yaml") | {"init_state": None, "init_from": str(first)})])
    problem, model = build(cfg)
    with torch.no_grad():
        carried = float(fidelity(model, cisd_state(problem.integrals)))
    main([*args, "--init-steps", "1", "--init-from", str(first), "--out", str(second)])
    note = next(n for n in read_summary(second).notes if n.startswith("initial state"))
    start = float(re.search(r"fidelity (\S+) ->", note).group(1))
    fresh = float(re.search(r"fidelity (\S+) ->", next(
        n for n in read_summary(first).notes if n.startswith("initial state"))).group(1))
    assert carried > 0.9 > fresh and start == pytest.approx(carried, abs=1e-4), (start, carried, fresh)
    assert note.endswith(f"on cpu; the fit started from the weights of {first}")


def test_the_fits_learning_rate_falls_along_a_cosine_to_lr_final(problems):
    """Steps at 1e-2, 5e-3, 0 (three steps, lr_final 0) leave the weights where 1e-2, 5e-3 (two steps, lr_final
    5e-3) do; a constant rate (lr_final = lr) is the default's fit, and the note names the schedule."""
    from nqs.models import build_model
    from nqs.pretrain import describe
    from tests.test_natural_gradient import SMALL

    state = cisd_state(problems("LiH").integrals)

    def fitted(steps, lr_final):
        torch.manual_seed(0)
        model = build_model(SMALL["retnet"], problems("LiH").sector).double()
        info = pretrain(model, state, steps=steps, lr=1e-2, lr_final=lr_final)
        return torch.nn.utils.parameters_to_vector(model.parameters()).detach(), info

    three, info = fitted(3, 0.0)
    two, _ = fitted(2, 5e-3)
    assert torch.allclose(three, two, rtol=0, atol=1e-12)
    assert not torch.allclose(fitted(3, 1e-2)[0], three, rtol=0, atol=1e-6)
    assert torch.equal(fitted(3, 1e-2)[0], fitted(3, None)[0])
    assert "(lr 0.01 -> 0, cosine)" in describe(state, info, None)


def test_the_fit_keeps_its_lowest_checks_weights_and_undoes_a_collapse(problems, monkeypatch):
    """Checked every 5 steps (the check batch is the whole LiH CISD state): the weights thrown
    off at step 20 make a collapse, undone by going back to step 15's weights with fresh moments at half the rate
    (counted, named in the note); thrown off at the last step, the fit returns the lowest check's weights."""
    import nqs.pretrain as fit
    from nqs.models import build_model
    from tests.test_natural_gradient import SMALL

    state = cisd_state(problems("LiH").integrals)
    seen = []
    real = fit.check_loss
    monkeypatch.setattr(fit, "CHECK_EVERY", 5)
    monkeypatch.setattr(fit, "check_loss", lambda model, check, chunk=4096: seen.append(real(model, check)) or seen[-1])

    def run(spoil_at):
        seen.clear()
        torch.manual_seed(0)
        model = build_model(SMALL["retnet"], problems("LiH").sector).double()

        def spoil(step, loss, seconds):
            if step in spoil_at:
                with torch.no_grad():
                    for q in model.parameters():
                        q.add_(torch.randn_like(q))
        return model, fit.pretrain(model, state, steps=40, lr=1e-2, report=spoil)

    model, info = run(())
    assert info["restarts"] == 0 and info["best_step"] == 40 and info["lr_scale"] == 1
    assert "collapse" not in fit.describe(state, info, None)
    model, info = run((20,))
    assert seen[4] > seen[3] + fit.CHECK_RISE  # step 20: spoiled
    assert seen[5] < seen[3] + 0.1 * (seen[4] - seen[3])  # step 25: back near step 15's, not spoiled
    assert info["restarts"] == 1 and info["lr_scale"] == 0.5
    assert "1 collapse of the fit undone" in fit.describe(state, info, None)
    model, info = run((40,))
    assert seen[-1] > min(seen) + fit.CHECK_RISE and info["best_step"] == 5 * seen.index(min(seen)) < 40
    assert real(model, state) == pytest.approx(min(seen), abs=1e-12)
