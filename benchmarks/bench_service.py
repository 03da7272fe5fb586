"""Service benchmarks: POST -> stored verdict latency of DECam-sized exposures, 1 vs 2 workers, and
``GET /v1/exposures/{id}`` at a fixed request rate while the workers are busy.

Everything runs for real: ``obsqc up --no-simulate`` in a subprocess (embedded Redis, SQLite, uvicorn,
RQ workers), files posted by path like a pipeline would. Four phases, each on a fresh ``obsqc up`` over
the same state: latency (one exposure at a time, 2 workers, ``--latency-threads`` threads each);
a batch with 1 worker and a batch with 2 (``--throughput-threads`` each); a third batch with 2 workers
while a separate process sends GETs on an open-loop schedule. Targets (issue 3): median latency <= 10 s with 2
workers on 2 cores; throughput with 2 workers >= 1.7x that with 1; GET at 200 req/s with p99 <= 50 ms.

    python benchmarks/bench_service.py --exposure decam.fits --out bench-service.json
    python benchmarks/bench_service.py --quick          # small exposures, a minute, for a smoke run

Without ``--exposure`` a DECam exposure (62 CCDs of 2048x4096, 2 GB float32) is simulated first
(about 75 s). Copies with distinct EXPNUM are written next to it (one per posted exposure).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
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

    def __init__(self, home: Path, data: Path, workers: int, settings: dict[str, str] | None = None):
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
        env.update(OBSQC_HOME=str(home), OBSQC_API_TOKEN=TOKEN, OBSQC_DATA_ROOTS=json.dumps([str(data)]),
                   OBSQC_MIN_REFERENCE_EXPOSURES="3")
        env.update(settings or {})
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


def _load_in_process(url: str, path: str, rps: float, duration_s: float) -> list[float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from openloop import open_loop_get

    return open_loop_get(url, path, rps=rps, duration_s=duration_s)


def load_elsewhere(url: str, path: str, rps: float, duration_s: float) -> list[float]:
    """Open-loop GETs (:mod:`benchmarks.openloop`) from a process of their own, so that the load generator
    shares no GIL with the driver; latencies in schedule order."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_load_in_process, url, path, rps, duration_s).result()


def _batch(up: Up, paths: list[tuple[Path, str]]) -> dict:
    """Post every path at once; throughput from the first receipt to the last stored verdict."""
    ids = [up.post(p) for p in paths]
    bodies = [up.wait(i, poll_s=0.2) for i in ids]
    received = min(np.datetime64(b["received_at"].replace("Z", "")) for b in bodies)
    finished = max(np.datetime64(b["finished_at"].replace("Z", "")) for b in bodies)
    elapsed = float((finished - received) / np.timedelta64(1, "ms")) / 1000.0
    return {"n": len(ids), "elapsed_s": round(elapsed, 2), "exposures_per_min": round(60 * len(ids) / elapsed, 2),
            "verdicts": [b["verdict"] for b in bodies]}


def run(exposure: Path, work: Path, *, latency_runs: int, batch: int, rps: float, load_s: float,
        latency_settings: dict[str, str], throughput_settings: dict[str, str], get_repeats: int = 3) -> dict:
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    copies = make_copies(exposure, work, int(time.time()) % 100000 * 100, latency_runs + (2 + get_repeats) * batch)
    result: dict = {"exposure": {"file_bytes": exposure.stat().st_size}}
    with fits.open(exposure) as hdus:
        result["exposure"]["ccds"] = sum(1 for h in hdus if h.is_image and h.data is not None)

    result["settings"] = {"latency": latency_settings, "throughput": throughput_settings}
    up = Up(home, work, workers=2, settings=latency_settings)
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
    chunks = {1: copies[latency_runs:latency_runs + batch], 2: copies[latency_runs + batch:latency_runs + 2 * batch]}
    for workers in (1, 2):
        up = Up(home, work, workers=workers, settings=throughput_settings)
        try:
            throughput[workers] = _batch(up, chunks[workers])
            print(f"{workers} worker(s): {json.dumps(throughput[workers])}", flush=True)
        finally:
            up.stop()

    # GET under load, in phases of their own so that their CPU does not count against the throughput:
    # 2 workers busy on a fresh batch while another process sends GETs on schedule; repeated, since one
    # run's tail can hinge on a single stall.
    result["api_get_under_load"] = {"rps": rps, "duration_s": load_s, "target_p99_ms": 50.0, "runs": []}
    first = latency_runs + 2 * batch
    for repeat in range(get_repeats):
        up = Up(home, work, workers=2, settings=throughput_settings)
        try:
            target_id = up.client.get("/v1/exposures", params={"limit": 1}).json()["items"][0]["id"]
            loaded: dict = {}

            def load() -> None:
                time.sleep(2.0)  # let both workers start on the batch
                loaded["lat"] = load_elsewhere(up.url, f"/v1/exposures/{target_id}", rps, load_s)

            thread = threading.Thread(target=load)
            thread.start()
            busy = _batch(up, copies[first + repeat * batch:first + (repeat + 1) * batch])
            thread.join()
            lat = np.array(loaded.get("lat", [float("inf")])) * 1000  # in send order
            per_second = [round(float(np.percentile(lat[i:i + int(rps)], 99)), 1) for i in range(0, lat.size, int(rps))]
            run_result = {
                "requests": int(lat.size), "failed": int(np.isinf(lat).sum()),
                "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                "max_ms": round(float(lat.max()), 1), "p99_ms_per_second": per_second,
                "workers_busy": {k: busy[k] for k in ("n", "elapsed_s", "exposures_per_min")},
                "exposure_ccds": len(up.client.get(f"/v1/exposures/{target_id}").json()["ccds"]),
            }
            result["api_get_under_load"]["runs"].append(run_result)
            print(f"GET under load ({repeat + 1}/{get_repeats}): {json.dumps(run_result)}", flush=True)
        finally:
            up.stop()
    runs = result["api_get_under_load"]["runs"]
    result["api_get_under_load"]["median_p99_ms"] = round(float(np.median([r["p99_ms"] for r in runs])), 1)
    result["api_get_under_load"]["median_p50_ms"] = round(float(np.median([r["p50_ms"] for r in runs])), 1)
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
    parser.add_argument("--get-repeats", type=int, default=3, help="GET-under-load phases (the median p99 is reported)")
    parser.add_argument("--latency-threads", type=int, default=2,
                        help="OBSQC_WORKER_THREADS for the latency runs (one exposure at a time)")
    parser.add_argument("--throughput-threads", type=int, default=1,
                        help="OBSQC_WORKER_THREADS for the 1-vs-2-workers batches")
    parser.add_argument("--worker-nice", type=int, default=None, help="OBSQC_WORKER_NICE (default: the service's)")
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
        args.latency_runs, args.batch, args.load_seconds, args.get_repeats = 3, 3, 3.0, 1
    print(f"posting copies of {exposure} ...", flush=True)
    nice = {} if args.worker_nice is None else {"OBSQC_WORKER_NICE": str(args.worker_nice)}
    result = run(exposure, work, latency_runs=args.latency_runs, batch=args.batch, rps=args.rps,
                 load_s=args.load_seconds, get_repeats=args.get_repeats,
                 latency_settings={"OBSQC_WORKER_THREADS": str(args.latency_threads), **nice},
                 throughput_settings={"OBSQC_WORKER_THREADS": str(args.throughput_threads), **nice})
    result["date"] = time.strftime("%Y-%m-%d")
    result["cpus"] = os.cpu_count()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
