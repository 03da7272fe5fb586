"""Straight bright lines across a CCD: satellite and aircraft trails.

Not in Alonso, Zhang & Li. A trail is a thin straight feature: it fills too few random points to
tilt the gradient histograms of eq. (6)-(8), and its brightest pixels are saturated or clipped as
"sources". It is, however, the one thing that adds up along a straight line. On the binned, clipped
residual R of :mod:`obsqc.detectors.binning` we take the discrete Radon transform: for each angle phi
and each strip of width w blocks at distance rho from the centre,

.. math::

    t(\\phi, \\rho) = \\frac{\\sum_{(I, J) \\in \\text{strip}} R_{IJ}}{\\sqrt{n_{\\text{strip}}}}, \\qquad
    z(\\phi, \\rho) = \\frac{t - \\mathrm{median}_\\rho\\, t}{1.4826\\, \\mathrm{MAD}_\\rho\\, t}

on R winsorised at +-3 of its robust scatter (so that a bright galaxy is only a short segment of
clipped blocks, while a trail fills its strip), standardised among the parallel strips of the same
angle (so that the faint wings of many galaxies, which every strip crosses, cancel), and report the largest z over angles, strips and the widths 1 and
3 blocks. For pure noise the maximum over a few thousand strips is about 4-5; a trail of amplitude a
(in block-noise units) over L blocks gives about a sqrt(L).

Bad columns, bleed trails and amplifier steps run along the detector axes (and row/column patterns
are the business of the gradient indicator): the median of every row and every column of blocks is
subtracted first, and angles within ``axis_margin_deg`` of the axes are skipped. A trail within that
margin of an axis (about 7% of trails at the default 3 degrees) is missed by this test.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_MAD_TO_SIGMA = 1.482602218505602


@njit(cache=True, nogil=True)
def _robust_z(t, n):
    """Largest (t - median) / (1.4826 MAD) over the first n entries of t; 0 when undefined."""
    if n < 8:
        return 0.0
    v = t[:n]
    med = np.median(v)
    mad = _MAD_TO_SIGMA * np.median(np.abs(v - med))
    if not mad > 0:
        return 0.0
    return (np.max(v) - med) / mad


@njit(cache=True, nogil=True)
def _line_z(resid, angles, min_count):
    """Largest robust strip z at each of ``angles`` (radians), strip widths 1 and 3; never raises.

    The finite blocks are gathered once (in raster order), so the per-angle loop has no test and no
    2-D indexing.
    """
    by, bx = resid.shape
    cx = 0.5 * (bx - 1)
    cy = 0.5 * (by - 1)
    n_rho = int(np.ceil(np.hypot(bx, by))) + 4
    off = 0.5 * n_rho
    n = 0
    for j in range(by):
        for i in range(bx):
            if np.isfinite(resid[j, i]):
                n += 1
    xi = np.empty(n, np.float64)
    yj = np.empty(n, np.float64)
    vv = np.empty(n, np.float64)
    n = 0
    for j in range(by):
        for i in range(bx):
            v = resid[j, i]
            if np.isfinite(v):
                xi[n] = i - cx
                yj[n] = j - cy
                vv[n] = v
                n += 1
    sums = np.zeros(n_rho, np.float64)
    counts = np.zeros(n_rho, np.int64)
    bins = np.empty(n, np.int64)
    t1 = np.empty(n_rho, np.float64)
    t3 = np.empty(n_rho, np.float64)
    best = np.zeros(len(angles), np.float64)
    for k in range(len(angles)):
        c = np.cos(angles[k])
        s = np.sin(angles[k])
        sums[:] = 0.0
        counts[:] = 0
        for q in range(n):  # vectorizable
            bins[q] = int(xi[q] * c + yj[q] * s + off)
        for q in range(n):
            sums[bins[q]] += vv[q]
            counts[bins[q]] += 1
        n1 = 0
        n3 = 0
        for b in range(1, n_rho - 1):
            if counts[b] >= min_count:
                t1[n1] = sums[b] / np.sqrt(counts[b])
                n1 += 1
            m = counts[b - 1] + counts[b] + counts[b + 1]
            if m >= 3 * min_count:
                t3[n3] = (sums[b - 1] + sums[b] + sums[b + 1]) / np.sqrt(m)
                n3 += 1
        best[k] = max(_robust_z(t1, n1), _robust_z(t3, n3))
    return best


@njit(cache=True, nogil=True)
def _subtract_column_medians(a, buf):
    """In place: subtract from every column of ``a`` the median of its finite values (none if all NaN)."""
    rows, cols = a.shape
    for i in range(cols):
        n = 0
        for j in range(rows):
            if np.isfinite(a[j, i]):
                buf[n] = a[j, i]
                n += 1
        if n:
            med = np.median(buf[:n])
            for j in range(rows):
                a[j, i] -= med


def _subtract_axis_medians(a: np.ndarray) -> None:
    """In place: subtract the median of every column, then of every row (the transposed view).
    The median of a whole line ignores a trail that only crosses it."""
    buf = np.empty(max(a.shape), np.float64)
    _subtract_column_medians(a, buf)
    _subtract_column_medians(a.T, buf)


@njit(cache=True, nogil=True)
def _rebin2(a):
    """Mean of each 2x2 group of blocks over its finite values; NaN when none is finite."""
    by, bx = a.shape[0] // 2, a.shape[1] // 2
    out = np.empty((by, bx), np.float64)
    for j in range(by):
        for i in range(bx):
            total = 0.0
            n = 0
            for dy in range(2):
                for dx in range(2):
                    v = a[2 * j + dy, 2 * i + dx]
                    if np.isfinite(v):
                        total += v
                        n += 1
            out[j, i] = total / n if n else np.nan
    return out


def rebin_for_lines(binned: np.ndarray, max_side: int) -> np.ndarray:
    """Average 2x2 groups of blocks (ignoring NaN) until the shorter side is at most ``max_side``.

    A trail stays a line at any block size, while the Radon cost grows with the block count; on a
    DECam CCD (256x512 blocks of 8 px) one halving makes the search four times cheaper.
    """
    out = np.asarray(binned, dtype=np.float64)
    while min(out.shape) > max_side:
        out = _rebin2(out)
    return out


def line_angles(step_deg: float = 1.5, axis_margin_deg: float = 3.0) -> np.ndarray:
    """The trial angles in radians over [0, 180) deg, skipping ``axis_margin_deg`` around 0 and 90."""
    deg = np.arange(0.0, 180.0, step_deg)
    keep = np.minimum(np.abs(((deg + 45.0) % 90.0) - 45.0), 90.0) >= axis_margin_deg
    return np.deg2rad(deg[keep])


def max_line_significance(
    binned: np.ndarray,
    *,
    step_deg: float = 1.5,
    axis_margin_deg: float = 3.0,
    min_count: int = 48,
    clip_sigma: float = 3.0,
    n_refine: int = 3,
) -> float:
    """Largest straight-line z (in sigma of the binned residual) of one binned CCD residual.

    ``binned`` is the output of :func:`obsqc.detectors.binning.clipped_block_means` (NaN = no data).
    Strips shorter than ``min_count`` blocks (corners) are not tested. The angles are searched coarse
    to fine: every other angle of the ``step_deg`` grid, then the two grid neighbours of the
    ``n_refine`` best (a trail's z falls off slowly with the angle error, so its peak is never
    missed, and the search costs about half the full grid). Returns NaN when fewer than
    ``4 * min_count`` blocks are valid or their scatter is zero.
    """
    binned = np.asarray(binned, dtype=np.float64)
    if binned.ndim != 2:
        raise ValueError(f"line search needs a 2-D binned residual, got shape {binned.shape}")
    if np.count_nonzero(np.isfinite(binned)) < 4 * min_count:
        return float("nan")
    # Remove what runs exactly along the detector axes (bad columns, amplifier and row offsets): the
    # median of a whole row or column of blocks ignores a trail that only crosses it.
    binned = np.array(binned, dtype=np.float64)  # a copy: the medians are subtracted in place
    _subtract_axis_medians(binned)
    # Winsorise at +-clip_sigma block sigmas: one bright galaxy or star halo then adds at most a short
    # segment of clipped blocks to a strip, whereas a trail runs the whole strip.
    finite = binned[np.isfinite(binned)]
    scatter = _MAD_TO_SIGMA * float(np.median(np.abs(finite - np.median(finite))))
    if not scatter > 0:
        return float("nan")
    binned = np.clip(binned, -clip_sigma * scatter, clip_sigma * scatter)
    # Coarse to fine: every other angle of the grid first, then the neighbours of the n_refine best.
    grid = line_angles(step_deg, axis_margin_deg)
    resid = np.ascontiguousarray(binned)
    coarse = _line_z(resid, grid[::2], min_count)
    best = np.argsort(-coarse, kind="stable")[:n_refine] * 2
    near = np.unique(np.clip(np.concatenate([best - 1, best + 1]), 0, len(grid) - 1))
    near = near[near % 2 == 1]
    fine = _line_z(resid, grid[near], min_count) if near.size else np.zeros(0)
    return float(max(coarse.max(initial=0.0), fine.max(initial=0.0)))
