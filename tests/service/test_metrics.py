"""Service metrics: real aggregation over real processes, the scrape-time queue gauges, and promtool.

Writers run as real subprocesses (and as forked children, the way RQ runs its work horses, and under a
real RQ worker); the test process only renders, as the API does. promtool checks the exposition;
without promtool that test is skipped, except under ``CI`` where it fails.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from obsqc.service.metrics import (
    LABEL_MAX_CHARS,
    label_value,
    render_metrics,
    rq_queue_stats,
    setup_metrics,
)

REPO = Path(__file__).resolve().parents[2]


def _samples(body: bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def _identities(metrics_dir: Path) -> set[str]:
    """The writer identities that own ``*.db`` files (``counter_<id>.db``, ``gauge_<mode>_<id>.db``)."""
    return {p.stem.split("_")[-1] for p in metrics_dir.glob("*.db")}


def _python(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a new Python process (from the repository root) and expect it to succeed."""
    command = [sys.executable, "-c", script, *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def isolated(monkeypatch):
    """Let this test call setup_metrics in-process; prometheus-client's globals are restored afterwards."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # records the original value, restored at teardown
    yield
    values.close_all_multiprocess_files()


@pytest.fixture
def metrics(tmp_path, isolated):
    m = setup_metrics(tmp_path / "metrics", "test")
    yield m
    m.close()


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so the promtool check must run)")
        pytest.skip(message)
    return found


_WRITER = r"""
import sys
from pathlib import Path
from obsqc.service.metrics import setup_metrics

m = setup_metrics(Path(sys.argv[1]), sys.argv[2])
for latency in (0.3, 4.0, 100.0):
    m.exposure_judged(instrument="DECam", band="r", verdict="ok", latency_s=latency, step_s={"score": 0.02},
                      sigmas={"source": float(sys.argv[3])}, flagged_ccds=[("N4", "linear_feature")])
m.exposure_received("DECam", "r")
m.job_failed("exception")
m.job_retried()
"""


def test_metrics_of_concurrent_processes_add_up(tmp_path):
    metrics_dir = tmp_path / "metrics"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(metrics_dir), f"worker-{i}", "1.5"], cwd=REPO)
        for i in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    _python(_WRITER, str(metrics_dir), "worker-late", "42.0")  # the newest score: it must win

    s = _samples(render_metrics(metrics_dir, None)[0])
    assert _value(s, "obsqc_exposures_judged_total", instrument="DECam", band="r", verdict="ok") == 12
    assert _value(s, "obsqc_exposures_received_total", instrument="DECam", band="r") == 4
    assert _value(s, "obsqc_ccd_flags_total", instrument="DECam", ccd="N4", flag="linear_feature") == 12
    assert _value(s, "obsqc_job_failures_total", kind="exception") == 4
    assert _value(s, "obsqc_job_retries_total") == 4
    bucket = lambda le: _value(s, "obsqc_exposure_latency_seconds_bucket", instrument="DECam", le=le)  # noqa: E731
    assert (bucket("0.5"), bucket("5.0"), bucket("60.0"), bucket("120.0"), bucket("+Inf")) == (4, 8, 8, 12, 12)
    assert _value(s, "obsqc_exposure_latency_seconds_count", instrument="DECam") == 12
    assert _value(s, "obsqc_exposure_latency_seconds_sum", instrument="DECam") == pytest.approx(4 * 104.3)
    assert _value(s, "obsqc_step_duration_seconds_count", step="score") == 12
    # "mostrecent": one series, no pid label, the value written last
    assert _value(s, "obsqc_last_score_sigma", instrument="DECam", band="r", indicator="source") == 42.0
    assert [k for k in s if k[0] == "obsqc_last_score_sigma"] == [
        ("obsqc_last_score_sigma", frozenset({"instrument": "DECam", "band": "r", "indicator": "source"}.items()))
    ]
    assert _identities(metrics_dir) == {"worker-0", "worker-1", "worker-2", "worker-late"}


_FORKING_WORKER = r"""
import os
import sys
from pathlib import Path
from obsqc.service.metrics import setup_metrics

metrics_dir, horses, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
m = setup_metrics(metrics_dir, "worker-a")
m.exposure_received("DECam", "r")  # a series the parent holds before any fork
for i in range(horses):
    pid = os.fork()  # like an RQ worker: one short-lived child per job, one at a time
    if pid == 0:
        code = 1
        try:
            h = setup_metrics(metrics_dir, "worker-a") if mode == "resetup" else m
            h.exposure_received("DECam", "r")
            h.exposure_received("HSC", f"band{i}")  # a new series in every child: new keys in a shared file
            h.step_duration.labels("score").observe(0.5)
            h.job_retried()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "child failed"
m.exposure_received("DECam", "r")  # the parent writes after its children: it must not overwrite their counts
m.job_retried()
"""


@pytest.mark.parametrize("mode", ["inherit", "resetup"])
def test_forked_children_share_a_bounded_set_of_files_and_lose_nothing(tmp_path, mode):
    """Horses use the worker's object (inherit), or call setup_metrics again with its identity (resetup)."""
    metrics_dir = tmp_path / "metrics"
    horses = 25
    _python(_FORKING_WORKER, str(metrics_dir), str(horses), mode)

    s = _samples(render_metrics(metrics_dir, None)[0])
    assert _value(s, "obsqc_exposures_received_total", instrument="DECam", band="r") == horses + 2
    for i in range(horses):
        assert _value(s, "obsqc_exposures_received_total", instrument="HSC", band=f"band{i}") == 1
    assert _value(s, "obsqc_job_retries_total") == horses + 1
    assert _value(s, "obsqc_step_duration_seconds_count", step="score") == horses
    assert _identities(metrics_dir) == {"worker-a", "worker-a-child"}
    assert len(list(metrics_dir.glob("*.db"))) <= 6  # per identity: counter, histogram, gauge_mostrecent


_SIDE_BY_SIDE = r"""
import os
import sys
import time
from pathlib import Path
from obsqc.service.metrics import setup_metrics

m = setup_metrics(Path(sys.argv[1]), "worker-b")
read_end, write_end = os.pipe()
first = os.fork()
if first == 0:
    m.job_retried()
    os.close(write_end)
    os.read(read_end, 1)  # stay alive (holding worker-b-child) until the parent closes the pipe
    os._exit(0)
os.close(read_end)
while not any(Path(sys.argv[1]).glob("counter_worker-b-child.db")):
    time.sleep(0.01)
second = os.fork()
if second == 0:
    m.job_retried()
    m.job_retried()
    os._exit(0)
os.waitpid(second, 0)
os.close(write_end)
os.waitpid(first, 0)
print(second)
"""


def test_forked_children_running_side_by_side_get_files_of_their_own(tmp_path):
    metrics_dir = tmp_path / "metrics"
    second = _python(_SIDE_BY_SIDE, str(metrics_dir)).stdout.strip()
    assert _identities(metrics_dir) == {"worker-b", "worker-b-child", f"worker-b-child-{second}"}
    assert _value(_samples(render_metrics(metrics_dir, None)[0]), "obsqc_job_retries_total") == 3


def _rq_job(metrics_dir: str) -> None:
    """A job as obsqc's worker job records it: set up in the horse, named after the RQ worker."""
    from rq import get_current_job

    m = setup_metrics(Path(metrics_dir), f"worker-{get_current_job().worker_name}")
    m.exposure_judged(
        instrument="DECam",
        band="g",
        verdict="warn",
        latency_s=2.0,
        step_s={"read_measure": 1.0, "score": 0.1, "store": 0.01},
        sigmas={"line": 3.5},
        flagged_ccds=[("S7", "linear_feature")],
    )


_RQ_WORKER = r"""
import sys
from rq import Worker
from rq.serializers import JSONSerializer
from obsqc.service.queue import connect, make_queue

redis = connect(sys.argv[1])
Worker([make_queue(redis)], connection=redis, name="w1", serializer=JSONSerializer).work(burst=True)
"""


def test_real_rq_worker_horses_are_counted_and_queue_gauges_follow(tmp_path, redis_url):
    from obsqc.service.queue import connect, make_queue

    metrics_dir = tmp_path / "metrics"
    redis = connect(redis_url)
    queue = make_queue(redis)
    jobs = 5
    for _ in range(jobs):
        queue.enqueue(f"{__name__}._rq_job", str(metrics_dir))

    s = _samples(render_metrics(metrics_dir, rq_queue_stats(queue))[0])
    assert _value(s, "obsqc_redis_up") == 1
    assert _value(s, "obsqc_queue_jobs", queue="qc", state="queued") == jobs
    assert _value(s, "obsqc_queue_jobs", queue="qc", state="failed") == 0
    assert _value(s, "obsqc_workers", queue="qc") == 0

    _python(_RQ_WORKER, redis_url)

    s = _samples(render_metrics(metrics_dir, rq_queue_stats(queue))[0])
    assert _value(s, "obsqc_queue_jobs", queue="qc", state="queued") == 0
    assert _value(s, "obsqc_queue_jobs", queue="qc", state="failed") == 0
    assert _value(s, "obsqc_exposures_judged_total", instrument="DECam", band="g", verdict="warn") == jobs
    assert _value(s, "obsqc_step_duration_seconds_count", step="read_measure") == jobs
    assert _value(s, "obsqc_last_score_sigma", instrument="DECam", band="g", indicator="line") == 3.5
    assert _identities(metrics_dir) == {"worker-w1"}  # every horse reused the worker's files
    redis.close()


def test_histogram_buckets_and_sums(metrics, tmp_path):
    for latency in (0.2, 0.5, 0.7, 59.0, 61.0, 5000.0, -3.0, float("nan"), None):
        metrics.exposure_judged(
            instrument="HSC",
            band="i",
            verdict="ok",
            latency_s=latency,
            step_s={"score": 0.03, "store": float("nan")},
            sigmas={},
            flagged_ccds=[],
        )
    s = _samples(render_metrics(tmp_path / "metrics", None)[0])
    bucket = lambda le: _value(s, "obsqc_exposure_latency_seconds_bucket", instrument="HSC", le=le)  # noqa: E731
    # negative latency (two machines' clocks) counts as 0; NaN and None are not observed
    assert [bucket(le) for le in ("0.5", "1.0", "60.0", "120.0", "1800.0", "+Inf")] == [3, 4, 5, 6, 6, 7]
    assert _value(s, "obsqc_exposure_latency_seconds_count", instrument="HSC") == 7
    assert _value(s, "obsqc_exposure_latency_seconds_sum", instrument="HSC") == pytest.approx(5121.4)
    assert _value(s, "obsqc_step_duration_seconds_count", step="score") == 9
    assert _value(s, "obsqc_step_duration_seconds_bucket", step="score", le="0.025") == 0
    assert _value(s, "obsqc_step_duration_seconds_bucket", step="score", le="0.05") == 9
    assert ("obsqc_step_duration_seconds_count", frozenset({"step": "store"}.items())) not in s
    assert _value(s, "obsqc_exposures_judged_total", instrument="HSC", band="i", verdict="ok") == 9


def test_last_scores_skip_missing_values_and_keep_the_newest(metrics, tmp_path):
    common = dict(instrument="DECam", band="z", latency_s=1.0, step_s={}, flagged_ccds=[])
    metrics.exposure_judged(verdict="ok", sigmas={"source": 1.0, "profile": 2.0, "line": None}, **common)
    metrics.exposure_judged(verdict="bad", sigmas={"source": 9.0, "profile": float("nan")}, **common)
    s = _samples(render_metrics(tmp_path / "metrics", None)[0])
    score = lambda name: _value(s, "obsqc_last_score_sigma", instrument="DECam", band="z", indicator=name)  # noqa: E731
    assert score("source") == 9.0
    assert score("profile") == 2.0  # the NaN of the second exposure did not overwrite it
    line = frozenset({"instrument": "DECam", "band": "z", "indicator": "line"}.items())
    assert ("obsqc_last_score_sigma", line) not in s
    assert _value(s, "obsqc_last_verdict_timestamp_seconds", instrument="DECam", band="z") > 1.6e9


def test_http_requests_use_the_route_template(metrics, tmp_path):
    metrics.http_request("get", "/v1/exposures/{id}", 200, 0.004)
    metrics.http_request("GET", "/v1/exposures/{id}", 404, 0.02)
    metrics.http_request("POST", "/v1/exposures", 202, 0.2)
    s = _samples(render_metrics(tmp_path / "metrics", None)[0])
    assert _value(s, "obsqc_http_requests_total", method="GET", route="/v1/exposures/{id}", status="200") == 1
    assert _value(s, "obsqc_http_requests_total", method="GET", route="/v1/exposures/{id}", status="404") == 1
    assert _value(s, "obsqc_http_request_duration_seconds_count", method="GET", route="/v1/exposures/{id}") == 2
    assert _value(s, "obsqc_http_request_duration_seconds_bucket", method="POST", route="/v1/exposures", le="0.25") == 1


def test_queue_gauges_from_a_stub(tmp_path):
    stats = {"queued": 5, "started": 2, "failed": 1, "deferred": 0, "workers": 3}
    body, content_type = render_metrics(tmp_path / "metrics", lambda: stats)
    assert content_type.startswith("text/plain")
    s = _samples(body)
    assert _value(s, "obsqc_redis_up") == 1
    assert _value(s, "obsqc_queue_jobs", queue="qc", state="queued") == 5
    assert _value(s, "obsqc_queue_jobs", queue="qc", state="started") == 2
    assert _value(s, "obsqc_queue_jobs", queue="qc", state="failed") == 1
    assert _value(s, "obsqc_workers", queue="qc") == 3
    assert stats["workers"] == 3  # the caller's dict is left alone


def test_scrape_succeeds_when_the_queue_cannot_be_read(tmp_path):
    def redis_down() -> dict[str, int]:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    s = _samples(render_metrics(tmp_path / "metrics", redis_down)[0])
    assert _value(s, "obsqc_redis_up") == 0
    assert not any(name in ("obsqc_queue_jobs", "obsqc_workers") for name, _ in s)


def test_rq_queue_stats_against_an_unreachable_redis(tmp_path):
    from obsqc.service.queue import connect, make_queue
    from obsqc.service.redis_embedded import free_tcp_port

    queue = make_queue(connect(f"redis://127.0.0.1:{free_tcp_port()}/0"))
    s = _samples(render_metrics(tmp_path / "metrics", rq_queue_stats(queue))[0])
    assert _value(s, "obsqc_redis_up") == 0


def test_no_queue_collector_without_a_callable(tmp_path):
    body, _ = render_metrics(tmp_path / "fresh" / "metrics", None)  # a directory not yet there
    assert body == b""
    assert (tmp_path / "fresh" / "metrics").is_dir()


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("DECam", "DECam"),
        ("  r  ", "r"),
        ("", "unknown"),
        (None, "unknown"),
        ("\x00\x01", "??"),
        ("r\nDECam\tSDSS", "r?DECam?SDSS"),
        ("bad\udcffbyte", "bad?byte"),  # an undecodable header byte read with surrogateescape
        ('q"uote\\', 'q"uote\\'),  # printable: kept, the exposition escapes it
        (42, "42"),
        ("x" * 500, "x" * LABEL_MAX_CHARS),
    ],
)
def test_label_value(raw, clean):
    assert label_value(raw) == clean


