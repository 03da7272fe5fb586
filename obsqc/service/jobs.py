"""The worker job: judge one exposure, from its file to a stored verdict.

``process_exposure(exposure_id, path)`` is what RQ runs for every job of queue ``qc``
(:mod:`obsqc.service.queue`). It reads the multi-extension FITS file, runs the Entropy Method
detectors on every CCD (:mod:`obsqc.service.measure`), scores the exposure against the reference of
its instrument and band (:mod:`obsqc.service.calibration`), judges it (:mod:`obsqc.service.verdict`),
and writes the verdict idempotently (:func:`obsqc.service.store.record_verdict`): a job run twice, or
retried after its verdict was already committed, leaves exactly one verdict.

Failure policy:

* a bad file (:class:`~obsqc.service.errors.InvalidExposureError`) is **rejected** at once with its
  reason code: retrying would not fix it, and it never takes a worker down;
* any other exception fails the attempt; RQ retries it with back-off (``job_retries``,
  ``retry_backoff_s``); the failure callback :func:`on_job_failure`, and the handler of a work horse
  killed by a signal (:func:`on_work_horse_killed`), record the verdict ``error`` with the reason once
  the last retry has failed. A job whose worker vanished (``AbandonedJobError``) is retried by RQ's
  registry cleanup in another worker.

The per-process state (settings, database engine, metrics) is built once per process by
:func:`worker_context` (RQ calls job functions with their arguments only); the worker main process
builds it before forking, and each forked work horse opens its own database connections.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.scoring import INDICATOR_NAMES, ExposureScore, Reference, score_exposure
from obsqc.service.calibration import add_member, member_count, rebuild_reference
from obsqc.service.errors import InvalidExposureError
from obsqc.service.measure import MeasuredExposure, measure_file
from obsqc.service.queue import job_id_for
from obsqc.service.settings import Settings, get_settings
from obsqc.service.store import ExposureRow, load_reference, make_engine, make_sessionmaker, record_verdict
from obsqc.service.store.models import utcnow
from obsqc.service.verdict import FLAG_NAMES, Verdict, judge

__all__ = ["WorkerContext", "on_job_failure", "on_work_horse_killed", "process_exposure", "worker_context"]

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"
"""Instrument or band of an exposure whose header names none (it still gets a reference of its own)."""


@dataclass
class WorkerContext:
    """What a worker process needs to run jobs: settings, detector parameters, metrics, and a
    database session factory opened lazily per process id (an engine must not cross a fork)."""

    settings: Settings
    params: DetectorParams = field(default_factory=DetectorParams)
    metrics: object | None = None
    _sessions: dict = field(default_factory=dict)

    def sessions(self):
        """The session factory of this process (created on first use after a fork)."""
        pid = os.getpid()
        if pid not in self._sessions:
            self._sessions.clear()  # the parent's engine belongs to the parent
            self._sessions[pid] = make_sessionmaker(make_engine(self.settings.database_url))
        return self._sessions[pid]


_CONTEXT: list[WorkerContext] = []  # at most one per process; set by prepare_worker or on first job


def prepare_worker(settings: Settings, *, identity: str, metrics: bool = True) -> WorkerContext:
    """Build this process's :class:`WorkerContext` (call in the worker main process, before forking)."""
    service_metrics = None
    if metrics:
        from obsqc.service.metrics import setup_metrics

        service_metrics = setup_metrics(Path(settings.metrics_dir), identity)
    _CONTEXT[:] = [WorkerContext(settings=settings, metrics=service_metrics)]
    return _CONTEXT[0]


def worker_context() -> WorkerContext:
    """This process's context; built from the environment's settings when none was prepared."""
    if not _CONTEXT:
        prepare_worker(get_settings(), identity=f"pid-{os.getpid()}")
    return _CONTEXT[0]


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _already_judged(ctx: WorkerContext, exposure_id: str) -> dict | None:
    """The summary of an exposure that already has its verdict (a duplicate run is a no-op)."""
    with ctx.sessions()() as session:
        row = session.get(ExposureRow, exposure_id)
        if row is not None and row.verdict is not None:
            return {"exposure_id": exposure_id, "verdict": row.verdict, "duplicate": True}
    return None


