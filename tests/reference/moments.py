"""Plain-numpy twin of obsqc.detectors.moments: connected region via scipy.ndimage.label."""

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), bool)


def connected_moments(stamp, cy, cx, threshold):
    """Returns dict(n_pix, flux, x_c, y_c, q_xx, q_yy, q_xy, outside, invalid, border) or None."""
    stamp = np.asarray(stamp, float)
    with np.errstate(invalid="ignore"):
        above = (stamp > threshold) & (stamp < np.inf)
    if not above[cy, cx]:
        return None
    labels, _ = ndimage.label(above, structure=EIGHT)
    region = labels == labels[cy, cx]
    yy, xx = np.nonzero(region)
    w = stamp[yy, xx]
    dx, dy = xx - cx, yy - cy
    s0 = w.sum()
    xc, yc = (w * dx).sum() / s0, (w * dy).sum() / s0
    ring = ndimage.binary_dilation(region, structure=EIGHT) & ~region
    ny, nx = stamp.shape
    return dict(
        n_pix=int(region.sum()), flux=s0, x_c=xc, y_c=yc,
        q_xx=(w * dx * dx).sum() / s0 - xc**2, q_yy=(w * dy * dy).sum() / s0 - yc**2,
        q_xy=(w * dx * dy).sum() / s0 - xc * yc,
        outside=bool(np.any(stamp[ring] == -np.inf)),
        invalid=bool(np.any(np.isnan(stamp[ring]) | (stamp[ring] == np.inf))),
        border=bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()),
    )


def shape_from_moments(q_xx, q_yy, q_xy):
    tr = q_xx + q_yy
    if not tr > 0:
        return np.nan, np.nan, np.nan
    e1, e2 = (q_xx - q_yy) / tr, 2 * q_xy / tr
    return e1, e2, 0.5 * np.arctan2(e2, e1)
