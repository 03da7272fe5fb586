"""Anomalous galaxy cutouts for the evaluation of the WGAN scores (issue 4 §4; papers/003 §4).

Each anomaly is put into the *flux* of a simulated cutout (:mod:`obsqc.sim.galaxies`, e-, before
noise, sky subtraction and asinh scaling), so it is observed exactly like the galaxy it joins. Its
clean twin (same galaxy, neighbours, conditions and noise field) is available for tests and
figures. Kinds and the ranges they are drawn from (uniform unless said; ``F`` is the central
galaxy's flux, ``h`` its half-light radius):

* ``merger``: a companion galaxy of the bulge + disk population, 0-1.3 mag fainter than the central
  (flux ratio 0.3-1), at a separation of 1-2.5 (h + h_companion), 4-24 px, any direction
  (papers/003 §4.4: "merging galaxies");
* ``double_nucleus``: two compact nuclei (exponential, half-light radius 0.5-1 px), each 0.1-0.3 F,
  3-8 px apart, symmetric about the centre, any direction;
* ``tidal_feature``: 70% one tidal arc, a chain of small exponential knots (half-light radius
  1-2.5 px, one per px of arc) on a circle of radius 1.5-4 h (6 px to the frame's half-size minus 6),
  spanning 60-200 degrees, with a sin-tapered brightness and 15-50% of F in total; 30% shells:
  2-3 such arcs at radii R, 1.4 R, 1.9 R on alternating sides, each 60-120 degrees;
* ``extreme_colour`` (three bands only): the central galaxy made very red or very blue, r kept:
  g-r shifted by +-(1.0-2.0) mag and r-i by +-(0.5-1.2) mag, same sign;
* ``satellite_trail``: a straight trail crossing the frame (a chain of point sources every 0.5 px,
  so it carries the PSF) at any angle, passing 0-0.35 x size from the centre, peak surface
  brightness 3-30 sigma of the sky noise; in one band only (a satellite crosses one exposure);
* ``cosmic_ray``: 1-3 muon tracks (not PSF-convolved) of 3-30 px and 1e4-4e4 e-, diffusion sigma
  0.35-0.6 px, starting within 25 px of the centre (:func:`obsqc.sim.defects.add_cosmic_rays`);
  in one band only;
* ``bad_deblend``: half of them a bright star overlapping the galaxy (2-10 F, 4-12 px from its
  centre), half a truncated footprint: the central galaxy's light set to zero beyond a straight cut
  0.2-1 h (at least 1.5 px) from its centre, any direction, as when a deblender gives part of an
  object to a neighbour.

:func:`anomaly_sample` draws ``round(rate * n)`` anomalies (at least one when ``rate * n >= 0.5``),
the kinds as evenly as possible in a random order, at random positions. One seed, one sample.
"""

from __future__ import annotations

import math

import numpy as np

from obsqc.sim import galaxies as G
from obsqc.sim.defects import add_cosmic_rays

KINDS_1BAND: tuple[str, ...] = ("merger", "double_nucleus", "tidal_feature", "satellite_trail",
                                "cosmic_ray", "bad_deblend")
"""Anomaly kinds for single-band cutouts."""

KINDS_3BAND: tuple[str, ...] = KINDS_1BAND[:3] + ("extreme_colour",) + KINDS_1BAND[3:]
"""Anomaly kinds for multi-band cutouts (extreme colours need colours)."""

DEFAULT_RATE: float = 0.015
"""Fraction of anomalous cutouts (issue 4 §4: 1-2%)."""


def kinds_for(bands) -> tuple[str, ...]:
    """The anomaly kinds possible with these bands."""
    return KINDS_3BAND if len(tuple(bands)) > 1 else KINDS_1BAND


def _central(draw: G.GalaxyDraw) -> np.ndarray:
    """Row of each image's central galaxy in ``draw.objects`` (n,)."""
    o = draw.objects
    rows = np.flatnonzero(o.role == 0)
    out = np.full(draw.n, -1, np.int64)
    out[o.image[rows]] = rows
    return out


def _total_flux(o: G.Objects, rows: np.ndarray) -> np.ndarray:
    """(k, C) total flux of objects ``rows``, e-."""
    return o.flux_point[rows] + o.flux_disk[rows] + o.flux_bulge[rows] + o.flux_sersic[rows]