def test_header_garbage_in_labels_renders_valid_output(metrics, tmp_path):
    instrument = "DEC\x00am\n" + "y" * 300
    metrics.exposure_judged(
        instrument=instrument,
        band='r"\\\udcff',
        verdict="ok",
        latency_s=1.0,
        step_s={},
        sigmas={"source": 0.5},
        flagged_ccds=[("N\x1b[31m4", "linear_feature")],
    )
    s = _samples(render_metrics(tmp_path / "metrics", None)[0])
    labels = dict(next(k[1] for k in s if k[0] == "obsqc_exposures_judged_total"))
    assert labels["instrument"] == label_value(instrument)
    assert len(labels["instrument"]) == LABEL_MAX_CHARS
    assert labels["band"] == 'r"\\?'
    flags = _value(s, "obsqc_ccd_flags_total", instrument=labels["instrument"], ccd="N?[31m4", flag="linear_feature")
    assert flags == 1


def test_identity_is_sanitised_into_safe_file_names(tmp_path, isolated):
    m = setup_metrics(tmp_path / "metrics", "worker_a/b c")
    m.job_retried()
    assert m.identity == "worker-a-b-c"
    assert _identities(tmp_path / "metrics") == {"worker-a-b-c"}
    m.close()
    with pytest.raises(ValueError, match="no usable characters"):
        setup_metrics(tmp_path / "metrics", "__/")


