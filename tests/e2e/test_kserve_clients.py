"""KServe's Python SDK, unmodified: ``InferenceRESTClient`` (v2, binary BYTES, ``model_name`` and a uuid ``id`` in
the body) and ``InferenceGRPCClient`` against the real server, from KServe's own virtualenv; answers agree with the
native REST API to 1e-6."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import start_server
from tests.e2e.kserve_env import PROBE, kserve_python
from tests.e2e.test_tritonclient import TEXTS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, list[dict], list[dict]]]:
    python = kserve_python()
    server = start_server(ROOT / "models", tmp_path_factory.mktemp("kserve") / "server.log")
    try:
        command = [str(python), str(PROBE), server.url, server.grpc_address, json.dumps(TEXTS)]
        probe = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert probe.returncode == 0, probe.stderr[-3000:]
        native = httpx.post(f"{server.url}/v1/models/sentiment:predict", json={"instances": TEXTS}, timeout=10)
        ids = httpx.post(
            f"{server.url}/v1/models/sentiment:predict", json={"instances": [[5, 6, 7, 8], [9, 10]]}, timeout=10
        )
        yield json.loads(probe.stdout), native.json()["predictions"], ids.json()["predictions"]
    finally:
        server.stop()


def assert_text_answer(answer: dict, expected: list[dict]) -> None:
    assert answer["label"] == [p["label"] for p in expected]
    np.testing.assert_allclose(
        answer["probabilities"], [list(p["probabilities"].values()) for p in expected], atol=1e-6
    )
    for row, length, prediction in zip(answer["attention"], answer["lengths"], expected, strict=True):
        np.testing.assert_allclose(row[:length], prediction["attention"], atol=1e-6)


def test_kserve_rest_client_v2(answers: Any) -> None:
    got, native, _ = answers
    assert got["rest"]["ready"]
    assert len(got["rest"]["text"]["id"]) == 36  # the uuid the SDK made, echoed
    assert_text_answer(got["rest"]["text"], native)


def test_kserve_grpc_client(answers: Any) -> None:
    got, native, ids = answers
    assert got["grpc"]["ready"]
    assert_text_answer(got["grpc"]["text"], native)
    assert got["grpc"]["ids"]["lengths"] == [4, 2]
    np.testing.assert_allclose(
        got["grpc"]["ids"]["probabilities"], [list(p["probabilities"].values()) for p in ids], atol=1e-6
    )
    assert got["grpc"]["unknown_model"] == "NOT_FOUND"
