"""Scoring (eq. 1 and the calibrated significance): analytic and Monte Carlo cases."""

import numpy as np
import pytest

from obsqc.detectors.ccd import CCDStats
from obsqc.detectors.config import DetectorParams
from obsqc.detectors.exposure import combine_ccds
from obsqc.detectors.scoring import Reference, build_reference, score_exposure

PARAMS = DetectorParams()


def fake_ccd(rng, name, n_sources, source_p=None, grad_p=None, n_grad=2000):
    s_bins, b_bins, p_bins = PARAMS.source_bins, PARAMS.background_bins, PARAMS.profile_bins
    src = rng.multinomial(n_sources, source_p if source_p is not None else np.full(s_bins, 1 / s_bins))
    grad = rng.multinomial(n_grad, grad_p if grad_p is not None else np.full(b_bins, 1 / b_bins))
    prof = rng.multinomial(n_sources, np.full(p_bins, 1 / p_bins))
    coarse = rng.multinomial(n_grad // 4, np.full(PARAMS.coarse_bins, 1 / PARAMS.coarse_bins))
    return CCDStats(name=name, shape=(64, 64), background=None, sources=np.empty(0), source_counts=src,
                    profile_counts=prof, gradient_counts=grad, coarse_counts=coarse, line_z=float(rng.normal(5, 1)),
                    n_gradient_points=n_grad)


def exposure(rng, eid, n_per_ccd, n_ccds=4, **kw):
    return combine_ccds(eid, [fake_ccd(rng, f"C{i}", n_per_ccd, **kw) for i in range(n_ccds)])


def test_identical_histograms_give_zero_kl():
    rng = np.random.default_rng(0)
    e = exposure(rng, "a", 100, n_ccds=1)
    ref = build_reference([e])
    score = score_exposure(e, ref)
    assert score.source.kl == pytest.approx(0.0, abs=1e-12)
    assert score.background.kl == pytest.approx(0.0, abs=1e-12)


def test_pooled_sources_and_per_ccd_background():
    rng = np.random.default_rng(1)
    e = exposure(rng, "a", 30, n_ccds=5)
    assert e.n_sources == 150 and e.gradient_counts.shape == (5, PARAMS.background_bins)
    score = score_exposure(e, build_reference([e, exposure(rng, "b", 30, n_ccds=5)]))
    assert len(score.ccds) == 5
    assert score.background.kl == pytest.approx(np.mean([c.background.kl for c in score.ccds]))


@pytest.mark.parametrize("n_per_ccd", [12, 1250])  # ~50 and ~5,000 sources per exposure
def test_false_alarm_rate_is_the_same_for_50_and_5000_sources(n_per_ccd):
    rng = np.random.default_rng(2)
    ref_p = np.full(PARAMS.source_bins, 1 / PARAMS.source_bins)
    ref = Reference(ref_p, np.full(PARAMS.profile_bins, 0.1), np.full(PARAMS.background_bins, 1 / PARAMS.background_bins),
                    np.full(PARAMS.coarse_bins, 1 / PARAMS.coarse_bins))
    sig = np.array([score_exposure(exposure(rng, str(i), n_per_ccd), ref).source.sigma for i in range(1500)])
    assert np.mean(sig > 2.0) == pytest.approx(0.0228, abs=0.014)  # nominal one-sided 2-sigma rate
    assert abs(np.median(sig)) < 0.2


def test_elongated_exposure_stands_out():
    rng = np.random.default_rng(3)
    bins = PARAMS.source_bins
    centres = (np.arange(bins) + 0.5) / bins * np.pi - np.pi / 2
    tilted = 1 + 0.5 * np.cos(2 * (centres - 0.4))
    normal = [exposure(rng, str(i), 100) for i in range(20)]
    odd = exposure(rng, "odd", 100, source_p=tilted / tilted.sum())
    ref = build_reference(normal + [odd])
    scores = {s.exposure_id: s for s in (score_exposure(e, ref) for e in normal + [odd])}
    assert scores["odd"].source.sigma > 4
    assert max(scores[str(i)].source.sigma for i in range(20)) < 3


def test_overdispersion_grows_with_source_count_and_is_absorbed():
    """Normal exposures whose own PSF tilts orientations a little: kappa absorbs it."""
    rng = np.random.default_rng(4)
    bins = PARAMS.source_bins
    centres = (np.arange(bins) + 0.5) / bins * np.pi - np.pi / 2
    exps = []
    for i in range(200):
        p = 1 + 0.08 * np.cos(2 * (centres - rng.uniform(-np.pi / 2, np.pi / 2)))
        exps.append(exposure(rng, str(i), int(rng.choice([15, 1500])), source_p=p / p.sum()))
    ref = build_reference(exps)
    assert ref.source_kappa > 0
    sig = np.array([score_exposure(e, ref).source.sigma for e in exps])
    assert np.mean(sig > 3) < 0.05


def test_reference_round_trips_through_json():
    rng = np.random.default_rng(5)
    ref = build_reference([exposure(rng, str(i), 50) for i in range(5)])
    again = Reference.from_json(ref.to_json())
    np.testing.assert_allclose(again.background_p, ref.background_p)
    assert again.source_kappa == ref.source_kappa and again.n_exposures == 5


def test_malformed_reference_is_a_value_error():
    with pytest.raises(ValueError, match="not a reference"):
        Reference.from_json('{"source_p": [1]}')


def test_exposure_without_sources_scores_nan_not_crash():
    rng = np.random.default_rng(6)
    e = exposure(rng, "empty", 0)
    score = score_exposure(e, build_reference([e, exposure(rng, "b", 10)]))
    assert np.isnan(score.source.sigma) and score.n_sources == 0
    assert np.isfinite(score.background.sigma)


def test_combine_refuses_no_ccds():
    with pytest.raises(ValueError, match="no measurable CCD"):
        combine_ccds("x", [])
