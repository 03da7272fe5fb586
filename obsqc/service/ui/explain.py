"""Every flag in words: what it means and what an operator on shift should check.

:data:`FLAG_TEXT` maps a flag name (:data:`obsqc.service.verdict.FLAG_NAMES`, the learned
``source_autoencoder``, and the ``rejected``/``error`` flags of refused or failed exposures) to a
:class:`FlagText`. :func:`explain` turns one stored flag (``{"name", "sigma", "ccds", "reason"}``)
into the sentences the exposure page shows, naming the CCDs: ``background_gradient`` on S1 and S3
reads "The sky level of S1 and S3 varies across the CCD in a direction unlike normal exposures:
readout stripes, scattered light or a bad amplifier."
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from obsqc.service.errors import INVALID_EXPOSURE_REASONS

__all__ = ["ERROR_KINDS", "FLAG_TEXT", "Explanation", "FlagText", "explain", "join_names"]


@dataclass(frozen=True)
class FlagText:
    """A flag in words. ``meaning`` may hold ``{ccds}`` (the CCDs named, "S1 and S3") and ``{subject}``
    (the same with "the CCD"/"these CCDs" when none are named); ``check`` says what to look at."""

    title: str
    meaning: str
    check: str


FLAG_TEXT: dict[str, FlagText] = {
    "source_orientation": FlagText(
        "Sources share an orientation",
        "Stars and galaxies over the focal plane are elongated in a common direction, unlike normal "
        "exposures: the image was smeared or doubled during the exposure.",
        "Check the tracking and guiding (a jump or drift), wind shake of the telescope, and the optics' "
        "alignment; look for elongated stars in the thumbnails."),
    "source_profile": FlagText(
        "Source peaks off centre",
        "Source peaks sit away from their centroids, unlike normal exposures: stars are not compact, "
        "as in a defocused (donut-shaped) or doubled image.",
        "Check the focus and the active optics (hexapod), and whether the exposure is doubled."),
    "background_gradient": FlagText(
        "Background gradients share a direction",
        "The sky level of {ccds} varies across the CCD in a direction unlike normal exposures: readout "
        "stripes, scattered light or a bad amplifier.",
        "Look at the thumbnails and the gradient-angle histograms below; the same CCD flagged in several "
        "consecutive exposures points at its amplifier or readout electronics."),
    "background_large_scale": FlagText(
        "Large-scale structure in the background",
        "The sky background of {ccds} shows large coherent structure: scattered light, a ghost or a "
        "reflection of a bright source.",
        "Check the Moon's position and bright stars near the field, dome lights and the dome's "
        "alignment with the telescope."),
    "linear_feature": FlagText(
        "Straight trail",
        "A straight bright line crosses {subject}: a satellite, aircraft or meteor trail.",
        "Usually harmless for the rest of the exposure (the trail is masked in processing); several in a "
        "row may be an aircraft or a reflection in the optics."),
    "source_autoencoder": FlagText(
        "Sources look unusual (autoencoder)",
        "The autoencoder reconstructs this exposure's source stamps worse than those of normal exposures: "
        "sources look distorted, smeared or doubled.",
        "Compare with the orientation and peak-offset flags; look at the thumbnails for distorted stars."),
    "rejected": FlagText(
        "File refused",
        "The file could not be judged: {reason}.",
        "Fix the file or copy it again from the source, then post it again."),
    "error": FlagText(
        "Judging failed",
        "The service could not judge this exposure: {reason}.",
        "Look for this exposure id in the worker logs; post it again once the cause is fixed."),
}
"""Flag name -> its title, meaning and what to check."""

ERROR_KINDS = {
    "timeout": "a worker ran out of time on it, on every attempt",
    "killed": "the worker process died while judging it (out of memory, or a crash in a library)",
    "abandoned": "its worker disappeared mid-job and the retries did not succeed",
    "exception": "an unexpected error stopped every attempt",
}
"""Kind of a failed job (the ``reason`` of an ``error`` flag) -> in words."""


@dataclass(frozen=True)
class Explanation:
    """One flag as the page shows it."""

    name: str
    title: str
    meaning: str
    check: str
    sigma: float | None
    ccds: tuple[str, ...]


def join_names(names: list[str] | tuple[str, ...], limit: int = 6) -> str:
    """"S1", "S1 and S3", "S1, S3 and N4"; beyond ``limit`` names: "S1, ..., N4 and 3 more"."""
    names = [str(n) for n in names]
    if len(names) > limit:
        return f"{', '.join(names[:limit])} and {len(names) - limit} more"
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _sigma(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def explain(flag: dict | str) -> Explanation:
    """The words for one stored flag (a dict as stored, or a bare name); an unknown flag keeps its stored
    ``reason``, or its name."""
    if isinstance(flag, str):
        flag = {"name": flag}
    name = str(flag.get("name") or "unknown")
    ccds = tuple(str(c) for c in (flag.get("ccds") or ()) if isinstance(c, (str, int)))
    reason = flag.get("reason")
    reason = str(reason) if reason is not None else None
    text = FLAG_TEXT.get(name)
    sigma = _sigma(flag.get("sigma"))
    if text is None:
        return Explanation(name, name.replace("_", " ").capitalize(), reason or f"flag {name}", "", sigma, ccds)
    if name == "rejected":
        words = INVALID_EXPOSURE_REASONS.get(reason or "", reason or "the reason was not recorded")
    elif name == "error":
        words = ERROR_KINDS.get(reason or "", reason or "the reason was not recorded")
    else:
        words = ""
    subject = join_names(ccds) if ccds else "the focal plane"
    meaning = text.meaning.format(ccds=join_names(ccds) if ccds else "the CCDs", subject=subject, reason=words)
    return Explanation(name, text.title, meaning, text.check, sigma, ccds)