def _mark_running(ctx: WorkerContext, exposure_id: str) -> int:
    """Mark the exposure running and count the attempt; returns the attempt number (1, 2, ...).

    Counted in the store, not in the RQ job, so a work horse killed mid-job still counts.
    """
    with ctx.sessions()() as session, session.begin():
        row = session.get(ExposureRow, exposure_id, with_for_update=True)
        if row is None:
            return 1
        row.status = "running"
        row.started_at = row.started_at or utcnow()
        row.attempts = (row.attempts or 0) + 1
        return row.attempts


def _score_and_judge(
    ctx: WorkerContext, session, measured: MeasuredExposure, instrument: str, band: str
) -> tuple[ExposureScore, Verdict, Reference, bool]:
    """Score against the reference of (instrument, band) and judge; offer the exposure to the reference
    by the rule of :mod:`obsqc.service.calibration` (while calibrating, or when judged ok).

    While calibrating the reference is rebuilt at once (it is small); once ready, every
    ``reference_rebuild_every``-th new member makes the last value True: rebuild after the verdict is
    stored, so that the verdict never waits for it.
    """
    s, stats = ctx.settings, measured.stats
    reference = load_reference(session, instrument, band)
    calibrating = reference is None or reference.n_exposures < s.min_reference_exposures
    if calibrating:
        add_member(session, instrument, band, stats, source="live")
        reference = rebuild_reference(session, instrument, band, window=s.reference_window,
                                      warn_sigma=s.warn_sigma, params=ctx.params).reference
    score = score_exposure(stats, reference, ctx.params)
    verdict = judge(score, warn_sigma=s.warn_sigma, bad_sigma=s.bad_sigma,
                    reference_exposures=reference.n_exposures, min_reference_exposures=s.min_reference_exposures)
    rebuild_due = False
    if not calibrating and verdict.verdict == "ok" and add_member(session, instrument, band, stats, source="live"):
        rebuild_due = member_count(session, instrument, band) % s.reference_rebuild_every == 0
    return score, verdict, reference, rebuild_due


def _write_plots(ctx: WorkerContext, measured: MeasuredExposure, score: ExposureScore, reference: Reference,
                 flags: list[str]) -> None:
    """The summary figure of the exposure under ``<home>/artifacts/<job id>/summary.png`` (best effort)."""
    from obsqc.service.plots import plot_exposure
    from obsqc.service.rank import RankRecord

    out_dir = Path(ctx.settings.home) / "artifacts" / job_id_for(measured.stats.exposure_id)
    record = RankRecord(file=measured.header.path, measured=measured, score=score, flags=flags)
    written = plot_exposure(record, reference, out_dir, pseudocount=ctx.params.histogram_pseudocount)
    os.replace(written, out_dir / "summary.png")


