"""Background fit: twin comparison and known polynomials with stars, bleed trails and cosmic rays."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from obsqc.detectors.background import _draw_samples, fit_background, fit_background_points
from tests.reference import background as ref

SHAPE = (300, 500)
TRUE_COEFFS = np.array([100.0, 5.0, -3.0, 2.0, 1.0, -4.0])


@pytest.fixture
def polynomial_sky():
    rng = np.random.default_rng(11)
    return (ref.model_image(TRUE_COEFFS, SHAPE) + rng.normal(0, 2.0, SHAPE)).astype(np.float32)


@pytest.fixture
def crowded_sky(polynomial_sky):
    """The polynomial plus stars, a saturated star with a bleed trail, cosmic rays and NaN holes."""
    rng = np.random.default_rng(12)
    img = polynomial_sky.copy()
    yy, xx = np.mgrid[-8:9, -8:9]
    for _ in range(120):
        y, x = rng.integers(10, SHAPE[0] - 10), rng.integers(10, SHAPE[1] - 10)
        img[y - 8:y + 9, x - 8:x + 9] += (rng.uniform(20, 2000) * np.exp(-(xx**2 + yy**2) / 5.0)).astype(np.float32)
    img[100:220, 250:253] = 60000.0  # bleed trail at saturation
    for _ in range(40):
        y, x = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1] - 3)
        img[y, x:x + 3] += 3000.0  # cosmic rays
    img[10:30, 10:40] = np.nan
    return img


def test_fit_on_points_matches_numpy_twin(polynomial_sky):
    rng = np.random.default_rng(3)
    ys, xs = rng.integers(0, SHAPE[0], 800), rng.integers(0, SHAPE[1], 800)
    vals = polynomial_sky[ys, xs].astype(float)
    vals[:50] += 500.0  # points on sources
    model = fit_background_points(xs.astype(float), ys.astype(float), vals, SHAPE)
    coeffs, sigma = ref.fit_background_points(xs, ys, vals, SHAPE)
    assert_allclose(model.coeffs, coeffs, rtol=1e-9, atol=1e-9)
    assert model.sigma == pytest.approx(sigma, rel=1e-10)


def test_recovers_known_polynomial_under_stars_trails_and_cosmics(crowded_sky):
    model = fit_background(crowded_sky, saturate=50000.0, seed=5)
    truth = ref.model_image(TRUE_COEFFS, SHAPE)
    assert np.max(np.abs(model.model_image() - truth)) < 1.5  # < 0.75 sigma everywhere
    assert model.sigma == pytest.approx(2.0, rel=0.12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_draws_only_valid_pixels(crowded_sky, seed):
    mask = np.zeros(SHAPE, bool)
    mask[:, :100] = True
    xs, ys, vals, k = _draw_samples(crowded_sky, mask, True, 50000.0, 1000, 4000, seed)
    assert k == 1000
    assert np.all(np.isfinite(vals[:k])) and np.all(vals[:k] < 50000.0)
    assert np.all(xs[:k] >= 100)
    assert_allclose(vals[:k], crowded_sky[ys[:k], xs[:k]])


def test_deterministic_given_seed(crowded_sky):
    a = fit_background(crowded_sky, seed=9)
    b = fit_background(crowded_sky, seed=9)
    assert_allclose(a.coeffs, b.coeffs, rtol=0, atol=0)


def test_constant_image_has_zero_noise_and_exact_level():
    model = fit_background(np.full((64, 64), 7.0, np.float32))
    assert_allclose(model.coeffs, [7, 0, 0, 0, 0, 0], atol=1e-9)
    assert model.sigma < 1e-5  # the float32 rounding floor, not zero


def test_all_nan_image_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="usable background pixels"):
        fit_background(np.full((64, 64), np.nan, np.float32))


def test_refuses_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        fit_background(np.zeros(10, np.float32))


def test_evaluate_matches_model_image():
    rng = np.random.default_rng(0)
    img = (ref.model_image(TRUE_COEFFS, (40, 60)) + rng.normal(0, 0.1, (40, 60))).astype(np.float32)
    m = fit_background(img)
    assert_allclose(m.evaluate(np.array([5.0]), np.array([7.0]))[0], m.model_image(np.float64)[7, 5], rtol=1e-12)
