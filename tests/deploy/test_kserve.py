"""The KServe InferenceService: no schema ships for this custom resource, so ``problems`` checks what KServe and
Knative require of a custom predictor, and the pod part is validated as a Kubernetes PodSpec (strict)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from tests.conftest import ROOT
from tests.deploy.dockerfile import Dockerfile
from tests.deploy.manifests import KUBERNETES_VERSION, literal_env, load_documents

PATH = ROOT / "deploy" / "k8s" / "kserve" / "inferenceservice.yaml"
NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # KServe's InferenceService name rule
FRAMEWORKS = {"sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm",
              "paddle", "model", "storageUris", "workerSpec"}  # fmt: skip
EXTENSIONS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "containerConcurrency",
              "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
              "autoScaling"}  # fmt: skip
# Container fields Knative Serving accepts by default (no lifecycle hooks, no startupProbe).
KNATIVE_CONTAINER = {"name", "args", "command", "env", "envFrom", "image", "imagePullPolicy", "livenessProbe", "ports",
                     "readinessProbe", "resources", "securityContext", "terminationMessagePath",
                     "terminationMessagePolicy", "volumeMounts", "workingDir"}  # fmt: skip
# Pod fields that Knative accepts only behind feature flags, which a portable manifest avoids.
KNATIVE_FLAGGED_POD = {"securityContext", "tolerations", "affinity", "nodeSelector", "terminationGracePeriodSeconds"}


def problems(isvc: dict[str, Any], grpc: bool = False) -> list[str]:
    """Why KServe (Serverless or RawDeployment) would refuse or mis-serve this InferenceService; empty if nothing."""
    found = []
    if (isvc.get("apiVersion"), isvc.get("kind")) != ("serving.kserve.io/v1beta1", "InferenceService"):
        found.append("not a serving.kserve.io/v1beta1 InferenceService")
    if not NAME.fullmatch(isvc.get("metadata", {}).get("name", "")):
        found.append("metadata.name must be lower-case alphanumerics and '-', starting with a letter")
    spec = isvc.get("spec", {})
    if set(spec) != {"predictor"}:
        found.append(f"spec must hold just the predictor, not {sorted(set(spec) - {'predictor'})}")
    predictor = spec.get("predictor", {})
    found += predictor_problems(predictor, grpc)
    return found


def predictor_problems(predictor: dict[str, Any], grpc: bool = False) -> list[str]:
    found = []
    if FRAMEWORKS & set(predictor):
        found.append(f"a custom predictor names no framework ({sorted(FRAMEWORKS & set(predictor))})")
    if predictor.get("minReplicas", 1) > predictor.get("maxReplicas", 1 << 30):
        found.append("minReplicas exceeds maxReplicas")
    pod = {key: value for key, value in predictor.items() if key not in EXTENSIONS | FRAMEWORKS}
    try:
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod},
            KUBERNETES_VERSION,
            strict=True,
        )
    except kubernetes_validate.ValidationError as exc:
        found.append(f"the pod part is not a valid PodSpec: {exc.message}")
    if KNATIVE_FLAGGED_POD & set(pod):
        found.append(f"pod fields Knative rejects by default: {sorted(KNATIVE_FLAGGED_POD & set(pod))}")
    containers = pod.get("containers", [])
    if [c.get("name") for c in containers] != ["kserve-container"]:
        found.append("a custom predictor has one container, named kserve-container")
    for container in containers:
        found += container_problems(container, grpc)
    return found


def container_problems(container: dict[str, Any], grpc: bool = False) -> list[str]:
    found = []
    if set(container) - KNATIVE_CONTAINER:
        found.append(f"container fields Knative rejects: {sorted(set(container) - KNATIVE_CONTAINER)}")
    env = literal_env(container)
    if env.get("PROTOCOL") != "v2":
        found.append("KServe reads a custom predictor's protocol from PROTOCOL, which must be v2")
    ports = container.get("ports", [])
    if grpc:
        return found + grpc_port_problems(container, env)
    if len(ports) != 1 or ports[0].get("name") != "http1":
        found.append("exactly one port, named http1 (the server speaks HTTP/1.1, not h2c)")
    elif str(ports[0].get("containerPort")) != env.get("ATTENTION_SERVE_PORT"):
        found.append("ATTENTION_SERVE_PORT must be the container port KServe routes to")
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or (ports and get.get("port") != ports[0].get("containerPort")):
            found.append(f"{probe} must GET {path} on the container port")
    return found


def grpc_port_problems(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The gRPC predictor: one port named h2c (KServe's name for HTTP/2 in the clear) where gRPC listens, probed
    through gRPC's health service."""
    found, ports = [], container.get("ports", [])
    if len(ports) != 1 or ports[0].get("name") != "h2c":
        found.append("exactly one port, named h2c (the gRPC server)")
    elif str(ports[0].get("containerPort")) != env.get("ATTENTION_SERVE_GRPC_PORT"):
        found.append("ATTENTION_SERVE_GRPC_PORT must be the container port KServe routes to")
    elif env.get("ATTENTION_SERVE_PORT") == env.get("ATTENTION_SERVE_GRPC_PORT"):
        found.append("the HTTP server needs a port of its own")
    for probe in ("readinessProbe", "livenessProbe"):
        if ports and container.get(probe, {}).get("grpc", {}).get("port") != ports[0].get("containerPort"):
            found.append(f"{probe} must ask gRPC health on the container port")
    return found


