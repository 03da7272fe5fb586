"""Throughput of the learned scorers through onnxruntime: stamps/s on 1 and 2 CPU threads (issue 4 section 4).

Usage::

    python -m benchmarks.bench_scoring --json scoring.json           # shipped weights, ~2 min
    python -m benchmarks.bench_scoring --models DIR --quick           # smoke run

What runs: for each thread count (``--threads``, default 1 and 2) a fresh Python process loads the
models with :class:`obsqc.models.onnx_scoring.GalaxyScorer` and
:class:`~obsqc.models.onnx_scoring.AutoencoderScorer` at that ``threads`` (onnxruntime intra-op
threads; one thread is also pinned to one core, two threads to two cores), builds ``--n`` simulated
galaxy cutouts at the model's size and bands (:func:`obsqc.sim.galaxies.galaxy_images`; the cost does
not depend on the pixel values), and for each batch size (``--batch-sizes``, default 32, 64, 128)
scores them once as a warm-up and then ``--repeats`` times (default 5). ``GalaxyScorer.score`` runs the
encoder, the 10-step latent refinement and the scores inside one ONNX graph (Storey-Fisher et al.
2021 section 3.2), so the figure includes the refinement. The autoencoder is timed the same way on
64x64 stamps (the galaxy images' first band when the size matches, else uniform noise).

Reported per model, thread count and batch size: the median stamps/s over the repeats (with the
min-max), stamps/s per thread, CPU time over wall time (near the thread count when the cores were
free), and the execution provider onnxruntime used. Targets (issue 4): >= 200 stamps/s per core for
64x64 single band on CPU; >= 2,000/s on a GPU (measured only where onnxruntime offers
``CUDAExecutionProvider``; the provider column says which ran).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

TARGET_PER_CORE = 200.0
"""Target of issue 4 for 64x64 single-band cutouts with refinement on CPU, stamps/s per core."""

TARGET_GPU = 2000.0
"""Target of issue 4 on a GPU, stamps/s."""


def _pin(threads: int, first: int = 0) -> list[int]:
    """Restrict this process to ``threads`` cores (allowed cores ``first``, ``first + 1``, ...); returns them."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
        cores = allowed[first:first + threads] or allowed[:threads]
        os.sched_setaffinity(0, cores)
        return cores
    except (AttributeError, OSError):
        return []


def time_scorer(fn, data: np.ndarray, batch_size: int, repeats: int) -> dict:
    """Warm-up once, then ``repeats`` timed passes of ``fn(data, batch_size)`` over all of ``data``."""
    fn(data, batch_size)
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn(data, batch_size)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    rates = [len(data) / w for w in walls]
    return {"n": int(len(data)), "batch_size": batch_size, "wall_s": walls,
            "median_per_s": statistics.median(rates), "min_per_s": min(rates), "max_per_s": max(rates),
            "cpu_over_wall": sum(cpus) / sum(walls)}


