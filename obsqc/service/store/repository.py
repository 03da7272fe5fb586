"""Reading and writing the verdict store.

Functions take an open :class:`~sqlalchemy.orm.Session` and never commit: the caller owns the
transaction (``with Session(engine) as s, s.begin(): ...``). Writes are idempotent so that a retried
job or a re-posted exposure never makes a second row. Paging is keyset paging on
``(received_at, id)``, oldest first: a cursor names the last row of the previous page, so rows
inserted meanwhile never shift or repeat a page.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, and_, create_engine, delete, event, or_, select, text, tuple_
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from obsqc.detectors.scoring import ExposureScore, Reference
from obsqc.service.store.models import (
    GALAXIES_STATUSES, GALAXY_SCORES, VERDICTS, CCDResult, ExposureRow, GalaxyRow, GalaxyScoreStats, ReferenceRow,
    utcnow,
)

__all__ = [
    "ExposurePage", "GalaxyPage", "get_exposure", "get_galaxy", "list_exposures", "list_galaxies", "load_reference",
    "load_score_stats", "make_engine", "make_sessionmaker", "record_galaxies", "record_received", "record_verdict",
    "save_reference", "set_galaxies_status", "update_score_stats", "upgrade",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
"""The Alembic environment shipped inside the package."""

_STATUS_OF_VERDICT = {"ok": "done", "warn": "done", "bad": "done", "calibrating": "done",
                      "rejected": "rejected", "error": "error"}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for ``url``; on SQLite with WAL journaling, foreign keys on and a 5 s busy timeout.

    The directory of a SQLite file is created when missing (the default lives under ``OBSQC_HOME``).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine):
    """For a SQLite file: an exclusive ``flock`` on ``<file>.migrate.lock`` while migrating (its readers would
    otherwise all find the tables missing and all create them); for anything else, nothing."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with open(Path(database).expanduser().with_name(Path(database).name + ".migrate.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


