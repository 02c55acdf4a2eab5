"""`nqs.exact.subset_energies`: the exact energy of a vector on a set of determinants, from the integrals,
against the sector matrix of the Pauli tables (an independent path) and FCI on LiH (225 determinants)."""
from __future__ import annotations

import pytest
import torch

from nqs.excitations import IntegralHamiltonian
import numpy as np

from nqs.exact import fci_state, sector_matrix, subset_energies, subset_hamiltonian
from nqs.molecules import resolve_molecule
from nqs.problem import build_problem

TOL = 1e-9  # Hartree: the Pauli tables' OpenFermion truncations move LiH's elements by less (tests/test_excitations)


@pytest.fixture(scope="module")
def lih():
    problem = build_problem(resolve_molecule("LiH"), references="hf,fci")
    h = IntegralHamiltonian(problem.integrals, problem.sector.n_alpha, problem.sector.n_beta)
    matrix, bits = sector_matrix(problem.compiled(connections="pauli"), problem.sector)
    return problem, h, matrix, bits


def _dense(matrix) -> torch.Tensor:
    return torch.from_numpy(matrix.toarray()).to(torch.complex128)


def test_the_fci_vector_on_the_whole_sector_has_the_fci_energy(lih):
    problem, h, _, _ = lih
    bits, psi, e_fci = fci_state(problem)
    numerators, norms = subset_energies(h, bits, psi)
    assert abs(float(numerators[0].real / norms[0]) - e_fci) < 1e-8
    assert abs(float(numerators[0].imag)) < 1e-12


def test_a_vector_kept_above_each_threshold_matches_the_sector_matrix(lih):
    _, h, matrix, bits = lih
    g = torch.Generator().manual_seed(3)
    v = torch.complex(torch.randn(len(bits), generator=g, dtype=torch.float64),
                      torch.randn(len(bits), generator=g, dtype=torch.float64))
    score = torch.rand(len(bits), generator=g, dtype=torch.float64)
    thresholds = (0.0, 0.3, 0.7, 0.95)
    order = torch.randperm(len(bits), generator=g)  # the set's order is its own, not the sector's
    numerators, norms = subset_energies(h, bits[order], v[order], score[order], thresholds, chunk=17)
    H = _dense(matrix)
    for t, num, norm in zip(thresholds, numerators, norms):
        vt = torch.where(score >= t, v, 0)
        assert abs(complex(num) - complex(vt.conj() @ H @ vt)) < TOL * max(1.0, float(norm))
        assert abs(float(norm) - float((vt.abs() ** 2).sum())) < 1e-12


def test_a_subset_is_its_own_state_and_parts_of_the_rows_add_up(lih):
    _, h, matrix, bits = lih
    g = torch.Generator().manual_seed(5)
    keep = torch.randperm(len(bits), generator=g)[:90]  # 90 of 225 determinants: H is taken within them only
    v = torch.randn(90, generator=g, dtype=torch.float64).to(torch.complex128)
    whole, norms = subset_energies(h, bits[keep], v)
    H = _dense(matrix)[keep][:, keep]
    assert abs(complex(whole[0]) - complex(v.conj() @ H @ v)) < TOL
    parts = [subset_energies(h, bits[keep], v, rows=r)[0] for r in ((0, 31), (31, 90))]
    assert torch.allclose(parts[0] + parts[1], whole, atol=1e-12, rtol=0)


def test_the_kept_matrix_is_the_sector_matrix_on_the_set_in_its_order_and_row_parts(lih):
    _, h, matrix, bits = lih
    g = torch.Generator().manual_seed(7)
    keep = torch.randperm(len(bits), generator=g)[:120]
    H = _dense(matrix)[keep][:, keep].real
    kept = subset_hamiltonian(h, bits[keep], chunk=13)
    assert kept.shape == (120, 120) and kept.indices.dtype == np.int32
    assert np.abs(kept.toarray() - H.numpy()).max() < TOL
    assert abs(kept - kept.T).max() < 1e-12  # symmetric: each pair is found from both of its ends
    rows = [subset_hamiltonian(h, bits[keep], rows=r, dtype=np.float32) for r in ((0, 50), (50, 120))]
    assert rows[0].shape == (50, 120) and rows[0].dtype == np.float32
    assert np.abs(np.vstack([r.toarray() for r in rows]) - H.numpy()).max() < 1e-6  # float32 values


