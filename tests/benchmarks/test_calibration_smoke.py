"""Smoke test of the calibration benchmark: its core on a tiny configuration.

Two groups of small normal exposures go through the simulator and the real detectors, a mixed
reference is built, the held-out exposures are scored and summarised, and the figure is drawn. It
checks the structure and sanity of every figure, never the headline numbers (those need thousands
of exposures and belong in BENCHMARKS.md).
"""

import json
import math

import pytest

pytest.importorskip("galsim")

from benchmarks import calibration as cal  # noqa: E402

GROUPS = (cal.Group("small", 256, 2, 90.0, 4, 6), cal.Group("larger", 400, 2, 90.0, 4, 6))


@pytest.fixture(scope="module")
def result():
    return cal.run(GROUPS, seed=3, workers=1, out=None, hist_n_test=40, compare_legacy=True, log=lambda m: None)


def test_every_group_and_indicator_is_summarised(result):
    summary = result["summary"]
    assert list(summary) == ["small", "larger"]
    assert len(result["rows"]) == 12 and result["reference"]["n_exposures"] == 8
    for g, table in summary.items():
        assert table["n_exposures"] == 6 and table["median_sources"] > 0
        for name in cal.INDICATORS:
            d = table[name]
            assert d["n"] + d["n_nan"] == 6
            if not d["n"]:  # CCDs under 512 px have no large-scale or line indicator
                assert name in ("large_scale", "line")
                continue
            for t in ("above_3", "above_2"):
                lo, hi = d[t]["ci95"]
                assert 0.0 <= lo <= d[t]["fraction"] <= hi <= 1.0 and d[t]["k"] <= d["n"]
            assert d["above_3"]["k"] <= d["above_2"]["k"]
            assert math.isfinite(d["median_sigma"])
        for name in cal.HISTOGRAM_INDICATORS:
            assert table[name]["median_raw_kl"] > 0 and table[name]["multinomial_bias"] > 0
    # more pixels, more sources: the larger CCDs carry more usable sources than the small ones
    assert summary["larger"]["median_sources"] > summary["small"]["median_sources"]


def test_histogram_check_and_clopper_pearson(result):
    hist = dict(result["histogram_check"])
    assert hist.pop("_reference")["source_kappa"] >= 0
    assert set(hist) == {"small", "larger"}
    for d in hist.values():
        assert d["n_exposures"] == 40 and len(d["source"]["sigmas"]) == 40
    assert cal.clopper_pearson(0, 100)[0] == 0.0
    lo, hi = cal.clopper_pearson(5, 100)
    assert lo < 0.05 < hi and hi == pytest.approx(0.1128, abs=1e-3)


def test_figure_and_json(result, tmp_path):
    png = tmp_path / "calibration.png"
    cal.make_figure(result["rows"], [g.name for g in GROUPS], png, result["histogram_check"], result["legacy"])
    assert png.stat().st_size > 10_000
    legacy = result["legacy"]
    assert legacy["reference"]["source_shape"] == 0.0  # the scaled chi^2 of d(N)
    assert [r["exposure"] for r in legacy["rows"]] == [r["exposure"] for r in result["rows"]]
    doc = json.loads(json.dumps(cal._jsonable(result)))
    assert doc["summary"]["small"]["source"]["above_3"]["nominal"] == pytest.approx(0.00135, abs=1e-5)


def test_histogram_check_false_alarms_do_not_grow_with_source_count():
    """The script's fast check on synthetic truths: normal exposures whose orientations follow their
    own slightly elliptical PSF (intrinsic divergence spread over exposures). With 50 or 5,000
    sources, the fraction above 2 sigma stays near its nominal 2.3% (the scaled chi^2 of d(N) alone
    gave ~14% at 5,000 sources on the simulator's exposures)."""
    import numpy as np

    from obsqc.detectors.ccd import CCDStats
    from obsqc.detectors.config import DetectorParams
    from obsqc.detectors.exposure import combine_ccds

    p = DetectorParams()
    rng = np.random.default_rng(11)
    centres = (np.arange(p.source_bins) + 0.5) / p.source_bins * np.pi - np.pi / 2
    pool = []
    for i in range(60):
        amp = 0.3 * np.sqrt(rng.gamma(1.5, 1.0 / 1.5))  # KL_0 ~ amp^2 / 4: Gamma-distributed, mean ~0.02
        src = 1e4 * (1 + amp * np.cos(2 * (centres - rng.uniform(-np.pi / 2, np.pi / 2))))
        ccd = CCDStats(name="C", shape=(64, 64), background=None, sources=np.empty(0),
                       source_counts=np.rint(src).astype(np.int64),
                       profile_counts=rng.multinomial(10_000, np.full(p.profile_bins, 1 / p.profile_bins)),
                       gradient_counts=rng.multinomial(2000, np.full(p.background_bins, 1 / p.background_bins)),
                       coarse_counts=rng.multinomial(500, np.full(p.coarse_bins, 1 / p.coarse_bins)),
                       line_z=float(rng.normal(5, 1)), n_gradient_points=2000)
        pool.append(combine_ccds(str(i), [ccd]))
    hist = cal.histogram_check(pool, {"50": 50, "5000": 5000}, {"50": 40, "5000": 40}, n_test=600, seed=2)
    for g in ("50", "5000"):
        d = hist[g]["source"]
        assert d["above_2"]["fraction"] < 0.06, (g, d["above_2"])
        assert abs(d["median_sigma"]) < 0.35, (g, d["median_sigma"])
