"""Speed of the obsqc detectors against SEP and the memory floor, FITS decode, a whole DECam exposure.

    python -m benchmarks.bench_detectors [--quick] [--rounds N] [--decam/--no-decam] [--json OUT]

What is measured (see ``benchmarks/README.md`` for the full list of options):

* **per CCD, one core** -- ``obsqc.detectors.ccd.measure_ccd`` (background fit, sources, moments,
  gradients, histograms) after ``warm_up()``, side by side with SEP (``sep.Background`` then
  ``sep.extract`` at 4 sigma, minarea 6, on the background-subtracted image) and one numpy pass
  (``a.sum()``, the memory floor), on the same float32 array. The three contenders are interleaved
  (their order rotates every round) so that load from other processes hits them alike; the process is
  pinned to one core and numba / OpenMP / BLAS are limited to one thread. Three fields: the
  simulator's CCD at its nominal depth (``typical``), the same sky at a 10 s exposure (``sparse``),
  and ``typical`` plus about 1000 extra stars per Mpix (``crowded``, a low-latitude field).
* **FITS decode, one core** -- ``open_exposure(path).read_ccd(0)`` against
  ``astropy.io.fits.getdata(path, 1).astype(np.float32)`` on a one-CCD file: float32, int16 with
  BZERO = 32768, RICE_1 int16 (lossless) and RICE_1 float32 (quantised, q = 16). The file sits in the
  page cache, so this is decode, not disk.
* **whole exposure, all cores** -- a DECam-sized exposure (62 CCDs, 520 Mpix) written to a temporary
  folder, then ``obsqc.service.measure.measure_file(path, threads=2)`` timed end to end in fresh
  processes (after ``warm_up``), one run with the file evicted from the page cache and the others with
  it cached; each run reports its peak RSS above the post-warm-up baseline, compared with one CCD's
  working set measured the same way (a fresh process that reads one CCD and measures it).
* **cold start** -- ``warm_up()`` in a fresh process with an empty ``NUMBA_CACHE_DIR``, then again
  with that cache filled: the JIT cost a first exposure would pay without warm-up.

Figures are medians over interleaved rounds; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FULL_SHAPE = (4096, 2048)  # rows x columns: a 2048 x 4096 CCD (NAXIS1 = 2048, NAXIS2 = 4096)
QUICK_SHAPE = (1024, 512)
DECAM_CCDS = 62
SINGLE_THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1"}
SEP_THRESH = 4.0
SEP_MINAREA = 6
SEP_DEFAULT_PIXSTACK = 300_000
# SEP's pixel stack: its default unless a field overflows it; each extract() allocates and clears the
# whole stack, so a needlessly big one (10 M) makes extract 5x slower and must not be charged to SEP.
CROWDED_STARS_PER_MPIX = 1000.0
SPARSE_EXPTIME_S = 10.0
DECAM_NAMES = [f"S{i}" for i in range(1, 32)] + [f"N{i}" for i in range(1, 32)]


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


@dataclass
class Field:
    """One CCD image to time, with the SATURATE level the service would read from its header."""

    name: str
    image: np.ndarray
    saturate: float
    source: str  # how it was made
    psf_fwhm_px: float = 4.0
    info: dict = field(default_factory=dict)


def _sim_ccd(shape: tuple[int, int], seed: int, exptime: float = 90.0):
    """The project simulator's CCD (float32 ADU) and its truth, or None when ``obsqc.sim`` is missing."""
    try:
        from obsqc.sim import simulate_ccd
    except ImportError:
        return None
    img, truth = simulate_ccd(shape, seed=seed, exptime=exptime)
    return np.ascontiguousarray(img, dtype=np.float32), truth


def _moffat_stamp(r: int, fwhm: float, dx: float, dy: float, beta: float = 3.0) -> np.ndarray:
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    p = (1.0 + ((xx - dx) ** 2 + (yy - dy) ** 2) / alpha**2) ** (-beta)
    return p / p.sum()


def _add_stamp(image: np.ndarray, stamp: np.ndarray, x: int, y: int) -> None:
    r = stamp.shape[0] // 2
    ny, nx = image.shape
    y0, y1, x0, x1 = y - r, y + r + 1, x - r, x + r + 1
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = stamp.shape[0] - max(0, y1 - ny), stamp.shape[1] - max(0, x1 - nx)
    if sy1 <= sy0 or sx1 <= sx0:
        return
    image[max(0, y0) : min(ny, y1), max(0, x0) : min(nx, x1)] += stamp[sy0:sy1, sx0:sx1]


