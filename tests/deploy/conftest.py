"""Fixtures of the deployment tests: real tools, the store fixtures of tests/service, and a whole
observed service (``obsqc up`` scraped by a real Prometheus that evaluates the repository's rules).

``observed_service`` (session scope) is shared by the alert end-to-end test and the dashboard query
test. It starts ``obsqc up --no-simulate`` on a free port with ``OBSQC_HOME`` in a temporary directory,
and Debian's ``prometheus`` on another free port with a temporary storage directory, scraping and
evaluating every second. Its configuration is made from ``deploy/prometheus/prometheus.yml``: the same
job name, the repository's rule files unchanged, only the intervals, the target address and the
Alertmanager (none here) replaced. Before yielding it posts a normal night: the calibration exposures
of the simulated camera and a few normal ones, waits for their verdicts and for Prometheus to have
scraped them.

A tool that is missing skips its tests, except under ``CI`` where they fail (the pattern of
tests/service/test_metrics.py for promtool).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from obsqc.service.redis_embedded import free_tcp_port
# The database fixtures (SQLite and PostgreSQL, one schema per test) of the service tests.
from tests.service.conftest import database_url, postgres_admin_url  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

API_JOB = "obsqc-api"
"""Job name of the API in deploy/prometheus/prometheus.yml (kept by the end-to-end configuration)."""

TOKEN = "observed-service-token"
CALIBRATION_EXPOSURES = 10
"""Exposures of an (instrument, band) that calibrate its reference (the service's default)."""
NORMAL_EXPOSURES = 2
"""Normal exposures judged after calibration, before the fixture yields."""


METRIC_SOURCES = (REPO / "obsqc" / "service" / "metrics.py", REPO / "obsqc" / "service" / "ops_metrics.py")
"""Where every metric obsqc exports is defined."""

_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|GaugeMetricFamily|CounterMetricFamily|HistogramMetricFamily)\(\s*"
    r"[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']")
_PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                    "offset", "inf", "nan"}
_PROMQL_BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
"""Series Prometheus itself makes, usable beside obsqc's."""


def exported_metric_names() -> set[str]:
    """Sample names obsqc exports, read from the definitions in ``METRIC_SOURCES``: a counter's name
    (with ``_total``), a gauge's name, a histogram's ``_bucket``, ``_sum`` and ``_count``."""
    names = set()
    for source in METRIC_SOURCES:
        for kind, name in _DEFINITION.findall(source.read_text()):
            if kind.startswith("Counter"):
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind.startswith(("Histogram", "Summary")):
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
    return names


def recording_rule_names() -> set[str]:
    """Names recorded by the repository's rule files."""
    return {rule["record"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def known_series_names() -> set[str]:
    """What a rule or a dashboard may query: obsqc's metrics, the recording rules, Prometheus's own."""
    return exported_metric_names() | recording_rule_names() | _PROMQL_BUILTIN_SERIES


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, enough for our rules and dashboards):
    strings, label matchers, ranges and label lists of by/without/on/ignoring/group_* are dropped, then
    every identifier that is not a function call or a keyword is a metric name."""
    text = re.sub(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""", '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def pytest_collection_modifyitems(items) -> None:
    """Tests on the observed service share one xdist group: under ``--dist loadgroup`` (scripts/test.sh)
    they run in one worker, so one ``obsqc up`` and one Prometheus serve them all."""
    for item in items:
        if "observed_service" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("observed_service"))


