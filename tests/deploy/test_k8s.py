"""deploy/k8s renders with kustomize, validates against the Kubernetes and KEDA schemas, and agrees
with the settings tree (ops/settings/) and with what serve, alerts and the dashboard do."""

from __future__ import annotations

import copy
import os
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest

from ops.settings import Settings, StreamSettings
from tests.deploy.manifests import (
    K8S,
    SERVE_DRAIN_BOUND_S,
    Doc,
    container,
    container_env,
    find,
    is_setting,
    pod_spec,
    render,
    setting_names,
    validate,
    workloads,
)

OVERLAYS = ("overlays/cpu", "overlays/gpu")
RENDERED = (*OVERLAYS, "train")
NAMES = setting_names(Settings)


def docs_of(path: str) -> list[Doc]:
    return render(K8S / path)


def with_sasl(tmp_path: Path) -> list[Doc]:
    """The CPU overlay plus the kafka-sasl component, as a user's overlay would combine them."""
    rel = Path(os.path.relpath(K8S, tmp_path)).as_posix()
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{rel}/overlays/cpu]\ncomponents: [{rel}/components/kafka-sasl]\n"
    )
    return render(tmp_path)


def probe_port(c: Doc, probe: str) -> int:
    port = c[probe]["httpGet"]["port"]
    if isinstance(port, int):
        return port
    [match] = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return int(match)


def serve_env(docs: list[Doc]) -> dict[str, str]:
    serve = find(docs, "StatefulSet", "serve")
    return container_env(docs, serve, container(serve, "serve"))


# -- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RENDERED)
def test_every_manifest_validates_against_its_schema(path: str) -> None:
    docs = docs_of(path)
    assert docs
    for doc in docs:
        validate(doc)


def test_the_sasl_component_validates(tmp_path: Path) -> None:
    docs = with_sasl(tmp_path)
    for doc in docs:
        validate(doc)
    trigger = find(docs, "ScaledObject", "serve")["spec"]["triggers"][0]
    auth = find(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password"}
    env = serve_env(docs)
    assert env["CRYPTOSENT_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    # KEDA spells the mechanism its own way; both must name the same one.
    mechanism = env["CRYPTOSENT_KAFKA__SASL_MECHANISM"].lower().replace("-", "_")
    assert trigger["metadata"]["sasl"] == mechanism.replace("scram_sha_", "scram_sha")
    Settings.model_validate(
        {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}}
    )


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("StatefulSet", lambda d: d["spec"].__setitem__("replica", 2)),
        ("StatefulSet", lambda d: pod_spec(d).__setitem__("terminationGracePeriodSecond", 9)),
        ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"].update(lagTreshold="5")),
        ("ScaledObject", lambda d: d["spec"].__setitem__("maxReplicaCount", "12")),
        ("PodDisruptionBudget", lambda d: d["spec"].__setitem__("maxUnavailable", [1])),
    ],
)
def test_the_validators_reject_a_broken_manifest(kind: str, mutate: Any) -> None:
    doc = find(docs_of("overlays/cpu"), kind, "serve")
    broken = copy.deepcopy(doc)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RENDERED)
def test_every_cryptosent_name_is_a_real_setting(path: str) -> None:
    docs = docs_of(path)
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        for key in cm["data"]:
            assert is_setting(key, NAMES), f"ConfigMap {cm['metadata']['name']}: {key}"
    for workload in workloads(docs):
        for c in pod_spec(workload)["containers"]:
            for item in c.get("env", []):
                assert is_setting(item["name"], NAMES), f"{workload['metadata']['name']}: {item}"


