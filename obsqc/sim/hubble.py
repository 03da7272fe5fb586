"""Real galaxies for training: cutouts of scikit-image's Hubble deep-field image.

``skimage.data.hubble_deep_field()`` ships inside the scikit-image wheel (``skimage/data/
hubble_deep_field.jpg``, 872x1000x3 uint8; no download at run time): a colour composite of the
Hubble eXtreme Deep Field (HST/ACS, public domain). What it is, honestly: an 8-bit **display
rendering** (already stretched, JPEG-compressed), not calibrated flux. Its channels stand for
three HST filters, which we name by the nearest survey band: red ~ i (F775W/F850LP), green ~ r
(F606W), blue ~ g (F435W). The stretch it was made with is unknown, so it cannot be undone; we treat
the sky-subtracted channel values as flux, which makes the objects real galaxies (morphology,
colours, neighbours, blends) but their light profiles compressed once already before our asinh.

Procedure (:func:`find_galaxies`, :func:`hubble_cutouts`):

1. per channel, sky = median and noise = 1.4826 MAD (the field is mostly sky);
2. detection on the channel mean minus its sky, smoothed by a Gaussian of :data:`SMOOTH_SIGMA_PX`:
   connected regions (8-connected, ``skimage.measure.label``) above :data:`DETECT_SIGMA` times the
   smoothed noise with at least :data:`MIN_AREA_PX` pixels;
3. left out, as in :mod:`obsqc.models.cutouts` and papers/003 §2.2: regions with a display-saturated
   pixel (>= :data:`SATURATED_LEVEL` in any channel: the star with diffraction spikes and the
   burnt-out cores), and regions whose cutout would cross the image edge;
4. the galaxy must dominate the middle of its cutout: its smoothed peak is the brightest within
   ``size // 4`` px (in x and y) of its centroid (the window criterion of papers/000 §3.1, scaled
   to the cutout; in this very deep field most 96 px frames hold dozens of faint galaxies);
   and its peak is within :data:`MAX_PEAK_OFFSET_PX` of its centroid (else it is a blend of several
   galaxies, centred on none); the cutout is centred (pixel ``size // 2``) on the flux-weighted
   centroid, rounded;
5. optional augmentation by the 8 rotations and flips of the square (the WGAN should not learn an
   orientation), then :func:`obsqc.models.preprocess.asinh_scale` with the channels' noise.

The image is at HST resolution (PSF ~ 1-2 px here), far sharper than our exposures (FWHM ~ 4 px);
``blur_sigma_px`` and ``zoom`` degrade it towards ground-based seeing and pixels when wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from obsqc.models.preprocess import asinh_scale

SMOOTH_SIGMA_PX: float = 1.5
"""Gaussian smoothing before detection, px."""

DETECT_SIGMA: float = 5.0
"""Detection threshold on the smoothed channel mean, in its noise sigma."""

MIN_AREA_PX: int = 30
"""Fewest connected pixels above threshold for a galaxy (smaller ones are barely resolved), px."""

MAX_PEAK_OFFSET_PX: float = 4.0
"""A region whose brightest (smoothed) pixel lies further than this from its centroid is a blend, px."""

SATURATED_LEVEL: int = 250
"""Display value at or above which a pixel counts as saturated (8-bit image), counts."""

_CHANNEL: dict[str, int] = {"i": 0, "r": 1, "g": 2}
"""RGB channel of the image standing for each band."""


@dataclass(frozen=True, slots=True)
class HubbleGalaxies:
    """Detected galaxies: ``x``, ``y`` centroids (px, x = column), ``area`` (px), ``flux`` (sky-subtracted
    channel-mean counts within the region)."""

    x: np.ndarray
    y: np.ndarray
    area: np.ndarray
    flux: np.ndarray


def load_image() -> np.ndarray:
    """The deep-field image as float32 (872, 1000, 3) RGB display counts (rows = y)."""
    from skimage.data import hubble_deep_field

    return np.asarray(hubble_deep_field(), dtype=np.float32)


def sky_and_noise(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sky (median) and noise (1.4826 MAD), each (3,)."""
    flat = image.reshape(-1, image.shape[-1])
    sky = np.median(flat, axis=0)
    noise = 1.4826 * np.median(np.abs(flat - sky), axis=0)
    return sky, np.maximum(noise, 1.0)


