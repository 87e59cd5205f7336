"""Cutting a scene (a GeoTIFF larger than one tile) into model tiles, keeping georeferencing.

A scene is read window by window, so memory stays bounded by one row of tiles whatever the
scene's size. The grid starts at the scene's top-left pixel and steps by the bundle's tile
footprint in the scene's own pixels; edge tiles that overhang the scene are padded with NaN
(nodata). Every window gets the checks an uploaded tile gets (:func:`sarveg.tiles.value_problem`)
plus a minimum valid share; a window that fails them carries its reason and is skipped by the
callers, never predicted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from sarveg import bands
from sarveg.dual_pol import check_units, detect_units
from sarveg.errors import TileError
from sarveg.footprint import ground_size_m
from sarveg.tiles import (
    MIN_SIDE_PX,
    BandLayout,
    Tile,
    check_fixed_units,
    check_header,
    check_modality,
    decode_bands,
    dual_pol_values,
    fixed_units,
    identify_layout,
    open_raster,
    value_problem,
)

# A scene may be far larger than a tile, but its header is still checked before any pixel read;
# it is read one window at a time, so memory does not grow with this budget.
MAX_SCENE_PIXELS = 16384 * 16384
MIN_VALID_FRACTION = 0.25
# A two-band VV/VH scene's units are told once, from a decimated read of the whole scene (a
# bounded number of pixels whatever the scene's size), so that every window is read alike.
UNITS_SAMPLE_SIDE_PX = 512


def ground_window_px(dataset: DatasetReader, tile_px: int, footprint_m: float | None) -> int:
    """Window side in scene pixels.

    The training footprint in metres over the scene's pixel size when both are known, else
    ``tile_px``.
    """
    if footprint_m is None:
        return tile_px
    size = ground_size_m(dataset.transform, dataset.crs, dataset.height, dataset.width)
    if size is None:
        return tile_px
    return max(MIN_SIDE_PX, round(footprint_m / size[2]))


def reason_kind(reason: str) -> str:
    """The short kind of a skip reason: its words before the first colon."""
    return reason.split(":", 1)[0]


def window_problem(
    array: np.ndarray, modality: str, valid_fraction: float, min_valid_fraction: float
) -> str | None:
    """Why a scene window cannot be predicted (too little valid data, bad values), or None."""
    if valid_fraction < min_valid_fraction:
        return (
            f"too little valid data: expected at least {min_valid_fraction:.0%} valid pixels, "
            f"found {valid_fraction:.0%}"
        )
    return value_problem(array, modality)


@dataclass(frozen=True)
class SceneTile:
    """One tile cut from a scene.

    Attributes:
        row: tile row in the scene grid (0 = top).
        col: tile column in the scene grid (0 = left).
        tile: the decoded tile (NaN where nodata or beyond the scene edge).
        valid_fraction: share of the tile's pixels with valid data in every channel.
        problem: why the window is skipped (:func:`window_problem`), or None if usable.
    """

    row: int
    col: int
    tile: Tile
    valid_fraction: float
    problem: str | None = None


@dataclass(frozen=True)
class Scene:
    """An open scene: the dataset, its band layout and its tile grid."""

    dataset: DatasetReader
    layout: BandLayout
    tile_px: int
    units: str = "db"  # what the values are read as: db, power, amplitude or coherence
    units_source: str = "layout"  # layout (fixed by it), detected or declared

    @property
    def modality(self) -> str:
        """``"s1grd"`` or ``"gssic"``."""
        return self.layout.modality

    @property
    def crs(self) -> CRS | None:
        """The scene's CRS."""
        return self.dataset.crs

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of tile rows and columns (edge tiles included)."""
        return (
            math.ceil(self.dataset.height / self.tile_px),
            math.ceil(self.dataset.width / self.tile_px),
        )

    @property
    def grid_transform(self) -> Affine:
        """Transform of a raster with one pixel per tile, aligned with the scene."""
        return self.dataset.transform * Affine.scale(self.tile_px, self.tile_px)

    def read_tile(
        self, row: int, col: int, min_valid_fraction: float = MIN_VALID_FRACTION
    ) -> SceneTile:
        """Decode tile ``(row, col)`` of the grid, NaN-padded beyond the scene edge."""
        window = Window(col * self.tile_px, row * self.tile_px, self.tile_px, self.tile_px)
        try:
            raw = self.dataset.read(
                list(self.layout.indexes), window=window, boundless=True, fill_value=0
            )  # (C, t, t)
        except RasterioError:
            raise TileError(
                f"could not decode scene tile ({row}, {col}): expected complete image data, "
                "found a corrupt or truncated file"
            ) from None
        array = decode_bands(raw, self.layout, self.units)
        inside = np.zeros(array.shape[1:], bool)
        inside[
            : max(0, self.dataset.height - row * self.tile_px),
            : max(0, self.dataset.width - col * self.tile_px),
        ] = True
        array[:, ~inside] = np.nan
        tile = Tile(
            array=array,
            band_names=bands.CHANNELS[self.modality],
            modality=self.modality,
            crs=self.dataset.crs,
            transform=self.dataset.window_transform(window),
            encoding=self.layout.encoding,
        )
        valid = float(np.isfinite(array).all(axis=0).mean())
        problem = window_problem(array, self.modality, valid, min_valid_fraction)
        return SceneTile(row=row, col=col, tile=tile, valid_fraction=valid, problem=problem)

    def iter_tiles(self, min_valid_fraction: float = MIN_VALID_FRACTION) -> Iterator[SceneTile]:
        """Yield every window of the grid row by row; skipped ones carry their ``problem``."""
        rows, cols = self.grid_shape
        for row in range(rows):
            for col in range(cols):
                yield self.read_tile(row, col, min_valid_fraction)


@contextlib.contextmanager
def open_scene(
    source: str | Path | bytes,
    tile_px: int | Mapping[str, int],
    *,
    modality: str | None = None,
    max_pixels: int = MAX_SCENE_PIXELS,
    footprint_m: float | Mapping[str, float | None] | None = None,
    units: str | None = None,
) -> Iterator[Scene]:
    """Open a GeoTIFF scene for tiled reading.

    Args:
        source: path or bytes of a GeoTIFF with S1GRD or GSSIC bands (any encoding
            ``read_tile`` accepts).
        tile_px: tile footprint in the scene's pixels (the bundle's native tile size), or one
            per modality when the modality is only known from the bands.
        modality: insist on ``"s1grd"`` or ``"gssic"``; None infers it from the bands.
        max_pixels: refuse scenes declaring more pixels (height x width) than this, before
            reading any pixel.
        footprint_m: the training chips' ground side (or one per modality); when given and the
            scene's CRS gives its pixel size, windows cover that many metres, whatever the
            scene's resolution, instead of ``tile_px`` pixels.
        units: ``"db"``, ``"power"`` or ``"amplitude"`` for a two-band VV/VH scene; None tells
            them once for the whole scene from a decimated read (other layouts fix their units).

    Raises:
        TileError: not a readable GeoTIFF, unknown bands, or a scene smaller than one tile.
    """
    check_modality(modality)
    units = check_units(units)
    with open_raster(source) as (dataset, kind):
        if kind != "tiff":
            raise TileError("scene must be a GeoTIFF: expected TIFF data, found NetCDF")
        check_header(dataset, max_pixels, "scene")
        layout = identify_layout(dataset)
        if modality is not None and layout.modality != modality:
            raise TileError(f"expected a {modality} scene, found {layout.modality} bands")
        if isinstance(tile_px, Mapping):
            if layout.modality not in tile_px:
                raise TileError(
                    f"no model for {layout.modality} scenes: expected {' or '.join(tile_px)} bands"
                )
            tile_px = tile_px[layout.modality]
        if isinstance(footprint_m, Mapping):
            footprint_m = footprint_m.get(layout.modality)
        tile_px = ground_window_px(dataset, tile_px, footprint_m)
        h, w = dataset.height, dataset.width
        if min(h, w) < max(MIN_SIDE_PX, tile_px // 2):
            raise TileError(
                f"scene too small: expected at least {max(MIN_SIDE_PX, tile_px // 2)} pixels a "
                f"side (tiles are {tile_px} px), found {h} x {w}"
            )
        # Last, after the header-only checks: telling the units reads (decimated) pixels.
        units_source = "layout"
        if layout.name == "s1grd-2band":
            units_source = "declared" if units is not None else "detected"
            units = units or detect_scene_units(dataset, layout)
        else:
            check_fixed_units(layout, units)
            units = fixed_units(layout)
        yield Scene(
            dataset=dataset, layout=layout, tile_px=tile_px, units=units, units_source=units_source
        )


def detect_scene_units(dataset: DatasetReader, layout: BandLayout) -> str:
    """The units of a two-band VV/VH scene, from a nearest-neighbour decimated read of it all.

    Raises:
        TileError: unreadable pixels, or values that do not say their units (the message asks
            for ``units=``).
    """
    scale = max(1, math.ceil(max(dataset.height, dataset.width) / UNITS_SAMPLE_SIDE_PX))
    shape = (len(layout.indexes), -(-dataset.height // scale), -(-dataset.width // scale))
    try:
        raw = dataset.read(list(layout.indexes), out_shape=shape)  # (2, h, w), nearest
    except RasterioError:
        raise TileError(
            "could not decode the scene: expected complete image data, found a corrupt or "
            "truncated file"
        ) from None
    values = dual_pol_values(raw)
    return detect_units(values[0], values[1])
