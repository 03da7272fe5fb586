"""Small synthetic exposures written as MEF FITS for service and CLI tests (no simulator needed)."""

from pathlib import Path

import numpy as np
from astropy.io import fits

from tests.detectors.test_sources import starfield


def write_exposure(path: Path, expnum: int | None, *, n_ccds=3, shape=(256, 256), seed=0, kind="normal") -> Path:
    """A starfield exposure; ``kind`` in normal, elongated (sources tilted at 30 deg), striped (background)."""
    cards = {"INSTRUME": "TESTCAM", "FILTER": "r", "MJD-OBS": 60000.0 + seed, "EXPTIME": 30.0}
    if expnum is not None:
        cards["EXPNUM"] = expnum
    hdus = [fits.PrimaryHDU(header=fits.Header(cards))]
    for c in range(n_ccds):
        s = seed * 100 + c
        if kind == "elongated":
            img = starfield(shape=shape, n=60, seed=s, sigma_x=2.6, sigma_y=1.5, angle=np.deg2rad(30))
        else:
            img = starfield(shape=shape, n=60, seed=s, sigma_x=1.8, sigma_y=1.8)
        if kind == "striped":
            img += (0.8 * np.sin(np.arange(shape[0]) / 3.0))[:, None].astype(np.float32)
        hdus.append(fits.ImageHDU((img + 100.0).astype(np.float32), name=f"C{c}"))
    fits.HDUList(hdus).writeto(path)
    return path


def write_night(folder: Path, n_normal=8) -> dict[str, Path]:
    """Normal exposures plus one elongated and one striped, a truncated file and a non-FITS file."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"n{i}": write_exposure(folder / f"n{i}.fits", 100 + i, seed=i) for i in range(n_normal)}
    files["elongated"] = write_exposure(folder / "elongated.fits", 900, seed=50, kind="elongated")
    files["striped"] = write_exposure(folder / "striped.fits", 901, seed=51, kind="striped")
    good = files["n0"].read_bytes()
    (folder / "truncated.fits").write_bytes(good[: len(good) // 2])
    (folder / "notes.fits").write_text("this is not a FITS file\n")
    files["truncated"] = folder / "truncated.fits"
    files["notes"] = folder / "notes.fits"
    return files
