"""Plain-numpy twin of obsqc.detectors.divergence, written for clarity (slow is fine)."""

import math

import numpy as np


def fold_axial(theta):
    """Angles modulo pi, in (-pi/2, pi/2]; angles already in range are returned untouched."""
    theta = np.asarray(theta, float)
    t = np.mod(theta, np.pi)
    t = np.where(t > np.pi / 2, t - np.pi, t)
    return np.where((theta > -np.pi / 2) & (theta <= np.pi / 2), theta, t)


def angle_histogram(theta, bins):
    """Bins (e_k, e_k+1] with e_k = -pi/2 + k pi / bins; non-finite angles skipped."""
    theta = np.asarray(theta, float)
    theta = theta[np.isfinite(theta)]
    theta = np.where((theta > np.pi / 2) & (theta <= np.pi / 2 + 1e-6), np.pi / 2, theta)  # float32 pi/2
    theta = fold_axial(theta)
    edges = -np.pi / 2 + np.pi * np.arange(bins + 1) / bins
    index = np.searchsorted(edges, theta, side="left") - 1
    index[index < 0] = bins - 1  # -pi/2 is +pi/2: the last bin
    return np.bincount(index, minlength=bins).astype(np.int64)


def smoothed_distribution(counts, alpha):
    counts = [float(c) for c in counts]
    total = sum(counts) + len(counts) * alpha
    return np.array([(c + alpha) / total for c in counts])


def kl_divergence(p, q):
    return sum(pj * math.log(pj / qj) for pj, qj in zip(p, q) if pj > 0)
