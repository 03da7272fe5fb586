"""Calibration of the significances: does a 3-sigma threshold mean the same false-alarm rate for
50 sources as for 5,000?

Usage::

    python -m benchmarks.calibration --figure docs/img/calibration.png --json out.json   # full run, ~10 min on 2 cores
    python -m benchmarks.calibration --quick                                             # smoke run, ~1 min
    python -m benchmarks.calibration --hist-repeats 8 --hist-n-test 0                    # from the cache, ~4 min
    python -m benchmarks.calibration --reference per-group --no-compare-legacy           # a variant, from the cache

What runs (everything on simulated pixels through the real detectors):

1. **Normal exposures only** (no anomaly) are simulated with :func:`obsqc.sim.render_exposure` in
   groups that differ in their number of usable sources: by default 2 CCDs of 515^2 px (~50
   sources), of 1630^2 px (~500) and of 5150^2 px (~5,000), all at 300 s in r. Only the area
   changes: the depth, hence the mix of stars and galaxies whose orientations follow the PSF, is the
   same in every group, so the groups differ in N and nothing else the source indicators see (a
   first version varied the exposure time too, 10 s for the smallest group: its sources, brighter
   and more often stars, follow the PSF more closely, which is a different population, not a
   different N). Every CCD is at least 512 px a side, so every indicator is defined, and the
   per-CCD indicators get the same number of gradient points (10,000 and 2,000 per CCD, 2 CCDs) in
   every group; their CCDs differ in size, though, which they do see (point density, block count).
   Within a group the conditions vary as the simulator draws them (seeing 0.7-1.4", PSF shear up to
   0.02 plus a field pattern, sky, star density x0.5-2, galaxy density).
2. Each CCD is measured by :func:`obsqc.detectors.ccd.measure_ccd` with the seed convention of
   :func:`obsqc.service.measure.measure_reader` (``7919 * ccd index``) and SATURATE from the CCD,
   then pooled by :func:`obsqc.detectors.exposure.combine_ccds` -- the same path as ``obsqc rank``
   minus the FITS round trip (``benchmarks/evaluate.py`` goes through FITS files of the ``eval``
   preset; here the geometry is custom and the files would only cost time).
3. A reference (:func:`obsqc.detectors.scoring.build_reference`) is built from a **training set
   that mixes the groups** (30, 30 and 25 exposures, ``Group.n_train``), as the reference of one instrument
   and band is built in production from whatever normal exposures arrived; ``--reference per-group``
   builds one per group instead. Held-out exposures (other seeds) of every group are scored.
4. Per group and indicator: exposures, median N, the fraction above 3 sigma (nominal 0.00135,
   one-sided Gaussian) and above 2 sigma (0.0228), each with its Clopper-Pearson 95% interval, the
   median sigma, and for the source and profile indicators the median raw KL next to the
   multinomial bias (bins - 1) / (2 N) that the calibration removes.
5. A fast histogram-level check (not the headline): the source and profile histograms of the
   largest group's exposures (train and test, ~5,000 sources each, so nearly noiseless) are taken
   as the "true" per-exposure distributions (PSF anisotropy included), and thousands of exposures
   are drawn from them by multinomial sampling at each group's median N, a reference is built from
   draws mixed as the pixel-level training set, and the rest are scored by the same code. It
   resolves rates near 0.00135 that the few pixel-level exposures cannot; at large N it can only
   resample the ~100 "true" distributions, so its tail there is that of the pixel-level group.
   ``--hist-repeats R`` repeats it against R independent training draws (3,000 exposures per group
   each): how much the rates move from one reference of this size to another.

Every figure is also computed with the legacy null (``--null legacy``: the scaled chi^2 G / d(N) of
:mod:`obsqc.detectors.scoring` before 2026-11-23) on the same exposures, for the before/after table.

Measured statistics are cached in ``--out`` (one pickle, keyed by CCD size, CCD count, exposure time
and seed), so a re-run after a change to the scoring re-scores without re-simulating.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import stats

NOMINAL = {3.0: float(stats.norm.sf(3.0)), 2.0: float(stats.norm.sf(2.0))}
"""One-sided Gaussian tail probabilities of the thresholds reported."""

INDICATORS = ("source", "profile", "background", "large_scale", "line")
HISTOGRAM_INDICATORS = ("source", "profile")
"""Indicators whose N is the number of usable sources."""


@dataclass(frozen=True)
class Group:
    """One source-count group: ``n_ccd`` CCDs of ``side`` x ``side`` px (2 x n/2 grid) at ``exptime`` s."""

    name: str
    side: int
    n_ccd: int
    exptime: float
    n_train: int
    n_test: int

    def preset(self):
        from obsqc.sim.config import SizePreset

        cols = max(1, math.ceil(self.n_ccd / 2)) if self.n_ccd > 1 else 1
        rows = math.ceil(self.n_ccd / cols)
        return SizePreset(f"calib{self.side}x{self.n_ccd}", n_ccd=self.n_ccd, ccd_shape=(self.side, self.side),
                          grid_rows=rows, grid_cols=cols, gap_px=120, exptime=self.exptime, min_saturated_stars=1)


DEFAULT_GROUPS = (
    Group("~50", 515, 2, 300.0, 30, 500),
    Group("~500", 1630, 2, 300.0, 30, 300),
    Group("~5000", 5150, 2, 300.0, 25, 80),
)
"""Same depth (300 s, r band) and camera layout in every group; only the area, hence N, changes."""
QUICK_GROUPS = (
    Group("~50", 515, 2, 300.0, 12, 40),
    Group("~500", 1630, 2, 300.0, 12, 16),
    Group("~5000", 5150, 2, 300.0, 3, 3),
)


def exposure_seed(base: int, group_index: int, role: str, i: int) -> int:
    """Independent seeds per (run seed, group, train/test, index)."""
    return int(np.random.SeedSequence([int(base), group_index, 0 if role == "train" else 1, i]).generate_state(1)[0])


# --------------------------------------------------------------------------- simulate and measure

def _worker_init() -> None:
    from obsqc.detectors.warmup import warm_up

    warm_up()


def simulate_and_measure(group: Group, seed: int):
    """One normal exposure of ``group`` through the real detectors; returns slim ExposureStats and seconds."""
    from obsqc.detectors.ccd import measure_ccd
    from obsqc.detectors.exposure import combine_ccds
    from obsqc.detectors.sources import SOURCE_DTYPE
    from obsqc.sim import render_exposure

    t0 = time.perf_counter()
    images, truth = render_exposure(group.preset(), seed=seed, exposure_id=seed % 1_000_000)
    t1 = time.perf_counter()
    ccds = []
    for index, (image, summary) in enumerate(zip(images, truth.ccds)):
        stats_ = measure_ccd(image, name=summary["extname"], saturate=summary["saturate"], seed=7919 * index)
        ccds.append(replace(stats_, sources=np.empty(0, SOURCE_DTYPE)))  # the catalogue is not needed: keep the cache small
    exp = combine_ccds(f"{group.name}/{seed}", ccds)
    return exp, {"simulate_s": t1 - t0, "measure_s": time.perf_counter() - t1}


def _task(args):
    group, seed = args
    return simulate_and_measure(group, seed)


def measure_groups(groups: tuple[Group, ...], seed: int, workers: int, out: Path | None, log=print) -> dict:
    """{(group name, role): [ExposureStats]} for every group, from the cache in ``out`` where present."""
    jobs = []
    for gi, g in enumerate(groups):
        for role, n in (("train", g.n_train), ("test", g.n_test)):
            jobs += [(g, gi, role, i, exposure_seed(seed, gi, role, i)) for i in range(n)]
    cache_file = None
    cache: dict = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cache_file = out / "stats-cache.pkl"
        if cache_file.exists():
            with cache_file.open("rb") as fh:
                cache = pickle.load(fh)

    def key(g: Group, s: int) -> tuple:
        return g.side, g.n_ccd, g.exptime, s

    todo = [j for j in jobs if key(j[0], j[4]) not in cache]
    todo.sort(key=lambda j: -j[0].side * j[0].side * j[0].n_ccd)  # largest first: the pool stays busy
    t0 = time.perf_counter()
    timings = []
    if todo:
        log(f"simulating and measuring {len(todo)} exposures ({len(jobs) - len(todo)} cached) on {workers} workers")
        if workers > 1:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init)
            results = pool.map(_task, [(j[0], j[4]) for j in todo], chunksize=1)
        else:
            _worker_init()
            pool, results = None, map(_task, [(j[0], j[4]) for j in todo])
        try:
            for k, (j, (exp, t)) in enumerate(zip(todo, results), start=1):
                cache[key(j[0], j[4])] = exp
                timings.append((j[0].name, t))
                if k % 50 == 0 or k == len(todo):
                    log(f"  {k}/{len(todo)} done, {time.perf_counter() - t0:.0f} s")
        finally:
            if pool is not None:
                pool.shutdown()
        if cache_file is not None:
            with cache_file.open("wb") as fh:
                pickle.dump(cache, fh)
    out_sets: dict = {}
    for g, gi, role, i, s in jobs:
        out_sets.setdefault((g.name, role), []).append(cache[key(g, s)])
    per_group_s = {}
    for name, t in timings:
        d = per_group_s.setdefault(name, {"n": 0, "simulate_s": 0.0, "measure_s": 0.0})
        d["n"] += 1
        d["simulate_s"] += t["simulate_s"]
        d["measure_s"] += t["measure_s"]
    out_sets["_timing"] = {"wall_s": time.perf_counter() - t0, "per_group_cpu_s": per_group_s}
    return out_sets


# --------------------------------------------------------------------------- score and summarise

def score_rows(exposures, reference, group: str) -> list[dict]:
    """One row per scored exposure: group, N and (kl, sigma, n) of every indicator."""
    from obsqc.detectors.scoring import score_exposure

    rows = []
    for e in exposures:
        sc = score_exposure(e, reference)
        row = {"group": group, "exposure": e.exposure_id, "n_sources": e.n_sources}
        for name in INDICATORS:
            ind = getattr(sc, name)
            row[f"{name}_kl"], row[f"{name}_sigma"], row[f"{name}_n"] = ind.kl, ind.sigma, ind.n
        rows.append(row)
    return rows


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of k successes in n trials."""
    if n == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def summarise(rows: list[dict], groups: list[str]) -> dict:
    """{group: {indicator: figures}} over the rows of each group (NaN sigmas left out and counted)."""
    from obsqc.detectors.config import DetectorParams
    from obsqc.detectors.divergence import kl_bias

    p = DetectorParams()
    bins = {"source": p.source_bins, "profile": p.profile_bins}
    out: dict = {}
    for g in groups:
        sub = [r for r in rows if r["group"] == g]
        if not sub:
            continue
        table = {"n_exposures": len(sub), "median_sources": float(np.median([r["n_sources"] for r in sub]))}
        for name in INDICATORS:
            sig = np.array([r[f"{name}_sigma"] for r in sub], float)
            ok = np.isfinite(sig)
            n = int(ok.sum())
            d: dict = {"n": n, "n_nan": int((~ok).sum())}
            if n:
                for t in (3.0, 2.0):
                    k = int(np.sum(sig[ok] > t))
                    lo, hi = clopper_pearson(k, n)
                    d[f"above_{t:g}"] = {"k": k, "fraction": k / n, "ci95": [lo, hi], "nominal": NOMINAL[t]}
                d["median_sigma"] = float(np.median(sig[ok]))
                d["mad_sigma"] = float(1.4826 * np.median(np.abs(sig[ok] - d["median_sigma"])))
            if name in bins:
                kl = np.array([r[f"{name}_kl"] for r in sub], float)
                nn = np.array([r[f"{name}_n"] for r in sub], float)
                good = np.isfinite(kl) & (nn > 0)
                if good.any():
                    d["median_n"] = float(np.median(nn[good]))
                    d["median_raw_kl"] = float(np.median(kl[good]))
                    d["multinomial_bias"] = float(np.median((bins[name] - 1) / (2 * nn[good])))
                    d["median_smoothed_bias"] = float(np.median(kl_bias(bins[name], nn[good], p.histogram_pseudocount)))
            table[name] = d
        out[g] = table
    return out


