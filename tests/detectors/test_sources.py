"""Source finding (§3.1): twin comparison, flags for normal defects, and the 90-degree property."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from obsqc.detectors.sources import (
    EXCLUDE_FLAGS, FLAG_EDGE, FLAG_SATURATED, FLAG_SHARP, SOURCE_DTYPE, find_sources, usable,
)
from tests.detectors.test_moments import elliptical_gaussian
from tests.reference import sources as ref

ZERO_BG = np.zeros(6)


def starfield(shape=(200, 260), n=25, seed=0, noise=1.0, sigma_x=2.0, sigma_y=1.6, angle=None):
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, noise, shape)
    for _ in range(n):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        a = rng.uniform(-np.pi / 2, np.pi / 2) if angle is None else angle
        y0, x0 = int(y), int(x)
        sl = (slice(max(0, y0 - 12), y0 + 13), slice(max(0, x0 - 12), x0 + 13))
        patch = elliptical_gaussian(25, sigma_x, sigma_y, a, 12 + x - x0, 12 + y - y0, rng.uniform(8, 400))
        py, px = sl[0].start - (y0 - 12), sl[1].start - (x0 - 12)
        h, w = img[sl].shape
        img[sl] += patch[py:py + h, px:px + w]
    return img.astype(np.float32)


def _as_sorted_rows(rec):
    return sorted(((int(r["peak_y"]), int(r["peak_x"])), r) for r in rec)


@pytest.mark.parametrize("kind", ["random", "nan", "tiny", "edge", "constant"])
@pytest.mark.parametrize("seed", range(3))
def test_matches_numpy_twin(kind, seed):
    img = starfield(seed=seed)
    if kind == "nan":
        rng = np.random.default_rng(seed)
        img[rng.integers(0, 200, 300), rng.integers(0, 260, 300)] = np.nan
    elif kind == "tiny":
        img = img[:40, :40].copy()
    elif kind == "edge":
        img[0:3, :] += 300.0
        img[:, -2:] += 80.0
    elif kind == "constant":
        img = np.full((64, 64), 5.0, np.float32)
    got = find_sources(img, background_coeffs=ZERO_BG, sigma=1.0, saturate=350.0)
    want = ref.find_sources(img, ZERO_BG, 1.0, saturate=350.0)
    assert len(got) == len(want)
    want_by_peak = {(w["peak_y"], w["peak_x"]): w for w in want}
    for (peak, row) in _as_sorted_rows(got):
        w = want_by_peak[peak]
        assert int(row["flags"]) == w["flags"], peak
        assert int(row["n_footprint"]) == w["n_footprint"] and int(row["n_pix"]) == w["n_pix"]
        for key in ("x", "y", "peak", "flux", "q_xx", "q_yy", "q_xy", "e1", "e2", "theta_rad"):
            assert_allclose(row[key], w[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_no_detections_is_an_empty_catalogue():
    out = find_sources(np.random.default_rng(0).normal(0, 1, (100, 100)).astype(np.float32),
                       background_coeffs=ZERO_BG, sigma=1.0, detect_sigma=8.0)
    assert out.dtype == SOURCE_DTYPE and len(out) == 0


def test_known_star_recovered_with_its_shape():
    img = np.random.default_rng(1).normal(0, 1, (128, 128)).astype(np.float32)
    img += elliptical_gaussian(128, 3.0, 1.5, np.deg2rad(40), 64.4, 60.7, 2000.0).astype(np.float32)
    (src,) = usable(find_sources(img, background_coeffs=ZERO_BG, sigma=1.0))
    assert src["x"] == pytest.approx(64.4, abs=0.05) and src["y"] == pytest.approx(60.7, abs=0.05)
    assert np.rad2deg(src["theta_rad"]) == pytest.approx(40.0, abs=1.0)


def test_background_polynomial_is_subtracted():
    rng = np.random.default_rng(2)
    coeffs = np.array([1000.0, 30.0, -20.0, 5.0, 3.0, -8.0])
    from tests.reference.background import model_image

    img = (model_image(coeffs, (150, 150)) + rng.normal(0, 1, (150, 150))).astype(np.float32)
    img += elliptical_gaussian(150, 2.0, 2.0, 0, 75, 75, 100).astype(np.float32)
    out = find_sources(img, background_coeffs=coeffs, sigma=1.0)
    assert len(out) == 1 and out[0]["peak"] == pytest.approx(100, abs=5)


def test_cosmic_rays_and_hot_columns_are_flagged_sharp():
    img = np.random.default_rng(3).normal(0, 1, (200, 200)).astype(np.float32)
    img[50, 40:48] += 400.0  # a cosmic-ray track
    img[:, 150] += 60.0  # a hot column
    out = find_sources(img, background_coeffs=ZERO_BG, sigma=1.0)
    assert len(out) > 0
    assert np.all(out["flags"] & FLAG_SHARP)
    assert len(usable(out)) == 0


def test_saturated_star_with_bleed_trail_is_flagged_and_excluded():
    img = np.random.default_rng(4).normal(0, 1, (200, 200)).astype(np.float32)
    img += elliptical_gaussian(200, 3.0, 3.0, 0, 100, 100, 5000).astype(np.float32)
    img = np.minimum(img, 1000.0)
    img[60:140, 99:102] = 1000.0  # bleed trail at saturation
    for saturate in (1000.0, None):  # with SATURATE, and from the clipped plateau alone
        out = find_sources(img, background_coeffs=ZERO_BG, sigma=1.0, saturate=saturate)
        assert len(out) >= 1 and np.all(out["flags"] & FLAG_SATURATED), saturate
        assert len(usable(out)) == 0


def test_source_cut_by_the_image_edge_is_flagged():
    img = np.random.default_rng(5).normal(0, 1, (100, 100)).astype(np.float32)
    img += elliptical_gaussian(100, 3.0, 2.0, 0.3, 1.0, 50.0, 500).astype(np.float32)
    out = find_sources(img, background_coeffs=ZERO_BG, sigma=1.0)
    assert len(out) == 1 and out[0]["flags"] & FLAG_EDGE and (out[0]["flags"] & EXCLUDE_FLAGS)


def test_one_peak_per_window():
    img = starfield(shape=(300, 300), n=200, seed=6)
    out = find_sources(img, background_coeffs=ZERO_BG, sigma=1.0)
    for i in range(len(out)):
        for j in range(i + 1, len(out)):
            assert max(abs(out[i]["peak_x"] - out[j]["peak_x"]), abs(out[i]["peak_y"] - out[j]["peak_y"])) > 32


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        find_sources(np.zeros((2, 3, 4)), background_coeffs=ZERO_BG, sigma=1.0)
    with pytest.raises(ValueError, match="6 terms"):
        find_sources(np.zeros((40, 40)), background_coeffs=np.zeros(3), sigma=1.0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), angle=st.floats(-1.5, 1.5))
def test_rot90_moves_every_orientation_by_90_degrees(seed, angle):
    img = starfield(shape=(160, 160), n=12, seed=seed, angle=angle)
    a = usable(find_sources(img, background_coeffs=ZERO_BG, sigma=1.0))
    b = usable(find_sources(np.rot90(img).copy(), background_coeffs=ZERO_BG, sigma=1.0))
    assert len(a) == len(b)
    # np.rot90 maps (row y, col x) -> (row W-1-x, col y) for an image W columns wide.
    w = img.shape[1]
    b_by_peak = {(int(r["peak_y"]), int(r["peak_x"])): r for r in b}
    for r in a:
        rb = b_by_peak[(w - 1 - int(r["peak_x"]), int(r["peak_y"]))]
        diff = (rb["theta_rad"] - r["theta_rad"] + np.pi / 2) % np.pi - np.pi / 2
        assert abs(abs(diff) - np.pi / 2) < 1e-6
