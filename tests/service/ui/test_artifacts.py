"""What the worker writes for the exposure page: ``ui.json`` (layout, histograms) and CCD thumbnails,
from real simulated exposures measured and scored by the detectors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.scoring import build_reference, score_exposure
from obsqc.service.fits_ingest import open_exposure
from obsqc.service.measure import measure_file
from obsqc.service.ui.artifacts import VIEWS_NAME, read_views, write_exposure_views
from obsqc.service.ui.thumbs import thumbnail_png
from obsqc.service.verdict import Flag
from obsqc.sim import simulate_exposure

PSEUDOCOUNT = DetectorParams().histogram_pseudocount


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A striped tiny exposure (2 CCDs, S1 and S2, with DETSEC) scored against three normal ones."""
    folder = tmp_path_factory.mktemp("exposures")
    measured = []
    for seed, anomaly in ((0, None), (1, None), (2, None), (3, "readout_stripes")):
        path = folder / f"exp{seed}.fits"
        simulate_exposure(size="tiny", seed=seed, exposure_id=900 + seed, anomaly=anomaly).writeto(path)
        measured.append(measure_file(str(path)))
    reference = build_reference([m.stats for m in measured[:3]])
    spoiled = measured[3]
    return spoiled, score_exposure(spoiled.stats, reference), reference


def test_views_of_a_flagged_exposure(scored, tmp_path):
    measured, score, reference = scored
    flags = [Flag("background_gradient", 7.0, ("S2",), "...")]
    path = write_exposure_views(tmp_path, measured, score, reference, flags, "bad", pseudocount=PSEUDOCOUNT)
    assert path == tmp_path / VIEWS_NAME
    views = read_views(tmp_path)
    assert views["exposure_id"] == "903"
    assert set(views["detsec"]) == {"S1", "S2"} and all(len(v) == 4 for v in views["detsec"].values())
    assert views["shapes"] == {"S1": [256, 256], "S2": [256, 256]}
    assert views["reference_exposures"] == reference.n_exposures
    by_key = {h["key"]: h for h in views["histograms"]}
    assert list(by_key) == ["source", "background:S2"]
    source = by_key["source"]
    assert source["n"] == int(measured.stats.source_counts.sum())
    assert sum(source["p"]) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(source["reference"], reference.source_p, atol=1e-6)
    assert source["sigma"] == pytest.approx(score.source.sigma, abs=1e-9)
    s2 = next(c for c in score.ccds if c.name == "S2")
    assert by_key["background:S2"]["kl"] == pytest.approx(s2.background.kl)

    assert views["thumbnails"] == [{"ccd": "S2", "file": "thumb_0.png", "why": "flagged", "factor": 1,
                                    "shape": [256, 256]}]
    with open_exposure(measured.header.path) as reader:
        expected, _ = thumbnail_png(reader.read_ccd(reader.header.ccd_names.index("S2")).data)
    written = (tmp_path / "thumb_0.png").read_bytes()
    assert written == expected
    assert Image.open(io.BytesIO(written)).size == (256, 256)


def test_a_normal_exposure_gets_histograms_but_no_thumbnails(scored, tmp_path):
    measured, score, reference = scored
    write_exposure_views(tmp_path, measured, score, reference, [], "ok", pseudocount=PSEUDOCOUNT)
    views = read_views(tmp_path)
    assert views["thumbnails"] == [] and not list(tmp_path.glob("thumb_*.png"))
    worst = max(score.ccds, key=lambda c: c.background.sigma).name
    assert [h["key"] for h in views["histograms"]] == ["source", f"background:{worst}"]


def test_a_flag_without_ccds_shows_the_worst_ccd(scored, tmp_path):
    measured, score, reference = scored
    flags = [Flag("source_orientation", 6.0, (), "..."), Flag("source_profile", 4.0, (), "...")]
    write_exposure_views(tmp_path, measured, score, reference, flags, "bad", pseudocount=PSEUDOCOUNT)
    views = read_views(tmp_path)
    assert [t["why"] for t in views["thumbnails"]] == ["worst CCD"]
    assert "profile" in [h["key"] for h in views["histograms"]]


def test_views_are_written_even_when_the_file_is_gone(scored, tmp_path):
    measured, score, reference = scored
    from dataclasses import replace

    gone = replace(measured, header=replace(measured.header, path=str(tmp_path / "moved.fits")))
    write_exposure_views(tmp_path, gone, score, reference, [Flag("background_gradient", 7.0, ("S2",), "")], "bad",
                         pseudocount=PSEUDOCOUNT)
    views = read_views(tmp_path)
    assert views["thumbnails"] == [] and views["histograms"]


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_read_views_tolerates_bad_files(tmp_path, content):
    (tmp_path / VIEWS_NAME).write_bytes(content)
    assert read_views(tmp_path) is None


def test_read_views_of_a_folder_without_views(tmp_path):
    assert read_views(tmp_path) is None
    assert read_views(tmp_path / "absent") is None
    (tmp_path / VIEWS_NAME).write_text(json.dumps({"version": 1}))
    assert read_views(tmp_path) == {"version": 1}
