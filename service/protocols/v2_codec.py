"""Open Inference Protocol v2 ↔ data plane: decode infer requests (JSON or binary tensors), encode results.

Inputs: ``text`` (BYTES [N] or [N, 1]), with ``text_pair`` beside it for a model that reads pairs, or
``input_ids`` (INT32/INT64 [N, T]) with an optional ``attention_mask`` of the same shape (right padding).
Outputs: ``label``, ``probabilities``, ``attention``, ``lengths``, ``tokens``, ``offsets`` (``[N, T, 3]`` with each
token's text for a pair model), and on request ``self_attention`` and ``rollout``; ragged outputs are zero-padded to
the longest sequence, ``lengths`` says how much of each row is real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.budget import MapChoice
from service.dataplane import (
    ATTENTION,
    OCCLUSION,
    OPTIONAL_OUTPUTS,
    ROLLOUT,
    SELF_ATTENTION,
    InferenceRequest,
    InferenceResult,
    TextPair,
)
from service.errors import InvalidInput
from service.protocols import codec, tensors

OUTPUTS = (
    "label", "probabilities", "attention", "lengths", "tokens", "offsets", "self_attention", "rollout", "occlusion",
)  # fmt: skip
DEFAULT_OUTPUTS = ("label", "probabilities", "attention", "lengths")
INPUTS = ("text", "text_pair", "input_ids", "attention_mask")
ID_TYPES = ("INT32", "INT64")
REQUEST_PARAMETERS = {
    "attention", "binary_data_output", "timeout", "timeout_ms", "truncate", "priority", "layers", "heads",
    "explain", "occlusion_window", "target",
}  # fmt: skip
ATTENTION_OUTPUTS = (ATTENTION, SELF_ATTENTION, ROLLOUT, OCCLUSION)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class DecodedInfer:
    """The data-plane request, the outputs asked for (None: the defaults) and the request's id."""

    request: InferenceRequest
    outputs: tuple[RequestedOutput, ...] | None
    id: str | None
    binary_default: bool = False


