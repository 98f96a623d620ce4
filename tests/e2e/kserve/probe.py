"""KServe's own clients, unmodified, against a running attention-serve; run with the KServe virtualenv's Python.

probe.py HTTP_URL GRPC_ADDRESS TEXTS_JSON   → prints one JSON object with what each client got back
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

IDS = [[5, 6, 7, 8], [9, 10, 0, 0]]
MASK = [[1, 1, 1, 1], [1, 1, 0, 0]]


def text_input(texts: list[str]) -> InferInput:
    tensor = InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object))  # binary by default, as the SDK sends it
    return tensor


def id_inputs() -> list[InferInput]:
    tensors = []
    for name, values in (("input_ids", IDS), ("attention_mask", MASK)):
        tensor = InferInput(name, [2, 4], "INT32")
        tensor.set_data_from_numpy(np.array(values, dtype=np.int32))
        tensors.append(tensor)
    return tensors


def plain(response: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": response.id}
    for output in response.outputs:
        array = output.as_numpy()
        out[output.name] = [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return out


async def rest(url: str, texts: list[str]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        request = InferRequest(model_name="sentiment", infer_inputs=[text_input(texts)])
        answer = plain(await client.infer(url, request, model_name="sentiment"))
        ready = await client.is_server_ready(url) and await client.is_model_ready(url, "sentiment")
        return {"ready": ready, "text": answer}
    finally:
        await client.close()


async def grpc_calls(address: str, texts: list[str]) -> dict[str, Any]:
    client = InferenceGRPCClient(address, retries=0)
    try:
        text = plain(await client.infer(InferRequest(model_name="sentiment", infer_inputs=[text_input(texts)])))
        wanted = [RequestedOutput("probabilities"), RequestedOutput("lengths")]
        ids = plain(await client.infer(InferRequest(model_name="sentiment", infer_inputs=id_inputs(),
                                                    request_outputs=wanted)))  # fmt: skip
        ready = await client.is_server_live() and await client.is_server_ready()
        ready = ready and await client.is_model_ready("sentiment")
        try:
            await client.infer(InferRequest(model_name="absent", infer_inputs=[text_input(texts)]))
            error = "none"
        except grpc.RpcError as rpc_error:
            error = rpc_error.code().name
        return {"ready": ready, "text": text, "ids": ids, "unknown_model": error}
    finally:
        await client.close()


async def main(url: str, address: str, texts: list[str]) -> None:
    print(json.dumps({"rest": await rest(url, texts), "grpc": await grpc_calls(address, texts)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
