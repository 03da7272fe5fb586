"""One exposure, CCD by CCD: light in electrons, charge effects, noise, then ADU.

Order of the physics on a CCD (electrons until step 8):

1. sky (level, focal-plane gradient) and scattered light;
2. stars and galaxies convolved with the PSF (anomalous PSFs included) and the pixel;
3. a satellite trail, if any;
4. blooming of charge above full well along columns (bleed trails);
5. cosmic rays; 6. static defects (hot/dead columns, hot pixels);
7. photon and read noise; 8. divide by the gain -> ADU;
9. readout stripes (electronic, so in ADU after the noise), if any;
10. digital saturation at SATURATE.

Seeding: one :class:`numpy.random.SeedSequence` per exposure, split into independent
streams (conditions, anomaly, and per CCD: scene, defects, noise, anomaly), so that the same
seed with and without an anomaly gives the same sky, stars, galaxies, cosmic rays and noise
field: the difference between the two exposures is the anomaly alone. GalSim is used only
deterministically (Fourier transforms, drawing), so it needs no seed of its own.
"""

from __future__ import annotations

import datetime

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from obsqc.sim import defects
from obsqc.sim.anomalies import AnomalySpec, add_trail, draw_anomaly, scattered_light_e, stripes_adu
from obsqc.sim.conditions import Conditions, draw_conditions, sky_image
from obsqc.sim.config import SOURCE_ANOMALIES, SizePreset, check_anomaly, get_preset
from obsqc.sim.focalplane import CCD, build_focal_plane, focal_plane_radius
from obsqc.sim.psf import build_psf, field_shear, line_spread
from obsqc.sim.render import render_objects
from obsqc.sim.scene import make_scene

TYPICAL_READ_NOISE_E: float = 7.0
"""Read noise used for the reference sky sigma of anomaly amplitudes, e-."""


@dataclass
class ExposureTruth:
    """What was simulated: conditions, anomaly and a per-CCD summary (``ccds``).

    ``affected`` lists the EXTNAMEs the anomaly touches (all CCDs for PSF anomalies).
    ``details`` (only with ``keep_details``) holds per-CCD catalogues, masks and noiseless images.
    """

    exposure_id: int
    seed: int
    preset: SizePreset
    conditions: Conditions
    anomaly: str | None
    strength: str | None
    anomaly_params: dict
    affected: tuple[str, ...]
    ccds: list[dict] = field(default_factory=list)
    details: list[dict] | None = None

    @property
    def size(self) -> str:
        """Name of the size preset."""
        return self.preset.name


def default_mjd(exposure_id: int) -> float:
    """A plausible MJD for an exposure id when none is given (ids 2 minutes apart)."""
    return 60310.0 + 0.0015 * (int(exposure_id) % 100000)


def render_exposure(size: str | SizePreset = "tiny", *, anomaly: str | None = None,
                    strength: str | None = None, seed: int = 0, exposure_id: int | None = None,
                    band: str = "r", exptime: float | None = None, mjd: float | None = None,
                    seeing_arcsec: float | None = None, sky_mag: float | None = None,
                    keep_details: bool = False) -> tuple[list[np.ndarray], ExposureTruth]:
    """Simulate the CCD images (float32 ADU, one per CCD) and the truth of one exposure."""
    preset = get_preset(size)
    anomaly, strength = check_anomaly(anomaly, strength)
    seed = int(seed)
    exposure_id = seed if exposure_id is None else int(exposure_id)
    exptime = preset.exptime if exptime is None else float(exptime)
    mjd = default_mjd(exposure_id) if mjd is None else float(mjd)
    ccds = build_focal_plane(preset)
    fp_radius = focal_plane_radius(ccds)

    ss_cond, ss_anom, ss_ccd = np.random.SeedSequence(seed).spawn(3)
    cond = draw_conditions(np.random.default_rng(ss_cond), band=band, exptime=exptime, mjd=mjd,
                           seeing_arcsec=seeing_arcsec, sky_mag=sky_mag)
    sigma_e = math.sqrt(cond.sky_e + TYPICAL_READ_NOISE_E**2)
    anom_rng = np.random.default_rng(ss_anom)
    spec = draw_anomaly(anomaly, strength, anom_rng, cond=cond, ccds=ccds, fp_radius=fp_radius,
                        sigma_e=sigma_e)
    trail = None
    if anomaly == "satellite_trail":
        d, lsf = line_spread(cond, spec.params["defocus_px"])
        e_per_px = spec.params["peak_sigma"] * sigma_e / float(lsf.max())
        spec.params["e_per_px"] = e_per_px
        trail = ((d, lsf), e_per_px)

    images, summaries, details = [], [], []
    for ccd, ss in zip(ccds, ss_ccd.spawn(len(ccds))):
        adu, summary, detail = _render_ccd(ccd, preset, cond, spec, ss, fp_radius, trail, keep_details)
        images.append(adu)
        summaries.append(summary)
        details.append(detail)
    truth = ExposureTruth(
        exposure_id=exposure_id, seed=seed, preset=preset, conditions=cond,
        anomaly=anomaly, strength=strength, anomaly_params=spec.params,
        affected=tuple(ccds[i].extname for i in spec.affected), ccds=summaries,
        details=details if keep_details else None,
    )
    return images, truth


