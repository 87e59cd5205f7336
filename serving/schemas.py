"""Response models of the service, shared by the predictor and the BentoML endpoints.

They are pydantic models so that BentoML derives a typed OpenAPI schema from them. Vegetation is
the mean tree cover of a tile in percent (0..100); SWD values are in embedding units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from sarveg.bundle import Architecture, OODCalibration, Provenance, RegionMetrics

if TYPE_CHECKING:
    from sarveg.dual_pol import InputInfo
    from serving.decoding import DecodeLimits


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interval(_Response):
    """Conformal prediction interval of ``vegetation_pct``."""

    low: float = Field(description="Lower bound, percent (0..100).")
    high: float = Field(description="Upper bound, percent (0..100).")
    coverage: float = Field(
        description="Nominal marginal coverage (e.g. 0.9): the share of in-distribution tiles "
        "whose true vegetation falls inside their interval."
    )


class TileOODResult(_Response):
    """Whether the tile looks like the data the model was calibrated on."""

    swd_by_region: dict[str, float] = Field(
        description="Exact SWD_2 between the tile and each region's reference embeddings. It "
        "includes each region's spread, so it compares distributions and does not rank "
        "proximity: read nearest_region and plausible_regions for that."
    )
    knn_distance_by_region: dict[str, float] = Field(
        description="Mean distance to the k nearest reference tiles of each region (embedding "
        "units)."
    )
    region_p_values: dict[str, float] = Field(
        description="Full-conformal p-value of the tile belonging to each reference region: "
        "for tiles drawn like a region's reference tiles, P(p < alpha) <= alpha."
    )
    nearest_region: str = Field(
        description="The region with the largest membership p-value (ties: the smallest k-NN "
        "distance relative to the region's typical one)."
    )
    plausible_regions: list[str] = Field(
        description="Regions with membership p-value >= alpha: contains a tile's true region "
        "with probability >= 1 - alpha; empty when the tile matches none."
    )
    score: float = Field(description="Nonconformity score (larger is stranger).")
    p_value: float = Field(
        description="Conformal p-value of the score against held-out in-distribution tiles."
    )
    unreliable: bool = Field(
        description="Do not trust this estimate: p_value < alpha (at most a fraction alpha of "
        "in-distribution tiles are flagged; alpha is in the model card), or a tile footprint "
        "more than 2x off the training chips' (see unreliable_reasons)."
    )
    unreliable_reasons: list[str] = Field(
        default_factory=list, description="Why the tile is flagged; empty when it is not."
    )


class ModelRef(_Response):
    """The bundle that answered."""

    name: str
    modality: str


class InputBlock(_Response):
    """What the reader assumed about the upload."""

    kind: str = Field(
        description="seasonal_composite (the training layout: four seasonal medians) or "
        "single_date (one acquisition, e.g. a VV/VH GeoTIFF)."
    )
    layout: str = Field(description="Band layout recognised, e.g. s1grd-2band, s1grd-16band.")
    units: str = Field(description="db, power, amplitude or coherence.")
    units_source: str = Field(description="layout (fixed by it), detected or declared.")
    seasons: str = Field(
        description="per band, or replicated: one acquisition copied into the four seasons the "
        "model expects (it was trained on seasonal composites)."
    )
    date: str | None = Field(default=None, description="Acquisition date, if tags or name say.")
    footprint_m: tuple[float, float] | None = Field(
        default=None, description="Ground (width, height) of the tile, metres."
    )
    pixel_size_m: float | None = Field(default=None, description="Ground pixel size, metres.")
    footprint_ratio: float | None = Field(
        default=None,
        description="The tile's ground side over the model's training chips'; beyond 2x "
        "either way the tile is flagged unreliable.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What to know about how the tile was read, e.g. a footprint more than 2x "
        "off the training chips'.",
    )

    @classmethod
    def from_info(cls, info: InputInfo) -> InputBlock:
        """The answer's view of :class:`sarveg.dual_pol.InputInfo`."""
        return cls(**(vars(info) | {"warnings": list(info.warnings)}))


class TilePrediction(_Response):
    """Result for one tile."""

    vegetation_pct: float = Field(description="Predicted mean tree cover, percent (0..100).")
    interval: Interval
    ood: TileOODResult
    model: ModelRef
    embedding: list[float] | None = Field(
        default=None, description="The model's embedding (only with include_embedding=true)."
    )
    input: InputBlock | None = Field(default=None, description="What was assumed of the upload.")

    @model_serializer(mode="wrap")
    def _omit_absent_embedding(self, handler: SerializerFunctionWrapHandler):  # noqa: ANN202
        # Absent rather than null when not asked for. No return annotation on purpose: pydantic
        # then keeps the model's own schema for the OpenAPI document.
        data = handler(self)
        if data.get("embedding") is None:
            data.pop("embedding", None)
        return data


class SceneTileResult(_Response):
    """One tile of a scene, with its place in the grid and its footprint."""

    row: int = Field(description="Tile row in the scene grid (0 = top).")
    col: int = Field(description="Tile column in the scene grid (0 = left).")
    bounds: tuple[float, float, float, float] = Field(
        description="(left, bottom, right, top) in the scene's CRS."
    )
    valid_fraction: float = Field(description="Share of the tile's pixels with valid data.")
    vegetation_pct: float
    interval: Interval
    ood: TileOODResult


class VegetationStats(_Response):
    """Distribution of the tile predictions of a scene, percent."""

    mean: float
    p10: float
    p25: float
    p50: float
    p75: float
    p90: float


