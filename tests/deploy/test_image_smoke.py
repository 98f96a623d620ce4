"""The cpu image without a Docker engine: the Dockerfile's own build steps run here into a stand-in root folder, then
the service starts as the image starts it (its ENTRYPOINT, ENV and HEALTHCHECK), answers, and stops on SIGTERM.

Container paths (/opt/venv, /src, /models) map into the stand-in root; COPY honours .dockerignore; RUN runs the
stage's commands (so deploy/install.sh with deploy/requirements/cpu.txt, exactly as `docker build` does); pip's
cache stands in for the build's cache mount. Only the base image is not reproduced: this interpreter plays it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import ROOT, add_version
from tests.deploy.dockerfile import Dockerfile, context_files, copy_of, ignore_patterns
from tests.deploy.manifests import interpolate
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e

TARGET = "cpu"
TEXT = "I love how this self-driving car handles the highway!"
CONTAINER_PATHS = re.compile(r"(?<![\w.~-])/(opt/venv|src|models)\b")
USER_CREATION = re.compile(r"groupadd [^&]+&& useradd [^&]+")


@dataclass
class Image:
    """The stand-in root folder of the built image, and what starting a container needs."""

    root: Path
    dockerfile: Dockerfile

    def host(self, text: str) -> str:
        """Container paths in ``text`` rewritten into the stand-in root."""
        return CONTAINER_PATHS.sub(lambda m: str(self.root / m[1]), text)

    def environment(self, stage: str, base_path: str) -> dict[str, str]:
        """The stage's ENV (container paths mapped), over the base image's PATH and locale."""
        env = {"PATH": base_path, "LANG": "C.UTF-8"}
        for name, value in self.dockerfile.env(stage).items():
            env[name] = self.host(value).replace("$PATH", base_path)  # map only what the Dockerfile wrote
        return env

    def command(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """An exec-form command with its program found on the container's PATH."""
        program = shutil.which(argv[0], path=env["PATH"])
        assert program is not None, f"{argv[0]} is not on the image's PATH"
        return [program, *argv[1:]]


