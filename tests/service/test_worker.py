"""Workers against real parts: a real redis-server, real databases, ``obsqc worker`` in a subprocess.

Exposures are simulated, recorded as received and queued exactly as the API does; the workers judge
them; the tests read the verdict store. Killing a work horse mid-job shows a job is retried and its
exposure judged exactly once; SIGTERM shows a worker finishes its job before it stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq.registry import FailedJobRegistry

from obsqc.service.queue import connect, enqueue_exposure, make_queue
from obsqc.service.settings import Settings
from obsqc.service.store import get_exposure, make_engine, make_sessionmaker, record_received, upgrade
from obsqc.sim import simulate_exposure


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
    env.update(
        OBSQC_HOME=str(settings.home), OBSQC_REDIS_URL=settings.redis_url, OBSQC_DATABASE_URL=settings.database_url,
        OBSQC_MIN_REFERENCE_EXPOSURES=str(settings.min_reference_exposures),
        OBSQC_JOB_RETRIES=str(settings.job_retries), OBSQC_RETRY_BACKOFF_S="[0]",
        OBSQC_WRITE_PLOTS="true" if settings.write_plots else "false",
    )
    return env


class Service:
    """Settings, the store and the queue of one test."""

    def __init__(self, tmp_path: Path, redis_url: str, database_url: str, **overrides):
        self.settings = Settings(home=tmp_path / "home", redis_url=redis_url, database_url=database_url,
                                 min_reference_exposures=3, retry_backoff_s=[0], **overrides)
        upgrade(self.settings.database_url)
        self.engine = make_engine(self.settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.redis = connect(redis_url)
        self.queue = make_queue(self.redis)
        self.files = tmp_path / "files"
        self.files.mkdir()

    def exposure(self, seed: int, size: str = "tiny", **kwargs) -> Path:
        path = self.files / f"exp{seed}.fits"
        simulate_exposure(size=size, seed=seed, exposure_id=1000 + seed, **kwargs).writeto(path)
        return path

    def submit(self, exposure_id: str, path: Path) -> None:
        with self.sessions() as session, session.begin():
            record_received(session, exposure_id, path=str(path))
        enqueue_exposure(self.queue, exposure_id, str(path), self.settings)

    def row(self, exposure_id: str):
        with self.sessions() as session:
            return get_exposure(session, exposure_id)

    def wait_for(self, exposure_id: str, predicate, timeout_s: float = 60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = self.row(exposure_id)
            if row is not None and predicate(row):
                return row
            time.sleep(0.05)
        raise AssertionError(f"exposure {exposure_id} did not reach the expected state in {timeout_s} s: {self.row(exposure_id)}")

    def close(self):
        self.engine.dispose()
        self.redis.close()


@pytest.fixture
def service(tmp_path, redis_url):
    svc = Service(tmp_path, redis_url, f"sqlite:///{tmp_path / 'obsqc.db'}")
    yield svc
    svc.close()


def _start_workers(settings: Settings, n: int = 1) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "obsqc", "worker", "-n", str(n), "--log-level", "WARNING"],
                               env=_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    assert "ready" in line, line
    return process


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


def _grandchildren(pid: int) -> set[int]:
    return {g for c in _children(pid) for g in _children(c)}


def _work_horse(supervisor: int, before: set[int], timeout_s: float = 30.0) -> int:
    """The pid of the work horse: a grandchild of the supervisor that was not there ``before`` the job
    (the workers' other children, e.g. RQ's scheduler, were)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        horses = _grandchildren(supervisor) - before
        if horses:
            return min(horses)
        time.sleep(0.01)
    raise AssertionError("no work horse appeared")


def _settled_grandchildren(pid: int) -> set[int]:
    """The workers' own children (RQ's scheduler) once they have started."""
    seen: set[int] = set()
    for _ in range(100):
        now = _grandchildren(pid)
        if now and now == seen:
            return now
        seen = now
        time.sleep(0.1)
    return seen


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    return out


