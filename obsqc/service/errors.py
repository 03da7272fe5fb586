"""Errors raised by the obsqc service.

Every error that reaches a pipeline operator carries a human message saying what is wrong and what
to do next. Errors about an input file also carry a stable, machine-readable ``reason`` code that the
API, the verdict store and the metrics key on; the codes and their meanings are listed in
``INVALID_EXPOSURE_REASONS`` and must not be renamed once released.
"""

from __future__ import annotations

import logging

__all__ = ["INVALID_EXPOSURE_REASONS", "InvalidExposureError", "ObsQCError"]

logger = logging.getLogger(__name__)


class ObsQCError(Exception):
    """Base class of every error raised on purpose by obsqc."""


#: reason code -> what it means. Add new codes here (never rename or reuse one); an unlisted code is
#: accepted but logged, so that a typo shows up without turning a clear error into a crash.
INVALID_EXPOSURE_REASONS: dict[str, str] = {
    "not_found": "the path does not exist",
    "not_a_file": "the path is a directory or another non-regular file",
    "unreadable": "the file exists but cannot be read (permissions, I/O error, changed while read)",
    "not_fits": "the file is not a FITS file (or is empty, or is whole-file compressed)",
    "truncated": "the file is shorter than its FITS headers declare",
    "bad_header": "a FITS header is malformed in a way that prevents reading the file",
    "no_image_hdus": "the file holds no CCD image HDU",
    "missing_exposure_id": "no exposure id in the headers and none given",
    "bad_dimensions": "an image HDU is not 2-D (1-D data, or a cube with more than one plane)",
    "too_small": "a CCD has a side shorter than IngestLimits.min_side_px",
    "too_large": "the file or a CCD exceeds IngestLimits (bytes, pixels)",
    "too_many_ccds": "the file holds more CCDs than IngestLimits.max_ccds",
    "all_nan": "a CCD holds no finite pixel",
    "no_usable_ccd": "no CCD of the exposure could be measured",
}


class InvalidExposureError(ObsQCError, ValueError):
    """An exposure file that obsqc cannot (or must not) measure.

    Attributes:
        reason: stable machine-readable code, one of ``INVALID_EXPOSURE_REASONS``.
        message: human message for an operator: what is wrong and what to do next.
        ccd: the CCD concerned when only one CCD is bad (the caller may skip it and keep the rest),
            otherwise ``None``.
        path: the file concerned, when known.
    """

    def __init__(self, message: str, *, reason: str, ccd: str | None = None, path: str | None = None):
        if reason not in INVALID_EXPOSURE_REASONS:  # still raised: an unlisted code must not hide the error
            logger.warning("InvalidExposureError reason %r is not listed in INVALID_EXPOSURE_REASONS", reason)
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.ccd = ccd
        self.path = path

    def __reduce__(self):  # keep reason/ccd/path across pickling (process pools)
        return (_rebuild_invalid_exposure, (self.reason, self.message, self.ccd, self.path))

    def __repr__(self) -> str:
        ccd = f", ccd={self.ccd!r}" if self.ccd is not None else ""
        return f"InvalidExposureError(reason={self.reason!r}{ccd}, message={self.message!r})"

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form for API responses and the verdict store."""
        return {"reason": self.reason, "message": self.message, "ccd": self.ccd}


def _rebuild_invalid_exposure(reason, message, ccd, path):
    return InvalidExposureError(message, reason=reason, ccd=ccd, path=path)
