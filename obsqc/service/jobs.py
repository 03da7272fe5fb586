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

import numpy as np

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.scoring import INDICATOR_NAMES, ExposureScore, Reference, score_exposure
from obsqc.service.calibration import add_member, member_count, rebuild_reference
from obsqc.service.errors import InvalidExposureError
from obsqc.service.learned import AUTOENCODER, learned_sigma
from obsqc.service.measure import CutoutRequest, MeasuredExposure, measure_file
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
    _scorers: dict = field(default_factory=dict)
    _unavailable: set = field(default_factory=set)

    def scorer(self, kind: str):
        """This process's onnxruntime scorer ``kind`` (``"autoencoder"`` or ``"galaxy"``), loaded on first
        use after a fork (an inference session must not cross one); None when ``learned_scorers`` is off
        or the model files are missing (logged once: the worker probes before forking its horses)."""
        if not self.settings.learned_scorers or kind in self._unavailable:
            return None
        key = (os.getpid(), kind)
        if key not in self._scorers:
            model_dir = self.settings.models_dir
            try:
                from obsqc.models import onnx_scoring

                model_dir = Path(model_dir) if model_dir else onnx_scoring.default_model_dir()
                make = {"autoencoder": onnx_scoring.AutoencoderScorer, "galaxy": onnx_scoring.GalaxyScorer}[kind]
                self._scorers[key] = make(model_dir, threads=self.settings.scorer_threads)
            except Exception as exc:  # noqa: BLE001 - missing or broken model files never stop judging
                logger.warning("no %s scorer in %s (%s): judging without it", kind, model_dir, exc)
                self._unavailable.add(kind)  # inherited by forked work horses: said once per worker
                self._scorers[key] = None
        return self._scorers[key]

    def cutout_request(self) -> CutoutRequest | None:
        """What the learned scorers of this process need cut from each CCD (None: nothing)."""
        ae, galaxy = self.scorer("autoencoder"), self.scorer("galaxy")
        stamps = self.settings.max_stamps_per_exposure if ae is not None else 0
        # the exposures are single-band: a 3-band (gri) galaxy model cannot score them
        galaxies = self.settings.max_galaxies_per_exposure if galaxy is not None and galaxy.channels == 1 else 0
        if not stamps and not galaxies:
            return None
        return CutoutRequest(max_stamps=stamps, stamp_size=ae.stamp_size if ae is not None else 64,
                             max_galaxies=galaxies, galaxy_size=galaxy.size if galaxies else 96)

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
    """The summary of an exposure that already has its verdict (a duplicate run is a no-op, except that
    galaxies still ``pending`` are queued again, in case the earlier run died before queueing them)."""
    with ctx.sessions()() as session:
        row = session.get(ExposureRow, exposure_id)
        if row is not None and row.verdict is not None:
            if row.galaxies_status == "pending":
                _queue_galaxies(ctx, exposure_id)
            return {"exposure_id": exposure_id, "verdict": row.verdict, "duplicate": True}
    return None


