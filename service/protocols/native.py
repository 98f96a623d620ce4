"""Native REST, shaped like TensorFlow Serving's: ``/v1/models/{name}[/versions/{v}|/labels/{l}]:predict``.

Row format ``{"instances": [...]}`` answers ``{"predictions": [...]}``; columnar ``{"inputs": ...}`` answers
``{"outputs": ...}``. An instance is a text, a list of token ids, or an object with ``text`` or ``input_ids``
(and optionally ``attention_mask``). ``parameters`` (our extension) picks the attention outputs, truncation and
a deadline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from service.dataplane import InferenceRequest, InferenceResult, Prediction, TextPair, available_outputs
from service.errors import InvalidInput, NotFound, quote
from service.protocols import codec, large, schemas, tensors
from service.protocols.deps import AppState, AppStateDep, app_state, authorize_inference
from service.protocols.hot import hot
from service.repository import ServedVersion, State

router = APIRouter(tags=["native (TensorFlow Serving REST)"])
SIGNATURE = "serving_default"
PARAMETERS = {"attention", "truncate", "timeout_ms", "layers", "heads", "explain", "occlusion_window", "target"}


def decode_instance(value: Any, where: str) -> str | np.ndarray | TextPair:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return codec.decode_ids(value, where)
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{where}: expected a text, a list of token ids, or an object with 'text' or 'input_ids'; "
            f"got {codec.kind(value)}"
        )
    fields = value
    unknown = set(fields) - {"text", "text_pair", "input_ids", "attention_mask"}
    if unknown or ("text" in fields) == ("input_ids" in fields):
        raise InvalidInput(f"{where}: expected an object with exactly one of 'text' or 'input_ids'")
    if "text_pair" in fields and "text" not in fields:
        raise InvalidInput(f"{where}.text_pair: a text pair needs its first text in 'text'")
    if "text" in fields:
        text = codec.decode_text(fields["text"], f"{where}.text")
        if "text_pair" in fields:
            return TextPair(text, codec.decode_text(fields["text_pair"], f"{where}.text_pair"))
        return text
    ids = codec.decode_ids(fields["input_ids"], f"{where}.input_ids")
    if "attention_mask" in fields:
        ids = codec.apply_mask(ids, codec.decode_ids(fields["attention_mask"], f"{where}.attention_mask"), where)
    return ids


def decode_columns(value: Any) -> list[str | np.ndarray | TextPair]:
    """Columnar ``inputs``: a list (texts or id rows) or an object of named input columns."""
    if isinstance(value, list):
        return [decode_instance(item, f"inputs[{i}]") for i, item in enumerate(value)]
    columns = codec.expect_object(value, "inputs")
    unknown = set(columns) - {"text", "text_pair", "input_ids", "attention_mask"}
    if unknown or ("text" in columns) == ("input_ids" in columns) or ("text_pair" in columns and "text" not in columns):
        raise InvalidInput(
            "inputs: expected exactly one of the columns 'text' (and 'text_pair') or 'input_ids' (and 'attention_mask')"
        )
    if "text" in columns:
        texts = _text_column(columns["text"], "text")
        if "text_pair" not in columns:
            return list(texts)
        pairs = _text_column(columns["text_pair"], "text_pair")
        if len(pairs) != len(texts):
            raise InvalidInput(f"inputs.text_pair: {len(pairs)} texts for {len(texts)} in inputs.text; give one each")
        return [TextPair(text, pair) for text, pair in zip(texts, pairs, strict=True)]
    rows = _as_rows(columns["input_ids"])
    ids = [codec.decode_ids(r, f"inputs.input_ids[{i}]") for i, r in enumerate(rows)]
    if "attention_mask" in columns:
        masks = _as_rows(columns["attention_mask"])
        if len(masks) != len(ids):
            raise InvalidInput("inputs.attention_mask: expected one mask row per input_ids row")
        ids = [
            codec.apply_mask(row, codec.decode_ids(mask, f"inputs.attention_mask[{i}]"), f"inputs[{i}]")
            for i, (row, mask) in enumerate(zip(ids, masks, strict=True))
        ]
    return list(ids)


def _text_column(column: Any, name: str) -> list[str]:
    texts = column if isinstance(column, list) else [column]
    return [codec.decode_text(t, f"inputs.{name}[{i}]") for i, t in enumerate(texts)]


def _as_rows(column: Any) -> list[Any]:
    """A column of rows; one flat row (a single sequence) counts as a column of one."""
    nested = isinstance(column, list) and (not column or isinstance(column[0], list))
    return column if nested else [column]


def decode_request(body: Any, name: str, version: int | None) -> tuple[InferenceRequest, bool]:
    """The data-plane request, and whether the columnar format was used."""
    fields = codec.expect_object(body, "body")
    unknown = set(fields) - {"instances", "inputs", "signature_name", "parameters"}
    if unknown:
        raise InvalidInput(codec.unknown_fields(unknown, "body"))
    if ("instances" in fields) == ("inputs" in fields):
        raise InvalidInput("body: send exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    signature = fields.get("signature_name")
    if signature not in (None, "", SIGNATURE):
        raise InvalidInput(f"signature_name: only '{SIGNATURE}' exists")
    columnar = "inputs" in fields
    if columnar:
        items = decode_columns(fields["inputs"])
    else:
        instances = fields["instances"]
        if not isinstance(instances, list):
            raise InvalidInput(f"instances: expected a list, got {codec.kind(instances)}")
        items = [decode_instance(item, f"instances[{i}]") for i, item in enumerate(instances)]
    options = decode_parameters(fields.get("parameters"))
    source = "inputs" if columnar else "instances"
    return InferenceRequest(name, version, items, source=source, **options), columnar


def decode_parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    fields = codec.expect_object(value, "parameters")
    unknown = set(fields) - PARAMETERS
    if unknown:
        raise InvalidInput(codec.unknown_fields(unknown, "parameters"))
    options: dict[str, Any] = {}
    if "layers" in fields or "heads" in fields:
        options["maps"] = codec.decode_maps(fields)
    if "attention" in fields:
        options["outputs"] = codec.decode_attention(fields["attention"], "parameters.attention")
    explained, options["occlusion"] = codec.decode_explanation(fields)
    if explained:
        options["outputs"] = options.get("outputs", frozenset({codec.DEFAULT})) | explained
    if "truncate" in fields:
        options["truncate"] = codec.decode_flag(fields["truncate"], "parameters.truncate")
    if "timeout_ms" in fields:
        options["timeout_s"] = codec.decode_timeout_ms(fields["timeout_ms"], "parameters.timeout_ms")
    return options


def encode_prediction(prediction: Prediction, labels: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": prediction.label,
        "probabilities": dict(zip(labels, prediction.probabilities, strict=True)),
        "truncated": prediction.truncated,
    }
    if prediction.attention is not None:
        row["attention"] = np.ascontiguousarray(prediction.attention)
    if prediction.tokens is not None:
        row["tokens"] = prediction.tokens
        row["offsets"] = prediction.offsets if prediction.sources is None else tensors.offsets_with_sources(prediction)
    if prediction.self_attention is not None:
        row["self_attention"] = np.ascontiguousarray(prediction.self_attention)
    if prediction.rollout is not None:
        row["rollout"] = prediction.rollout
    if prediction.occlusion is not None:
        row["occlusion"] = prediction.occlusion
    return row


def encode_columns(result: InferenceResult) -> dict[str, Any]:
    """Columnar answer: one tensor per output, ragged outputs zero-padded to the longest sequence."""
    predictions = result.predictions
    outputs: dict[str, Any] = {
        "label": [p.label for p in predictions],
        "probabilities": np.stack([p.probabilities for p in predictions]),
        "truncated": [p.truncated for p in predictions],
    }
    for name in ("attention", "rollout", "self_attention", "occlusion"):
        arrays = [getattr(p, name) for p in predictions]
        if arrays[0] is not None:
            outputs[name] = tensors.pad_stack(arrays)
    return {"outputs": outputs}


async def _predict(request: Request, name: str, version: int | None, explain: bool = False) -> Response:
    # The hot path takes no FastAPI dependencies: they cost more per request than all of our own work.
    state = app_state(request)
    with state.telemetry.observe("native", name) as outcome:
        authorize_inference(state, request)
        body = await codec.read_json(request, state.settings.max_body_bytes)
        inference, columnar = decode_request(body, name, version)
        if explain:  # KServe's explain verb: the predictions with their occlusion attributions
            outputs = inference.outputs if inference.outputs is not None else frozenset({codec.DEFAULT})
            inference = dataclasses.replace(inference, outputs=outputs | {"occlusion"})
        result = await state.dataplane.infer(inference)
        outcome.version = str(result.version)
        content = encode_columns(result) if columnar else {
            "predictions": [encode_prediction(p, result.labels) for p in result.predictions]
        }  # fmt: skip
        body = await large.encode(content, large.attention_values(result))
        return Response(body, 200, {"X-Model-Version": str(result.version)}, media_type="application/json")


@router.post("/v1/models/{name}:predict", **schemas.NATIVE_PREDICT)
@hot
async def predict(name: str, request: Request) -> Response:
    """Predict with the newest serving version."""
    return await _predict(request, name, None)


@router.post("/v1/models/{name}/versions/{version}:predict", **schemas.NATIVE_PREDICT)
@hot
async def predict_version(name: str, version: str, request: Request) -> Response:
    """Predict with one version."""
    return await _predict(request, name, codec.parse_version(version))


@router.post("/v1/models/{name}:explain", **schemas.NATIVE_PREDICT)
@hot
async def explain(name: str, request: Request) -> Response:
    """KServe's v1 explain verb: the newest version's predictions, each with its occlusion attributions."""
    return await _predict(request, name, None, explain=True)


@router.post("/v1/models/{name}/versions/{version}:explain", **schemas.NATIVE_PREDICT)
@hot
async def explain_version(name: str, version: str, request: Request) -> Response:
    return await _predict(request, name, codec.parse_version(version), explain=True)


@router.post("/v1/models/{name}/labels/{label}:predict", **schemas.NATIVE_PREDICT)
@hot
async def predict_label(name: str, label: str, request: Request) -> Response:
    """Predict with the version a label points at (labels are set per model in the settings)."""
    return await _predict(request, name, resolve_label(app_state(request), name, label))


def resolve_label(state: AppState, name: str, label: str) -> int:
    version = state.settings.version_labels.get(name, {}).get(label)
    if version is None:
        raise NotFound(f"model {quote(name)} has no version label {quote(label)}")
    return version


def version_status(state: AppStateDep, name: str, version: int | None) -> dict[str, Any]:
    statuses = state.repository.statuses(name)
    if version is not None:
        statuses = [s for s in statuses if s.version == version]
        if not statuses:
            raise NotFound(f"model {quote(name)} has no version {version}")
    entries = []
    for status in statuses:
        failed = status.state == State.FAILED
        entries.append({
            "version": str(status.version),
            # TF Serving reports a failed load as END with an error; the reason is in error_message.
            "state": "END" if failed else status.state.value,
            "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": status.error},
        })  # fmt: skip
    return {"model_version_status": entries}


def attention_summary(served: ServedVersion) -> dict[str, Any]:
    """What attention a version gives, from its signature: for the page's shading choices and layer picker."""
    signature = served.folder.spec.signature
    layers_heads = served.folder.spec.layers_heads
    return {
        "outputs": sorted(available_outputs(served)),
        "source": signature.attention_source,
        "layers": list(signature.attention_layers),
        "heads": layers_heads[1] if layers_heads else 0,
    }


