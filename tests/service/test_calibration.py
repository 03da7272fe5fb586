"""The reference update rule (obsqc/service/calibration.py) and the learned indicators it calibrates
(obsqc/service/learned.py), on synthetic member statistics stored in a real SQLite store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.exposure import ExposureStats
from obsqc.detectors.scoring import Reference
from obsqc.service.calibration import MemberCCD, add_member, learned_from_json, rebuild_reference, stats_to_json
from obsqc.service.learned import AUTOENCODER, MIN_LOG_SCALE, calibrate_learned, learned_sigma
from obsqc.service.store import load_reference, make_engine, make_sessionmaker, upgrade
from obsqc.service.verdict import judge
from tests.service.test_verdict import score

P = DetectorParams()


def _member(rng: np.random.Generator, exposure_id: str, *, stripes: bool = False) -> ExposureStats:
    """Isotropic histograms of a normal exposure; ``stripes``: every gradient angle in one bin."""
    ccds = []
    for k in range(4):
        gradients = rng.multinomial(2000, np.full(P.background_bins, 1 / P.background_bins))
        if stripes:
            gradients = np.zeros(P.background_bins, np.int64)
            gradients[0] = 2000
        ccds.append(MemberCCD(f"C{k}", gradients, rng.multinomial(60, np.full(P.coarse_bins, 1 / P.coarse_bins)),
                              float(rng.normal(3.0, 0.3)), 100))
    return ExposureStats(exposure_id, tuple(ccds), rng.multinomial(400, np.full(P.source_bins, 1 / P.source_bins)),
                         rng.multinomial(400, np.full(P.profile_bins, 1 / P.profile_bins)))


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'cal.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_calibrate_learned_is_median_and_normalised_mad_with_a_floor():
    values = [0.0, 1.0, 2.0, 3.0, 100.0]
    median, scale, n = calibrate_learned(values)
    assert (median, n) == (2.0, 5.0)
    assert scale == pytest.approx(1.4826 * 1.0)
    assert calibrate_learned([1.0, 1.0, 1.0, float("nan")])[1] == MIN_LOG_SCALE
    assert calibrate_learned([1.0, float("nan"), None]) is None


def test_learned_sigma_is_nan_without_a_calibration():
    ref = Reference(*(np.ones(3) / 3,) * 4, learned={AUTOENCODER: [1.0, 0.5, 20.0]})
    assert learned_sigma(ref, AUTOENCODER, 2.5) == pytest.approx(3.0)
    assert math.isnan(learned_sigma(ref, "other", 2.5))
    assert math.isnan(learned_sigma(None, AUTOENCODER, 2.5))
    assert math.isnan(learned_sigma(ref, AUTOENCODER, None))
    assert Reference.from_json(ref.to_json()).learned == ref.learned


def test_rebuild_calibrates_the_autoencoder_on_the_kept_members_only(sessions):
    rng = np.random.default_rng(3)
    log_mse = rng.normal(-5.0, 0.2, 12)
    with sessions.begin() as s:
        for i in range(12):
            add_member(s, "CAM", "r", _member(rng, f"n{i}"), source="live", learned={AUTOENCODER: float(log_mse[i])})
        # a stripes exposure offered during calibration, with an absurd autoencoder value
        add_member(s, "CAM", "r", _member(rng, "bad", stripes=True), source="live", learned={AUTOENCODER: 50.0})
        add_member(s, "CAM", "r", _member(rng, "old"), source="seed")  # stored before learned indicators
        report = rebuild_reference(s, "CAM", "r", window=200, warn_sigma=3.0, params=P)
    assert "bad" in report.rejected
    with sessions() as s:
        ref = load_reference(s, "CAM", "r")
    median, scale, n = ref.learned[AUTOENCODER]
    assert n == 12 and median == pytest.approx(np.median(log_mse))
    assert scale == pytest.approx(max(1.4826 * np.median(np.abs(log_mse - np.median(log_mse))), MIN_LOG_SCALE))


def test_member_json_keeps_learned_values_and_old_members_read_as_none():
    rng = np.random.default_rng(0)
    stats = _member(rng, "e")
    assert learned_from_json(stats_to_json(stats, {AUTOENCODER: -4.5, "nan": float("nan")})) == {AUTOENCODER: -4.5}
    assert learned_from_json('{"exposure_id": "e"}') == {}


def test_a_learned_significance_raises_its_own_flag():
    verdict = judge(score(), warn_sigma=3, bad_sigma=5, reference_exposures=20, min_reference_exposures=10,
                    learned={AUTOENCODER: 6.0})
    assert verdict.verdict == "bad" and verdict.flags == ("source_autoencoder",)
    assert "autoencoder" in verdict.reasons[0]
    quiet = judge(score(), warn_sigma=3, bad_sigma=5, reference_exposures=20, min_reference_exposures=10,
                  learned={AUTOENCODER: float("nan")})
    assert quiet.verdict == "ok"