def write_artifact(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` (``.npz``) atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def galaxy_artifact(settings: Settings, exposure_id: str) -> Path:
    """Where the galaxy cutouts of an exposure are kept (the API draws its PNGs from there)."""
    return Path(settings.home) / "artifacts" / job_id_for(exposure_id) / "galaxies.npz"


def _queue_galaxies(ctx: WorkerContext, exposure_id: str) -> None:
    artifact = galaxy_artifact(ctx.settings, exposure_id)
    if not artifact.exists():
        logger.warning("exposure %s: galaxies pending but %s is missing", exposure_id, artifact)
        return
    from obsqc.service.queue import GPU_QUEUE_NAME, connect, enqueue_galaxies, make_queue

    redis = connect(ctx.settings.redis_url)
    try:
        enqueue_galaxies(make_queue(redis, GPU_QUEUE_NAME), exposure_id, str(artifact), ctx.settings)
    finally:
        redis.close()


def _autoencoder_indicator(ctx: WorkerContext, measured: MeasuredExposure) -> tuple[float | None, int]:
    """Mean stamp MSE of the exposure (Alonso et al. §4.3, eq. 9) and the number of stamps."""
    ae = ctx.scorer("autoencoder")
    if ae is None or measured.cutouts is None or len(measured.cutouts.stamps) == 0:
        return None, 0
    mse = ae.mse(measured.cutouts.stamps)
    return float(np.mean(mse)), int(len(mse))


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
    ctx: WorkerContext, session, measured: MeasuredExposure, instrument: str, band: str,
    learned_values: dict[str, float] | None = None,
) -> tuple[ExposureScore, Verdict, Reference, bool, dict[str, float]]:
    """Score against the reference of (instrument, band) and judge; offer the exposure to the reference
    by the rule of :mod:`obsqc.service.calibration` (while calibrating, or when judged ok).

    While calibrating the reference is rebuilt at once (it is small); once ready, every
    ``reference_rebuild_every``-th new member makes the last value True: rebuild after the verdict is
    stored, so that the verdict never waits for it.
    """
    s, stats = ctx.settings, measured.stats
    learned_values = learned_values or {}
    reference = load_reference(session, instrument, band)
    calibrating = reference is None or reference.n_exposures < s.min_reference_exposures
    if calibrating:
        add_member(session, instrument, band, stats, source="live", learned=learned_values)
        reference = rebuild_reference(session, instrument, band, window=s.reference_window,
                                      warn_sigma=s.warn_sigma, params=ctx.params).reference
    score = score_exposure(stats, reference, ctx.params)
    learned = {name: learned_sigma(reference, name, value) for name, value in learned_values.items()}
    verdict = judge(score, warn_sigma=s.warn_sigma, bad_sigma=s.bad_sigma, learned=learned,
                    reference_exposures=reference.n_exposures, min_reference_exposures=s.min_reference_exposures)
    rebuild_due = False
    if not calibrating and verdict.verdict == "ok" and add_member(session, instrument, band, stats, source="live",
                                                                  learned=learned_values):
        rebuild_due = member_count(session, instrument, band) % s.reference_rebuild_every == 0
    return score, verdict, reference, rebuild_due, learned


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
                                params=ctx.params, cutouts=ctx.cutout_request())
    except InvalidExposureError as exc:
        timings["read_measure"] = time.perf_counter() - t0
        return _record_rejected(ctx, exposure_id, exc, timings, attempt)
    timings["read_measure"] = time.perf_counter() - t0
    instrument = measured.header.instrument or UNKNOWN
    band = measured.header.band or UNKNOWN

    ta = time.perf_counter()
    mean_mse, n_stamps = _autoencoder_indicator(ctx, measured)
    if n_stamps:
        timings["autoencoder"] = time.perf_counter() - ta
    learned_values = {AUTOENCODER: math.log(mean_mse)} if mean_mse is not None and mean_mse > 0 else {}
    galaxies = measured.cutouts.galaxies if measured.cutouts is not None else np.empty((0,))
    if len(galaxies):  # before the verdict: once a verdict is stored, its galaxies must be there to score
        cut = measured.cutouts
        write_artifact(galaxy_artifact(ctx.settings, exposure_id), cutouts=galaxies, ccd=cut.galaxy_ccd,
                       x=cut.galaxy_x, y=cut.galaxy_y)

    t1 = time.perf_counter()
    sessions = ctx.sessions()
    with sessions() as session, session.begin():
        score, verdict, reference, rebuild_due, learned = _score_and_judge(
            ctx, session, measured, instrument, band, learned_values)
        timings["score"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        row = record_verdict(
            session, exposure_id, verdict=verdict.verdict, flags=[f.to_dict() for f in verdict.details],
            score=score, reason="; ".join(verdict.reasons) or None, timings=timings, attempts=attempt,
            autoencoder_mse=mean_mse, autoencoder_sigma=_num(learned.get(AUTOENCODER)), n_stamps=n_stamps or None,
            galaxies_status="pending" if len(galaxies) else "none",
        )
        latency = (row.finished_at - row.received_at).total_seconds() if row.received_at else None
    timings["store"] = time.perf_counter() - t2
    if len(galaxies):
        try:
            _queue_galaxies(ctx, exposure_id)
        except Exception:  # the verdict stands; a re-run of this job queues them again
            logger.exception("exposure %s: could not queue its galaxies", exposure_id)
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
            sigmas={**{name: getattr(score, name).sigma for name in INDICATOR_NAMES}, **learned},
            flagged_ccds=[(ccd, f.name) for f in verdict.details for ccd in f.ccds],
        )
    if ctx.settings.write_plots:
        try:
            _write_plots(ctx, measured, score, reference, list(verdict.flags))
        except Exception:  # a figure must never cost a verdict
            logger.exception("exposure %s: could not draw its summary plot", exposure_id)
        try:  # the exposure page's layout, histograms and thumbnails of flagged CCDs (obsqc.service.ui)
            from obsqc.service.ui.artifacts import write_exposure_views

            write_exposure_views(Path(ctx.settings.home) / "artifacts" / job_id_for(exposure_id), measured, score,
                                 reference, verdict.details, verdict.verdict,
                                 pseudocount=ctx.params.histogram_pseudocount)
        except Exception:
            logger.exception("exposure %s: could not write the views of its page", exposure_id)
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
