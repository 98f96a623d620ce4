"""What every gRPC server of the service is built with, in the worker (``grpc_server``) or its front process
(``grpc_front``): the channel options, the checked method table registered with server reflection, and the grace
its stop is given. Imports only gRPC's own packages, so the front stays free of the models.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from service.protocols.grpc_handlers import MethodTable

HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
NO_LIMIT_S = 365 * 24 * 3600.0  # uvicorn waits without limit when the graceful shutdown time is under a second


def new_server(
    methods: MethodTable, inference_service: str, max_message_bytes: int, reuseport: bool
) -> grpc.aio.Server:
    """A server answering ``methods`` (and reflection over them and health), messages up to ``max_message_bytes``;
    ``reuseport`` shares the port with the other workers'."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1 if reuseport else 0),
    ]
    server = grpc.aio.server(options=options)
    add_reflection(methods, inference_service)
    methods.register(server)
    return server


def add_reflection(methods: MethodTable, inference_service: str) -> None:
    """Server reflection over the inference service, health and reflection itself."""
    services = (inference_service, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(services), methods)


def stop_grace(grace_s: float) -> float:
    """The grace ``server.stop`` gets for the calls in flight: as uvicorn's ``timeout_graceful_shutdown``, under a
    second means no limit."""
    return grace_s if grace_s >= 1 else NO_LIMIT_S
