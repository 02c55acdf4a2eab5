"""Run archives (nqs.scaling.archive): the runs read back from an archive are the runs that went in, and the
study's shipped archive refits to the documented exponents."""
import dataclasses
import lzma
from pathlib import Path

import pytest

from nqs.cli.fit import main as fit_main
from nqs.errors import UserError
from nqs.record import read_metrics
from nqs.scaling.archive import unpack, write
from nqs.scaling.runs import collect_points, load_runs

REPO = Path(__file__).resolve().parents[1]


def _strip(rec):
    d = dataclasses.asdict(rec)
    d.pop("path")
    return d


def test_archive_round_trip_keeps_summaries_exact_and_metrics_to_seven_digits(short_runs, tmp_path):
    out = tmp_path / "short.runs.jsonl.xz"
    assert write(out, short_runs) == len(short_runs)
    back = {r.path.name: r for r in load_runs([out])}
    orig = {r.path.name: r for r in load_runs(short_runs)}
    assert back.keys() == orig.keys()
    for name, rec in orig.items():
        assert _strip(back[name]) == _strip(rec)
        a, b = read_metrics(back[name].path), read_metrics(rec.path)
        assert [r.energy for r in a] == [r.energy for r in b]  # energies exact
        assert [r.n_unique for r in a] == [r.n_unique for r in b]
        for x, y in zip(a, b):
            assert x.flops_total == pytest.approx(y.flops_total, rel=1e-6)
    restored = unpack(out, tmp_path / "restored")
    assert {p.name for p in restored} == orig.keys() and all((p / "summary.json").is_file() for p in restored)
    assert restored[0].parent == tmp_path / "restored" / "short"
    p_back = collect_points(list(back.values()), metric="abs_error")
    p_orig = collect_points(list(orig.values()), metric="abs_error")
    assert p_back.n.tolist() == p_orig.n.tolist() and p_back.loss.tolist() == p_orig.loss.tolist()


def test_damaged_or_misnamed_archives_are_refused(short_runs, tmp_path):
    with pytest.raises(UserError, match="must end in"):
        write(tmp_path / "runs.jsonl", short_runs)
    bad = tmp_path / "bad.runs.jsonl.xz"
    bad.write_bytes(b"not xz")
    with pytest.raises(UserError, match="damaged run archive"):
        unpack(bad)
    wrong = tmp_path / "wrong.runs.jsonl.xz"
    with lzma.open(wrong, "wt") as fh:
        fh.write('{"format": "something-else"}\n')
    with pytest.raises(UserError, match="not a run archive"):
        unpack(wrong)


def test_export_through_nqs_fit(short_runs, tmp_path, capsys):
    out = tmp_path / "e.runs.jsonl.xz"
    assert fit_main([*map(str, short_runs), "--export", str(out)]) == 0
    assert f"{len(short_runs)} runs" in capsys.readouterr().out
    assert len(load_runs([out])) == len(short_runs)


@pytest.mark.slow
def test_the_pilot_archive_refits_to_the_documented_exponents(tmp_path):
    """docs/scaling.md §2: the pilot's additive law with a shared floor, α1 = 1.88 and α2 = 0.52 (point estimates;
    the bootstrap is not needed for them)."""
    import json

    out = tmp_path / "fit.json"
    archive = REPO / "data" / "scaling" / "lab_pilot.runs.jsonl.xz"
    assert fit_main([str(archive), "--metric", "abs_error", "--bootstrap", "0", "--holdout-bootstrap", "0",
                     "--json", str(out)]) == 0
    fit = json.loads(out.read_text())["transformer"]["fit"]["params"]
    assert fit["alpha1"] == pytest.approx(1.88, abs=0.005)
    assert fit["alpha2"] == pytest.approx(0.52, abs=0.005)


@pytest.mark.slow
def test_the_e3_transformer_archive_refits_to_the_documented_exponents(tmp_path):
    """docs/scaling.md §4, E3: the Transformer's pooled additive law with a floor per molecule on all 192 runs,
    α1 = 1.11 and α2 = 1.08 (point estimates, as `nqs-fit … --metric abs_error --floors molecule` prints)."""
    import json

    out = tmp_path / "fit.json"
    archive = REPO / "data" / "scaling" / "e3_transformer.runs.jsonl.xz"
    assert fit_main([str(archive), "--metric", "abs_error", "--floors", "molecule", "--bootstrap", "0",
                     "--holdout-bootstrap", "0", "--json", str(out)]) == 0
    fit = json.loads(out.read_text())["transformer"]["fit"]["params"]
    assert fit["alpha1"] == pytest.approx(1.106, abs=0.005)
    assert fit["alpha2"] == pytest.approx(1.080, abs=0.005)
    assert fit["A0[N2]"] == pytest.approx(34.08, abs=0.05)


