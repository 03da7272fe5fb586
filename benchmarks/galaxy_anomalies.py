"""Galaxy anomalies: how well the WGAN scores find injected anomalous galaxies (issue 4 section 4).

Usage::

    python -m benchmarks.galaxy_anomalies --json ga.json --figure ga.png          # shipped weights, ~3 min on 2 cores
    python -m benchmarks.galaxy_anomalies --models DIR --n 2000 --n-fit 1000      # another model, a quick run

What runs:

1. An evaluation sample of ``--n`` simulated cutouts at the model's size and bands (one band, r, for a
   one-channel model; g, r, i for three channels) of which ``--rate`` (1.5% by default, issue 4: 1-2%)
   carry an injected anomaly (:func:`obsqc.sim.galaxy_anomalies.anomaly_sample`: mergers, double
   nuclei, tidal features, extreme colours with three bands, satellite trails, cosmic rays, bad
   deblends). Its seed must differ from the training seed (checked against ``model.json``).
2. Every cutout is scored by :class:`obsqc.models.onnx_scoring.GalaxyScorer` (encoder, 10-step latent
   refinement, s_gen, s_disc, s_anom: Storey-Fisher et al. 2021 section 3.2, eq. 5-6; s_gen in noise
   units, :mod:`obsqc.models.noise_scores`). The paper's own L1 s_gen and L_tot are reported as extra rows.
3. Scores are put in sigma units, (s - mean) / std (section 4.1). Three references are reported:
   ``normal`` (the headline): mean and std of the sample's normal cutouts, as the issue asks;
   ``sample``: of the whole sample, anomalies included, which is what section 4.1 does on HSC and what
   a survey's running distribution gives; ``export``: the reference in ``model.json`` (held-out normal
   images at export), what the service uses before its running statistics take over.
4. Per score: ROC AUC overall and per anomaly kind (Mann-Whitney, ties one half), and the > 3 sigma
   sample: its size, precision, recall, and the fraction of normal cutouts in it (section 4.1 finds
   1.4% of HSC above 3 sigma in s_disc; the 2019 version about 1%).
5. Baselines on the same cutouts, seed 001's lesson (Etsebeth et al. 2024, section 2.3 and
   appendix A: PCA then isolation forest): PCA (``--pca`` components) and scikit-learn's
   IsolationForest fitted on a separate normal sample (``--n-fit`` cutouts of
   :func:`obsqc.sim.galaxies.galaxy_images`, another seed), scored by ``-score_samples``; and, as a
   second classical baseline, the PCA reconstruction error of the same fit. They are compared at
   the same selection sizes as the WGAN's 3 sigma samples (top-k).

A note on the two targets (AUC >= 0.9 for s_anom, precision >= 0.8 at 3 sigma). With an anomaly rate
r and a fraction f of normal cutouts above the cut, the precision cannot exceed
r R / (r R + (1 - r) f) for recall R: at r = 1.5% and the paper's f = 1-1.4% it is at most 0.52-0.60
even at full recall. Precision 0.8 at 3 sigma needs f <= 0.38% at R = 1; the script prints this
ceiling next to the measured precision.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.evaluate import roc_auc

SCORES = ("s_gen", "s_disc", "s_anom")
"""The WGAN scores of Storey-Fisher et al. (2021) section 3.2."""

BASELINES = ("pca_iforest", "pca_residual")
"""Baselines: PCA + isolation forest (seed 001), PCA reconstruction error."""

PAPER_SCORES = ("l1_gen", "l_tot")
"""The paper's own s_gen (eq. 5, L1 of the scaled images) and s_anom (L_tot), from the same refinement,
reported beside obsqc's noise-unit scores (``obsqc.models.noise_scores``) as further rows."""

SIGMA_CUT = 3.0
"""The high-anomaly cut of section 4.1, sigma."""

TARGETS = {"auc_s_anom": 0.9, "precision_3sigma": 0.8, "normal_fraction_3sigma": (0.01, 0.014)}
"""Targets of issue 4 section 4 (the last one is the paper's range, 003 section 4.1 and 004)."""

DEFAULT_SEED = 2026
"""Seed of the evaluation sample (training uses 0 and export's reference 12345 by default)."""


