"""The job queue: Redis + RQ, queue ``qc``, JSON on the wire (DESIGN.md "The flow").

A job carries only an exposure id and a path, serialised as JSON (never pickle: anything that can
write to Redis could otherwise run code in a worker). The job id is derived from the exposure id, so
the queue itself refuses a second job for the same exposure while the first is known to Redis; the
API also checks the verdict store first (:func:`obsqc.service.store.record_received`).

The worker function is named by its dotted path, so the API process never imports the detectors.
"""

from __future__ import annotations

import hashlib

from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from obsqc.service.settings import Settings

__all__ = ["GALAXY_FUNCTION", "GPU_QUEUE_NAME", "JOB_FUNCTION", "QUEUE_NAME", "connect", "enqueue_exposure",
           "enqueue_galaxies", "galaxy_job_id_for", "job_id_for", "make_queue"]

QUEUE_NAME = "qc"
"""The queue every exposure goes through."""

GPU_QUEUE_NAME = "gpu"
"""The queue of galaxy scoring (the WGAN scorer), so GPU workers scale apart from CPU workers."""

GALAXY_FUNCTION = "obsqc.service.galaxy_jobs.score_galaxies"
"""Dotted path of the galaxy job: ``score_galaxies(exposure_id, artifact_path)``."""

JOB_FUNCTION = "obsqc.service.jobs.process_exposure"
"""Dotted path of the worker function: ``process_exposure(exposure_id, path)``."""


def connect(redis_url: str) -> Redis:
    """A Redis client for ``redis_url`` (``redis://host:port/db`` or ``unix:///path/redis.sock``)."""
    return Redis.from_url(redis_url, socket_connect_timeout=5, health_check_interval=30)


def make_queue(redis: Redis, name: str = QUEUE_NAME) -> Queue:
    """The RQ queue ``name`` on ``redis``, with the JSON serializer."""
    return Queue(name, connection=redis, serializer=JSONSerializer)


def job_id_for(exposure_id: str) -> str:
    """A Redis-safe, stable job id for an exposure id (any characters allowed in the exposure id)."""
    return "qc-" + hashlib.sha256(exposure_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _enqueue_once(queue: Queue, function: str, job_id: str, exposure_id: str, path: str, settings: Settings, *,
                  description: str, on_failure: str) -> Job:
    """Queue ``function(exposure_id, path)`` as ``job_id`` with the service's timeout, retries with back-off
    and failure callback; a job of that id already queued or running is returned and nothing is queued."""
    existing = Job.fetch_many([job_id], connection=queue.connection, serializer=JSONSerializer)[0]
    if existing is not None and existing.get_status(refresh=False) in ("queued", "started", "deferred", "scheduled"):
        return existing
    return queue.enqueue(
        function,
        exposure_id,
        path,
        job_id=job_id,
        job_timeout=settings.job_timeout_s,
        retry=Retry(max=settings.job_retries, interval=list(settings.retry_backoff_s)) if settings.job_retries else None,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        description=description,
        on_failure=Callback(on_failure),
    )


def enqueue_exposure(queue: Queue, exposure_id: str, path: str, settings: Settings) -> Job:
    """Queue the judgement of one exposure: timeout, retries with back-off, failure recorded.

    Returns the job; when a job for this exposure is already queued or running, that job is returned
    and nothing new is queued.
    """
    return _enqueue_once(queue, JOB_FUNCTION, job_id_for(exposure_id), exposure_id, path, settings,
                         description=f"judge exposure {exposure_id}", on_failure="obsqc.service.jobs.on_job_failure")


def galaxy_job_id_for(exposure_id: str) -> str:
    """The stable id of the galaxy-scoring job of an exposure."""
    return "gal-" + job_id_for(exposure_id)[3:]


def enqueue_galaxies(queue: Queue, exposure_id: str, artifact: str, settings: Settings) -> Job:
    """Queue the scoring of an exposure's galaxies (``artifact``: its ``galaxies.npz``) on queue ``gpu``;
    like :func:`enqueue_exposure`, a job already queued or running for it is returned instead."""
    return _enqueue_once(queue, GALAXY_FUNCTION, galaxy_job_id_for(exposure_id), exposure_id, artifact, settings,
                         description=f"score the galaxies of exposure {exposure_id}",
                         on_failure="obsqc.service.galaxy_jobs.on_galaxy_failure")
