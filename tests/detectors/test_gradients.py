"""Background gradient angles (eq. 6-8): twin comparisons, known truth, masks and symmetry."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from obsqc.detectors.gradients import (
    GradientSample,
    box_mean,
    gradient_angles,
    gradient_weights,
    patch_side,
    stencil_gradient,
)
from tests.reference import gradients as ref

ZERO = np.zeros(6)
SIDE = patch_side()  # 20 for the paper's 10x10 box and 5-pixel stencil
LO = 10  # offset of the patch's first pixel before the point


def axial_difference(a, b):
    """a - b modulo pi, in [-pi/2, pi/2)."""
    return np.mod(np.asarray(a) - np.asarray(b) + np.pi / 2, np.pi) - np.pi / 2


def mean_axial_direction(theta):
    """Mean direction of axial angles: half the angle of the mean of exp(2 i theta)."""
    return 0.5 * np.arctan2(np.mean(np.sin(2 * theta)), np.mean(np.cos(2 * theta)))


def assert_matches_reference(image, **kw):
    got = gradient_angles(image, **kw)
    want = ref.gradient_angles(image, **kw)
    assert isinstance(got, GradientSample)
    assert_array_equal(got.x, want.x)
    assert_array_equal(got.y, want.y)
    assert got.n_rejected == want.n_rejected
    assert got.n_requested == kw["n_points"]
    scale = 1e-12 * max(1.0, float(np.nanmax(np.abs(np.asarray(image, float)))))
    assert_allclose(got.d_x, want.d_x, rtol=1e-9, atol=scale)
    assert_allclose(got.d_y, want.d_y, rtol=1e-9, atol=scale)
    assert np.all(np.abs(axial_difference(got.theta_rad, want.theta_rad)) < 1e-9)
    assert np.all((got.theta_rad > -np.pi / 2) & (got.theta_rad <= np.pi / 2))
    return got


# ---- fixtures named for their content -------------------------------------------------------


@pytest.fixture
def noisy_sky():
    rng = np.random.default_rng(11)
    return rng.normal(200.0, 4.0, (96, 128)).astype(np.float32)


def sky_with_background(shape, coeffs, noise, seed):
    rng = np.random.default_rng(seed)
    return (ref.background(coeffs, shape) + rng.normal(0.0, noise, shape)).astype(np.float32)


CASES = {
    "random": lambda: sky_with_background((90, 110), [300, 4, -3, 2, 1, -1.5], 5.0, 1),
    "constant": lambda: np.full((64, 64), 7.25, np.float32),
    "nan_holed": lambda: np.where(
        np.random.default_rng(2).random((80, 80)) < 0.002, np.nan, sky_with_background((80, 80), ZERO, 1.0, 3)
    ),
    "tiny": lambda: sky_with_background((SIDE, SIDE), [10, 1, 1, 0, 0, 0], 1.0, 4),
    "edge_touching": lambda: sky_with_background((SIDE + 1, SIDE + 3), [0, 2, -1, 0.5, 0, 0], 0.5, 5),
    "int16": lambda: np.random.default_rng(6).poisson(900.0, (70, 60)).astype(np.int16),
    "float64_with_hot_pixels": lambda: np.where(
        np.random.default_rng(7).random((70, 70)) < 0.001, 1e4, sky_with_background((70, 70), ZERO, 2.0, 8)
    ),
}


# ---- the small kernels against their twins ----------------------------------------------------


@pytest.mark.parametrize("box", [1, 3, 10])
@pytest.mark.parametrize("name", ["random", "constant", "nan_holed", "tiny", "edge_touching", "int16"])
def test_box_mean_matches_reference(name, box):
    image = CASES[name]()
    assert_allclose(box_mean(image, box), ref.box_mean(image, box), rtol=1e-12, atol=1e-12)


def test_box_mean_keeps_a_nan_local():
    image = np.ones((30, 30))
    image[12, 12] = np.nan
    out = box_mean(image, 10)
    assert np.isnan(out).sum() == 100  # only the windows that contain the pixel
    assert_allclose(out[~np.isnan(out)], 1.0)


@pytest.mark.parametrize("half", [1, 2, 5])
def test_stencil_gradient_matches_reference(half):
    rng = np.random.default_rng(half)
    for s in (rng.normal(size=(2 * half + 1,) * 2), np.full((2 * half + 1,) * 2, 3.0)):
        assert_allclose(stencil_gradient(s, half), ref.stencil_gradient(s, half), rtol=1e-12, atol=1e-14)
    assert stencil_gradient(np.full((2 * half + 1,) * 2, 3.0), half) == (0.0, 0.0)


@pytest.mark.parametrize(("box", "half"), [(10, 5), (3, 2), (4, 1), (1, 1)])
def test_fused_weights_equal_box_then_stencil(box, half):
    """Impulse response of the twin's whole-image steps equals outer(count, slope) (and transposed)."""
    count, slope = gradient_weights(box, half)
    side = patch_side(box, half)
    for r in range(side):
        for c in range(side):
            impulse = np.zeros((side, side))
            impulse[r, c] = 1.0
            smooth = ref.box_mean(impulse, box)  # (2h+1, 2h+1), centre at offset 0 from the point
            d_x, d_y = ref.stencil_gradient(smooth, half)
            assert d_x == pytest.approx(count[r] * slope[c], abs=1e-15)
            assert d_y == pytest.approx(slope[r] * count[c], abs=1e-15)
    assert_array_equal(count, count[::-1])  # the symmetries the kernel's mirrored sums rely on
    assert_array_equal(slope, -slope[::-1])


