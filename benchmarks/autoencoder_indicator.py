"""The autoencoder indicator on the simulator's exposure-level anomaly classes, alone and fused.

Usage::

    python -m benchmarks.autoencoder_indicator --json ae.json --figure ae.png   # shipped weights, ~1.5 min, 2 cores
    python -m benchmarks.autoencoder_indicator --models DIR --size tiny --n-reference 6 --n-normal 4 --per-class 1

What runs (the service's path, minus the queue and the store):

1. Exposures are simulated by :func:`obsqc.sim.simulate_exposure` (``--size``, ``small`` by default: 4 CCDs
   of 1024^2 px, r band, 90 s): ``--n-reference`` normal ones for the reference, ``--n-normal`` other
   normal ones, and ``--per-class`` of each anomaly class (:data:`obsqc.sim.ANOMALY_CLASSES`) at each
   strength. Each is written to a temporary FITS file and measured by
   :func:`obsqc.service.measure.measure_file` with a :class:`~obsqc.service.measure.CutoutRequest` for
   source stamps (no galaxy cutouts), as a worker does.
2. The autoencoder indicator (Alonso, Zhang & Li section 4.3): the mean per-stamp MSE (eq. 9) of the
   exposure's stamps through :class:`obsqc.models.onnx_scoring.AutoencoderScorer`; its log is
   calibrated against the reference exposures by :func:`obsqc.service.learned.calibrate_learned`
   (median and normalised MAD, scale floor) and turned into a significance by
   :func:`obsqc.service.learned.learned_sigma`, exactly as the worker does.
3. The Entropy Method: :func:`obsqc.detectors.scoring.build_reference` on the same reference exposures,
   then :func:`~obsqc.detectors.scoring.score_exposure` per exposure; ``combined`` is the largest of its
   indicator significances (what ``obsqc rank`` sorts on and the verdict thresholds).
4. ROC AUC (ties one half) of each class, all strengths and per strength, against the held-out normal
   exposures, for: the autoencoder sigma alone; the entropy method's ``combined`` sigma; the best single
   entropy indicator for that class (chosen on the same data, so optimistic); and the fusion
   ``max(combined, autoencoder)`` (the verdict's rule: any indicator above threshold flags). Also the
   fraction above 3 sigma of each, normal and per class.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks.evaluate import roc_auc
from benchmarks.galaxy_anomalies import machine_info, model_info

SIGMA_CUT = 3.0
"""Flag threshold the fractions are reported at, sigma."""

DEFAULT_SEED = 4242
"""Seed of the exposures (one seed per exposure is derived from it)."""

_SCORERS: dict = {}  # model path -> AutoencoderScorer, one per worker process


def _scorer(model_dir: str):
    from obsqc.models.onnx_scoring import AutoencoderScorer

    if model_dir not in _SCORERS:
        _SCORERS[model_dir] = AutoencoderScorer(model_dir, threads=1)
    return _SCORERS[model_dir]


def measure_one(task: dict) -> dict:
    """Simulate, write, measure (with stamps) and score one exposure; returns its stats and mean MSE."""
    from obsqc.service.measure import CutoutRequest, measure_file
    from obsqc.sim import simulate_exposure

    t0 = time.perf_counter()
    ae = _scorer(task["model_dir"])
    hdul = simulate_exposure(size=task["size"], anomaly=task["anomaly"], strength=task["strength"],
                             seed=task["seed"], exposure_id=task["index"])
    path = Path(task["tmpdir"]) / f"exp{task['index']:05d}.fits"
    hdul.writeto(path, overwrite=True)
    try:
        measured = measure_file(str(path), threads=1,
                                cutouts=CutoutRequest(max_stamps=task["max_stamps"], stamp_size=ae.stamp_size,
                                                      max_galaxies=0))
    finally:
        path.unlink(missing_ok=True)
    stamps = measured.cutouts.stamps
    mse = ae.mse(stamps) if len(stamps) else np.zeros(0)
    mean_mse = float(np.mean(mse)) if len(mse) else None
    return {**{k: task[k] for k in ("index", "group", "anomaly", "strength", "seed")},
            "stats": measured.stats, "n_stamps": int(len(mse)), "mean_mse": mean_mse,
            "log_mse": math.log(mean_mse) if mean_mse else None, "seconds": time.perf_counter() - t0}


def plan(n_reference: int, n_normal: int, per_class: int, seed: int, classes, strengths) -> list[dict]:
    """The exposures to simulate: group ``reference``, ``normal`` or ``anomalous``, each with its own seed."""
    rows = [("reference", None, None)] * n_reference + [("normal", None, None)] * n_normal
    rows += [("anomalous", c, s) for c in classes for s in strengths for _ in range(per_class)]
    seeds = np.random.SeedSequence(seed).generate_state(len(rows), dtype=np.uint32)
    return [{"index": i, "group": g, "anomaly": a, "strength": s, "seed": int(seeds[i])}
            for i, (g, a, s) in enumerate(rows)]


def significances(rows: list[dict]) -> tuple[list[dict], dict]:
    """Reference from the ``reference`` rows, then every indicator's sigma for the other rows (steps 2-3)."""
    from obsqc.detectors.scoring import INDICATOR_NAMES, build_reference, score_exposure
    from obsqc.service.learned import AUTOENCODER, calibrate_learned, learned_sigma

    ref_rows = [r for r in rows if r["group"] == "reference"]
    reference = build_reference([r["stats"] for r in ref_rows])
    calibration = calibrate_learned([r["log_mse"] for r in ref_rows])
    reference = replace(reference, learned={AUTOENCODER: calibration} if calibration else {})
    out = []
    for r in rows:
        if r["group"] == "reference":
            continue
        score = score_exposure(r["stats"], reference)
        sig = {name: float(getattr(score, name).sigma) for name in INDICATOR_NAMES}
        finite = [v for v in sig.values() if math.isfinite(v)]
        sig["combined"] = max(finite) if finite else float("nan")
        sig["autoencoder"] = learned_sigma(reference, AUTOENCODER, r["log_mse"])
        both = [v for v in (sig["combined"], sig["autoencoder"]) if math.isfinite(v)]
        sig["fused"] = max(both) if both else float("nan")
        out.append({k: v for k, v in r.items() if k != "stats"} | {"sigma": sig, "n_sources": r["stats"].n_sources})
    info = {"n_reference": len(ref_rows), "autoencoder_calibration": calibration,
            "reference_log_mse": [r["log_mse"] for r in ref_rows]}
    return out, info


