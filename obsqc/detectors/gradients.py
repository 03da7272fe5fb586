"""Background gradient angles: the background half of the Entropy Method.

Alonso, Zhang & Li, §3.2, eq. (6)-(8): smooth the background-subtracted CCD with a 10x10 mean
kernel, take the gradient at 10,000 random background points with a 5-pixel antisymmetric stencil,
and histogram the gradient angle. A normal background has isotropic gradients (a flat histogram);
stripes and reflections give preferred directions.

Conventions (see :mod:`obsqc.detectors.config`): an image is ``image[row, col]``; **x is the column
(numpy axis 1), y is the row (numpy axis 0)**; the paper's point (i, j) is (x, y) = (column, row).
Angles are counter-clockwise from +x towards +y, in radians, and *axial*: a gradient and its
opposite give the same angle, folded into (-pi/2, pi/2].

Geometry, with ``b = smooth_box`` and ``h = half_width`` (defaults 10 and 5):

* The residual is ``R = image - B(x, y)`` with B the background polynomial of
  :mod:`obsqc.detectors.background` (six coefficients, normalised coordinates).
* The smoothed image is the b x b box mean of R. An even box has no centre pixel; here S at (x, y)
  covers the offsets ``-(b // 2) .. b - 1 - b // 2`` in each axis (-5 .. +4 for b = 10), i.e.
  S is centred half a pixel before the point. The shift is the same for every point and cancels
  in the antisymmetric stencil (a plane gives its exact slope direction).
* The stencil reads S at offsets -h .. +h in each axis, so a point reads the raw pixels at offsets
  ``-(h + b // 2) .. h + b - 1 - b // 2`` (-10 .. +9): a square *patch* of side ``2 h + b`` (20).
  Points are drawn uniformly, with replacement, among the positions whose whole patch lies inside
  the image; the smallest image that admits one point is ``(2 h + b) x (2 h + b)``.

Only the patch of each drawn point is ever read: no full residual or smoothed image is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from obsqc.detectors import config
from obsqc.detectors.background import N_TERMS, _norm_coord

_HALF_PI = 0.5 * np.pi
_BAND_ROWS = 32
"""Candidates are visited in bands of this many rows (then by column) to reuse cache lines, pixels."""


@njit(cache=True, nogil=True, inline="always")
def _fold_axial(theta):
    """Fold an angle in [-pi, pi] into (-pi/2, pi/2] (axial: theta and theta +- pi are one direction)."""
    if theta > _HALF_PI:
        return theta - np.pi
    if theta <= -_HALF_PI:
        return theta + np.pi
    return theta


@njit(cache=True, nogil=True)
def _box_mean_valid(a, box, rowsum, out):
    """``out[r, c] = mean(a[r:r+box, c:c+box])`` for every window inside ``a`` (valid mode).

    Separable direct sums in float64 (no running sums, so a non-finite pixel spoils only the
    windows that contain it); ``rowsum`` is scratch of shape (a.shape[0], out.shape[1]).
    """
    out_rows, out_cols = out.shape
    for r in range(a.shape[0]):
        for c in range(out_cols):
            rowsum[r, c] = 0.0
        for t in range(box):
            for c in range(out_cols):
                rowsum[r, c] += a[r, c + t]
    inv_area = 1.0 / (box * box)
    for r in range(out_rows):
        for c in range(out_cols):
            out[r, c] = 0.0
        for t in range(box):
            for c in range(out_cols):
                out[r, c] += rowsum[r + t, c]
        for c in range(out_cols):
            out[r, c] *= inv_area


@njit(cache=True, nogil=True)
def _stencil_gradient(s, cy, cx, half):
    """Eq. (6)-(7) on ``s[row, col]`` at column ``cx``, row ``cy``; returns (D_x, D_y)."""
    d_x = 0.0
    for dm in range(1, half + 1):
        acc = 0.0
        for dn in range(-half, half + 1):
            acc += s[cy + dn, cx + dm] - s[cy - dn, cx - dm]
        d_x += acc / dm
    d_y = 0.0
    for dn in range(1, half + 1):
        acc = 0.0
        for dm in range(-half, half + 1):
            acc += s[cy + dn, cx + dm] - s[cy - dn, cx - dm]
        d_y += acc / dn
    return 0.5 * d_x, 0.5 * d_y


@njit(cache=True, nogil=True)
def _background_tables(coeffs, ny, nx):
    """B(x, y) in separable pieces: ``B = row_a[y] + col_u[x] * row_b[y] + col_q[x]``.

    ``row_a = c0 + c2 v + c5 v^2``, ``row_b = c1 + c4 v``, ``col_u = u``, ``col_q = c3 u^2``, with
    u, v the normalised coordinates of :mod:`obsqc.detectors.background`.
    """
    row_a = np.empty(ny)
    row_b = np.empty(ny)
    for y in range(ny):
        v = _norm_coord(y, ny)
        row_a[y] = coeffs[0] + coeffs[2] * v + coeffs[5] * v * v
        row_b[y] = coeffs[1] + coeffs[4] * v
    col_u = np.empty(nx)
    col_q = np.empty(nx)
    for x in range(nx):
        u = _norm_coord(x, nx)
        col_u[x] = u
        col_q[x] = coeffs[3] * u * u
    return row_a, row_b, col_u, col_q


@njit(cache=True, nogil=True)
def _patch_gradient(
    image, row_a, row_b, col_u, col_q, saturate, threshold, x0, y0, count, slope, acc_x, acc_y, res_top, res_bot
):
    """D_x, D_y of the patch whose top-left pixel is (x0, y0), fused with the residual and its checks.

    Rows r and side-1-r are read together: ``acc_x[c] += count[r] (R_top + R_bot)`` and
    ``acc_y[c] += slope[r] (R_top - R_bot)``, then columns are mirrored the same way, so a constant
    patch gives exactly zero. Returns (ok, D_x, D_y); ok is False when a pixel is non-finite, at or
    above ``saturate``, or has a residual above ``threshold`` (checked per row pair, before any
    arithmetic mixes the pair). ``acc_x``, ``acc_y``, ``res_top``, ``res_bot``: scratch of the side.
    """
    side = count.size
    half = side // 2
    u = col_u[x0 : x0 + side]
    q = col_q[x0 : x0 + side]
    for c in range(side):
        acc_x[c] = 0.0
        acc_y[c] = 0.0
    for r in range(half + side % 2):
        y_top = y0 + r
        y_bot = y0 + side - 1 - r
        top = image[y_top, x0 : x0 + side]
        bot = image[y_bot, x0 : x0 + side]
        a_top, b_top = row_a[y_top], row_b[y_top]
        a_bot, b_bot = row_a[y_bot], row_b[y_bot]
        w_count = count[r] if y_top != y_bot else 0.5 * count[r]  # the middle row of an odd patch
        w_slope = slope[r]
        bad = False
        for c in range(side):
            v_top = np.float64(top[c])
            v_bot = np.float64(bot[c])
            res_top[c] = v_top - (a_top + u[c] * b_top + q[c])
            res_bot[c] = v_bot - (a_bot + u[c] * b_bot + q[c])
            bad |= ~(
                (v_top < saturate) & (v_top > -np.inf) & (res_top[c] <= threshold)
                & (v_bot < saturate) & (v_bot > -np.inf) & (res_bot[c] <= threshold)
            )
        if bad:
            return False, 0.0, 0.0
        for c in range(side):
            acc_x[c] += w_count * (res_top[c] + res_bot[c])
            acc_y[c] += w_slope * (res_top[c] - res_bot[c])
    d_x = 0.0
    d_y = 0.0
    for c in range(half):
        d_x += slope[c] * (acc_x[c] - acc_x[side - 1 - c])
        d_y += count[c] * (acc_y[c] + acc_y[side - 1 - c])
    if side % 2:
        d_y += count[half] * acc_y[half]
    return True, d_x, d_y


@njit(cache=True, nogil=True)
def _patch_masked(bad_mask, x0, y0, side):
    """True when any pixel of the patch whose top-left pixel is (x0, y0) is masked."""
    for r in range(side):
        row = bad_mask[y0 + r, x0 : x0 + side]
        hit = False
        for c in range(side):
            hit |= row[c]
        if hit:
            return True
    return False


@njit(cache=True, nogil=True)
def _gradient_batch(image, bad_mask, use_mask, tables, saturate, threshold, cand_x, cand_y, lo, count, slope):
    """Gradient angle at every candidate point (x = column, y = row); rejects flagged in ``ok``.

    Candidates are visited in a cache-friendly order (bands of rows, then columns), and the two end
    pixels of each row of the next patch are loaded before the current one is computed, so its
    cache misses overlap the arithmetic. Results are per candidate, in draw order.
    Returns (ok, theta_rad, d_x, d_y, sink); ``sink`` only keeps those loads alive. Never raises.
    """
    row_a, row_b, col_u, col_q = tables
    nx = image.shape[1]
    side = count.size
    n = cand_x.size
    ok = np.zeros(n, np.bool_)
    theta = np.full(n, np.nan)
    d_x = np.zeros(n)
    d_y = np.zeros(n)
    acc_x = np.empty(side)
    acc_y = np.empty(side)
    res_top = np.empty(side)
    res_bot = np.empty(side)
    order = np.argsort((cand_y // _BAND_ROWS) * nx + cand_x)
    sink = 0
    for t in range(n):
        if t + 1 < n:
            x_next = cand_x[order[t + 1]] - lo
            y_next = cand_y[order[t + 1]] - lo
            for r in range(side):
                sink += (image[y_next + r, x_next] > 0) + (image[y_next + r, x_next + side - 1] > 0)
                if use_mask:
                    sink += bad_mask[y_next + r, x_next] + bad_mask[y_next + r, x_next + side - 1]
        i = order[t]
        x0 = cand_x[i] - lo
        y0 = cand_y[i] - lo
        if use_mask and _patch_masked(bad_mask, x0, y0, side):
            continue
        good, dx, dy = _patch_gradient(
            image, row_a, row_b, col_u, col_q, saturate, threshold, x0, y0, count, slope, acc_x, acc_y, res_top, res_bot
        )
        if good and (dx != 0.0 or dy != 0.0):
            ok[i] = True
            d_x[i] = dx
            d_y[i] = dy
            theta[i] = _fold_axial(np.arctan2(dy, dx))
    return ok, theta, d_x, d_y, sink


@dataclass(frozen=True, slots=True)
class GradientSample:
    """Gradient angles at the accepted random background points of one CCD.

    ``theta_rad`` (radians, in (-pi/2, pi/2], counter-clockwise from +x), ``x`` (column) and ``y``
    (row) of each accepted point, ``d_x`` and ``d_y`` its eq. (6)-(7) components (data units: a
    plane of slope a per pixel along x gives ``d_x = h (2 h + 1) a``, 55 a for h = 5);
    ``n_requested`` points were asked for and ``n_rejected`` candidates were turned down.
    """

    theta_rad: np.ndarray
    x: np.ndarray
    y: np.ndarray
    d_x: np.ndarray
    d_y: np.ndarray
    n_requested: int
    n_rejected: int

    @property
    def n_accepted(self) -> int:
        """Number of accepted points, count."""
        return int(self.theta_rad.size)


def patch_side(smooth_box: int = config.SMOOTH_BOX, half_width: int = config.GRADIENT_HALF_WIDTH) -> int:
    """Side of the raw-pixel patch one gradient point reads, ``2 half_width + smooth_box``, pixels."""
    return 2 * half_width + smooth_box


def gradient_weights(
    smooth_box: int = config.SMOOTH_BOX, half_width: int = config.GRADIENT_HALF_WIDTH
) -> tuple[np.ndarray, np.ndarray]:
    r"""Separable raw-pixel weights of box smoothing followed by eq. (6)-(7): ``(count, slope)``.

    Both steps are linear, so on a patch R (side ``2 h + b``, first pixel at offset
    ``-(h + b // 2)`` from the point, rows = y, columns = x)

    .. math::

        D_x = \sum_{r,c} \mathrm{count}_r\, \mathrm{slope}_c\, R_{r,c}, \qquad
        D_y = \sum_{r,c} \mathrm{slope}_r\, \mathrm{count}_c\, R_{r,c},

        \mathrm{count}(o) = \#\{d \in [-h, h] : o - d \in B\}, \qquad
        \mathrm{slope}(o) = \frac{1}{2 b^2} \sum_{d=1}^{h} \frac{[o - d \in B] - [o + d \in B]}{d}

    with o the offset from the point and B = [-(b // 2), b - 1 - b // 2] the box offsets. ``count``
    is symmetric and ``slope`` antisymmetric under reversal (o -> -1 - o for an even box, -o for an
    odd one); both are float64 arrays of the patch side.
    """
    smooth_box = _check_positive_int(smooth_box, "smooth_box")
    half_width = _check_positive_int(half_width, "half_width")
    side = patch_side(smooth_box, half_width)
    box_lo, box_hi = -(smooth_box // 2), smooth_box - 1 - smooth_box // 2
    offsets = np.arange(side) - (half_width + smooth_box // 2)

    def in_box(o):
        return ((o >= box_lo) & (o <= box_hi)).astype(np.float64)

    d = np.arange(-half_width, half_width + 1)
    count = in_box(offsets[:, None] - d[None, :]).sum(axis=1)
    d = np.arange(1, half_width + 1)
    slope = ((in_box(offsets[:, None] - d) - in_box(offsets[:, None] + d)) / d).sum(axis=1)
    slope /= 2.0 * smooth_box * smooth_box
    half = side // 2  # enforce the exact (anti)symmetry the kernel's mirrored differences rely on
    count[side - half :] = count[:half][::-1]
    slope[side - half :] = -slope[:half][::-1]
    if side % 2:
        slope[half] = 0.0
    return count, slope


def _check_image(image, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows = y, columns = x), got shape {image.shape}")
    if image.dtype.kind not in "fiu":
        raise ValueError(f"{what} must hold real numbers (integer or float), got dtype {image.dtype}")
    if image.dtype.kind == "f" and image.dtype.itemsize < 4:
        image = image.astype(np.float32)
    return np.ascontiguousarray(image)


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def box_mean(image: np.ndarray, box: int = config.SMOOTH_BOX) -> np.ndarray:
    r"""Box mean of a 2-D array over every ``box x box`` window that fits (valid mode), float64.

    .. math::  S'_{r, c} = \frac{1}{b^2} \sum_{s=0}^{b-1} \sum_{t=0}^{b-1} a_{r+s,\, c+t}

    Output shape is ``(ny - b + 1, nx - b + 1)``; ``S'[r, c]`` is the smoothed value the gradient
    step assigns to row ``r + b // 2``, column ``c + b // 2`` (§3.2 step 1; module docstring).
    Non-finite pixels propagate. Raises ``ValueError`` on a non-2-D or non-real array, or a box
    larger than the array.
    """
    a = _check_image(image, "box_mean input")
    box = _check_positive_int(box, "box")
    if box > min(a.shape):
        raise ValueError(f"box {box} does not fit in an array of shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    out = np.empty((a.shape[0] - box + 1, a.shape[1] - box + 1))
    _box_mean_valid(a, box, np.empty((a.shape[0], out.shape[1])), out)
    return out


def stencil_gradient(smoothed: np.ndarray, half_width: int = config.GRADIENT_HALF_WIDTH) -> tuple[float, float]:
    r"""Eq. (6)-(7) of Alonso, Zhang & Li at the centre of a ``(2h+1) x (2h+1)`` smoothed array.

    .. math::

        D_x = \frac{1}{2} \sum_{m=i+1}^{i+h} \sum_{n=j-h}^{j+h} \frac{S_{m,n} - S_{2i-m,\,2j-n}}{m - i},
        \qquad
        D_y = \frac{1}{2} \sum_{m=i-h}^{i+h} \sum_{n=j+1}^{j+h} \frac{S_{m,n} - S_{2i-m,\,2j-n}}{n - j}

    with m along x (columns) and n along y (rows): ``S_{m,n}`` is ``smoothed[n, m]``. Returns
    ``(d_x, d_y)`` in the data units of ``smoothed``. Raises ``ValueError`` on a wrong shape.
    """
    s = np.asarray(smoothed)
    half_width = _check_positive_int(half_width, "half_width")
    n_s = 2 * half_width + 1
    if s.ndim != 2 or s.shape != (n_s, n_s):
        raise ValueError(f"stencil_gradient needs a {n_s}x{n_s} array for half_width {half_width}, got shape {s.shape}")
    if s.dtype.kind not in "fiu":
        raise ValueError(f"smoothed must hold real numbers, got dtype {s.dtype}")
    d_x, d_y = _stencil_gradient(np.ascontiguousarray(s, dtype=np.float64), half_width, half_width, half_width)
    return float(d_x), float(d_y)


def gradient_angles(
    image: np.ndarray,
    *,
    background_coeffs: np.ndarray,
    sigma: float,
    mask: np.ndarray | None = None,
    saturate: float | None = None,
    n_points: int = config.GRADIENT_N_POINTS,
    smooth_box: int = config.SMOOTH_BOX,
    half_width: int = config.GRADIENT_HALF_WIDTH,
    mask_sigma: float = config.GRADIENT_MASK_SIGMA,
    max_tries: int = config.GRADIENT_MAX_TRIES,
    seed: int = 0,
) -> GradientSample:
    r"""Background gradient angles at random points of one CCD (Alonso, Zhang & Li §3.2, eq. 6-8).

    With ``R = image - B`` (``background_coeffs``, the six-term polynomial of
    :mod:`obsqc.detectors.background`) and S its ``smooth_box`` box mean (offsets in the module
    docstring), each point (i, j) = (column, row) gets D_x, D_y of eq. (6)-(7) on S
    (:func:`stencil_gradient`) and

    .. math::  \theta = \mathrm{fold}\big(\operatorname{atan2}(D_y, D_x)\big) \in (-\pi/2, \pi/2]

    where fold adds or subtracts pi: eq. (8)'s arctan(D_y / D_x) made axial and defined at D_x = 0.
    A point with D_x = D_y = 0 (a locally flat background, e.g. a constant image) has no direction
    and is rejected.

    Candidates are drawn uniformly with replacement (deterministic given ``seed``) among positions
    whose ``2 half_width + smooth_box`` patch lies inside the image, up to ``max_tries * n_points``
    draws. A candidate is rejected when any raw pixel of its patch is non-finite, masked (``mask``
    True = bad), at or above ``saturate`` (data units), or has a residual above ``mask_sigma *
    sigma`` (``sigma``: per-pixel noise, data units; ``np.inf`` disables this source mask). Faint
    diffuse features below that level stay in: they are what the indicator must see. The source
    mask is one-sided (only residuals above it); cold pixels and bad columns belong in ``mask``.
    Fewer than ``n_points`` points come back when too many candidates are rejected; none at all
    is a valid, empty result. Points come back in draw order.

    The stencil's square support pulls the measured direction of short-period waves towards the
    axes (about 7 degrees at a 16-pixel period, 1.5 at 32, under 1 beyond 48); a reference built
    with the same stencil carries the same bias.

    ``image`` may be any real dtype (float32 and int16 are read without conversion).
    Raises ``ValueError`` on a non-2-D or non-real image, an image smaller than one patch, a mask
    of another shape, or invalid tunables.
    """
    image = _check_image(image)
    smooth_box = _check_positive_int(smooth_box, "smooth_box")
    half_width = _check_positive_int(half_width, "half_width")
    n_points = _check_positive_int(n_points, "n_points", minimum=0)
    max_tries = _check_positive_int(max_tries, "max_tries")
    side = patch_side(smooth_box, half_width)
    ny, nx = image.shape
    if ny < side or nx < side:
        raise ValueError(
            f"image is {ny}x{nx} px; gradient_angles needs at least {side}x{side} "
            f"(box {smooth_box} + stencil 2x{half_width})"
        )
    coeffs = np.asarray(background_coeffs, dtype=np.float64)
    if coeffs.shape != (N_TERMS,) or not np.all(np.isfinite(coeffs)):
        raise ValueError(f"background_coeffs must be {N_TERMS} finite numbers, got {background_coeffs!r}")
    sigma = float(sigma)
    if not sigma >= 0.0:
        raise ValueError(f"sigma must be >= 0 (data units; np.inf disables the source mask), got {sigma}")
    mask_sigma = float(mask_sigma)
    if not mask_sigma > 0.0:
        raise ValueError(f"mask_sigma must be > 0, got {mask_sigma}")
    sat = np.inf if saturate is None else float(saturate)
    if np.isnan(sat):
        raise ValueError("saturate must be a number or None, got nan")
    if mask is None:
        use_mask, bad = False, np.zeros((1, 1), np.bool_)
    else:
        bad = np.asarray(mask)
        if bad.shape != image.shape:
            raise ValueError(f"mask shape {bad.shape} differs from image shape {image.shape}")
        if bad.dtype.kind not in "biu":
            raise ValueError(f"mask must be boolean (True = bad pixel), got dtype {bad.dtype}")
        use_mask, bad = True, np.ascontiguousarray(bad, dtype=np.bool_)

    lo = half_width + smooth_box // 2
    hi = side - 1 - lo
    count, slope = gradient_weights(smooth_box, half_width)
    tables = _background_tables(coeffs, ny, nx)
    threshold = np.inf if np.isinf(sigma) or np.isinf(mask_sigma) else mask_sigma * sigma
    # Draw in batches of the number still needed (x then y, from one generator): the kept points
    # are the first n_points clean candidates in draw order, as a one-by-one walk would keep.
    rng = np.random.default_rng(seed)
    max_draws = max_tries * n_points
    n_drawn = 0
    kept: list[tuple[np.ndarray, ...]] = []
    need = n_points
    while need > 0 and n_drawn < max_draws:
        size = min(need, max_draws - n_drawn)
        cand_x = rng.integers(lo, nx - hi, size=size, dtype=np.int64)
        cand_y = rng.integers(lo, ny - hi, size=size, dtype=np.int64)
        ok, theta, d_x, d_y, _ = _gradient_batch(
            image, bad, use_mask, tables, sat, threshold, cand_x, cand_y, lo, count, slope
        )
        kept.append((theta[ok], cand_x[ok], cand_y[ok], d_x[ok], d_y[ok]))
        n_drawn += size
        need -= int(ok.sum())
    if kept:
        theta, xs, ys, d_x, d_y = (np.concatenate(parts) for parts in zip(*kept))
    else:
        theta, d_x, d_y = np.empty(0), np.empty(0), np.empty(0)
        xs, ys = np.empty(0, np.int64), np.empty(0, np.int64)
    return GradientSample(
        theta_rad=theta, x=xs, y=ys, d_x=d_x, d_y=d_y,
        n_requested=n_points, n_rejected=n_drawn - int(theta.size),
    )
