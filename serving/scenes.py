"""Scenes: tiled inference over a GeoTIFF larger than a tile, its summary and its map.

The scene is cut into windows of the bundle's ``source_tile_px`` scene pixels starting at the
top-left corner (:mod:`sarveg.scene`); windows under 25 % valid are skipped. Each window is
resampled and predicted like an uploaded tile, in batches. The map has one pixel per window, so
its transform is the scene's transform scaled by the window size and it overlays the scene.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetWriter, MemoryFile

from sarveg.bundle import BundleManifest
from sarveg.errors import TileError
from sarveg.ood import SetOOD
from sarveg.scene import MIN_VALID_FRACTION, SceneTile, open_scene
from sarveg.tiles import identify_layout, open_raster, sniff_format
from serving.model import ServedModel, TileOutcome
from serving.schemas import (
    SceneGrid,
    SceneOODResult,
    ScenePrediction,
    SceneSummary,
    SceneTileResult,
    VegetationStats,
)

# Windows per scene request (a 128 x 128 grid): bounds the time and the size of the JSON answer;
# larger mosaics belong to the batch command, which streams.
MAX_SCENE_TILES = 16_384
MAP_BANDS: tuple[str, ...] = ("vegetation_pct", "ood_p_value", "unreliable")
QUANTILES: tuple[int, ...] = (10, 25, 50, 75, 90)


def require_geotiff(data: bytes) -> None:
    """Refuse anything but TIFF data by its magic bytes, before any decoder opens it.

    NetCDF is refused unopened: its native decoder can crash on a damaged file
    (:mod:`serving.sandbox`), and scenes are GeoTIFF only.
    """
    if sniff_format(data[:8]) != "tiff":
        raise TileError("scene must be a GeoTIFF: expected TIFF data, found NetCDF")


def scene_modality(data: bytes) -> str:
    """Return the modality of a scene's bands, reading only its header."""
    require_geotiff(data)
    with open_raster(data) as (dataset, _):
        return identify_layout(dataset).modality


@dataclass(frozen=True)
class PlacedTile:
    """Where a predicted window sits: grid cell, footprint and valid share."""

    row: int
    col: int
    bounds: tuple[float, float, float, float]  # (left, bottom, right, top), scene CRS
    valid_fraction: float


@dataclass(frozen=True, eq=False)
class SceneRun:
    """A scene after inference: where each predicted tile sits and what the model said."""

    tiles: list[PlacedTile]
    outcomes: list[TileOutcome]
    set_ood: SetOOD
    grid_shape: tuple[int, int]
    grid_transform: Affine
    crs: CRS | None
    tile_px: int


def _batches(tiles: Iterator[SceneTile], size: int) -> Iterator[list[SceneTile]]:
    batch: list[SceneTile] = []
    for tile in tiles:
        batch.append(tile)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_scene(model: ServedModel, data: bytes, modality: str | None, batch_size: int) -> SceneRun:
    """Predict every usable window of a scene.

    Args:
        model: the bundle for the scene's modality.
        data: the scene GeoTIFF's bytes.
        modality: insist on a modality (None: from the bands).
        batch_size: windows per model call.

    Raises:
        TileError: unreadable scene, or no window with enough valid pixels.
    """
    require_geotiff(data)
    tile_px = model.manifest.source_tile_px
    kept: list[PlacedTile] = []
    outcomes: list[TileOutcome] = []
    with open_scene(data, tile_px, modality=modality) as scene:
        rows, cols = scene.grid_shape
        if rows * cols > MAX_SCENE_TILES:
            raise TileError(
                f"scene too large for one request: expected at most {MAX_SCENE_TILES:,} windows "
                f"of {tile_px} px, found a {rows} x {cols} grid (use batch inference for mosaics)"
            )
        for batch in _batches(scene.iter_tiles(), batch_size):
            prepared = np.stack([model.prepare(t.tile) for t in batch])  # (B, C, S, S)
            outcomes.extend(model.predict_batch(prepared))
            # Keep only where each window sits: its pixels are dropped batch by batch.
            kept.extend(PlacedTile(t.row, t.col, t.tile.bounds, t.valid_fraction) for t in batch)
        if not kept:
            raise TileError(
                f"no usable tile in the scene: expected windows of {tile_px} px with at least "
                f"{MIN_VALID_FRACTION:.0%} valid pixels, found none in a {rows} x {cols} grid"
            )
        embedding = np.stack([o.embedding for o in outcomes])  # (N, D)
        return SceneRun(
            tiles=kept,
            outcomes=outcomes,
            set_ood=model.score_set(embedding),
            grid_shape=scene.grid_shape,
            grid_transform=scene.grid_transform,
            crs=scene.crs,
            tile_px=tile_px,
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
            crs=_crs_text(run.crs),
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
    return ScenePrediction(summary=summary, model=model.ref, tiles=tiles)


def _crs_text(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


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
    if run.crs is not None:
        profile["crs"] = run.crs
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
