"""Scenes: tiled inference over a GeoTIFF larger than a tile, its summary and its map.

The scene is cut into windows of the bundle's ``source_tile_px`` scene pixels starting at the
top-left corner and read window by window by the decoder (:mod:`serving.decoding`), in a child
process. Every window gets the checks an uploaded tile gets; windows that fail them (under 25 %
valid, linear power, dB out of range, infinities) are skipped and reported with their reason.
The others are resampled and predicted like uploaded tiles, in batches. The map has one pixel
per window, so its transform is the scene's transform scaled by the window size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetWriter, MemoryFile

from sarveg.bundle import BundleManifest
from sarveg.errors import TileError
from sarveg.ood import SetOOD
from sarveg.scene import reason_kind
from serving.decoding import Window
from serving.decoding.pool import SceneStream
from serving.model import ServedModel, TileOutcome
from serving.schemas import (
    SceneGrid,
    SceneOODResult,
    ScenePrediction,
    SceneSummary,
    SceneTileResult,
    SkippedTile,
    VegetationStats,
)

MAP_BANDS: tuple[str, ...] = ("vegetation_pct", "ood_p_value", "unreliable")
QUANTILES: tuple[int, ...] = (10, 25, 50, 75, 90)
NO_MODEL_OUTPUT = (
    "the model could not score this window: expected finite model outputs, found NaN or infinity"
)


@dataclass(frozen=True, eq=False)
class SceneRun:
    """A scene after inference: where each window sits and what the model said."""

    tiles: list[Window]
    outcomes: list[TileOutcome]
    skipped: list[Window]
    set_ood: SetOOD
    grid_shape: tuple[int, int]
    grid_transform: Affine
    crs: str
    tile_px: int
    units: str
    units_source: str


def run_scene(model: ServedModel, stream: SceneStream, batch_size: int) -> SceneRun:
    """Predict every usable window of an open scene.

    Args:
        model: the bundle for the scene's modality.
        stream: the scene, open in a decoder.
        batch_size: windows per model call.

    Raises:
        TileError: no window could be predicted (the reasons are counted in the message).
    """
    header = stream.header
    kept: list[Window] = []
    outcomes: list[TileOutcome] = []
    skipped: list[Window] = []
    while (batch := stream.next_batch(batch_size)) is not None:
        skipped.extend(batch.skipped)
        if not batch.windows:
            continue
        for window, outcome in zip(
            batch.windows, model.predict_batch(batch.array), strict=True
        ):  # (B, C, S, S) in
            if outcome is None:
                skipped.append(
                    Window(
                        window.row,
                        window.col,
                        window.bounds,
                        window.valid_fraction,
                        NO_MODEL_OUTPUT,
                    )
                )
            else:
                kept.append(window)
                outcomes.append(outcome)
    rows, cols = header.grid_shape
    if not kept:
        counts = Counter(reason_kind(w.reason or "") for w in skipped)
        found = ", ".join(f"{n} {kind}" for kind, n in counts.most_common()) or "no windows"
        raise TileError(
            f"no usable tile in the scene: expected windows of {header.tile_px} px that pass the "
            f"tile checks, found none in a {rows} x {cols} grid ({found})"
        )
    embedding = np.stack([o.embedding for o in outcomes])  # (N, D)
    return SceneRun(
        tiles=kept,
        outcomes=outcomes,
        skipped=sorted(skipped, key=lambda w: (w.row, w.col)),
        set_ood=model.score_set(embedding),
        grid_shape=header.grid_shape,
        grid_transform=Affine(*header.grid_transform),
        crs=header.crs,
        tile_px=header.tile_px,
        units=header.units,
        units_source=header.units_source,
    )


def summarise_scene(model: ServedModel, run: SceneRun) -> ScenePrediction:
    """Build the ``/predict_scene`` answer from a scene run."""
    vegetation = np.array([o.vegetation_pct for o in run.outcomes])
    quantiles = np.percentile(vegetation, QUANTILES)
    unreliable = np.array([o.ood.unreliable for o in run.outcomes])
    set_ood = run.set_ood
    rows, cols = run.grid_shape
    summary = SceneSummary(
        tile_count=len(run.outcomes),
        vegetation_pct=VegetationStats(
            mean=float(vegetation.mean()),
            **{f"p{q}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        ),
        unreliable_tile_share=float(unreliable.mean()),
        skipped_tile_count=len(run.skipped),
        skipped_by_reason=dict(Counter(reason_kind(w.reason or "") for w in run.skipped)),
        units=run.units,
        units_source=run.units_source,
        ood=SceneOODResult(
            swd_by_region=set_ood.swd_by_region,
            nearest_region=set_ood.nearest_region,
            score=set_ood.score,
            p_value=set_ood.p_value,
            unreliable=set_ood.unreliable,
        ),
        grid=SceneGrid(
            rows=rows,
            cols=cols,
            tile_px=run.tile_px,
            crs=run.crs or None,
            transform=tuple(run.grid_transform)[:6],
        ),
    )
    tiles = [
        SceneTileResult(
            row=t.row,
            col=t.col,
            bounds=t.bounds,
            valid_fraction=t.valid_fraction,
            vegetation_pct=o.vegetation_pct,
            interval=o.interval(),
            ood=o.ood_result(),
        )
        for t, o in zip(run.tiles, run.outcomes, strict=True)
    ]
    skipped = [
        SkippedTile(
            row=w.row,
            col=w.col,
            bounds=w.bounds,
            valid_fraction=w.valid_fraction,
            reason=w.reason or "",
        )
        for w in run.skipped
    ]
    return ScenePrediction(summary=summary, model=model.ref, tiles=tiles, skipped=skipped)


def write_scene_map(model: ServedModel, run: SceneRun) -> bytes:
    """Return the scene map as GeoTIFF bytes, written in memory.

    Bands (float32, nodata NaN where no tile was predicted): ``vegetation_pct`` (percent),
    ``ood_p_value`` and ``unreliable`` (1 flagged, 0 not). A GeoTIFF holds one data type for all
    bands, so the mask is float too.
    """
    rows, cols = run.grid_shape
    grid = np.full((len(MAP_BANDS), rows, cols), np.nan, np.float32)  # (3, rows, cols)
    for tile, outcome in zip(run.tiles, run.outcomes, strict=True):
        grid[:, tile.row, tile.col] = (
            outcome.vegetation_pct,
            outcome.ood.p_value,
            float(outcome.ood.unreliable),
        )
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": len(MAP_BANDS),
        "dtype": "float32",
        "nodata": np.nan,
        "transform": run.grid_transform,
        "compress": "deflate",
    }
    if run.crs:
        profile["crs"] = CRS.from_user_input(run.crs)
    manifest = model.manifest
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(grid)
            label_map(
                dst,
                manifest,
                tile_px=str(run.tile_px),
                synthetic=str(manifest.provenance.synthetic).lower(),
            )
        return memfile.read()


def label_map(dst: DatasetWriter, manifest: BundleManifest, **tags: str) -> None:
    """Name a map's bands (:data:`MAP_BANDS`) and tag the model that made it."""
    for index, name in enumerate(MAP_BANDS, start=1):
        dst.set_band_description(index, name)
    dst.update_tags(
        model=manifest.name,
        modality=manifest.modality,
        ood_alpha=str(manifest.ood.alpha),
        **tags,
    )
