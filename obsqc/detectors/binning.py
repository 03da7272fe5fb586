"""A source-free, binned background residual: the input of the large-scale gradient indicator.

Not in Alonso, Zhang & Li. Their gradient stencil (eq. 6-8, a 10x10 box and +-5 px differences)
sees structure on scales of ~10-30 px: stripes and pattern noise. Scattered-light arcs, ghost rings
and faint satellite trails rise over 50-500 px; their gradient per 10 px is below the noise of one
stencil, and the paper notes they are sometimes only "noticeable when looking at the entire
exposure" (§2.2). We therefore also apply the same stencil to a binned copy of the CCD:

.. math::

    R_{IJ} = \\frac{1}{|S_{IJ}|} \\sum_{(x, y) \\in S_{IJ}} \\big(I(x, y) - B(x, y)\\big),
    \\quad S_{IJ} = \\{(x, y) \\in \\text{block } IJ : |I - B| \\le k \\sigma,\\ \\text{valid}\\}

the mean background residual of each ``factor`` x ``factor`` block over the pixels within
``clip_sigma`` of the background (stars' cores, cosmic rays, hot and dead columns and bleed trails
drop out), with B the background polynomial of :mod:`obsqc.detectors.background`. A block with fewer
than half of its pixels valid is NaN, and so never read by a gradient point. Blocks are aligned at
(0, 0); a partial last row or column of blocks is dropped. The noise of a block mean is about
``sigma / factor``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from obsqc.detectors.background import _columns_u, _row_coefficients


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _clipped_block_means(image, coeffs, bad, use_mask, saturate, factor, limit):
    """R_IJ of the module docstring; never raises. ``limit`` = clip_sigma * sigma (data units).

    The background is evaluated once per row; sums may be reassociated by the compiler (fastmath
    "reassoc"), so the last bits can differ from a strict left-to-right sum.
    """
    ny, nx = image.shape
    by = ny // factor
    bx = nx // factor
    sums = np.zeros((by, bx), np.float64)
    counts = np.zeros((by, bx), np.int64)
    w = bx * factor
    us = _columns_u(nx, w)
    bg = np.empty(w, np.float64)
    kept = np.empty(w, np.float64)
    good = np.empty(w, np.int64)
    for y in range(by * factor):
        a, b, c = _row_coefficients(coeffs, y, ny)
        for x in range(w):  # branch-free, so the compiler vectorises it
            v = image[y, x]
            r = v - (a + us[x] * (b + c * us[x]))
            ok = (v < saturate) & (r >= -limit) & (r <= limit)
            kept[x] = r if ok else 0.0
            good[x] = 1 if ok else 0
        if use_mask:
            for x in range(w):
                if bad[y, x]:
                    kept[x] = 0.0
                    good[x] = 0
        row = y // factor
        for i in range(bx):
            acc = 0.0
            n = 0
            for x in range(i * factor, (i + 1) * factor):
                acc += kept[x]
                n += good[x]
            sums[row, i] += acc
            counts[row, i] += n
    out = np.empty((by, bx), np.float32)
    half = (factor * factor) // 2
    for j in range(by):
        for i in range(bx):
            out[j, i] = sums[j, i] / counts[j, i] if counts[j, i] >= half and counts[j, i] > 0 else np.nan
    return out


def clipped_block_means(
    image: np.ndarray,
    *,
    background_coeffs: np.ndarray,
    sigma: float,
    factor: int,
    clip_sigma: float,
    mask: np.ndarray | None = None,
    saturate: float | None = None,
) -> np.ndarray:
    """Binned, clipped background residual (rows = y blocks, columns = x blocks), float32 with NaN.

    Raises ``ValueError`` for a non-2-D image, a bad ``factor`` or coefficients of the wrong length.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"binning needs a 2-D image, got shape {image.shape}")
    if image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float32)
    if not (isinstance(factor, (int, np.integer)) and 1 <= factor <= min(image.shape)):
        raise ValueError(f"factor must be an integer in [1, {min(image.shape)}], got {factor!r}")
    coeffs = np.ascontiguousarray(background_coeffs, dtype=np.float64)
    if coeffs.shape != (6,):
        raise ValueError(f"background_coeffs must have 6 terms, got shape {coeffs.shape}")
    use_mask = mask is not None
    bad = np.ascontiguousarray(mask, dtype=np.bool_) if use_mask else np.zeros((1, 1), np.bool_)
    if use_mask and bad.shape != image.shape:
        raise ValueError(f"mask shape {bad.shape} differs from image shape {image.shape}")
    sat = np.inf if saturate is None else float(saturate)
    limit = float(clip_sigma) * float(sigma) if np.isfinite(sigma) else np.inf
    return _clipped_block_means(np.ascontiguousarray(image), coeffs, bad, use_mask, sat, int(factor), limit)
