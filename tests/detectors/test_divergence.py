"""Angle histograms and KL divergence (eq. 1): twins, bias, and the calibrated significance."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from obsqc.detectors.divergence import (
    SIGMA_RANGE,
    angle_histogram,
    chi2_sigma,
    corrected_kl,
    estimate_dispersion,
    g_statistic,
    kl_bias,
    kl_divergence,
    kl_significance,
    mean_distribution,
    smoothed_distribution,
)
from tests.reference import divergence as ref

HALF_PI = np.pi / 2


def null_kls(n, bins, trials, seed, alpha=0.5, reference=None):
    """KL of smoothed histograms of n draws from the reference itself (uniform by default)."""
    q = np.full(bins, 1.0 / bins) if reference is None else reference
    counts = np.random.default_rng(seed).multinomial(n, q, size=trials)
    return kl_divergence(smoothed_distribution(counts, alpha), q)


# ---- angle_histogram ----------------------------------------------------------------------------


ANGLES = {
    "random": lambda: np.random.default_rng(1).uniform(-HALF_PI, HALF_PI, 5000),
    "out_of_range": lambda: np.random.default_rng(2).uniform(-7.0, 7.0, 3000),
    "nan_holed": lambda: np.where(
        np.random.default_rng(3).random(2000) < 0.1, np.nan, np.random.default_rng(4).uniform(-1.5, 1.5, 2000)
    ),
    "with_inf": lambda: np.array([0.3, np.inf, -np.inf, -0.2, np.nan]),
    "tiny": lambda: np.array([0.1]),
    "empty": lambda: np.empty(0),
    "ends": lambda: np.array([HALF_PI, -HALF_PI, np.nextafter(-HALF_PI, 0.0), np.nextafter(HALF_PI, 0.0), 0.0]),
}


@pytest.mark.parametrize("bins", [1, 7, 16, 32])
@pytest.mark.parametrize("name", sorted(ANGLES))
def test_angle_histogram_matches_reference(name, bins):
    theta = ANGLES[name]()
    counts = angle_histogram(theta, bins)
    assert counts.dtype == np.int64 and counts.shape == (bins,)
    assert_array_equal(counts, ref.angle_histogram(theta, bins))
    assert counts.sum() == np.isfinite(theta).sum()


def test_both_ends_go_to_the_last_bin():
    for dtype in (np.float64, np.float32):
        counts = angle_histogram(np.array([HALF_PI, -HALF_PI], dtype), 8)
        assert_array_equal(counts, [0, 0, 0, 0, 0, 0, 0, 2])
    assert_array_equal(angle_histogram([np.nextafter(-HALF_PI, 0.0)], 4), [1, 0, 0, 0])
    assert_array_equal(angle_histogram([0.0, 1e-12, -1e-12], 2), [2, 1])  # bins are (lower, upper]
    assert_array_equal(angle_histogram([np.pi, -np.pi, 0.2 + np.pi], 4), ref.angle_histogram([0.0, 0.0, 0.2], 4))


def test_angle_histogram_rows_are_histograms():
    theta = np.random.default_rng(5).uniform(-2, 2, (4, 300))
    theta[1, ::3] = np.nan  # ragged rows are padded with NaN
    counts = angle_histogram(theta, 12)
    assert counts.shape == (4, 12)
    for row, c in zip(theta, counts):
        assert_array_equal(c, angle_histogram(row, 12))


def test_angle_histogram_accepts_strided_float32_fields():
    catalogue = np.zeros(50, dtype=[("x", "f8"), ("theta_rad", "f4")])
    catalogue["theta_rad"] = np.linspace(-1.5, 1.5, 50)
    assert angle_histogram(catalogue["theta_rad"], 16).sum() == 50


@pytest.mark.parametrize(
    ("theta", "bins", "message"),
    [
        (np.zeros((2, 2, 2)), 4, "1-D"),
        (np.zeros(3), 0, "bins"),
        (np.zeros(3), 2.5, "bins"),
        (np.array(["a"]), 4, "real"),
    ],
)
def test_angle_histogram_bad_input(theta, bins, message):
    with pytest.raises(ValueError, match=message):
        angle_histogram(theta, bins)


# ---- distributions and KL -------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 1.0, 0.01])
def test_smoothed_distribution_matches_reference_sums_to_one_and_has_no_zero(alpha):
    for counts in (np.array([0, 0, 5, 100, 0, 3]), np.zeros(8, int), np.array([7]), np.array([2.5, 0.0, 1.0])):
        p = smoothed_distribution(counts, alpha)
        assert_allclose(p, ref.smoothed_distribution(counts, alpha), rtol=1e-14)
        assert p.sum() == pytest.approx(1.0, abs=1e-14) and np.all(p > 0)
    rows = np.random.default_rng(0).integers(0, 20, (5, 16))
    assert_allclose(smoothed_distribution(rows, alpha), [smoothed_distribution(r, alpha) for r in rows])


def test_kl_matches_reference_and_identical_histograms_give_zero():
    rng = np.random.default_rng(1)
    for bins in (2, 16, 32):
        p = smoothed_distribution(rng.integers(0, 50, bins))
        q = smoothed_distribution(rng.integers(0, 50, bins))
        assert kl_divergence(p, q) == pytest.approx(ref.kl_divergence(p, q), rel=1e-12)
        assert kl_divergence(p, p) == 0.0
        assert isinstance(kl_divergence(p, q), float)
    raw = np.array([0.5, 0.0, 0.5])  # 0 ln 0 = 0 for a raw histogram
    assert kl_divergence(raw, np.full(3, 1 / 3)) == pytest.approx(ref.kl_divergence(raw, np.full(3, 1 / 3)))


def test_kl_of_many_histograms_at_once():
    rng = np.random.default_rng(2)
    p = smoothed_distribution(rng.integers(0, 30, (6, 16)))
    q = mean_distribution(rng.integers(0, 30, (10, 16)))
    assert_allclose(kl_divergence(p, q), [kl_divergence(row, q) for row in p], rtol=1e-14)
    q_rows = smoothed_distribution(rng.integers(0, 30, (6, 16)))
    assert_allclose(kl_divergence(p, q_rows), [kl_divergence(a, b) for a, b in zip(p, q_rows)], rtol=1e-14)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 1000), min_size=1, max_size=40).flatmap(
        lambda a: st.tuples(st.just(a), st.lists(st.integers(0, 1000), min_size=len(a), max_size=len(a)))
    ),
    st.floats(0.01, 5.0),
)
def test_kl_is_non_negative_and_zero_on_itself(pair, alpha):
    p, q = smoothed_distribution(pair[0], alpha), smoothed_distribution(pair[1], alpha)
    assert kl_divergence(p, q) >= 0.0
    assert kl_divergence(p, p) == 0.0
    assert np.all(p > 0) and p.sum() == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-10.0, 10.0) | st.just(np.nan), max_size=200), st.integers(1, 40))
def test_every_finite_angle_is_counted_once(theta, bins):
    counts = angle_histogram(np.array(theta, float), bins)
    assert counts.sum() == np.isfinite(np.array(theta, float)).sum()
    assert_array_equal(counts, ref.angle_histogram(theta, bins))


def test_mean_distribution_is_the_mean_of_smoothed_rows():
    rows = np.random.default_rng(3).integers(0, 40, (7, 16))
    want = np.mean([ref.smoothed_distribution(r, 0.5) for r in rows], axis=0)
    assert_allclose(mean_distribution(rows, 0.5), want, rtol=1e-14)
    assert_allclose(mean_distribution(list(rows), 0.5), want, rtol=1e-14)
    assert mean_distribution(rows).sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kl_divergence(np.full(4, 0.25), np.full(5, 0.2)), "bins"),
        (lambda: kl_divergence(np.full(4, 0.25), np.array([0.5, 0.5, 0.0, 0.0])), "> 0"),
        (lambda: kl_divergence(np.full(4, 0.3), np.full(4, 0.25)), "sum to 1"),
        (lambda: kl_divergence(np.array([0.5, np.nan]), np.full(2, 0.5)), "finite"),
        (lambda: kl_divergence(np.array([1.5, -0.5]), np.full(2, 0.5)), ">= 0"),
        (lambda: kl_divergence(np.zeros((2, 2, 2)), np.full(2, 0.5)), "1-D"),
        (lambda: smoothed_distribution(np.array([1, -1])), "non-negative"),
        (lambda: smoothed_distribution(np.array([1, 2]), 0.0), "pseudocount"),
        (lambda: smoothed_distribution(np.array(["a"])), "real"),
        (lambda: mean_distribution([]), "at least one"),
        (lambda: mean_distribution([np.ones(3), np.ones(4)]), "same number of bins"),
        (lambda: kl_bias(16, -1), "n must be"),
        (lambda: kl_significance(0.1, 10, 16, dispersion=0.0), "dispersion"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- bias and calibrated significance --------------------------------------------------------------


def test_mean_kl_of_raw_draws_is_the_classical_bias():
    bins, n = 16, 2000
    counts = np.random.default_rng(4).multinomial(n, np.full(bins, 1 / bins), size=20_000)
    kl = kl_divergence(counts / n, np.full(bins, 1 / bins))
    assert kl_bias(bins, n) == (bins - 1) / (2 * n)
    assert kl.mean() == pytest.approx(kl_bias(bins, n), rel=0.03)
    assert np.mean(corrected_kl(kl, n, bins)) == pytest.approx(0.0, abs=0.03 * kl_bias(bins, n))


@pytest.mark.parametrize(("bins", "n"), [(16, 100), (32, 500), (32, 10_000)])
def test_mean_kl_of_smoothed_draws_matches_the_shrunk_bias(bins, n):
    kl = null_kls(n, bins, 20_000, seed=bins + n)
    assert kl.mean() == pytest.approx(kl_bias(bins, n, pseudocount=0.5), rel=0.05)


def test_kl_bias_and_significance_of_no_angles_are_nan():
    assert np.isnan(kl_bias(16, 0))
    assert np.isnan(corrected_kl(0.1, 0, 16))
    assert np.isnan(kl_significance(0.1, 0, 16))
    assert np.isnan(kl_significance(np.nan, 100, 16))
    assert_array_equal(np.isnan(kl_significance(np.array([0.1, 0.1]), np.array([0, 50]), 16)), [True, False])


def test_significance_is_clipped_and_monotone():
    assert kl_significance(0.0, 100, 16) == SIGMA_RANGE[0]
    assert kl_significance(5.0, 100_000, 16) == SIGMA_RANGE[1]  # p ~ 1e-300000: still finite
    s = kl_significance(np.linspace(0.0, 0.2, 50), 500, 16)
    assert np.all(np.diff(s) >= 0)
    g = g_statistic(0.05, 400, 16)
    assert chi2_sigma(g, 15) == pytest.approx(stats.norm.isf(stats.chi2.sf(g, 15)), rel=1e-9)
    assert kl_significance(0.05, 400, 16, dispersion=2.0) == pytest.approx(chi2_sigma(g / 2.0, 15))
    assert g_statistic(0.05, 400, 16, pseudocount=0.0) == pytest.approx(2 * 400 * 0.05)


@pytest.mark.parametrize("n", [50, 5000])
def test_three_sigma_means_the_same_false_alarm_rate_for_50_and_5000_angles(n):
    """Null histograms of n angles from the reference: the fraction above 3 sigma is near
    Phi(-3) = 0.00135 whatever n, and above 2 sigma near 0.0228 (raw KL thresholds are not: the
    mean KL is 100 times larger at n = 50)."""
    sigma = kl_significance(null_kls(n, 16, 200_000, seed=n), n, 16)
    above_3 = np.mean(sigma > 3.0)
    assert 0.0006 < above_3 < 0.0025  # 200,000 trials: 270 expected; n = 50 gives ~180 (3.1 sigma)
    assert np.mean(sigma > 2.0) == pytest.approx(stats.norm.sf(2.0), rel=0.1)


def test_dispersion_estimated_from_overdispersed_normal_data_restores_the_rate():
    """Normal data scattered more than multinomial (a Dirichlet-multinomial): dividing G by the
    estimated dispersion brings the 2-sigma rate back near nominal; a pure null gives d = 1."""
    bins, n, rng = 16, 2000, np.random.default_rng(6)
    q = np.full(bins, 1 / bins)
    assert estimate_dispersion(null_kls(n, bins, 5000, seed=7), n, bins) == pytest.approx(1.0, abs=0.05)
    p_true = rng.dirichlet(q * 400.0, size=20_000)  # exposure-to-exposure scatter of the truth
    counts = np.array([rng.multinomial(n, p) for p in p_true])
    kl = kl_divergence(smoothed_distribution(counts), q)
    d = estimate_dispersion(kl, np.full(kl.size, n), bins)
    assert d > 3.0
    sigma = kl_significance(kl, n, bins, dispersion=d)
    assert np.mean(sigma > 2.0) == pytest.approx(stats.norm.sf(2.0), rel=0.3)
    assert np.mean(kl_significance(kl, n, bins) > 2.0) > 0.3  # uncorrected: everything flags
