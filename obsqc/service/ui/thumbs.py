"""Thumbnails of CCDs: block-averaged, asinh-stretched, greyscale PNGs small enough for a web page.

A DECam CCD is 2048 x 4096 pixels (32 MB as float32); its thumbnail is at most :data:`MAX_SIDE`
pixels a side. Block averaging (not decimation) lowers the noise by the block size, so the faint,
large structures that spoil a background (readout stripes, scattered light, a bad amplifier) show up
in the thumbnail more clearly than in any one pixel. The stretch is Lupton et al. (2004)'s
``asinh``: linear within a few noise levels of the sky, logarithmic above, so the sky noise and
the brightest stars are both visible.

.. math:: v = \\frac{\\operatorname{asinh}(x / \\beta) - \\operatorname{asinh}(x_{lo} / \\beta)}
                {\\operatorname{asinh}(x_{hi} / \\beta) - \\operatorname{asinh}(x_{lo} / \\beta)},
          \\qquad x = (I - \\text{sky}) / \\sigma

with the sky the median and :math:`\\sigma` the normalised MAD of the thumbnail, clipped to [0, 1].
Images are ``image[row, col]`` with x along NAXIS1; row 0 is drawn at the bottom, as FITS viewers do.
Cost for a 2048 x 4096 CCD: one pass to replace non-finite pixels and one to average blocks (tens of
milliseconds); the PNG of a noisy 370 x 190 thumbnail is about 50 KB.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

__all__ = ["ASINH_BETA", "HIGH_SIGMA", "LOW_SIGMA", "MAX_SIDE", "asinh_stretch", "block_average", "thumbnail_png"]

MAX_SIDE = 384
"""Longest side of a thumbnail, pixels."""

ASINH_BETA = 3.0
"""Softening of the asinh stretch, in noise units: linear below about this many sigma."""

LOW_SIGMA = -2.0
"""Black level, in noise units from the sky."""

HIGH_SIGMA = 60.0
"""White level at least this many noise units above the sky (higher when the image's 99.9th percentile is)."""


def block_average(image: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, int]:
    """Mean of ``f x f`` blocks, with ``f`` the smallest integer bringing the longer side to ``max_side`` or
    less; non-finite pixels count as the median of the finite ones. Edge rows and columns that do not fill
    a block are dropped. Returns the float32 result and ``f``. Raises ``ValueError`` for a non-2-D input."""
    a = np.asarray(image)
    if a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(f"expected a 2-D image, got shape {a.shape}")
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    factor = max(1, math.ceil(max(a.shape) / max_side))
    factor = min(factor, min(a.shape))  # a very thin image keeps at least one block
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        fill = float(np.median(a[finite])) if finite.any() else 0.0
        a = np.where(finite, a, np.float32(fill))
    ny, nx = (a.shape[0] // factor) * factor, (a.shape[1] // factor) * factor
    blocks = a[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32), factor


def asinh_stretch(image: np.ndarray, *, beta: float = ASINH_BETA, low_sigma: float = LOW_SIGMA,
                  high_sigma: float = HIGH_SIGMA) -> np.ndarray:
    """``image`` mapped to [0, 1] by the asinh stretch of the module docstring (NaN -> 0)."""
    a = np.asarray(image, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, np.float32)
    sky = float(np.median(finite))
    noise = 1.4826 * float(np.median(np.abs(finite - sky)))
    if not noise > 0:
        noise = float(np.std(finite)) or 1.0
    x = (a - sky) / noise
    hi = max(high_sigma, float(np.percentile((finite - sky) / noise, 99.9)))
    lo_v, hi_v = np.arcsinh(low_sigma / beta), np.arcsinh(hi / beta)
    v = (np.arcsinh(x / beta) - lo_v) / (hi_v - lo_v)
    return np.clip(np.nan_to_num(v, nan=0.0), 0.0, 1.0).astype(np.float32)


def thumbnail_png(image: np.ndarray, max_side: int = MAX_SIDE) -> tuple[bytes, int]:
    """The PNG thumbnail of one CCD (grey, row 0 at the bottom) and the block size used."""
    small, factor = block_average(image, max_side)
    pixels = np.round(asinh_stretch(small)[::-1] * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), factor