@router.get("/v1/models", response_model=None, responses={200: {"content": {"application/json": {}}}})
async def list_models(state: AppStateDep) -> Response:
    """Every model the server knows: its versions' states, and the labels and attention of the newest serving one."""
    models = []
    for name in state.repository.names():
        serving = state.repository.serving(name)
        models.append({
            "name": name,
            "versions": [{"version": str(s.version), "state": s.state.value} for s in state.repository.statuses(name)],
            "serving": [str(s.version) for s in serving],
            "labels": list(serving[0].folder.spec.labels) if serving else [],
            "attention": attention_summary(serving[0]) if serving else None,
        })  # fmt: skip
    return codec.json_response({"models": models})


@router.get("/v1/models/{name}", **schemas.NATIVE_STATUS)
async def model_status(name: str, state: AppStateDep) -> Response:
    """Status of every known version, TF Serving style."""
    return codec.json_response(version_status(state, name, None))


@router.get("/v1/models/{name}/versions/{version}", **schemas.NATIVE_STATUS)
async def model_version_status(name: str, version: str, state: AppStateDep) -> Response:
    return codec.json_response(version_status(state, name, codec.parse_version(version)))


@router.get("/v1/models/{name}/labels/{label}", **schemas.NATIVE_STATUS)
async def model_label_status(name: str, label: str, state: AppStateDep) -> Response:
    return codec.json_response(version_status(state, name, resolve_label(state, name, label)))


@router.get("/v1/models/{name}/metadata", **schemas.NATIVE_METADATA)
async def model_metadata(name: str, state: AppStateDep) -> Response:
    """Signature and model facts (labels, max length, provider, metrics) of the newest serving version."""
    return codec.json_response(schemas.tf_metadata(state.repository.get(name)))


@router.get("/v1/models/{name}/versions/{version}/metadata", **schemas.NATIVE_METADATA)
async def model_version_metadata(name: str, version: str, state: AppStateDep) -> Response:
    return codec.json_response(schemas.tf_metadata(state.repository.get(name, codec.parse_version(version))))