def _script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "support_energy.py"
    spec = importlib.util.spec_from_file_location("support_energy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(capsys) -> list[dict]:
    import json

    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_the_script_gives_the_target_s_energy_and_its_parts_add_up(tmp_path, capsys):
    from nqs.cli.train import main as train
    from nqs.target_states import cisd_state

    run = tmp_path / "lih"
    train(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "1", "--init-state", "cisd",
           "--init-steps", "20", "--unique", "64", "--final-unique", "100", "--threads", "1", "--out", str(run)])
    capsys.readouterr()
    script = _script()
    script.main([str(run), "--of", "target", "--thresholds", "0", "0.01"])
    target = _rows(capsys)
    problem = build_problem(resolve_molecule("LiH"), references="hf,fci")
    assert abs(target[0]["energy"] - cisd_state(problem.integrals).energy) < 1e-8
    assert target[0]["determinants"] > target[1]["determinants"] and target[1]["energy"] > target[0]["energy"]
    script.main([str(run)])
    whole = _rows(capsys)
    for i in range(2):
        script.main([str(run), "--part", f"{i}/2", "--save", str(tmp_path / f"p{i}.npy")])
    capsys.readouterr()
    script.main([str(run), "--combine", str(tmp_path / "p0.npy"), str(tmp_path / "p1.npy")])
    combined = _rows(capsys)
    assert [r["energy"] for r in combined] == pytest.approx([r["energy"] for r in whole], abs=1e-12)
    assert 0 < whole[0]["norm_on_kept"] < 1  # the model's probability on the CISD determinants


def test_the_script_refuses_a_run_without_a_state(tmp_path, capsys):
    run = tmp_path / "plain"
    run.mkdir()
    (run / "config.yaml").write_text("mol: LiH\n")
    with pytest.raises(SystemExit) as e:
        _script().main([str(run)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "was not fitted to a state" in err and "Traceback" not in err


def test_combining_parts_of_other_thresholds_or_a_missing_part_is_refused(tmp_path, capsys):
    from nqs.cli.train import main as train

    run = tmp_path / "lih"
    train(["--mol", "LiH", "--no-progress", "--d-model", "8", "--steps", "1", "--init-state", "cisd",
           "--init-steps", "5", "--unique", "64", "--final-unique", "100", "--threads", "1", "--out", str(run)])
    script = _script()
    for i in range(3):
        script.main([str(run), "--part", f"{i}/3", "--save", str(tmp_path / f"p{i}.npy"), "--thresholds", "0"])
    capsys.readouterr()
    cases = [(["--thresholds", "0", "0.1"], [0, 1, 2], "other --thresholds"),
             (["--thresholds", "0"], [0, 2], "once each"),
             (["--thresholds", "0"], [0, 1, 1, 2], "once each"),
             (["--thresholds", "0", "--symmetrize"], [0, 1, 2], "saved without --symmetrize"),
             (["--thresholds", "0", "--symmetrize", "group"], [0, 1, 2], "saved without --symmetrize"),
             (["--part", "3/3", "--save", str(tmp_path / "x.npy")], [], "give I/P")]
    for flags, parts, said in cases:
        combine = ["--combine", *[str(tmp_path / f"p{i}.npy") for i in parts]] if parts else []
        with pytest.raises(SystemExit) as e:
            script.main([str(run), *flags, *combine])
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and "Traceback" not in err
    script.main([str(run), "--thresholds", "0", "--combine", *[str(tmp_path / f"p{i}.npy") for i in (2, 0, 1)]])
    assert len(_rows(capsys)) == 1
