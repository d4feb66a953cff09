"""Render the Kubernetes manifests and load the schemas that the deploy tests validate against.

Rendering uses real kustomize: `kustomize build`, or the copy built into `kubectl kustomize`.
Validation uses kubernetes-validate (the Kubernetes API's JSON schemas, strict: unknown fields are
errors), the KEDA schemas in deploy/schemas/keda, and the compose-spec schema that
check-jsonschema ships.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KEDA_SCHEMAS = ROOT / "deploy" / "schemas" / "keda"
# The oldest Kubernetes release the manifests must load on (unhealthyPodEvictionPolicy: 1.27+).
KUBERNETES_VERSION = "1.30"
# serve's shutdown bounds, hard-coded in stream/consumer.py (no setting holds them): the drain
# of buffered and in-flight micro-batches (300 s in `_finish`), the producer flush (60 s,
# `_flush_producer`) and the producer flush on close (5 s). Grace periods must cover them.
SERVE_DRAIN_BOUND_S = 300 + 60 + 5

Doc = dict[str, Any]


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    message = (
        "neither kustomize nor kubectl is on PATH: install one "
        "(e.g. `go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0`)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def _render(directory: str) -> tuple[Doc, ...]:
    out = subprocess.run(
        [*kustomize_command(), directory], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"kustomize failed on {directory}:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(directory: Path) -> list[Doc]:
    return list(_render(str(directory)))


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Job"}]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Doc, name: str | None = None) -> Doc:
    containers = pod_spec(workload)["containers"]
    if name is None:
        [only] = containers
        return dict(only)
    [match] = [c for c in containers if c["name"] == name]
    return dict(match)


def container_env(docs: list[Doc], workload: Doc, c: Doc) -> dict[str, str]:
    """The environment the container starts with: envFrom ConfigMaps, then env (which wins).
    Downward-API values take the first pod's name; Secret values a placeholder."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]
        env.update(find(docs, "ConfigMap", ref["name"])["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        value_from = item["valueFrom"]
        if "fieldRef" in value_from:
            assert value_from["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = f"{workload['metadata']['name']}-0"
        elif "secretKeyRef" in value_from:
            env[item["name"]] = "from-a-secret"
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            env[item["name"]] = find(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            raise AssertionError(f"unexpected valueFrom {value_from}")
    return env


def setting_names(model: type[BaseModel], prefix: str = "CRYPTOSENT_") -> dict[str, bool]:
    """Every environment variable name the settings tree reads -> whether it is a dict field
    (whose keys may continue the name)."""
    names: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names[env] = False  # a whole section as JSON
            names.update(setting_names(annotation, env + "__"))
        else:
            names[env] = "dict[" in str(annotation)
    return names


def is_setting(key: str, names: dict[str, bool]) -> bool:
    return key in names or any(key.startswith(n + "__") for n, is_dict in names.items() if is_dict)


def keda_schema(kind: str) -> Doc:
    schema: Doc = json.loads((KEDA_SCHEMAS / f"{kind.lower()}-keda-v1alpha1.json").read_text())
    return schema


def validate(doc: Doc) -> None:
    """Raise if `doc` does not validate against its kind's schema; unknown kinds fail too."""
    if doc["apiVersion"].startswith("keda.sh/"):
        schema = keda_schema(doc["kind"])
        jsonschema.validators.validator_for(schema)(schema).validate(doc)
        return
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def compose_spec_schema() -> Doc:
    """The compose-spec JSON Schema (Apache-2.0, licence alongside it in the package)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: Doc = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    return schema
