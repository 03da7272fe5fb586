"""FITS ingest: what real archives hold is read, every malformed file is refused with the right reason."""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import logging
import os
import pickle
import tempfile
import tracemalloc
import warnings
import weakref

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obsqc.service.errors import INVALID_EXPOSURE_REASONS, InvalidExposureError, ObsQCError
from obsqc.service.fits_ingest import (
    CCDImage,
    ExposureHeader,
    IngestLimits,
    open_exposure,
)

RNG = np.random.default_rng(20240611)
PRIMARY = {"EXPNUM": 123456, "INSTRUME": "DECam", "FILTER": "r", "MJD-OBS": 56546.14, "EXPTIME": 90.0}


# ---- helpers -----------------------------------------------------------------------------------


def image(shape=(40, 64), dtype=np.float32, lo=0, hi=1000):
    a = RNG.uniform(lo, hi, shape)
    return a.astype(dtype)


def primary_hdu(cards=PRIMARY, data=None):
    hdu = fits.PrimaryHDU(data)
    for k, v in (cards or {}).items():
        hdu.header[k] = v
    return hdu


def ext(data, name=None, **cards):
    hdu = fits.ImageHDU(data, name=name)
    for k, v in cards.items():
        hdu.header[k.replace("_", "-")] = v
    return hdu


def write(path, *hdus, primary=None):
    """Write an MEF: ``primary`` (default: exposure cards, no data) then the given extensions."""
    fits.HDUList([primary if primary is not None else primary_hdu(), *hdus]).writeto(path)
    return path


def mef(tmp_path, n=3, shape=(40, 64), name="exp.fits"):
    arrays = [image(shape) for _ in range(n)]
    path = write(tmp_path / name, *(ext(a, f"N{i + 1}") for i, a in enumerate(arrays)))
    return path, arrays


def hdu_offsets(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tests' own hostile headers
        with fits.open(path, disable_image_compression=True) as hl:
            return [(h._header_offset, h._data_offset, h._data_size) for h in hl]


def insert_cards(path, hdu_index, cards: list[bytes]):
    """Insert raw 80-byte cards before END of one header, as a non-standard writer would."""
    raw = path.read_bytes()
    hoff, doff, _ = hdu_offsets(path)[hdu_index]
    header = raw[hoff:doff]
    end = next(i for i in range(0, len(header), 80) if header[i : i + 8] == b"END     ")
    body = header[:end] + b"".join(c.ljust(80)[:80] for c in cards) + b"END".ljust(80)
    body += b" " * (-len(body) % 2880)
    path.write_bytes(raw[:hoff] + body + raw[doff:])


def replace_card(path, old: bytes, new: bytes):
    raw = path.read_bytes()
    i = raw.index(old)
    path.write_bytes(raw[:i] + new.ljust(80)[:80] + raw[i + 80 :])


def expect_error(reason, path, ccd=None, **kwargs) -> InvalidExposureError:
    with pytest.raises(InvalidExposureError) as info:
        with open_exposure(path, **kwargs) as reader:
            for _ in reader.iter_ccds():
                pass
    err = info.value
    assert err.reason == reason, err
    assert err.ccd == ccd
    assert isinstance(err, ValueError) and isinstance(err, ObsQCError)
    assert err.reason in INVALID_EXPOSURE_REASONS and str(err) == err.message
    return err


def read_all(path, **kwargs) -> tuple[ExposureHeader, list[CCDImage]]:
    with open_exposure(path, **kwargs) as reader:
        return reader.header, list(reader.iter_ccds())


# ---- the happy path ----------------------------------------------------------------------------


def test_mef_header_and_ccds(tmp_path):
    path, arrays = mef(tmp_path, n=3)
    header, ccds = read_all(path)
    assert header == ExposureHeader("123456", "DECam", "r", 56546.14, 90.0, str(path), 3, ("N1", "N2", "N3"))
    for i, (ccd, a) in enumerate(zip(ccds, arrays)):
        assert (ccd.name, ccd.index, ccd.hdu_index) == (f"N{i + 1}", i, i + 1)
        assert ccd.data.dtype == np.float32 and ccd.data.flags.c_contiguous
        assert ccd.data.shape == (40, 64)  # rows = NAXIS2 = y, columns = NAXIS1 = x
        np.testing.assert_array_equal(ccd.data, a)
        assert isinstance(ccd.header, fits.Header) and ccd.header["EXTNAME"] == f"N{i + 1}"
        assert ccd.saturate is None


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64]
)
def test_every_bitpix(tmp_path, dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    a = image(dtype=dtype, lo=info.min, hi=info.max) if info else image(dtype=dtype, lo=-1e6, hi=1e6)
    if info:
        a.flat[:2] = info.min, info.max
    path = write(tmp_path / "x.fits", ext(a, "C1"))
    (ccd,) = read_all(path)[1]
    expected = fits.getdata(path, 1).astype(np.float32)
    np.testing.assert_array_equal(ccd.data, expected)
    np.testing.assert_array_equal(ccd.data, a.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64])
