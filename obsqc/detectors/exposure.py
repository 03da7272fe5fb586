"""Combine the CCDs of one exposure (Alonso, Zhang & Li §3.1 and §3.2).

* Source orientations are pooled over the whole exposure (§3.1: "for each exposure, we create a
  distribution of theta including all the sources in that exposure").
* Background gradient angles stay per CCD (§3.2: "on a CCD level rather than exposure level ...
  we do not expect the same preferred direction for theta on every CCD"); the exposure's background
  indicator is the mean of its CCDs' KL, computed in :mod:`obsqc.detectors.scoring`.

The per-CCD histograms are kept so that a verdict can say which CCDs are responsible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from obsqc.detectors.ccd import CCDStats


@dataclass(frozen=True, slots=True)
class ExposureStats:
    """The measured, not yet scored, exposure.

    ``ccds`` holds the measured CCDs in file order; ``skipped_ccds`` the (name, reason) of CCDs that
    could not be measured (e.g. all-NaN), so that nothing is silently dropped.
    """

    exposure_id: str
    ccds: tuple[CCDStats, ...]
    source_counts: np.ndarray
    profile_counts: np.ndarray
    skipped_ccds: tuple[tuple[str, str], ...] = ()

    @property
    def n_sources(self) -> int:
        """Usable sources pooled over all CCDs."""
        return int(self.source_counts.sum())

    @property
    def gradient_counts(self) -> np.ndarray:
        """(n_ccds, background_bins) gradient-angle histograms, one row per CCD."""
        return np.stack([c.gradient_counts for c in self.ccds]) if self.ccds else np.empty((0, 0), np.int64)

    @property
    def line_z(self) -> float:
        """The brightest straight line over all CCDs (:mod:`obsqc.detectors.lines`), NaN if none measured."""
        zs = [c.line_z for c in self.ccds if np.isfinite(c.line_z)]
        return float(max(zs)) if zs else float("nan")

    @property
    def coarse_counts(self) -> np.ndarray:
        """(n_ccds, coarse_bins) large-scale gradient-angle histograms, one row per CCD."""
        return np.stack([c.coarse_counts for c in self.ccds]) if self.ccds else np.empty((0, 0), np.int64)


def combine_ccds(
    exposure_id: str,
    ccds: list[CCDStats] | tuple[CCDStats, ...],
    *,
    skipped: tuple[tuple[str, str], ...] = (),
) -> ExposureStats:
    """Pool the source-orientation (and peak-offset) histograms of the CCDs of one exposure.

    Raises ``ValueError`` when ``ccds`` is empty or the CCDs disagree on the number of bins.
    """
    ccds = tuple(ccds)
    if not ccds:
        raise ValueError(f"exposure {exposure_id!r} has no measurable CCD")
    bins = {len(c.source_counts) for c in ccds}
    if len(bins) != 1:
        raise ValueError(f"CCDs of exposure {exposure_id!r} use different histogram bins: {sorted(bins)}")
    pooled = np.sum([c.source_counts for c in ccds], axis=0).astype(np.int64)
    profile = np.sum([c.profile_counts for c in ccds], axis=0).astype(np.int64)
    return ExposureStats(
        exposure_id=exposure_id, ccds=ccds, source_counts=pooled, profile_counts=profile, skipped_ccds=tuple(skipped)
    )
