"""Calibration state: the reference of each (instrument, band), built from exposures judged normal.

DESIGN.md "The method": reference distributions are per instrument and band (source orientations at
exposure level, background gradient angles at CCD level; Alonso, Zhang & Li §3.1-3.2 take the mean
histogram of a set as the reference, eq. 1), built from normal exposures, persisted, updated as new
normal exposures arrive, and seeded from an archive by ``obsqc calibrate``.

The update rule
---------------
* A reference is built (:func:`obsqc.detectors.scoring.build_reference`) from its **members**: the
  measured histograms of its most recent ``reference_window`` member exposures, stored in the
  ``reference_members`` table (so a reference can always be rebuilt, audited, or rolled back).
* **Who becomes a member.** Seeding (``obsqc calibrate``) offers every archive exposure. Live, while the
  reference is still ``calibrating`` (fewer than ``min_reference_exposures`` accepted members) every
  measured exposure is offered; once it is ready, only exposures judged ``ok`` are: a ``warn`` or
  ``bad`` exposure never enters, so a run of bad exposures (a night of stripes, a stuck shutter) is
  flagged and leaves the reference untouched.
* **Robust rebuild.** Offered members are not trusted blindly: every rebuild first builds a provisional
  reference from the whole window (its kappas and standardisation are medians, so a minority of
  anomalies barely moves it), scores every member against it, and rebuilds from the members whose
  every indicator stays below ``warn_sigma``. Poisoned members stay stored but unused (``rejected``
  in :class:`RebuildReport`); a reference needs ``min_reference_exposures`` accepted members to judge.
  A run of bad exposures during calibration therefore poisons the reference only if it is the
  majority of the window, and then the operator sees it (``obsqc calibrate`` prints the rejections).
* **Bounded.** The window keeps the reference following slow changes (season, filter ageing); members
  older than twice the window are deleted.

Two workers may rebuild the same reference at once; the last write wins and the next rebuild
includes both members, so nothing is lost for more than one exposure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.exposure import ExposureStats
from obsqc.detectors.scoring import INDICATOR_NAMES, Reference, build_reference, score_exposure
from obsqc.service.learned import calibrate_learned
from obsqc.service.store.models import ReferenceMember
from obsqc.service.store.repository import load_reference, save_reference

__all__ = [
    "CalibrationRun", "MemberCCD", "RebuildReport", "add_member", "calibrate_files", "learned_from_json", "member_count",
    "rebuild_reference", "stats_from_json", "stats_to_json",
]


@dataclass(frozen=True, slots=True)
class MemberCCD:
    """The part of a CCD's statistics a reference needs (duck-types :class:`~obsqc.detectors.ccd.CCDStats`
    for :func:`~obsqc.detectors.scoring.build_reference` and :func:`~obsqc.detectors.scoring.score_exposure`)."""

    name: str
    gradient_counts: np.ndarray
    coarse_counts: np.ndarray
    line_z: float
    n_sources: int


def stats_to_json(stats: ExposureStats, learned: dict[str, float] | None = None) -> str:
    """The histograms of one measured exposure, as compact JSON (a few kB for 62 CCDs); ``learned`` adds
    the values of learned indicators (:mod:`obsqc.service.learned`, e.g. the log mean stamp MSE)."""
    return json.dumps({
        "exposure_id": stats.exposure_id,
        "learned": {k: float(v) for k, v in (learned or {}).items() if v is not None and math.isfinite(v)},
        "source_counts": np.asarray(stats.source_counts).tolist(),
        "profile_counts": np.asarray(stats.profile_counts).tolist(),
        "ccds": [
            {"name": c.name, "gradient_counts": np.asarray(c.gradient_counts).tolist(),
             "coarse_counts": np.asarray(c.coarse_counts).tolist(),
             "line_z": None if not math.isfinite(c.line_z) else float(c.line_z), "n_sources": int(c.n_sources)}
            for c in stats.ccds
        ],
    }, separators=(",", ":"))


def stats_from_json(text: str) -> ExposureStats:
    """Inverse of :func:`stats_to_json`; the CCDs are :class:`MemberCCD`. Raises ``ValueError``."""
    try:
        d = json.loads(text)
        ccds = tuple(
            MemberCCD(str(c["name"]), np.asarray(c["gradient_counts"], np.int64),
                      np.asarray(c["coarse_counts"], np.int64),
                      float("nan") if c["line_z"] is None else float(c["line_z"]), int(c["n_sources"]))
            for c in d["ccds"]
        )
        return ExposureStats(str(d["exposure_id"]), ccds, np.asarray(d["source_counts"], np.int64),
                             np.asarray(d["profile_counts"], np.int64))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a reference member: {exc}") from exc


def learned_from_json(text: str) -> dict[str, float]:
    """The learned-indicator values stored with a member (empty for members stored before them)."""
    try:
        return {str(k): float(v) for k, v in dict(json.loads(text).get("learned", {})).items()}
    except (TypeError, ValueError, AttributeError):
        return {}


def add_member(session: Session, instrument: str, band: str, stats: ExposureStats, *, source: str,
               learned: dict[str, float] | None = None) -> bool:
    """Offer one measured exposure to the reference of (instrument, band); False if already a member.
    ``learned``: its values of the learned indicators, calibrated at the next rebuild."""
    exists = session.execute(
        select(ReferenceMember.id).where(ReferenceMember.instrument == instrument, ReferenceMember.band == band,
                                         ReferenceMember.exposure_id == stats.exposure_id)
    ).first()
    if exists is not None:
        return False
    session.add(ReferenceMember(instrument=instrument, band=band, exposure_id=stats.exposure_id, source=source,
                                n_sources=stats.n_sources, stats=stats_to_json(stats, learned)))
    session.flush()
    return True


def member_count(session: Session, instrument: str, band: str) -> int:
    """Members stored for (instrument, band), accepted or not."""
    return session.execute(
        select(func.count()).select_from(ReferenceMember)
        .where(ReferenceMember.instrument == instrument, ReferenceMember.band == band)
    ).scalar_one()


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild did: the reference (None without members), members used and rejected (ids)."""

    reference: Reference | None
    used: tuple[str, ...]
    rejected: tuple[str, ...]

    @property
    def n_used(self) -> int:
        return len(self.used)