def test_bzero_bscale(tmp_path, dtype):
    raw = image(dtype=dtype, lo=0, hi=100)
    path = write(tmp_path / "x.fits", ext(raw, "C1", BSCALE=0.25, BZERO=1000.5))
    (ccd,) = read_all(path)[1]
    np.testing.assert_allclose(ccd.data, 1000.5 + 0.25 * raw.astype(np.float64), rtol=1e-6)
    np.testing.assert_allclose(ccd.data, fits.getdata(path, 1), rtol=1e-6)


def test_unsigned_16_bit(tmp_path):
    a = image(dtype=np.uint16, lo=0, hi=65535)
    a[0, :3] = 0, 32768, 65535
    path = write(tmp_path / "x.fits", ext(a, "C1"))
    assert fits.getheader(path, 1)["BZERO"] == 32768
    (ccd,) = read_all(path)[1]
    np.testing.assert_array_equal(ccd.data, a.astype(np.float32))
    assert ccd.data.min() >= 0 and ccd.data[0, 2] == 65535


@pytest.mark.parametrize("bitpix_dtype, blank", [(np.int16, -32768), (np.int32, -999), (np.uint8, 255)])
def test_blank_becomes_nan(tmp_path, bitpix_dtype, blank):
    raw = image(dtype=bitpix_dtype, lo=0, hi=100)
    raw[3, 4] = raw[10, :] = blank
    path = write(tmp_path / "x.fits", ext(raw, "C1", BLANK=blank, BSCALE=2.0, BZERO=-3.0))
    (ccd,) = read_all(path)[1]
    mask = raw == blank
    assert np.isnan(ccd.data[mask]).all() and np.isfinite(ccd.data[~mask]).all()
    np.testing.assert_allclose(ccd.data[~mask], 2.0 * raw[~mask] - 3.0)


def test_float_infinities_become_nan(tmp_path):
    a = image()
    a[0, 0], a[1, 1], a[2, 2] = np.inf, -np.inf, np.nan
    (ccd,) = read_all(write(tmp_path / "x.fits", ext(a, "C1")))[1]
    assert np.isnan(ccd.data[[0, 1, 2], [0, 1, 2]]).all() and np.isfinite(ccd.data).sum() == a.size - 3


def test_rice_compressed(tmp_path):
    ints = image(dtype=np.int16, lo=-2000, hi=30000)
    uints = image(dtype=np.uint16, lo=0, hi=65535)
    floats = image(dtype=np.float32)
    path = write(
        tmp_path / "x.fits.fz",
        fits.CompImageHDU(ints, name="N1", compression_type="RICE_1"),
        fits.CompImageHDU(uints, name="N2", compression_type="RICE_1"),
        fits.CompImageHDU(floats, name="N3", compression_type="GZIP_2"),
        fits.CompImageHDU(ints),  # astropy names it COMPRESSED_IMAGE: no name of its own
    )
    header, ccds = read_all(path)
    assert header.ccd_names == ("N1", "N2", "N3", "HDU4")
    np.testing.assert_array_equal(ccds[0].data, ints.astype(np.float32))
    np.testing.assert_array_equal(ccds[1].data, uints.astype(np.float32))
    np.testing.assert_array_equal(ccds[2].data, fits.getdata(path, 3))  # quantized floats, as astropy decodes them
    assert ccds[0].header["BITPIX"] == 16 and "ZIMAGE" not in ccds[0].header  # the image form of the header


