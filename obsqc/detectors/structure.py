"""Source structure: how far each source's brightest pixel sits from its centroid.

Not in Alonso, Zhang & Li. Their orientation indicator (eq. 2-5) is blind to anomalies that keep
sources round: a defocused telescope turns every star into a ring (a donut), and a telescope shaken
along two directions makes blobs with several peaks. Both move the brightest pixel away from the
intensity centroid, which an in-focus PSF never does. We measure, per usable source,

.. math::  o = \\frac{\\lVert \\mathbf{x}_{\\rm centroid} - \\mathbf{x}_{\\rm peak} \\rVert}{\\sqrt{q_{xx} + q_{yy}}}

the peak offset in units of the source's rms radius (a scale-free number: seeing and pixel scale
cancel). A sharp PSF sampled on pixels gives o of a few tenths at most; a ring of radius R, o ~ 1.
The exposure's histogram of o over [0, ``max_offset``] (the last bin also takes larger values) is
compared with the reference by the same KL divergence and G-test as the orientations.
"""

from __future__ import annotations

import numpy as np

from obsqc.detectors import config


def peak_offsets(sources: np.ndarray) -> np.ndarray:
    """The peak offset o of each source of a ``sources.SOURCE_DTYPE`` catalogue (NaN if unmeasured)."""
    dx = sources["x"] - sources["peak_x"]
    dy = sources["y"] - sources["peak_y"]
    radius2 = sources["q_xx"] + sources["q_yy"]
    out = np.full(len(sources), np.nan)
    ok = radius2 > 0
    out[ok] = np.hypot(dx[ok], dy[ok]) / np.sqrt(radius2[ok])
    return out


def offset_histogram(
    offsets: np.ndarray, bins: int = config.PROFILE_BINS, max_offset: float = config.PROFILE_MAX_OFFSET
) -> np.ndarray:
    """Counts of ``offsets`` in ``bins`` equal bins over [0, max_offset]; larger values go to the last bin."""
    if bins < 1 or not max_offset > 0:
        raise ValueError(f"need bins >= 1 and max_offset > 0, got {bins} and {max_offset}")
    o = np.asarray(offsets, float)
    o = o[np.isfinite(o)]
    idx = np.minimum((o / max_offset * bins).astype(np.int64), bins - 1)
    return np.bincount(idx, minlength=bins).astype(np.int64)
