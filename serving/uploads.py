"""The HTTP transport of uploads: size cap, content types, form fields and error answers.

``UploadGuard`` is an ASGI middleware placed in front of the upload endpoints. It reads the body
(refusing more than the route's upload cap with 413 before buffering it), accepts either
``multipart/form-data`` with the file in the field ``tile`` or the raw file as the body
(``image/tiff``, ``application/x-netcdf``, ``application/octet-stream``, ...), checks the option
fields (``modality``, ``include_embedding``, ``units``; from the form or the query string), and
hands the
endpoint an :class:`Upload` in the request scope. The file itself is recognised later by its
content (magic bytes, then the reader's validation), never by a declared type.

Why not BentoML's own form parsing: it accepts one body format per route, it writes every
upload to a temporary file, and it treats a text field where a file was expected as a URL to
fetch (``curl -F tile=x.tif`` without the ``@`` turns into an outbound request and a 500).

Every refusal is one JSON object ``{"error": "..."}`` naming what was expected and what was
found, logged at INFO without a traceback; server paths never appear in it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.responses import JSONResponse

from sarveg.dual_pol import check_units
from sarveg.errors import TileError
from sarveg.tiles import check_modality, sniff_format

logger = logging.getLogger(__name__)

UPLOAD_SCOPE_KEY = "sarveg.upload"
FILE_FIELD = "tile"
RAW_CONTENT_TYPES = frozenset(
    {
        "",  # no declared type: HTTP's default is application/octet-stream
        "application/octet-stream",
        "image/tiff",
        "image/tiff-fx",
        "image/geotiff",
        "application/geotiff",
        "application/x-geotiff",
        "application/netcdf",
        "application/x-netcdf",
        "application/x-hdf",
        "application/x-hdf5",
    }
)
MULTIPART = "multipart/form-data"
MAX_FORM_PARTS = 16
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", ""})


class UploadError(Exception):
    """A request the upload layer refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ClientGone(Exception):
    """The client disconnected before sending the whole body."""


@dataclass(frozen=True)
class Upload:
    """A parsed upload request.

    Attributes:
        data: the uploaded file's bytes.
        modality: the ``modality`` option, or None to infer it from the bands.
        include_embedding: the ``include_embedding`` option.
        units: the ``units`` option of two-band VV/VH files (None: detected).
        filename: the multipart file name, if any (searched for an acquisition date).
    """

    data: bytes
    modality: str | None = None
    include_embedding: bool = False
    units: str | None = None
    filename: str | None = None


def error_response(message: str, status: int, where: str) -> JSONResponse:
    """Answer a client error with ``{"error": message}`` and log it without a traceback."""
    logger.info("%d %s: %s", status, where, message)
    return JSONResponse({"error": message}, status_code=status)


def unquote(value: str) -> str:
    """Strip JSON string quotes: Swagger UI sends form fields JSON-encoded (``"s1grd"``)."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean option (true/false, 1/0, yes/no, on/off)."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UploadError(f"invalid {name}: expected true or false, found {value[:40]!r}")


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """Return a request header (latin-1 decoded) or None."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def megabytes(n_bytes: int) -> str:
    """Format a byte count in MiB for messages."""
    return f"{n_bytes / 1024 / 1024:.4g} MiB"


async def read_body(scope: Mapping[str, Any], receive: Any, limit: int) -> bytes:
    """Read the whole body, refusing (413) a declared or actual size above ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise UploadError(f"invalid Content-Length: expected a byte count, found {declared!r}")
        if int(declared) > limit:
            raise UploadError(
                f"upload too large: expected at most {megabytes(limit)}, "
                f"found {megabytes(int(declared))} (Content-Length)",
                status=413,
            )
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise UploadError(
                f"upload too large: expected at most {megabytes(limit)}, found more", status=413
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    chunks: list[memoryview] = field(default_factory=list)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes, str | None]]:
    """Split a ``multipart/form-data`` body into ``(name, data, filename)`` parts, in memory.

    ``filename`` is None for a text field.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(
            "malformed multipart request: expected Content-Type multipart/form-data with a "
            "boundary parameter, found none"
        )
    view = memoryview(body)
    parts: list[_Part] = []
    ended: list[bool] = []

    def on_part_begin() -> None:
        if len(parts) >= MAX_FORM_PARTS:
            raise UploadError(f"too many form fields: expected at most {MAX_FORM_PARTS}")
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        parts[-1].header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        parts[-1].header_value += data[start:end]

    def on_header_end() -> None:
        part = parts[-1]
        if bytes(part.header_field).strip().lower() == b"content-disposition":
            _, options = parse_options_header(bytes(part.header_value))
            part.name = options.get(b"name", b"").decode("utf-8", "replace") or None
            filename = options.get(b"filename")
            part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        part.header_field.clear()
        part.header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        # The whole body is written at once, so ``data`` is the body: keep views, copy once.
        chunk = view[start:end] if data is body else memoryview(bytes(data[start:end]))
        parts[-1].chunks.append(chunk)

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": lambda: ended.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError:
        raise UploadError(
            "malformed multipart body: expected multipart/form-data parts separated by the "
            "declared boundary, found data that does not parse"
        ) from None
    if not ended:
        raise UploadError(
            "malformed multipart body: expected a closing boundary, found a truncated body"
        )
    return [(p.name or "", b"".join(p.chunks), p.filename) for p in parts]


