"""Whole exposures: the FITS contract, determinism, data types, saturation, noise."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from obsqc.sim import (ANOMALY_CLASSES, SIZE_PRESETS, STRENGTHS, render_exposure, simulate_ccd,
                       simulate_exposure)
from obsqc.sim.exposure import to_hdulist


def _bytes(hdul: fits.HDUList) -> bytes:
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def _roundtrip(hdul: fits.HDUList, tmp_path, name="x.fits") -> fits.HDUList:
    path = tmp_path / name
    hdul.writeto(path)
    return fits.open(path)


@pytest.fixture(scope="module")
def tiny_normal():
    return render_exposure("tiny", seed=5)


def test_presets_and_classes():
    assert set(SIZE_PRESETS) == {"tiny", "small", "eval", "decam"}
    assert STRENGTHS == ("subtle", "prominent")
    assert len(ANOMALY_CLASSES) == 6
    assert SIZE_PRESETS["decam"].n_ccd == 62
    assert SIZE_PRESETS["decam"].ccd_shape == (4096, 2048)


def test_primary_and_ccd_headers_follow_the_contract():
    hdul = simulate_exposure(size="tiny", seed=3, exposure_id=123456)
    h0 = hdul[0].header
    assert hdul[0].data is None
    assert h0["EXPNUM"] == 123456 and isinstance(h0["EXPNUM"], int)
    assert h0["INSTRUME"] == "SIMCAM"
    assert h0["FILTER"] == "r"
    assert isinstance(h0["MJD-OBS"], float)
    assert h0["EXPTIME"] == 90.0
    assert h0["OBSQCSIM ANOMALY"] == "none" and h0["OBSQCSIM STRENGTH"] == "none"
    names = [h.header["EXTNAME"] for h in hdul[1:]]
    assert names == ["S1", "S2"]
    for h in hdul[1:]:
        hdr = h.header
        assert hdr["NAXIS1"] == 256 and hdr["NAXIS2"] == 256
        assert 0 < hdr["SATURATE"] < 65535
        assert 3.0 < hdr["GAIN"] < 5.0
        assert isinstance(hdr["CCDNUM"], int)
        assert h.data.dtype == np.float32
        assert np.all(np.isfinite(h.data))
        assert h.data.max() <= hdr["SATURATE"]


def test_anomaly_truth_cards():
    hdul = simulate_exposure(size="tiny", seed=3, anomaly="double_image", strength="subtle")
    h0 = hdul[0].header
    assert h0["OBSQCSIM ANOMALY"] == "double_image"
    assert h0["OBSQCSIM STRENGTH"] == "subtle"
    assert 1.0 <= h0["OBSQCSIM P_OFFSET_FWHM"] <= 1.5
    assert all(h.header["OBSQCSIM AFFECTED"] for h in hdul[1:])


@pytest.mark.parametrize("dtype,compress", [("float32", False), ("int16", True)])
def test_same_seed_same_bytes(dtype, compress):
    a = _bytes(simulate_exposure(size="tiny", seed=11, dtype=dtype, compress=compress))
    b = _bytes(simulate_exposure(size="tiny", seed=11, dtype=dtype, compress=compress))
    c = _bytes(simulate_exposure(size="tiny", seed=12, dtype=dtype, compress=compress))
    assert a == b
    assert a != c


def test_int16_roundtrip(tiny_normal, tmp_path):
    images, truth = tiny_normal
    with _roundtrip(to_hdulist(images, truth, dtype="int16"), tmp_path) as hdul:
        for img, h in zip(images, hdul[1:]):
            assert h.header["BITPIX"] == 16 and h.header["BZERO"] == 32768 and h.header["BSCALE"] == 1
            assert h.data.dtype == np.uint16
            assert np.abs(h.data.astype(np.float64) - img).max() <= 0.5 + 1e-3
            assert h.data.max() == h.header["SATURATE"]


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_compressed_roundtrip(tiny_normal, tmp_path, dtype):
    images, truth = tiny_normal
    with _roundtrip(to_hdulist(images, truth, dtype=dtype, compress=True), tmp_path) as hdul:
        for img, h, s in zip(images, hdul[1:], truth.ccds):
            assert isinstance(h, fits.CompImageHDU)
            assert h.header["EXTNAME"] == s["extname"]
            assert "SATURATE" in h.header and "GAIN" in h.header
            if dtype == "int16":
                assert np.array_equal(h.data, np.clip(np.rint(img), 0, 65535).astype(np.uint16))
            else:
                # Quantised at 1/16 of the noise (dithered): error below ~1/16 sigma.
                err = np.abs(h.data.astype(np.float64) - img)
                assert err.max() < 0.1 * s["sigma_adu"]


def test_saturated_stars_bleed_along_columns():
    images, truth = render_exposure("tiny", seed=2)
    for img, s in zip(images, truth.ccds):
        sat = img >= s["saturate"]
        assert sat.any(), "tiny guarantees a saturated star per CCD"
        assert np.all(img[sat] == np.float32(s["saturate"]))
        # Longest run of saturated pixels along a column exceeds the one along a row: a bleed trail.
        col_run = max(_longest_run(sat[:, c]) for c in np.flatnonzero(sat.any(axis=0)))
        row_run = max(_longest_run(sat[r, :]) for r in np.flatnonzero(sat.any(axis=1)))
        assert col_run > row_run


def _longest_run(v: np.ndarray) -> int:
    best = cur = 0
    for x in v:
        cur = cur + 1 if x else 0
        best = max(best, cur)
    return best


def test_sky_noise_matches_truth():
    img, t = simulate_ccd((256, 256), seed=8)
    quiet = (t["mask"] == 0) & (np.abs(t["noiseless_adu"] - t["sky_adu"]) < 0.05 * t["sigma_adu"])
    resid = (img - t["noiseless_adu"])[quiet]
    assert resid.std() == pytest.approx(t["sigma_adu"], rel=0.1)
    assert abs(resid.mean()) < 0.05 * t["sigma_adu"]


def test_simulate_ccd_truth_is_consistent():
    img, t = simulate_ccd((256, 256), seed=4)
    assert img.dtype == np.float32 and img.shape == (256, 256)
    cat = t["catalog"]
    assert len(cat["x"]) == len(cat["mag"]) > 20
    assert (cat["kind"] == 0).any() and (cat["kind"] == 1).any()
    assert t["mask"].shape == img.shape
    # Saturated pixels of the mask read SATURATE.
    assert np.all(img[(t["mask"] & 1) > 0] == np.float32(t["saturate"]))
    # Cosmic rays are short sharp tracks: every event present, 1-3 px wide.
    assert all(0.3 <= ev["sigma"] <= 0.6 for ev in t["cosmic_rays"])
    assert 0.7 * 2.7 < t["psf_fwhm_px"] < 1.4 * 1.06 / 0.263 + 1e-6


def test_same_seed_normal_and_anomalous_share_the_scene(tiny_normal):
    images, truth = tiny_normal
    other, t2 = render_exposure("tiny", seed=5, anomaly="readout_stripes", strength="prominent")
    assert t2.conditions == truth.conditions
    for a, b, s in zip(images, other, t2.ccds):
        if not s["affected"]:
            assert np.array_equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError):
        simulate_exposure(size="huge")
    with pytest.raises(ValueError):
        simulate_exposure(anomaly="gremlins")
    with pytest.raises(ValueError):
        simulate_exposure(anomaly="defocus", strength="medium")
    with pytest.raises(ValueError):
        simulate_exposure(dtype="int32")
    with pytest.raises(ValueError):
        simulate_exposure(strength="subtle")