_CLAIM = (
    "import sys; from pathlib import Path; from obsqc.service.metrics import setup_metrics;"
    "m = setup_metrics(Path(sys.argv[1]), 'test'); m.job_retried(); print(m.identity)"
)


def test_an_identity_in_use_is_not_shared(metrics, tmp_path):
    import fcntl

    metrics_dir = tmp_path / "metrics"
    metrics.job_retried()
    other = _python(_CLAIM, str(metrics_dir))
    assert other.stdout.strip() == "test-child"  # free, so taken quietly
    with open(metrics_dir / "test-child.lock", "ab") as held:  # now both are held by a running process
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        third = _python(_CLAIM, str(metrics_dir))
    fallback = third.stdout.strip()
    assert fallback.startswith("test-child-") and fallback.rsplit("-", 1)[1].isdigit()
    assert "in use" in third.stderr
    assert _identities(metrics_dir) == {"test", "test-child", fallback}
    assert _value(_samples(render_metrics(metrics_dir, None)[0]), "obsqc_job_retries_total") == 3


def test_objects_of_an_earlier_setup_refuse_to_write(tmp_path, isolated):
    first = setup_metrics(tmp_path / "metrics", "one")
    second = setup_metrics(tmp_path / "metrics", "two")
    second.job_retried()
    with pytest.raises((TypeError, ValueError, AttributeError)):
        first.job_retried()
    second.close()
    first.close()
    s = _samples(render_metrics(tmp_path / "metrics", None)[0])
    assert _value(s, "obsqc_job_retries_total") == 1


