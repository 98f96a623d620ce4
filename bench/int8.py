"""Whether an INT8 variant's label agreement can be judged on a model: the FP32 graph's margins (the gap between its
two most probable labels) on real corpus texts, beside each INT8 recipe's probability error and agreement; then
the same with the classification head fitted to the corpus (the encoder as it is), so the answers carry margins.

    python bench/int8.py --folder DIR/repository/base/1 [--texts 500] [--fit 1500] [--max-tokens 128]

``--folder``: an imported version (``bench/ladder.py`` builds them from random weights). The FP32 reference is its
lean graph where it has one. Recipes: the variant the import built (``model.int8.lean.onnx``), the importer's
recipe applied here (``model_export.variants.quantize_int8``) and the same per channel. A label flips where the
INT8 error exceeds the margin, so agreement says something about INT8 only where the FP32 margins are wide: a
random-weight model's answers are near-uniform. The fitted head (softmax regression on the pooled features of
``--fit`` texts, scored on the ``--texts`` others) shows how a random encoder's features carry the labels.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
import onnx
from onnx import numpy_helper

from bench.report import markdown_table
from model_export.data import load_bundled_corpus
from model_export.feeds import Feeds, batches, encode, predict
from model_export.variants import quantize_int8
from model_format.signature import PROBABILITIES, Signature, read_signature
from model_format.text import TextTokenizer

Calls = tuple[list[Feeds], list[int]]


def per_channel(onnx_bytes: bytes) -> bytes:
    """The importer's recipe with one scale per output channel of each weight."""
    return quantize_int8(onnx_bytes, per_channel=True)


