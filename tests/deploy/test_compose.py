"""docker-compose.yml against the Compose specification (offline), and against the image and the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.dockerfile import Dockerfile
from tests.deploy.manifests import seconds
from tests.deploy.tools import python_module

SERVING = {"serve": "gpu", "serve-cpu": "cpu"}  # compose service -> image target


def validate(path: Path) -> tuple[int, str]:
    result = python_module("check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path))
    return result.returncode, result.stdout + result.stderr


def test_compose_file_follows_the_compose_specification() -> None:
    status, output = validate(ROOT / "docker-compose.yml")
    assert status == 0, output


def test_compose_validation_would_report_a_mistake(tmp_path: Path, compose: dict[str, Any]) -> None:
    """Control: the schema check rejects a misspelt key in a service of this very file."""
    broken = {**compose, "services": {**compose["services"], "serve": {**compose["services"]["serve"], "port": 1}}}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    status, output = validate(path)
    assert status != 0
    assert "port" in output


@pytest.mark.parametrize(("service", "target"), SERVING.items())
def test_serving_service_builds_its_target(
    compose: dict[str, Any], dockerfile: Dockerfile, service: str, target: str
) -> None:
    spec = compose["services"][service]
    assert spec["build"] == {"context": ".", "target": target}
    assert target in {stage.name for stage in dockerfile.stages}


def test_gpu_service_reserves_one_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["serve"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert compose["services"]["serve"]["environment"]["ATTENTION_SERVE_PROVIDERS"].startswith("CUDAExecutionProvider")


def test_cpu_service_is_opt_in_and_asks_no_gpu(compose: dict[str, Any]) -> None:
    spec = compose["services"]["serve-cpu"]
    assert spec["profiles"] == ["cpu"]
    assert "deploy" not in spec
    assert spec["environment"]["ATTENTION_SERVE_PROVIDERS"] == "CPUExecutionProvider"
    assert "profiles" not in compose["services"]["serve"], "`docker compose up` starts the GPU service"


@pytest.mark.parametrize("service", SERVING)
def test_models_are_the_mounted_host_folder(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    mounts = [v for v in spec["volumes"] if v["target"] == spec["environment"]["ATTENTION_SERVE_MODEL_REPOSITORY"]]
    assert mounts == [{"type": "bind", "source": "./models", "target": "/models", "read_only": True}]
    assert float(spec["environment"]["ATTENTION_SERVE_POLL_INTERVAL_S"]) > 0, "hot reload needs the poll"


@pytest.mark.parametrize(("service", "target"), SERVING.items())
def test_ports_agree_with_the_image(compose: dict[str, Any], dockerfile: Dockerfile, service: str, target: str) -> None:
    spec = compose["services"][service]
    port, grpc_port = spec["environment"]["ATTENTION_SERVE_PORT"], spec["environment"]["ATTENTION_SERVE_GRPC_PORT"]
    assert port == dockerfile.env(target)["ATTENTION_SERVE_PORT"]
    assert grpc_port == dockerfile.env(target)["ATTENTION_SERVE_GRPC_PORT"]
    assert [p.rsplit(":", 1)[1] for p in spec["ports"]] == [port, grpc_port]
    assert spec["environment"]["ATTENTION_SERVE_HOST"] == "0.0.0.0"


@pytest.mark.parametrize(("service", "target"), SERVING.items())
def test_healthcheck_is_the_images_readiness_check(
    compose: dict[str, Any], dockerfile: Dockerfile, service: str, target: str
) -> None:
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1:] == dockerfile.healthcheck(target)[1]
    assert "/v2/health/ready" in test[-1]


@pytest.mark.parametrize("service", SERVING)
def test_compose_waits_longer_than_the_graceful_shutdown(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    graceful = float(spec["environment"]["ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S"])
    assert spec["stop_signal"] == "SIGTERM"
    assert seconds(spec["stop_grace_period"]) >= graceful + 5
    assert spec["restart"] == "unless-stopped"


@pytest.mark.parametrize("service", SERVING)
def test_secrets_pass_through_only_when_set(compose: dict[str, Any], service: str) -> None:
    """An empty string would be a configured (empty) API key; a null passes the variable through or leaves it unset."""
    environment = compose["services"][service]["environment"]
    assert environment["ATTENTION_SERVE_API_KEY"] is None
    assert environment["ATTENTION_SERVE_ADMIN_TOKEN"] is None


@pytest.mark.parametrize("service", SERVING)
def test_serving_containers_are_locked_down(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in spec["security_opt"]


def test_exporter_writes_into_the_folder_the_service_serves(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    exporter = compose["services"]["exporter"]
    assert exporter["profiles"] == ["export"]
    assert exporter["build"] == {"context": ".", "target": "exporter"}
    repository = exporter["command"][exporter["command"].index("--repository") + 1]
    writable = [v for v in exporter["volumes"] if v["target"] == repository and not v.get("read_only", False)]
    served = compose["services"]["serve"]["volumes"][0]["source"]
    assert [v["source"] for v in writable] == [served]
    assert exporter["restart"] == "no"
    assert "exporter" in {stage.name for stage in dockerfile.stages}


def test_prometheus_scrapes_the_service_metrics(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")}
    config = yaml.safe_load((ROOT / mounted["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert job["metrics_path"] == "/metrics"
    for service in SERVING:
        spec = compose["services"][service]
        assert discovery["names"] == spec["networks"]["default"]["aliases"]
        assert str(discovery["port"]) == spec["environment"]["ATTENTION_SERVE_PORT"]
