"""What the worker writes at judge time for the exposure page, next to the summary plot.

The verdict store keeps the scores, not the histograms nor where each CCD sits on the focal plane,
and by the time an operator opens the page the pixels are long gone from memory. So, after the
verdict is stored (it never waits for this), :func:`write_exposure_views` writes into the exposure's
artifact directory:

* ``ui.json`` (:data:`VIEWS_NAME`): the CCD layout from the DETSEC cards when the file had them,
  the CCD shapes, the histograms that explain the verdict against the reference they were scored
  against (source orientation, Alonso, Zhang & Li section 3.1; the gradient angles of the flagged or
  worst CCDs, section 3.2; the large-scale gradients and peak offsets when flagged), and the list of
  thumbnails;
* ``thumb_<n>.png``: asinh thumbnails (:mod:`obsqc.service.ui.thumbs`) of the CCDs named by a flag (at
  most :data:`MAX_THUMBNAILS`), or of the worst CCD of a ``warn``/``bad`` exposure whose flags name
  none. Their pixels are read again from the file, CCD by CCD, only for flagged exposures: a normal
  exposure costs nothing, a flagged DECam exposure about 0.1-0.2 s per thumbnail.

Angles are degrees counter-clockwise from +x (NAXIS1) over (-90, 90]; exposure histograms are
smoothed with the detectors' pseudo-count, as they were when scored, so they compare with the
reference as the KL did. ``ui.json`` is replaced atomically and written last: a reader sees either
no file or a complete one whose thumbnails exist. :func:`read_views` reads it back, tolerantly.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from obsqc.service.ui.thumbs import thumbnail_png

__all__ = ["MAX_GRADIENT_HISTOGRAMS", "MAX_THUMBNAILS", "VIEWS_NAME", "read_views", "write_exposure_views"]

logger = logging.getLogger(__name__)

VIEWS_NAME = "ui.json"
"""File of the exposure page's data in the exposure's artifact directory."""

VIEWS_VERSION = 1
"""Version of the layout of ``ui.json``."""

MAX_THUMBNAILS = 6
"""Most CCD thumbnails written per exposure (the first CCDs named by its flags)."""

MAX_GRADIENT_HISTOGRAMS = 3
"""Most per-CCD gradient-angle histograms kept per exposure."""

MAX_VIEWS_BYTES = 4 * 1024 * 1024
"""A ``ui.json`` larger than this is not read (it never is: a DECam exposure's is about 10 KB)."""

_ANGLES = {"span": [-90.0, 90.0], "xlabel": "angle from +x [deg]"}


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _histogram(key: str, title: str, counts, reference_p, indicator, pseudocount: float, **axis) -> dict | None:
    from obsqc.detectors.divergence import smoothed_distribution

    counts = np.asarray(counts)
    reference_p = np.asarray(reference_p, dtype=float)
    if counts.size == 0 or counts.shape != reference_p.shape:
        return None
    return {
        "key": key, "title": title, **(axis or _ANGLES),
        "n": int(counts.sum()),
        "p": [round(float(v), 6) for v in smoothed_distribution(counts, pseudocount)],
        "reference": [round(float(v), 6) for v in reference_p],
        "kl": _finite(indicator.kl), "sigma": _finite(indicator.sigma),
    }


def _named_ccds(flags: Sequence) -> list[str]:
    names: list[str] = []
    for flag in flags:
        names.extend(c for c in flag.ccds if c not in names)
    return names


def _histograms(measured, score, reference, flags: Sequence, pseudocount: float) -> list[dict]:
    stats = measured.stats
    by_name = {c.name: c for c in stats.ccds}
    ccd_scores = {c.name: c for c in score.ccds}
    flagged = {f.name: list(f.ccds) for f in flags}
    out = [_histogram("source", "Source orientation (all CCDs)", stats.source_counts, reference.source_p,
                      score.source, pseudocount)]
    if "source_profile" in flagged:
        out.append(_histogram("profile", "Source peak offset", stats.profile_counts, reference.profile_p,
                              score.profile, pseudocount, span=[0.0, 1.0],
                              xlabel="peak-to-centroid offset / rms radius"))
    fine = flagged.get("background_gradient", [])
    if not fine and score.ccds:  # none flagged: the CCD closest to being flagged
        fine = [max(score.ccds, key=lambda c: np.nan_to_num(c.background.sigma, nan=-np.inf)).name]
    for name in fine[:MAX_GRADIENT_HISTOGRAMS]:
        if name in by_name and name in ccd_scores:
            out.append(_histogram(f"background:{name}", f"Background gradient angles, CCD {name}",
                                  by_name[name].gradient_counts, reference.background_p,
                                  ccd_scores[name].background, pseudocount))
    for name in flagged.get("background_large_scale", [])[:2]:
        if name in by_name and name in ccd_scores:
            out.append(_histogram(f"large_scale:{name}", f"Large-scale gradient angles, CCD {name}",
                                  by_name[name].coarse_counts, reference.large_scale_p,
                                  ccd_scores[name].large_scale, pseudocount))
    return [h for h in out if h is not None]


def _thumbnail_ccds(score, flags: Sequence, verdict: str) -> list[tuple[str, str]]:
    """(CCD, why) pairs to draw: those named by flags, else the worst CCD of a warn/bad exposure."""
    named = _named_ccds(flags)
    if named:
        return [(name, "flagged") for name in named[:MAX_THUMBNAILS]]
    if verdict in ("warn", "bad") and score.ccds:
        worst = max(score.ccds, key=lambda c: np.nanmax([c.background.sigma, c.large_scale.sigma, -np.inf]))
        return [(worst.name, "worst CCD")]
    return []


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_thumbnails(path: str, exposure_id: str, wanted: list[tuple[str, str]], out_dir: Path) -> list[dict]:
    from obsqc.service.fits_ingest import open_exposure

    written: list[dict] = []
    if not wanted:
        return written
    with open_exposure(path, exposure_id=exposure_id) as reader:
        index = {name: i for i, name in enumerate(reader.header.ccd_names)}
        for name, why in wanted:
            if name not in index:
                continue
            data = reader.read_ccd(index[name]).data
            png, factor = thumbnail_png(data)
            file = f"thumb_{len(written)}.png"
            _write_bytes(out_dir / file, png)
            written.append({"ccd": name, "file": file, "why": why, "factor": factor, "shape": list(data.shape)})
    return written


def write_exposure_views(out_dir: Path, measured, score, reference, flags: Sequence, verdict: str, *,
                         pseudocount: float) -> Path:
    """Write ``ui.json`` and the thumbnails of one judged exposure into ``out_dir``; returns the json path.

    ``measured`` is the :class:`~obsqc.service.measure.MeasuredExposure`, ``score`` its
    :class:`~obsqc.detectors.scoring.ExposureScore` against ``reference``, ``flags`` the
    :class:`~obsqc.service.verdict.Flag` objects of its verdict ``verdict``. A thumbnail that cannot be
    read (the file moved) is logged and left out; the rest is still written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exposure_id = measured.stats.exposure_id
    try:
        thumbnails = _write_thumbnails(measured.header.path, exposure_id, _thumbnail_ccds(score, flags, verdict),
                                       out_dir)
    except Exception as exc:  # noqa: BLE001 - the pictures are a courtesy, never a failure of the job
        logger.warning("exposure %s: no CCD thumbnails (%s)", exposure_id, exc)
        thumbnails = []
    views = {
        "version": VIEWS_VERSION,
        "exposure_id": exposure_id,
        "detsec": {name: list(sec) for name, sec in measured.detsec.items()},
        "shapes": {c.name: list(c.shape) for c in measured.stats.ccds},
        "skipped_ccds": [list(s) for s in measured.stats.skipped_ccds],
        "reference_exposures": int(reference.n_exposures),
        "histograms": _histograms(measured, score, reference, flags, pseudocount),
        "thumbnails": thumbnails,
    }
    path = out_dir / VIEWS_NAME
    _write_bytes(path, json.dumps(views, separators=(",", ":"), allow_nan=False).encode())
    return path


def read_views(folder: Path) -> dict | None:
    """The ``ui.json`` of an artifact directory, or None when missing, too large or malformed."""
    path = Path(folder) / VIEWS_NAME
    try:
        if path.stat().st_size > MAX_VIEWS_BYTES:
            logger.warning("%s is larger than %d bytes; not read", path, MAX_VIEWS_BYTES)
            return None
        views = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return None
    return views if isinstance(views, dict) else None