def child(model_dir: Path, threads: int, n: int, batch_sizes: list[int], repeats: int, seed: int,
          first_core: int = 0) -> dict:
    """One process, one thread count: every timing of both models (module docstring)."""
    cores = _pin(threads, first_core)
    from obsqc.models.onnx_scoring import AutoencoderScorer, GalaxyScorer
    from obsqc.sim.galaxies import galaxy_images

    out: dict = {"threads": threads, "cores": cores, "results": []}
    try:
        out["loadavg_1min_start"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    galaxy = GalaxyScorer(model_dir, threads=threads)
    bands = ("r",) if galaxy.channels == 1 else ("g", "r", "i")
    images = galaxy_images(n, size=galaxy.size, bands=bands, seed=seed)
    for b in batch_sizes:
        r = time_scorer(lambda x, bs: galaxy.score(x, batch_size=bs), images, b, repeats)
        out["results"].append({"model": "galaxy_scorer", "shape": [galaxy.channels, galaxy.size, galaxy.size],
                               "provider": galaxy.session.get_providers()[0], **r})
    ae_path = Path(model_dir) / "autoencoder.onnx"
    if ae_path.is_file():
        ae = AutoencoderScorer(model_dir, threads=threads)
        s = ae.stamp_size
        if images.shape[-1] == s:
            stamps = np.ascontiguousarray(images[:, 0])
        else:
            stamps = np.random.default_rng(seed).random((n, s, s), dtype=np.float32)
        stamps = np.concatenate([stamps] * 4)  # the autoencoder is fast: time more stamps
        for b in batch_sizes:
            r = time_scorer(lambda x, bs: ae.mse(x, batch_size=bs), stamps, b, repeats)
            out["results"].append({"model": "autoencoder", "shape": [s, s],
                                   "provider": ae.session.get_providers()[0], **r})
    try:
        out["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return out


def markdown(result: dict) -> str:
    lines = ["| model | input | threads | batch | median stamps/s | min-max | per thread | CPU/wall | provider |",
             "|---|---|---:|---:|---:|---|---:|---:|---|"]
    for run in result["runs"]:
        for r in run["results"]:
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"| {r['model']} | {shape} | {run['threads']} | {r['batch_size']} | "
                         f"**{r['median_per_s']:,.0f}** | {r['min_per_s']:,.0f}-{r['max_per_s']:,.0f} | "
                         f"{r['median_per_s'] / run['threads']:,.0f} | {r['cpu_over_wall']:.2f} | {r['provider']} |")
    conc = result.get("concurrent")
    if conc:
        lines += ["", f"{conc['processes']} processes of 1 thread at once, one per core (the service's layout), "
                      "sum of their medians:", "",
                  "| model | batch | total stamps/s | per core | summed CPU/wall |", "|---|---:|---:|---:|---:|"]
        for r in conc["aggregate"]:
            lines.append(f"| {r['model']} | {r['batch_size']} | **{r['median_per_s']:,.0f}** | "
                         f"{r['median_per_s'] / conc['processes']:,.0f} | {r['cpu_over_wall']:.2f} |")
    per_core = result.get("galaxy_per_core") or {}
    if per_core:
        lines.append("")
    for t, rate in per_core.items():
        verdict = "met" if rate >= TARGET_PER_CORE else "missed"
        lines.append(f"Galaxy scorer, {t}, best batch size: {rate:,.0f} stamps/s per core "
                     f"(target >= {TARGET_PER_CORE:.0f} per core on CPU: {verdict}).")
    if not result.get("gpu_measured"):
        lines.append(f"GPU (target >= {TARGET_GPU:,.0f}/s): not measured, onnxruntime offers no CUDA provider here.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.galaxy_anomalies import machine_info, model_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="Model directory (default: the shipped weights).")
    parser.add_argument("--threads", default="1,2", help="Comma-separated thread counts, one process each.")
    parser.add_argument("--batch-sizes", default="32,64,128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=512, help="Galaxy cutouts per timed pass (4x as many AE stamps).")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--quick", action="store_true", help="Smoke run: 64 cutouts, 2 repeats, batch 32.")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--processes", type=int, default=2,
                        help="Also run this many 1-thread processes at once, one per core (the service's layout: "
                             "one scorer thread per worker process); 0 or 1 to skip.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats, args.batch_sizes = 64, 2, "32"
    from obsqc.models.onnx_scoring import default_model_dir

    model_dir = args.models or default_model_dir()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    if args.child:
        print(json.dumps(child(model_dir, threads[0], args.n, batch_sizes, args.repeats, args.seed, args.core)))
        return 0
    started = datetime.now(timezone.utc)

    def launch(t: int, core: int = 0) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "benchmarks.bench_scoring", "--child", "--models", str(model_dir),
               "--threads", str(t), "--batch-sizes", args.batch_sizes, "--repeats", str(args.repeats),
               "--n", str(args.n), "--seed", str(args.seed), "--core", str(core)]
        env = {**os.environ, "OMP_NUM_THREADS": str(t)}
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=Path(__file__).resolve().parent.parent)

    def collect(proc: subprocess.Popen, what: str) -> dict:
        out, err = proc.communicate()
        if proc.returncode != 0:
            print(err, file=sys.stderr)
            raise SystemExit(f"the {what} run failed (exit {proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])

    runs = []
    for t in threads:
        runs.append(collect(launch(t), f"{t}-thread"))
        print(f"{t} thread(s) done", file=sys.stderr)
    concurrent = None
    if args.processes > 1:
        procs = [launch(1, core) for core in range(args.processes)]
        parts = [collect(p, "concurrent") for p in procs]
        concurrent = {"processes": args.processes, "runs": parts, "aggregate": [
            {"model": rs[0]["model"], "batch_size": rs[0]["batch_size"], "provider": rs[0]["provider"],
             "shape": rs[0]["shape"], "median_per_s": sum(r["median_per_s"] for r in rs),
             "cpu_over_wall": sum(r["cpu_over_wall"] for r in rs)}
            for rs in zip(*(p["results"] for p in parts))]}
        print(f"{args.processes} concurrent 1-thread processes done", file=sys.stderr)
    per_core = {f"{run['threads']} thread(s), one process": max(
        r["median_per_s"] / run["threads"] for r in run["results"] if r["model"] == "galaxy_scorer") for run in runs}
    if concurrent:
        per_core[f"{args.processes} processes of 1 thread"] = max(
            r["median_per_s"] / args.processes for r in concurrent["aggregate"] if r["model"] == "galaxy_scorer")
    providers = {r["provider"] for run in runs for r in run["results"]}
    result = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(), "model": model_info(model_dir),
              "command": " ".join(["python -m benchmarks.bench_scoring", *(sys.argv[1:] if argv is None else argv)]),
              "runs": runs, "concurrent": concurrent, "galaxy_per_core": per_core,
              "gpu_measured": "CUDAExecutionProvider" in providers,
              "targets": {"per_core_cpu": TARGET_PER_CORE, "gpu": TARGET_GPU}}
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