def _worst_sigma(stats: ExposureStats, reference: Reference, params: DetectorParams) -> float:
    score = score_exposure(stats, reference, params)
    sigmas = [getattr(score, name).sigma for name in INDICATOR_NAMES]
    finite = [s for s in sigmas if math.isfinite(s)]
    return max(finite) if finite else 0.0


def rebuild_reference(
    session: Session,
    instrument: str,
    band: str,
    *,
    window: int,
    warn_sigma: float,
    params: DetectorParams = DetectorParams(),
) -> RebuildReport:
    """Rebuild and store the reference of (instrument, band) from its latest ``window`` members.

    The robust rule of the module docstring: provisional reference from all of them, members with any
    indicator at or above ``warn_sigma`` against it are left out, final reference from the rest
    (all of them when fewer than three would remain). Members older than ``2 * window`` are deleted.
    """
    rows = session.execute(
        select(ReferenceMember.exposure_id, ReferenceMember.stats)
        .where(ReferenceMember.instrument == instrument, ReferenceMember.band == band)
        .order_by(ReferenceMember.id.desc()).limit(window)
    ).all()
    if not rows:
        return RebuildReport(None, (), ())
    members = [stats_from_json(text) for _, text in reversed(rows)]
    learned_of = {m.exposure_id: learned_from_json(text) for m, (_, text) in zip(members, reversed(rows))}
    provisional = build_reference(members, params)
    kept, rejected = [], []
    for stats in members:
        (kept if _worst_sigma(stats, provisional, params) < warn_sigma else rejected).append(stats)
    if len(kept) < 3:
        kept, rejected = members, []
    reference = build_reference(kept, params) if rejected else provisional
    learned = {}
    for name in sorted({n for values in learned_of.values() for n in values}):
        calibration = calibrate_learned([learned_of[m.exposure_id].get(name) for m in kept])
        if calibration is not None:
            learned[name] = calibration
    reference = replace(reference, learned=learned)
    save_reference(session, instrument, band, reference)
    _prune(session, instrument, band, keep=2 * window)
    return RebuildReport(reference, tuple(s.exposure_id for s in kept), tuple(s.exposure_id for s in rejected))


def _prune(session: Session, instrument: str, band: str, *, keep: int) -> None:
    cutoff = session.execute(
        select(ReferenceMember.id).where(ReferenceMember.instrument == instrument, ReferenceMember.band == band)
        .order_by(ReferenceMember.id.desc()).offset(keep).limit(1)
    ).scalar_one_or_none()
    if cutoff is not None:
        session.execute(delete(ReferenceMember).where(
            ReferenceMember.instrument == instrument, ReferenceMember.band == band, ReferenceMember.id <= cutoff))


def current_reference(session: Session, instrument: str, band: str) -> Reference | None:
    """The stored reference of (instrument, band), or None (thin alias of the store's loader)."""
    return load_reference(session, instrument, band)


@dataclass(frozen=True)
class CalibrationRun:
    """What ``obsqc calibrate`` did: a rebuild report per (instrument, band), new members per key, and
    the files that could not be measured as (path, reason, message)."""

    reports: dict[tuple[str, str], RebuildReport]
    added: dict[tuple[str, str], int]
    failures: list[tuple[str, str, str]]


def calibrate_files(
    paths,
    sessions,
    *,
    window: int,
    warn_sigma: float,
    params: DetectorParams = DetectorParams(),
    threads: int = 1,
    on_progress=None,
) -> CalibrationRun:
    """Seed references from an archive: measure every file, offer it as a member of its (instrument,
    band), then rebuild each reference touched by the robust rule above. Bad files are reported and
    skipped; members already stored (same exposure id) are not added twice."""
    from obsqc.service.errors import ObsQCError
    from obsqc.service.measure import measure_file

    added: dict[tuple[str, str], int] = {}
    failures: list[tuple[str, str, str]] = []
    for path in paths:
        path = str(path)
        try:
            measured = measure_file(path, params=params, threads=threads, id_from_filename=True)
        except ObsQCError as exc:
            failures.append((path, getattr(exc, "reason", "invalid"), str(exc)))
        except (OSError, ValueError) as exc:
            failures.append((path, "unreadable", str(exc)))
        else:
            key = (measured.header.instrument or "unknown", measured.header.band or "unknown")
            with sessions() as session, session.begin():
                if add_member(session, *key, measured.stats, source="archive"):
                    added[key] = added.get(key, 0) + 1
                else:
                    added.setdefault(key, 0)
        if on_progress is not None:
            on_progress(path)
    reports = {}
    for key in added:
        with sessions() as session, session.begin():
            reports[key] = rebuild_reference(session, *key, window=window, warn_sigma=warn_sigma, params=params)
    return CalibrationRun(reports, added, failures)