def histogram_check(pool_exposures, ns: dict[str, int], n_train: dict[str, int], n_test: int, seed: int) -> dict:
    """Fast check of the source and profile indicators at many exposures per N (see module docstring).

    ``pool_exposures``: measured exposures whose source/profile histograms, smoothed, are the "true"
    per-exposure distributions; the CCD-level parts of every synthetic exposure are the first CCD of
    the first of them (they are not what is checked). ``ns``: N per group; ``n_train``: training
    exposures per group.
    """
    from obsqc.detectors.config import DetectorParams
    from obsqc.detectors.divergence import smoothed_distribution
    from obsqc.detectors.scoring import build_reference, score_exposure

    a = DetectorParams().histogram_pseudocount
    rng = np.random.default_rng([seed, 0xCA11])
    truths = [(smoothed_distribution(e.source_counts, a), smoothed_distribution(e.profile_counts, a)) for e in pool_exposures]
    template = replace(pool_exposures[0], ccds=pool_exposures[0].ccds[:1])

    def draw(n: int, tag: str):
        ps, pp = truths[rng.integers(len(truths))]
        return replace(template, exposure_id=tag, source_counts=rng.multinomial(n, ps), profile_counts=rng.multinomial(n, pp))

    ref = build_reference([draw(n, f"train/{g}/{i}") for g, n in ns.items() for i in range(n_train[g])])
    out = {"_reference": {"source_kappa": ref.source_kappa, "source_shape": getattr(ref, "source_shape", 0.0),
                          "profile_kappa": ref.profile_kappa, "profile_shape": getattr(ref, "profile_shape", 0.0),
                          "sigma_loc": ref.sigma_loc, "sigma_scale": ref.sigma_scale}}
    for g, n in ns.items():
        sc = [score_exposure(draw(n, f"test/{g}/{i}"), ref) for i in range(n_test)]
        d = {"n_sources": n, "n_exposures": n_test, "n_truths": len(truths)}
        for name in HISTOGRAM_INDICATORS:
            sig = np.array([getattr(s, name).sigma for s in sc])
            d[name] = {}
            for t in (3.0, 2.0):
                k = int(np.sum(sig > t))
                d[name][f"above_{t:g}"] = {"k": k, "fraction": k / n_test, "ci95": list(clopper_pearson(k, n_test))}
            d[name]["median_sigma"] = float(np.median(sig))
            d[name]["sigmas"] = sig
        out[g] = d
    return out


