"""The gRPC server's method table: every service's handlers, with requests that do not parse answered
INVALID_ARGUMENT.

gRPC parses a request before any handler runs, and a message that does not parse as the method's request type
fails there with UNKNOWN ("Unexpected DecodeError"), gRPC's twin of a 500. Here each method's parser returns a
marker instead of raising, and the handler, wrapped, answers the marker with INVALID_ARGUMENT. The generated
``add_*_to_server`` functions register into a ``MethodTable`` standing in for the server.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # generic in the type stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]


class Unparsable:
    """What a checked parser returns for bytes that are not a message of its type."""

    def __init__(self, message: str) -> None:
        self.message = message


def checked_parser(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``parse``, returning ``Unparsable`` instead of raising ``DecodeError``."""
    descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    type_name = getattr(descriptor, "full_name", "the method's request message")
    refusal = Unparsable(f"the request does not parse as {type_name}")

    def parse_or_refuse(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return refusal

    return parse_or_refuse


async def refuse(request: Any, context: Context) -> None:
    """Abort the call with INVALID_ARGUMENT if its request did not parse."""
    if isinstance(request, Unparsable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


async def _checked_requests(requests: AsyncIterable[Any], context: Context) -> AsyncIterator[Any]:
    async for request in requests:
        await refuse(request, context)
        yield request


def checked_behaviour(behaviour: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
    """The handler behind a check of its request (or of each request of a stream), of the same kind as the
    handler (coroutine or async generator), since gRPC calls each kind its own way."""

    async def check(request: Any, context: Context) -> Any:
        if streaming_request:
            return _checked_requests(request, context)
        await refuse(request, context)
        return request

    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async for response in behaviour(await check(request, context), context):
                yield response

        return stream

    async def call(request: Any, context: Context) -> Any:
        return await behaviour(await check(request, context), context)

    return call


def checked_handler(handler: Handler) -> Handler:
    """The same method with a checked parser and a checked behaviour (asyncio handlers; others as they are)."""
    kind = "stream" if handler.request_streaming else "unary"
    kind += "_stream" if handler.response_streaming else "_unary"
    behaviour = getattr(handler, kind)
    parse = handler.request_deserializer
    if parse is None or not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
        return handler
    behaviour = checked_behaviour(behaviour, handler.request_streaming)
    replaced: Handler = handler._replace(  # type: ignore[attr-defined]
        request_deserializer=checked_parser(parse), **{kind: behaviour}
    )
    return replaced


class MethodTable:
    """Stands in for a server while generated code registers services; keeps every method's checked handler."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Handler]] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        pass  # the same methods come again through add_registered_method_handlers, where they can be checked

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        self.services[service] = {name: checked_handler(handler) for name, handler in handlers.items()}

    def handler(self, path: str) -> Handler | None:
        """The handler of ``/package.Service/Method``, if there is one."""
        service, _, method = path.lstrip("/").partition("/")
        return self.services.get(service, {}).get(method)

    def register(self, server: grpc.aio.Server) -> None:
        for service, handlers in self.services.items():
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
            server.add_registered_method_handlers(service, handlers)