def add_stars(image: np.ndarray, n: int, *, fwhm: float, sigma: float, saturate: float, seed: int) -> None:
    """Add ``n`` Moffat stars in place, peak S/N from ~3 to ~3000 (dN/dlogF flat-ish, like faint stars)."""
    rng = np.random.default_rng(seed)
    ny, nx = image.shape
    peak_snr = np.sort(10 ** rng.uniform(0.5, 3.5, n))[::-1]
    base = _moffat_stamp(12, fwhm, 0.0, 0.0)
    peak_fraction = float(base.max())
    for k in range(n):
        r = 12 if peak_snr[k] > 100 else 6
        stamp = _moffat_stamp(r, fwhm, *rng.uniform(-0.5, 0.5, 2))
        flux = peak_snr[k] * sigma / peak_fraction
        _add_stamp(image, (flux * stamp).astype(np.float32), int(rng.integers(0, nx)), int(rng.integers(0, ny)))
    np.minimum(image, np.float32(saturate), out=image)


def synthetic_ccd(shape: tuple[int, int], seed: int = 0, *, objects_per_mpix: float = 400.0,
                  sky: float = 500.0, sigma: float = 11.0, saturate: float = 43000.0) -> np.ndarray:
    """A plain-numpy CCD for when ``obsqc.sim`` is not available: sky with a gentle gradient, Gaussian
    noise, Moffat stars and elliptical Gaussian galaxies, one saturated star with a bleed trail, a few
    bad columns and cosmic rays (float32 ADU)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32) / np.float32(max(ny, nx))
    image = (sky * (1.0 + 0.02 * xx - 0.01 * yy)).astype(np.float32)
    image += rng.normal(0.0, sigma, shape).astype(np.float32)
    n = int(objects_per_mpix * ny * nx / 1e6)
    n_gal = n * 2 // 3
    add_stars(image, n - n_gal, fwhm=4.0, sigma=sigma, saturate=np.inf, seed=seed + 1)
    for _ in range(n_gal):
        r = 10
        s = rng.uniform(1.2, 3.5)
        q = rng.uniform(0.4, 1.0)
        phi = rng.uniform(0, np.pi)
        gy, gx = np.mgrid[-r : r + 1, -r : r + 1]
        u = gx * np.cos(phi) + gy * np.sin(phi)
        v = -gx * np.sin(phi) + gy * np.cos(phi)
        g = np.exp(-0.5 * (u**2 + (v / q) ** 2) / s**2)
        flux = 10 ** rng.uniform(0.5, 2.5) * sigma / float(g.max() / g.sum())
        _add_stamp(image, (flux * g / g.sum()).astype(np.float32), int(rng.integers(0, nx)), int(rng.integers(0, ny)))
    # a saturated star with a bleed trail along the columns
    x0, y0 = int(rng.integers(50, nx - 50)), int(rng.integers(100, ny - 100))
    _add_stamp(image, (5e7 * _moffat_stamp(40, 4.0, 0.0, 0.0)).astype(np.float32), x0, y0)
    image[max(0, y0 - 60) : y0 + 60, x0 - 1 : x0 + 2] = saturate
    # bad columns and cosmic rays
    for c in rng.integers(0, nx, 2):
        image[:, c] += np.float32(rng.choice([-300.0, 2000.0]))
    for _ in range(int(30 * ny * nx / 1e6)):
        length = int(rng.integers(1, 12))
        x, y = int(rng.integers(0, nx - 12)), int(rng.integers(0, ny - 12))
        image[y + np.arange(length) // 3, x + np.arange(length)] += np.float32(rng.uniform(500, 5000))
    np.minimum(image, np.float32(saturate), out=image)
    return image


def make_fields(shape: tuple[int, int], seed: int, names: list[str]) -> list[Field]:
    """The ``typical``, ``sparse`` and ``crowded`` CCDs, from the simulator when it is importable."""
    fields: list[Field] = []
    typical = None
    sim = _sim_ccd(shape, seed)
    if sim is not None:
        img, t = sim
        typical = Field("typical", img, float(t["saturate"]), "obsqc.sim.simulate_ccd, r band, 90 s",
                        float(t["psf_fwhm_px"]), {"sigma_adu": float(t["sigma_adu"]),
                                                  "catalog_objects": int(len(t["catalog"]["mag"]))})
    else:
        typical = Field("typical", synthetic_ccd(shape, seed), 43000.0, "numpy generator, 400 objects/Mpix",
                        4.0, {"sigma_adu": 11.0})
    for name in names:
        if name == "typical":
            fields.append(typical)
        elif name == "sparse":
            sparse = _sim_ccd(shape, seed, exptime=SPARSE_EXPTIME_S)
            if sparse is not None:
                img, t = sparse
                fields.append(Field("sparse", img, float(t["saturate"]),
                                    f"obsqc.sim.simulate_ccd, r band, {SPARSE_EXPTIME_S:g} s", float(t["psf_fwhm_px"])))
            else:
                fields.append(Field("sparse", synthetic_ccd(shape, seed, objects_per_mpix=40.0), 43000.0,
                                    "numpy generator, 40 objects/Mpix"))
        elif name == "crowded":
            img = typical.image.copy()
            n = int(round(CROWDED_STARS_PER_MPIX * img.size / 1e6))
            add_stars(img, n, fwhm=typical.psf_fwhm_px, sigma=typical.info.get("sigma_adu", 11.0),
                      saturate=typical.saturate, seed=seed + 99)
            fields.append(Field("crowded", img, typical.saturate,
                                f"typical + {n} Moffat stars (peak S/N 3-3000)", typical.psf_fwhm_px))
        else:
            raise ValueError(f"unknown field {name!r} (typical, sparse, crowded)")
    return fields


# ---------------------------------------------------------------------------------------------
# FITS writing (streamed one CCD at a time, so a 2 GB exposure never sits in memory)
# ---------------------------------------------------------------------------------------------


def _primary_header(expnum: int):
    from astropy.io import fits

    return fits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True),
                        ("EXPNUM", expnum), ("INSTRUME", "BENCHCAM"), ("FILTER", "r"),
                        ("MJD-OBS", 60310.0), ("EXPTIME", 90.0)])


def _image_header(shape, dtype: str, name: str, saturate: float):
    from astropy.io import fits

    h = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", -32 if dtype == "float32" else 16), ("NAXIS", 2),
                     ("NAXIS1", shape[1]), ("NAXIS2", shape[0]), ("PCOUNT", 0), ("GCOUNT", 1)])
    if dtype == "int16":
        h["BZERO"] = 32768
        h["BSCALE"] = 1
    h["EXTNAME"] = name
    h["CCDNAME"] = name
    h["SATURATE"] = saturate
    return h


def _raw_bytes(image: np.ndarray, dtype: str) -> bytes:
    if dtype == "float32":
        return image.astype(">f4").tobytes()
    u = np.clip(np.rint(image), 0, 65535).astype(np.int32) - 32768
    return u.astype(">i2").tobytes()


def write_mef(path: Path, images, *, dtype: str = "float32", names=None, saturate: float = 43000.0,
              expnum: int = 1) -> int:
    """Write a multi-extension FITS of uncompressed CCDs (``images`` may be a generator). Returns bytes."""
    with open(path, "wb") as f:
        f.write(_primary_header(expnum).tostring().encode("ascii"))
        for i, img in enumerate(images):
            name = names[i] if names else f"CCD{i + 1}"
            f.write(_image_header(img.shape, dtype, name, saturate).tostring().encode("ascii"))
            raw = _raw_bytes(img, dtype)
            f.write(raw)
            f.write(b"\0" * (-len(raw) % 2880))
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def write_compressed(path: Path, image: np.ndarray, *, dtype: str, saturate: float) -> int:
    from astropy.io import fits

    if dtype == "int16":
        data = np.clip(np.rint(image), 0, 65535).astype(np.uint16)
        hdu = fits.CompImageHDU(data=data, compression_type="RICE_1", name="CCD1")
    else:
        hdu = fits.CompImageHDU(data=image, compression_type="RICE_1", name="CCD1", quantize_level=16.0,
                                quantize_method=1, dither_seed=1)
    hdu.header["SATURATE"] = saturate
    fits.HDUList([fits.PrimaryHDU(header=_primary_header(1)), hdu]).writeto(path, overwrite=True)
    return path.stat().st_size


def evict_from_page_cache(path: Path) -> bool:
    """Drop this file's pages from the page cache (only this file; needs no privilege)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------


