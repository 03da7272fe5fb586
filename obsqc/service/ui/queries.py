"""Store queries of the pages that the JSON API does not offer: newest exposures first (an operator
wants the latest on top, the API lists oldest first for harvesting), the ``queued`` pseudo-verdict
(no verdict yet), counts per verdict, and the instruments and bands known for the filter form.

Paging is by keyset on ``(received_at, id)`` descending: the cursor names the last row shown, so new
exposures arriving at the top never shift the older pages.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from obsqc.service.store import VERDICTS, ExposureRow

__all__ = ["UI_VERDICTS", "ExposureFilter", "NewestPage", "decode_cursor", "encode_cursor", "known_values",
           "newest_exposures", "verdict_counts"]

QUEUED = "queued"
"""The filter value of exposures without a verdict yet (queued or running)."""

UI_VERDICTS = (*VERDICTS, QUEUED)
"""Verdicts offered by the filter form."""


@dataclass(frozen=True)
class ExposureFilter:
    """The filters of the exposure list (None: any)."""

    instrument: str | None = None
    band: str | None = None
    verdict: str | None = None

    def apply(self, query, *, with_verdict: bool = True):
        """``query`` restricted to these filters (``with_verdict=False``: all but the verdict)."""
        if self.instrument is not None:
            query = query.where(ExposureRow.instrument == self.instrument)
        if self.band is not None:
            query = query.where(ExposureRow.band == self.band)
        if with_verdict and self.verdict == QUEUED:
            query = query.where(ExposureRow.verdict.is_(None))
        elif with_verdict and self.verdict is not None:
            query = query.where(ExposureRow.verdict == self.verdict)
        return query


@dataclass(frozen=True)
class NewestPage:
    """Rows newest first, and the cursor of the next (older) page, None on the last one."""

    rows: list[ExposureRow]
    older: str | None


def encode_cursor(row: ExposureRow) -> str:
    """The cursor of the page after ``row``."""
    raw = json.dumps([row.received_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """The ``(received_at, id)`` of a cursor; ``ValueError`` when this service did not make it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, exposure_id = json.loads(raw)
        when = dt.datetime.fromisoformat(at)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a cursor of this list: {cursor[:40]!r}") from exc
    if not isinstance(exposure_id, str):
        raise ValueError(f"not a cursor of this list: {cursor[:40]!r}")
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)), exposure_id


def newest_exposures(session: Session, filters: ExposureFilter, *, limit: int = 50,
                     older_than: str | None = None) -> NewestPage:
    """A page of exposures, newest received first (ties by id, descending)."""
    query = filters.apply(select(ExposureRow))
    if older_than is not None:
        at, exposure_id = decode_cursor(older_than)
        query = query.where(or_(ExposureRow.received_at < at,
                                and_(ExposureRow.received_at == at, ExposureRow.id < exposure_id)))
    query = query.order_by(ExposureRow.received_at.desc(), ExposureRow.id.desc()).limit(limit + 1)
    rows = list(session.execute(query).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return NewestPage(rows, encode_cursor(rows[-1]) if more and rows else None)


def verdict_counts(session: Session, filters: ExposureFilter, since: dt.datetime | None = None) -> dict[str, int]:
    """Exposures per verdict (``queued`` for none yet) under the instrument and band filters, received at
    or after ``since`` (a window keeps this cheap on a store of years: the index on received_at)."""
    query = filters.apply(select(ExposureRow.verdict, func.count()), with_verdict=False)
    if since is not None:
        query = query.where(ExposureRow.received_at >= since)
    query = query.group_by(ExposureRow.verdict)
    counts = {v: 0 for v in UI_VERDICTS}
    for verdict, n in session.execute(query):
        key = verdict if verdict is not None else QUEUED
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def known_values(session: Session, column) -> list[str]:
    """The distinct non-null values of an exposure column (instrument or band), sorted."""
    rows = session.execute(select(column).where(column.is_not(None)).distinct().order_by(column).limit(500))
    return [v for (v,) in rows]