def _knots(image: int, xs, ys, flux_b: np.ndarray, hlr: float, nb: int) -> G.Objects:
    """Small round exponential knots (one row each) with (k, C) fluxes."""
    k = len(xs)
    z = np.zeros(k)
    zc = np.zeros((k, nb))
    return G.Objects(image=np.full(k, image, np.int64), x=np.asarray(xs, float), y=np.asarray(ys, float),
                     role=np.full(k, 2, np.int8), flux_point=zc, flux_disk=np.asarray(flux_b, float),
                     hlr_disk=np.full(k, hlr), g1_disk=z, g2_disk=z, flux_bulge=zc, hlr_bulge=z, g1_bulge=z,
                     g2_bulge=z, flux_sersic=zc, sersic_n=z, hlr_sersic=z, g1_sersic=z, g2_sersic=z)


def _points(image: int, xs, ys, flux_b: np.ndarray, nb: int) -> G.Objects:
    o = _knots(image, xs, ys, np.zeros((len(xs), nb)), 0.0, nb)
    o.flux_point = np.asarray(flux_b, float)
    return o


def _arc(rng, image, cx, cy, radius, phi0, span, total_b, nb) -> G.Objects:
    """An arc of knots from phi0 over ``span`` rad at ``radius``, sin-tapered, ``total_b`` (C,) e-."""
    n_k = max(3, int(radius * span))
    t = (np.arange(n_k) + 0.5) / n_k
    w = np.sin(np.pi * t)
    w /= w.sum()
    phi = phi0 + span * t
    return _knots(image, cx + radius * np.cos(phi), cy + radius * np.sin(phi), w[:, None] * total_b[None, :],
                  float(rng.uniform(1.0, 2.5)), nb)


