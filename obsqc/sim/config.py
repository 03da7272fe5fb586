"""Constants and size presets of the exposure simulator.

Nothing here imports GalSim, so the CLI can read the preset names without paying for it.

Units used throughout ``obsqc.sim`` unless a name says otherwise:

* positions and lengths in **pixels** of the simulated camera (``PIXEL_SCALE`` arcsec each);
  an image is ``image[row, col]``, **x = column** (FITS NAXIS1), y = row; angles are
  counter-clockwise from +x, in radians;
* light and charge in **electrons** (e-) until the very end, where they are divided by the
  CCD gain and written in **ADU** (data units); ``SATURATE`` is in ADU;
* magnitudes are AB-like, with a zeropoint ``Band.zeropoint`` = the magnitude of a source giving
  1 e-/s through the whole system at airmass ~1.

The camera is modelled on DECam on the 4-m Blanco telescope (0.263"/px, 15 um pixels,
250 um thick fully-depleted CCDs, gain ~4 e-/ADU, full well ~150-190 ke-), the instrument of
the DECaLS exposures in Alonso, Zhang & Li (papers/000, §2).
"""

from __future__ import annotations

from dataclasses import dataclass

PIXEL_SCALE: float = 0.263
"""Angular size of a pixel, arcsec/px (DECam: 0.263)."""

PIXEL_SIZE_UM: float = 15.0
"""Physical pixel pitch, micrometre (DECam: 15 um); sets the cosmic-ray rate per pixel."""

CCD_THICKNESS_UM: float = 250.0
"""Depleted silicon thickness, micrometre (DECam: 250 um); sets cosmic-ray track lengths."""

MIRROR_DIAMETER_M: float = 4.0
"""Primary mirror diameter, metre (Blanco: 4 m); sets defocus donut sizes and satellite blur."""

OBSCURATION: float = 0.4
"""Linear central obscuration of the pupil (prime-focus cage), dimensionless."""

READOUT_TIME_S: float = 20.0
"""Time a CCD collects cosmic rays on top of the exposure (readout, erase), seconds."""

INSTRUMENT: str = "SIMCAM"
"""INSTRUME card of the simulated camera."""

TELESCOPE: str = "SIMSCOPE-4M"
"""TELESCOP card of the simulated telescope."""

ANOMALY_CLASSES: tuple[str, ...] = (
    "psf_elongation",
    "double_image",
    "defocus",
    "readout_stripes",
    "scattered_light",
    "satellite_trail",
)
"""Anomaly kinds the simulator can inject (papers/000 §2.1 source anomalies: the first three;
§2.2 background anomalies: stripes and scattered light; plus satellite trails)."""

SOURCE_ANOMALIES: tuple[str, ...] = ("psf_elongation", "double_image", "defocus")
"""Anomalies that change the PSF, hence every source of the exposure (papers/000 §2.1)."""

BACKGROUND_ANOMALIES: tuple[str, ...] = ("readout_stripes", "scattered_light", "satellite_trail")
"""Anomalies added to the background of some CCDs (papers/000 §2.2; trails are our addition)."""

STRENGTHS: tuple[str, ...] = ("subtle", "prominent")
"""Strength levels of an anomaly: ``subtle`` is what human inspection tends to miss
(papers/000 §3.3: "small but systematic elongation"), ``prominent`` is obvious by eye."""

NONE: str = "none"
"""Label used for the anomaly and the strength of a normal exposure."""


@dataclass(frozen=True)
class Band:
    """Photometric band: throughput and dark-sky brightness.

    ``zeropoint``: magnitude giving 1 e-/s (DECam-like, airmass 1).
    ``sky_dark``: dark-sky surface brightness, mag/arcsec^2 (CTIO, new moon).
    ``wavelength_nm``: effective wavelength (sets diffraction, which is negligible vs seeing).
    ``gal_color``/``star_color``: mean colour m_band - m_r of galaxies / stars, mag.
    ``seeing_factor``: seeing FWHM relative to r band (Kolmogorov: ~ lambda^-0.2).
    """

    name: str
    zeropoint: float
    sky_dark: float
    wavelength_nm: float
    gal_color: float
    star_color: float
    seeing_factor: float