def _vals(rows: list[dict], key: str) -> np.ndarray:
    v = np.array([r["sigma"][key] for r in rows], float)
    return np.where(np.isfinite(v), v, -np.inf)  # a missing indicator ranks lowest


def evaluate(rows: list[dict], entropy_names) -> dict:
    """AUC and fractions above 3 sigma per class (and class/strength) for each score (step 4)."""
    normal = [r for r in rows if r["group"] == "normal"]
    anomalous = [r for r in rows if r["group"] == "anomalous"]
    keys = ("autoencoder", "combined", "fused", *entropy_names)
    groups = {"all": anomalous}
    for c in sorted({r["anomaly"] for r in anomalous}):
        groups[c] = [r for r in anomalous if r["anomaly"] == c]
        for s in sorted({r["strength"] for r in groups[c]}):
            groups[f"{c}/{s}"] = [r for r in groups[c] if r["strength"] == s]
    out = {"n_normal": len(normal), "n_anomalous": len(anomalous), "auc": {}, "above_3sigma": {}, "best_entropy": {}}
    for g, members in groups.items():
        out["auc"][g] = {k: roc_auc(_vals(members, k), _vals(normal, k)) for k in keys}
        out["above_3sigma"][g] = {k: float(np.mean(_vals(members, k) > SIGMA_CUT)) for k in keys}
        best = max(entropy_names, key=lambda k: (out["auc"][g][k] if math.isfinite(out["auc"][g][k]) else -1))
        out["best_entropy"][g] = {"indicator": best, "auc": out["auc"][g][best]}
    out["above_3sigma"]["normal"] = {k: float(np.mean(_vals(normal, k) > SIGMA_CUT)) for k in keys}
    out["normal_autoencoder_sigma"] = {"median": float(np.nanmedian([r["sigma"]["autoencoder"] for r in normal])),
                                       "max": float(np.nanmax([r["sigma"]["autoencoder"] for r in normal]))}
    return out


