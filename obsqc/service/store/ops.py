"""Read-only queries for the operators' alerts: what the scrape-time collector of
:mod:`obsqc.service.ops_metrics` exports from the verdict store.

Counters cannot carry an exposure id (DESIGN.md: a series per exposure would grow without bound), yet
an alert must name the exposure, its CCDs and the indicators that fired. So, at scrape time, these
queries read a *bounded* recent slice of the store:

* the exposures judged ``bad`` or ``warn`` in the last minutes, with their flags and CCDs
  (:func:`recent_problem_exposures`);
* per (instrument, band) of the ``references`` table (one row per pair): its reference size and
  last rebuild, whether it is still ``calibrating`` and since when, and how many consecutive
  exposures flagged each CCD (:func:`pair_states`);
* the most anomalous galaxies scored in the last hour (:func:`recent_galaxy_anomalies`).

**Bounded and cheap.** Every exposure query is restricted to exposures received in the last
:data:`LOOKBACK_S` seconds, found through the ``(received_at, id)`` index, and limited; pairs come from
the small ``references`` table (at most :data:`MAX_PAIRS`). On PostgreSQL :func:`ops_snapshot` also
sets a statement timeout for its transaction, so a slow database cannot hold a scrape.

"Consecutive" follows the order the pipeline sent the exposures (``received_at``, then id), the order
of ``GET /v1/exposures``; exposures still queued, rejected or in error are skipped (they say nothing
about a CCD).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from obsqc.service.store.models import ExposureRow, GalaxyRow, ReferenceRow, utcnow

__all__ = [
    "CCD_STREAK_DEPTH", "GalaxyAnomaly", "LOOKBACK_S", "MAX_PAIRS", "OpsSnapshot", "PairState", "ProblemExposure",
    "ccd_streaks", "flag_ccds", "flag_names", "ops_snapshot", "pair_states", "recent_galaxy_anomalies",
    "recent_problem_exposures",
]

LOOKBACK_S = 24 * 3600.0
"""Seconds of received exposures any query looks at (a night and a day): bounds every scan."""

RECENT_VERDICT_S = 15 * 60.0
"""Seconds a ``bad``/``warn`` verdict stays listed by :func:`recent_problem_exposures`."""

MAX_RECENT_VERDICTS = 50
"""Most ``bad``/``warn`` exposures listed (newest first)."""

CCD_STREAK_DEPTH = 20
"""Judged exposures of a pair looked back over to count consecutive flags of a CCD."""

MAX_PAIRS = 100
"""Most (instrument, band) pairs read per snapshot."""

RECENT_GALAXY_S = 3600.0
"""Seconds of galaxy scoring :func:`recent_galaxy_anomalies` looks back over."""

GALAXY_ANOMALY_SIGMA = 3.0
"""s_disc sigma above which a galaxy is an anomaly (seed paper 003 section 4.1)."""

MAX_GALAXIES = 10
"""Most galaxies listed by :func:`recent_galaxy_anomalies`."""

STATEMENT_TIMEOUT_MS = 2000
"""PostgreSQL statement timeout (milliseconds) of an :func:`ops_snapshot` transaction."""

_JUDGED = ("ok", "warn", "bad")
_CALIBRATION = ("ok", "warn", "bad", "calibrating")


@dataclass(frozen=True, slots=True)
class ProblemExposure:
    """One exposure judged ``bad`` or ``warn``: flag names and the CCDs they name, both sorted."""

    exposure_id: str
    instrument: str | None
    band: str | None
    verdict: str
    flags: tuple[str, ...]
    ccds: tuple[str, ...]
    judged_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PairState:
    """Calibration and CCD state of one (instrument, band).

    ``reference_members``: exposures the current reference is built from; ``reference_updated_at``: its
    last rebuild; ``calibrating``: the newest judged exposure got ``calibrating``; ``calibrating_since``:
    verdict time of the first exposure of that run of ``calibrating`` verdicts (None when not
    calibrating); ``ccd_streaks``: CCD -> how many of the newest judged exposures, without a gap, name it
    in a flag (only CCDs the newest one names).
    """

    instrument: str
    band: str
    reference_members: int
    reference_updated_at: dt.datetime
    calibrating: bool = False
    calibrating_since: dt.datetime | None = None
    ccd_streaks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GalaxyAnomaly:
    """One anomalous galaxy: its id, exposure, instrument/band and s_disc sigma."""

    galaxy_id: int
    exposure_id: str
    instrument: str | None
    band: str | None
    s_disc_sigma: float


@dataclass(frozen=True, slots=True)
class OpsSnapshot:
    """Everything :mod:`obsqc.service.ops_metrics` exports, read in one transaction."""

    problems: list[ProblemExposure]
    pairs: list[PairState]
    galaxies: list[GalaxyAnomaly]


def flag_names(flags: Iterable | None) -> tuple[str, ...]:
    """Sorted distinct names of stored flags (objects with ``name``, or plain names)."""
    names = set()
    for flag in flags or ():
        name = flag.get("name") if isinstance(flag, dict) else flag
        if name:
            names.add(str(name))
    return tuple(sorted(names))


def flag_ccds(flags: Iterable | None) -> tuple[str, ...]:
    """Sorted distinct CCDs named by any stored flag (its ``ccds`` list)."""
    ccds = set()
    for flag in flags or ():
        if isinstance(flag, dict):
            ccds.update(str(c) for c in flag.get("ccds") or () if c is not None and str(c))
    return tuple(sorted(ccds))


def ccd_streaks(newest_first: Sequence[Iterable[str]]) -> dict[str, int]:
    """CCD -> length of its run of consecutive exposures naming it, counted back from the newest.

    ``newest_first`` holds the CCDs named by each exposure, newest exposure first. Only CCDs the newest
    exposure names appear (a CCD the newest one does not name has a run of 0).
    """
    if not newest_first:
        return {}
    streaks: dict[str, int] = {}
    alive = set(newest_first[0])
    for ccds in newest_first:
        alive &= set(ccds)
        if not alive:
            break
        for ccd in alive:
            streaks[ccd] = streaks.get(ccd, 0) + 1
    return streaks


def _is(column, value: str):
    """``column == value``; the stored "unknown" pair also matches rows where the header had none."""
    return or_(column == value, column.is_(None)) if value == "unknown" else column == value


def recent_problem_exposures(
    session: Session, *, now: dt.datetime | None = None, within_s: float = RECENT_VERDICT_S,
    limit: int = MAX_RECENT_VERDICTS,
) -> list[ProblemExposure]:
    """Exposures judged ``bad`` or ``warn`` in the last ``within_s`` seconds, newest verdict first."""
    now = now or utcnow()
    rows = session.execute(
        select(ExposureRow.id, ExposureRow.instrument, ExposureRow.band, ExposureRow.verdict, ExposureRow.flags,
               ExposureRow.finished_at)
        .where(ExposureRow.received_at >= now - dt.timedelta(seconds=LOOKBACK_S),
               ExposureRow.verdict.in_(("bad", "warn")),
               ExposureRow.finished_at >= now - dt.timedelta(seconds=within_s))
        .order_by(ExposureRow.finished_at.desc(), ExposureRow.id.desc())
        .limit(limit)
    ).all()
    return [ProblemExposure(r.id, r.instrument, r.band, r.verdict, flag_names(r.flags), flag_ccds(r.flags),
                            r.finished_at) for r in rows]


def _pair_state(session: Session, reference: ReferenceRow, now: dt.datetime, depth: int) -> PairState:
    since = now - dt.timedelta(seconds=LOOKBACK_S)
    pair = (_is(ExposureRow.instrument, reference.instrument), _is(ExposureRow.band, reference.band),
            ExposureRow.received_at >= since)
    newest_first = (ExposureRow.received_at.desc(), ExposureRow.id.desc())
    recent = session.execute(
        select(ExposureRow.verdict, ExposureRow.flags, ExposureRow.received_at, ExposureRow.finished_at)
        .where(*pair, ExposureRow.verdict.in_(_CALIBRATION)).order_by(*newest_first).limit(depth)
    ).all()
    calibrating = bool(recent) and recent[0].verdict == "calibrating"
    since_at = None
    if calibrating:
        last_judged = session.execute(
            select(func.max(ExposureRow.received_at)).where(*pair, ExposureRow.verdict.in_(_JUDGED))
        ).scalar_one_or_none()
        run = [*pair, ExposureRow.verdict == "calibrating"]
        if last_judged is not None:
            run.append(ExposureRow.received_at > last_judged)
        # min() keeps the column's type: an aware UTC datetime on every dialect.
        since_at = session.execute(select(func.min(ExposureRow.finished_at)).where(*run)).scalar_one_or_none()
        since_at = since_at or recent[0].finished_at
    judged = [flag_ccds(r.flags) for r in recent if r.verdict in _JUDGED]
    return PairState(reference.instrument, reference.band, int(reference.n_exposures or 0), reference.created_at,
                     calibrating, since_at, ccd_streaks(judged))


def pair_states(session: Session, *, now: dt.datetime | None = None, depth: int = CCD_STREAK_DEPTH,
                max_pairs: int = MAX_PAIRS) -> list[PairState]:
    """The :class:`PairState` of every (instrument, band) with a reference (at most ``max_pairs``)."""
    now = now or utcnow()
    references = session.execute(
        select(ReferenceRow).order_by(ReferenceRow.instrument, ReferenceRow.band).limit(max_pairs)
    ).scalars().all()
    return [_pair_state(session, reference, now, depth) for reference in references]


def recent_galaxy_anomalies(
    session: Session, *, now: dt.datetime | None = None, within_s: float = RECENT_GALAXY_S,
    min_sigma: float = GALAXY_ANOMALY_SIGMA, limit: int = MAX_GALAXIES,
) -> list[GalaxyAnomaly]:
    """The ``limit`` galaxies with the highest s_disc sigma above ``min_sigma`` scored in the last
    ``within_s`` seconds (of exposures received in the lookback), highest first, ties by id."""
    now = now or utcnow()
    recent_exposures = select(ExposureRow.id).where(
        ExposureRow.received_at >= now - dt.timedelta(seconds=LOOKBACK_S))
    rows = session.execute(
        select(GalaxyRow.id, GalaxyRow.exposure_id, GalaxyRow.instrument, GalaxyRow.band, GalaxyRow.s_disc_sigma)
        .where(GalaxyRow.exposure_id.in_(recent_exposures), GalaxyRow.s_disc_sigma > min_sigma,
               GalaxyRow.scored_at >= now - dt.timedelta(seconds=within_s))
        .order_by(GalaxyRow.s_disc_sigma.desc(), GalaxyRow.id.desc())
        .limit(limit)
    ).all()
    return [GalaxyAnomaly(r.id, r.exposure_id, r.instrument, r.band, float(r.s_disc_sigma)) for r in rows]


def ops_snapshot(session: Session, *, now: dt.datetime | None = None) -> OpsSnapshot:
    """All three reads, in the caller's transaction (with a statement timeout on PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}"))
    now = now or utcnow()
    return OpsSnapshot(recent_problem_exposures(session, now=now), pair_states(session, now=now),
                       recent_galaxy_anomalies(session, now=now))
