"""Shared fixtures: the bundled model, throwaway repositories built from it, and settings."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model_format.signature import Signature as ServedSignature
from model_format.signature import check_graph, read_signature
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_REPOSITORY = ROOT / "models"
BUNDLED = BUNDLED_REPOSITORY / "sentiment" / "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_repository(tmp_path: Path) -> Callable[..., Path]:
    """A fresh repository holding copies of the bundled model as the given versions."""

    def make(versions: tuple[int, ...] = (1,), name: str = "sentiment") -> Path:
        root = tmp_path / "repository"
        for version in versions:
            add_version(root, version, name)
        return root

    return make


def add_version(root: Path, version: int, name: str = "sentiment", edit: Callable[[dict], None] | None = None) -> Path:
    """Copy the bundled model to ``root/name/version`` (via a staging folder, as the exporter does)."""
    staging = root / name / f".staging-{version}"
    shutil.copytree(BUNDLED, staging)
    if edit is not None:
        document = json.loads((staging / "model.json").read_text())
        edit(document)
        (staging / "model.json").write_text(json.dumps(document))
    target = root / name / str(version)
    staging.rename(target)
    return target


@pytest.fixture(scope="session")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every kind of user model (tests/model_export/user_models.py), built and imported once for the whole run.

    Needs TensorFlow (the export extra): a test using it is skipped without.
    """
    pytest.importorskip("tensorflow", reason="importing users' models needs the export extra")
    from tests.model_export.user_models import KINDS, build

    root = tmp_path_factory.mktemp("user-models")
    return {kind: build(kind, root / "repository", root / "work") for kind in KINDS}


@pytest.fixture(scope="session")
def hub_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every pretrained-transformer family (tests/model_export/hub_models.py), built small and imported once.

    Needs TensorFlow and keras-hub (the export extra and scripts/test.sh's keras-hub step): a test using it is
    skipped without TensorFlow, and fails if keras-hub is missing where TensorFlow is installed.
    """
    pytest.importorskip("tensorflow", reason="importing keras-hub models needs the export extra")
    from tests.model_export.hub_models import KINDS, build

    root = tmp_path_factory.mktemp("hub-models")
    return {kind: build(kind, root / "repository", root / "work") for kind in KINDS}


def settings_for(root: Path, **overrides: object) -> Settings:
    # gRPC off unless a test asks for it: in-process apps must not all bind the default port.
    values: dict[str, object] = {
        "model_repository": root, "poll_interval_s": 0, "intra_op_threads": 1, "grpc_port": 0,
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def served_signature(document: dict[str, Any]) -> ServedSignature:
    """A model.json's signature as the service reads it, checked against the graph's inputs and outputs there."""
    read = read_signature(document, [o["name"] for o in document["outputs"]])
    check_graph(
        read,
        {i["name"]: i["dtype"] for i in document["inputs"]},
        {o["name"]: tuple(o["shape"]) for o in document["outputs"]},
    )
    return read