def process_exposure(exposure_id: str, path: str) -> dict:
    """Judge one exposure and store its verdict; returns a small JSON-ready summary.

    Raises (so that RQ retries) only on unexpected errors; a bad file is recorded as ``rejected``.
    """
    ctx = worker_context()
    metrics = ctx.metrics
    done = _already_judged(ctx, exposure_id)
    if done is not None:
        logger.info("exposure %s already has its verdict (%s); nothing to do", exposure_id, done["verdict"])
        return done
    attempt = _mark_running(ctx, exposure_id)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        measured = measure_file(path, exposure_id=exposure_id, threads=ctx.settings.worker_threads,
                                params=ctx.params)
    except InvalidExposureError as exc:
        timings["read_measure"] = time.perf_counter() - t0
        return _record_rejected(ctx, exposure_id, exc, timings, attempt)
    timings["read_measure"] = time.perf_counter() - t0
    instrument = measured.header.instrument or UNKNOWN
    band = measured.header.band or UNKNOWN

    t1 = time.perf_counter()
    sessions = ctx.sessions()
    with sessions() as session, session.begin():
        score, verdict, reference, rebuild_due = _score_and_judge(ctx, session, measured, instrument, band)
        timings["score"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        row = record_verdict(
            session, exposure_id, verdict=verdict.verdict, flags=[f.to_dict() for f in verdict.details],
            score=score, reason="; ".join(verdict.reasons) or None, timings=timings, attempts=attempt,
        )
        latency = (row.finished_at - row.received_at).total_seconds() if row.received_at else None
    timings["store"] = time.perf_counter() - t2
    if rebuild_due:
        t3 = time.perf_counter()
        with sessions() as session, session.begin():
            report = rebuild_reference(session, instrument, band, window=ctx.settings.reference_window,
                                       warn_sigma=ctx.settings.warn_sigma, params=ctx.params)
        logger.info("reference %s/%s rebuilt from %d members (%d left out) in %.1f s", instrument, band,
                    report.n_used, len(report.rejected), time.perf_counter() - t3)
    if metrics is not None:
        metrics.exposure_judged(
            instrument=instrument, band=band, verdict=verdict.verdict, latency_s=latency, step_s=timings,
            sigmas={name: getattr(score, name).sigma for name in INDICATOR_NAMES},
            flagged_ccds=[(ccd, f.name) for f in verdict.details for ccd in f.ccds],
        )
    if ctx.settings.write_plots:
        try:
            _write_plots(ctx, measured, score, reference, list(verdict.flags))
        except Exception:  # a figure must never cost a verdict
            logger.exception("exposure %s: could not draw its summary plot", exposure_id)
    logger.info("exposure %s: %s %s (%.2f s)", exposure_id, verdict.verdict, ",".join(verdict.flags),
                sum(timings.values()))
    return {"exposure_id": exposure_id, "verdict": verdict.verdict, "flags": list(verdict.flags),
            "latency_s": _num(latency)}


def _record_rejected(ctx: WorkerContext, exposure_id: str, exc: InvalidExposureError, timings: dict,
                     attempt: int) -> dict:
    logger.warning("exposure %s rejected: %s (%s)", exposure_id, exc.message, exc.reason)
    with ctx.sessions()() as session, session.begin():
        row = record_verdict(session, exposure_id, verdict="rejected", score=None,
                             flags=[{"name": "rejected", "reason": exc.reason}],
                             reason=f"{exc.reason}: {exc.message}", timings=timings, attempts=attempt)
        instrument, band = row.instrument or UNKNOWN, row.band or UNKNOWN
    if ctx.metrics is not None:
        ctx.metrics.exposure_judged(instrument=instrument, band=band, verdict="rejected", latency_s=None,
                                    step_s=timings, sigmas={}, flagged_ccds=[])
    return {"exposure_id": exposure_id, "verdict": "rejected", "reason": exc.reason}


def _record_error(exposure_id: str, reason: str, kind: str) -> None:
    """Store the verdict ``error`` after the last attempt failed (never raises: called from RQ hooks)."""
    ctx = worker_context()
    try:
        with ctx.sessions()() as session, session.begin():
            row = session.get(ExposureRow, exposure_id)
            if row is not None and row.verdict is not None:
                return  # a verdict was stored after all (e.g. the worker died after committing)
            row = record_verdict(session, exposure_id, verdict="error", score=None,
                                 flags=[{"name": "error", "reason": kind}], reason=reason)
            instrument, band = row.instrument or UNKNOWN, row.band or UNKNOWN
    except Exception:
        logger.exception("could not record the error verdict of exposure %s", exposure_id)
        return
    if ctx.metrics is not None:
        ctx.metrics.exposure_judged(instrument=instrument, band=band, verdict="error", latency_s=None,
                                    step_s={}, sigmas={}, flagged_ccds=[])


def _failure_kind(exc_type) -> str:
    name = getattr(exc_type, "__name__", "")
    if name == "JobTimeoutException":
        return "timeout"
    if name == "AbandonedJobError":
        return "abandoned"
    return "exception"


def _failed_attempt(job, kind: str, reason: str) -> None:
    """Count a failed attempt; retried: count the retry; the last one: record the verdict ``error``."""
    ctx = worker_context()
    if ctx.metrics is not None:
        ctx.metrics.job_failed(kind)
    exposure_id = job.args[0] if job.args else None
    if exposure_id is None:
        return
    if job.should_retry:
        if ctx.metrics is not None:
            ctx.metrics.job_retried()
        logger.warning("exposure %s: attempt failed (%s); %d retries left", exposure_id, reason, job.retries_left)
        return
    _record_error(exposure_id, reason, kind)


def on_job_failure(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ failure callback: an attempt raised (or timed out, or was abandoned)."""
    kind = _failure_kind(exc_type)
    _failed_attempt(job, kind, f"{kind}: {exc_type.__name__ if exc_type else 'failure'}: {exc_value}")


def on_work_horse_killed(job, retpid, ret_val, rusage) -> None:
    """RQ hook for a work horse that died from a signal (out of memory, segfault in a library)."""
    _failed_attempt(job, "killed", f"killed: the worker process died (wait status {ret_val}) while judging it")
