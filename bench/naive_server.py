"""The baseline: an idiomatic FastAPI + ONNX Runtime endpoint with no batching across requests.

One request, one ``session.run``: the request's texts are tokenized with the model's own tokenizer, padded to
the longest of them, run, and answered with label, probabilities and pooling attention per text. Sync route
(FastAPI runs it in its thread pool, and ONNX Runtime's ``run`` is thread-safe and releases the GIL), pydantic
for the body, orjson for the answer. It accepts the service's request shape so the same load runs against both.
``:noop`` (same path, other verb) reads the body and answers a constant: the uvicorn + FastAPI floor here.

    python bench/naive_server.py --port 8001 --model-dir models/sentiment/1 [--variant int8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, Field
from tokenizers import Tokenizer

OUTPUTS = ["probabilities", "attention"]


class PredictRequest(BaseModel):
    instances: list[str] = Field(min_length=1, max_length=256)
    parameters: dict[str, Any] | None = None


def load(model_dir: Path, variant: str, threads: int) -> tuple[ort.InferenceSession, Tokenizer, dict[str, Any]]:
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    graph = meta["files"]["model"] if variant == "fp32" else meta["variants"][variant]["file"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    session = ort.InferenceSession(str(model_dir / graph), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(model_dir / meta["files"].get("tokenizer", "tokenizer.json")))
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(meta["max_sequence_length"]))
    return session, tokenizer, meta


def create_app(model_dir: Path, variant: str, threads: int) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.session, app.state.tokenizer, app.state.meta = load(model_dir, variant, threads)
        known = {"input_ids", "attention_mask"}
        app.state.extra_inputs = [i.name for i in app.state.session.get_inputs() if i.name not in known]
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/{name}:noop")
    async def noop(name: str, request: Request) -> Response:
        """The HTTP floor: read the body, answer a constant (what uvicorn + FastAPI cost with no work at all)."""
        await request.body()
        return Response(b'{"predictions": []}', media_type="application/json")

    @app.post("/v1/models/{name}:predict")
    def predict(name: str, body: PredictRequest, request: Request) -> Response:
        state = request.app.state
        encodings = state.tokenizer.encode_batch(body.instances)  # the file's special tokens, as the model expects
        lengths = [len(e.ids) for e in encodings]
        if min(lengths) == 0:
            raise HTTPException(400, "a text has no tokens")
        ids = np.full((len(encodings), max(lengths)), state.meta.get("pad_token_id", 0), dtype=np.int32)
        for i, encoding in enumerate(encodings):
            ids[i, : lengths[i]] = encoding.ids
        mask = (np.arange(ids.shape[1]) < np.array(lengths)[:, None]).astype(np.int32)
        feed = {"input_ids": ids, "attention_mask": mask}
        feed |= {name: np.zeros_like(ids) for name in state.extra_inputs}  # segment ids: one text, segment 0
        probabilities, attention = state.session.run(OUTPUTS, feed)
        labels = state.meta["labels"]
        predictions = [
            {
                "label": labels[int(np.argmax(p))],
                "probabilities": dict(zip(labels, p.tolist(), strict=True)),
                "attention": a[:n],
            }
            for p, a, n in zip(probabilities, attention, lengths, strict=True)
        ]
        content = orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(content, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment/1"))
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: the usable cores)")
    args = parser.parse_args()
    app = create_app(args.model_dir, args.variant, args.threads)
    uvicorn.run(
        app, host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