def _f(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def markdown(result: dict) -> str:
    ev = result["evaluation"]
    lines = [f"{ev['n_anomalous']} anomalous vs {ev['n_normal']} normal exposures ({result['size']} preset), reference "
             f"of {result['reference']['n_reference']} normal exposures; median {result['median_stamps']:.0f} stamps "
             f"per exposure.", "",
             "| class | AE sigma alone | entropy combined | best entropy indicator | fused max(combined, AE) "
             "| > 3 sigma: AE / combined / fused |", "|---|---:|---:|---|---:|---|"]
    for g, auc in ev["auc"].items():
        b = ev["best_entropy"][g]
        a3 = ev["above_3sigma"][g]
        lines.append(f"| {g} | {_f(auc['autoencoder'])} | {_f(auc['combined'])} | {b['indicator']} {_f(b['auc'])} | "
                     f"{_f(auc['fused'])} | {a3['autoencoder']:.2f} / {a3['combined']:.2f} / {a3['fused']:.2f} |")
    a3 = ev["above_3sigma"]["normal"]
    lines.append("| normal (false alarms) | | | | | "
                 f"{a3['autoencoder']:.2f} / {a3['combined']:.2f} / {a3['fused']:.2f} |")
    cal = result["reference"]["autoencoder_calibration"]
    if cal:
        lines += ["", f"Autoencoder calibration: median log mean MSE {cal[0]:.4f}, scale {cal[1]:.4f} "
                      f"(floor 0.05), {int(cal[2])} members."]
    lines.append("Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["timings_s"].items()))
    return "\n".join(lines)


def draw_figure(path: Path, rows: list[dict], title: str) -> None:
    """Autoencoder sigma against the entropy method's combined sigma, one colour per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    labels = ["none"] + sorted({r["anomaly"] for r in rows if r["group"] == "anomalous"})
    for lab in labels:
        sel = [r for r in rows if (r["anomaly"] or "none") == lab]
        x = np.clip([r["sigma"]["combined"] for r in sel], -5, 60)
        y = np.clip([r["sigma"]["autoencoder"] for r in sel], -5, 60)
        ax.scatter(x, y, s=18, label=lab, marker="o" if lab == "none" else "^", alpha=0.8)
    ax.axhline(SIGMA_CUT, color="k", lw=0.7)
    ax.axvline(SIGMA_CUT, color="k", lw=0.7)
    ticks = [-3, 0, 3, 10, 30, 60]
    for axis in ("x", "y"):
        getattr(ax, f"set_{axis}scale")("symlog", linthresh=3.0)
        getattr(ax, f"set_{axis}ticks")(ticks, [str(t) for t in ticks])
    ax.set(xlabel="entropy method, combined sigma (clipped to 60)", ylabel="autoencoder sigma (clipped to 60)",
           title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(model_dir: Path, *, size: str, n_reference: int, n_normal: int, per_class: int, seed: int, workers: int,
        max_stamps: int, classes=None, strengths=None, log=lambda m: print(m, file=sys.stderr)) -> tuple[dict, list]:
    from obsqc.detectors.scoring import INDICATOR_NAMES
    from obsqc.sim import ANOMALY_CLASSES, STRENGTHS

    tasks = plan(n_reference, n_normal, per_class, seed, classes or ANOMALY_CLASSES, strengths or STRENGTHS)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="obsqc-ae-") as tmp:
        for t in tasks:
            t.update(size=size, tmpdir=tmp, model_dir=str(model_dir), max_stamps=max_stamps)
        if workers > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                rows = list(pool.map(measure_one, tasks, chunksize=2))
        else:
            rows = [measure_one(t) for t in tasks]
    simulate_s = time.perf_counter() - t0
    log(f"simulated and measured {len(rows)} exposures in {simulate_s:.0f} s")
    t0 = time.perf_counter()
    scored, info = significances(rows)
    result = {"size": size, "seed": seed, "per_class": per_class, "max_stamps": max_stamps,
              "model": model_info(model_dir), "reference": info,
              "median_stamps": float(np.median([r["n_stamps"] for r in rows])),
              "evaluation": evaluate(scored, INDICATOR_NAMES),
              "timings_s": {"simulate_measure_score": round(simulate_s, 1),
                            "reference_and_significances": round(time.perf_counter() - t0, 1)}}
    return result, scored


def main(argv: list[str] | None = None) -> int:
    from obsqc.models.onnx_scoring import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="Model directory (default: the shipped weights).")
    parser.add_argument("--size", default="small", help="Simulator size preset (tiny, small, eval).")
    parser.add_argument("--n-reference", type=int, default=50, help="Normal exposures the references are built from.")
    parser.add_argument("--n-normal", type=int, default=60, help="Held-out normal exposures.")
    parser.add_argument("--per-class", type=int, default=10, help="Exposures per anomaly class and strength.")
    parser.add_argument("--classes", default=None, help="Comma-separated anomaly classes (default: all).")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-stamps", type=int, default=2000, help="Stamps per exposure (the service's default).")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rows", type=Path, default=None, help="Also every exposure's sigmas as JSON lines.")
    parser.add_argument("--figure", type=Path, default=None, help="PNG: autoencoder vs entropy sigma per class.")
    args = parser.parse_args(argv)
    model_dir = args.models or default_model_dir()
    started = datetime.now(timezone.utc)
    classes = tuple(args.classes.split(",")) if args.classes else None
    result, rows = run(model_dir, size=args.size, n_reference=args.n_reference, n_normal=args.n_normal,
                       per_class=args.per_class, seed=args.seed, workers=args.workers, max_stamps=args.max_stamps,
                       classes=classes)
    result.update(date=started.strftime("%Y-%m-%d %H:%M UTC"), machine=machine_info(),
                  command=" ".join(["python -m benchmarks.autoencoder_indicator",
                                    *(sys.argv[1:] if argv is None else argv)]))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    if args.rows:
        args.rows.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
    if args.figure:
        draw_figure(args.figure, rows, f"autoencoder indicator, {result['size']} exposures, model "
                                       f"{result['model']['dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
