"""Service benchmarks: POST -> stored verdict latency of DECam-sized exposures, 1 vs 2 workers, and
``GET /v1/exposures/{id}`` at a fixed request rate while the workers are busy.

Everything runs for real: ``obsqc up --no-simulate`` in a subprocess (embedded Redis, SQLite, uvicorn,
RQ workers), files posted by path like a pipeline would. Targets (issue 3): median latency <= 10 s with 2
workers on 2 cores; throughput with 2 workers >= 1.7x that with 1; GET at 200 req/s with p99 <= 50 ms.

    python benchmarks/bench_service.py --exposure decam.fits --out bench-service.json
    python benchmarks/bench_service.py --quick          # small exposures, a minute, for a smoke run

Without ``--exposure`` a DECam exposure (62 CCDs of 2048x4096, 2 GB float32) is simulated first
(about 75 s). Copies with distinct EXPNUM are written next to it (one per posted exposure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from astropy.io import fits

TOKEN = "bench-token"


def _free_port() -> int:
    from obsqc.service.redis_embedded import free_tcp_port

    return free_tcp_port()


class Up:
    """``obsqc up --no-simulate`` with ``workers`` workers on ``home`` (reused between phases)."""

    def __init__(self, home: Path, data: Path, workers: int):
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
        env.update(OBSQC_HOME=str(home), OBSQC_API_TOKEN=TOKEN, OBSQC_DATA_ROOTS=json.dumps([str(data)]),
                   OBSQC_MIN_REFERENCE_EXPOSURES="3")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "obsqc", "up", "--no-simulate", "--port", str(self.port), "--workers", str(workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        deadline = time.monotonic() + 180
        while True:
            try:
                if self.client.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("obsqc up did not become ready")
            time.sleep(0.3)

    def post(self, item: tuple[Path, str]) -> str:
        path, exposure_id = item
        answer = self.client.post("/v1/exposures", json={"path": str(path), "exposure_id": exposure_id})
        answer.raise_for_status()
        return answer.json()["id"]

    def wait(self, exposure_id: str, poll_s: float = 0.02, timeout_s: float = 600) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = self.client.get(f"/v1/exposures/{exposure_id}").json()
            if body.get("verdict") is not None:
                return body
            time.sleep(poll_s)
        raise TimeoutError(exposure_id)

    def stop(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(120)


def make_copies(source: Path, out: Path, first_id: int, n: int) -> list[tuple[Path, str]]:
    """``n`` (path, exposure id) pairs that all share one copy of ``source`` with its id cards removed:
    hard links, so the pixels are read from the page cache like a freshly written file would be, and
    the API takes each exposure id from the request (DESIGN.md: no id in the header -> the id given)."""
    anonymous = out / "anonymous.fits"
    if not anonymous.exists():
        shutil.copyfile(source, anonymous)
        with fits.open(anonymous, mode="update") as hdus:
            for key in ("EXPNUM", "EXPID", "OBSID"):
                hdus[0].header.remove(key, ignore_missing=True)
    pairs = []
    for i in range(n):
        path = out / f"bench_{first_id + i}.fits"
        if not path.exists():
            os.link(anonymous, path)
        pairs.append((path, f"bench-{first_id + i}"))
    return pairs


async def _load(url: str, path: str, rps: float, duration_s: float) -> list[float]:
    """Open-loop GETs at ``rps`` for ``duration_s``: every request is sent on schedule, whatever the
    previous ones do, so a slow server shows up as latency (no coordinated omission)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        async def one() -> None:
            t0 = time.perf_counter()
            try:
                response = await client.get(path)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            # a failed or timed-out request counts as infinitely slow: it is in the tail, never dropped
            latencies.append(time.perf_counter() - t0 if ok else float("inf"))

        tasks = []
        start = time.perf_counter()
        for k in range(int(rps * duration_s)):
            delay = start + k / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def _batch(up: Up, paths: list[tuple[Path, str]]) -> dict:
    """Post every path at once; throughput from the first receipt to the last stored verdict."""
    ids = [up.post(p) for p in paths]
    bodies = [up.wait(i, poll_s=0.2) for i in ids]
    received = min(np.datetime64(b["received_at"].replace("Z", "")) for b in bodies)
    finished = max(np.datetime64(b["finished_at"].replace("Z", "")) for b in bodies)
    elapsed = float((finished - received) / np.timedelta64(1, "ms")) / 1000.0
    return {"n": len(ids), "elapsed_s": round(elapsed, 2), "exposures_per_min": round(60 * len(ids) / elapsed, 2),
            "verdicts": [b["verdict"] for b in bodies]}