def require_tool(name: str, package: str) -> str:
    """The path of ``name``; skip when missing, or fail when the ``CI`` variable is set."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this check must run)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool("amtool", "prometheus-alertmanager")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class ObservedService:
    """A running ``obsqc up`` and the Prometheus scraping it (see the module docstring).

    ``api_url``, ``prometheus_url``, ``token`` (for writes), ``home`` (OBSQC_HOME) and ``data`` (a data
    root where :meth:`make_exposure` writes).
    """

    api_url: str
    prometheus_url: str
    token: str
    home: Path
    data: Path
    logs: dict[str, Path] = field(default_factory=dict)
    night_ids: list[str] = field(default_factory=list)
    """Ids of the normal night posted by the fixture (calibration, then normal exposures)."""
    night_span: tuple[float, float] = (0.0, 0.0)
    """Unix times from the first POST of the night to when Prometheus had evaluated its last verdict."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds each phase of the fixture took (simulate, start, calibrate, judge, scrape): for slow runs."""
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1000))

    def client(self) -> httpx.Client:
        """An HTTP client of the API carrying the token."""
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def make_exposure(self, kind: str | None = None, seed: int = 0, *, strength: str = "prominent") -> Path:
        """A simulated exposure of the simulator's camera (size ``small``) under the data root: normal
        when ``kind`` is None, else spoiled by that anomaly of :data:`obsqc.sim.ANOMALY_CLASSES`. Every call
        gets a new exposure number, so every file is a new exposure."""
        from obsqc.sim import simulate_exposure

        number = next(self._ids)
        path = self.data / f"exp_{number}_{kind or 'normal'}_{seed}.fits"
        simulate_exposure(size="small", seed=seed, exposure_id=number, anomaly=kind,
                          strength=strength if kind else None).writeto(path)
        return path

    def post(self, path: Path) -> str:
        """POST the exposure at ``path`` (by path, as a pipeline does); returns its id."""
        with self.client() as client:
            answer = client.post("/v1/exposures", json={"path": str(path)})
        assert answer.status_code in (200, 202), answer.text
        return answer.json()["id"]

    def wait_verdict(self, exposure_id: str, timeout_s: float = 120.0) -> dict:
        """The exposure's record once it has a verdict (polls the API)."""
        deadline = time.monotonic() + timeout_s
        body: dict = {}
        with self.client() as client:
            while time.monotonic() < deadline:
                body = client.get(f"/v1/exposures/{exposure_id}").json()
                if body.get("verdict") is not None:
                    return body
                time.sleep(0.1)
        raise AssertionError(f"no verdict for {exposure_id} in {timeout_s} s: {body}\n{self.log_tails()}")

    def query(self, promql: str) -> list:
        """Instant query through Prometheus's HTTP API; the ``result`` list. Raises on an error status."""
        answer = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
        body = answer.json()
        if answer.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed ({answer.status_code}): {body}")
        return body["data"]["result"]

    def wait_query(self, promql: str, timeout_s: float = 30.0, until=bool) -> list:
        """Repeat :meth:`query` until ``until(result)`` is true; the last result. Raises on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if until(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql!r} still gives {result} after {timeout_s} s")
            time.sleep(0.5)

    def alerts(self, alertname: str, state: str = "firing") -> list:
        """The ``ALERTS`` series of ``alertname`` in ``state`` (their label dicts)."""
        return [r["metric"] for r in self.query(f'ALERTS{{alertname="{alertname}",alertstate="{state}"}}')]

    def log_tails(self) -> str:
        return "\n".join(f"--- {name} ---\n{_tail(path)}" for name, path in self.logs.items())


def e2e_prometheus_config(api_target: str) -> dict:
    """deploy/prometheus/prometheus.yml made fit for the test: 1 s intervals, the repository's rule files
    (absolute paths, unchanged), only the API job, pointed at ``api_target``, and no Alertmanager."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config["rule_files"] = [str(p) for p in RULE_FILES]
    config.pop("alerting", None)
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == API_JOB]
    assert jobs, f"{PROMETHEUS_CONFIG} has no job {API_JOB!r}"
    job = dict(jobs[0])
    job.pop("scrape_interval", None)
    job.pop("scrape_timeout", None)
    job.pop("dns_sd_configs", None)
    job.pop("kubernetes_sd_configs", None)
    job.pop("relabel_configs", None)
    job["static_configs"] = [{"targets": [api_target]}]
    config["scrape_configs"] = [job]
    return config


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with code {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not answer {url} in {timeout_s} s:\n{_tail(log)}")
        time.sleep(0.3)


def _stop(process: subprocess.Popen | None, sig: int, timeout_s: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def observed_service(tmp_path_factory) -> ObservedService:
    """A normal night judged by ``obsqc up`` and scraped by a real Prometheus (see the module docstring)."""
    prometheus = require_tool("prometheus", "prometheus")
    root = tmp_path_factory.mktemp("observed")
    home, storage = root / "home", root / "prometheus-data"
    data = home / "incoming"
    data.mkdir(parents=True)
    logs = {"obsqc up": root / "obsqc-up.log", "prometheus": root / "prometheus.log"}
    api_port, prom_port = free_tcp_port(), free_tcp_port()
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(e2e_prometheus_config(f"127.0.0.1:{api_port}"), sort_keys=False))

    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
    env.update(OBSQC_HOME=str(home), OBSQC_API_TOKEN=TOKEN, OBSQC_RETRY_BACKOFF_S="[0]",
               OBSQC_MIN_REFERENCE_EXPOSURES=str(CALIBRATION_EXPOSURES))
    up = prom = None
    with logs["obsqc up"].open("w") as up_log, logs["prometheus"].open("w") as prom_log:
        try:
            up = subprocess.Popen(
                [sys.executable, "-m", "obsqc", "up", "--no-simulate", "--port", str(api_port), "--workers", "2"],
                env=env, stdout=up_log, stderr=subprocess.STDOUT, text=True)
            prom = subprocess.Popen(
                [prometheus, f"--config.file={config_path}", f"--storage.tsdb.path={storage}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                stdout=prom_log, stderr=subprocess.STDOUT, cwd=root)
            service = ObservedService(api_url=f"http://127.0.0.1:{api_port}",
                                      prometheus_url=f"http://127.0.0.1:{prom_port}",
                                      token=TOKEN, home=home, data=data, logs=logs)
            # Simulate the night in the background while both start and while the service judges the
            # first exposures (each is posted as soon as it is written).
            clock = time.monotonic()

            def phase(name: str) -> None:
                nonlocal clock
                service.timings[name] = round(time.monotonic() - clock, 1)
                clock = time.monotonic()

            with ThreadPoolExecutor(1) as simulator:
                night = [simulator.submit(service.make_exposure, None, seed)
                         for seed in range(CALIBRATION_EXPOSURES + NORMAL_EXPOSURES)]
                _wait_http(f"{service.api_url}/readyz", up, logs["obsqc up"], 120, "obsqc up")
                _wait_http(f"{service.prometheus_url}/-/ready", prom, logs["prometheus"], 60, "prometheus")
                phase("start")
                started = time.time()
                ids = [service.post(path.result()) for path in night[:CALIBRATION_EXPOSURES]]
                phase("simulate")
                verdicts = [service.wait_verdict(i)["verdict"] for i in ids]
                assert verdicts.count("calibrating") >= CALIBRATION_EXPOSURES - 2, verdicts  # two workers race
                phase("calibrate")
                normal = [service.post(path.result()) for path in night[CALIBRATION_EXPOSURES:]]
                normal = [service.wait_verdict(i) for i in normal]
            assert all(body["verdict"] == "ok" for body in normal), normal
            service.night_ids = ids + [body["id"] for body in normal]
            phase("judge")
            # Prometheus has scraped every verdict, and evaluated the rules on it, before anyone looks.
            service.wait_query("sum(obsqc_exposures_judged_total)", 30,
                               until=lambda r: r and float(r[0]["value"][1]) >= len(night))
            time.sleep(3)
            service.night_span = (started, time.time())
            phase("scrape")
            yield service
        finally:
            _stop(up, signal.SIGINT, 90)
            _stop(prom, signal.SIGTERM, 30)
