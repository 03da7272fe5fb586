"""`obsqc rank` and `obsqc sources` through the real command line (typer's runner)."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from obsqc.cli import app
from tests.starfields import write_exposure, write_night

runner = CliRunner()


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return write_night(tmp_path_factory.mktemp("clinight"), n_normal=5)


def test_rank_jsonl_contract(night, tmp_path):
    ref = tmp_path / "ref.json"
    result = runner.invoke(app, ["rank", *map(str, night.values()), "--format", "jsonl", "--save-reference", str(ref),
                                 "--plots", str(tmp_path / "plots"), "--flag-sigma", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 7
    for row in rows:
        assert {"exposure_id", "source_kl", "background_kl", "n_sources"} <= row.keys()
    assert {rows[0]["exposure_id"], rows[1]["exposure_id"]} == {"900", "901"}
    assert "truncated.fits" in result.stderr and "not_fits" in result.stderr
    assert ref.exists() and len(list((tmp_path / "plots").glob("*.png"))) >= 2


def test_rank_csv_and_table(night):
    files = [str(night[k]) for k in ("n0", "n1", "n2", "elongated")]
    result = runner.invoke(app, ["rank", *files, "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["exposure_id"] == "900" and len(rows) == 4
    table = runner.invoke(app, ["rank", *files])
    assert table.exit_code == 0 and "900" in table.stdout


def test_rank_only_bad_files_exits_non_zero(night):
    result = runner.invoke(app, ["rank", str(night["notes"])])
    assert result.exit_code == 1


def test_sources_jsonl_and_csv(tmp_path):
    path = write_exposure(tmp_path / "e.fits", 5, n_ccds=2, kind="elongated")
    result = runner.invoke(app, ["sources", str(path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) > 20
    for key in ("ccd", "x", "y", "flux", "q_xx", "q_yy", "q_xy", "e1", "e2", "theta_deg"):
        assert key in rows[0]
    median = sorted(r["theta_deg"] for r in rows)[len(rows) // 2]
    assert median == pytest.approx(30.0, abs=3.0)
    result = runner.invoke(app, ["sources", str(path), "--format", "csv"])
    assert result.exit_code == 0 and result.stdout.startswith("ccd,x,y,")


def test_sources_on_a_bad_file_says_why(night):
    result = runner.invoke(app, ["sources", str(night["truncated"])])
    assert result.exit_code == 2 and "truncated" in result.stderr
