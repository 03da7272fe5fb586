"""Source stamps and galaxy cutouts from one CCD: known-truth cases and simulated CCDs."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from obsqc.detectors.background import BackgroundModel
from obsqc.detectors.ccd import measure_ccd
from obsqc.detectors.sources import EXCLUDE_FLAGS, FLAG_BAD_PIXELS, FLAG_SATURATED
from obsqc.models.cutouts import (
    _residual_windows, corrected_size, galaxy_cutouts, source_stamps, stellar_locus,
)

SATURATE = 30000.0
NOISE = 5.0
PSF_SIGMA = 1.7
COEFFS = np.array([1000.0, 20.0, -15.0, 5.0, 3.0, -4.0])
STARS = [(80.2, 80.7), (160.5, 60.1), (300.3, 70.4), (440.8, 90.2), (90.1, 210.6), (450.4, 260.3),
         (330.6, 450.2), (120.3, 440.9), (450.2, 440.5), (250.4, 180.8)]
GALAXY = (200.3, 310.7)
SATURATED_GALAXY = (380.2, 150.6)
EDGE_GALAXY = (20.4, 360.3)


def gaussian(shape, x0, y0, flux, var_x, var_y, cov=0.0):
    """A 2-D Gaussian of the given (co)variances (px^2) sampled at pixel centres, x = column."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    dx, dy = xx - x0, yy - y0
    det = var_x * var_y - cov * cov
    q = (var_y * dx * dx - 2 * cov * dx * dy + var_x * dy * dy) / det
    return flux * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det))


@pytest.fixture(scope="module")
def analytic_ccd():
    """512x512 CCD: a tilted quadratic background, noise 5, ten PSF stars (sigma 1.7 px), an
    elliptical Gaussian galaxy, a bright galaxy clipped at SATURATE and a galaxy 20 px from the edge."""
    shape = (512, 512)
    img = BackgroundModel(COEFFS, NOISE, shape, 0).model_image(np.float64)
    img += np.random.default_rng(1).normal(0.0, NOISE, shape)
    p2 = PSF_SIGMA**2
    for i, (x, y) in enumerate(STARS):
        img += gaussian(shape, x, y, 2e4 * (1 + i), p2, p2)
    # Intrinsic galaxy (co)variances 20, 9, cov 4 px^2 (about 30 degrees), plus the PSF's.
    img += gaussian(shape, *GALAXY, 1.5e5, 20 + p2, 9 + p2, 4.0)
    img += gaussian(shape, *SATURATED_GALAXY, 6e7, 16 + p2, 16 + p2)
    img += gaussian(shape, *EDGE_GALAXY, 1.5e5, 16 + p2, 12 + p2)
    img = np.minimum(img, SATURATE).astype(np.float32)
    stats = measure_ccd(img, saturate=SATURATE)
    return img, stats


def _row_near(sources, x, y, tol=1.5):
    d = np.hypot(sources["x"] - x, sources["y"] - y)
    i = int(np.argmin(d))
    return i if d[i] < tol else None


def test_fixture_sources_are_found(analytic_ccd):
    _, st = analytic_ccd
    s = st.sources
    for x, y in STARS + [GALAXY, EDGE_GALAXY]:
        assert _row_near(s, x, y) is not None
    sat = _row_near(s, *SATURATED_GALAXY, tol=3.0)
    assert sat is not None and s["flags"][sat] & FLAG_SATURATED


def test_stellar_locus_is_the_psf_size(analytic_ccd):
    _, st = analytic_ccd
    t_psf = stellar_locus(st.sources, st.background.sigma)
    # A Gaussian PSF has T = 2 sigma^2 = 5.78 px^2; the isophote correction recovers it within 10%.
    assert t_psf == pytest.approx(2 * PSF_SIGMA**2, rel=0.1)
    tc = corrected_size(st.sources, st.background.sigma)
    g = _row_near(st.sources, *GALAXY)
    assert tc[g] == pytest.approx(20 + 9 + 2 * PSF_SIGMA**2, rel=0.15)


def test_known_galaxy_is_cut_centred_and_stars_are_not(analytic_ccd):
    img, st = analytic_ccd
    c = galaxy_cutouts(img, st.sources, st.background.coeffs, st.background.sigma, saturate=SATURATE)
    assert c.pixels.shape == (1, 1, 96, 96) and c.pixels.dtype == np.float32
    assert c.rows.dtype == np.int64 and c.x.dtype == np.float64
    g = _row_near(st.sources, *GALAXY)
    assert list(c.rows) == [g]
    assert c.x[0] == pytest.approx(GALAXY[0], abs=0.1) and c.y[0] == pytest.approx(GALAXY[1], abs=0.1)
    p = c.pixels[0, 0]
    # The fixed asinh scale (obsqc.models.preprocess): sky at 0, the core well above the noise, below 1.
    assert p.min() == 0.0 and 0.3 < p.max() < 1.0
    # Centred: the galaxy's light-weighted centre in the cutout is pixel 48 (+ the sub-pixel offset).
    w = np.where(p > 0.5 * p.max(), p, 0.0)
    yy, xx = np.mgrid[0:96, 0:96]
    assert (w * xx).sum() / w.sum() == pytest.approx(48 + GALAXY[0] - 200, abs=0.3)
    assert (w * yy).sum() / w.sum() == pytest.approx(48 + GALAXY[1] - 311, abs=0.3)