def run(exposure: Path, work: Path, *, latency_runs: int, batch: int, rps: float, load_s: float) -> dict:
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    copies = make_copies(exposure, work, int(time.time()) % 100000 * 100, latency_runs + 2 * batch)
    result: dict = {"exposure": {"file_bytes": exposure.stat().st_size}}
    with fits.open(exposure) as hdus:
        result["exposure"]["ccds"] = sum(1 for h in hdus if h.is_image and h.data is not None)

    up = Up(home, work, workers=2)
    try:
        latencies, server = [], []
        for path in copies[:latency_runs]:
            t0 = time.perf_counter()
            body = up.wait(up.post(path))
            latencies.append(time.perf_counter() - t0)
            server.append(body["latency_s"])
        result["latency_2_workers"] = {
            "runs_s": [round(x, 2) for x in latencies], "median_s": round(statistics.median(latencies), 2),
            "median_server_s": round(statistics.median(server), 2), "target_s": 10.0,
            "timings_last": body.get("timings"),
        }
        print(json.dumps(result["latency_2_workers"]), flush=True)
    finally:
        up.stop()

    throughput = {}
    for workers, chunk in ((1, copies[latency_runs:latency_runs + batch]), (2, copies[latency_runs + batch:])):
        up = Up(home, work, workers=workers)
        try:
            if workers == 2:
                target_id = up.client.get("/v1/exposures", params={"limit": 1}).json()["items"][0]["id"]
                loaded: dict = {}

                def load() -> None:
                    time.sleep(1.0)  # let the workers start on the batch
                    loaded["lat"] = asyncio.run(_load(up.url, f"/v1/exposures/{target_id}", rps, load_s))

                thread = threading.Thread(target=load)
                thread.start()
                throughput[workers] = _batch(up, chunk)
                thread.join()
                lat = np.array(loaded.get("lat", [float("inf")])) * 1000
                result["api_get_under_load"] = {
                    "rps": rps, "duration_s": load_s, "requests": int(lat.size),
                    "failed": int(np.isinf(lat).sum()),
                    "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                    "max_ms": round(float(lat.max()), 1), "target_p99_ms": 50.0,
                }
            else:
                throughput[workers] = _batch(up, chunk)
            print(f"{workers} worker(s): {json.dumps(throughput[workers])}", flush=True)
        finally:
            up.stop()
    result["throughput"] = {f"{w}_workers": t for w, t in throughput.items()}
    result["throughput"]["ratio_2_vs_1"] = round(
        throughput[2]["exposures_per_min"] / throughput[1]["exposures_per_min"], 2)
    result["throughput"]["target_ratio"] = 1.7
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exposure", type=Path, help="a DECam-sized FITS exposure (simulated when absent)")
    parser.add_argument("--work", type=Path, help="folder for copies and the service's state (default: a temp dir)")
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=6, help="exposures per throughput batch")
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="small simulated exposures: a smoke run, not the figure")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="obsqc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    exposure = args.exposure
    if exposure is None:
        from obsqc.sim import simulate_exposure

        size = "small" if args.quick else "decam"
        exposure = work / f"{size}.fits"
        if not exposure.exists():
            print(f"simulating a {size} exposure into {exposure} ...", flush=True)
            simulate_exposure(size=size, seed=1, exposure_id=1).writeto(exposure)
    if args.quick:
        args.latency_runs, args.batch, args.load_seconds = 3, 3, 3.0
    print(f"posting copies of {exposure} ...", flush=True)
    result = run(exposure, work, latency_runs=args.latency_runs, batch=args.batch, rps=args.rps,
                 load_s=args.load_seconds)
    result["date"] = time.strftime("%Y-%m-%d")
    result["cpus"] = os.cpu_count()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