# --------------------------------------------------------------------------------------------- helpers
def machine_info() -> dict:
    """Machine, load and library versions, for the record in BENCHMARKS.md."""
    import onnxruntime

    info = {"nproc": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def model_info(model_dir: Path) -> dict:
    """What model was evaluated: its directory name, training commands, dates, seeds (from model.json)."""
    from obsqc.models.onnx_scoring import read_metadata

    meta = read_metadata(model_dir)
    out: dict = {"dir": model_dir.name, "exported": meta.get("exported")}
    for key in ("galaxy_scorer", "autoencoder"):
        m = meta.get(key) or {}
        train = m.get("training") or {}
        out[key] = {"command": train.get("command"), "finished": train.get("finished"),
                    "train_seconds": train.get("train_seconds"), "data": train.get("data"),
                    "size": m.get("size") or m.get("stamp_size"), "channels": m.get("channels")}
    return out


def training_seeds(model_dir: Path) -> set[int]:
    """Seeds of the simulated data the galaxy scorer was trained on (to keep the evaluation off them)."""
    from obsqc.models.onnx_scoring import read_metadata

    data = ((read_metadata(model_dir).get("galaxy_scorer") or {}).get("training") or {}).get("data") or {}
    return {int(data["seed"])} if "seed" in data else set()


def in_sigma(values: np.ndarray, mask: np.ndarray | None = None, reference: tuple[float, float] | None = None):
    """(values - mean) / std, with mean and std over ``values[mask]`` or a given (mean, std) (003 section 4.1)."""
    v = np.asarray(values, float)
    if reference is None:
        sel = v[mask] if mask is not None else v
        reference = (float(np.mean(sel)), float(np.std(sel)))
    mean, std = reference
    return (v - mean) / (std if std > 0 else np.nan)


def selection_figures(selected: np.ndarray, is_anomaly: np.ndarray) -> dict:
    """Size, precision, recall and normal fraction of a selected sample (boolean mask)."""
    selected = np.asarray(selected, bool)
    k = int(selected.sum())
    tp = int((selected & is_anomaly).sum())
    n_anom, n_norm = int(is_anomaly.sum()), int((~is_anomaly).sum())
    return {"n_selected": k, "true_positives": tp,
            "precision": tp / k if k else float("nan"),
            "recall": tp / n_anom if n_anom else float("nan"),
            "normal_fraction": (k - tp) / n_norm if n_norm else float("nan")}


def top_k(score: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k highest scores (ties broken by position, stable)."""
    mask = np.zeros(len(score), bool)
    if k > 0:
        mask[np.argsort(-np.asarray(score, float), kind="stable")[:k]] = True
    return mask


def precision_ceiling(rate: float, normal_fraction: float, recall: float = 1.0) -> float:
    """Highest precision possible at anomaly ``rate``, a ``normal_fraction`` above the cut and ``recall``."""
    tp, fp = rate * recall, (1.0 - rate) * normal_fraction
    return tp / (tp + fp) if tp + fp > 0 else float("nan")


def score_table(score: np.ndarray, is_anomaly: np.ndarray, kind: np.ndarray) -> dict:
    """ROC AUC overall and per anomaly kind of one score (higher = more anomalous)."""
    neg = score[~is_anomaly]
    out = {"overall": roc_auc(score[is_anomaly], neg)}
    for k in sorted(set(kind[is_anomaly])):
        out[k] = roc_auc(score[kind == k], neg)
    return out


def evaluate(scores: dict[str, np.ndarray], is_anomaly: np.ndarray, kind: np.ndarray, *,
             export_reference: dict[str, tuple[float, float]] | None = None,
             baselines: dict[str, np.ndarray] | None = None, rate: float | None = None) -> dict:
    """All figures of one evaluation sample (pure numpy; module docstring, steps 3-5).

    ``scores``: name -> raw score per cutout; ``baselines``: name -> raw baseline score per cutout.
    """
    is_anomaly = np.asarray(is_anomaly, bool)
    kind = np.asarray(kind).astype(str)
    normal = ~is_anomaly
    rate = float(is_anomaly.mean()) if rate is None else rate
    out: dict = {"n": int(len(is_anomaly)), "n_anomalous": int(is_anomaly.sum()),
                 "per_kind": {k: int((kind == k).sum()) for k in sorted(set(kind[is_anomaly]))},
                 "auc": {}, "cut_3sigma": {}, "baselines": {}}
    sizes = {}
    for name, raw in scores.items():
        raw = np.asarray(raw, float)
        out["auc"][name] = score_table(raw, is_anomaly, kind)
        refs = {"normal": in_sigma(raw, normal), "sample": in_sigma(raw)}
        if export_reference and name in export_reference:
            refs["export"] = in_sigma(raw, reference=export_reference[name])
        cuts = {}
        for ref, sig in refs.items():
            fig = selection_figures(sig > SIGMA_CUT, is_anomaly)
            fig["precision_ceiling"] = precision_ceiling(rate, fig["normal_fraction"], 1.0)
            cuts[ref] = fig
        cuts["top_n_anomalous"] = selection_figures(top_k(raw, int(is_anomaly.sum())), is_anomaly)
        out["cut_3sigma"][name] = cuts
        sizes[name] = cuts["normal"]["n_selected"]
    for name, raw in (baselines or {}).items():
        raw = np.asarray(raw, float)
        b = {"auc": score_table(raw, is_anomaly, kind),
             "cut_3sigma_normal": selection_figures(in_sigma(raw, normal) > SIGMA_CUT, is_anomaly),
             "top_n_anomalous": selection_figures(top_k(raw, int(is_anomaly.sum())), is_anomaly),
             "top_k_at": {s: selection_figures(top_k(raw, k), is_anomaly) for s, k in sizes.items()}}
        out["baselines"][name] = b
    return out


def twin_diagnostics(scores: dict[str, np.ndarray], twin_scores: dict[str, np.ndarray], is_anomaly: np.ndarray,
                     kind: np.ndarray, mean_pixel: np.ndarray) -> dict:
    """What moves the scores: each anomalous cutout against its clean twin (same galaxy, same noise), and
    the rank correlation of each score with the cutout's mean pixel value on the normal cutouts.

    ``twin_scores[name]`` holds the scores of the clean twins of the anomalous cutouts, in sample order.
    """
    from scipy.stats import spearmanr

    normal = ~is_anomaly
    k_anom = np.asarray(kind)[is_anomaly]
    out: dict = {"spearman_mean_pixel_normal": {}, "above_twin": {}, "median_delta_sigma": {}}
    for name, raw in scores.items():
        raw = np.asarray(raw, float)
        out["spearman_mean_pixel_normal"][name] = float(spearmanr(raw[normal], mean_pixel[normal])[0])
        delta = (raw[is_anomaly] - np.asarray(twin_scores[name], float)) / np.std(raw[normal])
        out["above_twin"][name] = {k: float(np.mean(delta[k_anom == k] > 0)) for k in sorted(set(k_anom))}
        out["median_delta_sigma"][name] = {k: float(np.median(delta[k_anom == k])) for k in sorted(set(k_anom))}
    out["auc_mean_pixel"] = score_table(np.asarray(mean_pixel, float), is_anomaly, np.asarray(kind).astype(str))
    mp = {"normal": float(np.mean(mean_pixel[normal]))}
    mp.update({k: float(np.mean(mean_pixel[is_anomaly][k_anom == k])) for k in sorted(set(k_anom))})
    out["mean_pixel"] = mp
    return out


# --------------------------------------------------------------------------------------------- baselines
def fit_baselines(fit_images: np.ndarray, n_components: int, seed: int, n_jobs: int = 1):
    """PCA on flattened normal cutouts, then an isolation forest on the components (seed 001)."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest

    x = fit_images.reshape(len(fit_images), -1)
    pca = PCA(n_components=min(n_components, *x.shape), random_state=seed).fit(x)
    forest = IsolationForest(n_estimators=300, random_state=seed, n_jobs=n_jobs).fit(pca.transform(x))
    return pca, forest


def baseline_scores(pca, forest, images: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Baseline anomaly scores (higher = more anomalous): -IsolationForest.score_samples, PCA residual."""
    iso, res = [], []
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(min(chunk, len(images) - i), -1)
        z = pca.transform(x)
        iso.append(-forest.score_samples(z))
        res.append(np.mean((pca.inverse_transform(z) - x) ** 2, axis=1))
    return {"pca_iforest": np.concatenate(iso), "pca_residual": np.concatenate(res)}


# --------------------------------------------------------------------------------------------- report
def _f(x, digits=3) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def target_lines(ev: dict) -> list[str]:
    """Each target of issue 4 section 4 with the measured figure and met / missed."""
    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    auc = ev["auc"]["s_anom"]["overall"]
    out = [f"ROC AUC of s_anom >= {TARGETS['auc_s_anom']}: {_f(auc)} {verdict(auc >= TARGETS['auc_s_anom'])}"]
    for name in ("s_disc", "s_anom"):
        c = ev["cut_3sigma"][name]["normal"]
        p = c["precision"]
        ok = bool(np.isfinite(p) and p >= TARGETS["precision_3sigma"])
        out.append(f"precision of the {name} > 3 sigma sample >= {TARGETS['precision_3sigma']}: {_f(p, 2)} "
                   f"(recall {_f(c['recall'], 2)}) {verdict(ok)}")
    lo, hi = TARGETS["normal_fraction_3sigma"]
    f = ev["cut_3sigma"]["s_disc"]["normal"]["normal_fraction"]
    out.append(f"normal cutouts above 3 sigma in s_disc near the paper's {100 * lo:.0f}-{100 * hi:.1f}%: "
               f"{100 * f:.2f}% ({'inside' if lo <= f <= hi else 'outside'} that range)")
    return out


def markdown(result: dict) -> str:
    """The figures as markdown tables (what BENCHMARKS.md quotes)."""
    ev = result["evaluation"]
    kinds = list(ev["per_kind"])
    lines = [f"Evaluation sample: {ev['n']} cutouts, {ev['n_anomalous']} anomalous "
             f"({', '.join(f'{k} {n}' for k, n in ev['per_kind'].items())}); model {result['model']['dir']} "
             f"({result['size']}x{result['size']}, {result['channels']} channel(s)).", "",
             "ROC AUC (anomalous of a kind vs all normal cutouts):", "",
             "| score | overall | " + " | ".join(kinds) + " |", "|---|---:|" + "---:|" * len(kinds)]
    rows = [(n, ev["auc"][n]) for n in SCORES] + [(f"baseline {n}", b["auc"]) for n, b in ev["baselines"].items()]
    for name, auc in rows:
        lines.append(f"| {name} | {_f(auc['overall'])} | " + " | ".join(_f(auc.get(k)) for k in kinds) + " |")
    lines += ["", "> 3 sigma samples (sigma from the normal cutouts' mean and std; 'ceiling' = highest precision "
              "possible at this normal fraction and the sample's anomaly rate):", "",
              "| score | selected | precision | recall | normal above 3 sigma | ceiling "
              "| same k: PCA+IF precision / recall | same k: PCA residual precision / recall |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in SCORES:
        c = ev["cut_3sigma"][name]["normal"]
        b = {n: ev["baselines"][n]["top_k_at"][name] for n in ev["baselines"]}
        bl = [f"{_f(b[n]['precision'], 2)} / {_f(b[n]['recall'], 2)}" if n in b else "-" for n in BASELINES]
        lines.append(f"| {name} | {c['n_selected']} | {_f(c['precision'], 2)} | {_f(c['recall'], 2)} | "
                     f"{100 * c['normal_fraction']:.2f}% | {_f(c['precision_ceiling'], 2)} | {bl[0]} | {bl[1]} |")
    lines += ["", "Other sigma references (precision / recall / normal fraction above 3 sigma) and the "
              "threshold-free top-N (N = number of anomalies):", "",
              "| score | sample mean/std | export reference | top-N precision |", "|---|---|---|---:|"]
    for name in SCORES:
        c = ev["cut_3sigma"][name]

        def cell(r: str) -> str:
            if r not in c:
                return "-"
            return f"{_f(c[r]['precision'], 2)} / {_f(c[r]['recall'], 2)} / {100 * c[r]['normal_fraction']:.2f}%"

        lines.append(f"| {name} | {cell('sample')} | {cell('export')} | {_f(c['top_n_anomalous']['precision'], 2)} |")
    for n, b in ev["baselines"].items():
        c = b["cut_3sigma_normal"]
        lines.append(f"| baseline {n} (own 3 sigma, normal ref.) | {_f(c['precision'], 2)} / {_f(c['recall'], 2)} / "
                     f"{100 * c['normal_fraction']:.2f}% | - | {_f(b['top_n_anomalous']['precision'], 2)} |")
    diag = result.get("diagnostics")
    if diag:
        lines += ["", "Anomalous cutout vs its clean twin (same galaxy, same noise): fraction scoring higher, and "
                      "median change in sigma of the normal cutouts; mean pixel value of the cutouts:", "",
                  "| kind | " + " | ".join(f"{n} above twin / median change" for n in SCORES) + " | mean pixel |",
                  "|---|" + "---:|" * (len(SCORES) + 1)]
        for k in kinds:
            pairs = (f"{diag['above_twin'][n][k]:.2f} / {diag['median_delta_sigma'][n][k]:+.2f}" for n in SCORES)
            lines.append(f"| {k} | " + " | ".join(pairs) + f" | {diag['mean_pixel'][k]:.3f} |")
        lines.append("| normal | " + " | ".join("" for _ in SCORES) + f" | {diag['mean_pixel']['normal']:.3f} |")
        lines += ["", "Spearman rank correlation of each score with the cutout's mean pixel value (normal cutouts): "
                  + ", ".join(f"{n} {v:.2f}" for n, v in diag["spearman_mean_pixel_normal"].items())
                  + ". ROC AUC of the mean pixel value itself as a score: "
                  + ", ".join(f"{k} {_f(v)}" for k, v in diag["auc_mean_pixel"].items()) + "."]
    lines += ["", "Targets:", ""] + [f"* {line}" for line in target_lines(ev)]
    t = result["timings_s"]
    lines += ["", "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items())]
    return "\n".join(lines)


def draw_figure(path: Path, scores: dict[str, np.ndarray], baselines: dict[str, np.ndarray], is_anomaly: np.ndarray,
                title: str) -> None:
    """ROC curves of every score and baseline, and the s_disc sigma histogram of normal vs anomalous cutouts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, s in {**scores, **{f"baseline {k}": v for k, v in baselines.items()}}.items():
        fpr, tpr, _ = roc_curve(is_anomaly, s)
        a.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(s[is_anomaly], s[~is_anomaly]):.3f})",
               ls="--" if name.startswith("baseline") else "-")
    a.plot([0, 1], [0, 1], color="0.7", lw=0.8)
    a.set(xlabel="false-positive rate (normal cutouts)", ylabel="true-positive rate", title="ROC")
    a.legend(fontsize=8, loc="lower right")
    sig = in_sigma(scores["s_disc"], ~is_anomaly)
    bins = np.linspace(-4, max(10.0, float(np.nanpercentile(sig, 99.9))), 80)
    b.hist(np.clip(sig[~is_anomaly], bins[0], bins[-1]), bins, density=True, alpha=0.6, label="normal")
    b.hist(np.clip(sig[is_anomaly], bins[0], bins[-1]), bins, density=True, alpha=0.6, label="anomalous")
    b.axvline(SIGMA_CUT, color="k", lw=0.8)
    b.set(xlabel="s_disc, sigma of the normal cutouts", ylabel="density", yscale="log", title="s_disc")
    b.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- main