# --------------------------------------------------------------------------- figure and report

def _survival(ax, rows, hist, name, groups, colours, key=None) -> None:
    """P(sigma > s) per group: pixel level solid, histogram check dotted, N(0, 1) dashed."""
    for g, c in zip(groups, colours):
        sig = np.array([r[f"{name}_sigma"] for r in rows if r["group"] == g], float)
        sig = np.sort(sig[np.isfinite(sig)])
        if sig.size:
            ax.step(sig, 1.0 - np.arange(sig.size) / sig.size, where="post", color=c, label=f"{g} ({sig.size} exp.)")
        if hist and name in HISTOGRAM_INDICATORS and g in hist:
            hs = np.sort(hist[g][name]["sigmas"])
            ax.step(hs, 1.0 - np.arange(hs.size) / hs.size, where="post", color=c, ls=":", lw=1.2)
    t = np.linspace(-3, 6, 200)
    ax.plot(t, stats.norm.sf(t), "k--", lw=1, label="N(0,1) tail")
    ax.axvline(3.0, color="r", lw=0.8, alpha=0.6)
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1.2)
    ax.set_xlim(-3, 6)
    ax.set_title(key or f"{name}: P(sigma > s)", fontsize=10)
    ax.set_xlabel("calibrated significance s (sigma)")
    ax.grid(alpha=0.3)


