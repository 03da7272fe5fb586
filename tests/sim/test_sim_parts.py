"""Building blocks: focal plane, conditions, scene statistics, detector effects."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsqc.sim import defects
from obsqc.sim.conditions import draw_conditions, sky_electrons, sky_image
from obsqc.sim.config import SIZE_PRESETS
from obsqc.sim.focalplane import build_focal_plane, focal_plane_radius
from obsqc.sim.psf import donut_radius_px, field_shear
from obsqc.sim.scene import DEG2_PER_PIX, GAL_N24, make_scene, star_magnitudes


@pytest.mark.parametrize("size", sorted(SIZE_PRESETS))
def test_focal_plane_layout(size):
    preset = SIZE_PRESETS[size]
    ccds = build_focal_plane(preset)
    assert len(ccds) == preset.n_ccd
    assert len({c.extname for c in ccds}) == preset.n_ccd
    assert sorted(c.ccdnum for c in ccds) == list(range(1, preset.n_ccd + 1))
    for i, a in enumerate(ccds):
        assert a.saturate == math.floor(a.full_well / a.gain) and a.saturate < 65535
        for b in ccds[i + 1:]:
            ax0, ax1, ay0, ay1 = a.bounds
            bx0, bx1, by0, by1 = b.bounds
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, "CCDs overlap"
    # Static properties do not depend on any exposure.
    assert build_focal_plane(preset) is build_focal_plane(preset)


def test_decam_names_and_numbers():
    ccds = {c.extname: c for c in build_focal_plane(SIZE_PRESETS["decam"])}
    assert set(ccds) == {f"S{i}" for i in range(1, 32)} | {f"N{i}" for i in range(1, 32)}
    assert ccds["S29"].ccdnum == 1 and ccds["S1"].ccdnum == 25 and ccds["N1"].ccdnum == 32
    assert ccds["N31"].ccdnum == 62
    assert ccds["S1"].center[0] < 0 < ccds["N1"].center[0]
    # The hexagon is about as wide as it is tall (2.2 deg across).
    r = focal_plane_radius(tuple(ccds.values()))
    assert 14000 < r < 17000


def test_conditions_ranges():
    for seed in range(200):
        c = draw_conditions(np.random.default_rng(seed), band="r", exptime=90.0, mjd=60000.0)
        assert 0.7 <= c.seeing_arcsec <= 1.4
        assert 2.5 <= c.psf_beta <= 4.5
        assert math.hypot(c.psf_g1, c.psf_g2) <= 0.02 + 1e-12
        assert abs(c.psf_field_g) <= 0.01
        assert 300 < c.sky_e < 5000
        g1, g2 = field_shear(c, 15000.0, 0.0, 15000.0)
        assert math.hypot(g1, g2) <= 0.03 + 1e-12


def test_sky_electrons_and_gradient():
    # r = 21.1 mag/arcsec^2, zp 26.5, 0.263"/px, 90 s: ~900 e-.
    assert sky_electrons("r", 21.1, 90.0) == pytest.approx(10 ** (0.4 * 5.4) * 0.263**2 * 90.0)
    c = draw_conditions(np.random.default_rng(0), band="r", exptime=90.0, mjd=60000.0)
    img = sky_image(c, -500.0, -500.0, (1000, 1000), 700.0)
    assert img.dtype == np.float32
    assert abs(img.mean() / c.sky_e - 1.0) < 0.04
    assert (img.max() - img.min()) / c.sky_e <= 2 * 1.42 * c.sky_grad_frac + 0.02


def test_galaxy_counts_and_isotropy():
    c = draw_conditions(np.random.default_rng(4), band="r", exptime=90.0, mjd=60000.0)
    objs, truth = make_scene(np.random.default_rng(5), c, (1024, 1024), mag_faint=24.0,
                             peak_fraction=0.05, full_well=1.7e5)
    gal = truth["kind"] == 1
    area = (1024 + 64) ** 2 * DEG2_PER_PIX
    expect = (GAL_N24 - GAL_N24 * 10 ** (0.36 * (16 - 24))) * area * c.galaxy_density
    assert abs(gal.sum() - expect) < 5 * math.sqrt(expect)
    # Many faint, few bright.
    mags = truth["mag"][gal]
    assert (mags > 22).sum() > 5 * (mags < 20).sum()
    # Orientations are isotropic: mean shear ~ 0 within shape noise / sqrt(N).
    g1, g2 = truth["g1"][gal], truth["g2"][gal]
    n = gal.sum()
    assert abs(g1.mean()) < 4 * 0.27 / math.sqrt(n) and abs(g2.mean()) < 4 * 0.27 / math.sqrt(n)
    assert np.all(np.hypot(g1, g2) < 0.85)


def test_star_counts_follow_the_broken_power_law():
    m = star_magnitudes(np.random.default_rng(0), 10.0, 150.0, 24.0)
    n155 = (m < 15.5).sum()
    assert n155 == pytest.approx(1500, rel=0.1)
    assert (m < 18).sum() == pytest.approx(1500 * 10 ** 0.75, rel=0.08)


def test_donut_size():
    # Z4 = 1 wave at 640 nm on a 4 m: radius 8 sqrt(3) lambda / D = 0.457" = 1.74 px.
    assert donut_radius_px(1.0, "r") == pytest.approx(8 * math.sqrt(3) * 640e-9 / 4.0 * 206264.806 / 0.263)
    assert donut_radius_px(1.0, "r") == pytest.approx(1.739, abs=1e-3)


@settings(max_examples=40, deadline=None)
@given(peak=st.floats(1.2, 80.0), row=st.integers(0, 99), up=st.floats(0.0, 1.0))
def test_bleed_conserves_charge_and_stays_in_its_column(peak, row, up):
    fw = 1000.0
    img = np.full((100, 7), 100.0)
    img[row, 3] = peak * fw
    img[row, 2] = 0.6 * fw
    before = img.sum()
    sat = defects.bleed(img, fw, up_fraction=up)
    assert img.max() <= fw * (1 + 1e-9)
    assert np.all(img[:, [0, 1, 4, 5, 6]] == 100.0) and np.all(img[:, 2] <= fw)
    lost = before - img.sum()
    assert lost >= -1e-6 * before  # only what ran off the CCD is lost
    excess = (peak - 1.0) * fw
    if excess * up < (99 - row) * 900.0 and excess * (1 - up) < row * 900.0:
        assert lost == pytest.approx(0.0, abs=1e-6 * before)  # the trail stayed on the CCD
    assert sat[row, 3]
    # The trail is contiguous along the column.
    rows = np.flatnonzero(sat[:, 3])
    assert np.all(np.diff(rows) == 1)


def test_cosmic_rays_deposit_their_charge():
    rng = np.random.default_rng(2)
    events = defects.cosmic_rays(rng, (2048, 2048), 90.0)
    # 2.5 /cm^2/min over 9.4 cm^2 (15 um pixels) for 90 s + 20 s readout: ~43 events.
    assert 25 < len(events) < 65
    img = np.zeros((2048, 2048), np.float32)
    inside = [e for e in events if 70 < e["x"] < 1970 and 70 < e["y"] < 1970]
    mask = defects.add_cosmic_rays(img, inside)
    assert img.sum() == pytest.approx(sum(e["charge"] for e in inside), rel=1e-4)
    assert mask.sum() > 0
    for e in inside:
        assert e["length"] <= 60.0


def test_noise_statistics():
    rng = np.random.default_rng(0)
    e = np.full((400, 400), 900.0, np.float32)
    e[:, :10] = 10.0  # below the normal-approximation threshold: exact Poisson
    out = defects.add_noise(rng, e, 7.0)
    assert out[:, 10:].std() == pytest.approx(math.sqrt(900 + 49), rel=0.02)
    assert out[:, :10].std() == pytest.approx(math.sqrt(10 + 49), rel=0.05)
    assert out.mean() == pytest.approx(e.mean(), rel=1e-3)
