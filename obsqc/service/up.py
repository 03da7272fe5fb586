"""``obsqc up``: the whole service on one machine, with embedded defaults.

It starts, in this order, and stops in the reverse order on Ctrl-C (or SIGTERM):

1. a Redis server of its own (:mod:`obsqc.service.redis_embedded`; data and AOF under
   ``OBSQC_HOME/redis``), unless ``OBSQC_REDIS_URL`` points at one;
2. the verdict store (SQLite under ``OBSQC_HOME`` unless ``OBSQC_DATABASE_URL`` says otherwise),
   migrated to the latest revision;
3. the API (``obsqc serve``) and the workers (``obsqc worker --workers N``) as child processes;
4. with ``--simulate``, a simulated telescope: every few seconds it writes a simulated exposure under
   ``OBSQC_HOME/incoming`` (a data root) and posts it to the API like a pipeline would, mostly
   normal exposures, and after the first ones (which calibrate the reference) now and then a spoiled one;
5. a watcher that prints each verdict as it arrives.

A token for writes is taken from ``OBSQC_API_TOKEN``, or generated once and kept in
``OBSQC_HOME/api_token`` (mode 0600), so ``obsqc submit`` on the same machine finds it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from obsqc.service.lifecycle import PARENT_ENV
from obsqc.service.redis_embedded import EmbeddedRedis
from obsqc.service.settings import Settings

__all__ = ["Stack", "load_or_create_token", "run_up"]


def load_or_create_token(home: Path) -> str:
    """The API token kept in ``home/api_token``, created (random, mode 0600) when missing."""
    path = home / "api_token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


@dataclass
class Stack:
    """The running parts of ``obsqc up`` (each may be absent when not started yet)."""

    settings: Settings
    host: str
    port: int
    token: str
    redis: EmbeddedRedis | None = None
    api: subprocess.Popen | None = None
    workers: subprocess.Popen | None = None
    gpu_workers: subprocess.Popen | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def child_env(self) -> dict[str, str]:
        """Environment of the API and worker processes: the resolved settings, nothing guessed twice."""
        s = self.settings
        env = dict(os.environ)
        env.update(
            OBSQC_HOME=str(s.home), OBSQC_REDIS_URL=s.redis_url, OBSQC_DATABASE_URL=s.database_url,
            OBSQC_API_TOKEN=self.token, OBSQC_DATA_ROOTS=json.dumps([str(p) for p in s.data_roots]),
            OBSQC_METRICS_DIR=str(s.metrics_dir),
        )
        env[PARENT_ENV] = str(os.getpid())  # they stop when obsqc up dies, even by kill -9 (lifecycle.py)
        return env

    def stop(self, log=print) -> None:
        """Stop everything, newest first: telescope and watcher, workers (finish their job), API, Redis."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)
        for name, process, grace in (("workers", self.workers, 60), ("galaxy workers", self.gpu_workers, 60),
                                     ("API", self.api, 15)):
            if process is None or process.poll() is not None:
                continue
            log(f"stopping the {name} ...")
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"the {name} did not stop in {grace} s; killing them")
                process.kill()
                process.wait()
        if self.redis is not None:
            log("stopping Redis (its append-only file keeps the queue) ...")
            self.redis.stop()


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with code {process.returncode} while starting")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer {url}/healthz in {timeout_s:.0f} s")


