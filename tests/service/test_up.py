"""End to end: ``obsqc up`` in a subprocess, exposures posted over HTTP, verdicts polled back.

Everything is real: the embedded redis-server, SQLite, the uvicorn API, the RQ workers. A normal and
a spoiled exposure get the right verdicts; a work horse killed mid-job still leaves its exposure judged
exactly once; ``/metrics`` passes ``promtool check metrics``; Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from obsqc.models.onnx_scoring import default_model_dir
from obsqc.service.redis_embedded import free_tcp_port
from obsqc.sim import simulate_exposure
from tests.service.test_worker import _grandchildren, _settled_grandchildren, _work_horse

TOKEN = "e2e-token"


def _post(client: httpx.Client, path: Path) -> str:
    answer = client.post("/v1/exposures", json={"path": str(path)})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def wait_ready(client: httpx.Client, up: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Poll ``/readyz`` of an ``obsqc up`` subprocess until it answers 200; fail with its output if it exits
    or the timeout passes. ``client`` has the service's base URL."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert up.poll() is None, up.stdout.read() if up.stdout else f"obsqc up exited with {up.returncode}"
        assert time.monotonic() < deadline, "obsqc up did not become ready"
        time.sleep(0.2)


def _wait_verdict(client: httpx.Client, exposure_id: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/exposures/{exposure_id}").json()
        if body.get("verdict") is not None:
            return body
        time.sleep(0.1)
    raise AssertionError(f"no verdict for {exposure_id} in {timeout_s} s: {body}")


def _worker_supervisor(up_pid: int) -> int:
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            cmdline = (pid / "cmdline").read_bytes().split(b"\0")
            stat = (pid / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == up_pid and b"worker" in cmdline and b"gpu" not in cmdline:
            return int(pid.name)
    raise AssertionError("the workers of obsqc up were not found")


@pytest.mark.slow
def test_obsqc_up_judges_posted_exposures_and_stops_cleanly(tmp_path):
    home = tmp_path / "home"
    data = home / "incoming"
    data.mkdir(parents=True)
    port = free_tcp_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
    env.update(OBSQC_HOME=str(home), OBSQC_API_TOKEN=TOKEN, OBSQC_MIN_REFERENCE_EXPOSURES="8",
               OBSQC_RETRY_BACKOFF_S="[0]")
    up = subprocess.Popen([sys.executable, "-m", "obsqc", "up", "--no-simulate", "--port", str(port), "--workers", "2"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    try:
        wait_ready(client, up)

        def exposure(seed: int, **kwargs) -> Path:
            path = data / f"exp{seed}.fits"
            simulate_exposure(size="small", seed=seed, exposure_id=500 + seed, **kwargs).writeto(path)
            return path

        calibration = [_post(client, exposure(seed)) for seed in range(10)]
        verdicts = [_wait_verdict(client, i)["verdict"] for i in calibration]
        assert verdicts[:6] == ["calibrating"] * 6, verdicts  # two workers: the 8th may already be judged

        normal = _post(client, exposure(10))
        spoiled = _post(client, exposure(11, anomaly="readout_stripes", strength="prominent"))
        normal_body, spoiled_body = _wait_verdict(client, normal), _wait_verdict(client, spoiled)
        assert normal_body["verdict"] == "ok", normal_body
        assert spoiled_body["verdict"] == "bad", spoiled_body
        names = {f["name"] for f in spoiled_body["flags"]}
        assert "background_gradient" in names or "background_large_scale" in names
        assert any(f["ccds"] for f in spoiled_body["flags"])

        # The learned scorers (the shipped weights): the verdict carries the autoencoder indicator, and the
        # galaxies follow it, listed with their scores and drawn as PNGs.
        assert normal_body["autoencoder"]["n_stamps"] > 0 and normal_body["autoencoder"]["mse"] > 0
        if (default_model_dir() / "galaxy_scorer.onnx").exists():
            deadline = time.monotonic() + 120
            while (galaxies := client.get(f"/v1/exposures/{normal}").json()["galaxies"])["status"] == "pending":
                assert time.monotonic() < deadline, "the galaxies of the normal exposure were never scored"
                time.sleep(0.3)
            assert galaxies["status"] == "done" and galaxies["n"] > 0, galaxies
            listed = client.get("/v1/galaxies", params={"exposure_id": normal, "sort": "s_anom"}).json()["items"]
            assert len(listed) == galaxies["n"]
            assert all(g["scores"]["s_disc"]["sigma"] is not None for g in listed)
            png = client.get(listed[0]["links"]["residual"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"

        # Re-posting is idempotent: the same record, no second job.
        again = client.post("/v1/exposures", json={"path": str(data / "exp10.fits")})
        assert again.status_code == 200 and again.json()["id"] == normal

        # A work horse killed mid-job: the exposure is retried and judged exactly once.
        supervisor = _worker_supervisor(up.pid)
        before = _settled_grandchildren(supervisor)
        victim = _post(client, exposure(12))
        horse = _work_horse(supervisor, before)
        deadline = time.monotonic() + 30
        while client.get(f"/v1/exposures/{victim}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the victim never started"
            time.sleep(0.02)
        os.kill(horse, signal.SIGKILL)
        victim_body = _wait_verdict(client, victim)
        assert victim_body["verdict"] in ("ok", "warn", "bad")
        assert victim_body["attempts"] == 2
        listed = client.get("/v1/exposures", params={"limit": 1000}).json()["items"]
        assert [item["id"] for item in listed].count(victim) == 1

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'obsqc_exposures_judged_total{band="r",instrument="SIMCAM",verdict="bad"} 1.0' in metrics.text
        promtool = shutil.which("promtool")
        if promtool:
            check = subprocess.run([promtool, "check", "metrics"], input=metrics.text, capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        client.close()
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=90)
    assert up.returncode == 0, out
    assert "obsqc stopped" in out
    assert not (home / "redis" / "redis.sock").exists() or _no_server(home / "redis" / "redis.sock")


def _no_server(socket_path: Path) -> bool:
    import redis

    try:
        redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return True
    return False


def test_the_api_and_workers_stop_when_obsqc_up_is_killed_outright(tmp_path):
    """kill -9 of obsqc up leaves no orphan API or worker (they follow it: service/lifecycle.py), so a
    later obsqc up finds its port free and no stray worker takes jobs from its queue."""
    from tests.service.test_worker import _children

    home = tmp_path / "home"
    port = free_tcp_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
    env.update(OBSQC_HOME=str(home), OBSQC_API_TOKEN=TOKEN, OBSQC_LEARNED_SCORERS="false")
    up = subprocess.Popen([sys.executable, "-m", "obsqc", "up", "--no-simulate", "--port", str(port), "--workers", "1"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_ready(client, up)
        followers = []
        for pid in _children(up.pid):
            try:
                if b"OBSQC_PARENT_PID=" in Path(f"/proc/{pid}/environ").read_bytes():
                    followers.append(pid)
            except OSError:
                pass
        assert len(followers) == 2, followers  # the API and the qc worker supervisor
        up.kill()
        up.wait(timeout=10)
        deadline = time.monotonic() + 60
        while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in followers):
            assert time.monotonic() < deadline, f"still running after obsqc up died: {followers}"
            time.sleep(0.2)
    finally:
        if up.poll() is None:
            up.kill()
        for pid in _children(up.pid) if up.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        _stop_orphan_redis(home)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _stop_orphan_redis(home: Path) -> None:
    """The embedded redis-server does not follow obsqc up (README: it keeps the queue on disk); stop it."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"redis-server" in cmd and str(home).encode() in cmd:
                os.kill(int(entry.name), signal.SIGTERM)
