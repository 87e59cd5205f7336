"""The web page of the service: drop a Sentinel-1 file, see the vegetation and its trust.

A Starlette app serving the committed files of ``static/`` (``index.html``, ``app.js``,
``style.css``: vanilla JavaScript, system fonts, no build step and nothing fetched from another
origin, so it works offline). The service mounts it at :data:`UI_PATH`; the page calls the
service's own endpoints (``/predict``, ``/predict_scene``, ``/predict_scene_map``,
``/model_card``) with relative URLs.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

UI_PATH = "/ui"
STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app() -> Starlette:
    """The page's ASGI app: the files of ``static/``, ``index.html`` for the directory."""
    # One catch-all mount: BentoML's PassiveMount only claims /ui/... when a route of the
    # mounted app matches, and a mount at "/" matches every path below it.
    return Starlette(routes=[Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="ui")])