def _render_ccd(ccd: CCD, preset: SizePreset, cond: Conditions, spec: AnomalySpec,
                ss: np.random.SeedSequence, fp_radius: float, trail, keep: bool):
    ss_scene, ss_def, ss_noise, ss_anom = ss.spawn(4)
    cx, cy = ccd.center
    g1, g2 = field_shear(cond, cx, cy, fp_radius)
    normal_psf = build_psf(cond, None, {}, g1, g2)
    psf = build_psf(cond, spec.kind, spec.params, g1, g2) if spec.kind in SOURCE_ANOMALIES else normal_psf
    affected = ccd.index in spec.affected

    # The scene is decided with the normal PSF, so that it is the same with or without anomaly.
    objects, cat = make_scene(np.random.default_rng(ss_scene), cond, ccd.shape, mag_faint=preset.mag_faint,
                              peak_fraction=normal_psf.peak_fraction, full_well=ccd.full_well,
                              min_saturated=preset.min_saturated_stars)
    img = sky_image(cond, ccd.x0, ccd.y0, ccd.shape, fp_radius)
    sky_mean_e = float(img.mean())
    if spec.kind == "scattered_light" and affected:
        img += scattered_light_e(spec, ccd)
    render_objects(img, objects, psf)
    if trail is not None and affected:
        add_trail(img, spec, ccd, trail[0], trail[1])
    noiseless = img.copy() if keep else None

    rdef = np.random.default_rng(ss_def)
    sat = defects.bleed(img, ccd.full_well, up_fraction=float(rdef.uniform(0.35, 0.65)))
    events = defects.cosmic_rays(rdef, ccd.shape, cond.exptime)
    cr_mask = defects.add_cosmic_rays(img, events)
    bad_mask = defects.apply_static_defects(img, ccd, cond.exptime)
    noisy = defects.add_noise(np.random.default_rng(ss_noise), img, ccd.read_noise)
    adu = noisy / np.float32(ccd.gain)
    sigma_adu = math.sqrt(sky_mean_e + ccd.read_noise**2) / ccd.gain
    if spec.kind == "readout_stripes" and affected:
        adu += stripes_adu(spec, np.random.default_rng(ss_anom), ccd, sigma_adu)
    defects.digitize_saturation(adu, sat, ccd.saturate)

    summary = dict(
        extname=ccd.extname, ccdnum=ccd.ccdnum, gain=ccd.gain, read_noise=ccd.read_noise,
        saturate=ccd.saturate, sky_adu=sky_mean_e / ccd.gain, sigma_adu=sigma_adu,
        psf_g1=g1, psf_g2=g2, n_stars=int(np.sum(cat["kind"] == 0)), n_galaxies=int(np.sum(cat["kind"] == 1)),
        n_saturated_px=int(sat.sum()), n_cosmic_rays=len(events), affected=affected,
    )
    detail = None
    if keep:
        mask = ((sat * defects.MASK_SATURATED) | (cr_mask * defects.MASK_COSMIC)
                | (bad_mask * defects.MASK_BAD))
        detail = dict(catalog=cat, mask=mask.astype(np.uint8), cosmic_rays=events,
                      bad_columns=ccd.bad_columns, noiseless_adu=(noiseless / np.float32(ccd.gain)),
                      psf_fwhm_px=psf.fwhm_px)
    return adu, summary, detail


# --------------------------------------------------------------------------- FITS output

def _fmt(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v):.6g}")
    return str(v)[:40]


