"""Prometheus metrics of the service, written by every process and served by the API at ``/metrics``.

The job code runs in RQ's work horses: short-lived children that a worker forks, one job at a time.
So the metrics use prometheus-client's multiprocess mode: every process writes its values into
memory-mapped ``*.db`` files under one directory (``Settings.metrics_dir``), and :func:`render_metrics`
(in the API process) merges all of them at scrape time: counters and histogram buckets are summed,
the "last value" gauges keep the most recently written value.

**Bounded files.** prometheus-client names each process's files after its pid, so thousands of horses
would leave thousands of file sets behind. :func:`setup_metrics` names them after a stable *identity*
instead: the process that calls it writes as ``<identity>``; a child forked from it (an RQ work horse)
writes as ``<identity>-child``. Horses of one worker run one after another, so they take turns on the
same ``-child`` files, and each horse re-reads the current values from the files when it starts
writing (the fork is detected, inherited file handles are dropped), so no count is lost or doubled.
The files therefore grow with the number of worker *identities*, not with the number of jobs. An
identity is best stable across restarts (``worker-<host>-<slot>``, ``api``): a restarted process picks
up its counters where it left them.

Two running processes must never write the same files, so every identity in use is held by a lock
file ``<identity>.lock`` (``flock``, released by the kernel when its holder exits, even by ``kill -9``).
When ``<identity>`` is held, :func:`setup_metrics` takes ``<identity>-child`` (so a horse that calls it
again with its worker's identity still reuses one set of files), then ``<identity>-child-<pid>`` with a
warning; a forked child whose ``-child`` files are held (children running side by side) writes as
``<identity>-child-<pid>``. Counts stay right in every case; only the number of files grows.

In an RQ worker either pattern works: call :func:`setup_metrics` once in the worker process before
``work()`` and let the horses use the object they inherit, or call it in each horse (with the same
identity every time).

**No live gauges.** Everything that depends on which processes are alive (jobs waiting, jobs running,
workers registered) is asked of RQ at scrape time by the collector of :func:`render_metrics`, which is
right even after a ``kill -9``. The gauges written by processes are "last value" gauges
(``multiprocess_mode="mostrecent"``: the value with the newest write time wins across all files, and
it stays valid after its writer exits), so ``mark_process_dead`` has nothing to remove and is not used.

**Label values** come from FITS headers (instrument, band, CCD names), so they are cleaned by
:func:`label_value`: printable characters only, at most 64 of them, ``unknown`` when empty.

Metrics (all prefixed ``obsqc_``):

========================================  =========  ===========================  ====================
name                                      type       labels                       written by
========================================  =========  ===========================  ====================
``obsqc_exposures_received_total``        counter    instrument, band             API
``obsqc_exposures_judged_total``          counter    instrument, band, verdict    worker
``obsqc_exposure_latency_seconds``        histogram  instrument                   worker
``obsqc_step_duration_seconds``           histogram  step                         worker
``obsqc_last_score_sigma``                gauge      instrument, band, indicator  worker
``obsqc_last_verdict_timestamp_seconds``  gauge      instrument, band             worker
``obsqc_ccd_flags_total``                 counter    instrument, ccd, flag        worker
``obsqc_job_failures_total``              counter    kind                         failure callback
``obsqc_job_retries_total``               counter    (none)                       failure callback
``obsqc_http_requests_total``             counter    method, route, status        API
``obsqc_http_request_duration_seconds``   histogram  method, route                API
``obsqc_galaxies_scored_total``           counter    instrument, band             gpu worker
``obsqc_galaxy_anomalies_total``          counter    instrument, band             gpu worker
``obsqc_galaxy_scoring_seconds``          histogram  step                         gpu worker
``obsqc_galaxy_batch_size``               histogram  (none)                       gpu worker
``obsqc_redis_up``                        gauge      (none)                       API, at scrape time
``obsqc_queue_jobs``                      gauge      queue, state                 API, at scrape time
``obsqc_workers``                         gauge      queue                        API, at scrape time
========================================  =========  ===========================  ====================

From the verdict store, at scrape time (:mod:`obsqc.service.ops_metrics`, bounded queries of
:mod:`obsqc.service.store.ops`), so that alerts can name the exposure, its CCDs and its flags:

==============================================  =====  ====================================================
name                                            type   labels
==============================================  =====  ====================================================
``obsqc_store_up``                              gauge  (none): 0 when the store could not be read
``obsqc_recent_exposure_verdict``               gauge  instrument, band, exposure_id, verdict, flags, ccds
``obsqc_ccd_consecutive_flags``                 gauge  instrument, band, ccd
``obsqc_reference_members``                     gauge  instrument, band
``obsqc_reference_updated_timestamp_seconds``   gauge  instrument, band
``obsqc_calibrating``                           gauge  instrument, band
``obsqc_calibrating_since_timestamp_seconds``   gauge  instrument, band
``obsqc_recent_galaxy_anomaly``                 gauge  instrument, band, exposure_id, galaxy_id
==============================================  =====  ====================================================
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

VERDICTS: tuple[str, ...] = ("ok", "warn", "bad", "calibrating", "rejected", "error")
"""The verdicts of ``obsqc_exposures_judged_total``; each series exists (at 0) from an instrument and
band's first verdict."""

