"""The scrape-time store collector (obsqc/service/ops_metrics.py, queries in obsqc/service/store/ops.py)
on SQLite and on a real PostgreSQL: what the alerts read to name exposures, CCDs and flags.

Stores are filled through the repository's own writers (``record_received``, ``record_verdict``,
``record_galaxies``) with known times relative to now; the exposition goes through
:func:`obsqc.service.metrics.render_metrics`, as the API serves it, and through promtool.
"""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from obsqc.service.metrics import render_metrics
from obsqc.service.ops_metrics import StoreStatsCollector
from obsqc.service.store import (
    ReferenceRow, make_engine, make_sessionmaker, record_galaxies, record_received, record_verdict, upgrade,
)
from obsqc.service.store.models import utcnow
from obsqc.service.store.ops import ccd_streaks, flag_ccds, flag_names, ops_snapshot

NOW = utcnow()


def _ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


@pytest.fixture
def sessions(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _flag(name: str, *ccds: str) -> dict:
    return {"name": name, "sigma": 6.0, "ccds": list(ccds), "reason": f"{name} on {', '.join(ccds)}"}


def _judged(s, exposure_id: str, verdict: str, flags=(), *, minutes: float, instrument="DECam", band="r") -> None:
    """An exposure received ``minutes`` ago and judged 10 s later."""
    record_received(s, exposure_id, instrument=instrument, band=band, received_at=_ago(minutes))
    record_verdict(s, exposure_id, verdict=verdict, flags=list(flags), score=None,
                   finished_at=_ago(minutes) + dt.timedelta(seconds=10))


def _reference(s, instrument: str, band: str, members: int, minutes: float) -> None:
    s.add(ReferenceRow(instrument=instrument, band=band, payload="{}", n_exposures=members, created_at=_ago(minutes)))


def _samples(body: bytes) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


@pytest.fixture
def scrape(tmp_path):
    def render(sessions) -> dict[str, list]:
        body, _ = render_metrics(tmp_path / "metrics", None, collectors=[StoreStatsCollector(sessions)])
        return _samples(body)
    return render


# ---- pure helpers ---------------------------------------------------------------------------------


def test_flag_names_and_ccds_are_sorted_and_distinct():
    flags = [_flag("linear_feature", "S5", "N4"), _flag("background_gradient", "N4"), "source_orientation",
             {"name": "error", "reason": "timeout"}]
    assert flag_names(flags) == ("background_gradient", "error", "linear_feature", "source_orientation")
    assert flag_ccds(flags) == ("N4", "S5")
    assert flag_names(None) == () and flag_ccds([]) == ()


@pytest.mark.parametrize(("newest_first", "expected"), [
    ([], {}),
    ([()], {}),
    ([("N4",), ("N4",), ("N4",)], {"N4": 3}),
    ([("N4", "S5"), ("N4",), ("N4", "S5"), ("S5",)], {"N4": 3, "S5": 1}),
    ([(), ("N4",), ("N4",)], {}),                      # the newest is clean: no run
    ([("N4",), ("S5",), ("N4",)], {"N4": 1}),          # a gap ends the run
])
def test_ccd_streaks_count_back_from_the_newest_without_a_gap(newest_first, expected):
    assert ccd_streaks(newest_first) == expected


# ---- the collector on a real store ----------------------------------------------------------------


def test_recent_bad_and_warn_exposures_are_named_with_flags_and_ccds(sessions, scrape):
    with sessions() as s, s.begin():
        _judged(s, "DECam_0001", "bad", [_flag("linear_feature", "S5", "N4"), _flag("background_gradient", "N4")],
                minutes=2)
        _judged(s, "DECam_0002", "warn", [_flag("source_orientation")], minutes=5)
        _judged(s, "DECam_0003", "bad", [_flag("background_gradient", "N9")], minutes=20)  # left the window
        _judged(s, "DECam_0004", "ok", minutes=1)
        _judged(s, "DECam_0005", "calibrating", minutes=1, band="g")
        record_received(s, "DECam_0006", instrument="DECam", band="r", received_at=_ago(1))  # still queued
    samples = scrape(sessions)
    assert [x.value for x in samples["obsqc_store_up"]] == [1.0]
    recent = {x.labels["exposure_id"]: x for x in samples["obsqc_recent_exposure_verdict"]}
    assert set(recent) == {"DECam_0001", "DECam_0002"}
    bad = recent["DECam_0001"]
    assert bad.labels == {"instrument": "DECam", "band": "r", "exposure_id": "DECam_0001", "verdict": "bad",
                          "flags": "background_gradient,linear_feature", "ccds": "N4,S5"}
    assert bad.value == pytest.approx((_ago(2) + dt.timedelta(seconds=10)).timestamp(), abs=1e-3)
    assert recent["DECam_0002"].labels["ccds"] == "none"
    assert recent["DECam_0002"].labels["verdict"] == "warn"


def test_at_most_50_recent_exposures_newest_first(sessions):
    with sessions() as s, s.begin():
        for i in range(55):
            _judged(s, f"E{i:03d}", "bad", [_flag("background_gradient", "N4")], minutes=10 - i * 0.1)
    with sessions() as s, s.begin():
        problems = ops_snapshot(s).problems
    assert len(problems) == 50
    assert [p.exposure_id for p in problems[:2]] == ["E054", "E053"]


def test_consecutive_ccd_flags_per_instrument_and_band(sessions, scrape):
    with sessions() as s, s.begin():
        _reference(s, "DECam", "r", 40, minutes=30)
        _reference(s, "DECam", "i", 40, minutes=30)
        # DECam/r, oldest first: N4 flagged in the last three judged exposures, S5 only in the newest; a
        # rejected and an error verdict in between say nothing about a CCD and do not break the run.
        _judged(s, "r1", "ok", minutes=10)
        _judged(s, "r2", "warn", [_flag("background_gradient", "N4")], minutes=9)
        _judged(s, "r3", "rejected", [{"name": "rejected", "reason": "truncated"}], minutes=8.5)
        _judged(s, "r4", "bad", [_flag("background_gradient", "N4"), _flag("linear_feature", "N4")], minutes=8)
        _judged(s, "r5", "error", [{"name": "error", "reason": "timeout"}], minutes=7.5)
        _judged(s, "r6", "bad", [_flag("background_gradient", "N4", "S5")], minutes=7)
        # DECam/i: the newest exposure is clean, so no CCD has a run.
        _judged(s, "i1", "bad", [_flag("background_gradient", "N4")], minutes=6, band="i")
        _judged(s, "i2", "ok", minutes=5, band="i")
    samples = scrape(sessions)
    streaks = {(x.labels["band"], x.labels["ccd"]): x.value for x in samples["obsqc_ccd_consecutive_flags"]}
    assert streaks == {("r", "N4"): 3.0, ("r", "S5"): 1.0}


def test_consecutive_flags_look_back_at_most_20_exposures(sessions):
    with sessions() as s, s.begin():
        _reference(s, "DECam", "r", 40, minutes=60)
        for i in range(25):
            _judged(s, f"x{i:02d}", "warn", [_flag("background_gradient", "S1")], minutes=50 - i)
    with sessions() as s, s.begin():
        (pair,) = ops_snapshot(s).pairs
    assert pair.ccd_streaks == {"S1": 20}


def test_references_and_calibrating_state(sessions, scrape):
    with sessions() as s, s.begin():
        # DECam/r calibrated long ago and judged since: not calibrating.
        _reference(s, "DECam", "r", 57, minutes=90)
        _judged(s, "r1", "calibrating", minutes=80)
        _judged(s, "r2", "ok", minutes=3)
        # DECam/g: judged ok, then a run of calibrating verdicts (a reference reset): calibrating since the
        # first of that run.
        _reference(s, "DECam", "g", 4, minutes=1)
        _judged(s, "g1", "ok", minutes=50, band="g")
        _judged(s, "g2", "calibrating", minutes=40, band="g")
        _judged(s, "g3", "rejected", minutes=35, band="g")
        _judged(s, "g4", "calibrating", minutes=30, band="g")
        # HSC/z: only calibrating verdicts so far.
        _reference(s, "HSC", "z", 2, minutes=2)
        _judged(s, "z1", "calibrating", minutes=45, instrument="HSC", band="z")
        _judged(s, "z2", "calibrating", minutes=2, instrument="HSC", band="z")
    samples = scrape(sessions)

    def by_pair(name):
        return {(x.labels["instrument"], x.labels["band"]): x.value for x in samples.get(name, [])}

    assert by_pair("obsqc_reference_members") == {("DECam", "r"): 57, ("DECam", "g"): 4, ("HSC", "z"): 2}
    updated = by_pair("obsqc_reference_updated_timestamp_seconds")
    assert updated[("DECam", "r")] == pytest.approx(_ago(90).timestamp(), abs=1e-3)
    assert by_pair("obsqc_calibrating") == {("DECam", "r"): 0, ("DECam", "g"): 1, ("HSC", "z"): 1}
    since = by_pair("obsqc_calibrating_since_timestamp_seconds")
    assert set(since) == {("DECam", "g"), ("HSC", "z")}
    assert since[("DECam", "g")] == pytest.approx((_ago(40) + dt.timedelta(seconds=10)).timestamp(), abs=1e-3)
    assert since[("HSC", "z")] == pytest.approx((_ago(45) + dt.timedelta(seconds=10)).timestamp(), abs=1e-3)


def test_top_ten_recent_galaxy_anomalies(sessions, scrape):
    with sessions() as s, s.begin():
        _judged(s, "G1", "ok", minutes=30)
        _judged(s, "G2", "ok", minutes=200)
        galaxies = [dict(idx=i, ccd="N4", x=10.0, y=20.0, s_disc_sigma=3.5 + i, scored_at=_ago(20)) for i in range(12)]
        galaxies.append(dict(idx=12, ccd="N4", x=1.0, y=2.0, s_disc_sigma=2.9, scored_at=_ago(20)))   # not an anomaly
        galaxies.append(dict(idx=13, ccd="N4", x=1.0, y=2.0, s_disc_sigma=99.0, scored_at=_ago(90)))  # too old
        record_galaxies(s, "G1", galaxies)
        record_galaxies(s, "G2", [dict(idx=0, ccd="S1", x=1.0, y=1.0, s_disc_sigma=50.0, scored_at=_ago(190))])
    samples = scrape(sessions)
    top = samples["obsqc_recent_galaxy_anomaly"]
    assert [x.value for x in top] == [14.5 - i for i in range(10)]
    assert {x.labels["exposure_id"] for x in top} == {"G1"}
    assert all(x.labels["galaxy_id"].isdigit() and x.labels["instrument"] == "DECam" for x in top)


def test_an_unreadable_store_gives_store_up_0_and_the_scrape_still_succeeds(tmp_path, scrape):
    engine = make_engine(f"sqlite:///{tmp_path / 'never-migrated.db'}")  # no tables
    samples = scrape(make_sessionmaker(engine))
    engine.dispose()
    assert [x.value for x in samples["obsqc_store_up"]] == [0.0]
    assert "obsqc_recent_exposure_verdict" not in samples and "obsqc_calibrating" not in samples


def test_promtool_accepts_the_exposition(sessions, tmp_path, promtool):
    with sessions() as s, s.begin():
        _reference(s, "DECam", "r", 20, minutes=5)
        _judged(s, 'odd "id"\n\x7f', "bad", [_flag("background_gradient", "N4", "N 5\t")], minutes=1)
    body, _ = render_metrics(tmp_path / "metrics", None, collectors=[StoreStatsCollector(sessions)])
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b"obsqc_recent_exposure_verdict{" in body and b"obsqc_ccd_consecutive_flags{" in body
