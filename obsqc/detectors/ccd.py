"""One CCD through the Entropy Method: background, sources and moments, background gradients.

Alonso, Zhang & Li §3.1 (sources, eq. 2-5) and §3.2 (gradients, eq. 6-8). This module only
orchestrates the public wrappers of its sibling modules; it holds no numerics of its own.
The result keeps the per-CCD histograms (not KL values): divergences need a reference, which is a
property of a set of exposures, see :mod:`obsqc.detectors.exposure`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from obsqc.detectors.background import BackgroundModel, fit_background
from obsqc.detectors.binning import clipped_block_means
from obsqc.detectors.config import DetectorParams
from obsqc.detectors.divergence import angle_histogram
from obsqc.detectors.gradients import gradient_angles, patch_side
from obsqc.detectors.lines import max_line_significance, rebin_for_lines
from obsqc.detectors.sources import find_sources, usable
from obsqc.detectors.structure import offset_histogram, peak_offsets


@dataclass(frozen=True, slots=True)
class CCDStats:
    """What the detectors measured on one CCD.

    ``sources`` is the full catalogue (``sources.SOURCE_DTYPE``, flagged ones included);
    ``source_counts`` the orientation histogram of the usable sources over (-pi/2, pi/2];
    ``profile_counts`` their peak-offset histogram (:mod:`obsqc.detectors.structure`);
    ``gradient_counts`` the gradient-angle histogram (§3.2); ``coarse_counts`` the same on the binned
    residual (:mod:`obsqc.detectors.binning`) and ``line_z`` the brightest straight line of that residual
    (:mod:`obsqc.detectors.lines`), empty and NaN for a CCD under ``coarse_min_blocks`` blocks a side;
    ``timings_s`` seconds per step.
    """

    name: str
    shape: tuple[int, int]
    background: BackgroundModel
    sources: np.ndarray
    source_counts: np.ndarray
    profile_counts: np.ndarray
    gradient_counts: np.ndarray
    coarse_counts: np.ndarray
    line_z: float
    n_gradient_points: int
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def n_sources(self) -> int:
        """Usable sources (those that enter the orientation histogram)."""
        return int(self.source_counts.sum())


def measure_ccd(
    image: np.ndarray,
    *,
    name: str = "",
    mask: np.ndarray | None = None,
    saturate: float | None = None,
    params: DetectorParams = DetectorParams(),
    seed: int = 0,
) -> CCDStats:
    """Run every detector step on one CCD image (rows = y, columns = x; NaN = unusable).

    ``seed`` fixes the random background and gradient sample points, so a CCD measured twice gives
    the same numbers. Raises ``ValueError`` when the image has too few usable pixels.
    """
    t0 = time.perf_counter()
    if saturate is not None:
        saturate = float(saturate) - params.saturate_margin_rel * abs(float(saturate))
    background = fit_background(
        image, mask=mask, saturate=saturate, n_samples=params.background_n_samples,
        trim_fraction=params.background_trim_fraction, clip_sigma=params.background_clip_sigma, seed=seed,
    )
    t1 = time.perf_counter()
    sources = find_sources(
        image, background_coeffs=background.coeffs, sigma=background.sigma, mask=mask, saturate=saturate,
        detect_sigma=params.detect_sigma, footprint_sigma=params.footprint_sigma,
        min_pixels=params.min_footprint_pixels, window=params.peak_window,
        threshold_fraction=params.moment_threshold_fraction, floor_sigma=params.moment_floor_sigma,
    )
    t2 = time.perf_counter()
    gradients = gradient_angles(
        image, background_coeffs=background.coeffs, sigma=background.sigma, mask=mask, saturate=saturate,
        n_points=params.gradient_n_points, smooth_box=params.smooth_box, half_width=params.gradient_half_width,
        mask_sigma=params.gradient_mask_sigma, max_tries=params.gradient_max_tries, seed=seed + 1,
    )
    t3 = time.perf_counter()
    binned = clipped_block_means(
        image, background_coeffs=background.coeffs, sigma=background.sigma, factor=params.coarse_factor,
        clip_sigma=params.coarse_clip_sigma, mask=mask, saturate=saturate,
    )
    if min(binned.shape) >= params.coarse_min_blocks:
        coarse = _coarse_angles(binned, params, seed + 2)
        line_z = max_line_significance(rebin_for_lines(binned, params.line_max_side_blocks))
    else:  # too small a CCD for these two indicators: they stay empty (NaN at exposure level)
        coarse, line_z = np.empty(0), float("nan")
    t4 = time.perf_counter()
    good = usable(sources)
    return CCDStats(
        name=name,
        shape=tuple(np.shape(image)),
        background=background,
        sources=sources,
        source_counts=angle_histogram(good["theta_rad"], params.source_bins),
        profile_counts=offset_histogram(peak_offsets(good), params.profile_bins, params.profile_max_offset),
        gradient_counts=angle_histogram(gradients.theta_rad, params.background_bins),
        coarse_counts=angle_histogram(coarse, params.coarse_bins),
        line_z=line_z,
        n_gradient_points=int(len(gradients.theta_rad)),
        timings_s={"background": t1 - t0, "sources": t2 - t1, "gradients": t3 - t2, "large_scale": t4 - t3},
    )


def _coarse_angles(binned: np.ndarray, params: DetectorParams, seed: int) -> np.ndarray:
    """Gradient angles (eq. 6-8) on the binned, clipped residual; empty when the CCD is too small."""
    if min(binned.shape) < patch_side(params.coarse_smooth_box, params.coarse_half_width):
        return np.empty(0)
    sample = gradient_angles(
        binned, background_coeffs=np.zeros(6), sigma=np.inf, n_points=params.coarse_n_points,
        smooth_box=params.coarse_smooth_box, half_width=params.coarse_half_width, seed=seed,
    )
    return sample.theta_rad