class _Binary:
    """The binary section after the JSON header, consumed in the order of the inputs that use it."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, size: Any, where: str) -> bytes:
        if type(size) is not int or size < 0 or self.offset + size > len(self.data):
            raise InvalidInput(f"{where}: binary_data_size does not fit the binary data sent")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def decode_infer(body: Any, binary: bytes, model: str, version: int | None) -> DecodedInfer:
    fields = codec.expect_object(body, "body")
    unknown = set(fields) - {"id", "model_name", "parameters", "inputs", "outputs"}
    if unknown:
        raise InvalidInput(codec.unknown_fields(unknown, "body"))
    if fields.get("model_name", model) != model:  # KServe's client repeats the path's model name in the body
        raise InvalidInput("model_name: the body names another model than the path")
    request_id = fields.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"id: expected a string, got {codec.kind(request_id)}")
    parameters = _request_parameters(fields.get("parameters"))
    tensors_by_name = _decode_inputs(fields.get("inputs"), _Binary(binary))
    items, source = _items(tensors_by_name)
    binary_default = bool(parameters.get("binary_data_output", False))
    outputs = _requested_outputs(fields.get("outputs"), binary_default)
    wanted = _wanted(outputs, parameters)
    maps = codec.decode_maps(parameters) if "layers" in parameters or "heads" in parameters else MapChoice()
    explained, occlusion = codec.decode_explanation(parameters)
    if explained:
        wanted = (wanted if wanted is not None else frozenset({codec.DEFAULT})) | explained
    timeout = _timeout(parameters)
    truncate = bool(parameters.get("truncate", False))
    request = InferenceRequest(model, version, items, wanted, truncate, timeout, source, maps, occlusion)
    return DecodedInfer(request, outputs, request_id, binary_default)


def _request_parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    parameters = codec.expect_object(value, "parameters")
    unknown = set(parameters) - REQUEST_PARAMETERS
    if unknown:
        raise InvalidInput(codec.unknown_fields(unknown, "parameters", "unsupported parameter(s)"))
    for flag in ("binary_data_output", "truncate"):
        if flag in parameters:
            codec.decode_flag(parameters[flag], f"parameters.{flag}")
    return parameters


def _timeout(parameters: dict[str, Any]) -> float | None:
    if "timeout_ms" in parameters:
        return codec.decode_timeout_ms(parameters["timeout_ms"], "parameters.timeout_ms")
    if "timeout" in parameters:  # Triton's request timeout, in microseconds
        microseconds = parameters["timeout"]
        if type(microseconds) is not int or not 0 < microseconds <= 3_600_000_000:
            raise InvalidInput("parameters.timeout: expected microseconds between 1 and 3600000000")
        return microseconds / 1e6
    return None


def _decode_inputs(value: Any, binary: _Binary) -> dict[str, np.ndarray | list[str]]:
    if not isinstance(value, list) or not value:
        raise InvalidInput("inputs: expected a non-empty list of input tensors")
    decoded: dict[str, np.ndarray | list[str]] = {}
    for index, tensor in enumerate(value):
        fields = codec.expect_object(tensor, f"inputs[{index}]")
        name = fields.get("name")
        if name not in INPUTS:
            raise InvalidInput(f"inputs[{index}].name: expected one of {list(INPUTS)}, got {codec.shown(name)}")
        if name in decoded:
            raise InvalidInput(f"inputs[{index}]: input '{name}' is given twice")
        decoded[name] = _decode_tensor(fields, f"input '{name}'", binary)
    if binary.offset != len(binary.data):
        raise InvalidInput("the binary data is longer than the inputs' binary_data_size values add up to")
    return decoded


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidInput(f"{where}.shape: expected a list of non-negative integers")
    return tuple(value)


def _decode_tensor(fields: dict[str, Any], where: str, binary: _Binary) -> np.ndarray | list[str]:
    shape = _shape(fields.get("shape"), where)
    is_text = fields["name"] in ("text", "text_pair")
    if (is_text and not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))) or (not is_text and len(shape) != 2):
        raise InvalidInput(f"{where}.shape: expected {'[batch] or [batch, 1]' if is_text else '[batch, sequence]'}")
    datatype = fields.get("datatype")
    expected = ("BYTES",) if is_text else ID_TYPES
    if not isinstance(datatype, str) or datatype not in expected:
        raise InvalidInput(f"{where}.datatype: expected {' or '.join(expected)}, got {codec.shown(datatype)}")
    parameters = codec.expect_object(fields.get("parameters") or {}, f"{where}.parameters")
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"{where}: shared-memory tensors are not supported; send the data in the request")
    count = math.prod(shape)
    if "binary_data_size" in parameters:
        if "data" in fields:
            raise InvalidInput(f"{where}: give either data or binary_data_size, not both")
        chunk = binary.take(parameters["binary_data_size"], where)
        if datatype == "BYTES":
            return tensors.decode_bytes_elements(chunk, count, where)
        return tensors.decode_fixed(chunk, datatype, count, where).astype(np.int64).reshape(shape)
    if "data" not in fields:
        raise InvalidInput(f"{where}: no data")
    flat = _flatten(fields["data"], len(shape), where)
    if len(flat) != count:
        raise InvalidInput(f"{where}: {len(flat)} elements of data, the shape {list(shape)} needs {count}")
    if datatype == "BYTES":
        return [codec.decode_text(v, f"{where}.data[{i}]") for i, v in enumerate(flat)]
    return codec.decode_ids(flat, f"{where}.data").reshape(shape)


def _flatten(data: Any, depth: int, where: str) -> list[Any]:
    """Row-major elements of flat or nested (at most the tensor's rank deep) JSON data."""
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data: expected a list")
    flat: list[Any] = []

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if not isinstance(item, list):
                flat.append(item)
            elif level >= depth:
                raise InvalidInput(f"{where}.data: nested deeper than the tensor's rank {depth}")
            else:
                walk(item, level + 1)

    walk(data, 1)
    return flat


def _items(decoded: dict[str, np.ndarray | list[str]]) -> tuple[list[str | np.ndarray | TextPair], str]:
    if ("text" in decoded) == ("input_ids" in decoded):
        raise InvalidInput("inputs: send exactly one of 'text' or 'input_ids'")
    if "text_pair" in decoded and "text" not in decoded:
        raise InvalidInput("inputs: text_pair goes with text, the first text of each pair")
    if "text" in decoded:
        if "attention_mask" in decoded:
            raise InvalidInput("inputs: attention_mask goes with input_ids, not text")
        texts = decoded["text"]
        assert isinstance(texts, list)
        if "text_pair" in decoded:
            return _pairs(texts, decoded["text_pair"]), "input 'text'"
        return list(texts), "input 'text'"
    ids = decoded["input_ids"]
    assert isinstance(ids, np.ndarray)
    rows: list[str | np.ndarray | TextPair] = list(ids)
    mask = decoded.get("attention_mask")
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.shape != ids.shape:
            raise InvalidInput("input 'attention_mask': expected the shape of input_ids")
        rows = [
            codec.apply_mask(row, m, f"input 'input_ids'[{i}]")
            for i, (row, m) in enumerate(zip(ids, mask, strict=True))
        ]
    return rows, "input 'input_ids'"


def _pairs(texts: list[str], seconds: np.ndarray | list[str]) -> list[str | np.ndarray | TextPair]:
    assert isinstance(seconds, list)
    if len(seconds) != len(texts):
        raise InvalidInput(f"input 'text_pair': {len(seconds)} texts for {len(texts)} in input 'text'; give one each")
    return [TextPair(text, pair) for text, pair in zip(texts, seconds, strict=True)]


def _wanted(outputs: tuple[RequestedOutput, ...] | None, parameters: dict[str, Any]) -> frozenset[str] | None:
    """The attention outputs asked for: by the ``outputs`` list, or by ``parameters.attention`` (our extension,
    as over native REST) with the default outputs; None for the version's default."""
    if "attention" in parameters:
        if outputs is not None:
            raise InvalidInput("parameters.attention: give either the outputs list or this parameter, not both")
        return codec.decode_attention(parameters["attention"], "parameters.attention")
    return None if outputs is None else frozenset(o.name for o in outputs) & OPTIONAL_OUTPUTS


def _requested_outputs(value: Any, binary_default: bool) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidInput("outputs: expected a non-empty list of {name, parameters?} objects")
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(value):
        fields = codec.expect_object(item, f"outputs[{index}]")
        name = fields.get("name")
        if name not in OUTPUTS:
            shown = codec.shown(name)
            raise InvalidInput(f"outputs[{index}].name: unknown output {shown}; outputs are {list(OUTPUTS)}")
        if any(o.name == name for o in outputs):
            raise InvalidInput(f"outputs[{index}]: output '{name}' is asked for twice")
        parameters = codec.expect_object(fields.get("parameters") or {}, f"outputs[{index}].parameters")
        binary = parameters.get("binary_data", binary_default)
        classes = parameters.get("classification", 0)
        if not isinstance(binary, bool) or type(classes) is not int or classes < 0:
            raise InvalidInput(f"outputs[{index}].parameters: binary_data is a boolean, classification a count")
        if classes and name != "probabilities":
            raise InvalidInput(f"outputs[{index}]: classification applies to 'probabilities' only")
        outputs.append(RequestedOutput(name, binary, classes))
    return tuple(outputs)


Tensor = tuple[str, np.ndarray | list[str], list[int]]


def _labels(result: InferenceResult, output: RequestedOutput) -> Tensor:
    return "BYTES", [p.label for p in result.predictions], [len(result.predictions)]


def _probabilities(result: InferenceResult, output: RequestedOutput) -> Tensor:
    probabilities = np.stack([p.probabilities for p in result.predictions])
    if output.classification:
        return _classification(probabilities, result.labels, output.classification)
    return "FP32", probabilities, list(probabilities.shape)


def _lengths(result: InferenceResult, output: RequestedOutput) -> Tensor:
    return "INT32", np.array([p.length for p in result.predictions], dtype=np.int32), [len(result.predictions)]


def _tokens(result: InferenceResult, output: RequestedOutput) -> Tensor:
    rows = tensors.pad_strings([p.tokens or [] for p in result.predictions])
    return "BYTES", [t for row in rows for t in row], [len(rows), len(rows[0]) if rows else 0]


def _offsets(result: InferenceResult, output: RequestedOutput) -> Tensor:
    offsets = tensors.offset_rows(result.predictions)
    return "INT32", offsets, list(offsets.shape)


def _padded(result: InferenceResult, output: RequestedOutput) -> Tensor:
    stacked = tensors.pad_stack([getattr(p, output.name) for p in result.predictions])
    return "FP32", stacked, list(stacked.shape)


BUILDERS = {
    "label": _labels,
    "probabilities": _probabilities,
    "lengths": _lengths,
    "tokens": _tokens,
    "offsets": _offsets,
    "attention": _padded,
    "self_attention": _padded,
    "rollout": _padded,
    "occlusion": _padded,
}


def output_tensor(result: InferenceResult, output: RequestedOutput) -> Tensor:
    """Datatype, data (an array, or strings in row-major order) and shape of one output."""
    return BUILDERS[output.name](result, output)


def _classification(probabilities: np.ndarray, labels: tuple[str, ...], count: int) -> Tensor:
    """Triton's classification extension: the top ``count`` classes as "score:index:label" strings."""
    count = min(count, len(labels))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
    values = [f"{probabilities[r, c]:.6f}:{c}:{labels[c]}" for r in range(len(order)) for c in order[r]]
    return "BYTES", values, [len(order), count]


def requested_outputs(result: InferenceResult, decoded: DecodedInfer) -> tuple[RequestedOutput, ...]:
    """The outputs named by the request, else the defaults: label, probabilities, lengths and whichever attention
    outputs the result holds (the version's per-token attention, or what ``parameters.attention`` chose)."""
    if decoded.outputs is not None:
        return decoded.outputs
    first = result.predictions[0]
    held = [n for n in ATTENTION_OUTPUTS if getattr(first, n) is not None]
    names = ["label", "probabilities", *(n for n in held if n == ATTENTION), "lengths"]
    names += [n for n in held if n != ATTENTION]
    return tuple(RequestedOutput(name, decoded.binary_default) for name in names)


def binary_chunk(data: np.ndarray | list[str], datatype: str) -> bytes:
    """One output's data in the binary tensor format (REST's binary section, gRPC's raw contents)."""
    return tensors.encode_bytes_elements(data) if isinstance(data, list) else tensors.encode_fixed(data, datatype)


def encode_infer(result: InferenceResult, decoded: DecodedInfer) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary section (empty when no output is binary)."""
    outputs, chunks = [], []
    for output in requested_outputs(result, decoded):
        datatype, data, shape = output_tensor(result, output)
        entry: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": shape}
        if output.binary:
            chunk = binary_chunk(data, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = data if isinstance(data, list) else np.ascontiguousarray(data).ravel()
        outputs.append(entry)
    header: dict[str, Any] = {"model_name": result.model, "model_version": str(result.version), "outputs": outputs}
    if decoded.id is not None:
        header["id"] = decoded.id
    return header, b"".join(chunks)
