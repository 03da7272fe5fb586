"""Binned, clipped residual: twin comparison, and a faint large-scale ring seen by its gradients."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from obsqc.detectors.binning import clipped_block_means
from obsqc.detectors.ccd import measure_ccd
from tests.reference import binning as ref

COEFFS = np.array([100.0, 3.0, -2.0, 1.0, 0.5, -1.0])


@pytest.mark.parametrize("kind", ["random", "nan", "saturated", "constant", "tiny", "ragged"])
def test_matches_numpy_twin(kind):
    rng = np.random.default_rng(1)
    from tests.reference.background import model_image

    shape = {"tiny": (8, 8), "ragged": (37, 53)}.get(kind, (96, 128))
    img = (model_image(COEFFS, shape) + rng.normal(0, 2.0, shape)).astype(np.float32)
    img[rng.integers(0, shape[0], 30), rng.integers(0, shape[1], 30)] += 500.0  # stars, cosmics
    if kind == "nan":
        img[10:40, 20:60] = np.nan
    if kind == "saturated":
        img[:, 50:52] = 1e4
    if kind == "constant":
        img = np.full(shape, 7.0, np.float32)
    got = clipped_block_means(img, background_coeffs=COEFFS, sigma=2.0, factor=8, clip_sigma=4.0, saturate=5e3)
    want = ref.clipped_block_means(img, COEFFS, 2.0, 8, 4.0, saturate=5e3)
    assert_allclose(got, want, rtol=1e-5, atol=1e-4, equal_nan=True)


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        clipped_block_means(np.zeros(10), background_coeffs=COEFFS, sigma=1.0, factor=2, clip_sigma=4)
    with pytest.raises(ValueError, match="factor"):
        clipped_block_means(np.zeros((10, 10)), background_coeffs=COEFFS, sigma=1.0, factor=0, clip_sigma=4)


def test_a_faint_ring_invisible_per_pixel_shows_in_large_scale_gradients():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:1024, 0:1024]
    ring = 1.0 * np.exp(-0.5 * ((np.hypot(xx - 300, yy + 200) - 900) / 60.0) ** 2)  # 1 sigma, 60 px wide
    normal = rng.normal(0, 1.0, (1024, 1024)).astype(np.float32)
    ghost = (normal + ring).astype(np.float32)
    flat = measure_ccd(normal).coarse_counts
    arc = measure_ccd(ghost).coarse_counts
    assert flat.sum() > 1000 and arc.sum() > 1000

    def chi2(c):
        e = c.sum() / len(c)
        return ((c - e) ** 2 / e).sum()

    assert chi2(arc) > 4 * chi2(flat)
