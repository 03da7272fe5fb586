"""From scores to a verdict an operator can act on: ok, warn, bad or calibrating, with flags and CCDs.

Every indicator of :class:`obsqc.detectors.scoring.ExposureScore` carries a significance in sigma
units calibrated against the reference (DESIGN.md "The method"), so one pair of thresholds serves
all of them. The verdict is the worst level any indicator reaches; each indicator at or above the warn
threshold is a flag named after it, with the CCDs responsible where the indicator is per CCD
(background gradients, large-scale gradients, straight lines) and a sentence that says why.
Until the reference of the exposure's instrument and band holds ``min_reference_exposures`` normal
exposures the verdict is ``calibrating``: the scores are still computed and reported, but not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from obsqc.detectors.scoring import ExposureScore

FLAG_NAMES = {
    "source": "source_orientation",
    "profile": "source_profile",
    "background": "background_gradient",
    "large_scale": "background_large_scale",
    "line": "linear_feature",
}
"""Flag name of each exposure-level indicator of ``ExposureScore``."""

LEARNED_FLAG_NAMES = {"autoencoder": "source_autoencoder"}
"""Flag name of each learned exposure-level indicator (:mod:`obsqc.service.learned`)."""

_WHAT = {
    "source": "sources share a preferred orientation (PSF elongation, tracking, double images)",
    "profile": "source peaks sit off their centroids (defocus donuts, double images)",
    "background": "background gradients share a direction (readout stripes, pattern noise)",
    "large_scale": "the background has large coherent structure (scattered light, ghosts)",
    "line": "a straight bright line crosses the focal plane (satellite or aircraft trail)",
    "autoencoder": "source stamps are reconstructed worse than on normal exposures by the autoencoder "
                   "(distorted or unusual sources)",
}


@dataclass(frozen=True)
class Flag:
    """One raised flag: its name (``FLAG_NAMES``), the indicator's significance, the CCDs responsible
    (worst first; empty for exposure-level indicators) and the sentence for the operator."""

    name: str
    sigma: float
    ccds: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict:
        """JSON-ready form, as stored in the verdict store and returned by the API."""
        return {"name": self.name, "sigma": round(float(self.sigma), 3), "ccds": list(self.ccds), "reason": self.reason}


@dataclass(frozen=True)
class Verdict:
    """The judgement of one exposure: ``verdict`` in ok/warn/bad/calibrating, the flags raised, the
    CCDs named by any flag, and one sentence per flag for the operator; ``details`` holds the
    :class:`Flag` objects behind ``flags`` (same order)."""

    verdict: str
    flags: tuple[str, ...] = ()
    ccds: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default=())
    details: tuple[Flag, ...] = ()


def _ccds_above(score: ExposureScore, name: str, threshold: float) -> list[str]:
    """CCDs whose own significance for a per-CCD indicator reaches ``threshold``, worst first."""
    if name == "background":
        pairs = [(c.background.sigma, c.name) for c in score.ccds]
    elif name == "large_scale":
        pairs = [(c.large_scale.sigma, c.name) for c in score.ccds]
    else:
        return []
    return [n for s, n in sorted(pairs, key=lambda p: -p[0]) if not math.isnan(s) and s >= threshold]


def judge(
    score: ExposureScore,
    *,
    warn_sigma: float,
    bad_sigma: float,
    reference_exposures: int,
    min_reference_exposures: int,
    learned: dict[str, float] | None = None,
) -> Verdict:
    """Judge one scored exposure; ``learned`` adds the significances of learned indicators by name
    (keys of ``LEARNED_FLAG_NAMES``; NaN = not available). Raises ``ValueError`` when ``bad_sigma < warn_sigma``."""
    if bad_sigma < warn_sigma:
        raise ValueError(f"bad_sigma ({bad_sigma}) must not be below warn_sigma ({warn_sigma})")
    if reference_exposures < min_reference_exposures:
        return Verdict("calibrating", reasons=(
            f"the reference holds {reference_exposures} of the {min_reference_exposures} normal exposures "
            "it needs; scores are reported but not judged yet",
        ))
    flags, ccds, reasons, details = [], [], [], []
    worst = -math.inf
    sigmas = [(name, flag, getattr(score, name).sigma) for name, flag in FLAG_NAMES.items()]
    sigmas += [(name, LEARNED_FLAG_NAMES[name], sigma) for name, sigma in (learned or {}).items()]
    for name, flag, sigma in sigmas:
        if math.isnan(sigma) or sigma < warn_sigma:
            continue
        worst = max(worst, sigma)
        flags.append(flag)
        named = _ccds_above(score, name, warn_sigma)
        ccds.extend(c for c in named if c not in ccds)
        where = f" on CCD{'s' if len(named) > 1 else ''} {', '.join(named)}" if named else ""
        reasons.append(f"{flag} at {sigma:.1f} sigma{where}: {_WHAT[name]}")
        details.append(Flag(flag, sigma, tuple(named), reasons[-1]))
    if not flags:
        return Verdict("ok")
    return Verdict("bad" if worst >= bad_sigma else "warn", tuple(flags), tuple(ccds), tuple(reasons), tuple(details))
