"""Settings from the environment, and the combinations that are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service import sessions
from service.model_folder import load_folder
from service.sessions import LARGE_MODEL_PARAMETERS, RuntimeOptions
from service.settings import Settings
from tests.service.graphs import TinyGraph, write_folder


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTENTION_SERVE_MODELS", "sentiment, topics")
    monkeypatch.setenv("ATTENTION_SERVE_LENGTH_BUCKETS", "16,32,64")
    monkeypatch.setenv("ATTENTION_SERVE_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")
    monkeypatch.setenv("ATTENTION_SERVE_VERSION_LABELS", '{"sentiment": {"stable": 1}}')
    monkeypatch.setenv("ATTENTION_SERVE_API_KEY", "a-secret-key")
    settings = Settings()
    assert settings.models == ["sentiment", "topics"]
    assert settings.length_buckets == [16, 32, 64]
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.version_labels == {"sentiment": {"stable": 1}}
    assert settings.api_key is not None
    assert "a-secret-key" not in repr(settings)


def test_threads_are_shared_between_workers() -> None:
    assert Settings(intra_op_threads=3, workers=2).threads == 3
    assert Settings(workers=64).threads == 1


def test_automatic_workers_are_one_per_core_on_cpu_and_one_otherwise() -> None:
    cores = len(os.sched_getaffinity(0))
    assert Settings().worker_count(accelerated=False) == cores
    assert Settings().worker_count(accelerated=True) == 1
    assert Settings(admin_token="t").worker_count(accelerated=False) == 1
    assert Settings(workers=3).worker_count(accelerated=True) == 3
    assert Settings().threads == cores  # a single process built directly (tests, embedding) uses every core


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_instances": 10, "max_queue_size": 5}, "max_instances cannot exceed max_queue_size"),
        ({"workers": 2, "admin_token": "t"}, "need one worker"),
        ({"version_policy": "newest"}, "version_policy"),
        ({"unknown_setting": 1}, "unknown_setting"),
    ],
)
def test_impossible_combinations_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_the_grpc_port_is_its_own() -> None:
    assert Settings().grpc_port == 8001
    assert Settings(grpc_port=0).grpc_port == 0  # gRPC off
    with pytest.raises(ValidationError, match="grpc_port and port must differ"):
        Settings(port=9000, grpc_port=9000)


def test_a_large_model_gets_every_core_and_a_small_one_its_workers_share() -> None:
    cores = len(os.sched_getaffinity(0))
    settings = Settings(workers=64)
    options = RuntimeOptions(intra_op_threads=settings.threads, large_model_threads=settings.large_model_threads)
    assert options.threads_for(LARGE_MODEL_PARAMETERS - 1) == 1
    assert options.threads_for(LARGE_MODEL_PARAMETERS) == cores
    fixed = Settings(workers=2, intra_op_threads=3)
    options = RuntimeOptions(intra_op_threads=fixed.threads, large_model_threads=fixed.large_model_threads)
    assert options.threads_for(1) == options.threads_for(10**9) == 3


def test_a_version_opens_with_the_threads_its_size_calls_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_folder(tmp_path, TinyGraph())
    options = RuntimeOptions(intra_op_threads=1, large_model_threads=2)
    assert load_folder(folder, "tiny", 1, options, "fp32", 2).model.threads == 1
    monkeypatch.setattr(sessions, "LARGE_MODEL_PARAMETERS", 10)  # the tiny graph is "large" now
    assert load_folder(folder, "tiny", 1, options, "fp32", 2).model.threads == 2
