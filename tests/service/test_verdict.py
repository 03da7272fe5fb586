"""Verdicts from scores: thresholds, flags named after indicators, CCDs responsible, calibrating."""

import pytest

from obsqc.detectors.scoring import CCDScore, ExposureScore, Indicator
from obsqc.service.verdict import judge

NAN = float("nan")


def ind(sigma, n=100):
    return Indicator(0.01, 0.005, sigma, n)


def score(source=0.0, profile=0.0, background=0.0, large_scale=0.0, line=0.0, ccd_bkg=(0.0, 0.0), ccd_large=(0.0, 0.0)):
    ccds = tuple(CCDScore(f"N{i + 1}", ind(b), ind(ls), 10) for i, (b, ls) in enumerate(zip(ccd_bkg, ccd_large)))
    return ExposureScore("e1", len(ccds), ind(source), ind(profile), ind(background), ind(large_scale), ind(line), ccds)


def run(s, **kw):
    return judge(s, warn_sigma=kw.get("warn", 3.0), bad_sigma=kw.get("bad", 5.0),
                 reference_exposures=kw.get("ref", 50), min_reference_exposures=20)


def test_normal_exposure_is_ok_with_no_flags():
    v = run(score(source=1.2, background=-0.5))
    assert v.verdict == "ok" and v.flags == () and v.ccds == ()


def test_warn_and_bad_levels():
    assert run(score(source=3.5)).verdict == "warn"
    assert run(score(source=3.5, line=7.0)).verdict == "bad"
    assert run(score(source=5.0)).verdict == "bad"  # the threshold itself counts


def test_flags_name_indicators_and_ccds_worst_first():
    v = run(score(background=6.0, ccd_bkg=(3.5, 9.0), large_scale=4.0, ccd_large=(4.2, 1.0)))
    assert v.verdict == "bad"
    assert v.flags == ("background_gradient", "background_large_scale")
    assert v.ccds == ("N2", "N1")
    assert "background_gradient at 6.0 sigma on CCDs N2, N1" in v.reasons[0]


def test_source_flags_name_no_ccd_and_nan_is_ignored():
    v = run(score(source=4.0, profile=NAN, line=NAN))
    assert v.flags == ("source_orientation",) and v.ccds == ()
    assert "preferred orientation" in v.reasons[0]


def test_calibrating_until_the_reference_is_large_enough():
    v = run(score(source=40.0), ref=5)
    assert v.verdict == "calibrating" and v.flags == () and "5 of the 20" in v.reasons[0]


def test_thresholds_must_be_ordered():
    with pytest.raises(ValueError, match="bad_sigma"):
        run(score(), warn=5.0, bad=3.0)
