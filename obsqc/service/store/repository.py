"""Reading and writing the verdict store.

Functions take an open :class:`~sqlalchemy.orm.Session` and never commit: the caller owns the
transaction (``with Session(engine) as s, s.begin(): ...``). Writes are idempotent so that a retried
job or a re-posted exposure never makes a second row. Paging is keyset paging on
``(received_at, id)``, oldest first: a cursor names the last row of the previous page, so rows
inserted meanwhile never shift or repeat a page.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, and_, create_engine, delete, event, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from obsqc.detectors.scoring import ExposureScore, Reference
from obsqc.service.store.models import VERDICTS, CCDResult, ExposureRow, ReferenceRow, utcnow

__all__ = [
    "ExposurePage", "get_exposure", "list_exposures", "load_reference", "make_engine", "make_sessionmaker",
    "record_received", "record_verdict", "save_reference", "upgrade",
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


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Migrate the database at ``url`` (or behind an engine) to ``revision``; a no-op when already there."""
    engine = make_engine(url) if isinstance(url, str) else url
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        with engine.begin() as connection:
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
) -> ExposureRow:
    """Store the verdict of ``exposure_id`` with its scores and per-CCD rows.

    Idempotent: a second call overwrites the same row and replaces its CCD rows. The status follows
    the verdict (``rejected`` and ``error`` keep their name, every other verdict means ``done``). An
    exposure never received is created (and logged), so that no verdict is lost. ``flags`` is a list of
    JSON-ready flags (names, or objects with ``name``, ``sigma``, ``ccds`` and ``reason``).
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
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