def _add_objects(rng, kind: str, j: int, draw: G.GalaxyDraw, crow: int) -> tuple[G.Objects | None, dict]:
    """Objects added for anomaly ``kind`` in sub-draw image j (central object row ``crow``)."""
    o, nb, size = draw.objects, len(draw.bands), draw.size
    cx, cy = float(o.x[crow]), float(o.y[crow])
    f_c = _total_flux(o, np.array([crow]))[0]
    h = float(draw.truth["hlr_px"][j])
    ang = float(rng.uniform(0.0, 2 * np.pi))
    if kind == "merger":
        dm = float(rng.uniform(0.0, 1.3))
        comp = G.draw_galaxies(rng, np.array([draw.truth["mag_r"][j] + dm]), draw.bands, central=False)
        hc = float(comp["hlr_disk"][0])
        d = float(np.clip(rng.uniform(1.0, 2.5) * (h + hc), 4.0, 24.0))
        add = G.objects_from(np.array([j]), [cx + d * math.cos(ang)], [cy + d * math.sin(ang)], 2, comp)
        return add, dict(dmag=dm, separation_px=d, angle_rad=ang)
    if kind == "double_nucleus":
        d = float(rng.uniform(3.0, 8.0))
        fr = rng.uniform(0.1, 0.3, 2)
        xs = [cx + 0.5 * d * math.cos(ang), cx - 0.5 * d * math.cos(ang)]
        ys = [cy + 0.5 * d * math.sin(ang), cy - 0.5 * d * math.sin(ang)]
        add = _knots(j, xs, ys, fr[:, None] * f_c[None, :], float(rng.uniform(0.5, 1.0)), nb)
        return add, dict(separation_px=d, flux_fractions=fr.tolist(), angle_rad=ang)
    if kind == "tidal_feature":
        frac = float(rng.uniform(0.15, 0.5))
        r_max = max(6.0, size / 2 - 6.0)
        radius = float(np.clip(rng.uniform(1.5, 4.0) * h, 6.0, r_max))
        if rng.random() < 0.7:
            span = math.radians(rng.uniform(60.0, 200.0))
            add = _arc(rng, j, cx, cy, radius, ang, span, frac * f_c, nb)
            return add, dict(variant="arc", radius_px=radius, span_deg=math.degrees(span), flux_fraction=frac)
        n_sh = int(rng.integers(2, 4))
        parts = []
        for s in range(n_sh):
            r = min(radius * (1.0, 1.4, 1.9)[s], r_max)
            span = math.radians(rng.uniform(60.0, 120.0))
            parts.append(_arc(rng, j, cx, cy, r, ang + s * np.pi - span / 2, span, frac / n_sh * f_c, nb))
        return G.Objects.concat(parts), dict(variant="shells", radius_px=radius, n_shells=n_sh, flux_fraction=frac)
    if kind == "bad_deblend" and rng.random() < 0.5:
        ratio = float(rng.uniform(2.0, 10.0))
        d = float(rng.uniform(4.0, 12.0))
        star = G.draw_stars(rng, np.array([20.0]), draw.bands)["flux_point"][0]
        ref = draw.bands.index("r") if "r" in draw.bands else 0
        fb = ratio * f_c[ref] * star / star[ref]  # stellar colours, ``ratio`` times the galaxy in r
        add = _points(j, [cx + d * math.cos(ang)], [cy + d * math.sin(ang)], fb[None, :], nb)
        return add, dict(variant="overlapping_star", flux_ratio=ratio, separation_px=d)
    if kind == "bad_deblend":
        return None, dict(variant="truncated", cut_px=max(1.5, float(rng.uniform(0.2, 1.0)) * h), angle_rad=ang)
    if kind == "satellite_trail":
        band = int(rng.integers(nb))
        theta = float(rng.uniform(0.0, np.pi))
        b = float(rng.uniform(-0.35, 0.35)) * size
        peak = float(rng.uniform(3.0, 30.0))
        sig = float(draw.conditions.sigma_e[j, band])
        fwhm = float(draw.conditions.fwhm_px[j, band])
        lam = peak * sig * 1.064 * fwhm  # e- per px of trail for that peak (Gaussian line-spread)
        half = size * 0.75
        t = np.arange(-half, half, 0.5)
        nx, ny = -math.sin(theta), math.cos(theta)
        xs = size // 2 + b * nx + t * math.cos(theta)
        ys = size // 2 + b * ny + t * math.sin(theta)
        fb = np.zeros((len(t), nb))
        fb[:, band] = 0.5 * lam
        return _points(j, xs, ys, fb, nb), dict(band=draw.bands[band], angle_rad=theta, impact_px=b,
                                                peak_sigma=peak)
    if kind == "extreme_colour":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        dgr, dri = sign * float(rng.uniform(1.0, 2.0)), sign * float(rng.uniform(0.5, 1.2))
        return None, dict(delta_gr=dgr, delta_ri=dri)
    if kind == "cosmic_ray":
        band = int(rng.integers(nb))
        events = []
        for _ in range(int(rng.integers(1, 4))):
            r, a = 25.0 * math.sqrt(rng.random()), rng.uniform(0.0, 2 * np.pi)
            events.append(dict(x=cx + r * math.cos(a), y=cy + r * math.sin(a), angle=float(rng.uniform(0, np.pi)),
                               length=float(rng.uniform(3.0, 30.0)), charge=float(rng.uniform(1e4, 4e4)),
                               sigma=float(rng.uniform(0.35, 0.6))))
        return None, dict(band=draw.bands[band], events=events)
    raise ValueError(f"unknown anomaly kind {kind!r}")


def _recolour(o: G.Objects, row: int, bands: tuple[str, ...], dgr: float, dri: float) -> None:
    """Shift the colours of object ``row`` in place, r kept (g by dgr, i by -dri, z by -1.25 dri)."""
    shift = {"g": dgr, "r": 0.0, "i": -dri, "z": -1.25 * dri}
    fac = np.array([10 ** (-0.4 * shift[b]) for b in bands])
    for name in ("flux_disk", "flux_bulge", "flux_sersic", "flux_point"):
        getattr(o, name)[row] = getattr(o, name)[row] * fac


def _truncate(flux: np.ndarray, central: np.ndarray, x: float, y: float, cut: float, ang: float) -> None:
    """In place on flux (C, S, S): remove the central galaxy's light beyond the cut line."""
    s = flux.shape[-1]
    yy, xx = np.mgrid[0:s, 0:s]
    beyond = (xx - x) * math.cos(ang) + (yy - y) * math.sin(ang) > cut
    flux -= central * beyond[None]


