"""Every anomaly class makes a visible, physically right difference to the same seed's normal
exposure (same sky, stars and noise field), stronger when prominent than when subtle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from obsqc.sim import ANOMALY_CLASSES, STRENGTHS, render_exposure, simulate_ccd
from obsqc.sim.anomalies import draw_anomaly
from obsqc.sim.conditions import draw_conditions
from obsqc.sim.config import SIZE_PRESETS
from obsqc.sim.focalplane import build_focal_plane, focal_plane_radius

SEED = 21


def _star_moments(noiseless: np.ndarray, sky: float, cat: dict, saturate: float, gain: float):
    """Unweighted moments (within 14 px) of the brightest isolated unsaturated star, noiseless."""
    ny, nx = noiseless.shape
    stars = np.flatnonzero((cat["kind"] == 0) & (cat["x"] > 20) & (cat["x"] < nx - 20)
                           & (cat["y"] > 20) & (cat["y"] < ny - 20))
    best = None
    for i in stars[np.argsort(-cat["flux"][stars])]:
        x, y = int(round(cat["x"][i])), int(round(cat["y"][i]))
        st = noiseless[y - 14:y + 15, x - 14:x + 15] - sky
        if st.max() * gain > 0.5 * saturate * gain:
            continue
        others = np.hypot(cat["x"] - cat["x"][i], cat["y"] - cat["y"][i])
        if np.any((others > 0) & (others < 18) & (cat["flux"] > 0.02 * cat["flux"][i])):
            continue
        best = (st, cat["x"][i] - x, cat["y"][i] - y)
        break
    assert best is not None
    st, ox, oy = best
    yy, xx = np.mgrid[-14:15, -14:15]
    w = np.where(np.hypot(xx - ox, yy - oy) < 14, st, 0.0)
    f = w.sum()
    mx, my = (w * xx).sum() / f, (w * yy).sum() / f
    qxx = (w * (xx - mx) ** 2).sum() / f
    qyy = (w * (yy - my) ** 2).sum() / f
    qxy = (w * (xx - mx) * (yy - my)).sum() / f
    t = qxx + qyy
    return dict(e1=(qxx - qyy) / t, e2=2 * qxy / t, size=t, stamp=st)


def _psf_pair(anomaly, strength):
    shape = (384, 384)
    _, tn = simulate_ccd(shape, seed=SEED)
    _, ta = simulate_ccd(shape, anomaly=anomaly, strength=strength, seed=SEED)
    args = lambda t: (t["noiseless_adu"], t["sky_adu"], t["catalog"], t["saturate"], t["gain"])  # noqa: E731
    return _star_moments(*args(tn)), _star_moments(*args(ta)), ta["anomaly_params"]


@pytest.mark.parametrize("strength", STRENGTHS)
def test_psf_elongation_elongates_stars_along_the_angle(strength):
    n, a, p = _psf_pair("psf_elongation", strength)
    de = math.hypot(a["e1"] - n["e1"], a["e2"] - n["e2"])
    # Distortion e = 2g/(1+g^2) for a star: ~0.1-0.16 subtle, 0.3-0.46 prominent (moments are
    # unweighted and truncated at 14 px, so allow some loss).
    lo = 0.06 if strength == "subtle" else 0.2
    assert de > lo
    theta = 0.5 * math.degrees(math.atan2(a["e2"] - n["e2"], a["e1"] - n["e1"])) % 180.0
    diff = abs(theta - p["angle_deg"]) % 180.0
    assert min(diff, 180.0 - diff) < 12.0
    assert a["size"] == pytest.approx(n["size"], rel=0.25)


@pytest.mark.parametrize("strength", STRENGTHS)
def test_double_image_stretches_stars_along_the_offset(strength):
    n, a, p = _psf_pair("double_image", strength)
    ang = math.radians(p["angle_deg"])
    e_along = (a["e1"] - n["e1"]) * math.cos(2 * ang) + (a["e2"] - n["e2"]) * math.sin(2 * ang)
    assert e_along > (0.1 if strength == "subtle" else 0.3)
    assert a["size"] > n["size"] * (1.2 if strength == "subtle" else 2.0)


@pytest.mark.parametrize("strength", STRENGTHS)
def test_defocus_broadens_stars_and_prominent_has_a_hole(strength):
    n, a, p = _psf_pair("defocus", strength)
    area = lambda st: st.clip(0).sum() ** 2 / (st.clip(0) ** 2).sum()  # noqa: E731  noise-equivalent area
    assert area(a["stamp"]) > area(n["stamp"]) * (1.1 if strength == "subtle" else 3.0)
    if strength == "prominent":
        st = a["stamp"]
        c = st.shape[0] // 2
        assert st[c, c] < 0.8 * st.max()  # the central obscuration shows as a dip
    assert math.hypot(a["e1"], a["e2"]) < 0.15  # a donut is round-ish


def _background_pair(anomaly, strength):
    normal, _ = render_exposure("tiny", seed=SEED)
    anom, truth = render_exposure("tiny", seed=SEED, anomaly=anomaly, strength=strength)
    return normal, anom, truth


@pytest.mark.parametrize("strength", STRENGTHS)
def test_readout_stripes_have_the_stated_amplitude(strength):
    normal, anom, t = _background_pair("readout_stripes", strength)
    p = t.anomaly_params
    assert t.affected
    for a, b, s in zip(normal, anom, t.ccds):
        d = (b - a).astype(np.float64)
        ok = (a < 0.9 * s["saturate"])
        if not s["affected"]:
            assert np.all(d == 0)
            continue
        rms = d[ok].std()
        expect = p["amplitude_sigma"] * s["sigma_adu"] / math.sqrt(2)
        assert 0.6 * expect < rms < 1.4 * expect
        # Coherent: rows (or columns, or a tilted sine) carry the pattern, not white noise.
        f = np.abs(np.fft.rfft2(d - d.mean()))
        assert f.max() > 20 * np.median(f)


@pytest.mark.parametrize("strength", STRENGTHS)
def test_scattered_light_spans_ccds_with_the_stated_brightness(strength):
    normal, anom, t = _background_pair("scattered_light", strength)
    p = t.anomaly_params
    assert len(t.affected) >= 2
    peak = 0.0
    for a, b, s in zip(normal, anom, t.ccds):
        d = (b - a).astype(np.float64)
        blocks = d[:256, :256].reshape(16, 16, 16, 16).mean(axis=(1, 3))
        peak = max(peak, blocks.max() * s["gain"])
    assert 0.2 * p["amplitude_e"] < peak < 1.3 * p["amplitude_e"]


@pytest.mark.parametrize("strength", STRENGTHS)
def test_satellite_trail_is_a_straight_streak(strength):
    normal, anom, t = _background_pair("satellite_trail", strength)
    p = t.anomaly_params
    assert t.affected
    ccds = build_focal_plane(SIZE_PRESETS["tiny"])
    for a, b, s, ccd in zip(normal, anom, t.ccds, ccds):
        d = (b - a).astype(np.float64)
        if not s["affected"]:
            assert np.abs(d).max() < 1.0  # noise changes only through the trail's wings
            continue
        ny, nx = d.shape
        X = ccd.x0 + np.arange(nx)[None, :]
        Y = ccd.y0 + np.arange(ny)[:, None]
        ang = math.radians(p["angle_deg"])
        dist = np.abs(-(X - p["x"]) * math.sin(ang) + (Y - p["y"]) * math.cos(ang))
        on = (dist < 0.5) & (a < 0.5 * s["saturate"])
        if on.sum() < 20:
            continue
        peak_sigma = np.median(d[on]) / s["sigma_adu"]
        assert 0.4 * p["peak_sigma"] < peak_sigma < 1.6 * p["peak_sigma"]
        assert np.abs(d[dist > 40]).max() < 0.05 * max(1.0, np.median(d[on]))


@pytest.mark.parametrize("kind", ANOMALY_CLASSES)
def test_prominent_is_stronger_than_subtle(kind):
    rng = lambda: np.random.default_rng(1)  # noqa: E731
    cond = draw_conditions(rng(), band="r", exptime=90.0, mjd=60000.0)
    ccds = build_focal_plane(SIZE_PRESETS["small"])
    r = focal_plane_radius(ccds)
    key = dict(psf_elongation="g", double_image="offset_fwhm", defocus="defocus_waves",
               readout_stripes="amplitude_sigma", scattered_light="amplitude_sigma",
               satellite_trail="peak_sigma")[kind]
    vals = {}
    for s in STRENGTHS:
        vals[s] = [draw_anomaly(kind, s, np.random.default_rng(i), cond=cond, ccds=ccds, fp_radius=r,
                                sigma_e=33.0).params[key] for i in range(20)]
    assert max(vals["subtle"]) < min(vals["prominent"])