def test_compressed_with_datasec_and_blank(tmp_path):
    a = image(shape=(70, 80), dtype=np.int16, lo=0, hi=1000)
    a[10, 10] = -1
    hdr = fits.Header({"BLANK": -1, "DATASEC": "[5:70,3:68]", "SATURATE": 900})
    path = write(tmp_path / "x.fits", fits.CompImageHDU(a, header=hdr, name="N1", compression_type="RICE_1"))
    (ccd,) = read_all(path)[1]
    expected = a[2:68, 4:70].astype(np.float32)
    expected[a[2:68, 4:70] == -1] = np.nan
    np.testing.assert_array_equal(ccd.data, expected)
    assert ccd.saturate == 900.0


def test_single_hdu_image(tmp_path):
    a = image()
    path = write(tmp_path / "single.fits", primary=primary_hdu(data=a))
    header, (ccd,) = read_all(path)
    assert header.n_ccds == 1 and header.ccd_names == ("HDU0",) and header.exposure_id == "123456"
    assert ccd.hdu_index == 0
    np.testing.assert_array_equal(ccd.data, a)


def test_empty_primary_then_one_extension_with_the_keywords(tmp_path):
    a = image(dtype=np.int16, lo=0, hi=1000)
    path = write(tmp_path / "x.fits", ext(a, "SCI", OBSID="ct4m2013", INSTRUME="MegaCam", BAND="i", EXPTIME=30),
                 primary=primary_hdu(cards={}))
    header, (ccd,) = read_all(path)
    assert (header.exposure_id, header.instrument, header.band, header.exptime_s, header.mjd) == (
        "ct4m2013", "MegaCam", "i", 30.0, None)
    assert ccd.name == "SCI" and ccd.hdu_index == 1


def test_exposure_id_sources(tmp_path):
    path = write(tmp_path / "c4d_130911_033522_ori.fits.fz", ext(image(), "N1"), primary=primary_hdu(cards={}))
    assert open_exposure(path, id_from_filename=True).header.exposure_id == "c4d_130911_033522_ori"
    assert open_exposure(path, exposure_id="given-7").header.exposure_id == "given-7"
    expect_error("missing_exposure_id", path)
    path2 = write(tmp_path / "y.fits", ext(image(), "N1"), primary=primary_hdu(cards={"EXPID": 77, "EXPNUM": 5}))
    assert open_exposure(path2, exposure_id="wins").header.exposure_id == "wins"
    assert open_exposure(path2, id_from_filename=True).header.exposure_id == "5"  # EXPNUM before EXPID, header before name
    with pytest.raises(ValueError):
        open_exposure(path2, exposure_id="  ")


def test_missing_metadata_defaults_and_warns(tmp_path, caplog):
    path = write(tmp_path / "x.fits", ext(image(), "N1"), primary=primary_hdu(cards={"EXPNUM": 1, "MJD-OBS": "soon"}))
    with caplog.at_level(logging.WARNING, logger="obsqc.service.fits_ingest"):
        reader = open_exposure(path)
    h = reader.header
    assert (h.instrument, h.band, h.mjd, h.exptime_s) == ("unknown", "unknown", None, None)
    assert any("INSTRUME" in w for w in reader.warnings) and any("MJD-OBS" in w for w in reader.warnings)
    assert "INSTRUME" in caplog.text and "FILTER or BAND" in caplog.text
    reader.close()


def test_non_standard_header_cards(tmp_path):
    a = image(dtype=np.int16, lo=0, hi=1000)
    path = write(tmp_path / "x.fits", ext(a, "N1"), primary=primary_hdu(cards={"INSTRUME": "X", "FILTER": "g"}))
    hostile = [
        b"expnum  = 4242 / a lower-case keyword",
        b"BAD     = 1.2.3",
        b"NOEQUAL  12",
        b"HIERARCH ESO DET CHIP NAME = 'ccd60'",
        b"KEY WITH= 3",
        b"STR     = 'unterminated",
        b"FLT     = 1.5D3",
        "COMMENT  caf\u00e9 non-ASCII".encode("latin-1"),
        b"SATURATE=60000",
    ]
    insert_cards(path, 0, hostile)
    insert_cards(path, 1, hostile + [b"BSCALE  = 2", b"BZERO   = 1.0E1"])
    before = path.read_bytes()
    with open_exposure(path) as reader:
        assert reader.header.exposure_id == "4242"
        assert reader.primary_header["FLT"] == 1500.0
        (ccd,) = reader.iter_ccds()
    np.testing.assert_array_equal(ccd.data, 2.0 * a + 10.0)
    assert ccd.saturate == 60000.0 and ccd.header["FLT"] == 1500.0
    assert path.read_bytes() == before  # never rewritten


