"""The ONNX Runtime contract, on the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.providers import (
    CPU_PROVIDER,
    RuntimeLoadError,
    check_fallback,
    choose_providers,
    places_on_accelerator,
    provider_options,
)
from service.runtime import OnnxModel, RuntimeOptions
from tests.conftest import BUNDLED

OUTPUTS = ("probabilities", "attention", "self_attention")


@pytest.fixture(scope="module")
def model() -> OnnxModel:
    return OnnxModel(BUNDLED / "model.onnx", RuntimeOptions(intra_op_threads=1))


def test_default_providers_prefer_the_gpu_and_end_with_the_cpu() -> None:
    assert choose_providers(None, [CPU_PROVIDER]) == [CPU_PROVIDER]
    available = ["CUDAExecutionProvider", CPU_PROVIDER]
    assert choose_providers(None, available) == ["CUDAExecutionProvider", CPU_PROVIDER]


def test_requested_providers_must_exist() -> None:
    with pytest.raises(RuntimeLoadError, match="not available"):
        choose_providers(["CUDAExecutionProvider"], [CPU_PROVIDER])
    assert choose_providers([CPU_PROVIDER], [CPU_PROVIDER]) == [CPU_PROVIDER]


def test_session_reports_the_provider_in_use(model: OnnxModel) -> None:
    assert model.providers[0] == CPU_PROVIDER
    assert model.device == "cpu"
    assert [t.name for t in model.inputs] == ["input_ids", "attention_mask"]


def test_predict_returns_masked_distributions(model: OnnxModel) -> None:
    ids = np.array([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = model.predict(ids, mask, OUTPUTS)
    assert out["probabilities"].shape[0] == 2
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["attention"].sum(-1), 1.0, atol=1e-5)
    assert np.all(out["attention"][1, 2:] == 0)
    assert out["self_attention"].shape[:1] + out["self_attention"].shape[3:] == (2, 4, 4)
    assert np.all(out["self_attention"][1, :, :, :, 2:] == 0)


def test_io_binding_gives_the_same_answer(model: OnnxModel) -> None:
    ids = np.array([[5, 6, 7]])
    mask = np.ones_like(ids)
    plain = model.predict(ids, mask, OUTPUTS)
    session = model.explaining()  # the bundled model has no lean graph: its one session
    session.use_binding = True
    try:
        bound = model.predict(ids, mask, OUTPUTS)
    finally:
        session.use_binding = False
    for name in OUTPUTS:
        np.testing.assert_allclose(bound[name], plain[name], atol=1e-6)


def test_unreadable_graph_raises_a_load_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(RuntimeLoadError) as error:
        OnnxModel(broken, RuntimeOptions())
    assert str(tmp_path) not in str(error.value)


def test_tensorrt_gets_an_engine_cache_and_a_profile_up_to_the_largest_batch(tmp_path: Path) -> None:
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU_PROVIDER]
    trt, cuda, cpu = provider_options(providers, tmp_path, (32, 128), ("input_ids", "attention_mask"))
    assert trt["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert trt["trt_profile_max_shapes"] == "input_ids:32x128,attention_mask:32x128"
    (only_ids,) = provider_options(["TensorrtExecutionProvider"], None, (8, 40), ("tokens",))
    assert only_ids["trt_profile_opt_shapes"] == "tokens:8x40"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    assert cuda == cpu == {}


def test_a_quiet_fallback_is_refused_when_the_provider_is_required(caplog: pytest.LogCaptureFixture) -> None:
    check_fallback(CPU_PROVIDER, CPU_PROVIDER, required=True)
    check_fallback("CUDAExecutionProvider", CPU_PROVIDER, required=False)
    assert "fell back to CPUExecutionProvider" in caplog.text
    with pytest.raises(RuntimeLoadError, match="CUDAExecutionProvider was required"):
        check_fallback("CUDAExecutionProvider", CPU_PROVIDER, required=True)


def test_places_on_accelerator_only_when_a_gpu_provider_would_come_first() -> None:
    gpu = any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    assert places_on_accelerator(None) is gpu
    assert places_on_accelerator(["CPUExecutionProvider"]) is False
    assert places_on_accelerator(["NoSuchExecutionProvider"]) is False  # the load reports it, not the count