def _telescope(stack: Stack, interval_s: float, size: str, calibration_exposures: int, log) -> None:
    """Post a simulated exposure every ``interval_s``: the first ``calibration_exposures`` normal, then
    one in four spoiled (each anomaly class in turn, prominent)."""
    from obsqc.sim import ANOMALY_CLASSES, simulate_exposure

    incoming = Path(stack.settings.data_roots[0]) / "telescope"
    incoming.mkdir(parents=True, exist_ok=True)
    first = int(time.time()) % 1_000_000 * 100  # exposure numbers that do not repeat across runs
    n = 0
    client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30)
    while not stack.stop_event.is_set():
        t0 = time.monotonic()
        spoiled = n >= calibration_exposures and n % 4 == 3
        anomaly = ANOMALY_CLASSES[(n // 4) % len(ANOMALY_CLASSES)] if spoiled else None
        number = first + n
        try:
            hdus = simulate_exposure(size=size, seed=number, exposure_id=number, anomaly=anomaly)
            path = incoming / f"exp_{number}.fits"
            partial = path.with_suffix(".fits.part")
            hdus.writeto(partial, overwrite=True)
            os.replace(partial, path)  # the API never sees a half-written file
            answer = client.post("/v1/exposures", json={"path": str(path)})
            what = f"spoiled: {anomaly}" if anomaly else "normal"
            log(f"telescope  posted {number} ({what}) -> HTTP {answer.status_code}")
        except Exception as exc:  # the demo telescope must not take the service down
            log(f"telescope  could not post exposure {number}: {exc}")
        n += 1
        stack.stop_event.wait(max(0.0, interval_s - (time.monotonic() - t0)))
    client.close()


def _watcher(stack: Stack, log) -> None:
    """Print every verdict once, as it arrives, then its galaxy scores when they follow (polls the API like
    an operator's script would)."""
    client = httpx.Client(base_url=stack.url, timeout=10)
    seen: set[str] = set()
    galaxies_of: set[str] = set()  # judged exposures whose galaxy scores are still to come
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    while not stack.stop_event.wait(1.0):
        try:
            cursor = None
            while True:
                params = {"since": since, "limit": 200} | ({"cursor": cursor} if cursor else {})
                page = client.get("/v1/exposures", params=params).json()
                for item in page.get("items", []):
                    if item["id"] in seen or item.get("verdict") is None:
                        continue
                    seen.add(item["id"])
                    flags = ", ".join(f["name"] + (f" ({', '.join(f['ccds'])})" if f.get("ccds") else "")
                                      for f in item.get("flags") or [] if isinstance(f, dict))
                    latency = item.get("latency_s")
                    took = f" in {latency:.1f} s" if isinstance(latency, (int, float)) else ""
                    log(f"verdict    {item['id']}: {item['verdict'].upper()}{took}"
                        f"{' - ' + flags if flags else ''}  {stack.url}/v1/exposures/{item['id']}")
                    galaxies_of.add(item["id"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            for exposure_id in sorted(galaxies_of):
                _report_galaxies(client, stack.url, exposure_id, galaxies_of, log)
        except (httpx.HTTPError, ValueError, KeyError):
            continue
    client.close()


def _report_galaxies(client: httpx.Client, url: str, exposure_id: str, waiting: set[str], log) -> None:
    """Print the galaxy scores of an exposure once they have arrived (they follow its verdict)."""
    record = client.get(f"/v1/exposures/{exposure_id}").json()
    galaxies = record.get("galaxies") or {}
    status = galaxies.get("status")
    if status in (None, "pending"):
        return
    waiting.discard(exposure_id)
    if status == "done":
        log(f"galaxies   {exposure_id}: {galaxies.get('n')} scored, {galaxies.get('n_anomalies')} above 3 sigma "
            f"(s_disc)  {galaxies.get('url')}&min_sigma=3")
    elif status == "error":
        log(f"galaxies   {exposure_id}: scoring failed ({galaxies.get('reason')})")


def run_up(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    simulate: bool = True,
    interval_s: float = 5.0,
    size: str = "small",
    log=print,
) -> int:
    """Run the whole service until Ctrl-C or SIGTERM; returns the exit code."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    token = settings.api_token or load_or_create_token(home)
    if not settings.data_roots:
        settings.data_roots = [home / "incoming"]
    for root in settings.data_roots:
        Path(root).mkdir(parents=True, exist_ok=True)
    stack = Stack(settings=settings, host=host, port=port, token=token)

    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum
        stack.stop_event.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.redis_url is None:
            stack.redis = EmbeddedRedis(home / "redis")
            settings.redis_url = stack.redis.start()
            log(f"redis      {settings.redis_url} (embedded; data in {stack.redis.directory})")
        else:
            log(f"redis      {settings.redis_url} (OBSQC_REDIS_URL)")
        from obsqc.service.store import upgrade

        upgrade(settings.database_url)
        shutil.rmtree(settings.metrics_dir, ignore_errors=True)  # multiprocess files of an earlier run
        Path(settings.metrics_dir).mkdir(parents=True, exist_ok=True)
        env = stack.child_env()
        stack.api = subprocess.Popen([sys.executable, "-m", "obsqc", "serve", "--host", host, "--port", str(port),
                                      "--log-level", "WARNING"], env=env, start_new_session=True)
        stack.workers = subprocess.Popen([sys.executable, "-m", "obsqc", "worker", "--workers", str(workers),
                                          "--log-level", "WARNING"], env=env, start_new_session=True)
        if settings.learned_scorers:  # galaxies are scored on queue "gpu" (on the CPU here: onnxruntime)
            stack.gpu_workers = subprocess.Popen([sys.executable, "-m", "obsqc", "worker", "--queue", "gpu",
                                                  "--workers", "1", "--log-level", "WARNING"], env=env,
                                                 start_new_session=True)
        _wait_healthy(stack.url, stack.api)
        log("")
        log(f"obsqc is up: API {stack.url}  ({workers} workers, data in {home})")
        log(f"  pages         {stack.url}/ui  (exposures, focal plane, galaxy gallery)")
        log(f"  API docs      {stack.url}/docs")
        log(f"  verdicts      {stack.url}/v1/exposures")
        log(f"  metrics       {stack.url}/metrics")
        log(f"  readiness     {stack.url}/readyz")
        log(f"  submit        OBSQC_API_TOKEN=$(cat {home / 'api_token'}) obsqc submit --url {stack.url} FILE.fits"
            if not settings.api_token else f"  submit        obsqc submit --url {stack.url} FILE.fits")
        log(f"  data roots    {', '.join(str(p) for p in settings.data_roots)}")
        log("Ctrl-C stops everything.")
        log("")
        stack.threads.append(threading.Thread(target=_watcher, args=(stack, log), name="watcher", daemon=True))
        if simulate:
            stack.threads.append(threading.Thread(
                target=_telescope, args=(stack, interval_s, size, settings.min_reference_exposures, log),
                name="telescope", daemon=True))
        for thread in stack.threads:
            thread.start()
        while not stack.stop_event.wait(0.5):
            for name, process in (("API", stack.api), ("workers", stack.workers), ("galaxy workers", stack.gpu_workers)):
                if process is not None and process.poll() is not None:
                    log(f"the {name} stopped unexpectedly (exit code {process.returncode}); stopping everything")
                    stack.stop_event.set()
                    stopping["signal"] = "failure"
        log("")
        log("stopping ...")
        return 1 if stopping["signal"] == "failure" else 0
    finally:
        stack.stop(log)
        for s, handler in previous.items():
            signal.signal(s, handler)
        log("obsqc stopped; nothing queued is lost (Redis AOF and the verdict store are under "
            f"{home}).")