def test_datasec_crops_overscan(tmp_path, caplog):
    a = image(shape=(70, 80), dtype=np.int16, lo=0, hi=1000)
    path = write(
        tmp_path / "x.fits",
        ext(a, "N1", DATASEC="[5:70,3:68]"),
        ext(a, "N2", DATASEC="[70:5, 68:3]"),  # reversed ranges crop the same region
        ext(a, "N3", DATASEC="[1:2048,1:4096]"),  # outside the image: ignored
        ext(a, "N4", DATASEC="1:70,1:60"),  # malformed: ignored
        ext(a.astype(np.float32), "N5", DATASEC="[1:80,11:50]"),  # whole rows of float32: read in place
    )
    with caplog.at_level(logging.WARNING):
        header, ccds = read_all(path)
    crop = a[2:68, 4:70].astype(np.float32)
    np.testing.assert_array_equal(ccds[0].data, crop)
    np.testing.assert_array_equal(ccds[1].data, crop)
    np.testing.assert_array_equal(ccds[2].data, a)
    np.testing.assert_array_equal(ccds[3].data, a)
    np.testing.assert_array_equal(ccds[4].data, a[10:50])
    assert all(c.data.flags.c_contiguous for c in ccds)
    assert "'N3': ignored DATASEC" in caplog.text and "'N4': ignored DATASEC" in caplog.text


def test_saturation_keywords(tmp_path):
    path = write(
        tmp_path / "x.fits",
        ext(image(), "A", SATURATE=1234.5),
        ext(image(), "B", SATURATA=50000, SATURATB=48000.0),
        ext(image(), "C", SATURATE="high"),
        ext(image(), "D"),
    )
    assert [c.saturate for c in read_all(path)[1]] == [1234.5, 48000.0, None, None]


def test_non_ccd_hdus_are_skipped(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(3.0))], name="CAT")
    path = write(
        tmp_path / "x.fits",
        ext(image(), "N1"),
        ext(image(dtype=np.uint8), "MASK"),
        ext(image(), "N1_WEIGHT"),
        ext(image(), "dq-2"),
        ext(image(), "VARIANCE"),
        table,
        ext(None, "EMPTY"),
        ext(image(), "MASKED"),  # not an auxiliary token: a CCD
        ext(image(), "N1"),  # repeated name: made unique
    )
    header, ccds = read_all(path)
    assert header.ccd_names == ("N1", "MASKED", "N1_HDU9")
    assert [c.hdu_index for c in ccds] == [1, 8, 9]


def test_squeezes_a_cube_with_one_plane(tmp_path):
    a = image(shape=(1, 40, 64))
    (ccd,) = read_all(write(tmp_path / "x.fits", ext(a, "N1")))[1]
    np.testing.assert_array_equal(ccd.data, a[0])


def test_trailing_bytes_and_missing_padding(tmp_path, caplog):
    path, arrays = mef(tmp_path, n=1, shape=(50, 50))  # 10000 bytes of data: 1520 bytes of padding
    raw = path.read_bytes()
    path.write_bytes(raw + b"\0" * 2880)
    assert read_all(path)[0].n_ccds == 1
    path.write_bytes(raw + b"this is not an extension")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(read_all(path)[1][0].data, arrays[0])
    assert "ignored 24 bytes" in caplog.text
    path.write_bytes(raw[:-1000])  # cut in the padding only: the data are complete
    np.testing.assert_array_equal(read_all(path)[1][0].data, arrays[0])


def test_nextend_and_missing_end_card(tmp_path):
    path, arrays = mef(tmp_path, n=2)
    replace_card(path, b"EXTEND  =                    T", b"NEXTEND =                    5")
    header_only = b"".join(c.ljust(80) for c in [b"XTENSION= 'IMAGE   '", b"BITPIX  = 16", b"NAXIS   = 0"])
    path.write_bytes(path.read_bytes() + header_only.ljust(2880))  # a final header without END
    with open_exposure(path) as reader:
        assert reader.header.n_ccds == 2
        assert any("NEXTEND = 5" in w for w in reader.warnings)
        assert any("no END card" in w for w in reader.warnings)