def base_image_path() -> str:
    """This interpreter's folder stands in for the python image's /usr/local/bin."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])


def copy_into(image: Image, sources: tuple[str, ...], destination: str, workdir: str) -> None:
    """COPY from the build context, with Docker's rules: a folder's contents, several sources into a folder."""
    target = Path(image.host(destination if destination.startswith("/") else f"{workdir}/{destination}"))
    patterns = ignore_patterns(ROOT / ".dockerignore")
    into_folder = destination.endswith("/") or len(sources) > 1
    for source in sources:
        for file in context_files(ROOT, source, patterns):
            if (ROOT / source).is_dir():
                path = target / file.relative_to(ROOT / source)
            else:
                path = target / file.name if into_folder else target
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, path)


def build_stage(image: Image, stage: str, run_commands: bool = True) -> None:
    """Run a stage's COPY, WORKDIR and RUN instructions in order, as `docker build` would.

    ``run_commands=False`` for the runtime stage, whose only commands create its user: that part of the image is
    not reproduced here (it would add a user to this machine).
    """
    workdir = "/"
    env = image.environment(stage, base_image_path())
    for instruction in image.dockerfile.stage(stage).instructions:
        if instruction.keyword == "WORKDIR":
            workdir = instruction.value
            Path(image.host(workdir)).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY" and "from" not in instruction.flags:
            copy = copy_of(instruction)
            copy_into(image, copy.sources, copy.destination, workdir)
        elif instruction.keyword == "RUN" and not run_commands:
            assert USER_CREATION.fullmatch(instruction.value), f"RUN not reproduced here: {instruction.value}"
        elif instruction.keyword == "RUN":
            result = subprocess.run(
                ["sh", "-c", image.host(instruction.value)], cwd=image.host(workdir), env=env,
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            assert result.returncode == 0, f"RUN {instruction.value}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    dockerfile = Dockerfile.read(ROOT / "Dockerfile")
    wanted = re.search(r"python:(\d+)\.(\d+)", dockerfile.root_image(TARGET))
    assert wanted is not None
    if sys.version_info[:2] != (int(wanted[1]), int(wanted[2])):
        pytest.skip(f"the {TARGET} image runs Python {wanted[1]}.{wanted[2]}, its lock is resolved for it")
    built = Image(tmp_path_factory.mktemp("image") / "root", dockerfile)
    build_stage(built, f"{TARGET}-build")
    build_stage(built, TARGET, run_commands=False)  # its COPY of the bundled models; the venv is already in place
    return built


def run_in_image(image: Image, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**image.environment(TARGET, base_image_path()), **env}
    return subprocess.run(
        image.command(argv, environment), cwd=image.root, env=environment,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_image_holds_the_service_and_not_tensorflow(image: Image) -> None:
    found = run_in_image(image, ["python", "-c", "import service, onnxruntime; print(service.__file__)"])
    assert found.returncode == 0, found.stderr
    assert str(image.root / "opt" / "venv") in found.stdout, "the service comes from the image's environment"
    tensorflow = run_in_image(image, ["python", "-c", "import tensorflow"])
    assert tensorflow.returncode != 0
    assert "ModuleNotFoundError" in tensorflow.stderr
    consistent = run_in_image(image, ["python", "-m", "pip", "check"])
    assert consistent.returncode == 0, consistent.stdout


def test_healthcheck_fails_while_nothing_serves(image: Image) -> None:
    _, command = image.dockerfile.healthcheck(TARGET)
    assert run_in_image(image, command, ATTENTION_SERVE_PORT=str(free_port())).returncode != 0


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited with {process.returncode}: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready within {within}s: {log.read_text()[-3000:]}")


@contextmanager
def container(image: Image, env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The image's ENTRYPOINT running with ``env``, once ready; killed on the way out if still running."""
    with log.open("wb") as output:
        command = image.command(image.dockerfile.exec_form(TARGET, "ENTRYPOINT"), env)
        process = subprocess.Popen(command, cwd=image.root, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{env['ATTENTION_SERVE_PORT']}"
            wait_ready(process, url, log)
            yield process, url
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_container_serves_predictions_then_stops_on_sigterm(image: Image, tmp_path: Path) -> None:
    port, grpc_port = str(free_port()), str(free_port())  # what `-p` would map; the rest is the image's own
    env = {**image.environment(TARGET, base_image_path()), "ATTENTION_SERVE_PORT": port}
    env["ATTENTION_SERVE_GRPC_PORT"] = grpc_port
    assert env["ATTENTION_SERVE_HOST"] == "0.0.0.0"
    assert Path(env["ATTENTION_SERVE_MODEL_REPOSITORY"]).joinpath("sentiment", "1", "model.onnx").is_file()
    log = tmp_path / "server.log"
    with container(image, env, log) as (process, url):
        _, healthcheck = image.dockerfile.healthcheck(TARGET)
        assert run_in_image(image, healthcheck, ATTENTION_SERVE_PORT=port).returncode == 0

        response = httpx.post(f"{url}/v1/models/sentiment:predict", json={"instances": [TEXT]}, timeout=30)
        assert response.status_code == 200, response.text
        (row,) = response.json()["predictions"]
        assert row["label"] in row["probabilities"]
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        assert len(row["tokens"]) == len(row["offsets"]) == len(row["attention"]) > 0
        assert abs(sum(row["attention"]) - 1) < 1e-4

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:  # the image's gRPC side, health first
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING

        metadata = httpx.get(f"{url}/v1/models/sentiment/metadata", timeout=10).json()
        assert metadata["attention_serve"]["providers"][0] == env["ATTENTION_SERVE_PROVIDERS"].split(",")[0]

        process.send_signal(signal.SIGTERM)  # what `docker stop` sends (the image's STOPSIGNAL)
        status = process.wait(timeout=float(env["ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S"]) + 10)
    # uvicorn re-raises SIGTERM after its graceful shutdown (143 in a shell); as PID 1 the process exits 0 instead.
    assert status in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()


def test_compose_service_serves_a_newly_exported_version_without_restart(image: Image, tmp_path: Path) -> None:
    """docker-compose.yml's serve-cpu: the image with compose's environment and ./models mounted over /models."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["serve-cpu"]
    (mount,) = [v for v in service["volumes"] if v["target"] == "/models"]
    host_models = tmp_path / "models"  # a copy of the folder compose mounts, so the test may add to it
    shutil.copytree(ROOT / mount["source"], host_models)
    composed = {k: interpolate(str(v)) for k, v in service["environment"].items() if v is not None}
    port = str(free_port())
    env = {**image.environment(TARGET, base_image_path()), **composed}
    env |= {"ATTENTION_SERVE_PORT": port, "ATTENTION_SERVE_MODEL_REPOSITORY": str(host_models)}
    env["ATTENTION_SERVE_GRPC_PORT"] = str(free_port())
    with container(image, env, tmp_path / "server.log") as (_, url):
        add_version(host_models, 2)  # as the exporter writes it: a staging folder, then a rename
        deadline = time.monotonic() + 10 * float(env["ATTENTION_SERVE_POLL_INTERVAL_S"]) + 30
        while time.monotonic() < deadline:
            answer = httpx.post(f"{url}/v1/models/sentiment:predict", json={"instances": [TEXT]}, timeout=30)
            if answer.status_code == 200 and answer.headers["X-Model-Version"] == "2":
                break
            time.sleep(0.2)
        assert answer.headers["X-Model-Version"] == "2", "version 2 was not served without a restart"
