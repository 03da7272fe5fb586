"""The Fourier renderer and the PSF grids agree with GalSim's own drawing."""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest

from obsqc.sim.psf import PSFModel
from obsqc.sim.render import ObjectList, render_objects, render_stamps, shear_matrix_sq

PSF_CASES = [
    (None, {}),
    ("psf_elongation", dict(g=0.2, g1=0.12, g2=-0.16)),
    ("double_image", dict(offset_px=8.0, flux_ratio=0.7, angle_deg=33.0)),
    ("defocus", dict(donut_radius_px=9.0, donut_g=0.05, astig_angle_deg=20.0)),
]


def _galaxies() -> tuple[ObjectList, list[galsim.GSObject]]:
    obj = ObjectList(
        x=np.zeros(3), y=np.zeros(3), flux_point=np.array([0.0, 0.0, 1000.0]),
        flux_disk=np.array([1000.0, 700.0, 0.0]), hlr_disk=np.array([2.0, 3.0, 0.0]),
        g1_disk=np.array([0.3, -0.2, 0.0]), g2_disk=np.array([0.1, 0.4, 0.0]),
        flux_bulge=np.array([0.0, 300.0, 0.0]), hlr_bulge=np.array([0.0, 1.0, 0.0]),
        g1_bulge=np.array([0.0, 0.05, 0.0]), g2_bulge=np.array([0.0, 0.1, 0.0]),
    )
    ref = [
        galsim.Exponential(half_light_radius=2.0, flux=1000).shear(g1=0.3, g2=0.1),
        galsim.Add([galsim.Exponential(half_light_radius=3.0, flux=700).shear(g1=-0.2, g2=0.4),
                    galsim.DeVaucouleurs(half_light_radius=1.0, flux=300).shear(g1=0.05, g2=0.1)]),
        galsim.DeltaFunction(flux=1000),
    ]
    return obj, ref


@pytest.mark.parametrize("anomaly,params", PSF_CASES)
def test_psf_kimage_matches_galsim(anomaly, params):
    psf = PSFModel(fwhm_px=3.4, beta=2.7, g1=0.012, g2=-0.008, anomaly=anomaly, params=params)
    n = 32
    eff = galsim.Convolve(psf.profile, galsim.Pixel(1.0))
    ref = eff.drawKImage(nx=2 * n, ny=2 * n, scale=2 * math.pi / n)
    assert np.abs(psf.kimage(n) - ref.array).max() < 2e-6
    # Real-space stamp centred on pixel n//2 equals GalSim's drawing there (GalSim run with
    # tight thresholds: its defaults cut k at 1e-3 of the peak, a 1e-3 error of their own).
    gsp = galsim.GSParams(maxk_threshold=1e-7, folding_threshold=1e-6, maximum_fft_size=32768)
    im = galsim.ImageD(64, 64, scale=1.0)
    galsim.Convolve(psf.profile, galsim.Pixel(1.0), gsparams=gsp).drawImage(
        im, method="no_pixel", center=galsim.PositionD(33, 33))
    assert np.abs(psf.image(64) - im.array).max() < 2e-4 * im.array.max()


def test_smaller_grids_are_subsamples():
    a = PSFModel(fwhm_px=3.0, beta=3.5, g1=0.01)
    b = PSFModel(fwhm_px=3.0, beta=3.5, g1=0.01)
    a.prepare(128)
    for n in (16, 32, 64):
        assert np.allclose(a.kimage(n), b.kimage(n), atol=1e-12)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_stamps_match_galsim_draw(engine):
    psf = PSFModel(fwhm_px=3.2, beta=3.0, g1=0.015, g2=-0.01)
    obj, ref = _galaxies()
    dx = np.array([0.3, -0.45, 0.1])
    dy = np.array([-0.2, 0.37, 0.49])
    n = 32
    stamps = render_stamps(obj, psf, n, dx, dy, engine=engine)
    for i, g in enumerate(ref):
        im = galsim.ImageD(n, n, scale=1.0)
        centre = galsim.PositionD(n / 2 + 1 + dx[i], n / 2 + 1 + dy[i])
        galsim.Convolve(g, psf.profile).drawImage(im, center=centre)
        # GalSim truncates what we fold back; agreement to 0.5% of the peak.
        assert np.abs(stamps[i] - im.array).max() < 5e-3 * im.array.max()
        assert stamps[i].sum() == pytest.approx(1000.0, rel=1e-4)


def test_numba_kernel_equals_numpy_twin():
    rng = np.random.default_rng(3)
    b = 40
    z = np.zeros(b)
    obj = ObjectList(z, z, rng.uniform(0, 50, b), rng.uniform(10, 1e4, b), rng.uniform(0.5, 4, b),
                     rng.normal(0, 0.2, b), rng.normal(0, 0.2, b),
                     np.where(rng.random(b) < 0.5, rng.uniform(10, 1e3, b), 0.0), rng.uniform(0.3, 2, b),
                     rng.normal(0, 0.05, b), rng.normal(0, 0.05, b))
    psf = PSFModel(fwhm_px=4.0, beta=2.6, g1=-0.01, g2=0.004)
    dx, dy = rng.uniform(-0.5, 0.5, b), rng.uniform(-0.5, 0.5, b)
    for n in (16, 128):
        a = render_stamps(obj, psf, n, dx, dy, engine="numba")
        c = render_stamps(obj, psf, n, dx, dy, engine="numpy")
        assert np.abs(a - c).max() < 1e-5 * max(1.0, np.abs(c).max())


def test_shear_matrix_square_matches_galsim():
    for g1, g2 in [(0.1, 0.2), (-0.3, 0.05), (0.0, -0.6)]:
        m = galsim.Shear(g1=g1, g2=g2).getMatrix()
        m2 = m @ m
        a, b, c = shear_matrix_sq(np.array(g1), np.array(g2))
        assert np.allclose([a, b, c], [m2[0, 0], m2[0, 1], m2[1, 1]])


def test_render_objects_clips_at_edges_and_conserves_flux():
    psf = PSFModel(fwhm_px=3.0, beta=3.0)
    img = np.zeros((64, 64), np.float32)
    stars = ObjectList.stars([32.2, -3.0, 70.0], [31.7, 10.0, 10.0], [1e4, 1e4, 1e4])
    sizes = render_objects(img, stars, psf)
    assert len(sizes) == 3
    # The centred star is nearly all inside; the one at x=-3 leaves part outside; x=70 only wings.
    assert 1e4 < img.sum() < 1.6e4
    yc, xc = np.unravel_index(np.argmax(img), img.shape)
    assert (yc, xc) == (32, 32)
