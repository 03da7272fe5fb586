"""Batch ranking over real files: anomalies rank first, bad files are recorded, not fatal."""

import numpy as np
import pytest

from obsqc.detectors.scoring import Reference
from obsqc.service.measure import measure_file
from obsqc.service.plots import plot_exposure
from obsqc.service.rank import rank_files
from tests.starfields import write_exposure, write_night


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return write_night(tmp_path_factory.mktemp("night"))


@pytest.fixture(scope="module")
def ranked(night):
    return rank_files([str(p) for p in night.values()], threads=2)


def test_anomalies_rank_first_and_name_their_indicator(ranked):
    ids = [r.score.exposure_id for r in ranked.records]
    assert set(ids[:2]) == {"900", "901"}
    by_id = {r.score.exposure_id: r for r in ranked.records}
    assert "source_orientation" in by_id["900"].flags
    assert "background_gradient" in by_id["901"].flags
    assert all(not by_id[str(100 + i)].flags for i in range(8))


def test_bad_files_are_reported_and_skipped(ranked):
    reasons = {f.file.rsplit("/", 1)[-1]: f.reason for f in ranked.failures}
    assert reasons == {"truncated.fits": "truncated", "notes.fits": "not_fits"}
    assert len(ranked.records) == 10


def test_record_has_the_contract_fields(ranked):
    rec = ranked.records[0].to_dict()
    for key in ("exposure_id", "source_kl", "background_kl", "n_sources", "worst_ccds", "source_sigma", "background_sigma"):
        assert key in rec
    assert rec["rank"] == 1 and len(rec["worst_ccds"]) == 3


def test_saved_reference_scores_the_same(night, ranked):
    ref = Reference.from_json(ranked.reference.to_json())
    again = rank_files([str(night["striped"])], reference=ref)
    (rec,) = again.records
    want = next(r for r in ranked.records if r.score.exposure_id == "901")
    assert rec.score.background.kl == pytest.approx(want.score.background.kl)


def test_missing_exposure_id_uses_the_file_name(tmp_path):
    path = write_exposure(tmp_path / "night_0042.fits", None)
    assert measure_file(str(path), id_from_filename=True).stats.exposure_id == "night_0042"


def test_all_nan_ccd_is_skipped_and_recorded(tmp_path):
    from astropy.io import fits

    path = write_exposure(tmp_path / "e.fits", 7)
    with fits.open(path, mode="update") as hdul:
        hdul[2].data[:] = np.nan
    m = measure_file(str(path))
    assert [c.name for c in m.stats.ccds] == ["C0", "C2"]
    assert m.stats.skipped_ccds[0][0] == "C1"


def test_measurement_is_deterministic(night):
    a = measure_file(str(night["n1"]), threads=2).stats
    b = measure_file(str(night["n1"]), threads=1).stats
    np.testing.assert_array_equal(a.source_counts, b.source_counts)
    np.testing.assert_array_equal(a.gradient_counts, b.gradient_counts)


def test_plot_is_written(ranked, tmp_path):
    path = plot_exposure(ranked.records[0], ranked.reference, tmp_path)
    assert path.exists() and path.stat().st_size > 10_000
