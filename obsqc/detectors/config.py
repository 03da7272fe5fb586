"""Detector tunables of the Entropy Method (Alonso, Zhang & Li, §3.1-3.2).

Every constant states its unit. Kernels never read these directly: the public
wrappers take them as keyword arguments, and :class:`DetectorParams` carries a
full set through :func:`obsqc.detectors.ccd.measure_ccd`.

Axis convention used throughout ``obsqc.detectors``: an image is a numpy array
``image[row, col]``; **x is the column index** (FITS NAXIS1, numpy axis 1) and
**y is the row index** (FITS NAXIS2, numpy axis 0). Angles are measured
counter-clockwise from +x towards +y, in radians, folded into (-pi/2, pi/2].
"""

from __future__ import annotations

from dataclasses import dataclass

BACKGROUND_N_SAMPLES: int = 1000
"""Random sample points for the background fit (paper §3.1: 1000), count."""

BACKGROUND_TRIM_FRACTION: float = 0.10
"""Fraction of brightest and of faintest sample points discarded (§3.1: 10% each), dimensionless."""

BACKGROUND_CLIP_SIGMA: float = 3.0
"""After the trimmed fit, sample points whose residual exceeds this many noise sigma are
treated as lying on a source and dropped before the final fit, in sigma."""

BACKGROUND_POLY_ORDER: int = 2
"""Order of the 2-D background polynomial (§3.1: second order), dimensionless."""

DETECT_SIGMA: float = 4.0
"""A source peak must exceed the background by this many noise sigma (§3.1), in sigma."""

FOOTPRINT_SIGMA: float = 2.0
"""Footprint pixels are those above this many sigma (§3.1: 2 sigma), in sigma."""

MIN_FOOTPRINT_PIXELS: int = 6
"""A source needs *more than* this many connected footprint pixels (§3.1: > 6), count."""

PEAK_WINDOW: int = 64
"""Side of the window in which a source peak must be the brightest pixel (§3.1: 64), pixels."""

STAMP_SIZE: int = 64
"""Side of the stamp on which quadrupole moments are measured (§3.1: 64), pixels."""

MOMENT_THRESHOLD_FRACTION: float = 0.02
"""Only pixels above this fraction of the peak enter the moments, I0 = 0.02 I(0) (eq. 4), dimensionless."""

MOMENT_FLOOR_SIGMA: float = 2.0
"""Pixels must also exceed this many noise sigma to enter the moments, in sigma.

Not in the paper: for a 5-sigma source, 0.02 I(0) is 0.1 sigma, so half of the pure-noise
pixels of the 64x64 stamp would enter eq. (4) with x^2 weights and drown the source's shape.
"""

SMOOTH_BOX: int = 10
"""Side of the mean kernel that smooths the background before gradients (§3.2: 10x10), pixels."""

GRADIENT_HALF_WIDTH: int = 5
"""Half-width of the gradient stencil of eq. (6)-(7) (m = i+1 .. i+5), pixels."""

GRADIENT_N_POINTS: int = 10_000
"""Random points per CCD at which the background gradient is measured (§3.2: 10000), count."""

GRADIENT_MASK_SIGMA: float = 4.0
"""A gradient point is rejected when any raw pixel its stencil reads is above this many sigma
(sources, hot pixels, cosmic rays), masked, saturated or non-finite, in sigma."""

GRADIENT_MAX_TRIES: int = 4
"""Candidate points drawn per accepted gradient point before giving up, dimensionless."""

COARSE_FACTOR: int = 8
"""Side of the blocks of the binned residual for the large-scale gradients (:mod:`obsqc.detectors.binning`), pixels."""

COARSE_CLIP_SIGMA: float = 4.0
"""Pixels further than this from the background are left out of a block mean, in sigma."""

COARSE_SMOOTH_BOX: int = 2
"""Box smoothing of the binned residual before the stencil, in blocks (2 blocks = 16 px)."""

COARSE_HALF_WIDTH: int = 3
"""Half-width of the eq. (6)-(7) stencil on the binned residual, in blocks (3 blocks = 24 px)."""

COARSE_N_POINTS: int = 2000
"""Random points per CCD for the large-scale gradients, count."""

COARSE_MIN_BLOCKS: int = 64
"""The large-scale and line indicators need a binned residual at least this many blocks on a side
(512 px at the default factor): on fewer blocks their null scatter is too wide to calibrate, blocks."""

LINE_MAX_SIDE_BLOCKS: int = 160
"""The line search halves the block grid until its shorter side is at most this, blocks."""

COARSE_BINS: int = 16
"""Bins of the large-scale gradient-angle histogram over (-pi/2, pi/2], count."""

SOURCE_BINS: int = 16
"""Bins of the source-orientation histogram over (-pi/2, pi/2], count."""

BACKGROUND_BINS: int = 32
"""Bins of the gradient-angle histogram over (-pi/2, pi/2], count."""

PROFILE_BINS: int = 10
"""Bins of the peak-offset histogram (:mod:`obsqc.detectors.structure`), count."""

PROFILE_MAX_OFFSET: float = 1.0
"""Upper edge of the peak-offset histogram, in units of the source's rms radius; larger values
fall in the last bin, dimensionless."""

HISTOGRAM_PSEUDOCOUNT: float = 0.5
"""Pseudo-count added to every histogram bin so that no KL term is infinite, counts."""

SATURATE_MARGIN_REL: float = 1e-4
"""Pixels within this fraction below SATURATE count as saturated: lossy tile compression (RICE_1 on
float data) quantises a clipped pixel to within a fraction of an ADU of the level, dimensionless."""


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """One full set of detector tunables; defaults are the module constants above."""

    background_n_samples: int = BACKGROUND_N_SAMPLES
    background_trim_fraction: float = BACKGROUND_TRIM_FRACTION
    background_clip_sigma: float = BACKGROUND_CLIP_SIGMA
    background_poly_order: int = BACKGROUND_POLY_ORDER
    detect_sigma: float = DETECT_SIGMA
    footprint_sigma: float = FOOTPRINT_SIGMA
    min_footprint_pixels: int = MIN_FOOTPRINT_PIXELS
    peak_window: int = PEAK_WINDOW
    stamp_size: int = STAMP_SIZE
    moment_threshold_fraction: float = MOMENT_THRESHOLD_FRACTION
    moment_floor_sigma: float = MOMENT_FLOOR_SIGMA
    smooth_box: int = SMOOTH_BOX
    gradient_half_width: int = GRADIENT_HALF_WIDTH
    gradient_n_points: int = GRADIENT_N_POINTS
    gradient_mask_sigma: float = GRADIENT_MASK_SIGMA
    gradient_max_tries: int = GRADIENT_MAX_TRIES
    coarse_factor: int = COARSE_FACTOR
    coarse_clip_sigma: float = COARSE_CLIP_SIGMA
    coarse_smooth_box: int = COARSE_SMOOTH_BOX
    coarse_half_width: int = COARSE_HALF_WIDTH
    coarse_n_points: int = COARSE_N_POINTS
    coarse_min_blocks: int = COARSE_MIN_BLOCKS
    coarse_bins: int = COARSE_BINS
    line_max_side_blocks: int = LINE_MAX_SIDE_BLOCKS
    source_bins: int = SOURCE_BINS
    background_bins: int = BACKGROUND_BINS
    profile_bins: int = PROFILE_BINS
    profile_max_offset: float = PROFILE_MAX_OFFSET
    histogram_pseudocount: float = HISTOGRAM_PSEUDOCOUNT
    saturate_margin_rel: float = SATURATE_MARGIN_REL