class SceneOODResult(_Response):
    """The scene's tile embeddings taken together, compared with each reference region."""

    swd_by_region: dict[str, float] = Field(
        description="Set-level SWD_2 of the scene's tile embeddings to each region."
    )
    nearest_region: str = Field(description="Region with the smallest set-level SWD_2.")
    score: float = Field(description="Set SWD_2 to the fine-tuning region.")
    p_value: float = Field(
        description="One-sided rank-sum (Mann-Whitney) test of the scene's tile scores against "
        "the calibration scores: exact for tiles drawn at random from the calibration region; "
        "spatially correlated tiles make it overconfident (see the docs for measured rates)."
    )
    unreliable: bool = Field(
        description="p_value < alpha. For scenes of tiles drawn at random from the "
        "calibration region, at most a fraction alpha is flagged; contiguous scenes are "
        "flagged more often. Read it with unreliable_tile_share."
    )


class SceneGrid(_Response):
    """The tile grid: one map pixel per tile."""

    rows: int
    cols: int
    tile_px: int = Field(description="Tile side in scene pixels (the bundle's source_tile_px).")
    crs: str | None = Field(description="The scene's CRS (WKT or EPSG code), if any.")
    transform: tuple[float, float, float, float, float, float] = Field(
        description="Affine (a, b, c, d, e, f) of the grid: scene transform x scale(tile_px)."
    )


class SceneSummary(_Response):
    """Summary of a scene."""

    tile_count: int = Field(description="Windows predicted.")
    vegetation_pct: VegetationStats
    unreliable_tile_share: float = Field(description="Share of tiles flagged unreliable.")
    skipped_tile_count: int = Field(
        description="Windows skipped: under 25 % valid, or failing the tile value checks."
    )
    skipped_by_reason: dict[str, int] = Field(
        description="Skipped windows counted by the kind of reason (e.g. 'too little valid "
        "data', 'sigma0 does not look like dB')."
    )
    units: str = Field(
        description="What every window's values were read as: db, power, amplitude or coherence "
        "(a two-band VV/VH scene's units are declared or told once for the whole scene)."
    )
    units_source: str = Field(description="layout (fixed by it), detected or declared.")
    ood: SceneOODResult
    grid: SceneGrid


class SkippedTile(_Response):
    """A scene window that was not predicted, and why."""

    row: int
    col: int
    bounds: tuple[float, float, float, float] = Field(
        description="(left, bottom, right, top) in the scene's CRS."
    )
    valid_fraction: float
    reason: str = Field(description="What the window was expected to be and what was found.")


class ScenePrediction(_Response):
    """Result for a scene: the summary, every predicted window and every skipped one."""

    summary: SceneSummary
    model: ModelRef
    tiles: list[SceneTileResult]
    skipped: list[SkippedTile]


class ServiceLimits(_Response):
    """What one upload may cost the server (set by the SARVEG_* environment variables)."""

    tile_max_upload_mb: float = Field(description="Body cap of /predict, MiB (413 above).")
    scene_max_upload_mb: float = Field(description="Body cap of the scene routes, MiB.")
    tile_max_pixels: int = Field(description="Height x width a tile header may declare.")
    scene_max_pixels: int = Field(description="Height x width a scene header may declare.")
    scene_max_windows: int = Field(description="Windows in one scene request's grid.")
    decode_workers: int = Field(description="Decoding child processes (concurrent decodes).")
    decode_memory_mb: int = Field(description="Address space a decoding child may add, MiB.")
    decode_cpu_s: float = Field(description="CPU seconds per decoding request.")
    decode_timeout_s: float = Field(description="Wall seconds per decoding request.")
    sandbox: bool = Field(description="Uploads are decoded in limited child processes.")

    @classmethod
    def from_limits(cls, limits: DecodeLimits) -> ServiceLimits:
        """The model card's view of :class:`serving.decoding.DecodeLimits`."""
        return cls(
            tile_max_upload_mb=limits.tile_max_upload_bytes / 2**20,
            scene_max_upload_mb=limits.scene_max_upload_bytes / 2**20,
            tile_max_pixels=limits.tile_max_pixels,
            scene_max_pixels=limits.scene_max_pixels,
            scene_max_windows=limits.scene_max_windows,
            decode_workers=limits.workers,
            decode_memory_mb=limits.memory_mb,
            decode_cpu_s=limits.cpu_s,
            decode_timeout_s=limits.timeout_s,
            sandbox=limits.sandbox,
        )


class BundleCard(_Response):
    """What one loaded bundle expects and how well it did."""

    name: str
    modality: str
    band_names: list[str] = Field(description="Model channels in order, derived from the upload.")
    units: str
    input_size: int = Field(description="Side in pixels the tiles are resampled to.")
    source_tile_px: int = Field(description="Native tile side; scenes are cut into these.")
    resampling: str
    embedding_size: int
    architecture: Architecture
    metrics: dict[str, RegionMetrics] = Field(description="Test-split metrics per region.")
    ood: OODCalibration = Field(
        description="OOD calibration: alpha (the bounded false-flag rate), method, measured "
        "false-flag rate, interval coverage, AUROC on an unseen region."
    )
    provenance: Provenance
    model_sha256: str
    provider: str = Field(description="ONNX Runtime execution provider actually used.")


class ModelCard(_Response):
    """The running service: bundles, runtime and limits."""

    bundles: list[BundleCard]
    providers_available: list[str]
    intra_op_threads: int
    max_batch_size: int
    limits: ServiceLimits
    sarveg_version: str
    notes: list[str]


class ErrorMessage(_Response):
    """Body of every 4xx answer."""

    error: str = Field(description="What was expected and what was found.")
