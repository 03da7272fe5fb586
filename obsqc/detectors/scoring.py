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

The source and profile indicators pool the sources of an exposure, 50 of them or 5,000, and there a
scale alone is not enough: KL_0 differs from exposure to exposure (the PSF's ellipticity, the share
of stars), so G is a non-central chi-square whose non-centrality 2 N KL_0 is itself spread over
exposures (a random-effects model). For few sources G is chi^2_k whatever that spread; for many it is
2 N KL_0, shaped like the spread of KL_0, whose tail d(N) chi^2_k underestimates: on simulated normal
exposures a reference mixing 50 to 5,000 sources put 3.7% of the 5,000-source ones above 3 sigma
(nominal 0.135%; median over 8 references, 2.1-6.3%). :func:`null_scale_dof` follows both ends, G ~ c(N) chi^2_nu(N) with KL_0 ~ Gamma,
and :func:`build_reference` fits kappa and the Gamma shape by likelihood over the reference's
exposures, each at its own N (benchmarks/calibration.py; BENCHMARKS.md "Calibration: false alarms
vs source count").

Finally every exposure-level significance is standardised by the robust location and scatter it has
over the reference set (never towards more significance), so that normal data that scatter more than
the analytic null keep their false-alarm rate and the five indicators share one scale; the ranking
score is the largest of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

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


def null_scale_dof(n, kappa: float, shape: float, dof: int):
    r"""Scale c and degrees of freedom nu of the null law G ~ c chi^2_nu at sample size ``n``.

    Normal exposures differ from the reference by an intrinsic divergence D (their PSF is never
    exactly the reference's), so G of a histogram of n angles is non-central, chi^2_k(2 n D), with D
    spread over exposures; D ~ Gamma(``shape``, mean mu), mu = kappa k / 2. Matching the first two
    moments (Satterthwaite/Welch),

    .. math::

        \mathrm{E}\,G = k (1 + \kappa n), \qquad
        \mathrm{Var}\,G = 2k + 4 \kappa k n + (\kappa k n)^2 / a, \qquad
        c = \frac{\mathrm{Var}\,G}{2\,\mathrm{E}\,G}, \quad \nu = \frac{2 (\mathrm{E}\,G)^2}{\mathrm{Var}\,G}

    is exact at both ends: chi^2_k for few angles (c -> 1, nu -> k), and the law of 2 n D for many
    (c -> n kappa k / (2a), nu -> 2a). ``shape <= 0`` means a = k / 2, for which c = 1 + kappa n and
    nu = k: the scaled chi^2 of d(N) = 1 + kappa N that a reference without a shape stands for.
    """
    n = np.asarray(n, dtype=np.float64)
    a = float(shape) if shape > 0 else dof / 2.0
    mean = dof * (1.0 + kappa * n)
    var = 2.0 * dof + 4.0 * kappa * dof * n + (kappa * dof * n) ** 2 / a
    return var / (2.0 * mean), 2.0 * mean**2 / var


_QUADRATURE_NODES = 48
"""Generalised Gauss-Laguerre nodes over the Gamma law of KL_0 in :func:`null_sigma` (p within a few
per cent of adaptive quadrature down to p ~ 1e-30, checked for shapes 0.5-7.5 and N = 500-5,000)."""
_QUADRATURE_P_FLOOR = 1e-30
"""Below this p (11.3 sigma) the quadrature loses accuracy; the two-moment law takes over there."""


@lru_cache(maxsize=64)
def _laguerre(shape: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x and log weights of E[f(X)], X ~ Gamma(shape, 1), by generalised Gauss-Laguerre."""
    x, w = special.roots_genlaguerre(_QUADRATURE_NODES, shape - 1.0)
    return x, np.log(w) - special.gammaln(shape)


def null_sigma(g: float, n: float, kappa: float, shape: float, dof: int) -> float:
    r"""Significance of G under the null of :func:`null_scale_dof`, in sigma, one-sided.

    With a shape, the exact random-effects law: G | D ~ chi^2_k(2 n D) (non-central), D ~ Gamma(a,
    mean kappa k / 2), so

    .. math::  p = \int P(\chi^2_k(2 n D) > G)\, \mathrm{d}F(D)

    by Gauss-Laguerre quadrature (the two-moment law of :func:`null_scale_dof` is a little light-tailed
    for a few hundred sources, where noise and KL_0 weigh alike: 0.24% above 3 sigma instead of
    0.14%). Where p < ``_QUADRATURE_P_FLOOR`` the larger of that floor's sigma and the two-moment
    sigma is returned, so sigma stays monotonic in G. Without a shape (``shape <= 0``) or kappa, the
    scaled chi^2 G / d(N) ~ chi^2_k. Clipped to SIGMA_RANGE; nan where G is nan.
    """
    c, nu = null_scale_dof(n, kappa, shape, dof)
    approx = float(chi2_sigma(g / c, nu))
    if shape <= 0 or kappa <= 0 or not np.isfinite(g):
        return approx
    x, log_w = _laguerre(float(shape))
    lam = n * kappa * dof * x / shape  # 2 n D at the nodes, D = x kappa k / (2 a)
    with np.errstate(divide="ignore"):
        log_p = float(np.logaddexp.reduce(log_w + np.log(stats.ncx2.sf(max(g, 0.0), dof, lam))))
    if not np.isfinite(log_p) or log_p < np.log(_QUADRATURE_P_FLOOR):
        return max(float(-special.ndtri(_QUADRATURE_P_FLOOR)), approx)
    return float(np.clip(-special.ndtri_exp(min(log_p, 0.0)), *SIGMA_RANGE))


_FIT_TRIM_SIGMA = 3.0
"""Reference exposures above this significance under the current fit are left out of the next one
(the likelihood is truncated there, so leaving out the normal tail biases nothing), in sigma."""
_FIT_MIN_EXPOSURES = 10
"""Fewer usable exposures than this keep the scaled chi^2 of d(N) with kappa from medians, count."""
_FIT_ITERATIONS = 5
"""Fits at most, each with the cut of the one before; it stops when the cut keeps the same exposures."""
_FIT_CONSERVATIVE_SE = 1.0
"""kappa is raised and the shape lowered by this many of their standard errors. A reference of a few
dozen exposures with many sources pins the spread of KL_0 to ~20% only, and for 5,000 sources a 15%
error in its mean moves the 3-sigma rate by a factor of 3 (Gamma tails); one standard error towards
fewer alarms keeps the rate at or below nominal unless the fit is off by more than that. It costs
nothing for few sources, where c ~ 1 and nu ~ k whatever kappa and the shape."""
_FIT_SHAPE_MIN = 0.3
"""Smallest Gamma shape fitted (the largest is k / 2, the scaled chi^2's: a reference with few
exposures of many sources, whose likelihood barely constrains the shape, never gets a lighter tail
than the model it replaces), dimensionless."""
_FIT_KAPPA_FLOOR = 1e-6
"""Smallest kappa the fit starts from (the median estimate is 0 when most exposures have few sources)."""


def _fit_null(g: np.ndarray, n: np.ndarray, dof: int, kappa0: float) -> tuple[float, float]:
    """Maximum-likelihood (kappa, shape) of :func:`null_scale_dof` from the G of a reference set.

    Every exposure's G is scored under c(N) chi^2_nu(N) at its own N, so the fit sees how the scatter
    grows with N: exposures with few sources pin the chi^2 part, those with many the spread of KL_0.
    Robustness, since a set may hold anomalies (``obsqc rank`` builds the reference from the night
    itself): the start is :func:`_quartile_start`, and each fit leaves out the exposures above
    ``_FIT_TRIM_SIGMA`` under the one before, with the truncated density f / F(t) so that the normal
    exposures left out with them bias nothing. The estimate is finally moved by
    ``_FIT_CONSERVATIVE_SE`` standard errors towards fewer alarms. Returns (``kappa0``, 0: the scaled
    chi^2) when fewer than ``_FIT_MIN_EXPOSURES`` exposures are usable.
    """
    ok = (n > 0) & np.isfinite(g)
    g, n = np.maximum(g[ok], 1e-12), n[ok].astype(np.float64)
    if g.size < _FIT_MIN_EXPOSURES:
        return kappa0, 0.0
    lo, hi = np.log([_FIT_SHAPE_MIN, dof / 2.0])

    def unpack(p: np.ndarray) -> tuple[float, float]:
        return float(np.exp(np.clip(p[0], -30.0, 0.0))), float(np.exp(np.clip(p[1], lo, hi)))

    def cut(p: np.ndarray) -> np.ndarray:
        c, nu = null_scale_dof(n, *unpack(p), dof)
        return c * stats.chi2.isf(stats.norm.sf(_FIT_TRIM_SIGMA), nu)

    def nll(p: np.ndarray, t: np.ndarray) -> float:
        c, nu = null_scale_dof(n, *unpack(p), dof)
        keep = g <= t
        ll = stats.chi2.logpdf(g[keep] / c[keep], nu[keep]) - np.log(c[keep]) - stats.chi2.logcdf(t[keep] / c[keep], nu[keep])
        return float(-ll.sum())

    p = _quartile_start(g, n, dof, max(kappa0, _FIT_KAPPA_FLOOR))
    t = cut(p)
    for _ in range(_FIT_ITERATIONS):
        best = optimize.minimize(nll, p, args=(t,), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 600})
        if not np.isfinite(best.fun):
            break
        p = np.clip(best.x, [-30.0, lo], [0.0, hi])
        new_t = cut(p)
        if np.sum(g <= new_t) < _FIT_MIN_EXPOSURES or np.array_equal(g <= new_t, g <= t):
            break
        t = new_t
    se = _standard_errors(lambda q: nll(q, t), p)
    return unpack(p + _FIT_CONSERVATIVE_SE * np.array([1.0, -1.0]) * se)


def _quartile_start(g: np.ndarray, n: np.ndarray, dof: int, kappa0: float) -> np.ndarray:
    """Robust start of :func:`_fit_null`, (log kappa, log shape): the quartiles of the significances
    are made those of N(0, 1) in each of up to three strata of n (at least ``_FIT_MIN_EXPOSURES``
    each). Quartiles ignore the top quarter, where a set's anomalies are, as the medians of
    :func:`_kappa` do; the cut of the first fit is drawn from this start."""
    order = np.argsort(n, kind="stable")
    strata = np.array_split(order, max(1, min(3, g.size // _FIT_MIN_EXPOSURES)))
    z = stats.norm.ppf([0.25, 0.5, 0.75])

    def loss(p: np.ndarray) -> float:
        shape = float(np.exp(np.clip(p[1], np.log(_FIT_SHAPE_MIN), np.log(dof / 2.0))))
        c, nu = null_scale_dof(n, float(np.exp(min(p[0], 0.0))), shape, dof)
        s = chi2_sigma(g / c, nu)
        return float(sum(np.sum((np.quantile(s[i], [0.25, 0.5, 0.75]) - z) ** 2) for i in strata))

    start = np.log([kappa0, dof / 2.0])
    best = optimize.minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 400})
    return best.x if best.fun <= loss(start) else start


def _standard_errors(nll, p: np.ndarray, step: float = 0.02, cap: float = 1.0) -> np.ndarray:
    """Standard errors of the parameters at the minimum ``p`` of a negative log-likelihood, from its
    Hessian by central differences; ``cap`` where the likelihood is flat along a parameter."""
    f0, m = nll(p), len(p)
    h = np.zeros((m, m))
    e = np.eye(m) * step
    for i in range(m):
        for j in range(i, m):
            if i == j:
                h[i, i] = (nll(p + e[i]) - 2 * f0 + nll(p - e[i])) / step**2
            else:
                h[i, j] = h[j, i] = (nll(p + e[i] + e[j]) - nll(p + e[i] - e[j]) - nll(p - e[i] + e[j])
                                     + nll(p - e[i] - e[j])) / (4 * step**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        try:
            var = np.diag(np.linalg.inv(h)) if np.all(np.isfinite(h)) else np.full(m, np.inf)
        except np.linalg.LinAlgError:
            var = np.full(m, np.inf)
    return np.where(np.isfinite(var) & (var > 0), np.sqrt(np.abs(var)), cap).clip(0.0, cap)


@dataclass(frozen=True, slots=True)
class Indicator:
    """One indicator of one exposure: raw KL (eq. 1), bias-corrected KL, significance, sample size."""

    kl: float
    kl_corrected: float
    sigma: float
    n: int


def _indicator(counts: np.ndarray, ref_p: np.ndarray, kappa: float, pseudocount: float,
               shape: float = 0.0) -> tuple[Indicator, tuple[float, float]]:
    """Score one histogram against a reference; also returns (G / c, nu) for summing over CCDs."""
    n = int(counts.sum())
    bins = len(ref_p)
    if n == 0:
        return Indicator(float("nan"), float("nan"), float("nan"), 0), (float("nan"), float("nan"))
    kl = kl_divergence(smoothed_distribution(counts, pseudocount), ref_p)
    c, nu = null_scale_dof(n, kappa, shape, bins - 1)
    g = g_statistic(kl, n, bins, pseudocount)
    sigma = null_sigma(g, n, kappa, shape, bins - 1)
    return Indicator(kl, corrected_kl(kl, n, bins, pseudocount), sigma, n), (g / float(c), float(nu))


@dataclass(frozen=True)
class Reference:
    """Reference distributions of one instrument and band (or of a set, in the paper's batch mode).

    ``source_p``, ``profile_p``, ``background_p`` and ``large_scale_p`` are smoothed probability
    histograms (orientations and gradient angles over (-pi/2, pi/2], peak offsets over [0, max]); the
    ``*_kappa`` are the over-dispersion slopes of d(N) = 1 + kappa N of each indicator (E G = k d(N))
    and ``source_shape`` and ``profile_shape`` the Gamma shapes of the intrinsic divergence of
    normal exposures (:func:`null_scale_dof`; 0, the default of references written before them,
    is the scaled chi^2 G / d(N) ~ chi^2_k);
    ``line_loc`` and ``line_scale`` the Gumbel location and scale of the exposures' brightest-line
    z (:mod:`obsqc.detectors.lines`), which turn a line z into a significance. ``sigma_loc`` and
    ``sigma_scale`` (per indicator name) standardise each exposure-level significance by the robust
    location and scatter it has over the reference set, only ever towards less significance
    (loc >= 0, scale >= 1): where normal data scatter more than the analytic null, a threshold keeps
    its false-alarm rate, and all indicators share one scale before they are combined.
    ``learned`` holds, by name, the calibration (location, scale, members) of exposure-level indicators
    computed outside the detectors, such as the autoencoder's mean stamp MSE
    (:mod:`obsqc.service.learned`); empty in references written before them.
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
    source_shape: float = 0.0
    profile_shape: float = 0.0
    learned: dict[str, list[float]] = field(default_factory=dict)

    _ARRAYS = ("source_p", "profile_p", "background_p", "large_scale_p")
    _KAPPAS = ("source_kappa", "profile_kappa", "background_kappa", "large_scale_kappa", "source_shape", "profile_shape")

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
            learned = {str(k): [float(x) for x in v] for k, v in dict(d.get("learned", {})).items()}
            return cls(**arrays, **scalars, n_exposures=int(d.get("n_exposures", 0)), n_ccds=int(d.get("n_ccds", 0)),
                       learned=learned)
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

    def g_n(k: str) -> tuple[np.ndarray, np.ndarray]:
        return np.array([_indicator(r, dists[k], 0.0, a)[1][0] for r in rows[k]]), rows[k].sum(axis=1).astype(float)

    def kappa(k: str) -> float:
        return _kappa(*g_n(k), len(dists[k]) - 1)

    # The source and profile indicators pool an exposure's sources, whose number varies 100-fold:
    # their null law must follow N (kappa and shape fitted together). The per-CCD gradient counts
    # are the same on every CCD of an instrument, so the scaled chi^2 (kappa alone) suffices there.
    fitted = {k: _fit_null(*g_n(k), len(dists[k]) - 1, kappa(k)) for k in ("source", "profile")}
    line_loc, line_scale = _gumbel_fit(np.array([e.line_z for e in exposures]))
    raw = Reference(
        *(dists[k] for k in ("source", "profile", "background", "large_scale")),
        fitted["source"][0], fitted["profile"][0], kappa("background"), kappa("large_scale"),
        source_shape=fitted["source"][1], profile_shape=fitted["profile"][1],
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


def _combine_ccds(indicators: list[Indicator], gs: list[tuple[float, float]]) -> Indicator:
    """Exposure level of a per-CCD indicator: mean KL (the paper), sigma of the summed G / c over CCDs
    against chi^2 with the summed degrees of freedom."""
    kept = [(i, g) for i, g in zip(indicators, gs) if i.n]
    if not kept:
        return Indicator(float("nan"), float("nan"), float("nan"), 0)
    return Indicator(
        float(np.mean([i.kl for i, _ in kept])), float(np.mean([i.kl_corrected for i, _ in kept])),
        chi2_sigma(sum(g[0] for _, g in kept), sum(g[1] for _, g in kept)), int(sum(i.n for i, _ in kept)),
    )


def score_exposure(stats_: ExposureStats, reference: Reference, params: DetectorParams = DetectorParams()) -> ExposureScore:
    """Score one exposure against a reference: raw KL, bias-corrected KL, and sigma per indicator."""
    a = params.histogram_pseudocount
    source, _ = _indicator(stats_.source_counts, reference.source_p, reference.source_kappa, a, reference.source_shape)
    profile, _ = _indicator(stats_.profile_counts, reference.profile_p, reference.profile_kappa, a, reference.profile_shape)
    bg = [_indicator(c.gradient_counts, reference.background_p, reference.background_kappa, a) for c in stats_.ccds]
    ls = [_indicator(c.coarse_counts, reference.large_scale_p, reference.large_scale_kappa, a) for c in stats_.ccds]
    ccds = tuple(CCDScore(c.name, b[0], l[0], c.n_sources) for c, b, l in zip(stats_.ccds, bg, ls))
    line = Indicator(stats_.line_z, float("nan"), _gumbel_sigma(stats_.line_z, reference.line_loc, reference.line_scale),
                     sum(1 for c in stats_.ccds if np.isfinite(c.line_z)))
    parts = {
        "source": source, "profile": profile,
        "background": _combine_ccds([b[0] for b in bg], [b[1] for b in bg]),
        "large_scale": _combine_ccds([l[0] for l in ls], [l[1] for l in ls]),
        "line": line,
    }
    for name, ind in parts.items():
        loc, scale = reference.sigma_loc.get(name, 0.0), reference.sigma_scale.get(name, 1.0)
        parts[name] = replace(ind, sigma=float(np.clip((ind.sigma - loc) / scale, *SIGMA_RANGE)))
    return ExposureScore(stats_.exposure_id, len(stats_.ccds), **parts, ccds=ccds)