def find_galaxies(image: np.ndarray | None = None, *, size: int = 96, detect_sigma: float = DETECT_SIGMA,
                  min_area: int = MIN_AREA_PX) -> HubbleGalaxies:
    """Galaxies of the deep field fit for ``size`` x ``size`` cutouts (module docstring, steps 1-4)."""
    from scipy import ndimage
    from skimage import filters, measure

    img = load_image() if image is None else np.asarray(image, dtype=np.float32)
    sky, _ = sky_and_noise(img)
    lum = (img - sky).mean(axis=2)
    smooth = filters.gaussian(lum, sigma=SMOOTH_SIGMA_PX, preserve_range=True)
    s_noise = 1.4826 * np.median(np.abs(smooth - np.median(smooth)))
    labels = measure.label(smooth > detect_sigma * s_noise, connectivity=2)
    saturated = (img >= SATURATED_LEVEL).any(axis=2)
    q = size // 4
    local_max = ndimage.maximum_filter(smooth, size=2 * q + 1, mode="constant", cval=-np.inf)
    ny, nx = lum.shape
    h = size // 2
    xs, ys, areas, fluxes = [], [], [], []
    for reg in measure.regionprops(labels, intensity_image=np.maximum(smooth, 0.0)):
        if reg.area < min_area:
            continue
        rr, cc = reg.coords[:, 0], reg.coords[:, 1]
        if saturated[rr, cc].any():
            continue
        yc, xc = reg.centroid_weighted
        cx, cy = int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))
        if cx - h < 0 or cy - h < 0 or cx - h + size > nx or cy - h + size > ny:
            continue
        vals = smooth[rr, cc]
        if vals.max() < local_max[cy, cx]:  # a brighter object near the centre: not ours
            continue
        top = int(np.argmax(vals))
        if np.hypot(cc[top] - xc, rr[top] - yc) > MAX_PEAK_OFFSET_PX:  # a blend: its light is not centred
            continue
        xs.append(xc)
        ys.append(yc)
        areas.append(reg.area)
        fluxes.append(float(lum[rr, cc].sum()))
    return HubbleGalaxies(np.array(xs), np.array(ys), np.array(areas, dtype=np.int64), np.array(fluxes))


def dihedral(images: np.ndarray) -> np.ndarray:
    """The 8 rotations and flips of each (N, C, S, S) image, as (8 N, C, S, S): image i's copies
    are rows 8 i .. 8 i + 7, the first being the original."""
    out = []
    for k in range(4):
        r = np.rot90(images, k=k, axes=(2, 3))
        out.append(r)
        out.append(r[:, :, :, ::-1])
    return np.ascontiguousarray(np.stack(out, axis=1).reshape((-1,) + images.shape[1:]))


def hubble_cutouts(*, size: int = 96, bands=("r",), augment: bool = True, blur_sigma_px: float = 0.0,
                   zoom: float = 1.0, detect_sigma: float = DETECT_SIGMA, min_area: int = MIN_AREA_PX,
                   return_galaxies: bool = False):
    """Galaxy cutouts of the Hubble deep field, float32 (n, C, size, size) in [0, 1] (module docstring).

    ``bands``: ("r",) (the green channel) or any of "g", "r", "i" (blue, green, red channels), in
    that order. ``augment``: 8 rotations/flips per galaxy. ``blur_sigma_px``: Gaussian blur (px of
    the original image) and ``zoom`` (< 1 shrinks) applied to the image before detection, to mimic
    ground-based seeing and pixels. Deterministic (no randomness). With ``return_galaxies`` also the
    :class:`HubbleGalaxies` found (one per un-augmented cutout).
    """
    bands = tuple(bands)
    for b in bands:
        if b not in _CHANNEL:
            raise ValueError(f"the deep-field image has bands g, r, i (blue, green, red); got {b!r}")
    img = load_image()
    if blur_sigma_px > 0 or zoom != 1.0:
        from skimage import filters, transform

        if blur_sigma_px > 0:
            img = filters.gaussian(img, sigma=(blur_sigma_px, blur_sigma_px, 0), preserve_range=True)
        if zoom != 1.0:
            img = transform.rescale(img, zoom, channel_axis=2, anti_aliasing=zoom < 1, preserve_range=True)
        img = img.astype(np.float32)
    gal = find_galaxies(img, size=size, detect_sigma=detect_sigma, min_area=min_area)
    sky, noise = sky_and_noise(img)
    chans = [_CHANNEL[b] for b in bands]
    flux = np.moveaxis(img[:, :, chans] - sky[chans], 2, 0)  # (C, ny, nx)
    h = size // 2
    cx = np.floor(gal.x + 0.5).astype(np.int64) - h
    cy = np.floor(gal.y + 0.5).astype(np.int64) - h
    cut = np.stack([flux[:, y:y + size, x:x + size] for x, y in zip(cx, cy)]) if len(cx) else \
        np.zeros((0, len(bands), size, size), np.float32)
    sigma = np.broadcast_to(noise[chans], (len(cut), len(chans)))
    if augment:
        cut = dihedral(cut)
        sigma = np.repeat(sigma, 8, axis=0)
    images = asinh_scale(cut, sigma=sigma) if len(cut) else cut.astype(np.float32)
    return (images, gal) if return_galaxies else images
