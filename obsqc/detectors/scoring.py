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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.divergence import kl_bias, kl_divergence, mean_distribution, smoothed_distribution
from obsqc.detectors.exposure import ExposureStats

SIGMA_RANGE = (-10.0, 40.0)
"""Significances are clipped to this range, in sigma."""


def chi2_sigma(g: float, dof: float) -> float:
    """One-sided Gaussian-equivalent significance of ``g`` under chi-square(dof), in sigma."""
    if not (np.isfinite(g) and dof > 0):
        return float("nan")
    log_p = float(stats.chi2.logsf(max(g, 0.0), dof))
    if log_p > -700.0:
        sigma = stats.norm.isf(np.exp(log_p))
    else:  # beyond float range: invert the Gaussian tail -ln p = z^2/2 + ln z + ln sqrt(2 pi)
        big_l = -log_p
        sigma = np.sqrt(2.0 * big_l - np.log(2.0 * np.pi) - np.log(2.0 * big_l))
    return float(np.clip(sigma, *SIGMA_RANGE))


def _kappa(g: np.ndarray, n: np.ndarray, dof: int) -> float:
    """Robust estimate of kappa in d(N) = 1 + kappa N from normal-ish data (median, clipped at 0)."""
    ok = (n > 0) & np.isfinite(g)
    if ok.sum() < 3:
        return 0.0
    excess = (g[ok] / stats.chi2.median(dof) - 1.0) / n[ok]
    return float(max(np.median(excess), 0.0))


@dataclass(frozen=True)
class Reference:
    """Reference distributions of one instrument and band (or of a set, in the paper's batch mode).

    ``source_p`` and ``background_p`` are smoothed probability histograms over (-pi/2, pi/2];
    ``source_kappa`` and ``background_kappa`` the over-dispersion slopes of d(N) = 1 + kappa N.
    """

    source_p: np.ndarray
    background_p: np.ndarray
    source_kappa: float = 0.0
    background_kappa: float = 0.0
    n_exposures: int = 0
    n_ccds: int = 0

    def to_json(self) -> str:
        """Serialise (arrays as lists)."""
        d = asdict(self)
        d["source_p"] = self.source_p.tolist()
        d["background_p"] = self.background_p.tolist()
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Reference":
        """Inverse of :meth:`to_json`; raises ``ValueError`` on a malformed document."""
        try:
            d = json.loads(text)
            return cls(
                source_p=np.asarray(d["source_p"], float), background_p=np.asarray(d["background_p"], float),
                source_kappa=float(d.get("source_kappa", 0.0)), background_kappa=float(d.get("background_kappa", 0.0)),
                n_exposures=int(d.get("n_exposures", 0)), n_ccds=int(d.get("n_ccds", 0)),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a reference file: {exc}") from exc


@dataclass(frozen=True, slots=True)
class CCDScore:
    """Per-CCD numbers: background KL (raw and bias-corrected) and its significance; source count."""

    name: str
    background_kl: float
    background_kl_corrected: float
    background_sigma: float
    n_gradient_points: int
    n_sources: int


@dataclass(frozen=True, slots=True)
class ExposureScore:
    """The scores of one exposure: the paper's raw KL indicators, bias-corrected KL and sigmas."""

    exposure_id: str
    n_sources: int
    n_ccds: int
    source_kl: float
    source_kl_corrected: float
    source_sigma: float
    background_kl: float
    background_kl_corrected: float
    background_sigma: float
    ccds: tuple[CCDScore, ...]

    def worst_ccds(self, k: int = 3) -> list[CCDScore]:
        """The k CCDs with the highest background significance."""
        return sorted(self.ccds, key=lambda c: -np.nan_to_num(c.background_sigma, nan=-np.inf))[:k]


def _source_g(stats_: ExposureStats, reference: Reference, pseudocount: float) -> tuple[float, float]:
    kl = kl_divergence(smoothed_distribution(stats_.source_counts, pseudocount), reference.source_p)
    return kl, 2.0 * stats_.n_sources * kl


def build_reference(
    exposures: list[ExposureStats], params: DetectorParams = DetectorParams()
) -> Reference:
    """The paper's reference: the mean smoothed distribution of a set (eq. 1, P-bar), plus kappa.

    kappa is estimated against that reference from the same set; with a majority of normal exposures
    the median is unmoved by the anomalous ones. Raises ``ValueError`` on an empty set.
    """
    if not exposures:
        raise ValueError("a reference needs at least one exposure")
    a = params.histogram_pseudocount
    source_p = mean_distribution(np.stack([e.source_counts for e in exposures]), a)
    grad_rows = np.concatenate([e.gradient_counts for e in exposures])
    background_p = mean_distribution(grad_rows, a)
    ref = Reference(source_p, background_p, n_exposures=len(exposures), n_ccds=len(grad_rows))
    g_src = np.array([_source_g(e, ref, a)[1] for e in exposures])
    n_src = np.array([e.n_sources for e in exposures], float)
    n_grad = grad_rows.sum(axis=1).astype(float)
    g_bg = np.array([2.0 * n * kl_divergence(smoothed_distribution(r, a), background_p) for r, n in zip(grad_rows, n_grad)])
    return Reference(
        source_p, background_p,
        source_kappa=_kappa(g_src, n_src, params.source_bins - 1),
        background_kappa=_kappa(g_bg, n_grad, params.background_bins - 1),
        n_exposures=len(exposures), n_ccds=len(grad_rows),
    )


def score_exposure(
    stats_: ExposureStats, reference: Reference, params: DetectorParams = DetectorParams()
) -> ExposureScore:
    """Score one exposure against a reference: raw KL, bias-corrected KL, and sigma per indicator."""
    a = params.histogram_pseudocount
    n_src = stats_.n_sources
    src_bins = len(reference.source_p)
    bg_bins = len(reference.background_p)
    if n_src > 0:
        src_kl, g_src = _source_g(stats_, reference, a)
        src_sigma = chi2_sigma(g_src / (1.0 + reference.source_kappa * n_src), src_bins - 1)
        src_corr = src_kl - kl_bias(src_bins, n_src)
    else:
        src_kl = src_corr = src_sigma = float("nan")
    ccd_scores = []
    g_sum = 0.0
    dof_sum = 0
    for ccd in stats_.ccds:
        n = int(ccd.gradient_counts.sum())
        if n == 0:
            ccd_scores.append(CCDScore(ccd.name, np.nan, np.nan, np.nan, 0, ccd.n_sources))
            continue
        kl = kl_divergence(smoothed_distribution(ccd.gradient_counts, a), reference.background_p)
        g = 2.0 * n * kl / (1.0 + reference.background_kappa * n)
        g_sum += g
        dof_sum += bg_bins - 1
        ccd_scores.append(CCDScore(ccd.name, kl, kl - kl_bias(bg_bins, n), chi2_sigma(g, bg_bins - 1), n, ccd.n_sources))
    measured = [c for c in ccd_scores if c.n_gradient_points > 0]
    return ExposureScore(
        exposure_id=stats_.exposure_id,
        n_sources=n_src,
        n_ccds=len(stats_.ccds),
        source_kl=float(src_kl),
        source_kl_corrected=float(src_corr),
        source_sigma=float(src_sigma),
        background_kl=float(np.mean([c.background_kl for c in measured])) if measured else float("nan"),
        background_kl_corrected=float(np.mean([c.background_kl_corrected for c in measured])) if measured else float("nan"),
        background_sigma=chi2_sigma(g_sum, dof_sum) if dof_sum else float("nan"),
        ccds=tuple(ccd_scores),
    )