def _isot_from_mjd(mjd: float) -> str:
    """ISO date of an MJD, to the millisecond. Plain calendar arithmetic (leap seconds ignored, as a
    simulator may): astropy's UTC conversion warns about "dubious years" past its leap-second table."""
    moment = _MJD_EPOCH + datetime.timedelta(days=float(mjd))
    return moment.isoformat(timespec="milliseconds")


_MJD_EPOCH = datetime.datetime(1858, 11, 17)


def primary_header(truth: ExposureTruth, ccds: tuple[CCD, ...]) -> fits.Header:
    """Primary header: the contract cards (EXPNUM, INSTRUME, FILTER, MJD-OBS, EXPTIME) plus
    ``OBSQCSIM`` truth cards for humans (detectors must not read them)."""
    from obsqc.sim.config import INSTRUMENT, PIXEL_SCALE, TELESCOPE

    c = truth.conditions
    h = fits.Header()
    h["EXPNUM"] = (truth.exposure_id, "exposure number")
    h["INSTRUME"] = (INSTRUMENT, "instrument (obsqc simulator)")
    h["TELESCOP"] = (TELESCOPE, "telescope")
    h["OBSTYPE"] = ("object", "observation type")
    h["FILTER"] = (c.band, "filter / band")
    h["MJD-OBS"] = (round(c.mjd, 8), "MJD of exposure start")
    h["DATE-OBS"] = (_isot_from_mjd(c.mjd), "UTC of exposure start")
    h["EXPTIME"] = (c.exptime, "exposure time, s")
    h["PIXSCAL1"] = (PIXEL_SCALE, "arcsec/pixel")
    h["PIXSCAL2"] = (PIXEL_SCALE, "arcsec/pixel")
    h["NEXTEND"] = (len(ccds), "number of CCD extensions")
    h["OBSQCSIM"] = (True, "synthetic; OBSQCSIM cards are truth, not data")
    cards = dict(ANOMALY=truth.anomaly or "none", STRENGTH=truth.strength or "none", SEED=truth.seed,
                 SIZE=truth.size, SEEING=c.seeing_arcsec, PSFFWHM=c.psf_fwhm_px, PSFBETA=c.psf_beta,
                 PSFG1=c.psf_g1, PSFG2=c.psf_g2, SKYMAG=c.sky_mag, SKYE=c.sky_e, NAFFECT=len(truth.affected))
    for k, v in truth.anomaly_params.items():
        if isinstance(v, (int, float, str, np.integer, np.floating)):
            cards[f"P_{k.upper()}"[:24]] = v
    for k, v in cards.items():
        h[f"HIERARCH OBSQCSIM {k}"] = _fmt(v)
    return h


def ccd_header(ccd: CCD, summary: dict, det_origin: tuple[float, float]) -> fits.Header:
    """Image-extension header: EXTNAME, CCDNUM, SATURATE (ADU), GAIN, RDNOISE, DETSEC."""
    h = fits.Header()
    h["EXTNAME"] = (ccd.extname, "CCD name")
    h["CCDNAME"] = (ccd.extname, "CCD name")
    h["DETPOS"] = (ccd.extname, "position on the focal plane")
    h["CCDNUM"] = (ccd.ccdnum, "CCD number")
    h["BUNIT"] = ("ADU", "data units")
    h["SATURATE"] = (ccd.saturate, "saturation level, ADU")
    h["GAIN"] = (round(ccd.gain, 4), "e-/ADU")
    h["RDNOISE"] = (round(ccd.read_noise, 3), "read noise, e-")
    ny, nx = ccd.shape
    x1 = int(round(ccd.x0 - det_origin[0])) + 1
    y1 = int(round(ccd.y0 - det_origin[1])) + 1
    h["DETSEC"] = (f"[{x1}:{x1 + nx - 1},{y1}:{y1 + ny - 1}]", "section of the focal plane, px")
    h["HIERARCH OBSQCSIM AFFECTED"] = bool(summary["affected"])
    return h


