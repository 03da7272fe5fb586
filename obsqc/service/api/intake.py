"""Accepting an exposure: validate, record (idempotently), queue; and re-queue what Redis lost.

The verdict store is the truth. An exposure is recorded ``queued`` before it is put on the queue, so
when Redis is down the exposure is not lost: the client gets 503 and :func:`requeue_stale` (run at
API start-up) or a re-post of the same exposure queues it later.

A file refused at intake (:class:`InvalidExposureError`) is recorded with the verdict ``rejected``
when its exposure id is known (from the request), so that operators see it. Such an intake rejection
(``status == "rejected"``, never started by a worker: no ``started_at``, no ``attempts``) is the one record a later post of the same
exposure may replace: the file may have been refused because it was still being copied. Every other
existing record is returned as it is, and never gets a second job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError
from rq.job import Job
from sqlalchemy import select

from obsqc.service.api.deps import ApiState
from obsqc.service.api.errors import ApiError
from obsqc.service.api.uploads import SpooledUpload, keep_upload, upload_path_for
from obsqc.service.errors import InvalidExposureError
from obsqc.service.fits_ingest import ExposureHeader, open_exposure
from obsqc.service.queue import enqueue_exposure, job_id_for
from obsqc.service.store import ExposureRow, record_received, record_verdict
from obsqc.service.store.models import utcnow

__all__ = ["MAX_ID_CHARS", "Submission", "accept", "check_exposure_id", "read_header", "record_rejection", "requeue_stale"]

logger = logging.getLogger(__name__)

MAX_ID_CHARS = 128
"""Longest exposure id the store keeps."""


@dataclass
class Submission:
    """The outcome of a post: the stored row, and whether it was queued by this post (202) or known (200)."""

    row: ExposureRow
    created: bool


def check_exposure_id(exposure_id: str) -> str:
    """``exposure_id`` stripped, or :class:`ApiError` 422 ``invalid_exposure_id``."""
    text = exposure_id.strip()
    if not text or len(text) > MAX_ID_CHARS or not text.isprintable():
        raise ApiError(422, "invalid_exposure_id",
                       f"an exposure id must be 1 to {MAX_ID_CHARS} printable characters, got {exposure_id[:40]!r}")
    return text


def read_header(path: str | Path, requested_id: str | None) -> ExposureHeader:
    """The headers of the exposure at ``path`` (no pixels read); ``requested_id`` is used only when the
    file names no exposure id. Raises :class:`InvalidExposureError`."""
    try:
        with open_exposure(path) as reader:
            return reader.header
    except InvalidExposureError as exc:
        if exc.reason != "missing_exposure_id" or requested_id is None:
            raise
    with open_exposure(path, exposure_id=requested_id) as reader:
        return reader.header


def _intake_rejection(row: ExposureRow) -> bool:
    return row.status == "rejected" and row.started_at is None and not row.attempts


def record_rejection(state: ApiState, exposure_id: str, exc: InvalidExposureError, path: str | None) -> None:
    """Record ``exposure_id`` as ``rejected`` for ``exc``, unless it is already known otherwise."""
    try:
        with state.sessions.begin() as session:
            row, existed = record_received(session, exposure_id, path=path)
            if existed and not _intake_rejection(row):
                logger.info("exposure %s: refused file (%s) not recorded: the exposure is already %s",
                            exposure_id, exc.reason, row.status)
                return
            record_verdict(session, exposure_id, verdict="rejected", score=None, reason=f"{exc.reason}: {exc.message}",
                           flags=[{"name": "rejected", "reason": exc.reason}])  # as the worker records it
    except Exception:  # noqa: BLE001 - the client still gets its 422; the store problem goes to the log
        logger.exception("exposure %s: could not record the rejection (%s)", exposure_id, exc.reason)
        return
    logger.warning("exposure %s rejected at intake: %s", exposure_id, exc)
    state.metrics.exposure_judged(instrument="unknown", band="unknown", verdict="rejected", latency_s=None,
                                  step_s={}, sigmas={}, flagged_ccds=())


def _reopen(row: ExposureRow, header: ExposureHeader, path: str) -> None:
    """Turn an intake rejection back into a fresh ``queued`` record for a file that now reads."""
    row.status, row.verdict, row.reason, row.flags = "queued", None, None, []
    row.finished_at = row.started_at = None
    row.path, row.instrument, row.band = path, header.instrument, header.band
    row.mjd, row.exptime_s = header.mjd, header.exptime_s
    row.received_at = utcnow()


def accept(state: ApiState, header: ExposureHeader, path: str | None, spooled: SpooledUpload | None = None) -> Submission:
    """Record the exposure of ``header`` and queue it unless it is already known.

    ``path`` is the file on the shared storage, or None for an upload (``spooled``), which is then kept
    under :func:`upload_path_for` when it is new and deleted otherwise. Raises :class:`ApiError` 503
    when Redis cannot take the job (the exposure stays recorded as ``queued``).
    """
    settings = state.settings
    upload_dir = settings.home / "uploads"
    exposure_id = check_exposure_id(header.exposure_id)
    stored_path = str(upload_path_for(upload_dir, exposure_id)) if spooled is not None else str(path)
    kept = False
    try:
        with state.sessions.begin() as session:
            row, existed = record_received(session, exposure_id, path=stored_path, instrument=header.instrument,
                                           band=header.band, mjd=header.mjd, exptime_s=header.exptime_s)
            created = not existed
            if existed and _intake_rejection(row):
                _reopen(row, header, stored_path)
                created = True
            if spooled is not None and created:
                keep_upload(spooled, upload_dir, exposure_id)
                kept = True
    except BaseException:
        if kept:
            Path(stored_path).unlink(missing_ok=True)
        raise
    finally:
        if spooled is not None:
            spooled.discard()  # gone already when kept (renamed)
    if created:
        state.metrics.exposure_received(header.instrument, header.band)
        logger.info("exposure %s received (%s/%s) from %s", exposure_id, header.instrument, header.band, stored_path)
    if created or row.status == "queued":
        try:
            enqueue_exposure(state.queue, exposure_id, row.path, settings)
        except RedisError as exc:
            logger.error("exposure %s recorded but not queued: Redis unreachable (%s)", exposure_id, exc)
            raise ApiError(503, "queue_unavailable",
                           f"exposure {exposure_id} is recorded (status queued) but the job queue (Redis) cannot be "
                           f"reached: {exc}. Post it again later; the API also queues it when it restarts") from None
    return Submission(row=row, created=created)


def requeue_stale(state: ApiState, batch: int = 500) -> int:
    """Queue every exposure the store holds as ``queued`` or ``running`` whose job Redis does not know.

    Returns how many were queued. Jobs that Redis still holds (waiting, running, retrying) are left alone.
    """
    with state.sessions() as session:
        rows = session.execute(
            select(ExposureRow.id, ExposureRow.path).where(ExposureRow.status.in_(("queued", "running")))
        ).all()
    queued = 0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        with state.redis.pipeline(transaction=False) as pipe:
            for exposure_id, _ in chunk:
                pipe.exists(Job.key_for(job_id_for(exposure_id)))
            known = pipe.execute()
        for (exposure_id, path), exists in zip(chunk, known):
            if exists:
                continue
            if not path:
                logger.warning("exposure %s is queued in the store but has no path; cannot re-queue it", exposure_id)
                continue
            enqueue_exposure(state.queue, exposure_id, path, state.settings)
            logger.info("exposure %s re-queued: the store says queued, Redis had no job", exposure_id)
            queued += 1
    return queued
