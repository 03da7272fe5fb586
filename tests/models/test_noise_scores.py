"""s_gen in noise units and s_anom in sigma units (obsqc.models.noise_scores), against analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from obsqc.models.noise_scores import anomaly_score, generator_score, noise_chi2
from obsqc.models.preprocess import REFERENCE_NOISE, asinh_scale


def _galaxy(size: int = 32, amp: float = 40.0) -> np.ndarray:
    """A round Gaussian galaxy in flux units of REFERENCE_NOISE (peak ``amp`` sigma)."""
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    return (amp * REFERENCE_NOISE * np.exp(-(xx**2 + yy**2) / (2 * 3.0**2)))[None, None]


def test_pure_noise_residual_has_a_reduced_chi_square_of_one():
    rng = np.random.default_rng(0)
    truth = np.repeat(_galaxy(), 200, axis=0)
    noisy = truth + rng.normal(0.0, REFERENCE_NOISE, truth.shape)
    chi = noise_chi2(asinh_scale(noisy), asinh_scale(truth), model_error=0.0)
    # Negative noise is clipped to 0 by the scale, which removes part of the sky's variance: 0.5-1.
    assert chi.shape == (200,) and chi.dtype == np.float64
    assert 0.5 < np.median(chi) < 1.05
    assert np.allclose(generator_score(asinh_scale(noisy), asinh_scale(truth), model_error=0.0), np.log(chi))


def test_a_cosmic_ray_adds_its_square_significance():
    truth = _galaxy()
    hit = truth.copy()
    hit[0, 0, 2, 3] += 40 * REFERENCE_NOISE  # a 40-sigma pixel in the sky
    base = noise_chi2(asinh_scale(truth), asinh_scale(truth))
    with_ray = noise_chi2(asinh_scale(hit), asinh_scale(truth))
    assert base[0] == pytest.approx(0.0, abs=1e-9)
    assert with_ray[0] * hit[0].size == pytest.approx(40.0**2, rel=1e-3)


def test_model_error_forgives_a_misfit_of_the_bright_core_but_not_of_the_sky():
    truth = _galaxy(amp=500.0)
    brighter = truth * 1.1  # the model's core 10% off
    ray = truth.copy()
    ray[0, 0, 0, 0] += 20 * REFERENCE_NOISE
    strict = noise_chi2(asinh_scale(brighter), asinh_scale(truth), model_error=0.0)
    forgiving = noise_chi2(asinh_scale(brighter), asinh_scale(truth), model_error=0.4)
    assert forgiving[0] < strict[0] / 50
    ray_chi = noise_chi2(asinh_scale(ray), asinh_scale(truth), model_error=0.4)
    assert ray_chi[0] > 10 * forgiving[0]  # one 20-sigma sky pixel outweighs the whole core misfit


def test_empty_and_bad_input():
    assert noise_chi2(np.zeros((0, 1, 8, 8)), np.zeros((0, 1, 8, 8))).shape == (0,)
    with pytest.raises(ValueError):
        noise_chi2(np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 7)))
    with pytest.raises(ValueError):
        noise_chi2(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError):
        noise_chi2(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)), model_error=-1.0)


def test_anomaly_score_weighs_the_scores_in_sigma_units_of_the_reference():
    s_gen, s_disc = np.array([1.0, 3.0]), np.array([100.0, 140.0])
    ref = {"s_gen": (1.0, 2.0), "s_disc": (100.0, 20.0)}
    np.testing.assert_allclose(anomaly_score(s_gen, s_disc, reference=ref), [0.0, 0.7 * 1.0 + 0.3 * 2.0])
    np.testing.assert_allclose(anomaly_score(s_gen, s_disc), 0.7 * s_gen + 0.3 * s_disc)  # no reference: raw
    np.testing.assert_allclose(anomaly_score(s_gen, s_disc, lam=1.0, reference=ref), [0.0, 2.0])
    with pytest.raises(ValueError):
        anomaly_score(s_gen, s_disc, lam=1.5)