def test_iter_ccds_is_lazy_and_keeps_no_references(tmp_path):
    path, arrays = mef(tmp_path, n=24, shape=(64, 64))
    with open_exposure(path) as reader:
        calls = []
        real_read = reader.read_ccd
        reader.read_ccd = lambda i: calls.append(i) or real_read(i)
        it = reader.iter_ccds()
        assert calls == []
        refs = []
        for k, ccd in enumerate(it):
            assert calls == list(range(k + 1))  # read on demand, no read-ahead
            refs.append(weakref.ref(ccd.data))
            assert [r() is None for r in refs[:-1]] == [True] * k  # only the current array is alive
            np.testing.assert_array_equal(ccd.data, arrays[k])
        del ccd
        assert all(r() is None for r in refs)


def test_read_ccd_from_threads_and_processes(tmp_path):
    path, arrays = mef(tmp_path, n=8, shape=(300, 200))
    with open_exposure(path) as reader:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            ccds = list(pool.map(reader.read_ccd, range(8)))
        assert [c.index for c in ccds] == list(range(8))
        for c, a in zip(ccds, arrays):
            np.testing.assert_array_equal(c.data, a)
        clone = pickle.loads(pickle.dumps(reader))  # what a process pool does with the reader
        np.testing.assert_array_equal(clone.read_ccd(5).data, arrays[5])
        clone.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read_ccd(0)
    with pytest.raises(IndexError):
        open_exposure(path).read_ccd(8)


def test_read_ccd_in_worker_processes(tmp_path):
    path, arrays = mef(tmp_path, n=3)
    with open_exposure(path) as reader, concurrent.futures.ProcessPoolExecutor(2) as pool:
        ccds = list(pool.map(reader.read_ccd, range(3)))
    for c, a in zip(ccds, arrays):
        np.testing.assert_array_equal(c.data, a)


def test_reader_in_another_process_refuses_a_replaced_file(tmp_path):
    path, _ = mef(tmp_path, n=2)
    with open_exposure(path) as reader:
        state = pickle.dumps(reader)
    path.unlink()
    mef(tmp_path, n=2)  # same name, another file
    err = pytest.raises(InvalidExposureError, pickle.loads(state).read_ccd, 0).value
    assert err.reason == "unreadable" and "changed" in err.message


def test_hostile_names_read_normally_and_nothing_is_written(tmp_path):
    sub = tmp_path / "a b" / "c"
    sub.mkdir(parents=True)
    names = ["-rf.fits", "caf\u00e9 \u2603.fits", "line\nbreak.fits", "..fits", "$(touch x).fits"]
    for n in names:
        write(sub / n, ext(image(), "N1"), primary=primary_hdu(cards={}))

    def snapshot():
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))

    before = snapshot()
    for n in names:
        dotted = tmp_path / "a b" / "c" / ".." / "c" / n  # '..' resolves normally
        header, (ccd,) = read_all(dotted, id_from_filename=True)
        assert header.path == str(sub / n) and ccd.data.shape == (40, 64)
        assert header.exposure_id == n[: -len(".fits")].replace("\n", "?")  # control characters masked
    assert snapshot() == before
    expect_error("not_found", str(tmp_path / "nul\0byte.fits"))


# ---- malformed input ---------------------------------------------------------------------------


def test_not_found_directory_and_special_files(tmp_path):
    err = expect_error("not_found", tmp_path / "missing.fits")
    assert "missing.fits" in err.message and err.path == str(tmp_path / "missing.fits")
    expect_error("not_a_file", tmp_path)
    fifo = tmp_path / "pipe.fits"
    os.mkfifo(fifo)
    expect_error("not_a_file", fifo)  # and does not block on open


def test_unreadable(tmp_path, monkeypatch):
    path, _ = mef(tmp_path, n=1)
    import obsqc.service.fits_ingest as ingest

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ingest.os, "open", denied)
    err = expect_error("unreadable", path)
    assert "permission" in err.message.lower()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_permissions(tmp_path):
    path, _ = mef(tmp_path, n=1)
    path.chmod(0)
    expect_error("unreadable", path)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty"),
        (b"just some notes\nabout a night\n" * 200, "SIMPLE"),
        (bytes(RNG.integers(0, 256, 10_000, dtype=np.uint8)), "SIMPLE"),
        (gzip.compress(b"SIMPLE  =                    T" + b" " * 5000), "gunzip"),
        (b"XTENSION= 'IMAGE   '".ljust(2880), "extension header"),
    ],
    ids=["empty", "text", "random-bytes", "gzipped", "extension-first"],  # stable ids for pytest-xdist
)
def test_not_fits(tmp_path, content, words):
    path = tmp_path / "x.fits"
    path.write_bytes(content)
    assert words in expect_error("not_fits", path).message