MIGRATION_LOCK_KEY: int = 0x6F627371  # "obsq"
"""PostgreSQL advisory-lock key held while migrating: several API replicas or workers starting at once on
an empty database migrate one after another (the later ones find it at head), never side by side."""


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Migrate the database at ``url`` (or behind an engine) to ``revision``; a no-op when already there.

    Safe to call from many processes at once: on PostgreSQL the migration runs under a transaction-level
    advisory lock (:data:`MIGRATION_LOCK_KEY`); on SQLite the first writer's transaction serialises them.
    """
    engine = make_engine(url) if isinstance(url, str) else url
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        with _sqlite_file_lock(engine), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if isinstance(url, str):
            engine.dispose()


def _finite(x: float | None) -> float | None:
    """NaN and infinities are stored as NULL (SQLite would do so anyway; PostgreSQL would not)."""
    return None if x is None or not math.isfinite(x) else float(x)


def record_received(
    session: Session,
    exposure_id: str,
    *,
    path: str | None = None,
    instrument: str | None = None,
    band: str | None = None,
    mjd: float | None = None,
    exptime_s: float | None = None,
    received_at: dt.datetime | None = None,
) -> tuple[ExposureRow, bool]:
    """Record that ``exposure_id`` was received (status ``queued``).

    Idempotent: returns ``(row, existed)``; when the id is already stored, the stored row is returned
    unchanged and ``existed`` is True. Safe against a concurrent insert of the same id.
    """
    values = dict(id=exposure_id, path=path, instrument=instrument, band=band, mjd=_finite(mjd),
                  exptime_s=_finite(exptime_s), status="queued", flags=[],
                  received_at=received_at or utcnow())
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        statement = insert(ExposureRow).values(**values).on_conflict_do_nothing(index_elements=["id"])
        existed = session.execute(statement.returning(ExposureRow.id)).first() is None
        row = session.execute(
            select(ExposureRow).where(ExposureRow.id == exposure_id).execution_options(populate_existing=True)
        ).scalar_one()
        return row, existed
    row = session.get(ExposureRow, exposure_id)
    if row is not None:
        return row, True
    row = ExposureRow(**values)
    session.add(row)
    session.flush()
    return row, False


def record_verdict(
    session: Session,
    exposure_id: str,
    *,
    verdict: str,
    flags: list | tuple = (),
    score: ExposureScore | None,
    reason: str | None = None,
    started_at: dt.datetime | None = None,
    finished_at: dt.datetime | None = None,
    timings: dict[str, float] | None = None,
    attempts: int | None = None,
    autoencoder_mse: float | None = None,
    autoencoder_sigma: float | None = None,
    n_stamps: int | None = None,
    galaxies_status: str | None = None,
) -> ExposureRow:
    """Store the verdict of ``exposure_id`` with its scores and per-CCD rows.

    Idempotent: a second call overwrites the same row and replaces its CCD rows. The status follows
    the verdict (``rejected`` and ``error`` keep their name, every other verdict means ``done``). An
    exposure never received is created (and logged), so that no verdict is lost. ``flags`` is a list of
    JSON-ready flags (names, or objects with ``name``, ``sigma``, ``ccds`` and ``reason``).

    ``autoencoder_mse`` (mean reconstruction MSE of the source stamps, seed paper 000 section 4),
    ``autoencoder_sigma`` (the same in sigma units) and ``n_stamps`` are overwritten like every score
    (None clears them). ``galaxies_status`` (one of :data:`GALAXIES_STATUSES`, typically ``pending``
    when galaxy scoring is queued, or ``none``) is set when given and left alone when None, so a
    repeated verdict does not hide galaxies already scored.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if galaxies_status is not None and galaxies_status not in GALAXIES_STATUSES:
        raise ValueError(f"galaxies_status {galaxies_status!r} is not one of {', '.join(GALAXIES_STATUSES)}")
    row = session.get(ExposureRow, exposure_id, with_for_update=True, populate_existing=True)
    if row is None:
        logger.warning("verdict for exposure %s that was never received; creating its row", exposure_id)
        row, _ = record_received(session, exposure_id)
        row = session.get(ExposureRow, exposure_id, with_for_update=True, populate_existing=True)
    row.verdict = verdict
    row.status = _STATUS_OF_VERDICT[verdict]
    row.flags = list(flags)
    row.reason = reason
    if started_at is not None:
        row.started_at = started_at
    row.finished_at = finished_at or utcnow()
    row.n_sources = score.n_sources if score is not None else None
    row.n_ccds = score.n_ccds if score is not None else None
    row.timings = {k: round(float(v), 6) for k, v in timings.items()} if timings else None
    if attempts is not None:
        row.attempts = attempts
    row.autoencoder_mse = _finite(autoencoder_mse)
    row.autoencoder_sigma = _finite(autoencoder_sigma)
    row.n_stamps = None if n_stamps is None else int(n_stamps)
    if galaxies_status is not None:
        row.galaxies_status = galaxies_status
        row.galaxies_reason = None
    for name in ("source", "profile", "background", "large_scale", "line"):
        indicator = getattr(score, name) if score is not None else None
        raw_column = "line_z" if name == "line" else f"{name}_kl"
        setattr(row, raw_column, _finite(indicator.kl) if indicator else None)
        setattr(row, f"{name}_sigma", _finite(indicator.sigma) if indicator else None)
    # Delete explicitly before inserting: the unit of work would insert the new rows first and trip
    # the (exposure_id, ccd) unique constraint.
    session.execute(delete(CCDResult).where(CCDResult.exposure_id == exposure_id))
    session.expire(row, ["ccds"])
    row.ccds = [
        CCDResult(ccd=c.name, background_kl=_finite(c.background.kl), background_sigma=_finite(c.background.sigma),
                  large_scale_sigma=_finite(c.large_scale.sigma), n_sources=c.n_sources)
        for c in (score.ccds if score is not None else ())
    ]
    session.flush()
    return row


def get_exposure(session: Session, exposure_id: str) -> ExposureRow | None:
    """The row of ``exposure_id`` (with its CCD rows), or None."""
    return session.get(ExposureRow, exposure_id)


@dataclass(frozen=True, slots=True)
class ExposurePage:
    """One page of :func:`list_exposures`; ``next_cursor`` is None on the last page."""

    items: list[ExposureRow]
    next_cursor: str | None


