"""The decoding work itself: upload bytes in, model inputs out. Runs in a child or in-process.

:func:`prepare_tile` turns one uploaded tile into the ``(C, S, S)`` model input of its bundle;
:class:`SceneSession` reads a scene window by window and hands out batches of model inputs, with
the windows it skipped and why. Both refuse HDF5 files that point outside themselves
(:mod:`serving.decoding.hdf5_scan`) before any decoder opens them, and check the header's pixel
budget before any pixel is read. Only numbers leave this module: the model never runs here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np

from sarveg.dual_pol import InputInfo
from sarveg.errors import TileError
from sarveg.footprint import footprint_warning
from sarveg.resample import resample_tile
from sarveg.scene import MIN_VALID_FRACTION, Scene, SceneTile, open_scene
from sarveg.tiles import Tile, read_tile, sniff_format
from serving.decoding.hdf5_scan import HDF5_MAGIC, scan_hdf5

# Windows per scene request (a 128 x 128 grid): bounds the time and the size of the JSON answer;
# larger mosaics belong to the batch command, which streams.
MAX_SCENE_TILES = 16_384
Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class InBuffer:
    """Stands for upload bytes the parent wrote into the child's shared buffer.

    Attributes:
        length: how many bytes, from the start of the buffer.
    """

    length: int


@dataclass(frozen=True)
class ModelSpec:
    """What a served bundle needs of its inputs.

    Attributes:
        input_size: model input side in pixels.
        tile_px: native tile side, the scene window size in scene pixels.
        footprint_m: ground side of the training chips, metres (None: unknown).
    """

    input_size: int
    tile_px: int
    footprint_m: float | None = None


Specs = Mapping[str, ModelSpec]  # modality -> spec, for the modalities this server serves


@dataclass(frozen=True)
class PreparedTile:
    """A decoded tile resampled to its bundle's input.

    Attributes:
        modality: ``"s1grd"`` or ``"gssic"``.
        encoding: how the file stored its values.
        bounds: ``(left, bottom, right, top)`` in ``crs``.
        crs: the tile's CRS as text (EPSG code or WKT), "" if none.
        array: ``(C, S, S)`` float32 model input.
        input: what the reader assumed (single date or composite, units, date).
    """

    modality: str
    encoding: str
    bounds: Bounds
    crs: str
    array: np.ndarray
    input: InputInfo | None = None


def crs_text(crs: object) -> str:
    """A CRS as ``EPSG:n`` when it has a code, else WKT; "" for none."""
    if crs is None:
        return ""
    epsg = crs.to_epsg()  # type: ignore[attr-defined]
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()  # type: ignore[attr-defined]


def check_self_contained(data: bytes) -> None:
    """Refuse an HDF5 upload that points outside itself, before any decoder opens it."""
    if sniff_format(data[:8]) == "netcdf" and data.startswith(HDF5_MAGIC):
        scan_hdf5(data)


def spec_for(modality: str, specs: Specs) -> ModelSpec:
    """The spec of ``modality``; a TileError names what this server serves."""
    if modality not in specs:
        raise TileError(
            f"no model for {modality} tiles: this server expects {' or '.join(specs)} tiles"
        )
    return specs[modality]


@dataclass(frozen=True)
class TileRequest:
    """One uploaded tile to decode.

    Attributes:
        data: the file's bytes (GeoTIFF or NetCDF, recognised by content), or where they are
            in a decoding child's shared buffer.
        modality: insist on a modality; None infers it from the bands.
        specs: the served modalities and their input sizes.
        max_pixels: header budget (height x width).
        units: declared units of a two-band VV/VH file (None: detected).
        name: the upload's file name, searched for an acquisition date.
    """

    data: bytes | InBuffer
    modality: str | None
    specs: Specs
    max_pixels: int
    units: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class SceneRequest:
    """One uploaded scene to read window by window.

    Attributes:
        data: the scene GeoTIFF's bytes, or where they are in a child's shared buffer.
        modality: insist on a modality; None infers it from the bands.
        specs: the served modalities.
        max_pixels: header budget (height x width).
        max_windows: most windows in the scene's grid.
        units: declared units of a two-band VV/VH scene (None: told once for the scene).
    """

    data: bytes | InBuffer
    modality: str | None
    specs: Specs
    max_pixels: int
    max_windows: int = MAX_SCENE_TILES
    units: str | None = None


def prepare_tile(request: TileRequest) -> PreparedTile:
    """Decode an uploaded tile and resample it to its bundle's input.

    Raises:
        TileError: anything that is not a tile this server can answer.
    """
    data, modality, specs = request.data, request.modality, request.specs  # data: bytes here
    check_self_contained(data)
    tile: Tile = read_tile(
        data,
        modality=modality,
        max_pixels=request.max_pixels,
        units=request.units,
        name=request.name,
    )
    valid = float(np.isfinite(tile.array).all(axis=0).mean())
    if valid < MIN_VALID_FRACTION:  # the rule scene windows follow
        raise TileError(
            f"too little valid data: expected at least {MIN_VALID_FRACTION:.0%} of the tile's "
            f"pixels valid in every channel, found {valid:.0%}"
        )
    spec = spec_for(tile.modality, specs)
    info = tile.input
    if info is not None and info.footprint_m is not None and spec.footprint_m is not None:
        side = math.sqrt(info.footprint_m[0] * info.footprint_m[1])
        warning = footprint_warning(side, spec.footprint_m)
        info = replace(info, footprint_ratio=side / spec.footprint_m)
        if warning is not None:
            info = replace(info, warnings=(*info.warnings, warning))
    return PreparedTile(
        modality=tile.modality,
        encoding=tile.encoding,
        bounds=tile.bounds,
        crs=crs_text(tile.crs),
        array=resample_tile(tile.array, spec.input_size),  # (C, S, S)
        input=info,
    )


@dataclass(frozen=True)
class SceneHeader:
    """What a scene is, from its header alone.

    Attributes:
        modality: the scene's modality.
        grid_shape: window rows and columns.
        grid_transform: affine ``(a, b, c, d, e, f)`` of a raster with one pixel per window.
        crs: the scene's CRS as text, "" if none.
        tile_px: window side in scene pixels.
        units: what the values were read as (``db``, ``power``, ``amplitude``, ``coherence``).
        units_source: ``layout`` (fixed by it), ``detected`` or ``declared``.
    """

    modality: str
    grid_shape: tuple[int, int]
    grid_transform: tuple[float, float, float, float, float, float]
    crs: str
    tile_px: int
    units: str
    units_source: str


@dataclass(frozen=True)
class Window:
    """Where a scene window sits, and why it was skipped if it was.

    Attributes:
        row: window row (0 = top).
        col: window column (0 = left).
        bounds: ``(left, bottom, right, top)`` in the scene's CRS.
        valid_fraction: share of its pixels valid in every channel.
        reason: why it was skipped, or None for a predicted window.
    """

    row: int
    col: int
    bounds: Bounds
    valid_fraction: float
    reason: str | None = None


@dataclass(frozen=True)
class WindowBatch:
    """The next usable windows of a scene and the skipped ones read on the way.

    Attributes:
        windows: the usable windows, in order.
        array: ``(len(windows), C, S, S)`` float32 model inputs.
        skipped: windows read and skipped, with their reason.
    """

    windows: list[Window]
    array: np.ndarray
    skipped: list[Window]


class SceneSession:
    """An open scene read batch by batch (:meth:`next_batch`); close it when done.

    Args:
        request: the scene and its budgets.

    Raises:
        TileError: not a scene this server can read (format, bands, budget, grid size).
    """

    def __init__(self, request: SceneRequest) -> None:
        data, modality, specs = request.data, request.modality, request.specs  # data: bytes
        max_pixels, max_windows = request.max_pixels, request.max_windows
        if sniff_format(data[:8]) != "tiff":
            raise TileError("scene must be a GeoTIFF: expected TIFF data, found NetCDF")
        self._stack = contextlib.ExitStack()
        tile_px = {name: spec.tile_px for name, spec in specs.items()}
        footprints = {name: spec.footprint_m for name, spec in specs.items()}
        scene: Scene = self._stack.enter_context(
            open_scene(
                data,
                tile_px,
                modality=modality,
                max_pixels=max_pixels,
                footprint_m=footprints,
                units=request.units,
            )
        )
        rows, cols = scene.grid_shape
        if rows * cols > max_windows:
            self.close()
            raise TileError(
                f"scene too large for one request: expected at most {max_windows:,} windows "
                f"of {scene.tile_px} px, found a {rows} x {cols} grid (use batch inference for "
                "mosaics)"
            )
        self._input_size = specs[scene.modality].input_size
        self._windows: Iterator[SceneTile] = scene.iter_tiles()
        self.header = SceneHeader(
            modality=scene.modality,
            grid_shape=scene.grid_shape,
            grid_transform=tuple(scene.grid_transform)[:6],  # type: ignore[arg-type]
            crs=crs_text(scene.crs),
            tile_px=scene.tile_px,
            units=scene.units,
            units_source=scene.units_source,
        )

    def next_batch(self, size: int) -> WindowBatch | None:
        """Read windows until ``size`` usable ones (or the end); None when nothing was left."""
        windows: list[Window] = []
        arrays: list[np.ndarray] = []
        skipped: list[Window] = []
        for scene_tile in self._windows:
            window = Window(
                scene_tile.row,
                scene_tile.col,
                scene_tile.tile.bounds,
                scene_tile.valid_fraction,
                scene_tile.problem,
            )
            if window.reason is not None:
                skipped.append(window)
                continue
            windows.append(window)
            arrays.append(resample_tile(scene_tile.tile.array, self._input_size))
            if len(windows) == size:
                break
        if not windows and not skipped:
            return None
        array = np.stack(arrays) if arrays else np.empty((0, 0, 0, 0), np.float32)
        return WindowBatch(windows, array, skipped)  # (B, C, S, S)

    def close(self) -> None:
        """Close the scene."""
        self._stack.close()
