"""Peak offsets: a ring (defocus donut) sits far from a compact PSF."""

import numpy as np
import pytest

from obsqc.detectors.sources import find_sources, usable
from obsqc.detectors.structure import offset_histogram, peak_offsets


def ring(size, radius, width, amp):
    yy, xx = np.mgrid[0:size, 0:size] - size / 2 + 0.3
    return amp * np.exp(-0.5 * ((np.hypot(xx, yy) - radius) / width) ** 2)


def test_donut_has_a_large_offset_and_a_star_a_small_one():
    rng = np.random.default_rng(0)
    star = rng.normal(0, 1, (65, 65)) + ring(65, 0.0, 1.6, 800)
    donut = rng.normal(0, 1, (65, 65)) + ring(65, 6.0, 1.2, 200)
    o_star = peak_offsets(usable(find_sources(star.astype(np.float32), background_coeffs=np.zeros(6), sigma=1.0)))
    o_donut = peak_offsets(usable(find_sources(donut.astype(np.float32), background_coeffs=np.zeros(6), sigma=1.0)))
    assert o_star[0] < 0.3
    assert o_donut[0] > 0.7


def test_offset_of_hand_made_catalogue():
    cat = np.zeros(2, dtype=[("x", "f8"), ("y", "f8"), ("peak_x", "i4"), ("peak_y", "i4"), ("q_xx", "f8"), ("q_yy", "f8")])
    cat["x"], cat["y"], cat["peak_x"], cat["peak_y"] = [3.0, 0.0], [4.0, 0.0], [0, 0], [0, 0]
    cat["q_xx"], cat["q_yy"] = [12.5, 0.0], [12.5, 0.0]
    out = peak_offsets(cat)
    assert out[0] == pytest.approx(1.0) and np.isnan(out[1])


def test_histogram_puts_large_values_in_the_last_bin_and_drops_nan():
    counts = offset_histogram(np.array([0.0, 0.05, 0.95, 3.0, np.nan]), bins=10, max_offset=1.0)
    assert counts.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    with pytest.raises(ValueError):
        offset_histogram(np.zeros(3), bins=0)
