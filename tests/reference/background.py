"""Plain-numpy twin of obsqc.detectors.background: the fit on given points, via normal equations."""

import numpy as np


def design(xs, ys, shape):
    ny, nx = shape
    u = 2.0 * np.asarray(xs, float) / (nx - 1) - 1.0
    v = 2.0 * np.asarray(ys, float) / (ny - 1) - 1.0
    return np.column_stack([np.ones_like(u), u, v, u**2, u * v, v**2])


def robust_sigma(r):
    return 1.482602218505602 * np.median(np.abs(r - np.median(r)))


def solve(a, b):
    return np.linalg.solve(a.T @ a, a.T @ b)


def fit_background_points(xs, ys, values, shape, trim_fraction=0.1, clip_sigma=3.0):
    values = np.asarray(values, float)
    a = design(xs, ys, shape)
    k = len(values)
    order = np.argsort(values, kind="stable")
    n_trim = int(trim_fraction * k)
    keep = order[n_trim : k - n_trim]
    coeffs = solve(a[keep], values[keep])
    sigma = robust_sigma(values - a @ coeffs)
    inliers = np.abs(values - a @ coeffs) <= clip_sigma * sigma
    coeffs = solve(a[inliers], values[inliers])
    return coeffs, robust_sigma(values - a @ coeffs)


def model_image(coeffs, shape):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    return (design(xx.ravel(), yy.ravel(), shape) @ coeffs).reshape(shape)
