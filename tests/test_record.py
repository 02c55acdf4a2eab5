"""The run record: StepRecord and RunSummary round trips, records of the earlier code, derived properties."""
from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from nqs.errors import UserError
from nqs.record import (CHEMICAL_ACCURACY_MHA, SCHEMA_VERSION, RunSummary, StepRecord, error_mha, read_metrics,
                        read_summary)

OLD_RUN = Path(__file__).parent / "data" / "run_v1"  # written by the code before the record module (schema 1)


def test_step_record_round_trip_keeps_every_field():
    rec = StepRecord(step=7, energy=-7.5, energy_err=1e-4, variance=0.25, vscore=0.01, e_fci=-7.5016,
                     n_unique=12, n_samples=1e12, kept_mass=0.999, s_f=0.5, d_prime=3.5, lr=1e-3,
                     flops_step={"total": 10.0}, flops_total=70.0, t_step=0.02, t_framework=1e-4)
    data = json.loads(json.dumps(rec.to_json()))
    assert StepRecord.from_json(data) == rec
    assert data["error_mha"] == pytest.approx(1.6)  # written for outside readers, derived on load


def test_summary_round_trip_and_derived_properties():
    s = RunSummary(molecule="N2", ansatz="retnet", energy=-107.651, e_fci=-107.65283, e_ccsd_t=-107.65066,
                   e_hf=-107.49, scan={"coordinate": "r", "value": 1.2, "unit": "Å"}, notes=("lr changed",))
    back = RunSummary.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s and back.schema == SCHEMA_VERSION
    assert s.error_mha == pytest.approx(1.83, abs=1e-9)
    assert s.within_chemical_accuracy is False
    assert s.ccsd_t_error_mha == pytest.approx(2.17, abs=1e-9)
    assert RunSummary(molecule="x", ansatz="made", energy=-1.0, e_fci=-1.0 - 1.5e-3).within_chemical_accuracy
    assert RunSummary(molecule="x", ansatz="made", energy=-1.0).error_mha is None  # no reference: unknown


def test_error_and_threshold_are_defined_once():
    assert error_mha(-1.0, -1.002) == pytest.approx(2.0)
    assert error_mha(None, -1.0) is None and error_mha(-1.0, None) is None
    assert CHEMICAL_ACCURACY_MHA == 1.6


def test_records_of_the_earlier_code_still_load(tmp_path):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    old = json.loads((run / "summary.json").read_text())
    s = read_summary(run)
    assert s.schema == 1 and s.path == run and s.molecule == "LiH" and s.steps == 200
    assert s.error_mha == pytest.approx(old["error_mha"], abs=1e-9)  # e_fci was stored: same error
    rows = read_metrics(run)
    raw = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r.step for r in rows] == [0, 1, 2]
    for row, line in zip(rows, raw):
        assert row.error_mha == pytest.approx(line["error_mha"], abs=1e-8)  # recovered from error_mha
        assert row.e_fci == pytest.approx(old["e_fci"], abs=1e-11)


def test_damaged_files_give_one_clear_error_or_a_warning(tmp_path):
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"ansatz": "made"}))
    with pytest.raises(UserError, match="lacks molecule"):
        read_summary(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "energy": -1.0}\n{"step": 1, "ener\n[1, 2]\n')
    with pytest.warns(UserWarning, match="metrics.jsonl:2"):
        rows = read_metrics(tmp_path)
    assert [r.step for r in rows] == [0]


def test_every_summary_field_is_written():
    s = RunSummary(molecule="LiH", ansatz="made")
    names = {f.name for f in fields(RunSummary) if f.metadata.get("json", True)}
    assert names <= set(s.to_json())
    assert "path" not in s.to_json()


def test_nominal_and_effective_counts_round_trip():
    rec = StepRecord(step=3, energy=-1.0, energy_err=0.0, variance=0.0, s_f=0.5, d_prime=2.0, s_f_nominal=0.8,
                     d_prime_nominal=3.2)
    assert StepRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    s = RunSummary(molecule="LiH", ansatz="made", n_params=100, n_params_phase=30, n_params_effective=70,
                   steps=10, unique=100, sector_size=225.0, d_prime=3.0, d_prime_nominal=4.0, d_prime_full=0.1)
    back = RunSummary.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s and back.n_from("effective") == 70 and back.n_from("effective_modulus") == 40
    assert back.d_from("nominal") == 4.0  # the recorded sum, not steps * min(B, |sector|) / |sector|
    assert [back.d_from(w) for w in ("realised", "full")] == [3.0, 0.1]
    with pytest.raises(UserError, match="unknown parameter count"):
        s.n_from("all")


def test_d_from_on_a_run_written_before_the_nominal_count():
    s = read_summary(OLD_RUN)
    assert s.d_prime_nominal is None and s.n_params_effective is None
    assert s.d_from("nominal") == pytest.approx(200 * min(2000, 225) / 225)  # steps * min(B, |sector|) / |sector|
    assert s.d_from("realised") == pytest.approx(197.85777777777795) and s.d_from("full") == pytest.approx(10.8686523)
    assert s.n_from("effective") is None and s.n_from("effective_modulus") is None and s.n_from("total") == 12773
    assert read_metrics(OLD_RUN)[0].s_f_nominal is None
    assert RunSummary(molecule="x", ansatz="made", steps=5).d_from("nominal") is None  # no cap or sector: unknown
    with pytest.raises(UserError, match="unknown data count"):
        s.d_from("both")
