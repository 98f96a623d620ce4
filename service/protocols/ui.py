"""The attention viewer: a static page at ``/ui`` that calls the public API from the browser.

The page, its script, stylesheet and icon ship in the package (``service/static``) and are read once when the app
is built; nothing is fetched from anywhere else. Every response carries a strict Content-Security-Policy
(``default-src 'self'``, no inline script or style). Asset URLs carry a digest of their content, so a browser may
keep them for a year and still never run a stale script after an upgrade; the page itself is revalidated.

The page links its assets and calls the API with relative URLs (``ui/static/…``, ``v1/models``), so it keeps
working behind a proxy that mounts the service under a path prefix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, FastAPI, Request, Response

from service.errors import NotFound

PAGE = "index.html"
MEDIA_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
FOREVER = "public, max-age=31536000, immutable"  # the URL names this exact content
REVALIDATE = "no-cache"  # may be stored, but must be checked (ETag) before each use
PLACEHOLDER = re.compile(r"\{\{\s*asset:([\w.-]+)\s*\}\}")


@dataclass(frozen=True)
class Asset:
    """One file served by the viewer, with the digest that names its content."""

    body: bytes
    media_type: str
    digest: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


def make_asset(body: bytes, media_type: str) -> Asset:
    return Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])


def render_page(template: str, assets: Mapping[str, Asset]) -> str:
    """Replace each ``{{asset:NAME}}`` with the asset's relative, content-addressed URL."""

    def url(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in assets:
            raise ValueError(f"the page links an asset that is not bundled: {name}")
        return f"ui/static/{name}?v={assets[name].digest}"

    return PLACEHOLDER.sub(url, template)


def load_viewer() -> tuple[Asset, dict[str, Asset]]:
    """Read the bundled files (called when the app is built, never at import)."""
    folder = resources.files("service").joinpath("static")
    assets = {name: make_asset(folder.joinpath(name).read_bytes(), media) for name, media in MEDIA_TYPES.items()}
    page = render_page(folder.joinpath(PAGE).read_text("utf-8"), assets)
    return make_asset(page.encode("utf-8"), "text/html; charset=utf-8"), assets


def cached_response(request: Request, asset: Asset, cache_control: str) -> Response:
    """The asset, or 304 when the client's copy (by ETag) is current."""
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    tags = {tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")}
    if asset.etag in tags or "*" in tags:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def viewer_router(page: Asset, assets: Mapping[str, Asset]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.api_route("/ui", methods=["GET", "HEAD"])
    async def viewer(request: Request) -> Response:
        return cached_response(request, page, REVALIDATE)

    @router.api_route("/ui/static/{name}", methods=["GET", "HEAD"])
    async def asset(name: str, request: Request) -> Response:
        found = assets.get(name)
        if found is None:
            raise NotFound("not found")
        # Only a URL naming the current content may be kept without asking again.
        fresh = request.query_params.get("v") == found.digest
        return cached_response(request, found, FOREVER if fresh else REVALIDATE)

    return router


def install_ui(app: FastAPI) -> None:
    """Serve the attention viewer at ``/ui`` and its assets under ``/ui/static/``."""
    page, assets = load_viewer()
    app.include_router(viewer_router(page, assets))
