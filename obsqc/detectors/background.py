"""Background: a second-order 2-D polynomial fitted to random sample points.

Alonso, Zhang & Li, §3.1: "we select 1000 random points on the CCD image, and discard the brightest
10% and the darkest 10% ... We fit the remaining points to a polynomial of second order."

What the paper leaves open, decided here:

* Sample points that are non-finite, masked or at/above saturation are never drawn (they are
  replaced by fresh random draws, up to ``4 * n_samples`` tries).
* After the trimmed fit, points whose residual exceeds ``clip_sigma`` noise sigma (a robust sigma,
  1.4826 x MAD of the residuals) are taken to lie on sources and dropped, and the polynomial is
  refitted once. The noise sigma reported is the robust sigma of the final residuals, so no
  full-image median is ever taken.

Polynomial convention (shared with :mod:`obsqc.detectors.gradients` and the sources step):
coordinates are normalised to ``u = 2 x / (nx - 1) - 1`` and ``v = 2 y / (ny - 1) - 1`` with x the
column (numpy axis 1) and y the row (numpy axis 0); the terms are ``[1, u, v, u^2, u v, v^2]``.

.. math::  B(x, y) = c_0 + c_1 u + c_2 v + c_3 u^2 + c_4 u v + c_5 v^2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from obsqc.detectors import config

N_TERMS = 6
"""Number of terms of the second-order polynomial, count."""

_MAD_TO_SIGMA = 1.482602218505602

SIGMA_FLOOR_REL = 4 * float(np.finfo(np.float32).eps)
"""The smallest noise sigma reported, relative to the background level plus one, dimensionless."""


@njit(cache=True, nogil=True, inline="always")
def _norm_coord(i, n):
    """Map a pixel index 0..n-1 to [-1, 1]: ``2 i / (n - 1) - 1`` (0 when n == 1)."""
    if n <= 1:
        return 0.0
    return 2.0 * i / (n - 1) - 1.0


@njit(cache=True, nogil=True, inline="always")
def _poly_eval(coeffs, x, y, nx, ny):
    """B(x, y) of the module docstring at column x, row y of an (ny, nx) image."""
    u = _norm_coord(x, nx)
    v = _norm_coord(y, ny)
    return coeffs[0] + coeffs[1] * u + coeffs[2] * v + coeffs[3] * u * u + coeffs[4] * u * v + coeffs[5] * v * v


@njit(cache=True, nogil=True)
def _row_coefficients(coeffs, y, ny):
    """Collapse B to a quadratic in u for one row: returns (a, b, c) with B = a + b u + c u^2."""
    v = _norm_coord(y, ny)
    return coeffs[0] + coeffs[2] * v + coeffs[5] * v * v, coeffs[1] + coeffs[4] * v, coeffs[3]


@njit(cache=True, nogil=True)
def _columns_u(nx, n):
    """Normalised coordinate u of the first ``n`` columns of an image ``nx`` wide (see the module docstring)."""
    du = 2.0 / (nx - 1) if nx > 1 else 0.0
    us = np.empty(n, np.float64)
    for x in range(n):
        us[x] = x * du - 1.0 if nx > 1 else 0.0
    return us


@njit(cache=True, nogil=True)
def _draw_samples(image, bad_mask, use_mask, saturate, n_samples, max_tries, seed):
    """Draw up to n_samples random pixels that are finite, unmasked and below saturate.

    Returns (xs, ys, values, n_drawn). Never raises.
    """
    np.random.seed(seed)
    ny, nx = image.shape
    xs = np.empty(n_samples, np.int64)
    ys = np.empty(n_samples, np.int64)
    vals = np.empty(n_samples, np.float64)
    k = 0
    tries = 0
    while k < n_samples and tries < max_tries:
        tries += 1
        y = np.random.randint(0, ny)
        x = np.random.randint(0, nx)
        val = image[y, x]
        if not np.isfinite(val) or val >= saturate:
            continue
        if use_mask and bad_mask[y, x]:
            continue
        xs[k] = x
        ys[k] = y
        vals[k] = val
        k += 1
    return xs, ys, vals, k


@dataclass(frozen=True, slots=True)
class BackgroundModel:
    """A fitted background.

    ``coeffs`` are the six polynomial coefficients (data units), ``sigma`` the per-pixel noise
    (data units, robust sigma of the final residuals), ``shape`` the (ny, nx) image shape and
    ``n_used`` the number of sample points in the final fit.
    """

    coeffs: np.ndarray
    sigma: float
    shape: tuple[int, int]
    n_used: int

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """B at columns ``x`` and rows ``y`` (any broadcastable arrays)."""
        return _design_matrix(np.asarray(x, float), np.asarray(y, float), self.shape) @ self.coeffs

    def model_image(self, dtype=np.float32) -> np.ndarray:
        """The full (ny, nx) background image; computed only on demand."""
        ny, nx = self.shape
        yy, xx = np.mgrid[0:ny, 0:nx]
        return self.evaluate(xx.ravel(), yy.ravel()).reshape(ny, nx).astype(dtype)


def _design_matrix(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    u = 2.0 * x / (nx - 1) - 1.0 if nx > 1 else np.zeros_like(x)
    v = 2.0 * y / (ny - 1) - 1.0 if ny > 1 else np.zeros_like(y)
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)


def _robust_sigma(residuals: np.ndarray) -> float:
    return float(_MAD_TO_SIGMA * np.median(np.abs(residuals - np.median(residuals))))


def fit_background(
    image: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    saturate: float | None = None,
    n_samples: int = config.BACKGROUND_N_SAMPLES,
    trim_fraction: float = config.BACKGROUND_TRIM_FRACTION,
    clip_sigma: float = config.BACKGROUND_CLIP_SIGMA,
    seed: int = 0,
) -> BackgroundModel:
    """Fit the second-order background of one CCD (Alonso, Zhang & Li §3.1).

    ``image`` is 2-D (rows = y, columns = x); ``mask`` marks pixels to ignore (True = bad);
    ``saturate`` is the saturation level in data units (pixels at or above it are ignored).

    Raises ``ValueError`` when the image is not 2-D or has fewer than 6 usable pixels to sample.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"background needs a 2-D image, got shape {image.shape}")
    if image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float32)
    image = np.ascontiguousarray(image)
    use_mask = mask is not None
    bad = np.ascontiguousarray(mask, dtype=np.bool_) if use_mask else np.zeros((1, 1), np.bool_)
    if use_mask and bad.shape != image.shape:
        raise ValueError(f"mask shape {bad.shape} differs from image shape {image.shape}")
    sat = np.inf if saturate is None else float(saturate)
    xs, ys, vals, k = _draw_samples(image, bad, use_mask, sat, n_samples, 4 * n_samples, seed)
    if k < 2 * N_TERMS:
        raise ValueError(
            f"only {k} usable background pixels found in a {image.shape[0]}x{image.shape[1]} image; "
            "it is mostly masked, saturated or non-finite"
        )
    return fit_background_points(
        xs[:k].astype(float), ys[:k].astype(float), vals[:k], image.shape,
        trim_fraction=trim_fraction, clip_sigma=clip_sigma,
    )


