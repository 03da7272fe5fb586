"""Quadrupole moments (eq. 2-5): twin comparison and elliptical Gaussians of known shape."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from obsqc.detectors.moments import quadrupole_moments
from tests.reference import moments as ref


def elliptical_gaussian(size, sigma_x, sigma_y, angle_rad, xc, yc, amplitude=1000.0):
    """A rotated elliptical Gaussian sampled at pixel centres; x = column, y = row."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = xx - xc, yy - yc
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return amplitude * np.exp(-0.5 * (u**2 / sigma_x**2 + v**2 / sigma_y**2))


def truth(sigma_x, sigma_y, angle_rad):
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    q_xx = sigma_x**2 * c**2 + sigma_y**2 * s**2
    q_yy = sigma_x**2 * s**2 + sigma_y**2 * c**2
    q_xy = (sigma_x**2 - sigma_y**2) * c * s
    return q_xx, q_yy, q_xy


def test_gaussian_sigma_3_2_rotated_30_degrees_known_moments():
    """An elliptical Gaussian with sigma 3 and 2 px rotated by 30 deg (centre at x=32.3, y=31.8)."""
    stamp = elliptical_gaussian(65, 3.0, 2.0, np.deg2rad(30), 32.3, 31.8)
    m = quadrupole_moments(stamp, center=(32, 32), threshold_fraction=0.0, floor=1e-12)
    q_xx, q_yy, q_xy = truth(3.0, 2.0, np.deg2rad(30))
    assert_allclose([m.q_xx, m.q_yy, m.q_xy], [q_xx, q_yy, q_xy], rtol=1e-3, atol=1e-3)
    assert m.x_c == pytest.approx(0.3, abs=1e-3) and m.y_c == pytest.approx(-0.2, abs=1e-3)
    assert m.theta_rad == pytest.approx(np.deg2rad(30), abs=1e-3)
    assert m.e1 == pytest.approx((q_xx - q_yy) / (q_xx + q_yy), abs=1e-3)


def test_threshold_keeps_orientation_and_scales_moments_by_the_truncated_gaussian_factor():
    stamp = elliptical_gaussian(65, 3.0, 2.0, np.deg2rad(-55), 32.0, 32.0)
    m = quadrupole_moments(stamp, center=(32, 32))  # I0 = 0.02 I(0)
    c = 2 * np.log(50)  # the I0 isophote: r^2 / sigma^2 < 2 ln 50
    k = (1 - np.exp(-c / 2) * (1 + c / 2)) / (1 - np.exp(-c / 2))
    q_xx, q_yy, q_xy = truth(3.0, 2.0, np.deg2rad(-55))
    assert m.theta_rad == pytest.approx(np.deg2rad(-55), abs=2e-3)
    assert_allclose([m.q_xx, m.q_yy, m.q_xy], k * np.array([q_xx, q_yy, q_xy]), rtol=0.02, atol=0.02)


def test_perpendicular_elongations_are_not_folded_together():
    along_x = quadrupole_moments(elliptical_gaussian(65, 4.0, 2.0, 0.0, 32, 32), floor=1e-9)
    along_y = quadrupole_moments(elliptical_gaussian(65, 4.0, 2.0, np.pi / 2, 32, 32), floor=1e-9)
    assert along_x.theta_rad == pytest.approx(0.0, abs=1e-9)
    assert abs(along_y.theta_rad) == pytest.approx(np.pi / 2, abs=1e-9)


def _random_stamp(rng, kind):
    stamp = rng.normal(0, 1, (33, 33)) + elliptical_gaussian(33, 2.5, 1.5, rng.uniform(-1.5, 1.5), 16.2, 15.7, 50)
    if kind == "nan":
        stamp[rng.integers(0, 33, 20), rng.integers(0, 33, 20)] = np.nan
    elif kind == "edge":
        stamp[:, :14] = -np.inf
    elif kind == "constant":
        stamp = np.full((33, 33), 3.0)
    elif kind == "tiny":
        stamp = stamp[14:19, 14:19]
    return stamp


@pytest.mark.parametrize("kind", ["random", "nan", "edge", "constant", "tiny"])
@pytest.mark.parametrize("seed", range(4))
def test_kernel_matches_numpy_twin(kind, seed):
    stamp = _random_stamp(np.random.default_rng(seed), kind)
    cy, cx = stamp.shape[0] // 2, stamp.shape[1] // 2
    got = quadrupole_moments(stamp, center=(cy, cx), threshold_fraction=0.0, floor=2.0)
    want = ref.connected_moments(stamp, cy, cx, 2.0)
    if want is None:
        assert got.n_pix == 0 and np.isnan(got.theta_rad)
        return
    assert got.n_pix == want["n_pix"]
    for key in ("flux", "x_c", "y_c", "q_xx", "q_yy", "q_xy"):
        assert getattr(got, key) == pytest.approx(want[key], rel=1e-10, abs=1e-10), key
    assert (got.touches_outside, got.touches_invalid, got.touches_border) == (want["outside"], want["invalid"], want["border"])


def test_neighbour_outside_the_isophote_does_not_enter():
    stamp = elliptical_gaussian(65, 2.0, 2.0, 0.0, 32, 32) + elliptical_gaussian(65, 2.0, 2.0, 0.0, 55, 32, 500)
    m = quadrupole_moments(stamp, floor=5.0)
    assert abs(m.e1) < 1e-6 and abs(m.e2) < 1e-6


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        quadrupole_moments(np.zeros(5))
    with pytest.raises(ValueError, match="outside"):
        quadrupole_moments(np.zeros((5, 5)), center=(7, 1))


@settings(max_examples=40, deadline=None)
@given(angle=st.floats(-1.5, 1.5), sx=st.floats(1.5, 4.0), ratio=st.floats(0.3, 0.9))
def test_rot90_moves_orientation_by_90_degrees(angle, sx, ratio):
    stamp = elliptical_gaussian(65, sx, sx * ratio, angle, 32, 32)
    a = quadrupole_moments(stamp, floor=1e-6).theta_rad
    b = quadrupole_moments(np.rot90(stamp).copy(), floor=1e-6).theta_rad
    diff = (b - a + np.pi / 2) % np.pi - np.pi / 2  # axial difference in (-pi/2, pi/2]
    assert abs(abs(diff) - np.pi / 2) < 1e-6
