"""``obsqc worker``: N RQ workers on queue ``qc``, supervised by one process.

The supervisor warms the numba kernels (and imports matplotlib) once, then forks N worker processes
that inherit them, so every worker is warm before it takes its first job. Each worker is a plain
``rq.Worker`` (RQ is the distributed engine: workers on other machines join by pointing
``OBSQC_REDIS_URL`` at the same Redis). It forks a work horse per job, so a job that crashes or leaks
never takes the worker down, and runs RQ's scheduler (one per Redis, elected by lock) so that retries
with back-off happen.

Signals: SIGTERM or SIGINT to the supervisor is passed on as SIGTERM to the workers, which finish their
current job and stop (RQ's warm shutdown); a second signal makes them stop at once, and RQ then
retries the interrupted job on another worker. A worker that dies unexpectedly is restarted.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time

from rq import Worker

from obsqc.service.lifecycle import die_with_parent
from obsqc.service.settings import Settings

__all__ = ["release_jobs_of", "run_worker", "run_workers"]

logger = logging.getLogger(__name__)


def _die_with_parent() -> bool:
    """SIGKILL this process when its parent dies (:func:`obsqc.service.lifecycle.die_with_parent`)."""
    return die_with_parent(signal.SIGKILL)


def release_jobs_of(redis, worker_name: str, queue_name: str = "qc") -> list[str]:
    """Hand back to RQ the jobs that the dead worker ``worker_name`` had started: each one goes through
    RQ's own abandoned-job path at once (failure callback; retried if it has retries left, else failed).

    Only safe when the dead worker's horse is dead too, which :func:`run_worker` guarantees on Linux;
    elsewhere nothing is released and RQ's heartbeat timeout does it later."""
    from rq.job import Job, JobStatus
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    from obsqc.service.queue import make_queue

    if not sys.platform.startswith("linux"):
        return []
    queue = make_queue(redis, queue_name)
    registry = StartedJobRegistry(queue=queue)
    released = []
    for member in redis.zrange(registry.key, 0, -1):
        job_id = registry.parse_job_id(member)
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer) if Job.exists(job_id, redis) else None
        if job is None or job.worker_name != worker_name or job.get_status() != JobStatus.STARTED:
            continue
        redis.zadd(registry.key, {member: 0}, xx=True)  # expired now: cleanup() treats it as abandoned
        released.append(job_id)
    if released:
        registry.cleanup()
        logger.warning("worker %s died mid-job; handed back %s", worker_name, ", ".join(released))
    return released


def _warm() -> float:
    """Load the numba kernels and the plotting stack once (inherited by forked workers)."""
    from obsqc.detectors.warmup import warm_up

    seconds = warm_up()
    import obsqc.service.plots  # noqa: F401  (matplotlib import is ~1 s; pay it once)
    import obsqc.service.jobs  # noqa: F401
    return seconds


def worker_name(group: str, index: int, pid: int) -> str:
    return f"obsqc-{group}-{index}-{pid}"


def run_worker(settings: Settings, *, index: int = 0, burst: bool = False, log_level: str = "WARNING",
               group: str | None = None, predecessor: str | None = None, queue_name: str = "qc") -> None:
    """Run one RQ worker in this process until it is told to stop (or, with ``burst``, the queue is empty).
    ``predecessor``: the name of a dead worker this one replaces; its unfinished job is handed back first."""
    from rq.serializers import JSONSerializer

    from obsqc.service.jobs import on_work_horse_killed, prepare_worker
    from obsqc.service.queue import connect, make_queue

    if settings.redis_url is None:
        raise ValueError("OBSQC_REDIS_URL is not set: a worker needs the Redis of the service")
    group = group or f"{socket.gethostname()}-{os.getppid()}"
    context = prepare_worker(settings, identity=f"worker-{group}-{index}")
    for kind in (("autoencoder", "galaxy") if queue_name == "qc" else ("galaxy",)):
        context.scorer(kind)  # probe once here: a missing model is reported once, not by every horse
    redis = connect(settings.redis_url)
    if predecessor is not None:
        release_jobs_of(redis, predecessor, queue_name)
    os.register_at_fork(after_in_child=_die_with_parent)  # horse and scheduler die with this worker
    worker = Worker(
        [make_queue(redis, queue_name)], connection=redis, serializer=JSONSerializer,
        name=worker_name(group, index, os.getpid()),
        worker_ttl=settings.worker_ttl_s, job_monitoring_interval=max(5, settings.worker_ttl_s // 4),
        maintenance_interval=max(15, settings.worker_ttl_s // 2),
        work_horse_killed_handler=on_work_horse_killed,
    )
    worker.work(with_scheduler=True, burst=burst, logging_level=log_level)


def _child(settings: Settings, index: int, burst: bool, log_level: str, group: str,
           predecessor: str | None, queue_name: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; RQ installs its SIGTERM handler
    if settings.worker_nice:
        os.nice(settings.worker_nice)  # the API answers first when they share the CPU (inherited by horses)
    run_worker(settings, index=index, burst=burst, log_level=log_level, group=group, predecessor=predecessor,
               queue_name=queue_name)


def run_workers(settings: Settings, n: int, *, burst: bool = False, log_level: str = "WARNING",
                on_ready=None, queue_name: str = "qc") -> int:
    """Supervise ``n`` workers of queue ``queue_name`` (``qc``: judge exposures; ``gpu``: score galaxies);
    returns when they have all stopped (after SIGTERM/SIGINT, or in burst mode when the queue is empty).
    Returns 0, or 1 if a worker failed in burst mode."""
    if n < 1:
        raise ValueError(f"--workers must be at least 1, got {n}")
    jit_s = _warm() if queue_name == "qc" else 0.0  # galaxy scoring needs onnxruntime, not numba
    logger.info("numba kernels ready in %.1f s", jit_s)
    context = multiprocessing.get_context("fork")
    group = f"{socket.gethostname()}-{os.getpid()}"
    stopping = {"signals": 0}
    processes: dict[int, multiprocessing.Process] = {}

    def start(index: int, predecessor: str | None = None) -> None:
        process = context.Process(target=_child, args=(settings, index, burst, log_level, group, predecessor, queue_name),
                                  name=f"obsqc-worker-{index}", daemon=False)
        process.start()
        processes[index] = process

    def forward(signum, _frame) -> None:
        stopping["signals"] += 1
        for process in processes.values():
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(n):
            start(index)
        if on_ready is not None:
            on_ready(n, jit_s)
        failed = 0
        restarts: dict[int, list[float]] = {}
        while processes:
            time.sleep(0.2)
            for index, process in list(processes.items()):
                if process.is_alive():
                    continue
                process.join()
                del processes[index]
                if process.exitcode != 0:
                    failed += 1
                if stopping["signals"] or burst:
                    continue
                recent = [t for t in restarts.get(index, []) if time.monotonic() - t < 60] + [time.monotonic()]
                restarts[index] = recent
                if len(recent) > 5:
                    logger.error("worker %d died %d times in a minute; not restarting it", index, len(recent))
                    continue
                logger.warning("worker %d exited (code %s); restarting it", index, process.exitcode)
                start(index, predecessor=worker_name(group, index, process.pid))
        return 1 if (failed and burst) else 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