@pytest.fixture
def isvc() -> dict[str, Any]:
    (document,) = load_documents(PATH)
    return document


def test_inference_service_is_a_valid_custom_v2_predictor(isvc: dict[str, Any]) -> None:
    assert problems(isvc) == []


def container_of(isvc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = isvc["spec"]["predictor"]["containers"][0]
    return container


def set_env(name: str, value: str | None) -> Callable[[dict[str, Any]], None]:
    def edit(isvc: dict[str, Any]) -> None:
        container = container_of(isvc)
        container["env"] = [e for e in container["env"] if e["name"] != name]
        if value is not None:
            container["env"].append({"name": name, "value": value})

    return edit


MISTAKES: dict[str, Callable[[dict[str, Any]], None]] = {
    "protocol missing": set_env("PROTOCOL", None),
    "protocol v3": set_env("PROTOCOL", "v3"),
    "server on another port": set_env("ATTENTION_SERVE_PORT", "8000"),
    "port named http": lambda d: container_of(d)["ports"][0].update(name="http"),
    "h2c port": lambda d: container_of(d)["ports"][0].update(name="h2c"),
    "lifecycle hook": lambda d: container_of(d).update(lifecycle={"preStop": {"sleep": {"seconds": 5}}}),
    "misspelt container field": lambda d: container_of(d).update(imagePullPolicyy="Always"),
    "container renamed": lambda d: container_of(d).update(name="server"),
    "framework and container": lambda d: d["spec"]["predictor"].update(model={"modelFormat": {"name": "onnx"}}),
    "tolerations": lambda d: d["spec"]["predictor"].update(tolerations=[]),
    "readiness on live": lambda d: container_of(d)["readinessProbe"]["httpGet"].update(path="/v2/health/live"),
    "replicas inverted": lambda d: d["spec"]["predictor"].update(minReplicas=5, maxReplicas=2),
    "upper-case name": lambda d: d["metadata"].update(name="Attention-Serve"),
    "transformer": lambda d: d["spec"].update(transformer={}),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_structural_check_reports(isvc: dict[str, Any], mistake: str) -> None:
    """Control: each mistake, made to our own InferenceService, is reported."""
    broken = copy.deepcopy(isvc)
    MISTAKES[mistake](broken)
    assert problems(broken) != []


def test_predictor_runs_the_gpu_image_as_it_is_built(isvc: dict[str, Any], dockerfile: Dockerfile) -> None:
    container = container_of(isvc)
    image, _, target = container["image"].rpartition(":")
    assert (image, target) == ("attention-serve", "gpu")
    env = literal_env(container)
    assert env["ATTENTION_SERVE_HOST"] == "0.0.0.0"
    assert env["ATTENTION_SERVE_MODEL_REPOSITORY"] == dockerfile.env(target)["ATTENTION_SERVE_MODEL_REPOSITORY"]
    assert env["ATTENTION_SERVE_PROVIDERS"].startswith("CUDAExecutionProvider")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    user = dockerfile.last(target, "USER")
    assert user is not None
    assert container["securityContext"]["runAsUser"] == int(user.value.partition(":")[0])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_request_timeout_outlasts_the_graceful_shutdown(isvc: dict[str, Any]) -> None:
    # Knative gives a terminating pod the revision timeout as its grace period.
    graceful = float(literal_env(container_of(isvc))["ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S"])
    assert isvc["spec"]["predictor"]["timeout"] >= graceful + 10


GRPC_PATH = PATH.with_name("inferenceservice-grpc.yaml")
GRPC_MISTAKES: dict[str, Callable[[dict[str, Any]], None]] = {
    "port named http1": lambda d: container_of(d)["ports"][0].update(name="http1"),
    "gRPC on another port": set_env("ATTENTION_SERVE_GRPC_PORT", "8001"),
    "readiness over HTTP": lambda d: container_of(d).update(readinessProbe={"httpGet": {"path": "/", "port": 8081}}),
    "protocol missing": set_env("PROTOCOL", None),
}


def test_grpc_inference_service_is_a_valid_custom_predictor() -> None:
    (document,) = load_documents(GRPC_PATH)
    assert problems(document, grpc=True) == []
    assert document["metadata"]["name"] != load_documents(PATH)[0]["metadata"]["name"], "both can be deployed"


@pytest.mark.parametrize("mistake", GRPC_MISTAKES)
def test_grpc_structural_check_reports(mistake: str) -> None:
    (broken,) = load_documents(GRPC_PATH)
    GRPC_MISTAKES[mistake](broken)
    assert problems(broken, grpc=True) != []
