"""The front's hot routes: which requests it answers itself, and that it answers them as the framework would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import NotFound
from service.protocols import codec
from service.protocols.hot import HotRoutes, hot, route_path
from tests.conftest import settings_for


@pytest.fixture
def client(make_repository) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(make_repository()))) as client:
        yield client


def test_the_front_takes_exactly_the_inference_routes(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    hot_routes = app.front.app.app  # type: ignore[attr-defined]
    assert isinstance(hot_routes, HotRoutes)
    patterns = sorted(route.pattern.pattern for route in hot_routes.routes)
    assert patterns == [
        "^/v1/models/(?P<name>[^/]+)/labels/(?P<label>[^/]+):predict$",
        "^/v1/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+):explain$",
        "^/v1/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+):predict$",
        "^/v1/models/(?P<name>[^/]+):explain$",
        "^/v1/models/(?P<name>[^/]+):predict$",
        "^/v2/models/(?P<name>[^/]+)/infer$",
        "^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/infer$",
    ]


def test_hot_and_framework_routes_answer_errors_alike(client: TestClient) -> None:
    hot_answer = client.post("/v1/models/nope:predict", json={"instances": ["x"]})
    framework_answer = client.get("/v1/models/nope/metadata")
    assert hot_answer.status_code == framework_answer.status_code == 404
    assert hot_answer.json() == {"error": "unknown model 'nope'"} == framework_answer.json()
    assert "x-request-id" in hot_answer.headers
    assert "x-request-id" in framework_answer.headers


def test_other_methods_and_paths_still_reach_the_framework(client: TestClient) -> None:
    # A GET there is the framework's: TF Serving's status route, for a model named "sentiment:predict".
    assert client.get("/v1/models/sentiment:predict").json() == {"error": "unknown model 'sentiment:predict'"}
    assert client.post("/v1/models/sentiment:predicts", json={}).json() == {"error": "method not allowed"}
    assert client.post("/v1/models/sentiment:predict", json={"instances": ["good"]}).status_code == 200


def _front_over(router: APIRouter) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    front = HotRoutes(app, app, router.routes)
    return TestClient(front, raise_server_exceptions=False)


def test_an_unexpected_error_is_a_plain_500_and_a_domain_error_its_own_status(caplog: pytest.LogCaptureFixture) -> None:
    router = APIRouter()

    @router.post("/boom/{name}")
    @hot
    async def boom(name: str, request: Request) -> Response:
        if name == "missing":
            raise NotFound("no such thing")
        raise RuntimeError(f"secret detail {Path('/etc/passwd')}")

    @router.post("/plain/{name}")
    async def plain(name: str, request: Request) -> Response:
        return codec.json_response({"name": name})

    client = _front_over(router)
    crashed = client.post("/boom/x")
    assert crashed.status_code == 500
    assert crashed.json() == {"error": "internal error"}
    assert "secret" not in crashed.text
    assert "unhandled error" in caplog.text
    assert client.post("/boom/missing").json() == {"error": "no such thing"}
    assert client.post("/plain/abc").json() == {"name": "abc"}  # not marked: served by the app


@pytest.mark.parametrize(
    ("path", "root", "seen"),
    [
        ("/v1/models/m:predict", "", "/v1/models/m:predict"),
        ("/api/v1/models/m:predict", "/api", "/v1/models/m:predict"),
        ("/api", "/api", ""),
        ("/apiv1/models/m:predict", "/api", "/apiv1/models/m:predict"),  # not under the root path
    ],
)
def test_route_path_drops_the_root_path_the_app_is_mounted_under(path: str, root: str, seen: str) -> None:
    assert route_path({"type": "http", "path": path, "root_path": root}) == seen
