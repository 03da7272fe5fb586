"""Exposure-level indicators from the learned scorers, calibrated like the Entropy Method's.

The autoencoder indicator (Alonso, Zhang & Li §4.3): every usable source of the exposure is cut into a
64x64 stamp, reconstructed by the dense autoencoder, and scored by its MSE (eq. 9); the exposure's
indicator is the mean MSE of its stamps. A higher mean means the sources look less like the normal
sources the autoencoder was trained on.

Calibration. Raw MSE depends on the instrument, the band and the seeing, so, like the KL indicators,
it is turned into a significance against the reference of (instrument, band): the reference's
members carry their ``log`` mean MSE, and a rebuild stores the median and the normalised MAD
(1.4826 MAD) of the members it kept (:func:`calibrate_learned`). An exposure's significance is then
``(log mse - median) / scale``: one-sided (only a worse reconstruction raises a flag), in the same
sigma units as every other indicator, so the verdict's thresholds apply unchanged. The log makes the
distribution of a mean of many positive MSEs close to symmetric; the scale has a floor
(``MIN_LOG_SCALE``) so that a reference of near-identical exposures does not turn noise into alarms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from obsqc.detectors.scoring import Reference

__all__ = ["AUTOENCODER", "MIN_LOG_SCALE", "MIN_MEMBERS", "calibrate_learned", "learned_sigma"]

AUTOENCODER = "autoencoder"
"""Name of the autoencoder indicator (its flag, its key in a reference's ``learned``)."""

MIN_LOG_SCALE = 0.05
"""Smallest scale of a log mean MSE: a 5% change of the mean MSE is never more than 1 sigma."""

MIN_MEMBERS = 3
"""Members with a value an indicator needs before it is calibrated (otherwise it stays NaN)."""


def calibrate_learned(values: Sequence[float]) -> list[float] | None:
    """(median, scale, n) of the finite ``values`` (log mean MSEs of reference members), or None when
    fewer than :data:`MIN_MEMBERS` are finite."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if v.size < MIN_MEMBERS:
        return None
    median = float(np.median(v))
    scale = max(1.4826 * float(np.median(np.abs(v - median))), MIN_LOG_SCALE)
    return [median, scale, float(v.size)]


def learned_sigma(reference: Reference | None, name: str, value: float | None) -> float:
    """Significance of ``value`` (a log mean MSE) against the calibration ``name`` of ``reference``;
    NaN when either is missing."""
    if reference is None or value is None or not math.isfinite(value):
        return float("nan")
    calibration = reference.learned.get(name)
    if not calibration:
        return float("nan")
    median, scale = calibration[0], calibration[1]
    return (value - median) / scale
