"""Open Inference Protocol over gRPC ↔ data plane: ``ModelInferRequest`` in, ``ModelInferResponse`` out.

A gRPC request is rewritten into the shape the v2 REST decoder reads (``v2_codec.decode_infer``): its
``raw_input_contents`` become the binary section (one entry per input, in order), typed ``contents`` become
``data``, and ``InferParameter`` values become plain values. So every check and every "what and where" message
is the REST one. Outputs always go back as ``raw_output_contents`` (what tritonclient and KServe read).

The messages are tritonclient's generated ones (Triton's ``grpc_service.proto``, a superset of KServe's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from service.dataplane import InferenceResult
from service.errors import InvalidInput
from service.protocols import codec, v2_codec

# Which typed ``contents`` field carries each datatype the service accepts.
CONTENTS_FIELDS = {"BYTES": "bytes_contents", "INT32": "int_contents", "INT64": "int64_contents"}


def parameter_value(parameter: pb.InferParameter) -> Any:
    """The Python value of one ``InferParameter`` (bool, int, str or float); None when no value is set."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def plain_parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def parse_version(text: str) -> int | None:
    """The protocol's version string: empty means the newest serving version."""
    return codec.parse_version(text) if text else None


def decode_infer(request: pb.ModelInferRequest) -> v2_codec.DecodedInfer:
    """Decode through the v2 decoder; raises InvalidInput with the REST API's messages."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; give one per input, in order"
        )
    inputs = [_input(tensor, raw[i] if raw else None) for i, tensor in enumerate(request.inputs)]
    body: dict[str, Any] = {"inputs": inputs}
    if request.id:
        body["id"] = request.id
    if request.parameters:
        body["parameters"] = plain_parameters(request.parameters)
    if request.outputs:
        body["outputs"] = [{"name": o.name, "parameters": plain_parameters(o.parameters)} for o in request.outputs]
    return v2_codec.decode_infer(body, b"".join(raw), request.model_name, parse_version(request.model_version))


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> dict[str, Any]:
    where = f"input '{tensor.name[:64]}'"
    fields: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    parameters = plain_parameters(tensor.parameters)
    declared = parameters.pop("binary_data_size", None)  # KServe's client sends it beside raw contents
    has_contents = tensor.HasField("contents") and bool(tensor.contents.ListFields())
    if raw is not None:
        if has_contents:
            raise InvalidInput(f"{where}: give its data in contents or in raw_input_contents, not both")
        if declared is not None and declared != len(raw):
            raise InvalidInput(f"{where}: binary_data_size {declared} differs from its {len(raw)} raw bytes")
        parameters["binary_data_size"] = len(raw)
    elif declared is not None:
        raise InvalidInput(f"{where}: binary_data_size without raw_input_contents")
    elif has_contents:
        fields["data"] = _contents(tensor, where)
    fields["parameters"] = parameters
    return fields


def _contents(tensor: pb.ModelInferRequest.InferInputTensor, where: str) -> list[Any]:
    """The typed contents as JSON-like data: the field matching the datatype, and no other."""
    expected = CONTENTS_FIELDS.get(tensor.datatype)
    given = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if expected is None:
        return []  # the v2 decoder names the datatype it wants
    if given != [expected]:
        raise InvalidInput(f"{where}: {tensor.datatype} data goes in contents.{expected}, got {', '.join(given)}")
    values = getattr(tensor.contents, expected)
    return _texts(values, where) if expected == "bytes_contents" else list(values)


def _texts(values: Iterable[bytes], where: str) -> list[str]:
    texts = []
    for index, value in enumerate(values):
        try:
            texts.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"{where}.contents.bytes_contents[{index}]: not valid UTF-8") from None
    return texts


def encode_infer(result: InferenceResult, decoded: v2_codec.DecodedInfer) -> pb.ModelInferResponse:
    """Every requested output, its data in ``raw_output_contents`` (in the order of ``outputs``)."""
    response = pb.ModelInferResponse(model_name=result.model, model_version=str(result.version), id=decoded.id or "")
    for output in v2_codec.requested_outputs(result, decoded):
        datatype, data, shape = v2_codec.output_tensor(result, output)
        response.outputs.add(name=output.name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(v2_codec.binary_chunk(data, datatype))
    return response