BANDS: dict[str, Band] = {
    "g": Band("g", 26.3, 22.0, 480.0, 0.7, 0.6, 1.06),
    "r": Band("r", 26.5, 21.1, 640.0, 0.0, 0.0, 1.00),
    "i": Band("i", 26.4, 20.3, 780.0, -0.35, -0.3, 0.96),
    "z": Band("z", 26.1, 19.0, 920.0, -0.6, -0.5, 0.93),
}
"""Bands the simulator knows; FILTER card values."""


@dataclass(frozen=True)
class SizePreset:
    """Geometry and content knobs of one simulated camera.

    ``layout``: ``"grid"`` (``grid_rows`` x ``grid_cols`` CCDs separated by ``gap_px``) or
    ``"decam"`` (the 62-CCD DECam hexagon with names S1..S31, N1..N31).
    ``ccd_shape``: (ny, nx) of every CCD, pixels.
    ``mag_faint``: faintest galaxy/star drawn (r mag); fainter ones are below the confusion floor.
    ``min_saturated_stars``: extra bright stars injected per CCD when the sky model gave none,
    so that small CCDs also carry the saturated stars with bleed trails of a real exposure.
    ``bad_columns_per_ccd``: mean number of hot/dead columns per CCD (static per camera).
    ``hot_pixels_per_mpix``: hot pixels per million pixels (static per camera).
    """

    name: str
    n_ccd: int
    ccd_shape: tuple[int, int]
    layout: str = "grid"
    grid_rows: int = 1
    grid_cols: int = 1
    gap_px: int = 100
    exptime: float = 90.0
    mag_faint: float = 25.0
    min_saturated_stars: int = 0
    bad_columns_per_ccd: float = 0.8
    hot_pixels_per_mpix: float = 10.0

    @property
    def ccd_pixels(self) -> int:
        """Pixels per CCD."""
        return self.ccd_shape[0] * self.ccd_shape[1]


SIZE_PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(
        "tiny", n_ccd=2, ccd_shape=(256, 256), grid_rows=1, grid_cols=2, gap_px=32,
        min_saturated_stars=1,
    ),
    "small": SizePreset(
        "small", n_ccd=4, ccd_shape=(1024, 1024), grid_rows=2, grid_cols=2, gap_px=120,
        min_saturated_stars=1,
    ),
    "eval": SizePreset(
        "eval", n_ccd=8, ccd_shape=(1024, 1024), grid_rows=2, grid_cols=4, gap_px=120,
        min_saturated_stars=1,
    ),
    "decam": SizePreset(
        "decam", n_ccd=62, ccd_shape=(4096, 2048), layout="decam", bad_columns_per_ccd=1.5,
    ),
}
"""Size presets by name: ``tiny`` (unit tests), ``small`` (demo), ``eval`` (evaluation
sets), ``decam`` (throughput benchmarks at full DECam scale)."""


def get_preset(size: str | SizePreset) -> SizePreset:
    """Return the preset named ``size`` (or ``size`` itself if already a preset)."""
    if isinstance(size, SizePreset):
        return size
    try:
        return SIZE_PRESETS[size]
    except KeyError:
        raise ValueError(f"unknown size preset {size!r}; choose one of {sorted(SIZE_PRESETS)}") from None


def check_anomaly(anomaly: str | None, strength: str | None) -> tuple[str | None, str | None]:
    """Validate an (anomaly, strength) pair; ``"none"`` is the same as None.

    A normal exposure has neither; an anomalous one needs a class from
    :data:`ANOMALY_CLASSES` and, if ``strength`` is omitted, gets ``"prominent"``.
    """
    if anomaly in (None, NONE, ""):
        if strength not in (None, NONE, ""):
            raise ValueError(f"strength {strength!r} given without an anomaly")
        return None, None
    if anomaly not in ANOMALY_CLASSES:
        raise ValueError(f"unknown anomaly {anomaly!r}; choose one of {ANOMALY_CLASSES}")
    if strength in (None, NONE, ""):
        strength = "prominent"
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose one of {STRENGTHS}")
    return anomaly, strength