# ---- the whole step against its twin ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_angles_matches_reference(name):
    image = CASES[name]()
    coeffs = {"random": [300, 4, -3, 2, 1, -1.5], "tiny": [10, 1, 1, 0, 0, 0], "int16": [900, 0, 0, 0, 0, 0]}.get(
        name, ZERO
    )
    sigma = {"int16": 30.0, "float64_with_hot_pixels": 2.0, "random": 5.0}.get(name, 1.0)
    got = assert_matches_reference(
        image, background_coeffs=np.asarray(coeffs, float), sigma=sigma, n_points=150, seed=3
    )
    if name == "constant":
        assert got.n_accepted == 0 and got.n_rejected == 4 * 150  # no direction anywhere
    else:
        assert got.n_accepted > 0


def test_matches_reference_with_mask_saturation_and_odd_box(noisy_sky):
    mask = np.zeros(noisy_sky.shape, bool)
    mask[40:50, 60:64] = True
    kw = dict(background_coeffs=np.array([200.0, 0, 0, 0, 0, 0]), sigma=4.0, mask=mask, saturate=212.0)
    assert_matches_reference(noisy_sky, n_points=200, seed=9, **kw)
    assert_matches_reference(noisy_sky, n_points=200, seed=9, smooth_box=5, half_width=3, mask_sigma=3.0, **kw)


# ---- known truth ------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (0.0, 1.0), (0.3, 0.7), (-2.0, 0.5), (1.0, -1.0), (-0.4, -0.9)])
def test_linear_gradient_gives_its_direction_everywhere(a, b):
    yy, xx = np.mgrid[0:128, 0:160]
    image = a * xx + b * yy
    sample = gradient_angles(image, background_coeffs=ZERO, sigma=np.inf, n_points=500)
    want = ref.fold_axial(np.arctan2(b, a))
    assert sample.n_accepted == 500 and sample.n_rejected == 0
    assert np.all(np.abs(axial_difference(sample.theta_rad, want)) < 1e-6)
    assert_allclose(sample.d_x, 55 * a, atol=1e-9)  # h (2h + 1) times the slope
    assert_allclose(sample.d_y, 55 * b, atol=1e-9)


def test_pure_directions_are_exact_and_folded():
    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    for image, want in [(3.0 * xx, 0.0), (-3.0 * xx, 0.0), (2.0 * yy, np.pi / 2), (-2.0 * yy, np.pi / 2)]:
        sample = gradient_angles(image, background_coeffs=ZERO, sigma=np.inf, n_points=50)
        assert np.all(sample.theta_rad == want)  # -pi/2 folds to +pi/2, pi to 0


def test_background_polynomial_is_subtracted():
    """B(x, y) + a x + b y with the right coefficients gives the direction of (a, b)."""
    coeffs = np.array([500.0, 80.0, -60.0, 40.0, 25.0, -30.0])
    yy, xx = np.mgrid[0:100, 0:120].astype(float)
    image = ref.background(coeffs, xx.shape) + 0.2 * xx - 0.1 * yy
    sample = gradient_angles(image, background_coeffs=coeffs, sigma=np.inf, n_points=300)
    assert np.all(np.abs(axial_difference(sample.theta_rad, np.arctan2(-0.1, 0.2))) < 1e-6)


