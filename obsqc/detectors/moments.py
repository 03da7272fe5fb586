"""Quadrupole moments, ellipticity and orientation of one source (Alonso, Zhang & Li, eq. 2-5).

.. math::

    Q_{ij} = \\sum_{I(r) > I_0} I(r)\\, x^i y^j, \\qquad I_0 = 0.02\\, I(r = 0)          \\quad (4)

    e_1 = \\frac{Q_{20} - Q_{02}}{Q_{20} + Q_{02}}, \\qquad e_2 = \\frac{2 Q_{11}}{Q_{20} + Q_{02}}   \\quad (2, 3)

    \\theta = \\tfrac12 \\operatorname{atan2}(e_2, e_1) \\in (-\\pi/2, \\pi/2]                        \\quad (5)

What the paper leaves open, decided here (DESIGN.md "The method"):

* ``theta = 0.5 * atan2(e2, e1)``, not ``arctan(e2/e1)/2``, which folds perpendicular
  elongations onto each other. theta is counter-clockwise from +x (x = column = numpy axis 1,
  y = row = axis 0).
* The sum runs over the pixels above I0 that are 8-connected to the stamp centre (the peak):
  the paper's ``I(r) > I0`` read as the source's own isophote. A neighbour that does not touch the
  source's isophote does not enter its moments (it would dominate them through the x^2 weights),
  while overlapping images (double images, blends) do.
* Moments are central: x and y are measured from the intensity-weighted centroid of the same
  pixels, and normalised by the flux, so ``q_xx`` etc. are in pixel^2. e1, e2 and theta are
  unchanged by the normalisation.
* ``I0 = max(threshold_fraction * I(0), floor)``; see ``config.MOMENT_FLOOR_SIGMA`` for why a noise
  floor is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from obsqc.detectors import config

OUTSIDE = -np.inf
"""Stamp value that marks a pixel outside the image (as opposed to NaN: masked or invalid)."""


@njit(cache=True, nogil=True)
def _connected_moments(stamp, cy, cx, threshold, queue, seen):
    """Flood-fill the 8-connected region above ``threshold`` around (cy, cx) and sum its moments.

    ``queue`` is int64 scratch of length >= stamp.size, ``seen`` bool scratch of stamp.shape
    (both reused between calls; ``seen`` is cleared on exit). Returns
    ``(n_pix, flux, x_c, y_c, q_xx, q_yy, q_xy, touches_outside, touches_invalid, touches_border)``
    with x_c, y_c relative to (cx, cy) and q_* central and normalised by flux.
    """
    ny, nx = stamp.shape
    n = 0
    head = 0
    s0 = 0.0
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    outside = False
    invalid = False
    border = False
    if not (stamp[cy, cx] > threshold):
        return 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False, False, False
    seen[cy, cx] = True
    queue[0] = cy * nx + cx
    tail = 1
    while head < tail:
        p = queue[head]
        head += 1
        y = p // nx
        x = p - y * nx
        val = stamp[y, x]
        dx = x - cx
        dy = y - cy
        n += 1
        s0 += val
        sx += val * dx
        sy += val * dy
        sxx += val * dx * dx
        syy += val * dy * dy
        sxy += val * dx * dy
        if y == 0 or x == 0 or y == ny - 1 or x == nx - 1:
            border = True
        for oy in range(-1, 2):
            yy = y + oy
            if yy < 0 or yy >= ny:
                continue
            for ox in range(-1, 2):
                xx = x + ox
                if xx < 0 or xx >= nx or seen[yy, xx]:
                    continue
                v = stamp[yy, xx]
                if v > threshold and v < np.inf:
                    seen[yy, xx] = True
                    queue[tail] = yy * nx + xx
                    tail += 1
                elif v == OUTSIDE:
                    outside = True
                elif not np.isfinite(v):
                    invalid = True
    for k in range(tail):
        p = queue[k]
        seen[p // nx, p - (p // nx) * nx] = False
    if s0 <= 0.0:
        return n, s0, 0.0, 0.0, 0.0, 0.0, 0.0, outside, invalid, border
    xc = sx / s0
    yc = sy / s0
    q_xx = sxx / s0 - xc * xc
    q_yy = syy / s0 - yc * yc
    q_xy = sxy / s0 - xc * yc
    return n, s0, xc, yc, q_xx, q_yy, q_xy, outside, invalid, border


@njit(cache=True, nogil=True, inline="always")
def _shape_from_moments(q_xx, q_yy, q_xy):
    """(e1, e2, theta_rad) of eq. (2), (3) and the orientation 0.5 atan2(e2, e1); NaN when Q20 + Q02 <= 0."""
    tr = q_xx + q_yy
    if not tr > 0.0:
        return np.nan, np.nan, np.nan
    e1 = (q_xx - q_yy) / tr
    e2 = 2.0 * q_xy / tr
    return e1, e2, 0.5 * np.arctan2(e2, e1)


@dataclass(frozen=True, slots=True)
class Moments:
    """Moments of one source: centroid offset from the stamp centre (px), flux (data units),
    central second moments q_xx, q_yy, q_xy (px^2), ellipticity e1, e2, orientation theta_rad."""

    n_pix: int
    flux: float
    x_c: float
    y_c: float
    q_xx: float
    q_yy: float
    q_xy: float
    e1: float
    e2: float
    theta_rad: float
    touches_outside: bool
    touches_invalid: bool
    touches_border: bool


def quadrupole_moments(
    stamp: np.ndarray,
    *,
    center: tuple[int, int] | None = None,
    threshold_fraction: float = config.MOMENT_THRESHOLD_FRACTION,
    floor: float = 0.0,
) -> Moments:
    """Quadrupole moments of the source at ``center`` (row, col) of a background-subtracted stamp.

    Pixels enter when above ``I0 = max(threshold_fraction * stamp[center], floor)`` and 8-connected
    to the centre. NaN marks unusable pixels, ``-inf`` pixels outside the image. When the centre is
    not above I0 (e.g. a non-positive peak) the result has ``n_pix == 0`` and NaN shape.
    """
    stamp = np.ascontiguousarray(stamp, dtype=np.float64)
    if stamp.ndim != 2 or stamp.size == 0:
        raise ValueError(f"a stamp must be a non-empty 2-D array, got shape {stamp.shape}")
    cy, cx = (stamp.shape[0] // 2, stamp.shape[1] // 2) if center is None else center
    if not (0 <= cy < stamp.shape[0] and 0 <= cx < stamp.shape[1]):
        raise ValueError(f"center {center} is outside the {stamp.shape} stamp")
    peak = stamp[cy, cx]
    threshold = max(threshold_fraction * peak, floor) if np.isfinite(peak) else np.inf
    queue = np.empty(stamp.size, np.int64)
    seen = np.zeros(stamp.shape, np.bool_)
    n, flux, xc, yc, q_xx, q_yy, q_xy, out, inv, bord = _connected_moments(stamp, cy, cx, threshold, queue, seen)
    e1, e2, theta = _shape_from_moments(q_xx, q_yy, q_xy) if n else (np.nan, np.nan, np.nan)
    return Moments(int(n), flux, xc, yc, q_xx, q_yy, q_xy, e1, e2, theta, bool(out), bool(inv), bool(bord))
