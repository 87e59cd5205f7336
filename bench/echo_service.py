"""The HTTP floor for bench/serve.py: endpoints that read a tile upload and answer at once.

``Echo`` is a BentoML service with ``/predict``'s signature (multipart field ``tile``) that
answers a small JSON without decoding the tile or running a model: its throughput is the most
one BentoML process serves on this machine, the cost every ``/predict`` pays before any of
sarveg's work. ``app`` is the same without any framework, a bare ASGI callable for uvicorn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml


@bentoml.service(name="sarveg-echo", workers=1)
class Echo:
    """Answers the size of the uploaded tile."""

    @bentoml.api(route="/predict")
    async def predict(self, tile: Path) -> dict[str, int]:
        """The upload's size in bytes (the file is read, as /predict reads it)."""
        return {"bytes": len(Path(tile).read_bytes())}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI echo (``uvicorn bench.echo_service:app``): reads the body, answers its size.

    No framework at all: the least any Python server on this machine pays for a request.
    """
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"bytes": %d}' % size})