def test_noise_only_gives_a_flat_angle_histogram():
    image = np.random.default_rng(21).normal(0.0, 1.0, (1024, 2048)).astype(np.float32)
    sample = gradient_angles(image, background_coeffs=ZERO, sigma=1.0, n_points=3000, seed=1)
    counts, _ = np.histogram(sample.theta_rad, bins=16, range=(-np.pi / 2, np.pi / 2))
    assert stats.chisquare(counts).pvalue > 1e-3
    assert np.hypot(np.mean(np.cos(2 * sample.theta_rad)), np.mean(np.sin(2 * sample.theta_rad))) < 0.08


def test_stripes_along_x_point_along_y():
    """Electronic banding: every row has its own offset (rows constant along x), so the gradient
    points along y, theta = +-pi/2; the transposed image (columns constant) gives theta = 0."""
    rng = np.random.default_rng(5)
    banding = np.repeat(rng.normal(0.0, 1.5, (512, 1)), 512, axis=1)
    image = banding + rng.normal(0.0, 1.0, (512, 512))
    for img, want in [(image, np.pi / 2), (image.T, 0.0)]:
        sample = gradient_angles(img, background_coeffs=ZERO, sigma=1.0, mask_sigma=10.0, n_points=2000)
        assert sample.n_accepted == 2000
        near = np.abs(axial_difference(sample.theta_rad, want)) < np.pi / 8
        assert near.mean() > 0.6  # a flat distribution puts 0.25 there
        assert abs(axial_difference(mean_axial_direction(sample.theta_rad), want)) < np.radians(2.0)


@pytest.mark.parametrize("angle_deg", [0.0, 20.0, 45.0, 70.0, 110.0, 160.0])
def test_long_period_waves_point_along_their_wave_vector(angle_deg):
    """Reflections: a plane wave of 64-pixel period. (Shorter periods are pulled towards the axes
    by the stencil's square support: about 7 degrees at 16 pixels, 1.5 at 32.)"""
    angle = np.radians(angle_deg)
    yy, xx = np.mgrid[0:400, 0:400]
    image = 3.0 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / 64.0)
    image = image + np.random.default_rng(0).normal(0.0, 1.0, xx.shape)
    sample = gradient_angles(image, background_coeffs=ZERO, sigma=1.0, mask_sigma=10.0, n_points=3000)
    assert abs(axial_difference(mean_axial_direction(sample.theta_rad), angle)) < np.radians(2.0)


# ---- what is never sampled ----------------------------------------------------------------------


def patch_box(sample, i):
    return sample.y[i] - LO, sample.y[i] - LO + SIDE, sample.x[i] - LO, sample.x[i] - LO + SIDE


def assert_no_patch_touches(sample, rows, cols):
    for i in range(sample.n_accepted):
        r0, r1, c0, c1 = patch_box(sample, i)
        assert r1 <= rows[0] or r0 >= rows[1] or c1 <= cols[0] or c0 >= cols[1]


def test_masked_nan_saturated_and_bright_regions_are_never_sampled(noisy_sky):
    image = noisy_sky.copy()
    image[10:20, 10:30] = np.nan
    image[60:62, 100:102] = np.inf
    image[70:75, 20:25] = 1e5  # a saturated star
    image[30, 80] = 200.0 + 40.0  # a 10-sigma hot pixel
    mask = np.zeros(image.shape, bool)
    mask[40:55, 40:45] = True  # a bad column
    sample = gradient_angles(
        image, background_coeffs=np.array([200.0, 0, 0, 0, 0, 0]), sigma=4.0, mask=mask, saturate=6e4,
        n_points=500, seed=2,
    )
    assert sample.n_accepted > 100 and sample.n_rejected > 0
    regions = [((10, 20), (10, 30)), ((60, 62), (100, 102)), ((70, 75), (20, 25)), ((30, 31), (80, 81))]
    for rows, cols in regions + [((40, 55), (40, 45))]:
        assert_no_patch_touches(sample, rows, cols)