def fit_background_points(
    xs: np.ndarray,
    ys: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    *,
    trim_fraction: float = config.BACKGROUND_TRIM_FRACTION,
    clip_sigma: float = config.BACKGROUND_CLIP_SIGMA,
) -> BackgroundModel:
    """The fit of :func:`fit_background` on given sample points (columns ``xs``, rows ``ys``).

    Trim the brightest and faintest ``trim_fraction`` (paper), fit, take the robust sigma over all
    points, drop points beyond ``clip_sigma`` of the fit (they lie on sources) and refit.
    """
    k = len(values)
    if k < 2 * N_TERMS:
        raise ValueError(f"{k} sample points are too few for a {N_TERMS}-term background fit")
    order = np.argsort(values, kind="stable")
    n_trim = int(trim_fraction * k)
    keep = order[n_trim : k - n_trim] if k - 2 * n_trim >= 2 * N_TERMS else order
    design = _design_matrix(xs, ys, shape)
    coeffs = _lstsq(design[keep], values[keep])
    # The robust sigma is taken over *all* sample points: the MAD shrugs off the ~10% on sources,
    # whereas the trimmed set alone would under-estimate the noise.
    sigma = _robust_sigma(values - design @ coeffs)
    if sigma > 0:
        inliers = np.abs(values - design @ coeffs) <= clip_sigma * sigma
        if inliers.sum() >= 2 * N_TERMS:
            keep = np.flatnonzero(inliers)
            coeffs = _lstsq(design[keep], values[keep])
            sigma = _robust_sigma(values - design @ coeffs)
    # A float32 image cannot resolve less than its rounding step: never report a smaller noise, so a
    # constant image does not turn rounding residue into 4-sigma "sources".
    sigma = max(float(sigma), SIGMA_FLOOR_REL * (abs(float(coeffs[0])) + 1.0))
    return BackgroundModel(coeffs=coeffs, sigma=sigma, shape=tuple(shape), n_used=int(len(keep)))


def _lstsq(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    coeffs, *_ = np.linalg.lstsq(design, values, rcond=None)
    return coeffs