def inject(rng: np.random.Generator, draw: G.GalaxyDraw, idx: np.ndarray, kinds: np.ndarray,
           psfs: G.PSFCache | None = None) -> tuple[np.ndarray, list[dict]]:
    """Render the cutouts ``idx`` of ``draw`` with anomaly ``kinds[k]`` injected in cutout ``idx[k]``.

    Returns their flux (k, C, S, S) in e- (before noise) and the drawn parameters of each.
    """
    psfs = psfs or G.PSFCache()
    sub = G.subset_draw(draw, idx)
    crow = _central(sub)
    added, details, post = [], [], []
    for j, kind in enumerate(kinds):
        add, par = _add_objects(rng, str(kind), j, sub, int(crow[j]))
        if add is not None:
            added.append(add)
        if kind == "extreme_colour":
            _recolour(sub.objects, int(crow[j]), sub.bands, par["delta_gr"], par["delta_ri"])
        details.append(dict(kind=str(kind), **par))
        if kind in ("cosmic_ray",) or (kind == "bad_deblend" and par["variant"] == "truncated"):
            post.append(j)
    if added:
        sub.objects = G.Objects.concat([sub.objects] + added)
    flux = G.render(sub, psfs)
    if post:
        cen = G.render(G.GalaxyDraw(sub.size, sub.bands, sub.conditions, sub.objects.subset(crow), sub.truth), psfs)
        for j in post:
            par = details[j]
            if par["kind"] == "cosmic_ray":
                b = sub.bands.index(par["band"])
                plane = flux[j, b].astype(np.float64)
                add_cosmic_rays(plane, par["events"])
                flux[j, b] = plane
            else:
                _truncate(flux[j], cen[j], float(sub.objects.x[crow[j]]), float(sub.objects.y[crow[j]]),
                          par["cut_px"], par["angle_rad"])
    return flux, details


def anomaly_sample(n: int, *, rate: float = DEFAULT_RATE, size: int = 96, bands=("r",), seed: int = 0,
                   kinds=None, return_clean: bool = False, return_details: bool = False):
    """``n`` simulated cutouts of which ``round(rate * n)`` carry an injected anomaly (module docstring).

    Returns ``(images, is_anomaly, kind)``: float32 (n, C, size, size) in [0, 1], bool (n,), and
    str (n,) with "" for normal cutouts. ``kinds`` restricts the kinds drawn (default: all possible
    with ``bands``). ``return_clean`` appends the clean twins (same galaxies and noise, no anomaly);
    ``return_details`` appends a list of dicts (index, kind and drawn parameters) per anomaly.
    """
    bands = tuple(bands)
    allowed = kinds_for(bands)
    use = tuple(allowed if kinds is None else kinds)
    bad = [k for k in use if k not in allowed]
    if bad:
        raise ValueError(f"anomaly kinds {bad} are not possible with bands {bands}; choose from {allowed}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    ss_draw, ss_noise, ss_anom = np.random.SeedSequence(int(seed)).spawn(3)
    draw = G.draw_batch(np.random.default_rng(ss_draw), int(n), size=int(size), bands=bands)
    rng = np.random.default_rng(ss_anom)
    k = int(round(rate * n)) if rate * n >= 0.5 else 0
    k = max(k, 1) if rate * n >= 0.5 else k
    idx = np.sort(rng.choice(int(n), size=k, replace=False)) if k else np.zeros(0, np.int64)
    kind_list = np.array(rng.permutation(np.resize(np.array(use), k)), dtype=object) if k else np.zeros(0, object)
    psfs = G.PSFCache()
    clean_flux = G.render(draw, psfs)
    flux = clean_flux.copy()
    details = []
    if k:
        flux[idx], details = inject(rng, draw, idx, kind_list, psfs)
        for i, d in zip(idx, details):
            d["index"] = int(i)
    is_anom = np.zeros(int(n), bool)
    is_anom[idx] = True
    kind = np.full(int(n), "", dtype=object)
    kind[idx] = kind_list
    kind = kind.astype(str)
    if return_clean:
        images, clean = G.finish([flux, clean_flux], draw.conditions, np.random.default_rng(ss_noise))
    else:
        images, clean = G.finish(flux, draw.conditions, np.random.default_rng(ss_noise)), None
    out = (images, is_anom, kind)
    if return_clean:
        out = out + (clean,)
    if return_details:
        out = out + (details,)
    return out