def test_faint_diffuse_light_stays_in():
    """A 1-sigma scattered-light ramp is below the source mask: it must not cause rejections."""
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[0:256, 0:256]
    image = rng.normal(0.0, 1.0, xx.shape) + np.exp(-((xx - 128.0) ** 2 + (yy - 128.0) ** 2) / (2 * 60.0**2))
    sample = gradient_angles(image, background_coeffs=ZERO, sigma=1.0, n_points=1000)
    assert sample.n_rejected < 0.2 * 1000  # only the rare 4-sigma noise pixel, ~1-2% per patch


def test_fully_masked_image_gives_an_empty_sample():
    image = np.ones((40, 40))
    sample = gradient_angles(image, background_coeffs=ZERO, sigma=1.0, mask=np.ones((40, 40), bool), n_points=10)
    assert sample.n_accepted == 0 and sample.n_rejected == 40 and sample.theta_rad.shape == (0,)
    assert gradient_angles(image, background_coeffs=ZERO, sigma=1.0, n_points=0).n_accepted == 0


def test_determinism_given_seed(noisy_sky):
    kw = dict(background_coeffs=np.array([200.0, 0, 0, 0, 0, 0]), sigma=4.0, n_points=300)
    a, b = gradient_angles(noisy_sky, seed=4, **kw), gradient_angles(noisy_sky, seed=4, **kw)
    for field in ("theta_rad", "x", "y", "d_x", "d_y"):
        assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x, gradient_angles(noisy_sky, seed=5, **kw).x)


def test_points_cover_every_admissible_position_and_no_other():
    sample = gradient_angles(
        np.random.default_rng(0).normal(size=(SIDE + 2, SIDE + 1)), background_coeffs=ZERO, sigma=np.inf,
        n_points=400,
    )
    assert set(zip(sample.x.tolist(), sample.y.tolist())) == {(x, y) for x in (10, 11) for y in (10, 11, 12)}


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros(400), {}, "2-D"),
        (np.zeros((2, 30, 30)), {}, "2-D"),
        (np.zeros((30, 30), complex), {}, "real numbers"),
        (np.zeros((30, 30), bool), {}, "real numbers"),
        (np.zeros((19, 40)), {}, "at least 20x20"),
        (np.zeros((30, 30)), {"mask": np.zeros((30, 31), bool)}, "mask shape"),
        (np.zeros((30, 30)), {"mask": np.zeros((30, 30))}, "boolean"),
        (np.zeros((30, 30)), {"background_coeffs": np.zeros(3)}, "6 finite"),
        (np.zeros((30, 30)), {"background_coeffs": np.array([0, 0, np.nan, 0, 0, 0])}, "6 finite"),
        (np.zeros((30, 30)), {"sigma": -1.0}, "sigma"),
        (np.zeros((30, 30)), {"sigma": np.nan}, "sigma"),
        (np.zeros((30, 30)), {"n_points": -1}, "n_points"),
        (np.zeros((30, 30)), {"smooth_box": 0}, "smooth_box"),
        (np.zeros((30, 30)), {"max_tries": 0}, "max_tries"),
        (np.zeros((30, 30)), {"mask_sigma": 0.0}, "mask_sigma"),
        (np.zeros((30, 30)), {"saturate": np.nan}, "saturate"),
    ],
)
def test_bad_input_raises_a_clear_error(image, kwargs, message):
    kw = {"background_coeffs": ZERO, "sigma": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        gradient_angles(image, **kw)


def test_small_kernels_reject_bad_shapes():
    with pytest.raises(ValueError, match="11x11"):
        stencil_gradient(np.zeros((11, 10)), 5)
    with pytest.raises(ValueError, match="does not fit"):
        box_mean(np.zeros((5, 20)), 10)
    with pytest.raises(ValueError, match="2-D"):
        box_mean(np.zeros(20), 3)


# ---- symmetry -----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    angle=st.floats(0.0, np.pi),
    period=st.floats(16.0, 48.0),
    amplitude=st.floats(1.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_rotating_by_90_degrees_moves_the_mean_direction_by_90_degrees(angle, period, amplitude, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:160, 0:192]
    phase = 2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period
    image = amplitude * np.sin(phase) + rng.normal(0.0, 1.0, xx.shape)
    kw = dict(background_coeffs=ZERO, sigma=1.0, mask_sigma=10.0, n_points=1500, seed=seed)
    before = mean_axial_direction(gradient_angles(image, **kw).theta_rad)
    after = mean_axial_direction(gradient_angles(np.rot90(image), **kw).theta_rad)
    assert abs(axial_difference(after - before, np.pi / 2)) < np.radians(3.0)
