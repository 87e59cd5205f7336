"""The web page of the service: drop a Sentinel-1 file, see the vegetation and its trust.

A Starlette app serving the committed files of ``static/`` (``index.html``, ``app.js``,
``style.css``: vanilla JavaScript, system fonts, no build step and nothing fetched from another
origin, so it works offline). The service mounts it at :data:`UI_PATH`; the page calls the
service's own endpoints (``/predict``, ``/predict_scene``, ``/predict_scene_map``,
``/model_card``) with relative URLs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

logger = logging.getLogger(__name__)

UI_PATH = "/ui"
STATIC_DIR = Path(__file__).resolve().parent / "static"
# The browser itself refuses anything from another origin: a script, style or font added later
# from a CDN fails loudly in development instead of silently breaking the page offline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'self'"
)


class SecurityHeaders:
    """ASGI middleware adding the page's Content-Security-Policy to every answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on; add the headers to the answer's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app() -> Starlette:
    """The page's ASGI app: the files of ``static/``, ``index.html`` for the directory."""
    # One catch-all mount: BentoML's PassiveMount only claims /ui/... when a route of the
    # mounted app matches, and a mount at "/" matches every path below it.
    if STATIC_DIR.is_dir():
        route: BaseRoute = Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
    else:
        # A build that left the files out (a Bento including only *.py) still serves the API;
        # the page answers 404 with the reason instead of failing the service's start.
        logger.warning("web page files not found in %s: %s answers 404", STATIC_DIR, UI_PATH)
        route = Route("/{path:path}", _missing_page)
    return Starlette(routes=[route], middleware=[Middleware(SecurityHeaders)])


async def _missing_page(_: Request) -> JSONResponse:
    return JSONResponse(
        {"error": "the web page's files (serving/ui/static) are not part of this build"},
        status_code=404,
    )