__all__ = [
    "LABEL_MAX_CHARS",
    "QueueStatsCollector",
    "ServiceMetrics",
    "label_value",
    "render_metrics",
    "rq_queue_stats",
    "setup_metrics",
]

LABEL_MAX_CHARS = 64
"""Longest label value kept (longer ones are truncated)."""

LATENCY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""End-to-end latency buckets (seconds); 60 s is the operators' alerting budget (DESIGN.md)."""

STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Per-step duration buckets (seconds)."""

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""HTTP request duration buckets (seconds)."""

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Batch sizes of the galaxy scorer."""

_IDENTITY_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def label_value(value: Any, max_chars: int = LABEL_MAX_CHARS) -> str:
    """A label value safe for Prometheus and dashboards: printable, trimmed, at most ``max_chars`` long.

    Non-printable characters (control characters, lone surrogates from undecodable bytes) become
    ``?``; ``None`` or an empty result becomes ``unknown``.
    """
    text = "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    return text[:max_chars].rstrip() or "unknown"


def _finite(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, not a number or NaN."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _safe_identity(identity: str) -> str:
    # prometheus-client splits file names on "_" (gauge_<mode>_<id>.db) and they must stay in the directory.
    safe = _IDENTITY_UNSAFE.sub("-", identity).strip("-.")[:100]
    if not safe:
        raise ValueError(f"metrics identity {identity!r} has no usable characters")
    return safe


def _claim_identity(metrics_dir: Path, identity: str) -> IO[bytes] | None:
    """An open, exclusively locked ``<identity>.lock`` in ``metrics_dir``, or ``None`` when another
    running process holds it (the kernel drops the lock when its holder exits, even by ``kill -9``)."""
    handle = open(metrics_dir / f"{identity}.lock", "ab")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _claim_first(metrics_dir: Path, identities: list[str]) -> tuple[str, IO[bytes] | None]:
    """The first of ``identities`` no running process holds, or ``<last>-<pid>``, with its lock."""
    for identity in identities:
        lock = _claim_identity(metrics_dir, identity)
        if lock is not None:
            return identity, lock
    identity = f"{identities[-1]}-{os.getpid()}"
    return identity, _claim_identity(metrics_dir, identity)


def setup_metrics(metrics_dir: Path, identity: str) -> "ServiceMetrics":
    """Switch this process to multiprocess metrics under ``metrics_dir`` and return its metric objects.

    Creates ``metrics_dir``; claims the identity (``identity`` sanitised to letters, digits, ``.`` and
    ``-``; see the module docstring for what is taken when it is held); sets
    ``PROMETHEUS_MULTIPROC_DIR`` in this process's environment (the value class reads it whenever it
    opens a file) and replaces prometheus-client's value class (``prometheus_client.values.ValueClass``,
    the global state prometheus-client imposes) by one that names files after the identity, and forked
    children's after ``<identity>-child``. Nothing needs to be set before prometheus-client is
    imported: metric objects take the value class when they are built, here.

    Call it once per process, before recording anything. Calling it again (or in a forked child)
    closes the files of the earlier call first; the earlier objects must not be used any more (they
    raise rather than corrupt the files), and while they are alive they keep their identity locked,
    so the new call takes another one.
    """
    from prometheus_client import values

    metrics_dir = Path(metrics_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    wanted = _safe_identity(identity)
    identity, lock = _claim_first(metrics_dir, [wanted, f"{wanted}-child"])
    if identity != wanted and identity != f"{wanted}-child":
        logger.warning("metrics identity %s is in use by running processes; writing as %s", wanted, identity)
    owner_pid = os.getpid()
    child: dict[int, tuple[str, IO[bytes] | None]] = {}  # pid -> (identity, lock) of a forked child

    def process_identifier() -> str:
        # Called by prometheus-client on every write; a new pid means this is a forked child.
        pid = os.getpid()
        if pid == owner_pid:
            return identity
        if pid not in child:
            child[pid] = _claim_first(metrics_dir, [f"{identity}-child"])
        return child[pid][0]

    values.close_all_multiprocess_files()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)
    return ServiceMetrics(metrics_dir=metrics_dir, identity=identity, lock=lock)


class ServiceMetrics:
    """The metric objects of one process; build it with :func:`setup_metrics`.

    Every method cleans its label values with :func:`label_value` and never raises on odd input
    (missing or NaN numbers are skipped), so recording a metric cannot fail a job.
    """

    def __init__(self, *, metrics_dir: Path, identity: str, lock: IO[bytes] | None = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.metrics_dir = metrics_dir
        self.identity = identity
        """The name of this process's files (``<kind>_<identity>.db``)."""
        self._identity_lock = lock  # held while this object lives: no other process takes the identity
        # registry=None: nothing is registered in-process; /metrics reads the files (render_metrics).
        self.exposures_received = Counter(
            "obsqc_exposures_received_total",
            "Exposures accepted by the API, by instrument and band. Is the pipeline sending? Compare with "
            "obsqc_exposures_judged_total to see the backlog.",
            ["instrument", "band"],
            registry=None,
        )
        self.exposures_judged = Counter(
            "obsqc_exposures_judged_total",
            "Exposures that got a verdict (ok, warn, bad, calibrating, rejected, error), by instrument and "
            "band. What fraction of tonight's exposures is bad?",
            ["instrument", "band", "verdict"],
            registry=None,
        )
        self.latency = Histogram(
            "obsqc_exposure_latency_seconds",
            "Seconds from the API receiving an exposure to its verdict being stored. Do operators hear "
            "about a bad exposure within a minute?",
            ["instrument"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.step_duration = Histogram(
            "obsqc_step_duration_seconds",
            "Seconds a worker spent in one step of judging an exposure (read_measure, score, store, ...). "
            "Which step makes the latency?",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=None,
        )
        self.last_score = Gauge(
            "obsqc_last_score_sigma",
            "Calibrated significance (sigma units) of each indicator of the most recently judged exposure "
            "of an instrument and band. Is the sky or the camera drifting?",
            ["instrument", "band", "indicator"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self.last_verdict_time = Gauge(
            "obsqc_last_verdict_timestamp_seconds",
            "Unix time of the most recent verdict of an instrument and band. Has judging stalled?",
            ["instrument", "band"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self.ccd_flags = Counter(
            "obsqc_ccd_flags_total",
            "Flags raised with a CCD named responsible, by instrument, CCD and flag. Which CCDs keep "
            "showing gradients or lines?",
            ["instrument", "ccd", "flag"],
            registry=None,
        )
        self.job_failures = Counter(
            "obsqc_job_failures_total",
            "Failed attempts of judging jobs, by kind (exception, timeout, abandoned). Are workers crashing?",
            ["kind"],
            registry=None,
        )
        self.job_retries = Counter(
            "obsqc_job_retries_total",
            "Failed judging jobs put back on the queue for another attempt.",
            registry=None,
        )
        self.http_requests = Counter(
            "obsqc_http_requests_total",
            "HTTP requests answered by the API, by method, route template and status code. Are clients "
            "getting errors?",
            ["method", "route", "status"],
            registry=None,
        )
        self.http_duration = Histogram(
            "obsqc_http_request_duration_seconds",
            "Seconds the API took to answer a request, by method and route template. Is the API slow?",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=None,
        )

        self.galaxies_scored_total = Counter(
            "obsqc_galaxies_scored_total",
            "Galaxies scored by the WGAN (s_gen, s_disc, s_anom), by instrument and band.",
            ["instrument", "band"],
            registry=None,
        )
        self.galaxy_anomalies_total = Counter(
            "obsqc_galaxy_anomalies_total",
            "Galaxies whose s_disc is above the anomaly threshold (3 sigma of the survey's running "
            "distribution, Storey-Fisher et al. 2021 sec. 4.1). Is there a burst of odd galaxies?",
            ["instrument", "band"],
            registry=None,
        )
        self.galaxy_scoring = Histogram(
            "obsqc_galaxy_scoring_seconds",
            "Seconds to score the galaxies of one exposure (inference with latent refinement, then store).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=None,
        )
        self.galaxy_batch_size = Histogram(
            "obsqc_galaxy_batch_size",
            "Galaxies per inference batch of the galaxy scorer.",
            buckets=BATCH_BUCKETS,
            registry=None,
        )

    def close(self) -> None:
        """Stop recording in this process: close its metric files and free its identity.

        What was written stays in the files and keeps being served. For a clean shutdown and for tests;
        a process that simply exits needs no call.
        """
        from prometheus_client import values

        values.close_all_multiprocess_files()
        if self._identity_lock is not None:
            self._identity_lock.close()
            self._identity_lock = None

    def exposure_received(self, instrument: str, band: str) -> None:
        """Count one exposure accepted by the API."""
        self.exposures_received.labels(label_value(instrument), label_value(band)).inc()

    def exposure_judged(
        self,
        *,
        instrument: str,
        band: str,
        verdict: str,
        latency_s: float | None,
        step_s: Mapping[str, float],
        sigmas: Mapping[str, float | None],
        flagged_ccds: Iterable[tuple[str, str]],
    ) -> None:
        """Record one verdict: its count, latency, step durations, last scores and flagged CCDs.

        ``latency_s`` is received -> verdict (``None`` when unknown; negative values, from clocks of
        two machines disagreeing, count as 0); ``step_s`` maps a step name to its seconds; ``sigmas``
        maps an indicator name to its calibrated sigma (``None``/NaN skipped); ``flagged_ccds`` holds
        ``(ccd, flag)`` pairs.
        """
        instrument_l, band_l = label_value(instrument), label_value(band)
        # Every verdict series of this instrument and band exists from its first verdict on (at 0), so
        # that increase() and rate() over a window see the first bad or error verdict too: a counter
        # series born at 1 has no earlier sample to subtract.
        for other in VERDICTS:
            self.exposures_judged.labels(instrument_l, band_l, other)
        self.exposures_judged.labels(instrument_l, band_l, label_value(verdict)).inc()
        latency = _finite(latency_s)
        if latency is not None:
            self.latency.labels(instrument_l).observe(max(latency, 0.0))
        for step, seconds in step_s.items():
            duration = _finite(seconds)
            if duration is not None:
                self.step_duration.labels(label_value(step)).observe(max(duration, 0.0))
        for indicator, sigma in sigmas.items():
            value = _finite(sigma)
            if value is not None:
                self.last_score.labels(instrument_l, band_l, label_value(indicator)).set(value)
        for ccd, flag in flagged_ccds:
            self.ccd_flags.labels(instrument_l, label_value(ccd), label_value(flag)).inc()
        self.last_verdict_time.labels(instrument_l, band_l).set(time.time())

    def galaxies_scored(self, *, instrument: str, band: str, n: int, anomalies: int,
                        step_s: Mapping[str, float], batch_sizes: Iterable[int]) -> None:
        """Record the scoring of one exposure's galaxies: counts, anomalies, step seconds, batch sizes."""
        instrument_l, band_l = label_value(instrument), label_value(band)
        self.galaxies_scored_total.labels(instrument_l, band_l).inc(max(int(n), 0))
        self.galaxy_anomalies_total.labels(instrument_l, band_l).inc(max(int(anomalies), 0))
        for step, seconds in step_s.items():
            duration = _finite(seconds)
            if duration is not None:
                self.galaxy_scoring.labels(label_value(step)).observe(max(duration, 0.0))
        for size in batch_sizes:
            self.galaxy_batch_size.observe(int(size))

    def job_failed(self, kind: str) -> None:
        """Count one failed attempt of a judging job (``exception``, ``timeout``, ``abandoned``, ...)."""
        self.job_failures.labels(label_value(kind)).inc()

    def job_retried(self) -> None:
        """Count one failed job queued again for another attempt."""
        self.job_retries.inc()

    def http_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        """Count one answered HTTP request; ``route`` must be the route *template* (``/v1/exposures/{id}``),
        or a fixed word such as ``unmatched``, never the raw path (that would make a series per id)."""
        method_l = label_value(str(method).upper(), 16)
        route_l = label_value(route, 128)
        self.http_requests.labels(method_l, route_l, label_value(status, 3)).inc()
        duration = _finite(duration_s)
        if duration is not None:
            self.http_duration.labels(method_l, route_l).observe(max(duration, 0.0))


class QueueStatsCollector:
    """Scrape-time gauges of the queues, read from RQ in the scraping process.

    ``queue_stats`` maps a queue name (``qc``, ``gpu``) to a callable returning counts by name (a single
    callable stands for ``qc``): ``workers`` becomes ``obsqc_workers{queue=...}``, every other key a job
    state of ``obsqc_queue_jobs{queue=...,state=...}`` (``queued`` is the queue depth that autoscaling and
    the backlog alert use). When reading fails (Redis down), the scrape still succeeds, with
    ``obsqc_redis_up 0`` and no queue gauges.
    """

    def __init__(self, queue_stats: Callable[[], Mapping[str, int]] | Mapping[str, Callable[[], Mapping[str, int]]]) -> None:
        self._queue_stats = dict(queue_stats) if isinstance(queue_stats, Mapping) else {"qc": queue_stats}

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            stats = {name: dict(read()) for name, read in self._queue_stats.items()}
            up = 1.0
        except Exception:  # noqa: BLE001 - any failure to reach Redis must not fail the scrape
            stats, up = {}, 0.0
        yield GaugeMetricFamily(
            "obsqc_redis_up", "1 when this scrape could read the job queues from Redis, 0 when it could not.", value=up
        )
        if not stats:
            return
        jobs = GaugeMetricFamily(
            "obsqc_queue_jobs",
            "Jobs of a queue (qc: judging, gpu: galaxy scoring) by state at scrape time (queued is the queue "
            "depth; started are running now; failed are kept for inspection).",
            labels=["queue", "state"],
        )
        workers = GaugeMetricFamily("obsqc_workers", "RQ workers registered on a queue at scrape time.",
                                    labels=["queue"])
        for name, counts in sorted(stats.items()):
            n_workers = counts.pop("workers", None)
            for state, count in sorted(counts.items()):
                jobs.add_metric([label_value(name), label_value(state)], float(count))
            if n_workers is not None:
                workers.add_metric([label_value(name)], float(n_workers))
        yield jobs
        yield workers


def rq_queue_stats(queue: Any) -> Callable[[], dict[str, int]]:
    """A ``queue_stats`` callable for :func:`render_metrics` reading an RQ ``Queue``.

    Counts are read without RQ's registry cleanup, so a scrape never changes the queue (a cleanup
    would run failure callbacks of abandoned jobs inside the API process).
    """

    def stats() -> dict[str, int]:
        from rq import Worker

        return {
            "queued": int(queue.count),
            "started": queue.started_job_registry.get_job_count(cleanup=False),
            "deferred": queue.deferred_job_registry.get_job_count(cleanup=False),
            "scheduled": queue.scheduled_job_registry.get_job_count(cleanup=False),
            "failed": queue.failed_job_registry.get_job_count(cleanup=False),
            "workers": Worker.count(connection=queue.connection, queue=queue),
        }

    return stats


def render_metrics(metrics_dir: Path, queue_stats: Callable[[], Mapping[str, int]]
                   | Mapping[str, Callable[[], Mapping[str, int]]] | None,
                   collectors: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type: every process's files merged, plus the queue gauges.

    Needs no :func:`setup_metrics` in the calling process; ``queue_stats`` (see
    :class:`QueueStatsCollector`, :func:`rq_queue_stats`) is called once per scrape, or skipped when
    ``None``. ``collectors`` are further scrape-time collectors (objects with ``collect()``, such as
    :class:`obsqc.service.ops_metrics.StoreStatsCollector`).
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics_dir = Path(metrics_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    if queue_stats is not None:
        registry.register(QueueStatsCollector(queue_stats))
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
