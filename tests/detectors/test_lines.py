"""Straight-line search: a faint trail stands out, noise and axis-aligned defects do not."""

import numpy as np
import pytest

from obsqc.detectors.lines import line_angles, max_line_significance


def trail(shape, angle_deg, amplitude, width=1.0, offset=0.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    a = np.deg2rad(angle_deg)
    dist = (xx - shape[1] / 2) * -np.sin(a) + (yy - shape[0] / 2) * np.cos(a) - offset
    return amplitude * np.exp(-0.5 * (dist / width) ** 2)


@pytest.fixture
def noise():
    return np.random.default_rng(0).normal(0, 1, (128, 128))


def test_noise_stays_near_the_gaussian_maximum(noise):
    assert max_line_significance(noise) < 6.0


@pytest.mark.parametrize("angle", [17.0, 45.0, 122.0])
def test_faint_trail_stands_out(noise, angle):
    z = max_line_significance(noise + trail(noise.shape, angle, amplitude=1.0))
    assert z > 10.0


def test_axis_aligned_column_is_ignored(noise):
    img = noise.copy()
    img[:, 40] += 3.0  # a bad column, along the detector axis
    assert max_line_significance(img) < 6.0


def test_nan_blocks_are_skipped_and_too_few_give_nan(noise):
    img = noise + trail(noise.shape, 30.0, 1.0)
    img[:, :20] = np.nan
    assert max_line_significance(img) > 10.0
    assert np.isnan(max_line_significance(np.full((10, 10), np.nan)))


def test_angles_skip_the_axes():
    deg = np.rad2deg(line_angles(1.5, 3.0))
    assert not np.any((deg < 3) | (np.abs(deg - 90) < 3) | (deg > 177))
    with pytest.raises(ValueError, match="2-D"):
        max_line_significance(np.zeros(5))


@pytest.mark.parametrize("kind", ["random", "nan", "constant", "tiny", "trail"])
def test_kernel_matches_numpy_twin(kind):
    from obsqc.detectors.lines import _line_z
    from tests.reference.lines import line_z

    rng = np.random.default_rng(3)
    img = rng.normal(0, 1, (40, 56) if kind != "tiny" else (12, 12))
    if kind == "nan":
        img[5:15, 10:30] = np.nan
    elif kind == "constant":
        img[:] = 2.0
    elif kind == "trail":
        img += trail(img.shape, 33.0, 1.5)
    angles = line_angles(7.0, 3.0)
    got = _line_z(np.ascontiguousarray(img), angles, 4)
    np.testing.assert_allclose(got, line_z(img, angles, 4), rtol=1e-10, atol=1e-12)


def test_rebinning_keeps_a_trail_and_ignores_nan():
    from obsqc.detectors.lines import rebin_for_lines

    img = np.random.default_rng(4).normal(0, 1, (256, 512)) + trail((256, 512), 25.0, 1.0, width=1.5)
    img[0, 0] = np.nan  # one NaN in a 2x2 group: the other three still average
    img[10:12, 10:12] = np.nan  # a whole group: stays NaN
    small = rebin_for_lines(img, 160)
    assert small.shape == (128, 256) and np.isfinite(small[0, 0]) and np.isnan(small[5, 5])
    assert max_line_significance(small) > 10.0
    assert rebin_for_lines(img, 300).shape == img.shape  # already small enough: unchanged