def test_saturated_galaxy_is_left_out_even_without_the_catalogue_flag(analytic_ccd):
    img, st = analytic_ccd
    s = st.sources.copy()
    s["flags"] &= ~(FLAG_SATURATED | FLAG_BAD_PIXELS)  # a catalogue that did not know SATURATE
    sat = _row_near(s, *SATURATED_GALAXY, tol=3.0)
    kw = dict(psf_size=2 * PSF_SIGMA**2, edge="pad")
    assert sat in galaxy_cutouts(img, s, st.background.coeffs, st.background.sigma, **kw).rows
    assert sat not in galaxy_cutouts(img, s, st.background.coeffs, st.background.sigma, saturate=SATURATE, **kw).rows


def test_edge_galaxy_is_skipped_or_padded(analytic_ccd):
    img, st = analytic_ccd
    e = _row_near(st.sources, *EDGE_GALAXY)
    args = (img, st.sources, st.background.coeffs, st.background.sigma)
    assert e not in galaxy_cutouts(*args, saturate=SATURATE).rows
    c = galaxy_cutouts(*args, saturate=SATURATE, edge="pad")
    k = list(c.rows).index(e)
    # Window columns x0 .. x0 + 95 with x0 = 20 - 48: the first 28 lie beyond the CCD, padded with 0.
    assert np.all(c.pixels[k, 0, :, :28] == 0.0)
    full = galaxy_cutouts(*args, saturate=SATURATE, edge="pad").pixels[k, 0]
    assert c.pixels[k, 0, :, 28:].max() == pytest.approx(full.max()) and full.max() > 0.3
    with pytest.raises(ValueError):
        galaxy_cutouts(*args, edge="wrap")


def test_residual_windows_subtract_the_background_polynomial(analytic_ccd):
    img, st = analytic_ccd
    bg = BackgroundModel(st.background.coeffs, 1.0, img.shape, 0)
    cx, cy = np.array([5, 256, 500]), np.array([500, 256, 3])
    win = _residual_windows(img, st.background.coeffs, cx, cy, 64)
    for k in range(3):
        ys, xs = np.mgrid[cy[k] - 32:cy[k] + 32, cx[k] - 32:cx[k] + 32]
        inside = (xs >= 0) & (ys >= 0) & (xs < 512) & (ys < 512)
        want = np.zeros((64, 64))
        want[inside] = img[ys[inside], xs[inside]] - bg.evaluate(xs[inside], ys[inside])
        assert_allclose(win[k], want, atol=2e-3)


def test_source_stamps_are_peak_normalised_and_centred(analytic_ccd):
    img, st = analytic_ccd
    s = st.sources
    stamps = source_stamps(img, s, st.background.coeffs)
    usable = np.flatnonzero((s["flags"] & EXCLUDE_FLAGS) == 0)
    assert sorted(stamps.rows) == sorted(usable)
    assert stamps.pixels.shape == (len(usable), 64, 64) and stamps.pixels.dtype == np.float32
    assert stamps.pixels.min() >= 0.0 and stamps.pixels.max() <= 1.0
    assert_allclose(stamps.pixels[:, 32, 32], 1.0, atol=1e-6)  # the peak pixel, at the centre
    assert np.all(np.diff(s["peak"][stamps.rows]) <= 0)  # brightest first
    top = source_stamps(img, s, st.background.coeffs, max_n=3)
    assert_allclose(top.pixels, stamps.pixels[:3])


def test_empty_catalogue_gives_empty_results(analytic_ccd):
    img, st = analytic_ccd
    none = st.sources[:0]
    assert source_stamps(img, none, st.background.coeffs).pixels.shape == (0, 64, 64)
    assert galaxy_cutouts(img, none, st.background.coeffs, st.background.sigma).pixels.shape == (0, 1, 96, 96)


@pytest.mark.parametrize("seed", [3, 6])
def test_simulated_ccd_gives_plausible_cutouts(seed):
    from scipy.spatial import cKDTree

    from obsqc.sim import simulate_ccd

    img, truth = simulate_ccd((1024, 1024), seed=seed)
    st = measure_ccd(img, saturate=truth["saturate"])
    c = galaxy_cutouts(img, st.sources, st.background.coeffs, st.background.sigma, saturate=truth["saturate"])
    assert 2 <= len(c.rows) <= 40
    # Most cutouts are centred on a simulated galaxy (the brightest truth object within 3 px).
    cat = truth["catalog"]
    tree = cKDTree(np.c_[cat["x"], cat["y"]])
    kinds = []
    for x, y in zip(c.x, c.y):
        near = tree.query_ball_point([x, y], 3.0)
        kinds.append(cat["kind"][near[int(np.argmin(cat["mag"][near]))]] if near else 1)
    assert np.mean(np.array(kinds) == 1) >= 0.8
    stamps = source_stamps(img, st.sources, st.background.coeffs)
    assert len(stamps.rows) == st.n_sources
