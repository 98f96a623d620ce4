"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``, a thin translator onto the data plane.

Inference, metadata, readiness, Triton's ``ModelConfig`` and the repository RPCs (behind the admin token, as over
REST). Requests count against the same admission limit, deadlines and metrics (``protocol="grpc"``) as REST; the
client's gRPC deadline bounds the request's queueing like ``timeout_ms`` does. The RPCs the service does not offer
(streaming, statistics, shared memory, trace and log settings) answer UNIMPLEMENTED.

The servicer may run on an event loop other than the app's (``grpc_loop``): ``ModelInfer`` decodes and encodes on
gRPC's loop and crosses to the app's loop only to be admitted and inferred; the other RPCs, rare and cheap, run
their whole body there, so the admission count, the data plane and the repository are only touched by that loop.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from pydantic import SecretStr
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.dataplane import InferenceRequest, InferenceResult
from service.errors import InvalidInput, NotFound, ServiceError, quote
from service.model_folder import valid_name
from service.protocols import grpc_codec, model_config, repository_api, v2
from service.protocols.deps import AppState
from service.protocols.grpc_errors import status_code, trailers
from service.protocols.grpc_loop import AppLoop
from service.repository import ServedVersion
from service.security import bearer_token, check_credential
from service.telemetry import request_id

log = logging.getLogger(__name__)
SERVICE_NAME = "inference.GRPCInferenceService"
UNSUPPORTED = (
    "ModelStreamInfer", "ModelStatistics", "SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus", "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings",
)  # fmt: skip
Context = grpc.aio.ServicerContext[Any, Any]
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
Body = TypeVar("Body", bound=Callable[..., Coroutine[Any, Any, Any]])


class NotOffered(ServiceError):
    """An RPC of the protocol that this server does not offer (HTTP's 501, gRPC's UNIMPLEMENTED)."""

    status = 501


def answers(method: Handler) -> Handler:
    """Domain errors become their status code and message; anything else is a bug: logged, answered INTERNAL."""

    @functools.wraps(method)
    async def handler(self: InferenceServicer, request: Any, context: Context) -> Any:
        try:
            return await method(self, request, context)
        except ServiceError as error:
            await context.abort(status_code(error), error.message, trailers(error))
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            log.error("unhandled error", exc_info=error)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return handler  # type: ignore[return-value]


def on_app_loop(method: Body) -> Body:
    """The RPC's body runs on the app's event loop (the one that owns the data plane and the admission count)."""

    @functools.wraps(method)
    async def handler(self: InferenceServicer, request: Any, context: Context) -> Any:
        return await self.app.run(method(self, request, context))

    return handler  # type: ignore[return-value]


async def admitted_infer(state: AppState, request: InferenceRequest) -> InferenceResult:
    """On the app's loop: hold an admission place while the data plane answers the request."""
    with state.admission.slot():  # after decoding: a request that is wrong is told so, not to retry
        return await state.dataplane.infer(request)


def credential(context: Context) -> str | None:
    """The key in the call's ``authorization: Bearer`` (or ``x-api-key``) metadata."""
    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    return bearer_token(metadata.get("authorization"), metadata.get("x-api-key"))


def with_deadline(decoded: Any, remaining_s: float | None) -> Any:
    """The request with the client's gRPC deadline as its timeout, when that is the sooner one."""
    if remaining_s is None:
        return decoded
    given = decoded.request.timeout_s
    timeout = max(min(remaining_s, given) if given else remaining_s, 1e-3)
    return dataclasses.replace(decoded, request=dataclasses.replace(decoded.request, timeout_s=timeout))


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Every RPC of Triton's ``GRPCInferenceService`` (a superset of KServe's) on one app's state."""

    def __init__(self, state: AppState, app: AppLoop) -> None:
        self.state, self.app = state, app

    def _served(self, name: str, version: str) -> ServedVersion:
        if not valid_name(name):  # nothing by that name can be in the repository
            raise NotFound(f"unknown model {quote(name)}")
        return self.state.repository.get(name, grpc_codec.parse_version(version))

    def _admin(self, context: Context) -> None:
        token: SecretStr | None = self.state.settings.admin_token
        if token is None:
            raise NotOffered("the model repository RPCs are off: no admin token is configured")
        check_credential(token, credential(context))

    @answers
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @answers
    @on_app_loop
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.repository.ready)

    @answers
    @on_app_loop
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        if not valid_name(request.name) or request.name not in self.state.repository.names():
            raise NotFound(f"unknown model {quote(request.name)}")
        version = grpc_codec.parse_version(request.version)
        return pb.ModelReadyResponse(ready=self.state.repository.model_ready(request.name, version))

    @answers
    @on_app_loop
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        with self.state.admission.slot():
            return pb.ServerMetadataResponse(**v2.server_document(self.state.settings))

    @answers
    @on_app_loop
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        served = self._served(request.name, request.version)  # what the request gets wrong first, then capacity
        with self.state.admission.slot():
            serving = self.state.repository.serving(served.name) if not request.version else [served]
            document = v2.metadata(served, [str(s.version) for s in serving])
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=document["name"],
                versions=document["versions"],
                platform=document["platform"],
                inputs=[tensor(**t) for t in document["inputs"]],
                outputs=[tensor(**t) for t in document["outputs"]],
            )

    @answers
    @on_app_loop
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        served = self._served(request.name, request.version)
        with self.state.admission.slot():
            return pb.ModelConfigResponse(config=model_config.configuration(served, self.state)[1])

    @answers
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        state = self.state
        if request.id:  # for the logs, as X-Request-ID over HTTP (each RPC runs in a task of its own)
            request_id.set(request.id[:128])
        name = request.model_name if valid_name(request.model_name) else "-"
        with state.telemetry.observe("grpc", name) as outcome:
            if state.settings.api_key is not None:
                check_credential(state.settings.api_key, credential(context))
            if name == "-":
                raise NotFound(f"unknown model {quote(request.model_name)}")
            decoded = with_deadline(grpc_codec.decode_infer(request), context.time_remaining())
            result = await self.app.run(admitted_infer(state, decoded.request))
            outcome.version = str(result.version)
            return grpc_codec.encode_infer(result, decoded)

    @answers
    @on_app_loop
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> pb.RepositoryIndexResponse:
        self._admin(context)
        if request.repository_name:
            raise InvalidInput("repository_name: this server has one repository; leave it empty")
        with self.state.admission.slot():
            entries = await repository_api.index_entries(self.state.repository, request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    @answers
    @on_app_loop
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        self._admin(context)
        repository_api.check_name(request.model_name)
        others = ["repository_name"] if request.repository_name else []
        repository_api.refuse_overrides(request.parameters.keys(), others)
        with self.state.admission.slot():
            await self.state.repository.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @answers
    @on_app_loop
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        self._admin(context)
        repository_api.check_name(request.model_name)
        with self.state.admission.slot():
            await self.state.repository.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()


@answers
async def _unsupported(self: InferenceServicer, request: Any, context: Context) -> None:
    raise NotOffered("this server does not offer that RPC of the protocol")


for _name in UNSUPPORTED:
    setattr(InferenceServicer, _name, _unsupported)
