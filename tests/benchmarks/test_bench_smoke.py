"""Smoke test of the speed benchmark: the --quick path on a tiny CCD produces every figure.

It asserts that the figures exist and are sane numbers, never how fast anything is (timings on a
shared machine are noise; the figures belong in BENCHMARKS.md, see benchmarks/README.md).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sep")

REPO = Path(__file__).resolve().parents[2]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_benchmark_produces_the_figures(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "benchmarks.bench_detectors", "--quick", "--size", "256x256",
           "--decam-dtypes", "float32", "--tmpdir", str(tmp_path), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "obsqc / SEP speed" in proc.stdout and "targets" in proc.stdout

    res = json.loads(out.read_text())
    meta = res["meta"]
    assert meta["command"].startswith("python -m benchmarks.bench_detectors --quick")
    assert meta["nproc"] >= 1 and meta["date"] and meta["cpu_model"]

    (ccd,) = res["per_ccd"]
    assert ccd["field"] == "typical" and ccd["shape"] == [256, 256]
    for name in ("obsqc", "sep", "sep_nodeblend", "floor"):
        s = ccd["contenders"][name]
        assert s["n"] == 3 and s["min_s"] <= s["median_s"] <= s["max_s"]
        assert _positive(s["mpix_per_s_median"])
    assert _positive(ccd["speedup_vs_sep"]) and _positive(ccd["x_floor"])
    assert set(ccd["obsqc_steps_median_s"]) >= {"background", "sources", "gradients"}

    assert [d["format"] for d in res["decode"]] == ["float32", "int16", "rice_int16", "rice_float32"]
    assert all(_positive(d["speedup_vs_astropy"]) for d in res["decode"])

    exp = res["exposure"]["by_dtype"]["float32"]
    assert res["exposure"]["n_ccd"] == 2
    assert _positive(exp["warm_cache"]["median_s"]) and _positive(exp["one_ccd_working_set_mib"])
    assert exp["peak_rss_mib"] >= exp["baseline_rss_mib"] > 0
    assert all(run["n_ccds"] == 2 and run["n_skipped"] == 0 for run in exp["runs"])

    assert {t["target"].split(" (")[0] for t in res["targets"]} >= {">= 3x SEP on one core"}
    assert not list(tmp_path.glob("obsqc-bench-*")), "temporary FITS files were not removed"
