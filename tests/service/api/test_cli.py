"""``obsqc submit`` against a live API, and ``obsqc db upgrade`` on a fresh database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import sqlalchemy
from typer.testing import CliRunner

from obsqc.cli import app as cli
from obsqc.service.redis_embedded import free_tcp_port
from obsqc.service.store import get_exposure, record_verdict
from tests.service.api.conftest import TOKEN, write_fits

runner = CliRunner()


def _judge_when_received(state, verdicts: dict[str, tuple[str, list]], timeout=30.0) -> threading.Thread:
    """A stand-in worker: once each exposure is recorded, store its verdict."""

    def run():
        deadline = time.monotonic() + timeout
        todo = dict(verdicts)
        while todo and time.monotonic() < deadline:
            for exposure_id, (verdict, flags) in list(todo.items()):
                with state.sessions.begin() as s:
                    if get_exposure(s, exposure_id) is not None:
                        record_verdict(s, exposure_id, verdict=verdict, flags=flags, score=None, reason="test")
                        del todo[exposure_id]
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_submit_paths_and_wait_for_the_verdicts(server_url, state, data_root):
    a = write_fits(data_root / "a.fits", 1)
    b = write_fits(data_root / "b.fits", 2)
    judge = _judge_when_received(state, {"1": ("ok", []), "2": ("warn", [{"name": "source_orientation", "sigma": 3.4}])})
    result = runner.invoke(cli, ["submit", str(a), str(b), "--wait", "--timeout", "30", "--url", server_url],
                           env={"OBSQC_API_TOKEN": TOKEN})
    judge.join()
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[:2] == [["1", "queued", f"{server_url}/v1/exposures/1"], ["2", "queued", f"{server_url}/v1/exposures/2"]]
    assert sorted(lines[2:]) == [["1", "ok", "-"], ["2", "warn", "source_orientation"]]


def test_submit_upload_with_json_output_and_a_rejected_verdict_fails(server_url, state, tmp_path):
    f = write_fits(tmp_path / "elsewhere.fits", 3)  # not under a data root: only an upload works
    judge = _judge_when_received(state, {"3": ("rejected", [])})
    result = runner.invoke(cli, ["submit", str(f), "--upload", "--wait", "--timeout", "30", "--json",
                                 "--url", server_url, "--token", TOKEN])
    judge.join()
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["id"] == "3" and records[0]["status"] == "queued"
    assert records[1]["verdict"] == "rejected"


def test_submit_failures_exit_nonzero(server_url, tmp_path, data_root):
    outside = write_fits(tmp_path / "outside.fits", 4)
    inside = write_fits(data_root / "in.fits", 5)
    result = runner.invoke(cli, ["submit", str(outside), str(inside), "--url", server_url, "--token", TOKEN])
    assert result.exit_code == 1
    assert "path_not_allowed" in result.stderr
    assert result.stdout.splitlines() == [f"5\tqueued\t{server_url}/v1/exposures/5"]
    result = runner.invoke(cli, ["submit", str(inside), "--url", server_url, "--token", "wrong"])
    assert result.exit_code == 1 and "forbidden" in result.stderr
    result = runner.invoke(cli, ["submit", str(inside), "--url", server_url], env={"OBSQC_API_TOKEN": None})
    assert result.exit_code == 2 and "OBSQC_API_TOKEN" in result.stderr


def test_submit_wait_times_out(server_url, data_root):
    f = write_fits(data_root / "slow.fits", 6)
    result = runner.invoke(cli, ["submit", str(f), "--wait", "--timeout", "0.5", "--url", server_url, "--token", TOKEN])
    assert result.exit_code == 1 and "timed out" in result.stderr


def test_submit_cannot_reach_the_server(data_root):
    f = write_fits(data_root / "x.fits", 7)
    result = runner.invoke(cli, ["submit", str(f), "--url", f"http://127.0.0.1:{free_tcp_port()}", "--token", TOKEN])
    assert result.exit_code == 1 and "cannot reach" in result.stderr


def test_db_upgrade_migrates_a_fresh_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'obsqc.db'}"
    result = runner.invoke(cli, ["db", "upgrade"], env={"OBSQC_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert "at revision" in result.stdout
    engine = sqlalchemy.create_engine(url)
    try:
        assert {"exposures", "ccd_results", "alembic_version"} <= set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    again = runner.invoke(cli, ["db", "upgrade"], env={"OBSQC_DATABASE_URL": url})
    assert again.exit_code == 0 and again.stdout == result.stdout


def test_serve_runs_the_api_on_the_given_port(tmp_path, database_url, redis_url):
    port = free_tcp_port()
    env = {**os.environ, "OBSQC_HOME": str(tmp_path / "home"), "OBSQC_DATABASE_URL": database_url,
           "OBSQC_REDIS_URL": redis_url, "OBSQC_API_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-c", "from obsqc.cli import main; main()", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "obsqc serve did not answer /healthz"
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/exposures").json() == {"items": [], "next_cursor": None}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in err