def make_figure(rows: list[dict], groups: list[str], path: Path, hist: dict | None = None,
                legacy: dict | None = None) -> None:
    """Survival curves of every indicator per group (and, with ``legacy``, of the source and profile
    indicators under the scaled chi^2 null), and raw KL against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from obsqc.detectors.config import DetectorParams
    from obsqc.detectors.divergence import kl_bias

    p = DetectorParams()
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.8))
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(groups)))
    panels = [(axes[0, 0], "source"), (axes[0, 1], "profile"), (axes[0, 2], "background"),
              (axes[0, 3], "large_scale"), (axes[1, 0], "line")]
    for ax, name in panels:
        _survival(ax, rows, hist, name, groups, colours)
    for ax in (axes[0, 2], axes[0, 3], axes[1, 0]):
        ax.text(0.03, 0.03, "per-CCD indicator: its groups differ\nin CCD size, not only in N",
                transform=ax.transAxes, fontsize=7.5, color="0.3")
    if legacy is not None:
        for ax, name in ((axes[1, 1], "source"), (axes[1, 2], "profile")):
            _survival(ax, legacy["rows"], legacy.get("histogram_check"), name, groups, colours,
                      key=f"{name}, before: d(N) chi^2 null (legacy)")
    else:
        axes[1, 1].axis("off")
        axes[1, 2].axis("off")
    axes[0, 0].legend(fontsize=8, loc="lower left",
                      title="pixel level" + (" (dotted: histogram check)" if hist else ""), title_fontsize=8)
    ax = axes[1, 3]
    n = np.array([r["source_n"] for r in rows], float)
    kl = np.array([r["source_kl"] for r in rows], float)
    for g, c in zip(groups, colours):
        m = np.array([r["group"] == g for r in rows]) & (n > 0)
        ax.scatter(n[m], kl[m], s=5, color=c, alpha=0.5, label=g)
    ng = np.geomspace(max(n[n > 0].min(), 1), n.max(), 100)
    ax.plot(ng, (p.source_bins - 1) / (2 * ng), "k--", lw=1, label="(bins-1)/(2N)")
    ax.plot(ng, kl_bias(p.source_bins, ng, p.histogram_pseudocount), "k:", lw=1, label="same, smoothed histogram")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("usable sources N")
    ax.set_ylabel("raw KL of the source indicator (nats)")
    ax.set_title("raw KL vs N: bias (bins-1)/(2N), then KL_0", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("Normal exposures scored against one reference mixing ~50, ~500 and ~5,000 sources: "
                 "the fraction right of the red line is the 3-sigma false-alarm rate")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt_rate(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{d['fraction']:.4f} ({d['k']}) [{lo:.4f}, {hi:.4f}]"


def print_report(summary: dict, hist: dict | None, title: str = "") -> None:
    if title:
        print(title)
    print(f"{'group':>7} {'indicator':>11} {'exp.':>5} {'med N':>7} {'> 3 sigma (k) [95% CI]':>32} "
          f"{'> 2 sigma (k) [95% CI]':>32} {'med s':>6} {'med raw KL':>10} {'(b-1)/2N':>9}")
    for g, table in summary.items():
        for name in INDICATORS:
            if name not in table:
                continue
            d = table[name]
            if not d["n"]:
                print(f"{g:>7} {name:>11} {0:>5}  (no finite sigma)")
                continue
            med_n = d.get("median_n", float("nan"))
            kl = f"{d['median_raw_kl']:.5f}" if "median_raw_kl" in d else "-"
            bias = f"{d['multinomial_bias']:.5f}" if "multinomial_bias" in d else "-"
            print(f"{g:>7} {name:>11} {d['n']:>5} {table['median_sources'] if math.isnan(med_n) else med_n:>7.0f} "
                  f"{_fmt_rate(d['above_3']):>32} {_fmt_rate(d['above_2']):>32} {d['median_sigma']:>6.2f} {kl:>10} {bias:>9}")
    print(f"nominal: > 3 sigma {NOMINAL[3.0]:.5f}, > 2 sigma {NOMINAL[2.0]:.4f}")
    if hist:
        print("histogram-level check (multinomial draws from measured per-exposure distributions):")
        for g, d in hist.items():
            if g.startswith("_"):
                continue
            for name in HISTOGRAM_INDICATORS:
                print(f"{g:>7} {name:>11} {d['n_exposures']:>6} N={d['n_sources']:>5} "
                      f"{_fmt_rate(d[name]['above_3']):>34} {_fmt_rate(d[name]['above_2']):>34} {d[name]['median_sigma']:>6.2f}")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if k != "sigmas"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


@contextmanager
def null_model(kind: str):
    """``fitted``: the scoring as it is. ``legacy``: the source and profile nulls as before 2026-11-23,
    the scaled chi^2 G / d(N) ~ chi^2_k with kappa from medians (``_fit_null`` returns its start and
    shape 0, which :func:`obsqc.detectors.scoring.null_scale_dof` reads as that model)."""
    from obsqc.detectors import scoring

    if kind == "fitted":
        yield
        return
    if kind != "legacy":
        raise ValueError(f"null must be 'fitted' or 'legacy', not {kind!r}")
    saved = scoring._fit_null
    scoring._fit_null = lambda g, n, dof, kappa0: (kappa0, 0.0)
    try:
        yield
    finally:
        scoring._fit_null = saved


def run(groups: tuple[Group, ...], *, seed: int = 1, workers: int = 2, reference_mode: str = "mixed",
        out: Path | None = None, hist_n_test: int = 0, null: str = "fitted", compare_legacy: bool = False,
        hist_repeats: int = 0, log=print) -> dict:
    """The whole benchmark minus the printing: simulate/measure, build the reference(s), score, summarise."""
    t0 = time.perf_counter()
    sets = measure_groups(groups, seed, workers, out, log=log)
    with null_model(null):
        result = _score_all(groups, sets, seed, reference_mode, hist_n_test, null, t0, hist_repeats)
    if compare_legacy and null != "legacy":
        with null_model("legacy"):
            legacy = _score_all(groups, sets, seed, reference_mode, hist_n_test, "legacy", t0, hist_repeats)
        result["legacy"] = {k: legacy[k] for k in ("summary", "histogram_check", "rows", "reference", "histogram_repeats")}
    result["total_s"] = time.perf_counter() - t0
    return result


def _score_all(groups, sets, seed, reference_mode, hist_n_test, null, t0, hist_repeats=0) -> dict:
    from obsqc.detectors.scoring import build_reference

    names = [g.name for g in groups]
    if reference_mode == "mixed":
        train = [e for g in names for e in sets[(g, "train")]]
        reference = build_reference(train)
        refs = {g: reference for g in names}
    elif reference_mode == "per-group":
        refs = {g: build_reference(sets[(g, "train")]) for g in names}
    else:
        raise ValueError(f"reference_mode must be 'mixed' or 'per-group', not {reference_mode!r}")
    rows = [r for g in names for r in score_rows(sets[(g, "test")], refs[g], g)]
    summary = summarise(rows, names)
    hist, repeats = None, None
    big = groups[-1].name
    pool = sets[(big, "train")] + sets[(big, "test")]
    ns = {g: max(1, int(round(summary[g]["median_sources"]))) for g in names}
    n_train = {g.name: g.n_train for g in groups}
    if hist_n_test:
        hist = histogram_check(pool, ns, n_train, n_test=hist_n_test, seed=seed)
    if hist_repeats:  # the same check against independent training draws: how much a reference of this size varies
        runs = [histogram_check(pool, ns, n_train, n_test=3000, seed=seed * 1000 + 1 + r) for r in range(hist_repeats)]
        repeats = {g: {name: {t: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                              for t in ("above_3", "above_2")
                              for v in [[run[g][name][t]["fraction"] for run in runs]]}
                       for name in HISTOGRAM_INDICATORS} for g in names}
        repeats["_n_references"], repeats["_n_test"] = hist_repeats, 3000
    ref0 = refs[names[0]]
    return {
        "groups": [asdict(g) for g in groups], "reference_mode": reference_mode, "seed": seed, "null": null,
        "reference": {"source_kappa": ref0.source_kappa, "profile_kappa": ref0.profile_kappa,
                      "source_shape": getattr(ref0, "source_shape", 0.0), "profile_shape": getattr(ref0, "profile_shape", 0.0),
                      "background_kappa": ref0.background_kappa, "large_scale_kappa": ref0.large_scale_kappa,
                      "sigma_loc": ref0.sigma_loc, "sigma_scale": ref0.sigma_scale, "n_exposures": ref0.n_exposures},
        "summary": summary, "histogram_check": hist, "histogram_repeats": repeats, "rows": rows, "timing": sets["_timing"],
        "total_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few exposures per group (< 1 min); not a figure to report")
    parser.add_argument("--seed", type=int, default=1, help="run seed; every exposure seed derives from it")
    parser.add_argument("--workers", type=int, default=2, help="processes that simulate and measure")
    parser.add_argument("--reference", choices=("mixed", "per-group"), default="mixed",
                        help="one reference from a training set mixing the groups, or one per group")
    parser.add_argument("--null", choices=("fitted", "legacy"), default="fitted",
                        help="legacy: score the source and profile indicators with the scaled chi^2 of d(N) alone (before 2026-11-23)")
    parser.add_argument("--group", action="append", nargs=6, metavar=("NAME", "SIDE", "N_CCD", "EXPTIME", "N_TRAIN", "N_TEST"),
                        help="replace the default groups (repeatable)")
    parser.add_argument("--compare-legacy", action=argparse.BooleanOptionalAction, default=True,
                        help="also score with the legacy null, for the before/after table and figure")
    parser.add_argument("--hist-repeats", type=int, default=0,
                        help="repeat the histogram-level check against this many independent references (3,000 exposures per group each)")
    parser.add_argument("--hist-n-test", type=int, default=None, help="exposures per group of the histogram-level check (0: off)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "obsqc-calibration",
                        help="folder of the cache of measured statistics")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--figure", type=Path, default=None, help="write the figure here (e.g. docs/img/calibration.png)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.group:
        groups = tuple(Group(n, int(s), int(c), float(e), int(tr), int(te)) for n, s, c, e, tr, te in args.group)
    else:
        groups = QUICK_GROUPS if args.quick else DEFAULT_GROUPS
    hist_n = args.hist_n_test if args.hist_n_test is not None else (200 if args.quick else 10000)
    t0 = time.perf_counter()
    result = run(groups, seed=args.seed, workers=args.workers, reference_mode=args.reference, null=args.null,
                 compare_legacy=args.compare_legacy, hist_repeats=args.hist_repeats,
                 out=None if args.no_cache else args.out, hist_n_test=hist_n,
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    print_report(result["summary"], result["histogram_check"], f"null: {args.null}, reference: {args.reference}")
    if "legacy" in result:
        leg = {g: {k: v for k, v in t.items() if k in ("n_exposures", "median_sources", *HISTOGRAM_INDICATORS)}
               for g, t in result["legacy"]["summary"].items()}
        print_report(leg, result["legacy"]["histogram_check"], "before: legacy null (scaled chi^2 of d(N)), same exposures")
    for label, res in (("fitted", result), ("legacy", result.get("legacy"))):
        rep = res.get("histogram_repeats") if res else None
        if not rep:
            continue
        print(f"histogram-level check against {rep['_n_references']} independent references ({rep['_n_test']} exposures "
              f"per group each), {label} null: fraction above 3 / 2 sigma, median [min, max]")
        for g, d in rep.items():
            if not g.startswith("_"):
                print(f"{g:>7} " + "  ".join(f"{name}: {d[name]['above_3']['median']:.4f} [{d[name]['above_3']['min']:.4f}, "
                                             f"{d[name]['above_3']['max']:.4f}] / {d[name]['above_2']['median']:.3f} "
                                             f"[{d[name]['above_2']['min']:.3f}, {d[name]['above_2']['max']:.3f}]"
                                             for name in HISTOGRAM_INDICATORS))
    r = result["reference"]
    print(f"reference: kappa source {r['source_kappa']:.3g} (shape {r['source_shape']:.3g}), "
          f"profile {r['profile_kappa']:.3g} (shape {r['profile_shape']:.3g}); "
          f"sigma loc {json.dumps({k: round(v, 2) for k, v in result['reference']['sigma_loc'].items()})}, "
          f"scale {json.dumps({k: round(v, 2) for k, v in result['reference']['sigma_scale'].items()})}")
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s (simulate+measure wall {result['timing']['wall_s']:.0f} s)")
    for name, d in result["timing"]["per_group_cpu_s"].items():
        print(f"  {name}: {d['n']} exposures, simulate {d['simulate_s'] / d['n']:.2f} s, measure {d['measure_s'] / d['n']:.2f} s each (one core)")
    if args.figure:
        make_figure(result["rows"], [g.name for g in groups], args.figure, result["histogram_check"], result.get("legacy"))
        print(f"figure: {args.figure}")
    if args.json:
        doc = dict(result, date=date.today().isoformat(), total_s=total,
                   command=" ".join(["python -m benchmarks.calibration", *(argv if argv is not None else sys.argv[1:])]))
        args.json.write_text(json.dumps(_jsonable(doc), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
