"""Scores of an exposure against a reference: raw KL (eq. 1) and a calibrated significance.

Alonso, Zhang & Li rank exposures by the KL divergence of their angle histogram from the mean
histogram of the set (eq. 1; §3.1 for sources, §3.2 for background gradients, where the exposure's
indicator is the mean KL of its CCDs). Raw KL is biased upward by about (bins - 1) / (2 N) for N
angles, so it cannot be compared across exposures with different source counts. Each indicator is
therefore also reported as a significance in sigma units (DESIGN.md "The method"):

.. math::

    G = 2 N \\, \\mathrm{KL}(P_i \\,|\\, \\overline{P}) \\;\\sim\\; d(N)\\, \\chi^2_{\\mathrm{bins}-1},
    \\qquad d(N) = 1 + \\kappa N

The G-test statistic of a histogram drawn from the reference is chi-square distributed; ``d(N)``
absorbs the genuine exposure-to-exposure scatter of normal data (a PSF is never perfectly round, so
KL does not shrink to zero as N grows: E[G] = (bins - 1) + 2 N KL_0, hence kappa = 2 KL_0 / (bins - 1)).
kappa is estimated from normal data (:func:`build_reference`), robustly, so a few anomalies in the set
do not move it. The background indicator of an exposure sums G over its CCDs, with
``n_ccds * (bins - 1)`` degrees of freedom; its raw KL is the paper's mean over CCDs.

Finally every exposure-level significance is standardised by the robust location and scatter it has
over the reference set (never towards more significance), so that normal data that scatter more than
the analytic null keep their false-alarm rate and the five indicators share one scale; the ranking
score is the largest of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy import special, stats

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.divergence import (
    SIGMA_RANGE, chi2_sigma, corrected_kl, g_statistic, kl_divergence, mean_distribution, smoothed_distribution,
)
from obsqc.detectors.exposure import ExposureStats


INDICATOR_NAMES = ("source", "profile", "background", "large_scale", "line")
"""The exposure-level indicators, in the order reports list them."""


def _kappa(g: np.ndarray, n: np.ndarray, dof: int) -> float:
    """Robust estimate of kappa in d(N) = 1 + kappa N from normal-ish data (median, clipped at 0)."""
    ok = (n > 0) & np.isfinite(g)
    if ok.sum() < 3:
        return 0.0
    excess = (g[ok] / stats.chi2.median(dof) - 1.0) / n[ok]
    return float(max(np.median(excess), 0.0))


@dataclass(frozen=True, slots=True)
class Indicator:
    """One indicator of one exposure: raw KL (eq. 1), bias-corrected KL, significance, sample size."""

    kl: float
    kl_corrected: float
    sigma: float
    n: int


def _indicator(counts: np.ndarray, ref_p: np.ndarray, kappa: float, pseudocount: float) -> tuple[Indicator, float]:
    """Score one histogram against a reference; also returns its G / d(N) for summing over CCDs."""
    n = int(counts.sum())
    bins = len(ref_p)
    if n == 0:
        return Indicator(float("nan"), float("nan"), float("nan"), 0), float("nan")
    kl = kl_divergence(smoothed_distribution(counts, pseudocount), ref_p)
    g = g_statistic(kl, n, bins, pseudocount) / (1.0 + kappa * n)
    return Indicator(kl, corrected_kl(kl, n, bins, pseudocount), chi2_sigma(g, bins - 1), n), g


@dataclass(frozen=True)
class Reference:
    """Reference distributions of one instrument and band (or of a set, in the paper's batch mode).

    ``source_p``, ``profile_p``, ``background_p`` and ``large_scale_p`` are smoothed probability
    histograms (orientations and gradient angles over (-pi/2, pi/2], peak offsets over [0, max]); the
    ``*_kappa`` are the over-dispersion slopes of d(N) = 1 + kappa N of each indicator;
    ``line_loc`` and ``line_scale`` the Gumbel location and scale of the exposures' brightest-line
    z (:mod:`obsqc.detectors.lines`), which turn a line z into a significance. ``sigma_loc`` and
    ``sigma_scale`` (per indicator name) standardise each exposure-level significance by the robust
    location and scatter it has over the reference set, only ever towards less significance
    (loc >= 0, scale >= 1): where normal data scatter more than the analytic null, a threshold keeps
    its false-alarm rate, and all indicators share one scale before they are combined.
    """

    source_p: np.ndarray
    profile_p: np.ndarray
    background_p: np.ndarray
    large_scale_p: np.ndarray
    source_kappa: float = 0.0
    profile_kappa: float = 0.0
    background_kappa: float = 0.0
    large_scale_kappa: float = 0.0
    line_loc: float = 0.0
    line_scale: float = 1.0
    sigma_loc: dict[str, float] = field(default_factory=dict)
    sigma_scale: dict[str, float] = field(default_factory=dict)
    n_exposures: int = 0
    n_ccds: int = 0

    _ARRAYS = ("source_p", "profile_p", "background_p", "large_scale_p")
    _KAPPAS = ("source_kappa", "profile_kappa", "background_kappa", "large_scale_kappa")

    def to_json(self) -> str:
        """Serialise (arrays as lists)."""
        d = asdict(self)
        for key in self._ARRAYS:
            d[key] = getattr(self, key).tolist()
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Reference":
        """Inverse of :meth:`to_json`; raises ``ValueError`` on a malformed document."""
        try:
            d = json.loads(text)
            arrays = {k: np.asarray(d[k], float) for k in cls._ARRAYS}
            scalars = {k: float(d.get(k, 0.0)) for k in cls._KAPPAS}
            scalars.update(line_loc=float(d.get("line_loc", 0.0)), line_scale=float(d.get("line_scale", 1.0)))
            for key in ("sigma_loc", "sigma_scale"):
                scalars[key] = {str(k): float(v) for k, v in dict(d.get(key, {})).items()}
            return cls(**arrays, **scalars, n_exposures=int(d.get("n_exposures", 0)), n_ccds=int(d.get("n_ccds", 0)))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a reference file: {exc}") from exc


@dataclass(frozen=True, slots=True)
class CCDScore:
    """Per-CCD numbers: the two gradient indicators of that CCD and its usable source count."""

    name: str
    background: Indicator
    large_scale: Indicator
    n_sources: int


@dataclass(frozen=True, slots=True)
class ExposureScore:
    """The scores of one exposure.

    ``source`` is the paper's orientation indicator (§3.1), ``background`` the gradient indicator
    (§3.2: raw KL is the mean over CCDs; sigma from the G statistics summed over CCDs), ``profile``
    the peak-offset indicator of :mod:`obsqc.detectors.structure` and ``large_scale`` the gradient
    indicator on the binned residual (:mod:`obsqc.detectors.binning`), combined over CCDs like
    ``background``; ``line`` the brightest straight line (:mod:`obsqc.detectors.lines`: ``kl`` holds
    its raw z, ``n`` the CCDs searched). Every ``sigma`` is standardised by the reference.
    """

    exposure_id: str
    n_ccds: int
    source: Indicator
    profile: Indicator
    background: Indicator
    large_scale: Indicator
    line: Indicator
    ccds: tuple[CCDScore, ...]

    @property
    def n_sources(self) -> int:
        return self.source.n

    def worst_ccds(self, k: int = 3) -> list[CCDScore]:
        """The k CCDs with the highest background significance."""
        return sorted(self.ccds, key=lambda c: -np.nan_to_num(c.background.sigma, nan=-np.inf))[:k]


def build_reference(exposures: list[ExposureStats], params: DetectorParams = DetectorParams()) -> Reference:
    """The paper's reference: the mean smoothed distribution of a set (eq. 1, P-bar), plus the kappas.

    kappa is estimated against that reference from the same set; with a majority of normal exposures
    the median is unmoved by the anomalous ones. Raises ``ValueError`` on an empty set.
    """
    if not exposures:
        raise ValueError("a reference needs at least one exposure")
    a = params.histogram_pseudocount
    rows = {
        "source": np.stack([e.source_counts for e in exposures]),
        "profile": np.stack([e.profile_counts for e in exposures]),
        "background": np.concatenate([e.gradient_counts for e in exposures]),
        "large_scale": np.concatenate([e.coarse_counts for e in exposures]),
    }
    dists = {k: mean_distribution(v, a) for k, v in rows.items()}

    def kappa(k: str) -> float:
        g = np.array([_indicator(r, dists[k], 0.0, a)[1] for r in rows[k]])
        return _kappa(g, rows[k].sum(axis=1).astype(float), len(dists[k]) - 1)

    line_loc, line_scale = _gumbel_fit(np.array([e.line_z for e in exposures]))
    raw = Reference(
        *(dists[k] for k in ("source", "profile", "background", "large_scale")),
        *(kappa(k) for k in ("source", "profile", "background", "large_scale")),
        line_loc=line_loc, line_scale=line_scale,
        n_exposures=len(exposures), n_ccds=len(rows["background"]),
    )
    scores = [score_exposure(e, raw, params) for e in exposures]
    loc, scale = {}, {}
    for name in INDICATOR_NAMES:
        vals = np.array([getattr(sc, name).sigma for sc in scores])
        vals = vals[np.isfinite(vals)]
        if vals.size >= 3:
            med = float(np.median(vals))
            loc[name] = max(med, 0.0)
            scale[name] = max(1.482602218505602 * float(np.median(np.abs(vals - med))), 1.0)
    return replace(raw, sigma_loc=loc, sigma_scale=scale)


_GUMBEL_MEDIAN = float(stats.gumbel_r.median())


def _gumbel_mad() -> float:
    """MAD of the standard Gumbel distribution (solved numerically once)."""
    from scipy.optimize import brentq

    m = _GUMBEL_MEDIAN
    return float(brentq(lambda d: stats.gumbel_r.cdf(m + d) - stats.gumbel_r.cdf(m - d) - 0.5, 1e-6, 10.0))


_GUMBEL_MAD = _gumbel_mad()


def _gumbel_fit(z: np.ndarray) -> tuple[float, float]:
    """Robust Gumbel location and scale of the exposures' line z (a maximum over many strips).

    The largest of many near-Gaussian strip statistics follows a Gumbel law: location and scale
    from the median and MAD, so that a few trails in the set do not move them. (0, 1) when fewer
    than three values are finite.
    """
    z = z[np.isfinite(z)]
    if z.size < 3:
        return 0.0, 1.0
    med = float(np.median(z))
    beta = float(np.median(np.abs(z - med))) / _GUMBEL_MAD
    beta = beta if beta > 0 else 1.0
    return med - beta * _GUMBEL_MEDIAN, beta


def _gumbel_sigma(z: float, loc: float, scale: float) -> float:
    """Significance in sigma of a line z under the reference's Gumbel law (NaN stays NaN)."""
    if not np.isfinite(z):
        return float("nan")
    log_p = float(stats.gumbel_r.logsf(z, loc, scale))
    return float(np.clip(-special.ndtri_exp(log_p), *SIGMA_RANGE))


def _combine_ccds(indicators: list[Indicator], gs: list[float], bins: int) -> Indicator:
    """Exposure level of a per-CCD indicator: mean KL (the paper), sigma of the summed G over CCDs."""
    kept = [(i, g) for i, g in zip(indicators, gs) if i.n]
    if not kept:
        return Indicator(float("nan"), float("nan"), float("nan"), 0)
    return Indicator(
        float(np.mean([i.kl for i, _ in kept])), float(np.mean([i.kl_corrected for i, _ in kept])),
        chi2_sigma(sum(g for _, g in kept), len(kept) * (bins - 1)), int(sum(i.n for i, _ in kept)),
    )


def score_exposure(stats_: ExposureStats, reference: Reference, params: DetectorParams = DetectorParams()) -> ExposureScore:
    """Score one exposure against a reference: raw KL, bias-corrected KL, and sigma per indicator."""
    a = params.histogram_pseudocount
    source, _ = _indicator(stats_.source_counts, reference.source_p, reference.source_kappa, a)
    profile, _ = _indicator(stats_.profile_counts, reference.profile_p, reference.profile_kappa, a)
    bg = [_indicator(c.gradient_counts, reference.background_p, reference.background_kappa, a) for c in stats_.ccds]
    ls = [_indicator(c.coarse_counts, reference.large_scale_p, reference.large_scale_kappa, a) for c in stats_.ccds]
    ccds = tuple(CCDScore(c.name, b[0], l[0], c.n_sources) for c, b, l in zip(stats_.ccds, bg, ls))
    line = Indicator(stats_.line_z, float("nan"), _gumbel_sigma(stats_.line_z, reference.line_loc, reference.line_scale),
                     sum(1 for c in stats_.ccds if np.isfinite(c.line_z)))
    parts = {
        "source": source, "profile": profile,
        "background": _combine_ccds([b[0] for b in bg], [b[1] for b in bg], len(reference.background_p)),
        "large_scale": _combine_ccds([l[0] for l in ls], [l[1] for l in ls], len(reference.large_scale_p)),
        "line": line,
    }
    for name, ind in parts.items():
        loc, scale = reference.sigma_loc.get(name, 0.0), reference.sigma_scale.get(name, 1.0)
        parts[name] = replace(ind, sigma=float(np.clip((ind.sigma - loc) / scale, *SIGMA_RANGE)))
    return ExposureScore(stats_.exposure_id, len(stats_.ccds), **parts, ccds=ccds)