def corpus(count: int, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``count`` corpus texts in a seeded order, and their labels as indices of the model's label ``names``."""
    data = load_bundled_corpus()
    pairs = list(zip(data.texts, data.labels, strict=True))
    random.Random(0).shuffle(pairs)
    return [text for text, _ in pairs[:count]], np.array([list(names).index(label) for _, label in pairs[:count]])


def head(model: onnx.ModelProto, output: str) -> tuple[str, str, str] | None:
    """The classification head ``softmax(features @ kernel + bias)`` ending at ``output``: the names of the
    features, the kernel and the bias; None where the graph ends otherwise."""
    made = {name: node for node in model.graph.node for name in node.output}
    weights = {init.name for init in model.graph.initializer}
    softmax = made.get(output)
    add = made.get(softmax.input[0]) if softmax is not None and softmax.op_type == "Softmax" else None
    if add is None or add.op_type != "Add":
        return None
    product, bias = (add.input[0], add.input[1]) if add.input[1] in weights else (add.input[1], add.input[0])
    matmul = made.get(product)
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in weights or bias not in weights:
        return None
    return matmul.input[0], matmul.input[1], bias


def fit(features: np.ndarray, labels: np.ndarray, classes: int, steps: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression (gradient descent, L2 1e-3) on standardised features, folded back into a kernel and bias
    for the raw features."""
    mean, spread = features.mean(0), features.std(0) + 1e-6
    z, target = (features - mean) / spread, np.eye(classes)[labels]
    kernel, bias = np.zeros((features.shape[1], classes)), np.zeros(classes)
    for _ in range(steps):
        logits = z @ kernel + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        kernel -= 0.05 * (z.T @ (p - target) / len(z) + 1e-3 * kernel)
        bias -= 0.05 * (p - target).mean(0)
    raw_kernel = kernel / spread[:, None]
    return raw_kernel.astype(np.float32), (bias - mean @ raw_kernel).astype(np.float32)


def with_head(model: onnx.ModelProto, names: tuple[str, str], kernel: np.ndarray, bias: np.ndarray) -> bytes:
    fitted = onnx.ModelProto()
    fitted.CopyFrom(model)
    for init in fitted.graph.initializer:
        for name, value in zip(names, (kernel, bias), strict=True):
            if init.name == name:
                init.CopyFrom(numpy_helper.from_array(value, name))
    return bytes(fitted.SerializeToString())


def margins(probabilities: np.ndarray) -> dict[str, float]:
    top = np.sort(probabilities, -1)
    gap = top[:, -1] - top[:, -2]
    p1, p5, p50 = np.percentile(gap, [1, 5, 50])
    return {"top_probability_mean": float(top[:, -1].mean()), "margin_p1": p1, "margin_p5": p5, "margin_p50": p50}


def compare(
    name: str, data: bytes, calls: Calls, reference: np.ndarray, labels: np.ndarray, keep: slice
) -> dict[str, str]:
    p, r, truth = predict(data, *calls)[keep], reference[keep], labels[keep]
    accuracy = f"{np.mean(r.argmax(-1) == truth):.3f} / {np.mean(p.argmax(-1) == truth):.3f}"
    return {
        "recipe": name,
        "agreement": f"{np.mean(p.argmax(-1) == r.argmax(-1)):.4f}",
        "max probability error": f"{np.abs(p - r).max():.5f}",
        "mean probability error": f"{np.abs(p - r).mean():.6f}",
        "accuracy FP32 / INT8": accuracy,
    }


def recipes(built: Path | None = None) -> list[tuple[str, Callable[[bytes], bytes]]]:
    """Each INT8 recipe by name: the variant the import built (``built``, where given and present) and the two
    made here from the FP32 bytes."""
    found = [("built by the import", lambda _: built.read_bytes())] if built is not None and built.is_file() else []
    return [*found, ("importer's recipe (per tensor)", quantize_int8), ("per channel", per_channel)]


def rounded(values: dict[str, float]) -> str:
    return json.dumps({key: round(value, 5) for key, value in values.items()})


def fitted_rows(
    model: onnx.ModelProto, output: str, calls: Calls, labels: np.ndarray, fitting: int, classes: int
) -> list[dict[str, str]]:
    """The recipes on the graph with its head fitted to the first ``fitting`` texts, scored on the others."""
    found = head(model, output)
    if found is None:
        print("no head fitted: the graph does not end in MatMul + Add + Softmax")
        return []
    features_name, kernel_name, bias_name = found
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(features_name, onnx.TensorProto.FLOAT, None))
    features = predict(bytes(probe.SerializeToString()), *calls, features_name)
    kernel, bias = fit(features[:fitting], labels[:fitting], classes)
    fitted = with_head(model, (kernel_name, bias_name), kernel, bias)
    reference, scored = predict(fitted, *calls, output), slice(fitting, None)
    spread, size = features[:fitting].std(0).mean(), np.abs(features).mean()
    print(f"fitted head: features' spread across texts {spread:.4f} (mean |feature| {size:.4f});", end=" ")
    print(rounded(margins(reference[scored])), flush=True)
    return [
        {"head": "fitted", **compare(name, make(fitted), calls, reference, labels, scored)} for name, make in recipes()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--folder", type=Path, required=True, help="an imported version's folder")
    parser.add_argument("--texts", type=int, default=500, help="corpus texts scored (default 500)")
    parser.add_argument("--fit", type=int, default=1500, help="more corpus texts the head is fitted on (0: no fit)")
    parser.add_argument("--max-tokens", type=int, default=128, help="texts cut to this many tokens (default 128)")
    args = parser.parse_args(argv)
    document = json.loads((args.folder / "model.json").read_text())
    signature: Signature = read_signature(document)
    lean = args.folder / "model.lean.onnx"
    graph = lean if lean.is_file() else args.folder / "model.onnx"
    fp32, output = graph.read_bytes(), signature.outputs[PROBABILITIES]
    model = onnx.load_from_string(fp32)
    tokenizer = TextTokenizer(args.folder / "tokenizer.json", np.dtype(np.int32), args.max_tokens)
    texts, labels = corpus(args.fit + args.texts, document["labels"])
    calls = batches(encode(tokenizer, texts, signature), signature, size=16)
    reference, scored = predict(fp32, *calls, output), slice(args.fit, None)
    print(f"{args.folder}: {args.texts} corpus texts scored, at most {args.max_tokens} tokens; FP32: {graph.name}")
    print("as imported:", rounded(margins(reference[scored])), flush=True)
    rows = [
        {"head": "as imported", **compare(name, make(fp32), calls, reference, labels, scored)}
        for name, make in recipes(args.folder / "model.int8.lean.onnx")
    ]
    if args.fit:
        rows += fitted_rows(model, output, calls, labels, args.fit, len(document["labels"]))
    print(markdown_table(list(rows[0]), [list(row.values()) for row in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
