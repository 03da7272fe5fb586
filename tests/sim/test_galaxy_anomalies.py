"""Injected galaxy anomalies: counts, labels, determinism, and real differences from clean twins."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from obsqc.sim.galaxy_anomalies import KINDS_1BAND, KINDS_3BAND, anomaly_sample


def test_counts_labels_and_types():
    x, is_anom, kind = anomaly_sample(70, rate=0.1, size=48, seed=3)
    assert x.shape == (70, 1, 48, 48) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert is_anom.dtype == bool and is_anom.sum() == 7
    assert kind.dtype.kind == "U" and kind.shape == (70,)
    assert np.all(kind[~is_anom] == "") and set(kind[is_anom]) <= set(KINDS_1BAND)
    assert len(set(kind[is_anom])) == 6  # 7 anomalies over 6 kinds: each kind at least once


def test_default_rate_and_rounding():
    _, is_anom, _ = anomaly_sample(200, size=32, seed=0)
    assert is_anom.sum() == 3  # 1.5% of 200
    _, none, _ = anomaly_sample(20, rate=0.0, size=32, seed=0)
    assert not none.any()


def test_same_seed_same_sample_other_seed_other_sample():
    a = anomaly_sample(30, rate=0.2, size=32, seed=9)
    b = anomaly_sample(30, rate=0.2, size=32, seed=9)
    for u, v in zip(a, b):
        assert_array_equal(u, v)
    c = anomaly_sample(30, rate=0.2, size=32, seed=10)
    assert not np.array_equal(a[0], c[0])


def test_kinds_need_their_bands():
    with pytest.raises(ValueError):
        anomaly_sample(4, rate=0.5, kinds=("extreme_colour",))
    with pytest.raises(ValueError):
        anomaly_sample(4, rate=1.5)


def _twins(kind, bands=("r",), n=3, seed=1):
    x, is_anom, k, clean, det = anomaly_sample(n, rate=1.0, size=64, bands=bands, seed=seed, kinds=(kind,),
                                               return_clean=True, return_details=True)
    assert is_anom.all() and np.all(k == kind)
    return x, clean, det


@pytest.mark.parametrize("kind", KINDS_1BAND)
def test_every_kind_changes_its_cutout(kind):
    x, clean, det = _twins(kind)
    diff = np.abs(x - clean).reshape(len(x), -1)
    assert np.all(diff.max(axis=1) > 0.05), det  # twins share the noise: this is the injected light alone


def test_normal_cutouts_equal_their_twins():
    x, is_anom, _, clean = anomaly_sample(20, rate=0.1, size=48, seed=4, return_clean=True)
    assert_array_equal(x[~is_anom], clean[~is_anom])
    assert not np.array_equal(x[is_anom], clean[is_anom])


def test_cosmic_rays_touch_few_pixels_and_trails_cross_the_frame():
    x, clean, _ = _twins("cosmic_ray")
    changed = np.abs(x - clean) > 0.15
    assert np.all(changed.mean(axis=(1, 2, 3)) < 0.05)  # sharp tracks, not a change of the whole image
    x, clean, det = _twins("satellite_trail", seed=2)
    for i, d in enumerate(det):
        up = (x[i, 0] - clean[i, 0]) > 0.1
        rows, cols = np.nonzero(up)
        span = max(np.ptp(rows), np.ptp(cols))
        assert span > 40, d  # a line across most of the 64 px frame


def test_truncated_footprint_removes_light_and_star_adds_it():
    x, clean, det = _twins("bad_deblend", n=6, seed=5)
    for i, d in enumerate(det):
        delta = (x[i, 0] - clean[i, 0])[20:44, 20:44].sum()
        if d["variant"] == "truncated":
            assert delta < 0, d
        else:
            assert delta > 0 or np.abs(x[i] - clean[i]).max() > 0.1, d


def test_extreme_colours_shift_the_colour_the_documented_way():
    x, clean, det = _twins("extreme_colour", bands=("g", "r", "i"), n=6, seed=3)
    assert set(KINDS_3BAND) - set(KINDS_1BAND) == {"extreme_colour"}
    for i, d in enumerate(det):
        core = (slice(28, 36), slice(28, 36))
        g_minus_i = lambda im: im[0][core].mean() - im[2][core].mean()  # noqa: E731
        shift = g_minus_i(x[i]) - g_minus_i(clean[i])
        # Very red (delta_gr > 0): g fainter and i brighter, so g - i falls; very blue: it rises.
        assert np.sign(shift) == -np.sign(d["delta_gr"]), d
