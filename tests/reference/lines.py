"""Plain-numpy twin of obsqc.detectors.lines._max_line_z (strip sums, robust z among strips)."""

import numpy as np


def robust_z(t):
    if len(t) < 8:
        return 0.0
    med = np.median(t)
    mad = 1.482602218505602 * np.median(np.abs(t - med))
    return 0.0 if not mad > 0 else (t.max() - med) / mad


def line_z(resid, angles, min_count):
    """Per-angle twin of obsqc.detectors.lines._line_z."""
    return np.array([max_line_z(resid, [a], min_count) for a in angles])


def max_line_z(resid, angles, min_count):
    by, bx = resid.shape
    jj, ii = np.mgrid[0:by, 0:bx]
    ok = np.isfinite(resid)
    n_rho = int(np.ceil(np.hypot(bx, by))) + 4
    best = 0.0
    for a in angles:
        rho = ((ii - 0.5 * (bx - 1)) * np.cos(a) + (jj - 0.5 * (by - 1)) * np.sin(a) + 0.5 * n_rho).astype(int)
        sums = np.bincount(rho[ok], weights=resid[ok], minlength=n_rho)
        counts = np.bincount(rho[ok], minlength=n_rho)
        inner = slice(1, n_rho - 1)
        s1, c1 = sums[inner], counts[inner]
        t1 = s1[c1 >= min_count] / np.sqrt(c1[c1 >= min_count])
        s3 = sums[:-2] + sums[1:-1] + sums[2:]
        c3 = counts[:-2] + counts[1:-1] + counts[2:]
        keep = c3 >= 3 * min_count
        t3 = s3[keep] / np.sqrt(c3[keep])
        best = max(best, robust_z(t1), robust_z(t3))
    return best
