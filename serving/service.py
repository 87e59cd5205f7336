"""The BentoML service: a thin HTTP layer over :class:`serving.predictor.Predictor`.

Start it with ``bentoml serve serving.service:SarVeg --port 3000`` (``make serve``). Bundles come
from ``SARVEG_MODELS`` (default ``models/``), the largest model batch from
``SARVEG_MAX_BATCH_SIZE`` (default 32), the number of server processes from ``SARVEG_WORKERS``
(default 1: one process batches every request); upload caps, pixel budgets and decoding limits
from the variables of :mod:`serving.decoding.limits`.

Endpoints (all answer JSON except the scene map):

- ``POST /predict``: one tile -> vegetation, interval, OOD block, model, embedding on request.
- ``POST /predict_scene``: a scene GeoTIFF -> summary and per-tile results with bounds.
- ``POST /predict_scene_map``: a scene GeoTIFF -> GeoTIFF map (vegetation_pct, ood_p_value,
  unreliable) on the tile grid, in the scene's CRS.
- ``GET`` or ``POST /model_card``: bundles, bands, metrics, OOD calibration, provider.
- ``GET /ui/``: the web page (:mod:`serving.ui`): drop a file, see the answer drawn.
- BentoML's ``/readyz``, ``/livez``, ``/metrics``, ``/docs.json`` and the Swagger UI at ``/``,
  whose title, description (with a link to the page) and version are the project's
  (:class:`SarVegService`).

Uploads reach the endpoints through :class:`serving.uploads.UploadGuard` (multipart field
``tile`` or a raw body, the per-route size cap, the options); the parameters declared below are
the public contract shown in OpenAPI. Every upload is untrusted: it is decoded in a child process
with memory, CPU and time limits (:mod:`serving.decoding`), at most one per child at a time.
Tiles from concurrent ``/predict`` requests share model calls through
:class:`serving.batcher.MicroBatcher`. Bad input is answered 4xx with ``{"error": "..."}``;
anything else is a server fault and keeps BentoML's 500 and traceback.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import attr
import bentoml
import numpy as np
from bentoml._internal.service.openapi.specification import Info, OpenAPISpecification
from bentoml.validators import ContentType
from pydantic import Field, WithJsonSchema
from starlette.responses import JSONResponse, Response

from sarveg import __version__
from sarveg.errors import TileError
from serving.batcher import MicroBatcher
from serving.decoding import DecodeLimits
from serving.model import ServedModel, TileOutcome
from serving.predictor import DEFAULT_MAX_BATCH_SIZE, Predictor
from serving.schemas import ModelCard, ScenePrediction, TilePrediction
from serving.ui import UI_PATH, create_app
from serving.uploads import Upload, UploadGuard, error_response, stashed_upload

# BentoML's logging config leaves other loggers at WARNING: show model loading and refusals.
logging.getLogger("serving").setLevel(logging.INFO)

MAX_BATCH_ENV = "SARVEG_MAX_BATCH_SIZE"
WORKERS_ENV = "SARVEG_WORKERS"
# Scenes can be large: run them one at a time so tile requests keep their cores and memory.
SCENE_CONCURRENCY = 1
# Declared types of the upload fields, for the OpenAPI document and Swagger UI's file picker.
TILE_DESCRIPTION = (
    "The GeoTIFF (or sartiles NetCDF for /predict); recognised by its content, whatever its "
    "declared type."
)
TileFile = Annotated[
    Path | None,
    # "file" is what BentoML's Python client looks for; OpenAPI wants a binary string.
    WithJsonSchema({"type": "file", "format": "binary", "description": TILE_DESCRIPTION}),
    WithJsonSchema(
        {"type": "string", "format": "binary", "description": TILE_DESCRIPTION},
        mode="serialization",
    ),
]
ModalityOption = Annotated[
    Literal["s1grd", "gssic"] | None,
    Field(description="Insist on a modality; default: inferred from the band names or count."),
]
EmbeddingOption = Annotated[bool, Field(description="Add the model's embedding to the answer.")]
UnitsOption = Annotated[
    Literal["db", "power", "amplitude"] | None,
    Field(description="Units of a two-band VV/VH file; default: detected from the values."),
]

UPLOAD_ROUTES = {
    "/predict": frozenset({"modality", "include_embedding", "units"}),
    "/predict_scene": frozenset({"modality", "units"}),
    "/predict_scene_map": frozenset({"modality", "units"}),
}
CARD_NOTES = (
    "unreliable = p_value < ood.alpha: on in-distribution tiles (exchangeable with the "
    "calibration tiles) at most a fraction alpha is flagged; ood.measured.false_flag_rate is the "
    "rate measured on held-out tiles.",
    "interval: split-conformal, marginal coverage ood.interval_alpha.",
    "Bundles with provenance.synthetic = true were trained and evaluated on simulated data.",
)
# The OpenAPI info.description, rendered as Markdown at the top of the Swagger front page. It
# opens with the title: BentoML's front page style hides info.title and shows only the version.
OPENAPI_DESCRIPTION = f"""\
# sarveg {__version__}

