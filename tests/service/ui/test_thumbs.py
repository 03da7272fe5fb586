"""CCD thumbnails: block averaging, the asinh stretch, and the PNG (orientation, size)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from obsqc.service.ui.thumbs import MAX_SIDE, asinh_stretch, block_average, thumbnail_png


def test_block_average_is_the_mean_of_each_block():
    image = np.arange(8 * 12, dtype=np.float32).reshape(8, 12)
    small, factor = block_average(image, max_side=6)
    assert factor == 2 and small.shape == (4, 6)
    np.testing.assert_allclose(small, image.reshape(4, 2, 6, 2).mean(axis=(1, 3)))


def test_block_average_of_a_decam_ccd_fits_the_limit_and_drops_partial_blocks():
    image = np.ones((4096, 2048), np.float32)
    small, factor = block_average(image)
    assert factor == 11 and max(small.shape) <= MAX_SIDE
    assert small.shape == (4096 // 11, 2048 // 11)


def test_block_average_fills_non_finite_pixels_with_the_median():
    image = np.full((4, 4), 10.0, np.float32)
    image[0, 0], image[1, 1] = np.nan, np.inf
    small, factor = block_average(image, max_side=2)
    assert factor == 2
    np.testing.assert_allclose(small, 10.0)


def test_block_average_rejects_non_images():
    with pytest.raises(ValueError, match="2-D"):
        block_average(np.zeros(5))


def test_asinh_stretch_maps_the_sky_low_and_sources_high_monotonically():
    rng = np.random.default_rng(0)
    image = rng.normal(1000.0, 10.0, (64, 64))
    image[30:33, 30:33] += 5000.0
    v = asinh_stretch(image)
    assert v.dtype == np.float32 and v.min() >= 0.0 and v.max() <= 1.0
    assert np.median(v) < 0.2 and v[31, 31] > 0.9
    ramp = asinh_stretch(np.linspace(900, 2000, 100).reshape(10, 10))
    assert np.all(np.diff(ramp.ravel()) >= 0)


def test_asinh_stretch_of_a_constant_or_empty_image_is_finite():
    assert np.isfinite(asinh_stretch(np.full((3, 3), 5.0))).all()
    assert (asinh_stretch(np.full((3, 3), np.nan)) == 0).all()


def test_thumbnail_png_is_grey_with_row_zero_at_the_bottom():
    image = np.random.default_rng(1).normal(100.0, 1.0, (40, 20)).astype(np.float32)
    image[0:2, 0:2] = 5000.0  # bright corner at row 0, column 0
    png, factor = thumbnail_png(image, max_side=20)
    picture = np.asarray(Image.open(io.BytesIO(png)))
    assert factor == 2 and picture.shape == (20, 10) and picture.dtype == np.uint8
    assert picture[-1, 0] == 255 and picture[0, 0] < 128  # drawn at the bottom left
