"""The attention viewer's routes: the page, its assets, their caching and security headers (no browser here)."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.protocols.ui import MEDIA_TYPES, make_asset, render_page
from tests.conftest import BUNDLED_REPOSITORY, settings_for

SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


@pytest.fixture
def client() -> TestClient:
    # The viewer needs no model, so the lifespan (model loading) is not started.
    return TestClient(create_app(settings_for(BUNDLED_REPOSITORY)))


def linked_assets(page: str) -> dict[str, str]:
    """Asset name -> the URL the page links it by."""
    return {m.group(1): m.group(0) for m in re.finditer(r"ui/static/([\w.-]+)\?v=[0-9a-f]+", page)}


def test_page_has_a_strict_content_security_policy_and_is_revalidated(client: TestClient) -> None:
    response = client.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"].startswith('"')
    assert set(linked_assets(response.text)) == set(MEDIA_TYPES)


def test_linked_assets_are_cacheable_forever_and_unversioned_urls_are_revalidated(client: TestClient) -> None:
    page = client.get("/ui").text
    for name, url in linked_assets(page).items():
        fresh = client.get(f"/{url}")
        assert fresh.status_code == 200
        assert fresh.headers["content-type"] == MEDIA_TYPES[name]
        assert fresh.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "default-src 'self'" in fresh.headers["content-security-policy"]
        assert fresh.content == resources.files("service").joinpath("static", name).read_bytes()
        for other in (f"/ui/static/{name}", f"/ui/static/{name}?v=0123456789abcdef"):
            stale = client.get(other)
            assert stale.status_code == 200
            assert stale.headers["cache-control"] == "no-cache"


def test_a_current_etag_gets_304_without_a_body(client: TestClient) -> None:
    first = client.get("/ui/static/app.js")
    again = client.get("/ui/static/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    changed = client.get("/ui/static/app.js", headers={"If-None-Match": '"somethingelse"'})
    assert changed.status_code == 200


@pytest.mark.parametrize("path", ["/ui/static/index.html", "/ui/static/nothing.js", "/ui/static/..%2Fui.py"])
def test_only_the_bundled_assets_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_the_viewer_is_absent_when_disabled_and_hidden_from_the_api_schema() -> None:
    disabled = TestClient(create_app(settings_for(BUNDLED_REPOSITORY, ui_enabled=False)))
    assert disabled.get("/ui").status_code == 404
    enabled = TestClient(create_app(settings_for(BUNDLED_REPOSITORY)))
    assert not [path for path in enabled.get("/openapi.json").json()["paths"] if path.startswith("/ui")]


def test_bundled_files_fetch_nothing_from_outside() -> None:
    folder = resources.files("service").joinpath("static")
    for name in ["index.html", *MEDIA_TYPES]:
        text = folder.joinpath(name).read_text("utf-8").replace(SVG_NAMESPACE, "")
        assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", text), name
        assert "@import" not in text
        assert "<style" not in text
        assert not re.search(r"\sstyle=", text)  # inline styles would be refused by the policy
        assert not re.search(r"<script>|\son\w+=", text)  # so would inline scripts and handlers


def test_render_page_links_assets_by_digest_and_refuses_unknown_ones() -> None:
    assets = {"app.js": make_asset(b"console.log(1)", "text/javascript")}
    page = render_page('<script src="{{asset:app.js}}"></script><p>{{ asset:app.js }}</p>', assets)
    digest = assets["app.js"].digest
    assert page == f'<script src="ui/static/app.js?v={digest}"></script><p>ui/static/app.js?v={digest}</p>'
    assert make_asset(b"console.log(2)", "text/javascript").digest != digest
    with pytest.raises(ValueError, match=r"not bundled: missing\.css"):
        render_page("{{asset:missing.css}}", assets)
