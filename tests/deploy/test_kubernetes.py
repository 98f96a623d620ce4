"""The Kubernetes manifests: valid for the pinned Kubernetes version (offline), rendered overlays, and consistent with
the image and the service (ports, probes, grace periods, users, GPU or not)."""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.dockerfile import Dockerfile
from tests.deploy.manifests import KUBERNETES_VERSION, literal_env, load_documents, parse_documents
from tests.deploy.tools import python_module, run

K8S = ROOT / "deploy" / "k8s"
RENDERS = {"base": "gpu", "overlays/cpu": "cpu", "overlays/gpu-model-pvc": "gpu"}  # kustomization -> image target


def kubernetes_validate(*paths: Path) -> tuple[int, str]:
    result = python_module("kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, *map(str, paths))
    return result.returncode, result.stdout + result.stderr


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def referenced_files() -> tuple[set[Path], set[Path]]:
    """The complete objects (file resources) and the partial ones (patches) the kustomizations name."""
    resources, patches = set(), set()
    for path in kustomizations():
        document = yaml.safe_load(path.read_text())
        resources |= {(path.parent / r).resolve() for r in document.get("resources", [])}
        patches |= {(path.parent / p["path"]).resolve() for p in document.get("patches", []) if "path" in p}
    return {r for r in resources if r.is_file()}, patches


@pytest.mark.parametrize("path", sorted(referenced_files()[0]), ids=lambda p: str(p.relative_to(K8S)))
def test_resource_file_is_valid_kubernetes(path: Path) -> None:
    status, output = kubernetes_validate(path)
    assert status == 0, output


def test_validation_would_report_a_mistake(tmp_path: Path) -> None:
    """Control: strict validation rejects a misspelt field in our own Deployment."""
    (deployment,) = load_documents(K8S / "base" / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"port": 8000}}
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    status, output = kubernetes_validate(path)
    assert status != 0
    assert "readinesProbe" in output


def test_every_manifest_is_part_of_a_kustomization() -> None:
    resources, patches = referenced_files()
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and "kserve" not in p.parts}
    assert manifests == resources | patches, f"orphans: {manifests - resources - patches}"


def rendered(name: str, folder: Path) -> tuple[str, list[dict]]:
    """A kustomization rendered by kubectl's built-in kustomize, and validated as a whole."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations cannot be rendered here")
    result = run([kubectl, "kustomize", str(K8S / name)])
    assert result.returncode == 0, result.stderr
    path = folder / "rendered.yaml"
    path.write_text(result.stdout)
    status, output = kubernetes_validate(path)
    assert status == 0, output
    return name, parse_documents(result.stdout)


@pytest.fixture(scope="module", params=sorted(RENDERS))
def render(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict]]:
    return rendered(request.param, tmp_path_factory.mktemp("render"))


@pytest.fixture(scope="module")
def shared_repository_render(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return rendered("overlays/gpu-model-pvc", tmp_path_factory.mktemp("render"))[1]


def one(documents: list[dict], kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind]
    return found


def server(documents: list[dict]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment's pod spec and its server container."""
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "server"]
    return pod, container


