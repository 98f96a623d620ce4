"""Liveness, readiness (Open Inference Protocol paths) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.protocols import codec
from service.protocols.deps import AppState, AppStateDep

router = APIRouter(tags=["health"])


@router.get("/v2/health/live", response_model=None, responses={200: {"content": {"application/json": {}}}})
async def live() -> Response:
    """200 while the process serves HTTP."""
    return codec.json_response({"live": True})


@router.get("/v2/health/ready", response_model=None, responses={200: {"content": {"application/json": {}}}, 400: {}})
async def ready(state: AppStateDep) -> Response:
    """200 when every configured model has a loaded, warmed-up version; 400 (the protocol's "false") otherwise."""
    is_ready = state.repository.ready
    return codec.json_response({"ready": is_ready}, 200 if is_ready else 400)


def refresh_gauges(state: AppState) -> None:
    """Queue depth and readiness per served version (set when read, not on every change: they move constantly)."""
    for name in state.repository.names():
        for served in state.repository.serving(name):
            labels = (served.name, str(served.version))
            state.metrics.queue_depth.labels(*labels).set(served.batcher.depth)
            state.metrics.model_ready.labels(*labels).set(1)


@router.get("/metrics", response_model=None, responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: AppStateDep) -> Response:
    """Prometheus exposition of requests, batches, queue and compute time by model and version."""
    refresh_gauges(state)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