def check_text_tile(data: bytes) -> None:
    """Refuse a ``tile`` text field that is not raster data: usually curl -F without the ``@``."""
    try:
        sniff_format(data[:8])
    except TileError:
        raise UploadError(
            f"field {FILE_FIELD!r} holds text, not a file: expected a GeoTIFF or NetCDF upload "
            f"(curl -F {FILE_FIELD}=@tile.tif, with the @), found {len(data)} bytes of text"
        ) from None


def build_upload(
    data: bytes | None,
    options: Mapping[str, list[str]],
    allowed: frozenset[str],
    path: str,
    filename: str | None = None,
) -> Upload:
    """Check the file and options of a request and return the :class:`Upload`."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UploadError(
            f"unexpected field {unknown[0]!r}: {path} expects "
            f"{', '.join([FILE_FIELD, *sorted(allowed)])}"
        )
    single: dict[str, str] = {}
    for name, values in options.items():
        if len(values) > 1:
            raise UploadError(f"repeated field {name!r}: expected one value, found {len(values)}")
        single[name] = unquote(values[0])
    if data is None:
        raise UploadError(
            f"missing field {FILE_FIELD!r}: expected the tile as a multipart file field named "
            f"{FILE_FIELD!r} (curl -F {FILE_FIELD}=@tile.tif) or as the raw request body"
        )
    if not data:
        raise UploadError(
            "empty upload: expected a GeoTIFF or NetCDF file, found 0 bytes (a missing @ in "
            "curl -F tile=@file, or an empty file?)"
        )
    modality = single.get("modality", "").strip().lower() or None
    try:
        check_modality(modality)
    except TileError as error:
        raise UploadError(str(error)) from None
    include_embedding = parse_bool("include_embedding", single.get("include_embedding", ""))
    try:
        units = check_units(single.get("units", "").strip() or None)
    except TileError as error:
        raise UploadError(str(error)) from None
    return Upload(data, modality, include_embedding, units, filename)


async def parse_upload(
    scope: Mapping[str, Any], receive: Any, allowed: frozenset[str], limit: int
) -> Upload:
    """Read and check an upload request (see the module docstring)."""
    path = scope["path"]
    content_type = header(scope, b"content-type") or ""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != MULTIPART and media_type not in RAW_CONTENT_TYPES:
        hint = (
            " (curl --data-binary sends application/x-www-form-urlencoded: add "
            "-H 'Content-Type: image/tiff')"
            if media_type == "application/x-www-form-urlencoded"
            else ""
        )
        raise UploadError(
            f"unsupported Content-Type {media_type!r}: expected multipart/form-data with the "
            f"file in a field {FILE_FIELD!r}, or the raw file as the body with Content-Type "
            f"image/tiff, application/x-netcdf or application/octet-stream{hint}"
        )
    body = await read_body(scope, receive, limit)
    options: dict[str, list[str]] = {}
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), True):
        options.setdefault(name, []).append(value)
    if not body:
        raise UploadError(
            "empty body: expected a GeoTIFF or NetCDF file as the body, or multipart/"
            f"form-data with the file in a field {FILE_FIELD!r}; found 0 bytes"
        )
    if media_type != MULTIPART:
        return build_upload(body, options, allowed, path)
    files: list[tuple[bytes, str | None]] = []
    for name, data, filename in parse_multipart(body, content_type):
        if name == FILE_FIELD:
            if filename is None:
                check_text_tile(data)
            files.append((data, filename))  # a text part holding a raster is accepted
        else:
            options.setdefault(name, []).append(data.decode("utf-8", "replace"))
    if len(files) > 1:
        raise UploadError(f"repeated field {FILE_FIELD!r}: expected one file, found {len(files)}")
    data, filename = files[0] if files else (None, None)
    return build_upload(data, options, allowed, path, filename)


def stashed_upload(scope: Mapping[str, Any]) -> Upload | None:
    """Return the :class:`Upload` that :class:`UploadGuard` left in the request scope."""
    return scope.get("state", {}).get(UPLOAD_SCOPE_KEY)


class UploadGuard:
    """ASGI middleware: parse and check uploads before the endpoints see the request.

    Args:
        app: the downstream ASGI app (BentoML's).
        routes: upload route path -> option names it accepts besides ``tile``.
        limits: upload route path -> its upload cap in bytes.
        get_routes: POST-only routes also answered for GET (no body).
    """

    def __init__(
        self,
        app: Any,
        routes: Mapping[str, frozenset[str]],
        limits: Mapping[str, int],
        get_routes: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.limits = dict(limits)
        self.get_routes = get_routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # served under a prefix: routes are relative to it
            path = path[len(root) :] or "/"
        if method in ("GET", "HEAD") and path in self.get_routes:
            await self.app(_as_json_post(scope), _replay(b"{}", receive), send)
            return
        if method != "POST" or path not in self.routes:
            await self.app(scope, receive, send)
            return
        try:
            upload = await parse_upload(scope, receive, self.routes[path], self.limits[path])
        except ClientGone:
            return
        except UploadError as error:
            response = error_response(error.message, error.status, f"{method} {path}")
            await response(scope, receive, send)
            return
        scope = _as_json_post(scope)
        scope.setdefault("state", {})[UPLOAD_SCOPE_KEY] = upload
        await self.app(scope, _replay(b"{}", receive), send)


def _as_json_post(scope: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``scope`` as a POST with an empty JSON body (the endpoint reads the stash)."""
    headers = [
        (k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"2")]
    return dict(scope, method="POST", headers=headers)


def _replay(body: bytes, receive: Any) -> Any:
    """Return an ASGI ``receive`` that yields ``body`` once, then defers to ``receive``."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