def _encode_cursor(row: ExposureRow) -> str:
    raw = json.dumps([row.received_at.astimezone(dt.UTC).isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, exposure_id = json.loads(raw)
        when = dt.datetime.fromisoformat(stamp)
        if when.tzinfo is None or not isinstance(exposure_id, str):
            raise ValueError("malformed")
        return when, exposure_id
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cursor {cursor!r} is not one this service issued; start again without a cursor") from exc


def list_exposures(
    session: Session,
    *,
    instrument: str | None = None,
    band: str | None = None,
    verdict: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> ExposurePage:
    """Exposures matching the filters, oldest received first (ties by id), ``limit`` per page.

    ``since`` is inclusive and ``until`` exclusive, both on ``received_at``. Pass the returned
    ``next_cursor`` to get the next page; a malformed cursor raises ``ValueError``.
    """
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    query = select(ExposureRow)
    if instrument is not None:
        query = query.where(ExposureRow.instrument == instrument)
    if band is not None:
        query = query.where(ExposureRow.band == band)
    if verdict is not None:
        query = query.where(ExposureRow.verdict == verdict)
    if since is not None:
        query = query.where(ExposureRow.received_at >= since)
    if until is not None:
        query = query.where(ExposureRow.received_at < until)
    if cursor is not None:
        after_at, after_id = _decode_cursor(cursor)
        query = query.where(or_(ExposureRow.received_at > after_at,
                                and_(ExposureRow.received_at == after_at, ExposureRow.id > after_id)))
    query = query.order_by(ExposureRow.received_at, ExposureRow.id).limit(limit + 1)
    rows = list(session.execute(query).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return ExposurePage(rows, _encode_cursor(rows[-1]) if more else None)


def save_reference(session: Session, instrument: str, band: str, reference: Reference) -> ReferenceRow:
    """Store the reference of (instrument, band), replacing any earlier one.

    An upsert on SQLite and PostgreSQL, so two workers creating the first reference of the same
    (instrument, band) at once both succeed (the later write wins) instead of one failing.
    """
    values = dict(instrument=instrument, band=band, payload=reference.to_json(), n_exposures=reference.n_exposures,
                  created_at=utcnow())
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        statement = insert(ReferenceRow).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["instrument", "band"],
            set_={k: statement.excluded[k] for k in ("payload", "n_exposures", "created_at")},
        )
        session.execute(statement)
        return session.execute(
            select(ReferenceRow).where(ReferenceRow.instrument == instrument, ReferenceRow.band == band)
            .execution_options(populate_existing=True)
        ).scalar_one()
    row = session.execute(
        select(ReferenceRow).where(ReferenceRow.instrument == instrument, ReferenceRow.band == band)
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        row = ReferenceRow(instrument=instrument, band=band)
        session.add(row)
    for key, value in values.items():
        setattr(row, key, value)
    session.flush()
    return row


def load_reference(session: Session, instrument: str, band: str) -> Reference | None:
    """The stored reference of (instrument, band), or None."""
    payload = session.execute(
        select(ReferenceRow.payload).where(ReferenceRow.instrument == instrument, ReferenceRow.band == band)
    ).scalar_one_or_none()
    return None if payload is None else Reference.from_json(payload)


# ---- galaxies (seed paper 003) --------------------------------------------------------------------


def _dialect_insert(session: Session):
    """The dialect's ``insert`` with ``ON CONFLICT`` support (SQLite, PostgreSQL), else None."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
        return insert
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        return insert
    return None


def _chunks(items: Sequence, size: int = 500):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _mean_std(n: float, mean: float, m2: float) -> tuple[float, float]:
    if n <= 0:
        return math.nan, math.nan
    return float(mean), math.sqrt(max(float(m2), 0.0) / n)


def update_score_stats(
    session: Session,
    instrument: str,
    band: str,
    scores: Mapping[str, np.ndarray],
    *,
    prior: Mapping[str, tuple[float, float]] | None = None,
    prior_weight: float = 100.0,
) -> dict[str, tuple[float, float]]:
    """Merge a batch of galaxy scores into the running distribution of (instrument, band).

    Seed paper 003 section 4.1 reports every score "by their number of standard deviations from the
    mean" of the sample; a service sees the sample grow, so it keeps per (instrument, band, score) the
    weight ``n``, the mean and ``m2`` (sum of squared deviations) and merges each batch with Chan et
    al.'s parallel update: ``n = na + nb``, ``delta = mean_b - mean_a``, ``mean = mean_a + delta nb / n``,
    ``m2 = m2_a + m2_b + delta^2 na nb / n``. The rows are locked (``SELECT ... FOR UPDATE`` on
    PostgreSQL; SQLite serialises writers) until the caller's transaction ends, so two workers merging
    at once both count.

    ``scores`` maps a name of :data:`GALAXY_SCORES` to the batch's raw scores (non-finite values are
    skipped). A (instrument, band, score) seen for the first time starts from ``prior[name] = (mean,
    std)`` (e.g. measured on the model's validation set) with weight ``prior_weight``, so the first
    small batches are not judged against themselves alone; without a prior it starts empty. Returns,
    per name in ``scores``, ``(mean, std)`` after the merge (std = ``sqrt(m2 / n)``; NaN while empty):
    the sigma of a score is ``(score - mean) / std``.
    """
    unknown = sorted(set(scores) - set(GALAXY_SCORES))
    if unknown:
        raise ValueError(f"unknown score(s) {', '.join(map(repr, unknown))}; expected {', '.join(GALAXY_SCORES)}")
    if not (math.isfinite(prior_weight) and prior_weight >= 0):
        raise ValueError(f"prior_weight must be finite and >= 0, got {prior_weight}")
    names = sorted(scores)
    if not names:
        return {}
    now = utcnow()
    initial = []
    for name in names:
        n0, mean0, m20 = 0.0, 0.0, 0.0
        if prior is not None and name in prior and prior_weight > 0:
            mean0, std0 = (float(v) for v in prior[name])
            if not (math.isfinite(mean0) and math.isfinite(std0) and std0 >= 0):
                raise ValueError(f"prior of {name} must be a finite (mean, std >= 0), got {prior[name]!r}")
            n0, m20 = float(prior_weight), std0 * std0 * float(prior_weight)
        initial.append(dict(instrument=instrument, band=band, score=name, n=n0, mean=mean0, m2=m20, updated_at=now))
    insert = _dialect_insert(session)
    if insert is not None:
        # Create missing rows first (a no-op when they exist; waits for a concurrent creator), then lock.
        session.execute(insert(GalaxyScoreStats).values(initial)
                        .on_conflict_do_nothing(index_elements=["instrument", "band", "score"]))
    query = (select(GalaxyScoreStats)
             .where(GalaxyScoreStats.instrument == instrument, GalaxyScoreStats.band == band,
                    GalaxyScoreStats.score.in_(names))
             .order_by(GalaxyScoreStats.score).with_for_update().execution_options(populate_existing=True))
    rows = {row.score: row for row in session.execute(query).scalars()}
    for values in initial:
        if values["score"] not in rows:  # dialects without ON CONFLICT
            rows[values["score"]] = GalaxyScoreStats(**values)
            session.add(rows[values["score"]])
    out: dict[str, tuple[float, float]] = {}
    for name in names:
        row = rows[name]
        batch = np.asarray(scores[name], dtype=np.float64).ravel()
        batch = batch[np.isfinite(batch)]
        if batch.size:
            nb = float(batch.size)
            mean_b = float(batch.mean())
            m2_b = float(np.square(batch - mean_b).sum())
            na, mean_a, m2_a = float(row.n), float(row.mean), float(row.m2)
            n = na + nb
            delta = mean_b - mean_a
            row.n = n
            row.mean = mean_a + delta * nb / n
            row.m2 = m2_a + m2_b + delta * delta * na * nb / n
            row.updated_at = now
        out[name] = _mean_std(row.n, row.mean, row.m2)
    session.flush()
    return out


def load_score_stats(session: Session, instrument: str, band: str) -> dict[str, tuple[float, float]]:
    """``(mean, std)`` of each score stored for (instrument, band) (see :func:`update_score_stats`)."""
    rows = session.execute(select(GalaxyScoreStats).where(GalaxyScoreStats.instrument == instrument,
                                                          GalaxyScoreStats.band == band)).scalars()
    return {row.score: _mean_std(row.n, row.mean, row.m2) for row in rows}


_GALAXY_VALUES = ("instrument", "band", "ccd", "x", "y", *GALAXY_SCORES,
                  *(f"{score}_sigma" for score in GALAXY_SCORES), "scored_at")
"""Columns a re-run of the scoring overwrites (everything but the id and the key)."""


def _galaxy_values(exposure: ExposureRow, galaxy: Mapping, scored_at: dt.datetime) -> dict:
    try:
        idx, x, y = galaxy["idx"], galaxy["x"], galaxy["y"]
    except KeyError as exc:
        raise ValueError(f"a galaxy needs idx, x and y; {exc.args[0]!r} is missing") from None
    try:
        valid = not isinstance(idx, bool) and int(idx) == idx and idx >= 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"galaxy idx must be an integer >= 0, got {idx!r}")
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        raise ValueError(f"galaxy {idx}: position ({x!r}, {y!r}) is not a pair of numbers") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"galaxy {idx}: position ({x}, {y}) is not finite")
    ccd = galaxy.get("ccd")
    values = dict(exposure_id=exposure.id, idx=int(idx), instrument=exposure.instrument, band=exposure.band,
                  ccd=None if ccd is None else str(ccd), x=float(x), y=float(y),
                  scored_at=galaxy.get("scored_at") or scored_at)
    for score in GALAXY_SCORES:
        values[score] = _finite(galaxy.get(score))
        values[f"{score}_sigma"] = _finite(galaxy.get(f"{score}_sigma"))
    return values


def record_galaxies(
    session: Session, exposure_id: str, galaxies: Sequence[Mapping], *, anomaly_sigma: float = 3.0,
) -> int:
    """Store the scored galaxies of ``exposure_id``; returns how many are anomalies (``n_galaxy_anomalies``).

    Each galaxy is a mapping with ``idx`` (its row in the exposure's ``galaxies.npz``), ``ccd``, ``x``,
    ``y`` (0-based pixels, x along NAXIS1), the raw scores ``s_gen``, ``s_disc``, ``s_anom`` (seed paper
    003 section 3.2) and their sigmas ``s_gen_sigma``, ``s_disc_sigma``, ``s_anom_sigma`` (section 4.1,
    from :func:`update_score_stats`), optionally ``scored_at`` (default now). Non-finite scores are
    stored as NULL.

    Idempotent: an upsert on ``(exposure_id, idx)``, so a re-run keeps the galaxy ids (links stay
    valid); rows of the exposure whose idx is not in ``galaxies`` are deleted. The exposure row (locked
    first, so two runs of the same exposure do not interleave) gets ``galaxies_status='done'``,
    ``n_galaxies`` and ``n_galaxy_anomalies``, the number with ``s_disc_sigma > anomaly_sigma`` (the
    high-anomaly sample of section 4.1 selects on s_disc), through the ORM so its revision moves.
    Raises ``ValueError`` for an unknown exposure or a malformed galaxy (nothing is written then).
    """
    exposure = session.get(ExposureRow, exposure_id, with_for_update=True, populate_existing=True)
    if exposure is None:
        raise ValueError(f"no exposure {exposure_id!r}: record it before its galaxies")
    now = utcnow()
    rows = [_galaxy_values(exposure, g, now) for g in galaxies]
    wanted = {r["idx"] for r in rows}
    if len(wanted) != len(rows):
        raise ValueError(f"exposure {exposure_id!r}: galaxy idx values repeat")
    existing = set(session.execute(select(GalaxyRow.idx).where(GalaxyRow.exposure_id == exposure_id)).scalars())
    for chunk in _chunks(sorted(existing - wanted)):
        session.execute(delete(GalaxyRow).where(GalaxyRow.exposure_id == exposure_id, GalaxyRow.idx.in_(chunk))
                        .execution_options(synchronize_session=False))
    insert = _dialect_insert(session)
    if insert is not None:
        for chunk in _chunks(rows):
            statement = insert(GalaxyRow).values(chunk)
            statement = statement.on_conflict_do_update(
                index_elements=["exposure_id", "idx"], set_={k: statement.excluded[k] for k in _GALAXY_VALUES})
            session.execute(statement)
    else:
        stored = {g.idx: g for g in session.execute(
            select(GalaxyRow).where(GalaxyRow.exposure_id == exposure_id)).scalars()}
        for values in rows:
            row = stored.get(values["idx"])
            if row is None:
                session.add(GalaxyRow(**values))
            else:
                for key in _GALAXY_VALUES:
                    setattr(row, key, values[key])
    exposure.galaxies_status = "done"
    exposure.galaxies_reason = None
    exposure.n_galaxies = len(rows)
    exposure.n_galaxy_anomalies = sum(1 for r in rows if r["s_disc_sigma"] is not None
                                      and r["s_disc_sigma"] > anomaly_sigma)
    session.flush()
    return exposure.n_galaxy_anomalies


def set_galaxies_status(session: Session, exposure_id: str, status: str, reason: str | None = None) -> ExposureRow:
    """Set where the galaxy scoring of ``exposure_id`` stands (:data:`GALAXIES_STATUSES`) and why.

    Through the ORM, so the row's revision moves and cached records show it. ``pending``: queued for
    scoring; ``error``: scoring failed (``reason`` says why); ``none``: nothing to score. ``done`` is
    normally set by :func:`record_galaxies`. Counts of an earlier run are left as they are. Raises
    ``ValueError`` for an unknown status or exposure.
    """
    if status not in GALAXIES_STATUSES:
        raise ValueError(f"galaxies status {status!r} is not one of {', '.join(GALAXIES_STATUSES)}")
    row = session.get(ExposureRow, exposure_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise ValueError(f"no exposure {exposure_id!r}")
    row.galaxies_status = status
    row.galaxies_reason = reason
    session.flush()
    return row


def get_galaxy(session: Session, galaxy_id: int) -> GalaxyRow | None:
    """The galaxy with id ``galaxy_id``, or None."""
    return session.get(GalaxyRow, galaxy_id)


@dataclass(frozen=True, slots=True)
class GalaxyPage:
    """One page of :func:`list_galaxies`; ``next_cursor`` is None on the last page."""

    items: list[GalaxyRow]
    next_cursor: str | None


def _encode_galaxy_cursor(sort: str, sigma: float, galaxy_id: int) -> str:
    raw = json.dumps(["g", sort, sigma, galaxy_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_galaxy_cursor(cursor: str, sort: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tag, cursor_sort, sigma, galaxy_id = json.loads(raw)
        if (tag != "g" or not isinstance(sigma, (int, float)) or isinstance(sigma, bool)
                or not isinstance(galaxy_id, int) or isinstance(galaxy_id, bool) or not math.isfinite(sigma)):
            raise ValueError("malformed")
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cursor {cursor!r} is not one this service issued; start again without a cursor") from exc
    if cursor_sort != sort:
        raise ValueError(f"cursor {cursor!r} pages a list sorted by {cursor_sort}, not {sort}; "
                         "start again without a cursor")
    return float(sigma), galaxy_id


def list_galaxies(
    session: Session,
    *,
    instrument: str | None = None,
    band: str | None = None,
    exposure_id: str | None = None,
    min_sigma: float | None = None,
    sort: str = "s_disc",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> GalaxyPage:
    """Galaxies matching the filters, most anomalous first by ``sort``'s sigma (seed paper 003 section
    4.1), ties by id (highest first), ``limit`` per page.

    ``sort`` is one of :data:`GALAXY_SCORES` (default ``s_disc``, the score the paper's high-anomaly
    sample ``s_disc > 3 sigma`` selects on); ``min_sigma`` keeps galaxies whose sigma of that score is
    >= it; galaxies without a sigma for that score (a non-finite score) are not listed. ``since``
    (inclusive) and ``until`` (exclusive) bound ``scored_at``. Keyset paging: pass the returned
    ``next_cursor`` (bound to ``sort``) for the next page; a malformed cursor, an unknown sort or a limit
    outside 1..1000 raises ``ValueError``.
    """
    if sort not in GALAXY_SCORES:
        raise ValueError(f"sort {sort!r} is not one of {', '.join(GALAXY_SCORES)}")
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    sigma = getattr(GalaxyRow, f"{sort}_sigma")
    query = select(GalaxyRow).where(sigma.is_not(None))
    if instrument is not None:
        query = query.where(GalaxyRow.instrument == instrument)
    if band is not None:
        query = query.where(GalaxyRow.band == band)
    if exposure_id is not None:
        query = query.where(GalaxyRow.exposure_id == exposure_id)
    if min_sigma is not None:
        if not math.isfinite(min_sigma):
            raise ValueError(f"min_sigma must be finite, got {min_sigma}")
        query = query.where(sigma >= min_sigma)
    if since is not None:
        query = query.where(GalaxyRow.scored_at >= since)
    if until is not None:
        query = query.where(GalaxyRow.scored_at < until)
    if cursor is not None:
        after_sigma, after_id = _decode_galaxy_cursor(cursor, sort)
        query = query.where(tuple_(sigma, GalaxyRow.id) < tuple_(after_sigma, after_id))
    query = query.order_by(sigma.desc(), GalaxyRow.id.desc()).limit(limit + 1)
    rows = list(session.execute(query).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_galaxy_cursor(sort, getattr(rows[-1], f"{sort}_sigma"), rows[-1].id) if more else None
    return GalaxyPage(rows, next_cursor)
