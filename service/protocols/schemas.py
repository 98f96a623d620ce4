"""OpenAPI descriptions of the JSON protocols, and the metadata documents built from a model description.

Bodies are decoded by hand (strict, with precise error locations, see ``codec``); these pydantic models
describe the same shapes for ``/openapi.json``, the interactive docs and schema-based fuzzing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.dataplane import describe
from service.repository import ServedVersion

AttentionName = Literal["none", "pooling", "attention", "self_attention", "rollout", "all"]


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong, and where.")


class InstanceObject(BaseModel):
    text: str | None = Field(None, description="Text to tokenize with the model's tokenizer.")
    input_ids: list[int] | None = Field(None, description="Token ids, instead of text.")
    attention_mask: list[int] | None = Field(None, description="Ones then zeros, to drop right padding.")


class PredictParameters(BaseModel):
    attention: AttentionName | list[AttentionName] = Field(
        "pooling", description="Attention to return: pooling weights, self-attention, rollout, all or none."
    )
    truncate: bool = Field(False, description="Cut sequences longer than the model's maximum instead of refusing.")
    timeout_ms: float | None = Field(None, gt=0, le=3_600_000, description="Deadline, queueing included.")


class PredictRequest(BaseModel):
    instances: list[str | list[int] | InstanceObject] | None = Field(None, description="Row format.")
    inputs: list[str | list[int] | InstanceObject] | dict[str, Any] | None = Field(
        None, description="Columnar format: a list, or columns 'text' / 'input_ids' (+ 'attention_mask')."
    )
    signature_name: str | None = None
    parameters: PredictParameters | None = None


class PredictionRow(BaseModel):
    label: str
    probabilities: dict[str, float]
    truncated: bool
    attention: list[float] | None = Field(None, description="One weight per real token, summing to 1.")
    tokens: list[str] | None = None
    offsets: list[tuple[int, int]] | None = Field(None, description="Character span of each token in the text.")
    self_attention: list[list[list[list[float]]]] | None = Field(None, description="[layers][heads][T][T]")
    rollout: list[float] | None = None


class PredictResponse(BaseModel):
    predictions: list[PredictionRow] | None = None
    outputs: dict[str, Any] | None = None


class StatusEntry(BaseModel):
    version: str
    state: str
    status: dict[str, str]


class ModelStatusResponse(BaseModel):
    model_version_status: list[StatusEntry]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined, for use in ``openapi_extra``."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(model)}}}}


INFERENCE_ERRORS = (400, 401, 404, 413, 415, 503, 504)
NATIVE_PREDICT: dict[str, Any] = {
    "response_model": None,
    "openapi_extra": json_body(PredictRequest),
    "responses": {200: {"model": PredictResponse}, **error_responses(*INFERENCE_ERRORS)},
}
NATIVE_STATUS: dict[str, Any] = {
    "response_model": None,
    "responses": {200: {"model": ModelStatusResponse}, **error_responses(400, 404)},
}
NATIVE_METADATA: dict[str, Any] = {
    "response_model": None,
    "responses": {200: {"content": {"application/json": {}}}, **error_responses(400, 404, 503)},
}


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Tensor]


V2_INFER: dict[str, Any] = {
    "response_model": None,
    "openapi_extra": json_body(V2InferRequest),
    "responses": {
        200: {"model": V2InferResponse, "content": {"application/octet-stream": {}}},
        **error_responses(*INFERENCE_ERRORS),
    },
}
V2_METADATA: dict[str, Any] = {
    "response_model": None,
    "responses": {200: {"content": {"application/json": {}}}, **error_responses(400, 404, 503)},
}


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool = Field(description="False comes with status 400, the protocol's way of saying not ready.")


V2_READY: dict[str, Any] = {
    "response_model": None,
    "responses": {
        200: {"model": ModelReadyResponse},
        400: {"model": ModelReadyResponse | ErrorResponse, "description": "Not ready, or a malformed version"},
        **error_responses(404),
    },
}

REPOSITORY: dict[str, Any] = {
    "response_model": None,
    "responses": {200: {"content": {"application/json": {}}}, **error_responses(400, 401, 404, 415, 503)},
}

TF_DTYPES = {"string": "DT_STRING", "int32": "DT_INT32", "int64": "DT_INT64", "float32": "DT_FLOAT"}


def tf_metadata(served: ServedVersion) -> dict[str, Any]:
    """TF Serving's ``GetModelMetadata`` shape, plus our own ``attention_serve`` facts."""
    description = describe(served)

    def tensor_info(tensors: Any) -> dict[str, Any]:
        return {
            t.name: {
                "dtype": TF_DTYPES[t.dtype],
                "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in t.shape], "unknown_rank": False},
                "name": t.name,
            }
            for t in tensors
        }

    signature = {
        "inputs": tensor_info(description.inputs),
        "outputs": tensor_info(description.outputs),
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": description.name, "signature_name": "", "version": str(description.version)},
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        "attention_serve": description.facts,
    }