def run(model_dir: Path, *, n: int, rate: float, seed: int, n_fit: int, pca_components: int, threads: int,
        batch_size: int, twins: bool = True, log=lambda m: print(m, file=sys.stderr)) -> tuple[dict, dict]:
    """Simulate, score, evaluate; returns (result, arrays) where arrays hold the raw scores and labels."""
    from obsqc.models.onnx_scoring import GalaxyScorer
    from obsqc.sim.galaxies import galaxy_images
    from obsqc.sim.galaxy_anomalies import anomaly_sample

    scorer = GalaxyScorer(model_dir, threads=threads)
    bands = ("r",) if scorer.channels == 1 else ("g", "r", "i")
    if scorer.channels not in (1, 3):
        raise SystemExit(f"the scorer takes {scorer.channels} channels; this benchmark simulates 1 (r) or 3 (gri)")
    used = training_seeds(model_dir)
    fit_seed = seed + 1
    if used & {seed, fit_seed}:
        raise SystemExit(f"seed {seed} (or {fit_seed} for the baseline fit) is the training seed of this model: "
                         "choose another --seed")
    timings = {}
    t0 = time.perf_counter()
    if twins:  # the clean twins share galaxies and noise: the anomalous images are the same either way
        images, is_anom, kind, clean = anomaly_sample(n, rate=rate, size=scorer.size, bands=bands, seed=seed,
                                                      return_clean=True)
        clean = clean[is_anom]
    else:
        images, is_anom, kind = anomaly_sample(n, rate=rate, size=scorer.size, bands=bands, seed=seed)
    timings["simulate"] = time.perf_counter() - t0
    log(f"simulated {n} cutouts ({int(is_anom.sum())} anomalous) in {timings['simulate']:.0f} s")
    t0 = time.perf_counter()
    parts = {k: [] for k in (*SCORES, *PAPER_SCORES)}
    for i in range(0, n, 2048):  # in chunks: the reconstructions are not kept
        s = scorer.score(images[i:i + 2048], batch_size=batch_size)
        for k in parts:
            parts[k].append(getattr(s, k))
    scores = {k: np.concatenate(v) for k, v in parts.items()}
    paper = {f"paper_{k}": scores.pop(k) for k in PAPER_SCORES}
    timings["score"] = time.perf_counter() - t0
    diagnostics = None
    if twins:
        twin = scorer.score(clean, batch_size=batch_size)
        diagnostics = twin_diagnostics(scores, {k: getattr(twin, k) for k in SCORES}, is_anom, kind,
                                       images.reshape(n, -1).mean(axis=1))
    log(f"scored in {timings['score']:.0f} s ({n / timings['score']:.0f} cutouts/s, {threads} thread(s))")
    t0 = time.perf_counter()
    fit = galaxy_images(n_fit, size=scorer.size, bands=bands, seed=fit_seed)
    timings["simulate_fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pca, forest = fit_baselines(fit, pca_components, seed, n_jobs=threads)
    base = baseline_scores(pca, forest, images)
    base.update(paper)  # the paper's own L1 s_gen and L_tot, for comparison with obsqc's scores
    timings["baselines"] = time.perf_counter() - t0
    log(f"baselines fitted on {n_fit} normal cutouts and scored in {timings['baselines']:.0f} s")
    result = {
        "size": scorer.size, "channels": scorer.channels, "bands": list(bands), "seed": seed, "fit_seed": fit_seed,
        "rate": rate, "n_fit": n_fit, "pca_components": int(pca.n_components_),
        "pca_explained_variance": float(np.sum(pca.explained_variance_ratio_)),
        "provider": scorer.session.get_providers()[0], "threads": threads, "batch_size": batch_size,
        "model": model_info(model_dir), "reference_export": scorer.reference,
        "evaluation": evaluate(scores, is_anom, kind, export_reference=scorer.reference, baselines=base, rate=rate),
        "diagnostics": diagnostics,
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "targets": TARGETS,
    }
    return result, {"scores": scores, "baselines": base, "is_anomaly": is_anom, "kind": kind}


def main(argv: list[str] | None = None) -> int:
    from obsqc.models.onnx_scoring import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="Model directory (default: the shipped weights).")
    parser.add_argument("--n", type=int, default=20000, help="Cutouts in the evaluation sample.")
    parser.add_argument("--rate", type=float, default=0.015, help="Fraction of anomalous cutouts.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--n-fit", type=int, default=5000, help="Normal cutouts the baselines are fitted on.")
    parser.add_argument("--pca", type=int, default=40, help="PCA components of the baselines.")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (and isolation-forest jobs).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--twins", action=argparse.BooleanOptionalAction, default=True,
                        help="Also score the clean twins of the anomalous cutouts (diagnostics).")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="PNG: ROC curves and the s_disc histogram.")
    args = parser.parse_args(argv)
    model_dir = args.models or default_model_dir()
    started = datetime.now(timezone.utc)
    result, arrays = run(model_dir, n=args.n, rate=args.rate, seed=args.seed, n_fit=args.n_fit,
                         pca_components=args.pca, threads=args.threads, batch_size=args.batch_size, twins=args.twins)
    args_used = sys.argv[1:] if argv is None else argv
    result.update(date=started.strftime("%Y-%m-%d %H:%M UTC"), machine=machine_info(),
                  command=" ".join(["python -m benchmarks.galaxy_anomalies", *args_used]))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    if args.figure:
        draw_figure(args.figure, arrays["scores"], arrays["baselines"], arrays["is_anomaly"],
                    f"{result['evaluation']['n']} cutouts, {result['evaluation']['n_anomalous']} anomalous; "
                    f"model {result['model']['dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