def port_number(container: dict[str, Any], port: int | str) -> int:
    return port if isinstance(port, int) else next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def test_probes_hit_the_health_endpoints_on_the_served_port(render: tuple[str, list[dict]]) -> None:
    _, container = server(render[1])
    env = literal_env(container)
    assert env["ATTENTION_SERVE_HOST"] == "0.0.0.0"
    paths = {name: container[name]["httpGet"]["path"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {
        "startupProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for name in paths:
        assert port_number(container, container[name]["httpGet"]["port"]) == int(env["ATTENTION_SERVE_PORT"])


def test_grace_period_covers_the_pre_stop_pause_and_the_graceful_shutdown(render: tuple[str, list[dict]]) -> None:
    pod, container = server(render[1])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = float(literal_env(container)["ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S"])
    # The pause lets Services and load balancers drop the endpoint before the server stops accepting.
    assert pause > 0
    assert pod["terminationGracePeriodSeconds"] >= pause + graceful + 5


def test_service_reaches_the_pods_on_the_served_port(render: tuple[str, list[dict]]) -> None:
    documents = render[1]
    pod_labels = one(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    _, container = server(documents)
    service = one(documents, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"http", "grpc"}
    env = literal_env(container)
    assert port_number(container, ports["http"]["targetPort"]) == int(env["ATTENTION_SERVE_PORT"])
    assert port_number(container, ports["grpc"]["targetPort"]) == int(env["ATTENTION_SERVE_GRPC_PORT"])


def test_autoscaler_and_disruption_budget_govern_the_deployment(render: tuple[str, list[dict]]) -> None:
    documents = render[1]
    deployment = one(documents, "Deployment")
    hpa, pdb = one(documents, "HorizontalPodAutoscaler"), one(documents, "PodDisruptionBudget")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2, "with one replica the disruption budget would block every drain"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    container = server(documents)[1]
    assert "cpu" in container["resources"]["requests"], "CPU utilisation needs a CPU request"


def test_pods_run_as_the_images_user_on_a_read_only_root(
    render: tuple[str, list[dict]], dockerfile: Dockerfile
) -> None:
    pod, _ = server(render[1])
    user = dockerfile.last(RENDERS[render[0]], "USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    for each in pod["containers"] + pod.get("initContainers", []):
        security = each["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


def test_images_are_tagged_with_the_target_they_run(render: tuple[str, list[dict]], dockerfile: Dockerfile) -> None:
    name, documents = render
    pod, container = server(documents)
    image, _, tag = container["image"].rpartition(":")
    assert (image, tag) == ("attention-serve", RENDERS[name])
    providers = literal_env(container)["ATTENTION_SERVE_PROVIDERS"].split(",")
    assert providers[0] == dockerfile.env(tag)["ATTENTION_SERVE_PROVIDERS"].split(",")[0]
    for each in pod.get("initContainers", []):
        assert each["image"] == container["image"], f"{each['name']} runs another image than the server"
    for document in documents:
        for each in containers_of(document):
            assert ":" in each["image"].rsplit("/", 1)[-1], f"{each['name']}: untagged image {each['image']}"


def containers_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {})).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


def test_gpu_is_asked_for_exactly_where_the_image_uses_it(render: tuple[str, list[dict]]) -> None:
    name, documents = render
    pod, container = server(documents)
    if RENDERS[name] == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    else:
        assert "nvidia.com" not in yaml.safe_dump(documents)
    env = literal_env(container)
    # Set explicitly: inside a pod without a CPU limit the node's core count would decide both.
    workers, threads = int(env["ATTENTION_SERVE_WORKERS"]), int(env["ATTENTION_SERVE_INTRA_OP_THREADS"])
    assert workers * threads == int(container["resources"]["requests"]["cpu"]), "processes x threads = CPU request"
    if RENDERS[name] == "gpu":
        assert workers == 1, "one process owns the GPU"


def test_model_repository_path_matches_the_image(render: tuple[str, list[dict]], dockerfile: Dockerfile) -> None:
    name, documents = render
    pod, container = server(documents)
    repository = literal_env(container)["ATTENTION_SERVE_MODEL_REPOSITORY"]
    assert repository == dockerfile.env(RENDERS[name])["ATTENTION_SERVE_MODEL_REPOSITORY"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    if name.endswith("model-pvc"):
        assert mounts[repository]["readOnly"] is True
        assert claims[mounts[repository]["name"]] == one(documents, "PersistentVolumeClaim")["metadata"]["name"]
    else:
        assert repository not in mounts, "the baked-in models serve"


def test_shared_repository_is_seeded_and_exported_into_the_served_claim(shared_repository_render: list[dict]) -> None:
    documents = shared_repository_render
    pod, _ = server(documents)
    claim = one(documents, "PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "every replica and the exporter mount it"
    (seed,) = pod["initContainers"]
    seed_mount = next(m for m in seed["volumeMounts"] if not m.get("readOnly"))
    assert "/models" in seed["command"][-1]
    assert seed_mount["mountPath"] in seed["command"][-1]
    cronjob = one(documents, "CronJob")
    assert cronjob["spec"]["suspend"] is True, "a template for on-demand runs; unsuspend to retrain on schedule"
    job_pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (exporter,) = job_pod["containers"]
    repository = exporter["args"][exporter["args"].index("--repository") + 1]
    (mount,) = [m for m in exporter["volumeMounts"] if m["mountPath"] == repository]
    volume = next(v for v in job_pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert not mount.get("readOnly", False)
    assert job_pod["securityContext"]["fsGroup"] == pod["securityContext"]["fsGroup"]


def base_server() -> tuple[dict[str, Any], dict[str, Any]]:
    """The base Deployment (as written, not rendered) and its server container."""
    (deployment,) = load_documents(K8S / "base" / "deployment.yaml")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "server"]
    return deployment, container


def test_service_and_pods_expose_the_grpc_port() -> None:
    _, container = base_server()
    grpc_port = int(literal_env(container)["ATTENTION_SERVE_GRPC_PORT"])
    assert port_number(container, "grpc") == grpc_port
    (service,) = load_documents(K8S / "base" / "service.yaml")
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert port_number(container, port["targetPort"]) == grpc_port
    assert port["appProtocol"] == "kubernetes.io/h2c"  # HTTP/2 in the clear, for proxies and meshes


def test_the_grpc_readiness_component_probes_the_grpc_port(tmp_path: Path) -> None:
    """The component's patch, merged by hand as kustomize would, gives a valid Deployment probing gRPC health."""
    component = yaml.safe_load((K8S / "components" / "grpc-probes" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    (patch,) = load_documents(K8S / "components" / "grpc-probes" / component["patches"][0]["path"])
    (patched,) = patch["spec"]["template"]["spec"]["containers"]
    deployment, container = base_server()
    probe = {k: v for k, v in {**container["readinessProbe"], **patched["readinessProbe"]}.items() if v is not None}
    container["readinessProbe"] = probe
    assert probe["grpc"] == {"port": int(literal_env(container)["ATTENTION_SERVE_GRPC_PORT"]), "service": ""}
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    status, output = kubernetes_validate(path)
    assert status == 0, output


def test_the_grpc_readiness_component_renders_onto_an_overlay(tmp_path: Path) -> None:
    """kubectl's kustomize applies the component to the cpu overlay: readiness over gRPC, the rest unchanged."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations cannot be rendered here")
    relative = partial(os.path.relpath, start=tmp_path)  # kustomize takes no absolute paths
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative(K8S / "overlays" / "cpu")],
        "components": [relative(K8S / "components" / "grpc-probes")],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = run([kubectl, "kustomize", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    _, container = server(parse_documents(result.stdout))
    assert container["readinessProbe"]["grpc"] == {"port": 8001, "service": ""}
    assert "httpGet" not in container["readinessProbe"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
