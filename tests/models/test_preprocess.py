"""Asinh (Lupton) scaling of galaxy cutouts and the peak normalisation of source stamps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.visualization import make_lupton_rgb
from numpy.testing import assert_allclose

from obsqc.models.preprocess import REFERENCE_NOISE, asinh_scale, asinh_unscale, lupton_constants, normalize_stamps


def lupton_twin(images: np.ndarray, stretch: float = 0.5, Q: float = 15.0, per_image: bool = True) -> np.ndarray:
    """Plain-numpy Lupton et al. (2004) as papers/003 §2 uses it, written from the formula, float64.

    I = mean over bands, f(I) = asinh(Q I / stretch) * 0.1 / asinh(0.1 Q), X_c = max(x_c f(I) / I, 0)
    (0 where I <= 0), channels divided by max_c X_c where it exceeds 1, then per image min-max to [0, 1]
    (the paper), or, without ``per_image``, nothing more (obsqc's fixed scale).
    """
    x = np.nan_to_num(np.asarray(images, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    out = np.empty_like(x)
    for i, im in enumerate(x):
        inten = im.mean(axis=0)
        f = np.arcsinh(Q * inten / stretch) * 0.1 / np.arcsinh(0.1 * Q)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(inten > 0, f / inten, 0.0)
        X = np.maximum(im * ratio, 0.0)
        m = X.max(axis=0)
        X = np.where(m > 1, X / np.where(m > 1, m, 1.0), X)
        if not per_image:
            out[i] = X
            continue
        lo, hi = X.min(), X.max()
        out[i] = (X - lo) / (hi - lo) if hi > lo else 0.0
    return out


def _inputs(kind: str, c: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 0.04, (5, c, 24, 24))
    x[:, :, 10:14, 10:14] += rng.uniform(0.1, 50.0, (5, c, 1, 1))  # a bright core
    if kind == "constant":
        x[:] = 0.3
    elif kind == "nan_holed":
        x[:, :, 3, 5] = np.nan
        x[:, :, 7, 7] = np.inf
    elif kind == "tiny":
        x = x[:, :, :2, :2]
    elif kind == "huge":
        x[:, :, 12, 12] = 5e6  # beyond f = 1: the colour-preserving saturation rule acts
    return x.astype(np.float32)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("kind", ["random", "constant", "nan_holed", "tiny", "huge"])
@pytest.mark.parametrize("per_image", [True, False])
def test_asinh_scale_matches_plain_numpy_twin(kind, c, per_image):
    x = _inputs(kind, c)
    y = asinh_scale(x, per_image=per_image)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert_allclose(y, lupton_twin(x, per_image=per_image), atol=2e-6)
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_three_bands_match_astropy_make_lupton_rgb_as_the_paper_called_it():
    # The paper's code: make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0), then 0-1 per image.
    x = _inputs("random", 3).astype(np.float64)
    for im, ours in zip(x, asinh_scale(x, per_image=True)):
        rgb = make_lupton_rgb(im[0], im[1], im[2], Q=15, stretch=0.5, interval=None, minimum=0,
                              output_dtype=np.float64)
        rgb = np.moveaxis(rgb, 2, 0)
        rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
        assert_allclose(ours, rgb, atol=2e-6)


def test_lupton_constants_are_astropys():
    from astropy.visualization import LuptonAsinhStretch

    soften, slope = lupton_constants(0.5, 15.0)
    v = np.linspace(0.0, 3.0, 50)
    assert_allclose(np.arcsinh(soften * v) * slope, LuptonAsinhStretch(stretch=0.5, Q=15)(v.copy()), rtol=1e-12)


def test_per_image_every_image_spans_zero_to_one_and_flat_images_are_zero():
    x = _inputs("random", 1)
    y = asinh_scale(x, per_image=True).reshape(len(x), -1)
    assert_allclose(y.min(axis=1), 0.0)
    assert_allclose(y.max(axis=1), 1.0)
    assert np.all(asinh_scale(np.full((2, 1, 8, 8), 3.0), per_image=True) == 0.0)


def test_the_fixed_scale_does_not_depend_on_the_brightest_pixel():
    """The default: a cosmic ray added to one pixel leaves every other pixel's value unchanged (with the
    paper's per-image normalisation it would dim the whole image)."""
    x = _inputs("random", 1)
    hit = x.copy()
    hit[:, 0, 2, 2] = 500.0
    y, y_hit = asinh_scale(x), asinh_scale(hit)
    mask = np.ones(x.shape, bool)
    mask[:, 0, 2, 2] = False
    assert_allclose(y_hit[mask], y[mask])
    assert np.all(y_hit[:, 0, 2, 2] > y.max(axis=(1, 2, 3)))
    assert not np.allclose(asinh_scale(hit, per_image=True)[mask], asinh_scale(x, per_image=True)[mask], atol=1e-3)


def test_asinh_unscale_inverts_the_fixed_scale():
    x = np.abs(_inputs("random", 1))
    assert_allclose(asinh_unscale(asinh_scale(x)), x, rtol=1e-4, atol=1e-6)
    assert np.all(asinh_unscale(np.array([-0.5, 0.0])) == 0.0)
    assert np.isfinite(asinh_unscale(np.array([1.0, 7.0]))).all()


def test_sigma_rescales_to_the_reference_noise():
    x = _inputs("random", 1) * 25.0  # noise 1.0 per pixel
    assert_allclose(asinh_scale(x, sigma=1.0), asinh_scale(x * REFERENCE_NOISE), atol=1e-6)
    sig = np.array([1.0, 2.0, 0.5, 4.0, 1.5])
    assert_allclose(asinh_scale(x, sigma=sig), asinh_scale(x * (REFERENCE_NOISE / sig)[:, None, None, None]),
                    atol=1e-6)
    # Per band: one factor per image, the rms of the band noises (colours survive).
    x3 = _inputs("random", 3)
    s3 = np.tile([1.0, 2.0, 2.0], (5, 1))
    assert_allclose(asinh_scale(x3, sigma=s3), asinh_scale(x3, sigma=np.sqrt(3.0)), atol=1e-6)


def test_a_single_image_keeps_its_shape():
    x = _inputs("random", 3)
    assert_allclose(asinh_scale(x[0]), asinh_scale(x)[0])
    assert asinh_scale(x[0]).shape == x[0].shape


@pytest.mark.parametrize("shape", [(4, 2, 8, 8), (8, 8), (1, 1, 1, 4, 4)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(ValueError):
        asinh_scale(np.zeros(shape))


def test_bad_sigma_and_parameters_are_refused():
    x = _inputs("random", 1)
    with pytest.raises(ValueError):
        asinh_scale(x, sigma=np.ones(3))
    with pytest.raises(ValueError):
        asinh_scale(x, sigma=0.0)
    with pytest.raises(ValueError):
        asinh_scale(x, Q=0.0)


def test_normalize_stamps_divides_by_the_peak_and_clips():
    s = np.zeros((3, 5, 5), np.float32)
    s[:, 2, 2] = [10.0, 4.0, 7.0]
    s[0, 0, 0] = 5.0
    s[0, 4, 4] = -3.0
    s[1, 1, 1] = 9.0  # brighter than the peak (a masked neighbour): clipped
    s[2, 3, 3] = np.nan
    out = normalize_stamps(s, np.array([10.0, 4.0, 0.0]))
    assert out.dtype == np.float32
    assert out[0, 2, 2] == 1.0 and out[0, 0, 0] == 0.5 and out[0, 4, 4] == 0.0
    assert out[1, 1, 1] == 1.0
    assert np.all(out[2] == 0.0)  # a non-positive peak gives an empty stamp
    with pytest.raises(ValueError):
        normalize_stamps(s, np.ones(2))


def test_preprocess_and_cutouts_never_import_torch():
    code = ("import sys; import obsqc.models.preprocess, obsqc.models.cutouts; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