@pytest.mark.parametrize("path", RENDERED)
def test_every_container_environment_builds_the_settings(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values parse too: what each container builds at start-up."""
    docs = docs_of(path)
    for workload in workloads(docs):
        for c in pod_spec(workload)["containers"]:
            for key in [k for k in os.environ if k.startswith("CRYPTOSENT_")]:
                monkeypatch.delenv(key)
            for key, value in container_env(docs, workload, c).items():
                monkeypatch.setenv(key, value)
            Settings(_env_file=None)


@pytest.mark.parametrize("path", RENDERED)
def test_no_service_links(path: str) -> None:
    """Kubernetes would inject e.g. CRYPTOSENT_X_SERVICE_HOST for a Service named cryptosent-x,
    and load_settings rejects CRYPTOSENT_ names that are not settings."""
    for workload in workloads(docs_of(path)):
        assert pod_spec(workload)["enableServiceLinks"] is False, workload["metadata"]["name"]


@pytest.mark.parametrize("path", [*RENDERED, "sasl"])
def test_secrets_only_through_secret_refs(path: str, tmp_path: Path) -> None:
    docs = with_sasl(tmp_path) if path == "sasl" else docs_of(path)
    secret_names = {"CRYPTOSENT_KAFKA__SASL_PASSWORD", "CRYPTOSENT_KAFKA__SSL_KEY_PASSWORD"}
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created out of band"
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        assert not secret_names & set(cm["data"]), cm["metadata"]["name"]
    for workload in workloads(docs):
        for c in pod_spec(workload)["containers"]:
            for item in c.get("env", []):
                if item["name"] in secret_names or "USERNAME" in item["name"]:
                    assert "secretKeyRef" in item["valueFrom"], item


# -- serve --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", OVERLAYS)
def test_serve_uses_static_membership_from_the_stable_pod_name(path: str) -> None:
    docs = docs_of(path)
    serve = find(docs, "StatefulSet", "serve")
    [item] = [
        e
        for e in container(serve, "serve")["env"]
        if e["name"] == "CRYPTOSENT_STREAM__GROUP_INSTANCE_ID"
    ]
    assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "stream.group_instance_id" in {f"stream.{n}" for n in StreamSettings.model_fields}
    # The StatefulSet's pod names (serve-0, serve-1, ...) survive restarts and rescheduling.
    assert serve["spec"]["serviceName"] == "serve"
    assert find(docs, "Service", "serve")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("path", OVERLAYS)
def test_serve_probes_use_its_metrics_port(path: str) -> None:
    docs = docs_of(path)
    serve = find(docs, "StatefulSet", "serve")
    c = container(serve, "serve")
    env = serve_env(docs)
    port = int(env.get("CRYPTOSENT_STREAM__METRICS_PORT", StreamSettings().metrics_port))
    assert env.get("CRYPTOSENT_STREAM__METRICS_HOST", StreamSettings().metrics_host) == "0.0.0.0"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe_port(c, probe) == port
    annotations = serve["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


@pytest.mark.parametrize("path", OVERLAYS)
def test_serve_grace_period_covers_its_drain(path: str) -> None:
    serve = find(docs_of(path), "StatefulSet", "serve")
    grace = pod_spec(serve)["terminationGracePeriodSeconds"]
    assert grace >= SERVE_DRAIN_BOUND_S
    assert grace >= StreamSettings().transaction_timeout_ms / 1000


@pytest.mark.parametrize("path", OVERLAYS)
def test_scaled_object_watches_serve_and_stops_at_the_partition_count(path: str) -> None:
    docs = docs_of(path)
    so = find(docs, "ScaledObject", "serve")["spec"]
    env = serve_env(docs)
    target = so["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "serve")
    assert "replicas" not in find(docs, "StatefulSet", "serve")["spec"], "KEDA owns the count"
    partitions = int(env["CRYPTOSENT_TOPICS__PARTITIONS"])
    assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"] == partitions
    [trigger] = so["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == env["CRYPTOSENT_KAFKA__BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == env["CRYPTOSENT_STREAM__GROUP_ID"]
    # One input topic: the scaler counts the lag of that topic only.
    assert meta["topic"] == env["CRYPTOSENT_TOPICS__INPUT"]
    assert "," not in meta["topic"]
    assert meta["allowIdleConsumers"] == "false"
    assert meta["offsetResetPolicy"] == StreamSettings().auto_offset_reset
    assert int(meta["lagThreshold"]) > 0


def test_gpu_overlay_requests_one_gpu_and_cuda() -> None:
    gpu = find(docs_of("overlays/gpu"), "StatefulSet", "serve")
    cpu = find(docs_of("overlays/cpu"), "StatefulSet", "serve")
    resources = container(gpu, "serve")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert serve_env(docs_of("overlays/gpu"))["CRYPTOSENT_MODEL__DEVICE"] == "cuda"
    assert "nvidia.com/gpu" not in str(container(cpu, "serve")["resources"])
    assert serve_env(docs_of("overlays/cpu"))["CRYPTOSENT_MODEL__DEVICE"] == "cpu"
    # Without a CPU limit torch would start one thread per node core.
    assert "CRYPTOSENT_STREAM__TORCH_THREADS" in serve_env(docs_of("overlays/cpu"))


# -- alerts and dashboard -----------------------------------------------------------------------


@pytest.mark.parametrize("path", OVERLAYS)
def test_alerts_is_a_single_instance_with_probes_on_its_metrics_port(path: str) -> None:
    docs = docs_of(path)
    alerts = find(docs, "Deployment", "alerts")
    assert alerts["spec"]["replicas"] == 1
    assert alerts["spec"]["strategy"]["type"] == "Recreate"
    c = container(alerts)
    env = container_env(docs, alerts, c)
    port = int(env["CRYPTOSENT_ALERTS__METRICS_PORT"])
    assert env["CRYPTOSENT_ALERTS__METRICS_HOST"] == "0.0.0.0"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe_port(c, probe) == port


@pytest.mark.parametrize("path", OVERLAYS)
def test_dashboard_probes_and_service_use_its_port(path: str) -> None:
    docs = docs_of(path)
    dashboard = find(docs, "Deployment", "dashboard")
    c = container(dashboard)
    env = container_env(docs, dashboard, c)
    port = int(env["CRYPTOSENT_DASHBOARD__PORT"])
    assert env["CRYPTOSENT_DASHBOARD__HOST"] == "0.0.0.0"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert probe_port(c, probe) == port


# -- wiring -------------------------------------------------------------------------------------


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", OVERLAYS)
def test_services_and_budgets_select_pods_and_named_ports_exist(path: str) -> None:
    docs = docs_of(path)
    pods = [(w, w["spec"]["template"]["metadata"]["labels"]) for w in workloads(docs)]
    for svc in (d for d in docs if d["kind"] == "Service"):
        selected = [w for w, labels in pods if labels_match(svc["spec"]["selector"], labels)]
        assert len(selected) == 1, svc["metadata"]["name"]
        port_names = {p["name"] for c in pod_spec(selected[0])["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert {b["metadata"]["name"] for b in budgets} >= {"serve", "dashboard"}
    for pdb in budgets:
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert [w for w, labels in pods if labels_match(selector, labels)], pdb["metadata"]["name"]


@pytest.mark.parametrize("path", RENDERED)
def test_every_container_has_requests_and_a_memory_limit(path: str) -> None:
    for workload in workloads(docs_of(path)):
        for c in pod_spec(workload)["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
            assert "memory" in c["resources"]["limits"], c["name"]


def mount_target(workload: Doc, claim: str) -> tuple[str, bool]:
    spec = pod_spec(workload)
    [volume] = [
        v["name"]
        for v in spec["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    ]
    [mount] = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == volume]
    return mount["mountPath"], bool(mount.get("readOnly"))


def is_within(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return p == d or d in p.parents


@pytest.mark.parametrize("path", OVERLAYS)
def test_serve_reads_the_artifact_the_training_job_writes(path: str) -> None:
    docs, train_docs = docs_of(path), docs_of("train")
    serve = find(docs, "StatefulSet", "serve")
    target, read_only = mount_target(serve, "cryptosent-models")
    artifact = serve_env(docs)["CRYPTOSENT_MODEL__ARTIFACT_DIR"]
    assert read_only
    assert is_within(artifact, target)
    [job] = [d for d in train_docs if d["kind"] == "Job"]
    train_target, train_read_only = mount_target(job, "cryptosent-models")
    out = container_env(train_docs, job, container(job))["CRYPTOSENT_TRAIN__OUT"]
    assert not train_read_only
    assert is_within(out, train_target)
    assert PurePosixPath(out).relative_to(train_target) == PurePosixPath(artifact).relative_to(
        target
    ), "serve reads what train writes"
    resources = container(job)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert "train" in container(job)["args"]
    # A versioned artifact is never overwritten under a running worker.
    assert container_env(train_docs, job, container(job))["CRYPTOSENT_TRAIN__OVERWRITE"] == "false"


def test_the_setting_name_check_tells_real_names_from_typos() -> None:
    assert is_setting("CRYPTOSENT_STREAM__GROUP_INSTANCE_ID", NAMES)
    assert is_setting("CRYPTOSENT_KAFKA__EXTRA__LINGER_MS", NAMES)  # a dict setting's key
    assert not is_setting("CRYPTOSENT_STREAM__GROUP_INSTANCE", NAMES)
    assert not is_setting("CRYPTOSENT_STREAM__METRICS_PORT__X", NAMES)