Vegetation (mean tree cover, percent) from Sentinel-1 SAR tiles and scenes, with a conformal
interval and a calibrated out-of-distribution verdict: whether the upload looks like the data the
model was calibrated on, and which reference region it resembles.

**[Open the web page]({UI_PATH.lstrip("/")}/)**: drop a tile or a scene, see the vegetation, the
map and where not to trust it.

- `POST /predict`: one tile (GeoTIFF or sartiles NetCDF) in the multipart field `tile`.
- `POST /predict_scene`, `POST /predict_scene_map`: a scene GeoTIFF, as JSON or as a GeoTIFF map.
- `GET /model_card`: the loaded bundles, their bands, metrics and measured calibration.

Bad input is answered 4xx with `{{"error": "..."}}`.
"""


def _positive_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}: expected a positive integer, found {raw!r}")
    return int(raw)


@functools.cache
def _batch_size_histogram() -> Any:
    """The ``sarveg_model_batch_size`` histogram on ``/metrics`` (tiles per model call)."""
    # Imported here: BentoML points prometheus_client at its multiprocess directory only when
    # the worker starts, after this module is imported.
    import prometheus_client

    return prometheus_client.Histogram(
        "sarveg_model_batch_size",
        "Tiles per model call for /predict (requests batched together).",
        labelnames=["modality"],
        buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    )


def _upload(ctx: bentoml.Context) -> Upload:
    """Return the upload the guard stashed; never a path (a request must not name a file)."""
    upload = stashed_upload(ctx.request.scope)
    if upload is None:
        raise TileError(
            "upload not received: expected the file in the multipart field 'tile' or as the raw "
            "body of a POST to an upload route, found a request the upload layer did not see"
        )
    return upload


def _client_error(ctx: bentoml.Context, error: TileError) -> JSONResponse:
    request = ctx.request
    # BentoML copies ctx.response.status_code onto whatever an endpoint with ctx returns.
    ctx.response.status_code = 400
    return error_response(str(error), 400, f"{request.method} {request.url.path}")


class SarVegService(bentoml.Service):
    """BentoML's service with the project's OpenAPI title, description and version.

    BentoML 1.4 takes the title from the service name, the description from a built Bento's
    README (else its own boilerplate) and the version from the Bento tag ("None" under
    ``bentoml serve``): ``openapi_spec`` is the one place all three meet, so it is overridden
    here (``@bentoml.service(service_class=...)``).
    """

    @property
    def openapi_spec(self) -> OpenAPISpecification:
        """BentoML's document with the project's ``info`` block."""
        spec = super().openapi_spec
        info = Info(title=self.name, version=__version__, description=OPENAPI_DESCRIPTION)
        return attr.evolve(spec, info=info)


@bentoml.asgi_app(create_app(), path=UI_PATH, name="ui")
@bentoml.service(
    name="sarveg",
    service_class=SarVegService,
    workers=_positive_env(WORKERS_ENV, 1),
    traffic={"timeout": 600},
)
class SarVeg:
    """Vegetation percentage and a calibrated OOD flag for Sentinel-1 tiles and scenes."""

    def __init__(self) -> None:
        limits = DecodeLimits.from_env()
        self.predictor = Predictor.from_paths(
            max_batch_size=_positive_env(MAX_BATCH_ENV, DEFAULT_MAX_BATCH_SIZE), limits=limits
        )
        # Threads waiting on a decoding child would only queue inside the pool: keep them to
        # one per child, and let the rest wait as cheap coroutines.
        self.decode_limiter = anyio.CapacityLimiter(limits.workers)
        batch_sizes = _batch_size_histogram()
        self.batchers: dict[str, MicroBatcher[TileOutcome | None]] = {}
        for modality, model in self.predictor.models.items():

            def run_batch(
                tiles: np.ndarray, model: ServedModel = model
            ) -> list[TileOutcome | None]:
                batch_sizes.labels(modality=model.manifest.modality).observe(len(tiles))
                return model.predict_batch(tiles)

            self.batchers[modality] = MicroBatcher(
                run_batch, self.predictor.max_batch_size, modality
            )
        self.scene_limiter = anyio.CapacityLimiter(SCENE_CONCURRENCY)

    @bentoml.api(route="/predict")
    async def predict(
        self,
        ctx: bentoml.Context,
        tile: TileFile = None,
        modality: ModalityOption = None,
        include_embedding: EmbeddingOption = False,
        units: UnitsOption = None,
    ) -> TilePrediction:
        """Predict one tile.

        The tile is a GeoTIFF or sartiles NetCDF, sent as the multipart field ``tile`` or as the
        raw body (Content-Type image/tiff): a geetiles seasonal composite, or a single
        acquisition as two bands named VV and VH (dB, linear power or amplitude: ``units``,
        detected when absent). Tiles of any pixel size are resampled to the model input.
        ``modality`` insists on s1grd or gssic (default: from the bands);
        ``include_embedding=true`` adds the embedding. The answer's ``input`` block says what
        was assumed.
        """
        try:
            upload = _upload(ctx)
            model, prepared = await anyio.to_thread.run_sync(
                self.predictor.decode,
                upload.data,
                upload.modality,
                upload.units,
                upload.filename,
                limiter=self.decode_limiter,
            )
            array = prepared.array
            outcome = (await self.batchers[model.manifest.modality].submit(array[None]))[0]
            return model.tile_prediction(outcome, upload.include_embedding, prepared.input)
        except TileError as error:
            return _client_error(ctx, error)  # type: ignore[return-value]

    @bentoml.api(route="/predict_scene")
    async def predict_scene(
        self,
        ctx: bentoml.Context,
        tile: TileFile = None,
        modality: ModalityOption = None,
        units: UnitsOption = None,
    ) -> ScenePrediction:
        """Predict a scene GeoTIFF larger than a tile, cut into the bundle's tile footprint.

        Returns a summary (tile count, vegetation mean and quantiles, share of unreliable tiles,
        the units read, scene-level SWD to each reference region, nearest region, scene
        verdict) and every tile with its bounds. A two-band VV/VH scene's ``units`` are told
        once for the whole scene when not given.
        """
        try:
            upload = _upload(ctx)
            return await anyio.to_thread.run_sync(
                self.predictor.predict_scene,
                upload.data,
                upload.modality,
                upload.units,
                limiter=self.scene_limiter,
            )
        except TileError as error:
            return _client_error(ctx, error)  # type: ignore[return-value]

    @bentoml.api(route="/predict_scene_map")
    async def predict_scene_map(
        self,
        ctx: bentoml.Context,
        tile: TileFile = None,
        modality: ModalityOption = None,
        units: UnitsOption = None,
    ) -> Annotated[Path, ContentType("image/tiff")]:
        """Predict a scene and return a GeoTIFF map on the tile grid.

        One pixel per tile, in the scene's CRS; bands vegetation_pct, ood_p_value, unreliable
        (float32, NaN where no tile was predicted). ``units`` as for ``/predict_scene``.
        """
        try:
            upload = _upload(ctx)
            data = await anyio.to_thread.run_sync(
                self.predictor.predict_scene_map,
                upload.data,
                upload.modality,
                upload.units,
                limiter=self.scene_limiter,
            )
        except TileError as error:
            return _client_error(ctx, error)  # type: ignore[return-value]
        return Response(  # type: ignore[return-value]
            content=data,
            media_type="image/tiff",
            headers={"Content-Disposition": 'attachment; filename="scene_map.tif"'},
        )

    @bentoml.api(route="/model_card")
    def model_card(self) -> ModelCard:
        """Describe the loaded bundles and the runtime (also answered for GET).

        Bands expected, input size, metrics, OOD calibration, the ONNX Runtime provider actually
        used and the service limits.
        """
        return self.predictor.model_card(CARD_NOTES)

    @bentoml.on_shutdown
    async def close(self) -> None:
        """Stop the batch workers and the decoding children."""
        for batcher in self.batchers.values():
            await batcher.close()
        self.predictor.close()


def _upload_caps() -> dict[str, int]:
    limits = DecodeLimits.from_env()
    return {
        route: limits.tile_max_upload_bytes
        if route == "/predict"
        else limits.scene_max_upload_bytes
        for route in UPLOAD_ROUTES
    }


SarVeg.add_asgi_middleware(
    UploadGuard, routes=UPLOAD_ROUTES, limits=_upload_caps(), get_routes=frozenset({"/model_card"})
)
