"""The Dockerfile, checked without a Docker engine: hadolint, and what each target must hold and do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.protocols.grpc_process import NATIVE_INSTALLED
from tests.conftest import ROOT
from tests.deploy.dockerfile import Dockerfile, context_files, ignore_patterns, is_ignored, parse_env
from tests.deploy.tools import run, tool

SERVING = {"gpu": "gpu-build", "cpu": "cpu-build"}  # runtime stage -> the stage that builds its environment
FIRST_PROVIDER = {"gpu": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
DOCKER_STOP_TIMEOUT_S = 10  # `docker stop` sends SIGKILL after this unless told otherwise


def test_hadolint_finds_nothing() -> None:
    result = run([tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_report_a_mistake(tmp_path: Path) -> None:
    """Control: the linter really reads the file (a rule it must catch, appended to our Dockerfile)."""
    planted = tmp_path / "Dockerfile"
    planted.write_text((ROOT / "Dockerfile").read_text() + "RUN cd /tmp && ls\n")
    result = run([tool("hadolint"), "--no-color", str(planted)])
    assert result.returncode != 0
    assert "DL3003" in result.stdout


def test_every_inline_ignore_says_why() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    ignores = [i for i, line in enumerate(lines) if line.startswith("# hadolint ignore=")]
    assert ignores, "expected the documented DL3008 ignores"
    for i in ignores:
        above = lines[i - 1]
        assert above.startswith("# "), f"line {i + 1}: an ignore without a reason above it"
        assert "hadolint" not in above, f"line {i + 1}: an ignore without a reason above it"


def test_targets_are_named_and_the_default_is_the_gpu_image(dockerfile: Dockerfile) -> None:
    names = [stage.name for stage in dockerfile.stages]
    assert {"gpu", "cpu", "exporter"} <= set(names)
    assert names[-1] == "gpu", "a plain `docker build .` builds the last stage"
    assert len(names) == len(set(names))


def test_gpu_image_is_cuda_13_with_cudnn_9(dockerfile: Dockerfile) -> None:
    # onnxruntime-gpu >= 1.27 links CUDA 13 and cuDNN 9 (libcublasLt.so.13, libcudnn.so.9).
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-cudnn-runtime-ubuntu24\.04", dockerfile.root_image("gpu"))
    assert dockerfile.root_image("gpu-build") == dockerfile.root_image("gpu")


@pytest.mark.parametrize("stage", ["cpu", "cpu-build", "exporter", "exporter-build"])
def test_cpu_images_are_python_311_slim(dockerfile: Dockerfile, stage: str) -> None:
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", dockerfile.root_image(stage))


@pytest.mark.parametrize("target", SERVING)
def test_serving_image_starts_the_service_as_a_non_root_user(dockerfile: Dockerfile, target: str) -> None:
    assert dockerfile.exec_form(target, "ENTRYPOINT") == ["python", "-m", "service"]
    assert dockerfile.last(target, "CMD") is None, "arguments after the image name go to the service"
    user = dockerfile.last(target, "USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it.
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    assert dockerfile.env(target)["PATH"].startswith("/opt/venv/bin:"), "`python` must be the image's venv"


@pytest.mark.parametrize("target", SERVING)
def test_serving_image_listens_on_every_interface_at_its_exposed_port(dockerfile: Dockerfile, target: str) -> None:
    env = dockerfile.env(target)
    expose = dockerfile.last(target, "EXPOSE")
    assert expose is not None
    assert env["ATTENTION_SERVE_HOST"] == "0.0.0.0"
    assert expose.value.split() == [env["ATTENTION_SERVE_PORT"], env["ATTENTION_SERVE_GRPC_PORT"]] == ["8000", "8001"]


@pytest.mark.parametrize("target", SERVING)
def test_healthcheck_asks_readiness_on_the_configured_port(dockerfile: Dockerfile, target: str) -> None:
    options, command = dockerfile.healthcheck(target)
    assert command[:2] == ["python", "-c"], "slim images have no curl"
    assert "/v2/health/ready" in command[2]
    assert "ATTENTION_SERVE_PORT" in command[2]
    assert "127.0.0.1" in command[2]
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)


@pytest.mark.parametrize("target", SERVING)
def test_stop_lets_requests_in_flight_finish(dockerfile: Dockerfile, target: str) -> None:
    signal = dockerfile.last(target, "STOPSIGNAL")
    assert signal is not None
    assert signal.value == "SIGTERM"
    grace = float(dockerfile.env(target)["ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S"])
    assert 0 < grace < DOCKER_STOP_TIMEOUT_S, "a plain `docker stop` would kill requests still finishing"


@pytest.mark.parametrize("target", SERVING)
def test_serving_image_bakes_the_model_repository_it_serves(dockerfile: Dockerfile, target: str) -> None:
    copies = [c for c in dockerfile.stage(target).copies() if c.stage is None]
    assert [(c.sources, c.destination) for c in copies] == [(("models",), "/models")]
    assert dockerfile.env(target)["ATTENTION_SERVE_MODEL_REPOSITORY"] == "/models"


@pytest.mark.parametrize("target", SERVING)
def test_serving_image_holds_only_its_own_locked_environment(dockerfile: Dockerfile, target: str) -> None:
    build = SERVING[target]
    from_stages = [(c.stage, c.sources) for c in dockerfile.stage(target).copies() if c.stage is not None]
    assert from_stages == [(build, ("/opt/venv",))]
    runs = " ".join(i.value for i in dockerfile.stage(build).all("RUN"))
    assert f"deploy/install.sh {target} --deps-only" in runs
    assert runs.rstrip().endswith(f"deploy/install.sh {target}")
    locks = [s for c in dockerfile.stage(build).copies() for s in c.sources if s.startswith("deploy/requirements/")]
    assert locks == [f"deploy/requirements/{target}.txt"]


@pytest.mark.parametrize("target", SERVING)
def test_serving_image_prefers_its_provider(dockerfile: Dockerfile, target: str) -> None:
    providers = dockerfile.env(target)["ATTENTION_SERVE_PROVIDERS"].split(",")
    assert providers[0] == FIRST_PROVIDER[target]
    assert providers[-1] == "CPUExecutionProvider"


def test_exporter_writes_into_the_repository_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    assert dockerfile.exec_form("exporter", "ENTRYPOINT") == ["python", "-m", "model_export"]
    command = dockerfile.exec_form("exporter", "CMD")
    assert command[0] == "train"
    assert command[command.index("--repository") + 1] == "/models"
    user = dockerfile.last("exporter", "USER")
    assert user is not None
    assert not user.value.startswith(("0", "root"))
    assert dockerfile.env("exporter")["HOME"] == "/tmp", "Keras writes its config under $HOME"
    runs = " ".join(i.value for i in dockerfile.stage("exporter-build").all("RUN"))
    assert "deploy/install.sh exporter" in runs


@pytest.mark.parametrize(("target", "python"), [("cpu", "3.11"), ("exporter", "3.11"), ("gpu", "3.12")])
def test_each_lock_is_resolved_for_the_python_of_its_image(dockerfile: Dockerfile, target: str, python: str) -> None:
    lock = (ROOT / "deploy" / "requirements" / f"{target}.txt").read_text()
    assert f"\n# python: {python}\n" in lock
    base = dockerfile.root_image(target)
    # Ubuntu 24.04's python3 is 3.12; the python images name theirs in the tag.
    assert base.startswith(f"python:{python}-") or (python == "3.12" and base.endswith("-ubuntu24.04"))


def test_build_context_holds_everything_the_dockerfile_copies(dockerfile: Dockerfile) -> None:
    patterns = ignore_patterns(ROOT / ".dockerignore")
    for stage in dockerfile.stages:
        for copy in stage.copies():
            if copy.stage is not None:
                continue
            for source in copy.sources:
                on_disk = ROOT / source
                assert on_disk.exists(), f"COPY {source}: no such path"
                kept = context_files(ROOT, source, patterns)
                every = [on_disk] if on_disk.is_file() else [p for p in on_disk.rglob("*") if p.is_file()]
                wanted = [p for p in every if "__pycache__" not in p.parts and not p.name.endswith(".pyc")]
                assert set(wanted) <= set(kept), f"COPY {source}: .dockerignore drops {set(wanted) - set(kept)}"


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "bench/run.py",
        "runs/gpu_check/summary.json",
        "docker-compose.yml",
        "service/__pycache__/app.cpython-311.pyc",
        "models/sentiment/.incoming-x1/model.onnx",
        "models/.staging/model.onnx",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert is_ignored(path, ignore_patterns(ROOT / ".dockerignore"))


@pytest.mark.parametrize(
    "path", ["service/app.py", "models/sentiment/1/model.onnx", "deploy/requirements/gpu.txt", "pyproject.toml"]
)
def test_build_context_keeps(path: str) -> None:
    assert not is_ignored(path, ignore_patterns(ROOT / ".dockerignore"))


def test_environment_values_parse_as_docker_reads_them() -> None:
    """The ENV reader the tests rely on: quoted values, several pairs per line, variables left as written."""
    parsed = parse_env('A=1 B="two words" C=/opt/venv/bin:$PATH')
    assert parsed == {"A": "1", "B": "two words", "C": "/opt/venv/bin:$PATH"}


@pytest.mark.parametrize("target", SERVING)
def test_serving_image_builds_the_native_grpc_front_where_it_is_looked_for(dockerfile: Dockerfile, target: str) -> None:
    runs = [i.value for i in dockerfile.stage(SERVING[target]).all("RUN")]
    built = [run for run in runs if "native/build.sh" in run]
    assert built, "the native gRPC front is not built"
    assert f"/opt/venv/bin/{NATIVE_INSTALLED}" in built[0]  # /opt/venv/bin is on the image's PATH
    assert "/opt/venv/bin" in dockerfile.env(target)["PATH"].split(":")
