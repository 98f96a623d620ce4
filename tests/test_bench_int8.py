"""bench/int8.py compares INT8 recipes with the FP32 graph on corpus texts: run it, tiny, on the bundled (trained)
model so it breaks when the importer's recipe, the folder's format or the head it fits changes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.int8 import fit, head, with_head
from tests.conftest import ROOT


def test_the_int8_bench_reports_every_recipe_with_the_head_as_is_and_fitted() -> None:
    command = [sys.executable, str(ROOT / "bench" / "int8.py"), "--folder", str(ROOT / "models" / "sentiment" / "1"),
               "--texts", "24", "--fit", "120"]  # fmt: skip
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [
        line for line in done.stdout.splitlines() if line.startswith("| as imported") or line.startswith("| fitted")
    ]
    assert [row.split(" | ")[1] for row in rows] == ["importer's recipe (per tensor)", "per channel"] * 2
    for row in rows:
        agreement = float(row.split(" | ")[2])
        assert 0.0 <= agreement <= 1.0


def _classifier(features: int = 4, classes: int = 3) -> onnx.ModelProto:
    kernel = numpy_helper.from_array(np.zeros((features, classes), np.float32), "kernel")
    bias = numpy_helper.from_array(np.zeros(classes, np.float32), "bias")
    nodes = [
        helper.make_node("MatMul", ["x", "kernel"], ["product"]),
        helper.make_node("Add", ["bias", "product"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])], [kernel, bias],
    )  # fmt: skip
    return helper.make_model(graph)


def test_the_head_is_found_whichever_side_of_the_add_holds_the_bias_and_refitted_in_place() -> None:
    model = _classifier()
    assert head(model, "probabilities") == ("x", "kernel", "bias")
    assert head(model, "logits") is None  # not a softmax
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = rng.normal(size=(300, 4)) + 3.0 * np.eye(4)[labels]  # class k lifts feature k
    kernel, bias = fit(features, labels, 3, steps=500)
    assert np.mean((features @ kernel + bias).argmax(1) == labels) > 0.9
    fitted = onnx.load_from_string(with_head(model, ("kernel", "bias"), kernel, bias))
    stored = {init.name: numpy_helper.to_array(init) for init in fitted.graph.initializer}
    np.testing.assert_array_equal(stored["kernel"], kernel)
    np.testing.assert_array_equal(stored["bias"], bias)
