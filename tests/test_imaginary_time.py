"""`nqs.imaginary_time`: H kept on a set of determinants, the projected state φ = (1 − τ(H − E))ψ, and the refit
that lowers a network's energy, against the dense sector matrix and FCI on LiH (225 determinants)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nqs.errors import UserError
from nqs.excitations import IntegralHamiltonian
from nqs.exact import fci_state, sector_matrix
from nqs.imaginary_time import SubsetOperator, imaginary_time_fit, load_operator, operator_part, projected
from nqs.pretrain import amplitudes_on


@pytest.fixture(scope="module")
def lih(problems):
    p = problems("LiH")
    h = IntegralHamiltonian(p.integrals, p.sector.n_alpha, p.sector.n_beta)
    matrix, bits = sector_matrix(p.compiled(connections="pauli"), p.sector)
    return p, h, torch.from_numpy(matrix.toarray().real), bits


def _random(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g,
                                                                                        dtype=torch.float64))


def test_the_saved_operator_in_parts_applies_the_sector_matrix(lih, tmp_path):
    _, h, H, bits = lih
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 1e-5)):
        directory = tmp_path / np.dtype(dtype).name
        assert load_operator(bits, directory, 3) is None  # nothing built yet
        for part in (2, 0):
            operator_part(h, bits, directory, part, 3, dtype=dtype)
        assert load_operator(bits, directory, 3) is None  # a part missing
        operator_part(h, bits, directory, 1, 3, dtype=dtype)
        op = load_operator(bits, directory, 3)
        v = _random(len(bits), 1)
        dense = H.to(torch.complex128) @ v
        assert (op.apply(v) - dense).abs().max() < tol * dense.abs().max()
        exact = float(torch.vdot(v, dense).real / torch.vdot(v, v).real)
        assert op.energy(v) == pytest.approx(exact, abs=tol * 10)
        on_device = load_operator(bits, directory, 3).to("cuda" if torch.cuda.is_available() else "cpu")
        assert on_device.parts == [] and on_device.elements == op.elements  # no second copy on the host
        assert (on_device.apply(v) - dense).abs().max() < tol * dense.abs().max()
    with pytest.raises(UserError, match="another set"):
        load_operator(bits[torch.randperm(len(bits))], tmp_path / "float64", 3)


def test_a_small_step_lowers_the_energy_by_twice_tau_times_the_variance(lih, tmp_path):
    _, h, H, bits = lih
    op = SubsetOperator([scipy_part(h, bits)])
    psi = _random(len(bits), 2)
    h_psi = op.apply(psi)
    e = op.energy(psi, h_psi)
    variance = float(torch.vdot(h_psi - e * psi, h_psi - e * psi).real / torch.vdot(psi, psi).real)
    tau = 1e-5
    phi = projected(psi, h_psi, e, tau)
    assert (phi - (psi - tau * (H.to(torch.complex128) @ psi - e * psi))).abs().max() < 1e-12
    assert (e - op.energy(phi)) / (2 * tau * variance) == pytest.approx(1.0, rel=1e-3)


def scipy_part(h, bits):
    from nqs.exact import subset_hamiltonian

    return subset_hamiltonian(h, bits)


def test_the_refit_lowers_a_networks_energy_towards_fci_and_keeps_its_lowest_refresh(lih, problems):
    from nqs.models import build_model
    from tests.test_natural_gradient import SMALL

    p, h, _, bits = lih
    op = SubsetOperator([scipy_part(h, bits)])
    _, _, e_fci = fci_state(p)
    torch.manual_seed(0)
    model = build_model(SMALL["made"], p.sector).double()
    start = op.energy(amplitudes_on(model, bits))
    seen = []
    info = imaginary_time_fit(model, bits, op, seconds=600, steps=300, refresh=30, tau=0.2, lr=1e-2,
                              lr_final=1e-3, report=seen.append)
    energies = [r.energy for r in info["refreshes"]]
    assert len(energies) == 11 and seen == info["refreshes"] and energies[0] == pytest.approx(start, abs=1e-12)
    assert info["best"].energy == min(energies)
    assert op.energy(amplitudes_on(model, bits)) == pytest.approx(info["best"].energy, abs=1e-12)
    assert start - e_fci > 0.1 and info["best"].energy - e_fci < 0.1 * (start - e_fci)
    torch.manual_seed(0)  # the same network refitted to itself (τ = 0) stays where it is: the step is φ's
    model = build_model(SMALL["made"], p.sector).double()
    still = imaginary_time_fit(model, bits, op, seconds=600, steps=300, refresh=30, tau=0.0, lr=1e-2, lr_final=1e-3)
    assert abs(still["best"].energy - start) < 0.005


def test_the_control_variates_steps_are_the_plain_fits_on_average_with_less_scatter(lih):
    """`control`: on S (LiH's 150 determinants likeliest under a random MADE, so M_S < 1) ∇M_S from the set's one
    backward pass equals autograd's (1e-10), and a step's gradient (a batch's with its control variate, less ∇M_S)
    averages over 200 batches of 30 to the exact gradient of the fit to φ on all of S (within 4 standard errors).
    Near the fit (τ = 0.02: φ close to ψ) it scatters at least 10× less than the plain batch's (far from it,
    τ = 0.2 from a random network, more: p_θ/q strays past 2); a refit with it lowers the energy on S."""
    from dataclasses import replace

    from nqs.models import build_model
    from nqs.pretrain import StratifiedSampler, amplitudes_and_mass_gradient, fit_gradient
    from nqs.target_states import TargetState
    from tests.test_natural_gradient import SMALL

    p, h, _, bits = lih
    torch.manual_seed(0)
    model = build_model(SMALL["made"], p.sector).double()
    params = list(model.parameters())
    bits = bits[torch.topk(amplitudes_on(model, bits).abs(), 150).indices]
    op = SubsetOperator([scipy_part(h, bits)])
    psi, mass_gradient = amplitudes_and_mass_gradient(model, bits, chunk=40)
    assert torch.allclose(psi, amplitudes_on(model, bits), rtol=0, atol=1e-14)
    mass = torch.exp(2 * model.log_psi(bits).real).sum()
    assert float(mass.detach()) < 0.99
    for g, w in zip(torch.autograd.grad(mass, params), mass_gradient):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-14)
    target = TargetState(bits, projected(psi, op.apply(psi), op.energy(psi), 0.02), 0.0, "projected")

    def flat(batch, less=None):
        model.zero_grad(set_to_none=True)
        fit_gradient(model, batch)
        return torch.cat([(w.grad - (0 if less is None else m)).flatten() for w, m in zip(params, less or params)])

    exact = flat(target)
    sampler, generator = StratifiedSampler(target, 30, control=True), torch.Generator().manual_seed(0)
    steps, plain = [], []
    for _ in range(200):
        batch = sampler.draw(generator)
        steps.append(flat(batch, mass_gradient))
        plain.append(flat(replace(batch, probability=None)))
    steps, plain = torch.stack(steps), torch.stack(plain)
    error = (steps.mean(0) - exact).abs()
    assert bool((error <= 4 * steps.std(0) / np.sqrt(len(steps)) + 1e-12).all())
    assert float(steps.var(0).sum()) < float(plain.var(0).sum()) / 10
    info = imaginary_time_fit(model, bits, op, seconds=600, steps=60, refresh=30, tau=0.2, lr=1e-2, control=True)
    assert info["control"] and info["best"].energy < info["refreshes"][0].energy - 0.01


def test_a_resumed_refit_goes_on_as_if_it_had_never_stopped(lih):
    """The state handed at a refresh, given back as `resume` to another network, gives the same refreshes, steps
    and weights as the refit that never stopped (float64, CPU: bit for bit)."""
    import copy

    from nqs.models import build_model
    from tests.test_natural_gradient import SMALL

    p, h, _, bits = lih
    op = SubsetOperator([scipy_part(h, bits)])
    kept = []
    settings = dict(seconds=600, steps=60, refresh=20, tau=0.2, lr=1e-2, lr_final=1e-3, batch=128)

    def network(seed: int):
        torch.manual_seed(seed)
        return build_model(SMALL["made"], p.sector).double()

    whole_model = network(0)
    whole = imaginary_time_fit(whole_model, bits, op, **settings, on_refresh=lambda s: kept.append(copy.deepcopy(s)))
    assert [s["step"] for s in kept] == [0, 20, 40, 60] and kept[1]["refreshes"] == whole["refreshes"][:2]
    other = network(1)
    again = imaginary_time_fit(other, bits, op, **settings, resume=kept[1])
    assert again["steps"] == 60 and again["best"].energy == whole["best"].energy
    assert [(r.step, r.energy) for r in again["refreshes"]] == [(r.step, r.energy) for r in whole["refreshes"]]
    assert all(torch.equal(v, whole_model.state_dict()[k]) for k, v in other.state_dict().items())


def _fitted_lih(run, init_steps: int) -> None:
    """A small LiH run fitted to its CISD state (what the script refits), written to `run`."""
    from nqs.cli.train import main as train

    train(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "1", "--init-state", "cisd", "--init-steps",
           str(init_steps), "--unique", "64", "--final-unique", "100", "--threads", "1", "--out", str(run)])


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_a_run_whose_exact_energy_is_its_lowest_refresh(tmp_path, capsys):
    import json

    run = tmp_path / "lih"
    _fitted_lih(run, init_steps=20)
    script = _script("imaginary_time_fit")
    for i in range(2):
        script.main([str(run), "--threshold", "0", "--build-only", "--part", f"{i}/2"])
    out = tmp_path / "it"
    capsys.readouterr()
    script.main([str(run), "--threshold", "0", "--out", str(out), "--steps", "40", "--refresh", "20", "--lr", "3e-3"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    record = json.loads((out / "imaginary_time.json").read_text())
    assert [r["step"] for r in record["refreshes"]] == [0, 20, 40] and len(rows) == 4 and record["finished"]
    assert record["best"]["energy"] <= record["refreshes"][0]["energy"]
    _script("support_energy").main([str(out), "--thresholds", "0"])
    exact = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")][0]
    assert exact["energy"] == pytest.approx(record["best"]["energy"], abs=1e-5)  # float32 H against float64

    sym = tmp_path / "it-sym"  # the same refit of Pψ, the network projected on LiH's spin flip and 2p_x ↔ 2p_y
    script.main([str(run), "--threshold", "0", "--out", str(sym), "--steps", "20", "--refresh", "20", "--lr", "3e-3",
                 "--symmetrize"])
    said = capsys.readouterr().err
    assert "projected onto spin flip, orbital swap (characters [1, 1, 1] from the cisd" in said
    assert "total spin S = 0" in said and "the real part" in said
    symmetric = json.loads((sym / "imaginary_time.json").read_text())
    projections = symmetric["symmetries"]
    assert symmetric["symmetrize"] == "all" and [g["name"] for g in projections["generators"]] == ["spin flip",
                                                                                             "orbital swap"]
    assert projections["spin"]["S"] == 0 and projections["real"]
    assert symmetric["refreshes"][0]["mass"] == record["refreshes"][0]["mass"]  # the network's own, unprojected
    assert record["refreshes"][0]["energy"] - symmetric["refreshes"][0]["energy"] > 1e-6  # the same weights, lower
    assert symmetric["best"]["energy"] < symmetric["refreshes"][0]["energy"] - 1e-5  # and the refit lowers Pψ
    _script("support_energy").main([str(sym), "--thresholds", "0", "--symmetrize"])
    exact = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")][0]
    assert exact["symmetrized"] == "all" and exact["energy"] == pytest.approx(symmetric["best"]["energy"], abs=1e-5)
    _script("support_energy").main([str(sym), "--thresholds", "0", "--symmetrize", "group"])
    group_only = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")][0]
    assert group_only["energy"] > exact["energy"] + 1e-7  # the spin and real projections take more error out


def test_a_killed_refit_keeps_its_lowest_refresh_and_resumes_as_if_never_killed(tmp_path, capsys):
    """kill -9 mid-refit: the run directory holds the lowest refresh so far (weights and record agree); the same
    command is refused in one line that says how to resume; --resume ends with the refreshes of a refit that was
    never killed; and a new refit from the stopped one starts from its lowest weights."""
    import json
    import subprocess
    import sys

    run, out = tmp_path / "lih", tmp_path / "it"
    _fitted_lih(run, init_steps=5)
    script = _script("imaginary_time_fit")
    matrix = ["--threshold", "0", "--parts", "1", "--matrix-dir", str(tmp_path / "m")]
    script.main([str(run), *matrix, "--build-only"])
    argv = [str(run), *matrix, "--seconds", "600", "--steps", "60", "--refresh", "5", "--lr", "3e-3"]
    child = subprocess.Popen([sys.executable, script.__file__, *argv, "--out", str(out)], stdout=subprocess.PIPE,
                             text=True)
    rows = []
    while len(rows) < 3:
        line = child.stdout.readline()
        assert line, "the refit ended before three refreshes"
        rows.append(json.loads(line))
    child.kill()
    child.wait()
    record = json.loads((out / "imaginary_time.json").read_text())
    saved = torch.load(out / "checkpoints" / "last.ckpt")["refresh"]  # the refresh whose weights were saved
    assert not record["finished"] and 3 <= len(record["refreshes"]) < 13  # every printed refresh is on disk
    assert saved["energy"] <= min(r["energy"] for r in rows) and saved["energy"] < rows[0]["energy"]
    capsys.readouterr()
    _script("support_energy").main([str(out), "--thresholds", "0"])
    exact = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")][0]
    assert exact["energy"] == pytest.approx(saved["energy"], abs=1e-5)  # float32 H against float64
    with pytest.raises(SystemExit) as e:
        script.main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "stopped before its end" in err and f"--resume {out}" in err
    script.main([str(out), *matrix, "--out", str(tmp_path / "from-lowest"), "--steps", "1", "--lr", "1e-12"])
    again = json.loads((tmp_path / "from-lowest" / "imaginary_time.json").read_text())
    assert again["refreshes"][0]["energy"] == pytest.approx(saved["energy"], abs=1e-9)

    for extra, said in ((["--seconds", "60"], "drop --seconds"), ([], "unreadable")):
        if not extra:  # a damaged resume.pt: one line, and the refit's files as they were
            (out / "checkpoints" / "resume.pt").rename(tmp_path / "resume.pt")
            (out / "checkpoints" / "resume.pt").write_bytes(b"\x80\x02 cut short")
        with pytest.raises(SystemExit) as e:
            script.main(["--resume", str(out), *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and "Traceback" not in err
    (tmp_path / "resume.pt").replace(out / "checkpoints" / "resume.pt")
    import shutil
    old = shutil.copytree(out, tmp_path / "session-33")  # a record from when --symmetrize projected on the group only
    (old / "imaginary_time.json").write_text(json.dumps(record | {"symmetrize": True}))
    args = script.parse(["--resume", str(old)])
    script.settings_to_resume(args)
    assert args.symmetrize == "group"
    script.main(["--resume", str(out)])
    assert "note: resuming" in capsys.readouterr().err
    script.main([*argv, "--out", str(tmp_path / "never-killed")])
    resumed, whole = (json.loads((d / "imaginary_time.json").read_text()) for d in (out, tmp_path / "never-killed"))
    assert resumed["finished"] and resumed["steps"] == 60 and resumed["run"] == str(run)
    assert [(r["step"], r["energy"]) for r in resumed["refreshes"]] == \
        [(r["step"], r["energy"]) for r in whole["refreshes"]]
    assert resumed["best"]["energy"] == whole["best"]["energy"] and not (out / "checkpoints" / "resume.pt").exists()
    with pytest.raises(SystemExit) as e:
        script.main(["--resume", str(out)])
    assert e.value.code == 2 and "this refit finished" in capsys.readouterr().err


def test_the_script_refuses_bad_runs_outputs_and_matrices_in_one_line(tmp_path, capsys):
    run = tmp_path / "lih"
    _fitted_lih(run, init_steps=5)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.yaml").write_text("mol: LiH\n")
    script = _script("imaginary_time_fit")
    script.main([str(run), "--threshold", "0", "--build-only", "--parts", "1", "--matrix-dir", str(tmp_path / "m")])
    cases = [([str(plain), "--out", str(tmp_path / "o")], "was not fitted to a state"),
             (["--out", str(tmp_path / "o")], "give RUN"), ([str(run), "--resume", str(run)], "not both"),
             (["--resume", str(run)], "no readable imaginary_time.json"),
             ([str(run), "--out", str(run)], "give a new run directory"),
             ([str(run), "--build-only", "--part", "2/2"], "give I/P"),
             ([str(run), "--out", str(tmp_path / "o"), "--tau", "-1"], "--tau must be"),
             *([([str(run), "--out", str(tmp_path / "o"), "--device", "cuda"], "CUDA is not available")]
               if not torch.cuda.is_available() else []),
             ([str(run), "--threshold", "0.01", "--parts", "1", "--matrix-dir", str(tmp_path / "m"), "--out",
               str(tmp_path / "o")], "another set")]
    for argv, said in cases:
        with pytest.raises(SystemExit) as e:
            script.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and "Traceback" not in err
