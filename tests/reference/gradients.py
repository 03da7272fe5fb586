"""Plain-numpy twin of obsqc.detectors.gradients, written as the paper reads (slow is fine).

Whole-image steps, as Alonso, Zhang & Li §3.2 describe them: subtract the background polynomial
from the full image, box-smooth the full residual, then apply eq. (6)-(7) literally at each point.
x = column (axis 1), y = row (axis 0). The even box covers offsets -b//2 .. b-1-b//2.
"""

from types import SimpleNamespace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def background(coeffs, shape):
    """B(x, y) = c0 + c1 u + c2 v + c3 u^2 + c4 u v + c5 v^2, u = 2x/(nx-1) - 1, v = 2y/(ny-1) - 1."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    u = 2.0 * x / (nx - 1) - 1.0 if nx > 1 else 0.0 * x
    v = 2.0 * y / (ny - 1) - 1.0 if ny > 1 else 0.0 * y
    c = np.asarray(coeffs, float)
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


def box_mean(a, box):
    """Mean over every box x box window that fits: out[r, c] = a[r:r+box, c:c+box].mean()."""
    return sliding_window_view(np.asarray(a, float), (box, box)).mean(axis=(-2, -1))


def stencil_gradient(s, half):
    """Eq. (6)-(7) at the centre (i, j) of a (2h+1)^2 array; I_{m,n} is s[n, m] (m = x, n = y)."""
    s = np.asarray(s, float)
    i = j = half

    def pixel(m, n):
        return s[n, m]

    d_x = 0.5 * sum(
        (pixel(m, n) - pixel(2 * i - m, 2 * j - n)) / (m - i)
        for m in range(i + 1, i + half + 1)
        for n in range(j - half, j + half + 1)
    )
    d_y = 0.5 * sum(
        (pixel(m, n) - pixel(2 * i - m, 2 * j - n)) / (n - j)
        for m in range(i - half, i + half + 1)
        for n in range(j + 1, j + half + 1)
    )
    return d_x, d_y


def fold_axial(theta):
    """Angle modulo pi, in (-pi/2, pi/2]."""
    t = np.mod(theta, np.pi)
    return t - np.pi if t > np.pi / 2 else t


def gradient_angles(
    image, *, background_coeffs, sigma, mask=None, saturate=None, n_points=10_000,
    smooth_box=10, half_width=5, mask_sigma=4.0, max_tries=4, seed=0,
):
    """Walk random candidates one by one; same draws as the module (batches of the number still needed)."""
    image = np.asarray(image, float)
    ny, nx = image.shape
    b, h = smooth_box, half_width
    lo, side = h + b // 2, 2 * h + b
    hi = side - 1 - lo
    resid = image - background(background_coeffs, image.shape)
    smooth = box_mean(resid, b)  # smooth[r, c] is S at row r + b//2, column c + b//2
    threshold = np.inf if np.isinf(sigma) or np.isinf(mask_sigma) else mask_sigma * sigma
    sat = np.inf if saturate is None else saturate
    bad = np.zeros(image.shape, bool) if mask is None else np.asarray(mask, bool)

    rng = np.random.default_rng(seed)
    out = SimpleNamespace(theta_rad=[], x=[], y=[], d_x=[], d_y=[], n_rejected=0)
    need, n_drawn, max_draws = n_points, 0, max_tries * n_points
    while need > 0 and n_drawn < max_draws:
        size = min(need, max_draws - n_drawn)
        xs = rng.integers(lo, nx - hi, size=size, dtype=np.int64)
        ys = rng.integers(lo, ny - hi, size=size, dtype=np.int64)
        n_drawn += size
        for x, y in zip(xs, ys):
            raw = image[y - lo : y + hi + 1, x - lo : x + hi + 1]
            res = resid[y - lo : y + hi + 1, x - lo : x + hi + 1]
            clean = (
                np.all(np.isfinite(raw))
                and not bad[y - lo : y + hi + 1, x - lo : x + hi + 1].any()
                and np.all(raw < sat)
                and np.all(res <= threshold)
            )
            if clean:
                r0, c0 = y - b // 2 - h, x - b // 2 - h
                d_x, d_y = stencil_gradient(smooth[r0 : r0 + 2 * h + 1, c0 : c0 + 2 * h + 1], h)
                clean = d_x != 0.0 or d_y != 0.0
            if not clean:
                out.n_rejected += 1
                continue
            out.theta_rad.append(fold_axial(np.arctan2(d_y, d_x)))
            out.x.append(int(x))
            out.y.append(int(y))
            out.d_x.append(d_x)
            out.d_y.append(d_y)
            need -= 1
    for name in ("theta_rad", "x", "y", "d_x", "d_y"):
        setattr(out, name, np.array(getattr(out, name), dtype=np.int64 if name in ("x", "y") else float))
    return out