def _refit_one_molecule(archive, molecule: str, tmp_path) -> dict:
    """`nqs-fit ARCHIVE --metric abs_error --molecules MOL` (point estimates only): its --json output."""
    import json

    out = tmp_path / "fit.json"
    assert fit_main([str(archive), "--metric", "abs_error", "--molecules", molecule, "--bootstrap", "0",
                     "--holdout-bootstrap", "0", "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow  # 15-17 s: unpacking the archive's 190,800 metrics rows is most of it
def test_one_molecule_of_the_e3_made_archive_refits_to_the_documented_law(tmp_path, capsys):
    """docs/scaling.md §4, E4 for MADE: the pooled MADE law has no size term, so its plans come from the H2O runs
    alone (`--molecules H2O`): α1 = 1.86 and the size term present (point estimates)."""
    archive = REPO / "data" / "scaling" / "e3_made.runs.jsonl.xz"
    fit = _refit_one_molecule(archive, "H2O", tmp_path)["made"]
    assert fit["fit"]["params"]["alpha1"] == pytest.approx(1.864, abs=0.005)
    assert fit["fit"]["params"]["A1"] > 0.1
    with pytest.raises(SystemExit) as stop:
        fit_main([str(archive), "--molecules", "H2O", "CH4"])
    assert stop.value.code == 2 and "no run on --molecules CH4" in capsys.readouterr().err


def test_the_made_iso_flop_plans_find_their_optimum_within_one_neighbour(capsys):
    """docs/scaling.md §4, E4 for MADE: both budgets' observed best is the law's optimum or its neighbour."""
    archive = REPO / "data" / "scaling" / "e4_made.runs.jsonl.xz"
    for budget in ("1e11", "2e11"):
        plan = REPO / "configs" / "sweeps" / f"e4_made_H2O_{budget}.plan.json"
        assert fit_main(["--check", str(plan), str(archive)]) == 0
        assert "within one neighbour: yes" in capsys.readouterr().out


@pytest.mark.slow  # 15-17 s: unpacking the archive's 190,800 metrics rows is most of it
def test_the_n2_runs_with_tail_rows_refit_to_the_documented_law(tmp_path):
    """docs/scaling.md, "E3 with tail rows and a leak limit": the RetNet's law on its 48 N2 runs, α1 = 2.83 and
    the floor A0 = 0.41 mHa (point estimates), and the top-compute hold-out inside the 0.35 target."""
    fit = _refit_one_molecule(REPO / "data" / "scaling" / "e3_retnet_leak.runs.jsonl.xz", "N2", tmp_path)["retnet"]
    assert fit["fit"]["params"]["alpha1"] == pytest.approx(2.828, abs=0.005)
    assert fit["fit"]["params"]["A0"] == pytest.approx(0.408, abs=0.005)
    assert fit["fit"]["validation"]["holdouts"]["top_compute_decile"]["rms_log_error"] < 0.35


@pytest.mark.slow
def test_the_pooled_retnet_law_with_tail_rows_refits_to_the_documented_exponents(tmp_path):
    """docs/scaling.md, "E3 with tail rows: all four molecules": the RetNet's pooled law with per-molecule floors
    and amplitudes on its 190 runs below Hartree–Fock, α1 = 2.37 and α2 = 3 (the bound), point estimates."""
    import json

    out = tmp_path / "fit.json"
    archive = REPO / "data" / "scaling" / "e3_retnet_leak.runs.jsonl.xz"
    assert fit_main([str(archive), "--metric", "abs_error", "--floors", "molecule", "--amplitudes", "molecule",
                     "--bootstrap", "0", "--holdout-bootstrap", "0", "--json", str(out)]) == 0
    fit = json.loads(out.read_text())["retnet"]["fit"]
    assert fit["params"]["alpha1"] == pytest.approx(2.374, abs=0.005)
    assert fit["params"]["alpha2"] == pytest.approx(3.0, abs=1e-6)
    assert fit["n_points"] == 190



@pytest.mark.slow
def test_the_retnet_per_molecule_laws_meet_the_holdout_target_beyond_the_seed_scatter(tmp_path):
    """docs/scaling.md, "One law per molecule, validated together": the RetNet's four molecule laws on the
    archived E3 runs with tail rows, hold-outs pooled: seed scatter 0.734, lack of fit 0.165 / 0.033 / 0.100."""
    import json

    out = tmp_path / "fit.json"
    archive = REPO / "data" / "scaling" / "e3_retnet_leak.runs.jsonl.xz"
    assert fit_main([str(archive), "--metric", "abs_error", "--laws", "molecule", "--bootstrap", "0",
                     "--json", str(out)]) == 0
    v = json.loads(out.read_text())["retnet"]["validation"]
    assert v["seed_scatter"] == pytest.approx(0.734, abs=5e-4)
    lack = [v["holdouts"][h]["lack_of_fit"] for h in ("top_compute_decile", "largest_T", "largest_N")]
    assert lack == pytest.approx([0.165, 0.033, 0.100], abs=5e-4)
    assert max(lack) <= 0.35