@pytest.mark.slow
def test_burst_workers_judge_every_exposure_and_reject_poison_files(tmp_path, redis_url, database_url):
    svc = Service(tmp_path, redis_url, database_url, write_plots=False)
    try:
        for seed in range(4):
            svc.submit(f"e{seed}", svc.exposure(seed))
        truncated = svc.files / "truncated.fits"
        truncated.write_bytes(svc.exposure(9).read_bytes()[:5000])
        svc.submit("truncated", truncated)
        not_fits = svc.files / "notes.fits"
        not_fits.write_text("this is not a FITS file\n")
        svc.submit("notes", not_fits)

        run = subprocess.run([sys.executable, "-m", "obsqc", "worker", "--burst", "-n", "2"], env=_env(svc.settings),
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr

        verdicts = {eid: svc.row(eid) for eid in ("e0", "e1", "e2", "e3", "truncated", "notes")}
        judged = [verdicts[f"e{i}"] for i in range(4)]
        assert all(r.status == "done" and r.attempts == 1 for r in judged)
        assert {r.verdict for r in judged} <= {"calibrating", "ok", "warn", "bad"}
        assert all(r.n_sources > 0 and r.source_kl is not None and len(r.ccds) == 2 for r in judged)
        assert all(set(r.timings) >= {"read_measure", "score"} for r in judged)
        assert verdicts["truncated"].verdict == "rejected" and verdicts["truncated"].flags[0]["reason"] == "truncated"
        assert verdicts["notes"].verdict == "rejected" and "not_fits" in verdicts["notes"].reason
        assert FailedJobRegistry(queue=svc.queue).count == 0
        assert len(svc.queue) == 0
    finally:
        svc.close()


@pytest.mark.slow
def test_a_killed_work_horse_is_retried_and_the_exposure_judged_exactly_once(service):
    path = service.exposure(3, size="small")
    workers = _start_workers(service.settings)
    try:
        before = _settled_grandchildren(workers.pid)
        service.submit("victim", path)
        horse = _work_horse(workers.pid, before)
        service.wait_for("victim", lambda r: r.status == "running", timeout_s=30)
        os.kill(horse, signal.SIGKILL)
        row = service.wait_for("victim", lambda r: r.verdict is not None, timeout_s=60)
    finally:
        _stop(workers)
    assert row.verdict == "calibrating" and row.status == "done"
    assert row.attempts == 2
    assert len(row.ccds) == 4 and len({c.ccd for c in row.ccds}) == 4
    job = service.queue.fetch_job(next(iter(service.queue.finished_job_registry.get_job_ids())))
    assert job.args == ["victim", str(path)]
    assert FailedJobRegistry(queue=service.queue).count == 0


@pytest.mark.slow
def test_a_killed_worker_takes_its_horse_along_and_its_job_is_judged_again_at_once(service):
    """``kill -9`` of the worker itself (not only its horse): the horse must not live on as an orphan,
    and the replacement worker hands the job back, well before RQ's heartbeat timeout (60 s + a minute)."""
    path = service.exposure(6, size="small")
    workers = _start_workers(service.settings)
    try:
        before = _settled_grandchildren(workers.pid)
        service.submit("orphan", path)
        horse = _work_horse(workers.pid, before)
        service.wait_for("orphan", lambda r: r.status == "running", timeout_s=30)
        worker = next(c for c in _children(workers.pid) if horse in _children(c))
        # workers and their horses run below the API's CPU priority (OBSQC_WORKER_NICE, default 10)
        assert _nice(worker) == _nice(workers.pid) + service.settings.worker_nice == _nice(horse)
        killed_at = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{horse}").exists() and "Z" not in _state(horse) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not Path(f"/proc/{horse}").exists() or "Z" in _state(horse), "the horse outlived its worker"
        row = service.wait_for("orphan", lambda r: r.verdict is not None, timeout_s=40)
        recovered_s = time.monotonic() - killed_at
    finally:
        _stop(workers)
    assert row.verdict == "calibrating" and row.status == "done"
    assert row.attempts == 2
    assert recovered_s < 40
    assert len(row.ccds) == 4
    assert FailedJobRegistry(queue=service.queue).count == 0


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_a_job_out_of_retries_gets_the_verdict_error(tmp_path, redis_url):
    svc = Service(tmp_path, redis_url, f"sqlite:///{tmp_path / 'obsqc.db'}", job_retries=0)
    try:
        path = svc.exposure(4, size="small")
        workers = _start_workers(svc.settings)
        try:
            before = _settled_grandchildren(workers.pid)
            svc.submit("doomed", path)
            horse = _work_horse(workers.pid, before)
            svc.wait_for("doomed", lambda r: r.status == "running", timeout_s=30)
            os.kill(horse, signal.SIGKILL)
            row = svc.wait_for("doomed", lambda r: r.verdict is not None, timeout_s=30)
        finally:
            _stop(workers)
        assert row.verdict == "error" and row.status == "error"
        assert "killed" in row.reason
    finally:
        svc.close()


@pytest.mark.slow
def test_sigterm_lets_the_current_job_finish(service):
    path = service.exposure(5, size="small")
    workers = _start_workers(service.settings)
    before = _settled_grandchildren(workers.pid)
    service.submit("last", path)
    _work_horse(workers.pid, before)
    service.wait_for("last", lambda r: r.status == "running", timeout_s=30)
    _stop(workers)
    row = service.row("last")
    assert row.verdict == "calibrating" and row.attempts == 1