def to_hdulist(images: list[np.ndarray], truth: ExposureTruth, *, dtype: str = "float32",
               compress: bool = False) -> fits.HDUList:
    """Build the multi-extension FITS of an exposure.

    ``dtype="float32"``: BITPIX -32. ``dtype="int16"``: unsigned 16-bit integers stored as
    BITPIX 16 with BZERO = 32768, BSCALE = 1 (values rounded, clipped to 0..65535).
    ``compress``: tile-compressed (RICE_1) extensions; lossless for int16, quantised with
    subtractive dithering (1/16 of the noise per level, a fixed dither seed) for float32, like
    fpack'ed survey products. Then saturated pixels read back within half a quantisation step
    (~0.3 ADU) of SATURATE, on either side, as in real compressed float files.
    """
    if dtype not in ("float32", "int16"):
        raise ValueError(f"dtype must be 'float32' or 'int16', not {dtype!r}")
    ccds = build_focal_plane(truth.preset)
    origin = (min(c.x0 for c in ccds), min(c.y0 for c in ccds))
    hdus: list = [fits.PrimaryHDU(header=primary_header(truth, ccds))]
    for i, (img, ccd, summ) in enumerate(zip(images, ccds, truth.ccds)):
        hdr = ccd_header(ccd, summ, origin)
        if dtype == "int16":
            data = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
        else:
            data = np.asarray(img, dtype=np.float32)
        if compress:
            hdu = fits.CompImageHDU(data=data, header=hdr, compression_type="RICE_1",
                                    quantize_level=16.0, quantize_method=1,
                                    dither_seed=1 + (truth.seed + i) % 10000)
        else:
            hdu = fits.ImageHDU(data=data, header=hdr)
        hdus.append(hdu)
    return fits.HDUList(hdus)


def simulate_exposure(*, size: str | SizePreset = "tiny", anomaly: str | None = None,
                      strength: str | None = None, seed: int = 0, exposure_id: int | None = None,
                      dtype: str = "float32", compress: bool = False, band: str = "r",
                      exptime: float | None = None, mjd: float | None = None,
                      seeing_arcsec: float | None = None, sky_mag: float | None = None) -> fits.HDUList:
    """Simulate one exposure as an in-memory multi-extension FITS (see :func:`to_hdulist`).

    ``anomaly``: one of :data:`obsqc.sim.ANOMALY_CLASSES` or None; ``strength``: "subtle" or
    "prominent" (default prominent when an anomaly is given). Same arguments, same bytes.
    """
    images, truth = render_exposure(size, anomaly=anomaly, strength=strength, seed=seed,
                                    exposure_id=exposure_id, band=band, exptime=exptime, mjd=mjd,
                                    seeing_arcsec=seeing_arcsec, sky_mag=sky_mag)
    return to_hdulist(images, truth, dtype=dtype, compress=compress)


def simulate_ccd(shape: tuple[int, int] = (256, 256), anomaly: str | None = None, strength: str | None = None,
                 seed: int = 0, *, band: str = "r", exptime: float = 90.0,
                 min_saturated_stars: int = 1) -> tuple[np.ndarray, dict]:
    """One CCD (float32 ADU, ``image[row, col]``) with its truth, for detector tests.

    The CCD is a one-CCD focal plane, so background anomalies always cross it. ``truth`` has:
    ``anomaly``, ``strength``, ``anomaly_params``, ``conditions`` (dict), ``psf_fwhm_px``,
    ``psf_g1``/``psf_g2`` (normal PSF shear), ``gain``, ``read_noise``, ``saturate``,
    ``sky_adu``, ``sigma_adu`` (sky noise per pixel), ``catalog`` (arrays: kind 0 star / 1 galaxy,
    mag, x, y, flux in e-, hlr px, g1, g2), ``mask`` (uint8: 1 saturated/bleed, 2 cosmic ray,
    4 bad column/hot pixel), ``cosmic_rays``, ``bad_columns`` and ``noiseless_adu``.
    """
    preset = SizePreset(f"ccd{shape[0]}x{shape[1]}", n_ccd=1, ccd_shape=(int(shape[0]), int(shape[1])),
                 min_saturated_stars=min_saturated_stars, exptime=exptime)
    images, truth = render_exposure(preset, anomaly=anomaly, strength=strength, seed=seed, band=band,
                                    keep_details=True)
    s, d = truth.ccds[0], truth.details[0]
    out = dict(anomaly=truth.anomaly, strength=truth.strength, anomaly_params=truth.anomaly_params,
               conditions=truth.conditions.as_dict(), psf_fwhm_px=d["psf_fwhm_px"],
               psf_g1=s["psf_g1"], psf_g2=s["psf_g2"], gain=s["gain"], read_noise=s["read_noise"],
               saturate=s["saturate"], sky_adu=s["sky_adu"], sigma_adu=s["sigma_adu"],
               catalog=d["catalog"], mask=d["mask"], cosmic_rays=d["cosmic_rays"],
               bad_columns=d["bad_columns"], noiseless_adu=d["noiseless_adu"], seed=truth.seed)
    return images[0], out