def summarize(times: list[float], mpix: float) -> dict:
    med = statistics.median(times)
    return {"n": len(times), "min_s": min(times), "median_s": med, "max_s": max(times),
            "mpix_per_s_median": mpix / med, "mpix_per_s_best": mpix / min(times), "times_s": times}


def interleaved(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Time each contender once per round, rotating their order each round; one untimed call first."""
    names = list(contenders)
    for n in names:
        contenders[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        gc.collect()
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            contenders[n]()
            out[n].append(time.perf_counter() - t0)
    return out


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# per CCD: obsqc vs SEP vs the memory floor
# ---------------------------------------------------------------------------------------------


def bench_per_ccd(fld: Field, rounds: int) -> dict:
    import sep

    from obsqc.detectors.ccd import measure_ccd
    from obsqc.detectors.config import DetectorParams

    img = fld.image
    pixstack = [SEP_DEFAULT_PIXSTACK]

    def sep_extract(sub, err, **kw):
        """sep.extract with the default pixel stack, doubled (untimed first call) only if it overflows."""
        while True:
            sep.set_extract_pixstack(pixstack[0])
            try:
                return sep.extract(sub, SEP_THRESH, err=err, minarea=SEP_MINAREA, **kw)
            except Exception as exc:  # SEP raises a bare Exception: "internal pixel buffer full"
                if "pixel buffer full" not in str(exc) or pixstack[0] > 1e9:
                    raise
                pixstack[0] *= 2
    params = DetectorParams()
    last: dict = {}
    steps: dict[str, list[float]] = {}

    def run_obsqc():
        t0 = time.perf_counter()
        st = measure_ccd(img, name=fld.name, saturate=fld.saturate, params=params, seed=1)
        total = time.perf_counter() - t0
        for k, v in st.timings_s.items():
            steps.setdefault(k, []).append(v)
        steps.setdefault("histograms+rest", []).append(total - sum(st.timings_s.values()))
        last["obsqc"] = st

    sep_steps: dict[str, list[float]] = {"Background": [], "subtract": [], "extract": []}

    def run_sep():
        t0 = time.perf_counter()
        bkg = sep.Background(img)
        t1 = time.perf_counter()
        sub = img - bkg
        t2 = time.perf_counter()
        objs = sep_extract(sub, bkg.globalrms)
        t3 = time.perf_counter()
        sep_steps["Background"].append(t1 - t0)
        sep_steps["subtract"].append(t2 - t1)
        sep_steps["extract"].append(t3 - t2)
        last["sep"] = objs

    def run_sep_nodeblend():
        bkg = sep.Background(img)
        last["sep_nodeblend"] = sep_extract(img - bkg, bkg.globalrms, deblend_cont=1.0)

    def run_floor():
        last["floor"] = img.sum()

    times = interleaved({"obsqc": run_obsqc, "sep": run_sep, "sep_nodeblend": run_sep_nodeblend,
                         "floor": run_floor}, rounds)
    for d in (steps, sep_steps):  # drop the untimed first call
        for k in d:
            d[k] = d[k][-rounds:]
    mpix = img.size / 1e6
    res = {n: summarize(t, mpix) for n, t in times.items()}
    paired_sep = [s / o for o, s in zip(times["obsqc"], times["sep"])]
    paired_floor = [o / f for o, f in zip(times["obsqc"], times["floor"])]
    st = last["obsqc"]
    return {
        "field": fld.name, "source": fld.source, "shape": list(img.shape), "mpix": mpix,
        "contenders": res,
        "obsqc_steps_median_s": {k: statistics.median(v) for k, v in steps.items()},
        "sep_steps_median_s": {k: statistics.median(v) for k, v in sep_steps.items()},
        "speedup_vs_sep": res["sep"]["median_s"] / res["obsqc"]["median_s"],
        "speedup_vs_sep_paired_median": statistics.median(paired_sep),
        "speedup_vs_sep_nodeblend": res["sep_nodeblend"]["median_s"] / res["obsqc"]["median_s"],
        "x_floor": res["obsqc"]["median_s"] / res["floor"]["median_s"],
        "x_floor_paired_median": statistics.median(paired_floor),
        "obsqc_sources": int(len(st.sources)), "obsqc_usable_sources": st.n_sources,
        "obsqc_gradient_points": st.n_gradient_points, "sep_objects": int(len(last["sep"])),
        "sep_nodeblend_objects": int(len(last["sep_nodeblend"])), "sep_pixstack": pixstack[0],
    }


# ---------------------------------------------------------------------------------------------
# FITS decode
# ---------------------------------------------------------------------------------------------


DECODE_FORMATS = ("float32", "int16", "rice_int16", "rice_float32")


def bench_decode(fld: Field, rounds: int, tmp: Path) -> list[dict]:
    from astropy.io import fits

    from obsqc.service.fits_ingest import open_exposure

    paths = {}
    for fmt in DECODE_FORMATS:
        p = tmp / f"decode_{fmt}.fits"
        if fmt.startswith("rice_"):
            size = write_compressed(p, fld.image, dtype=fmt[5:], saturate=fld.saturate)
        else:
            size = write_mef(p, [fld.image], dtype=fmt, saturate=fld.saturate)
        paths[fmt] = (p, size)

    def obsqc_read(p):
        def f():
            with open_exposure(p) as r:
                return r.read_ccd(0).data
        return f

    def astropy_read(p):
        def f():
            return fits.getdata(p, 1).astype(np.float32)
        return f

    contenders = {}
    for fmt, (p, _) in paths.items():
        contenders[f"{fmt}/obsqc"] = obsqc_read(p)
        contenders[f"{fmt}/astropy"] = astropy_read(p)
        a, b = contenders[f"{fmt}/obsqc"](), contenders[f"{fmt}/astropy"]()
        if a.shape != b.shape:
            raise RuntimeError(f"{fmt}: obsqc read {a.shape}, astropy {b.shape}")
    times = interleaved(contenders, rounds)
    mpix = fld.image.size / 1e6
    out = []
    for fmt, (p, size) in paths.items():
        o, a = summarize(times[f"{fmt}/obsqc"], mpix), summarize(times[f"{fmt}/astropy"], mpix)
        out.append({"format": fmt, "file_mib": size / 2**20, "obsqc": o, "astropy": a,
                    "speedup_vs_astropy": a["median_s"] / o["median_s"]})
    return out


# ---------------------------------------------------------------------------------------------
# child processes: whole exposure, one CCD's working set, cold start
# ---------------------------------------------------------------------------------------------


def _child(args) -> None:
    """Runs in a fresh process; prints one JSON object on its last stdout line."""
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    out: dict = {"mode": args.child}
    t0 = time.perf_counter()
    from obsqc.detectors.warmup import warm_up

    out["import_s"] = time.perf_counter() - t0
    out["warm_up_s"] = warm_up()
    if args.child == "cold":
        print(json.dumps(out))
        return
    out["baseline_rss_kib"] = _status_kib("VmRSS")
    out["hwm_reset"] = _reset_peak_rss()
    if args.child == "exposure":
        from obsqc.service.measure import measure_file

        t, c = time.perf_counter(), time.process_time()
        m = measure_file(args.path, threads=args.threads)
        out["wall_s"] = time.perf_counter() - t
        out["cpu_s"] = time.process_time() - c  # all threads of this process: ~threads x wall if not starved
        out["n_ccds"] = len(m.stats.ccds)
        out["n_skipped"] = len(m.stats.skipped_ccds)
        out["n_sources"] = int(m.stats.n_sources)
    elif args.child == "one_ccd":
        from obsqc.detectors.ccd import measure_ccd
        from obsqc.service.fits_ingest import open_exposure

        t = time.perf_counter()
        with open_exposure(args.path) as r:
            ccd = r.read_ccd(0)
            st = measure_ccd(ccd.data, name=ccd.name, saturate=ccd.saturate, seed=0)
            out["image_mib"] = ccd.data.nbytes / 2**20
            del ccd, st
        out["wall_s"] = time.perf_counter() - t
    # VmHWM, not getrusage's ru_maxrss: ru_maxrss survives fork + exec, so a child would report the
    # benchmark parent's peak (the images it holds) instead of its own.
    out["peak_rss_kib"] = _status_kib("VmHWM")
    print(json.dumps(out))


def run_child(mode: str, *, env: dict, cpus: set[int], path: Path | None = None, threads: int = 2,
              timeout: float = 900) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_detectors", "--child", mode,
           "--cpus", ",".join(str(c) for c in sorted(cpus)), "--threads", str(threads)]
    if path is not None:
        cmd += ["--path", str(path)]
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    p = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    out["loadavg_1min_before"] = load
    return out


def bench_exposure(bases: list[Field], n_ccd: int, dtypes: list[str], runs: int, tmp: Path, env: dict,
                   cpus: set[int], threads: int) -> dict:
    """Write an n_ccd exposure per dtype (CCD k = base[k % K] flipped by k // K), time measure_file."""
    shape = bases[0].image.shape
    out: dict = {"n_ccd": n_ccd, "ccd_shape": list(shape), "mpix": n_ccd * bases[0].image.size / 1e6,
                 "threads": threads, "cpus": sorted(cpus), "distinct_images": len(bases), "by_dtype": {}}

    def ccds():
        for k in range(n_ccd):
            img = bases[k % len(bases)].image
            v = (k // len(bases)) % 4
            yield img[:: -1 if v & 1 else 1, :: -1 if v & 2 else 1]

    for dtype in dtypes:
        path = tmp / f"decam_{dtype}.fits"
        t0 = time.perf_counter()
        size = write_mef(path, ccds(), dtype=dtype, names=DECAM_NAMES, saturate=bases[0].saturate, expnum=2)
        write_s = time.perf_counter() - t0
        try:
            one = run_child("one_ccd", env=env, cpus=cpus, path=path)
            cold = None
            if evict_from_page_cache(path):
                cold = run_child("exposure", env=env, cpus=cpus, path=path, threads=threads)
            warm = [run_child("exposure", env=env, cpus=cpus, path=path, threads=threads) for _ in range(runs)]
        finally:
            path.unlink(missing_ok=True)
        walls = [w["wall_s"] for w in warm]
        peaks = [w["peak_rss_kib"] - (w["baseline_rss_kib"] if w["hwm_reset"] else 0) for w in warm]
        one_ws = one["peak_rss_kib"] - (one["baseline_rss_kib"] if one["hwm_reset"] else 0)
        peak_inc = max(peaks)
        out["by_dtype"][dtype] = {
            "file_gib": size / 2**30, "write_s": write_s,
            "warm_cache": summarize(walls, out["mpix"]), "cold_cache": cold,
            "cpu_s_median": statistics.median(w["cpu_s"] for w in warm),
            "cpu_per_wall_median": statistics.median(w["cpu_s"] / w["wall_s"] for w in warm),
            "runs": warm, "one_ccd": one,
            "one_ccd_working_set_mib": one_ws / 1024,
            "baseline_rss_mib": statistics.median(w["baseline_rss_kib"] for w in warm) / 1024,
            "peak_rss_mib": max(w["peak_rss_kib"] for w in warm) / 1024,
            "peak_above_baseline_mib": peak_inc / 1024,
            "peak_over_one_ccd": peak_inc / one_ws if one_ws > 0 else float("nan"),
            "hwm_reset": all(w["hwm_reset"] for w in warm) and one["hwm_reset"],
        }
    return out


def bench_cold_start(env: dict, cpus: set[int], tmp: Path) -> dict:
    cache = tmp / "numba_cache"
    cache.mkdir()
    e = dict(env, NUMBA_CACHE_DIR=str(cache))
    empty = run_child("cold", env=e, cpus=cpus, timeout=1800)
    filled = run_child("cold", env=e, cpus=cpus)
    shutil.rmtree(cache, ignore_errors=True)
    return {"empty_cache": empty, "filled_cache": filled,
            "jit_cost_s": empty["warm_up_s"] - filled["warm_up_s"], "cpus": sorted(cpus)}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def machine_info() -> dict:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "numba", "sep", "astropy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just not reported
            versions[mod] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"cpu_model": model, "nproc": os.cpu_count(), "python": platform.python_version(),
            "versions": versions, "git_commit": commit}


def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def print_report(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 150))
    meta = res["meta"]
    con.print(f"[bold]obsqc detectors: speed[/bold]  {meta['date']}  {meta['cpu_model']}, nproc {meta['nproc']}, "
              f"load avg {meta['loadavg_start'][0]:.2f} -> {meta['loadavg_end'][0]:.2f}")
    con.print(f"command: {meta['command']}")
    if res.get("per_ccd"):
        t = Table(title=f"per CCD, one core (core {meta['core']}), {meta['rounds']} interleaved rounds")
        for c in ("field", "contender", "min s", "median s", "max s", "Mpix/s (median)", "detections"):
            t.add_column(c, justify="right" if c not in ("field", "contender") else "left")
        for r in res["per_ccd"]:
            for n, label in (("obsqc", "obsqc measure_ccd"), ("sep", "SEP Background+extract"),
                             ("sep_nodeblend", "SEP, deblend_cont=1 (no deblending)"),
                             ("floor", "numpy a.sum() (floor)")):
                s = r["contenders"][n]
                det = {"obsqc": f"{r['obsqc_sources']} ({r['obsqc_usable_sources']} usable)",
                       "sep": str(r["sep_objects"]), "sep_nodeblend": str(r["sep_nodeblend_objects"]),
                       "floor": ""}[n]
                t.add_row(f"{r['field']} {r['shape'][1]}x{r['shape'][0]}", label, _fmt(s["min_s"], 4),
                          _fmt(s["median_s"], 4), _fmt(s["max_s"], 4), _fmt(s["mpix_per_s_median"]), det)
            t.add_row("", "[b]obsqc / SEP speed[/b]", "", "", "", f"[b]{r['speedup_vs_sep']:.1f}x[/b]", "")
            t.add_row("", "obsqc / SEP-no-deblend speed", "", "", "", f"{r['speedup_vs_sep_nodeblend']:.1f}x", "")
            t.add_row("", "[b]obsqc time / floor time[/b]", "", "", "", f"[b]{r['x_floor']:.1f}x[/b]", "",
                      end_section=True)
        con.print(t)
        t = Table(title="per CCD: median seconds per step")
        t.add_column("field")
        steps = list(res["per_ccd"][0]["obsqc_steps_median_s"]) + [f"SEP {k}" for k in res["per_ccd"][0]["sep_steps_median_s"]]
        for s in steps:
            t.add_column(s, justify="right")
        for r in res["per_ccd"]:
            vals = list(r["obsqc_steps_median_s"].values()) + list(r["sep_steps_median_s"].values())
            t.add_row(r["field"], *[_fmt(v, 4) for v in vals])
        con.print(t)
    if res.get("decode"):
        t = Table(title="FITS decode of one CCD, one core (file in page cache)")
        for c in ("format", "file MiB", "obsqc read_ccd Mpix/s", "astropy getdata Mpix/s", "obsqc / astropy"):
            t.add_column(c, justify="right" if c != "format" else "left")
        for r in res["decode"]:
            t.add_row(r["format"], _fmt(r["file_mib"]), _fmt(r["obsqc"]["mpix_per_s_median"]),
                      _fmt(r["astropy"]["mpix_per_s_median"]), f"{r['speedup_vs_astropy']:.2f}x")
        con.print(t)
    if res.get("exposure"):
        e = res["exposure"]
        t = Table(title=f"whole exposure: {e['n_ccd']} CCDs, {_fmt(e['mpix'], 0)} Mpix, measure_file(threads="
                        f"{e['threads']}) on cpus {e['cpus']}")
        for c in ("dtype", "GiB", "wall s (median)", "min-max", "CPU s", "CPU/wall", "cold cache s", "Mpix/s",
                  "baseline RSS MiB", "peak above baseline MiB", "one CCD MiB", "peak / one CCD"):
            t.add_column(c, justify="right" if c != "dtype" else "left")
        for dt, d in e["by_dtype"].items():
            w = d["warm_cache"]
            t.add_row(dt, _fmt(d["file_gib"], 2), _fmt(w["median_s"], 2), f"{w['min_s']:.2f}-{w['max_s']:.2f}",
                      _fmt(d["cpu_s_median"], 1), f"{d['cpu_per_wall_median']:.2f}",
                      _fmt(d["cold_cache"]["wall_s"], 2) if d["cold_cache"] else "n/a",
                      _fmt(w["mpix_per_s_median"], 0), _fmt(d["baseline_rss_mib"], 0),
                      _fmt(d["peak_above_baseline_mib"], 0), _fmt(d["one_ccd_working_set_mib"], 0),
                      f"{d['peak_over_one_ccd']:.2f}x")
        con.print(t)
    if res.get("cold_start"):
        c = res["cold_start"]
        con.print(f"cold start (fresh process, cpus {c['cpus']}): warm_up() {c['empty_cache']['warm_up_s']:.2f} s "
                  f"with an empty numba cache, {c['filled_cache']['warm_up_s']:.2f} s with it filled "
                  f"(import {c['filled_cache']['import_s']:.2f} s): JIT cost {c['jit_cost_s']:.1f} s")
    if res.get("targets"):
        t = Table(title="targets")
        for c in ("target", "measured", "met"):
            t.add_column(c)
        for r in res["targets"]:
            t.add_row(r["target"], r["measured"], "yes" if r["met"] else "[red]NO[/red]")
        con.print(t)


def evaluate_targets(res: dict) -> list[dict]:
    out = []
    typ = next((r for r in res.get("per_ccd", []) if r["field"] == "typical"), None)
    if typ:
        out.append({"target": ">= 3x SEP on one core (typical field)",
                    "measured": f"{typ['speedup_vs_sep']:.1f}x", "met": typ["speedup_vs_sep"] >= 3.0})
        out.append({"target": "within 5x of the memory floor (typical field)",
                    "measured": f"{typ['x_floor']:.1f}x the floor's time", "met": typ["x_floor"] <= 5.0})
    e = res.get("exposure")
    if e and e["n_ccd"] == DECAM_CCDS:
        for dt, d in e["by_dtype"].items():
            w = d["warm_cache"]["median_s"]
            out.append({"target": f"DECam exposure ({dt}) read and measured <= 10 s on {len(e['cpus'])} cores",
                        "measured": f"{w:.2f} s median (page cache warm)"
                                    + (f", {d['cold_cache']['wall_s']:.2f} s cold" if d["cold_cache"] else ""),
                        "met": w <= 10.0})
            out.append({"target": f"peak RSS ({dt}) <= 2x one CCD's working set + constant",
                        "measured": f"{d['peak_above_baseline_mib']:.0f} MiB above baseline = "
                                    f"{d['peak_over_one_ccd']:.2f}x one CCD ({d['one_ccd_working_set_mib']:.0f} MiB)",
                        "met": d["peak_over_one_ccd"] <= 2.0})
    return out


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _shape(text: str) -> tuple[int, int]:
    """'NXxNY' as FITS writes it (NAXIS1 x NAXIS2), e.g. 2048x4096 -> numpy shape (4096, 2048)."""
    try:
        nx, ny = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAXIS1xNAXIS2, e.g. 2048x4096, not {text!r}") from None
    if nx < 64 or ny < 64:
        raise argparse.ArgumentTypeError("a CCD needs at least 64 pixels on each side")
    return ny, nx


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_detectors", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 1 min): 512x1024 CCD, 3 rounds, 2-CCD exposure, 1 run, no cold start")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per contender (default 9, quick 3)")
    p.add_argument("--size", type=_shape, default=None,
                   help="CCD size NAXIS1xNAXIS2 (default 2048x4096, quick 512x1024)")
    p.add_argument("--fields", default=None, help="comma list of typical,sparse,crowded (default all; quick typical)")
    p.add_argument("--per-ccd", action=argparse.BooleanOptionalAction, default=True,
                   help="per-CCD figures (obsqc vs SEP vs the floor)")
    p.add_argument("--decode", action=argparse.BooleanOptionalAction, default=True, help="FITS decode figures")
    p.add_argument("--decam", action=argparse.BooleanOptionalAction, default=True,
                   help="whole-exposure figures (62 CCDs; with --quick a 2-CCD exposure)")
    p.add_argument("--decam-ccds", type=int, default=None, help="CCDs in the exposure (default 62, quick 2)")
    p.add_argument("--decam-dtypes", default="float32,int16", help="comma list of float32,int16")
    p.add_argument("--decam-runs", type=int, default=None, help="timed page-cache-warm runs (default 3, quick 1)")
    p.add_argument("--decam-distinct", type=int, default=4, help="distinct simulated CCD images in the exposure")
    p.add_argument("--threads", type=int, default=2, help="measure_file threads for the whole exposure")
    p.add_argument("--cold", action=argparse.BooleanOptionalAction, default=None,
                   help="cold-start figure (JIT with an empty numba cache; default on, off with --quick)")
    p.add_argument("--core", type=int, default=None, help="core to pin the per-CCD figures to (default the first)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tmpdir", default=None, help="where the temporary FITS files go (default the system temp)")
    p.add_argument("--json", dest="json_out", default=None, help="write every figure and raw time as JSON here")
    # internal: child-process modes
    p.add_argument("--child", choices=("exposure", "one_ccd", "cold"), help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--cpus", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict | None:
    args = build_parser().parse_args(argv)
    if args.child:
        _child(args)
        return None
    quick = args.quick
    rounds = args.rounds or (3 if quick else 9)
    shape = args.size or (QUICK_SHAPE if quick else FULL_SHAPE)
    fields = (args.fields or ("typical" if quick else "typical,sparse,crowded")).split(",")
    n_ccd = args.decam_ccds or (2 if quick else DECAM_CCDS)
    runs = args.decam_runs or (1 if quick else 3)
    cold = (not quick) if args.cold is None else args.cold
    dtypes = [d for d in args.decam_dtypes.split(",") if d]
    for d in dtypes:
        if d not in ("float32", "int16"):
            raise SystemExit(f"--decam-dtypes: {d!r} is not float32 or int16")

    child_env = dict(os.environ)  # children run like the service would: no thread limits, all cores
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    all_cpus = os.sched_getaffinity(0)
    core = args.core if args.core is not None else min(all_cpus)
    os.environ.update(SINGLE_THREAD_ENV)  # before numba / sep are imported
    os.sched_setaffinity(0, {core})

    res: dict = {"meta": {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.bench_detectors " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "core": core, "rounds": rounds, "loadavg_start": os.getloadavg(), **machine_info(),
        "sep_settings": {"thresh_sigma": SEP_THRESH, "minarea": SEP_MINAREA, "err": "bkg.globalrms",
                         "pixstack": "default 300000, doubled only on overflow (see per_ccd[].sep_pixstack)"},
    }}
    from obsqc.detectors.warmup import warm_up

    res["meta"]["warm_up_s"] = warm_up()
    tmp = Path(tempfile.mkdtemp(prefix="obsqc-bench-", dir=args.tmpdir))
    try:
        t0 = time.perf_counter()
        flds = make_fields(shape, args.seed, fields)
        res["meta"]["make_fields_s"] = time.perf_counter() - t0
        phase = res["meta"]["phase_s"] = {}
        t0 = time.perf_counter()
        res["per_ccd"] = [bench_per_ccd(f, rounds) for f in flds] if args.per_ccd else []
        phase["per_ccd"] = time.perf_counter() - t0
        base = next((f for f in flds if f.name == "typical"), flds[0])
        if args.decode:
            t0 = time.perf_counter()
            res["decode"] = bench_decode(base, rounds, tmp)
            phase["decode"] = time.perf_counter() - t0
        if args.decam and dtypes:
            t0 = time.perf_counter()
            bases = [base] + [make_fields(shape, args.seed + 1000 * k, ["typical"])[0]
                              for k in range(1, max(1, min(args.decam_distinct, n_ccd)))]
            res["exposure"] = bench_exposure(bases, n_ccd, dtypes, runs, tmp, child_env, all_cpus, args.threads)
            del bases
            phase["exposure"] = time.perf_counter() - t0
        if cold:
            t0 = time.perf_counter()
            res["cold_start"] = bench_cold_start(child_env, all_cpus, tmp)
            phase["cold_start"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["meta"]["loadavg_end"] = os.getloadavg()
    res["targets"] = evaluate_targets(res)
    print_report(res)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    main()