def test_truncated_at_open(tmp_path):
    path, _ = mef(tmp_path, n=3, shape=(100, 100))
    raw = path.read_bytes()
    (_, p_data, _), (h1, d1, _), *_, (h3, d3, _) = hdu_offsets(path)
    size3 = 100 * 100 * 4  # astropy's _data_size includes the padding
    cuts = {
        "primary header": 1000,
        "extension header": h1 + 1200,
        "header boundary": d1 - 80 * 3,
        "last data": d3 + size3 // 2,
        "one byte short": d3 + size3 - 1,
    }
    for where, cut in cuts.items():
        path.write_bytes(raw[:cut])
        err = expect_error("truncated", path)
        assert "truncated" in err.message or "ends inside" in err.message, where
        assert "copy it again" in err.message.lower()


def test_truncated_after_open(tmp_path):
    path, _ = mef(tmp_path, n=2, shape=(100, 100))
    with open_exposure(path) as reader:
        os.truncate(path, hdu_offsets(path)[2][1] + 100)
        reader.read_ccd(0)
        err = pytest.raises(InvalidExposureError, reader.read_ccd, 1).value
    assert (err.reason, err.ccd) == ("truncated", "N2")


def test_no_image_hdus(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(3.0))], name="CAT")
    err = expect_error("no_image_hdus", write(tmp_path / "t.fits", table))
    assert "BINTABLE extension 'CAT'" in err.message
    expect_error("no_image_hdus", write(tmp_path / "m.fits", ext(image(), "MASK")))
    expect_error("no_image_hdus", write(tmp_path / "e.fits"))


def test_bad_dimensions(tmp_path):
    err = expect_error("bad_dimensions", write(tmp_path / "a.fits", ext(image(), "N1"), ext(np.arange(4096.0), "N2")),
                       ccd="N2")
    assert "1-D" in err.message
    err = expect_error("bad_dimensions", write(tmp_path / "b.fits", ext(image(shape=(3, 40, 64)), "N1")), ccd="N1")
    assert "64x40x3" in err.message


def test_all_nan_ccd_can_be_skipped(tmp_path):
    blank = np.full((40, 64), -1, np.int16)
    path = write(
        tmp_path / "x.fits",
        ext(image(), "N1"),
        ext(np.full((40, 64), np.nan, np.float32), "N2"),
        ext(blank, "N3", BLANK=-1),
        ext(image(), "N4"),
    )
    with open_exposure(path) as reader:
        for i, name in ((1, "N2"), (2, "N3")):
            err = pytest.raises(InvalidExposureError, reader.read_ccd, i).value
            assert (err.reason, err.ccd) == ("all_nan", name) and name in err.message
        it = reader.iter_ccds()
        got = []
        errors = []
        while True:  # a caller records the bad CCD and goes on
            try:
                got.append(next(it).name)
            except InvalidExposureError as e:
                errors.append(e.ccd)
            except StopIteration:
                break
        assert got == ["N1", "N4"] and errors == ["N2", "N3"]
        assert [c.name for c in reader.iter_ccds(skip_invalid=True)] == ["N1", "N4"]
        assert [e.ccd for e in reader.skipped] == ["N2", "N3"]
        with pytest.raises(InvalidExposureError):
            list(reader.iter_ccds())


def test_absurd_naxis_is_refused_before_allocating(tmp_path):
    hdr = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", 200_000), ("NAXIS2", 300_000),
                       ("EXPNUM", 1)])
    path = tmp_path / "huge.fits"
    path.write_bytes(hdr.tostring().encode() + b"\0" * 2880)
    tracemalloc.start()
    try:
        err = expect_error("too_large", path, ccd="HDU0")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20 and "200000x300000" in err.message