def test_promtool_accepts_the_exposition(metrics, tmp_path):
    promtool = _promtool()
    metrics.exposure_received("DECam", "r")
    metrics.exposure_judged(
        instrument="DECam",
        band="r",
        verdict="bad",
        latency_s=4.2,
        step_s={"read_measure": 2.0, "score": 0.1, "store": 0.02},
        sigmas={"source": 7.5, "profile": 1.0, "background": math.inf, "line": None},
        flagged_ccds=[("N4", "linear_feature"), ("S1", "background_gradient")],
    )
    metrics.exposure_judged(
        instrument="\x00", band="", verdict="rejected", latency_s=None, step_s={}, sigmas={}, flagged_ccds=[]
    )
    metrics.job_failed("timeout")
    metrics.job_retried()
    metrics.http_request("GET", "/v1/exposures/{id}", 200, 0.01)
    for stats in (lambda: {"queued": 3, "started": 1, "failed": 0, "workers": 2}, lambda: 1 / 0):
        body, _ = render_metrics(tmp_path / "metrics", stats)
        result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert result.returncode == 0, (result.stdout + result.stderr).decode()
        names = {family.name for family in text_string_to_metric_families(body.decode())}
        assert all(name.startswith("obsqc_") for name in names)
    assert "obsqc_last_score_sigma" in names and "obsqc_redis_up" in names


def test_every_verdict_series_exists_from_the_first_verdict(metrics, tmp_path):
    """increase() over a window needs a sample before the first bad verdict: all verdicts start at 0."""
    metrics.exposure_judged(instrument="HSC", band="z", verdict="ok", latency_s=1.0, step_s={}, sigmas={},
                            flagged_ccds=[])
    s = _samples(render_metrics(tmp_path / "metrics", None)[0])
    assert _value(s, "obsqc_exposures_judged_total", instrument="HSC", band="z", verdict="ok") == 1
    for verdict in ("warn", "bad", "calibrating", "rejected", "error"):
        assert _value(s, "obsqc_exposures_judged_total", instrument="HSC", band="z", verdict=verdict) == 0
