"""Simulated galaxy cutouts and source stamps: shapes, determinism, centring, profiles, noise, colours."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from obsqc.sim import galaxies as G
from obsqc.sim.config import BANDS
from obsqc.sim.psf import PSFModel


@pytest.mark.parametrize("bands", [("r",), ("g", "r", "i")])
def test_galaxy_images_shape_dtype_range(bands):
    x = G.galaxy_images(6, size=48, bands=bands, seed=1)
    assert x.shape == (6, len(bands), 48, 48) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    flat = x.reshape(6, -1)
    # The fixed asinh scale (obsqc.models.preprocess): sky at 0, each galaxy's core well above the noise
    # (about 0.1 on this scale) and below the saturation at 1.
    assert np.all(flat.max(axis=1) > 0.2) and np.all(flat.max(axis=1) < 1.0) and np.all(flat.min(axis=1) == 0.0)


def test_same_seed_same_images_other_seed_other_images():
    a = G.galaxy_images(4, size=48, seed=5)
    assert_array_equal(a, G.galaxy_images(4, size=48, seed=5))
    assert not np.array_equal(a, G.galaxy_images(4, size=48, seed=6))


def test_central_galaxy_sits_at_the_centre_pixel_plus_its_offset():
    _, draw = G.galaxy_images(8, size=64, seed=2, return_truth=True)
    central = G.GalaxyDraw(draw.size, draw.bands, draw.conditions, draw.objects.subset(draw.objects.role == 0),
                           draw.truth)
    flux = G.render(central)[:, 0]
    yy, xx = np.mgrid[0:64, 0:64]
    w = flux.sum(axis=(1, 2))
    np.testing.assert_allclose((flux * xx).sum(axis=(1, 2)) / w, 32 + draw.truth["dx"], atol=0.1)
    np.testing.assert_allclose((flux * yy).sum(axis=(1, 2)) / w, 32 + draw.truth["dy"], atol=0.1)


@pytest.mark.parametrize("n_s,hlr,g1,g2", [(1.0, 4.0, 0.2, -0.1), (4.0, 3.0, 0.1, 0.3), (0.6, 2.0, 0.0, 0.0)])
def test_sersic_image_matches_galsim(n_s, hlr, g1, g2):
    psf = PSFModel(fwhm_px=3.5, beta=3.0)
    ours = G.sersic_image(n_s, hlr, g1, g2, 1e4, 32.3, 31.8, psf, 64)
    gsp = galsim.GSParams(maxk_threshold=1e-5, folding_threshold=1e-4, maximum_fft_size=32768)
    prof = galsim.Convolve(galsim.Sersic(n_s, half_light_radius=hlr, flux=1e4).shear(g1=g1, g2=g2), psf.profile,
                           gsparams=gsp)
    ref = prof.drawImage(nx=64, ny=64, scale=1.0, offset=(32.3 - 31.5, 31.8 - 31.5)).array
    assert np.abs(ours - ref).max() < 1e-3 * ref.max()


def test_noise_matches_sky_and_read_noise():
    rng = np.random.default_rng(0)
    draw = G.draw_batch(rng, 3, size=64, bands=("g", "r"), neighbours=False)
    flux = np.zeros((3, 2, 64, 64), np.float32)
    noisy = G.observe(flux, draw.conditions, G.noise_field(rng, flux.shape))
    np.testing.assert_allclose(noisy.std(axis=(2, 3)), draw.conditions.sigma_e, rtol=0.05)
    # A 90 s r-band sky of 19.9-21.1 mag/arcsec^2: ~900-2700 e- per pixel.
    assert np.all((draw.conditions.sky_e[:, 1] > 800) & (draw.conditions.sky_e[:, 1] < 3000))


def test_population_sizes_magnitudes_and_colours():
    rng = np.random.default_rng(3)
    draw = G.draw_batch(rng, 400, size=48, bands=("g", "r", "i"), neighbours=False)
    t = draw.truth
    assert t["mag_r"].min() >= 17.0 and t["mag_r"].max() <= 21.0
    assert np.median(t["mag_r"]) > 19.5  # counts rise towards the faint end
    assert 0.2 < np.mean(t["sersic_n"] > 0) < 0.4
    assert 2.5 < np.median(t["hlr_px"]) < 6.5  # ~1" at r ~ 20
    o = draw.objects
    f = o.flux_point + o.flux_disk + o.flux_bulge + o.flux_sersic
    gr = -2.5 * np.log10(f[:, 0] / f[:, 1]) + (BANDS["g"].zeropoint - BANDS["r"].zeropoint)
    ri = -2.5 * np.log10(f[:, 1] / f[:, 2]) + (BANDS["r"].zeropoint - BANDS["i"].zeropoint)
    assert 0.5 < np.median(gr) < 0.95 and 0.25 < np.median(ri) < 0.5
    red = (t["sersic_n"] > 2.5)
    assert np.median(gr[red]) > np.median(gr[~red & (t["sersic_n"] > 0)]) + 0.2


def test_neighbours_are_drawn_from_the_counts():
    draw = G.draw_batch(np.random.default_rng(4), 50, size=96)
    per_image = np.bincount(draw.objects.image[draw.objects.role == 1], minlength=50)
    assert 8 < per_image.mean() < 25  # ~15 galaxies to r = 25 plus a few stars in 128 x 128 px


def test_bad_band_is_refused():
    with pytest.raises(ValueError):
        G.galaxy_images(2, bands=("u",))


def test_source_stamps_from_simulation():
    a = G.source_stamps_from_simulation(30, seed=1, shape=(512, 512))
    assert a.shape == (30, 64, 64) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(a[:, 32, 32], 1.0, atol=1e-6)  # every stamp is centred on its peak
    assert_array_equal(a, G.source_stamps_from_simulation(30, seed=1, shape=(512, 512)))


def test_galaxy_cutouts_from_simulation():
    a = G.galaxy_cutouts_from_simulation(3, seed=2, shape=(512, 512), size=64)
    assert a.shape == (3, 1, 64, 64) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.all(a[:, 0, 28:36, 28:36].mean(axis=(1, 2)) > a.mean(axis=(1, 2, 3)))  # a galaxy in the middle