def test_absurd_compressed_hdu_is_refused_before_reading(tmp_path):
    cards = [("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 8), ("NAXIS2", 10**7),
             ("PCOUNT", 0), ("GCOUNT", 1), ("TFIELDS", 1), ("TTYPE1", "COMPRESSED_DATA"), ("TFORM1", "1PB(0)"),
             ("ZIMAGE", True), ("ZBITPIX", 16), ("ZNAXIS", 2), ("ZNAXIS1", 64), ("ZNAXIS2", 40), ("EXTNAME", "N1")]
    path = tmp_path / "x.fits.fz"
    path.write_bytes(primary_hdu().header.tostring().encode() + fits.Header(cards).tostring().encode())
    err = expect_error("too_large", path, ccd="N1", limits=IngestLimits(max_pixels_per_ccd=64 * 40))
    assert "80,000,000 bytes" in err.message
    expect_error("truncated", path)  # within the default limits: the missing data are reported


def test_limits(tmp_path):
    path, _ = mef(tmp_path, n=4)
    expect_error("too_many_ccds", path, limits=IngestLimits(max_ccds=3))
    expect_error("too_large", path, limits=IngestLimits(max_file_bytes=10_000))
    expect_error("too_large", path, limits=IngestLimits(max_hdus=4))
    expect_error("too_large", path, ccd="N1", limits=IngestLimits(max_pixels_per_ccd=40 * 64 - 1))
    assert read_all(path, limits=IngestLimits(max_ccds=4, max_pixels_per_ccd=40 * 64))[0].n_ccds == 4


def test_too_small(tmp_path):
    err = expect_error("too_small", write(tmp_path / "a.fits", ext(image(), "N1"), ext(image(shape=(4000, 12)), "N4")),
                       ccd="N4")
    assert "CCD 'N4' is 12x4000 px; the detectors need at least 32x32" in err.message
    err = expect_error("too_small", write(tmp_path / "b.fits", ext(image(), "N1", DATASEC="[1:64,1:20]")), ccd="N1")
    assert "after DATASEC" in err.message


def test_bad_structural_header(tmp_path):
    path, _ = mef(tmp_path, n=2)
    replace_card(path, b"BITPIX  =                  -32", b"BITPIX  =                   12")
    assert "BITPIX" in expect_error("bad_header", path).message
    path2 = write(tmp_path / "s.fits", ext(image(dtype=np.int16), "N1", BSCALE=0))
    expect_error("bad_header", path2, ccd="N1")


def test_errors_pickle_and_serialize():
    err = InvalidExposureError("x.fits: CCD 'N2' ...", reason="all_nan", ccd="N2", path="/d/x.fits")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.message, back.ccd, back.path) == ("all_nan", err.message, "N2", "/d/x.fits")
    assert err.to_dict() == {"reason": "all_nan", "message": err.message, "ccd": "N2"}
    with pytest.raises(TypeError):
        InvalidExposureError("a message without a reason")


# ---- properties ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(["u1", "i2", "i4", "i8", "f4", "f8"]),
    ny=st.integers(32, 90),
    nx=st.integers(32, 90),
    scaled=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_matches_astropy(dtype, ny, nx, scaled, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-100, 100, (ny, nx)) if dtype[0] == "f" else rng.integers(0, 120, (ny, nx))
    hdu = ext(a.astype(dtype), "N1", **({"BSCALE": 0.5, "BZERO": -7.0} if scaled else {}))
    with tempfile.TemporaryDirectory() as d:
        path = write(os.path.join(d, "x.fits"), hdu)
        (ccd,) = read_all(path)[1]
        np.testing.assert_allclose(ccd.data, fits.getdata(path, 1), rtol=1e-6)


def _sample_file() -> bytes:
    buf = io.BytesIO()
    fits.HDUList([primary_hdu(), ext(image(shape=(40, 40), dtype=np.int16), "N1", BLANK=0),
                  fits.CompImageHDU(image(shape=(40, 40), dtype=np.int16), name="N2", compression_type="RICE_1"),
                  ext(image(shape=(40, 40)), "N3")]).writeto(buf)
    return buf.getvalue()


SAMPLE = _sample_file()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(SAMPLE)), flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1),
                                                                 st.integers(0, 255)), max_size=3))
def test_damaged_files_raise_only_invalid_exposure(cut, flips):
    raw = bytearray(SAMPLE)
    for pos, value in flips:
        raw[pos] = value
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.fits")
        with open(path, "wb") as f:
            f.write(bytes(raw[:cut]))
        try:
            with open_exposure(path) as reader:
                for i in range(reader.header.n_ccds):
                    try:
                        ccd = reader.read_ccd(i)
                    except InvalidExposureError as e:
                        assert e.ccd is not None
                        continue
                    assert ccd.data.dtype == np.float32 and ccd.data.ndim == 2
        except InvalidExposureError as e:
            assert e.reason in INVALID_EXPOSURE_REASONS
