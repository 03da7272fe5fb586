"""Evaluate the Entropy Method on a freshly simulated night: ROC AUC per anomaly class and strength.

Usage::

    python -m benchmarks.evaluate --n 240 --anomaly-fraction 0.3 --seed 7 --size eval --out /tmp/obsqc-eval

Simulates the night (or reuses ``OUT/exposures`` when its ``labels.csv`` matches the request), ranks it
exactly as ``obsqc rank`` does (reference = the mean of the set, Alonso, Zhang & Li §3.1-3.2), and
reports, for the combined score (the largest indicator significance) and for each indicator alone:

* ROC AUC of each anomaly class and strength against the normal exposures,
* the paper's figure: the true-positive rate in each tenth of the ranking, and the recall of the top 10%,
* the false-alarm rate on normal exposures at the threshold that catches 80% of the prominent anomalies.

AUC is the Mann-Whitney statistic (ties count one half). Results print as tables and, with ``--json``,
as one JSON document. Targets of issue #2: prominent AUC >= 0.98, overall AUC >= 0.90, false alarms <= 1%.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

INDICATORS = ("combined", "source_sigma", "profile_sigma", "background_sigma", "large_scale_sigma", "line_sigma")


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties one half (Mann-Whitney U / (n_p n_n))."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def _scores(rows: list[dict], key: str) -> np.ndarray:
    vals = [r["anomaly_sigma"] if key == "combined" else r[key] for r in rows]
    return np.array([-np.inf if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in vals], float)


def evaluate(rows: list[dict]) -> dict:
    """Figures from ranked rows that carry ``anomaly`` and ``strength`` truth labels."""
    normal = [r for r in rows if r["anomaly"] == "none"]
    spoiled = [r for r in rows if r["anomaly"] != "none"]
    classes = sorted({r["anomaly"] for r in spoiled})
    out: dict = {"n_exposures": len(rows), "n_anomalous": len(spoiled), "auc": {}}
    for key in INDICATORS:
        neg = _scores(normal, key)
        table = {"overall": roc_auc(_scores(spoiled, key), neg)}
        for strength in ("subtle", "prominent"):
            table[f"all/{strength}"] = roc_auc(_scores([r for r in spoiled if r["strength"] == strength], key), neg)
        for cls in classes:
            for strength in ("subtle", "prominent"):
                pos = [r for r in spoiled if r["anomaly"] == cls and r["strength"] == strength]
                table[f"{cls}/{strength}"] = roc_auc(_scores(pos, key), neg)
        out["auc"][key] = table
    combined = _scores(rows, "combined")
    is_bad = np.array([r["anomaly"] != "none" for r in rows])
    order = np.argsort(-combined, kind="stable")
    deciles = np.array_split(order, 10)
    out["tpr_per_decile"] = [float(is_bad[d].mean()) for d in deciles]
    out["recall_top10pct"] = float(is_bad[deciles[0]].sum() / max(is_bad.sum(), 1))
    from obsqc.service.rank import DEFAULT_FLAG_SIGMA

    out["flag_sigma"] = DEFAULT_FLAG_SIGMA
    out["false_alarm_rate_at_flag_sigma"] = float(np.mean(_scores(normal, "combined") > DEFAULT_FLAG_SIGMA))
    out["detection_rate_at_flag_sigma"] = {
        s: float(np.mean(_scores([r for r in spoiled if r["strength"] == s], "combined") > DEFAULT_FLAG_SIGMA))
        for s in ("subtle", "prominent")
    }
    prominent = np.sort(_scores([r for r in spoiled if r["strength"] == "prominent"], "combined"))
    if len(prominent):
        threshold = float(np.quantile(prominent, 0.2, method="lower"))  # catches >= 80% of prominent
        out["threshold_80pct_prominent_sigma"] = threshold
        out["false_alarm_rate_at_threshold"] = float(np.mean(_scores(normal, "combined") >= threshold))
    return out


def _load_or_simulate(folder: Path, n: int, fraction: float, seed: int, size: str, workers: int) -> list[dict]:
    labels = folder / "labels.csv"
    if labels.exists():
        with labels.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) == n:
            print(f"reusing {n} simulated exposures in {folder}", file=sys.stderr)
            return rows
    from obsqc.sim import simulate_night

    t0 = time.perf_counter()
    simulate_night(folder, n=n, anomaly_fraction=fraction, seed=seed, size=size, workers=workers)
    print(f"simulated {n} exposures in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    with labels.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    auc = result["auc"]
    table = Table(title=f"ROC AUC ({result['n_anomalous']} spoiled vs {result['n_exposures'] - result['n_anomalous']} normal)")
    table.add_column("class / strength")
    for key in INDICATORS:
        table.add_column(key, justify="right")
    for row in auc["combined"]:
        table.add_row(row, *(f"{auc[k][row]:.3f}" if not math.isnan(auc[k][row]) else "-" for k in INDICATORS))
    console.print(table)
    console.print("TPR per tenth of the ranking (most anomalous first): "
                  + " ".join(f"{v:.2f}" for v in result["tpr_per_decile"]))
    console.print(f"recall of the top 10%: {result['recall_top10pct']:.2f}")
    console.print(f"at the default flag threshold ({result['flag_sigma']} sigma): false-alarm rate "
                  f"{result['false_alarm_rate_at_flag_sigma']:.3f}, detected subtle "
                  f"{result['detection_rate_at_flag_sigma']['subtle']:.2f}, prominent "
                  f"{result['detection_rate_at_flag_sigma']['prominent']:.2f}")
    if "false_alarm_rate_at_threshold" in result:
        console.print(f"threshold catching 80% of prominent anomalies: {result['threshold_80pct_prominent_sigma']:.2f} sigma; "
                      f"false-alarm rate on normal exposures there: {result['false_alarm_rate_at_threshold']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--anomaly-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", default="eval")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("eval-night"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rows", type=Path, default=None, help="Also write every ranked exposure as JSON lines.")
    args = parser.parse_args(argv)

    from obsqc.detectors.warmup import warm_up
    from obsqc.service.rank import rank_files

    warm_up()
    folder = args.out / "exposures"
    labels = _load_or_simulate(folder, args.n, args.anomaly_fraction, args.seed, args.size, args.workers)
    truth = {Path(r["file"]).name: r for r in labels}
    t0 = time.perf_counter()
    result = rank_files([str(folder / Path(r["file"]).name) for r in labels], threads=args.threads)
    rank_s = time.perf_counter() - t0
    rows = []
    for rec in result.records:
        row = rec.to_dict()
        t = truth[Path(rec.file).name]
        row["anomaly"], row["strength"] = t["anomaly"], t["strength"]
        rows.append(row)
    report = evaluate(rows)
    if args.rows:
        args.rows.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report.update(
        date=date.today().isoformat(), command=" ".join(["python -m benchmarks.evaluate", *(argv or sys.argv[1:])]),
        n_failed=len(result.failures), rank_seconds=round(rank_s, 1), size=args.size, seed=args.seed,
    )
    _print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
