"""What a batch run reads: a folder of tiles or one mosaic, as a list of tile sources.

Three inputs are accepted:

- a geetiles folder (partition GeoJSONs at the top): every chip of every region and split that
  :func:`sarveg.dataset.index_dataset` finds for the model's modality;
- any other folder: the ``.tif`` / ``.tiff`` (and, for a GSSIC model, ``.nc``) files found
  recursively outside ``modis*`` label folders, each identified by its path relative to the
  folder, without the suffix;
- one GeoTIFF mosaic: the windows of ``source_tile_px`` scene pixels of :mod:`sarveg.scene`,
  identified as ``r{row}_c{col}`` and mapped on the scene's tile grid.

Sources are listed in a fixed order (identifiers for folders, row-major for a mosaic), so two
runs, and the two engines, cut the same batches.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError

from sarveg.dataset import find_partitions, index_dataset
from sarveg.dual_pol import check_units
from sarveg.errors import TileError
from sarveg.scene import open_scene

SIMULATION_MANIFEST = "simulation.json"
SYNTHETIC_TAG_KEY = "SYNTHETIC"
TIFF_SUFFIXES = (".tif", ".tiff")
NETCDF_SUFFIXES = (".nc",)
# How far above the input a simulator's manifest is looked for (a tile folder inside a layout).
MANIFEST_SEARCH_DEPTH = 4
# geetiles keeps MODIS label rasters in dataset folders named modis*: they are not SAR tiles.
LABEL_DIR_PREFIX = "modis"


@dataclass(frozen=True, slots=True)
class TileSource:
    """Where one tile comes from.

    Attributes:
        identifier: unique name of the tile in this input (the table's key).
        path: the tile file, or the mosaic for a window.
        row: window row in the mosaic grid (-1 for a tile file).
        col: window column in the mosaic grid (-1 for a tile file).
    """

    identifier: str
    path: str
    row: int = -1
    col: int = -1

    def to_json(self) -> list[str | int]:
        """A compact JSON-able form (sent to Ray workers)."""
        return [self.identifier, self.path, self.row, self.col]

    @classmethod
    def from_json(cls, item: list[str | int]) -> TileSource:
        """Inverse of :meth:`to_json`."""
        identifier, path, row, col = item
        return cls(str(identifier), str(path), int(row), int(col))


@dataclass(frozen=True)
class MosaicGrid:
    """The tile grid of a mosaic: one map pixel per window."""

    shape: tuple[int, int]  # (rows, cols)
    transform: Affine
    crs: CRS | None
    tile_px: int


@dataclass(frozen=True, eq=False)
class BatchInput:
    """A discovered input.

    Attributes:
        path: the folder or mosaic given by the user.
        kind: ``"geetiles"``, ``"files"`` or ``"mosaic"``.
        modality: the model's modality (the only one read).
        synthetic: the input was written by ``sarveg simulate``.
        files: tile sources of a folder, sorted by identifier (empty for a mosaic).
        grid: the window grid of a mosaic (None for a folder).
        notes: what listing the input skipped (e.g. geetiles chips without a tile file).
        units: how two-band VV/VH values are read: declared by the user, or told once for a
            whole mosaic; None: told tile by tile (or fixed by the bands' layout).
        units_source: ``"declared"``, ``"detected"`` (once for the mosaic), ``"layout"`` or
            ``"per tile"``.
    """

    path: Path
    kind: str
    modality: str
    synthetic: bool
    files: tuple[TileSource, ...] = ()
    grid: MosaicGrid | None = None
    notes: tuple[str, ...] = ()
    units: str | None = None
    units_source: str = "per tile"

    @property
    def n_sources(self) -> int:
        """Number of tiles (windows of a mosaic, before any is found empty)."""
        if self.grid is not None:
            rows, cols = self.grid.shape
            return rows * cols
        return len(self.files)

    def iter_sources(self) -> Iterator[TileSource]:
        """Yield every source in the fixed order (a mosaic's windows are made on the fly)."""
        if self.grid is None:
            yield from self.files
            return
        rows, cols = self.grid.shape
        width = max(len(str(rows - 1)), len(str(cols - 1)))
        path = str(self.path)
        for row in range(rows):
            for col in range(cols):
                yield TileSource(f"r{row:0{width}d}_c{col:0{width}d}", path, row, col)


def discover_input(
    path: str | Path,
    modality: str,
    tile_px: int,
    exclude: Path | None = None,
    footprint_m: float | None = None,
    units: str | None = None,
) -> BatchInput:
    """Find the tiles of a batch input.

    Args:
        path: a folder of tiles (geetiles layout or plain files) or a GeoTIFF mosaic.
        modality: the model's modality; only its tiles are listed.
        tile_px: window side in mosaic pixels (the bundle's ``source_tile_px``).
        exclude: a folder whose files are never inputs (the output folder, if inside).
        footprint_m: the bundle's training footprint: mosaic windows then cover that many
            metres (see :func:`sarveg.scene.open_scene`).
        units: ``"db"``, ``"power"`` or ``"amplitude"`` of two-band VV/VH input; None tells
            them once for a mosaic, or tile by tile for a folder.

    Raises:
        TileError: nothing to read at ``path``, a mosaic ``open_scene`` refuses, or units
            that are unknown or that a mosaic's layout fixes otherwise.
    """
    units = check_units(units)
    path = Path(path).expanduser().resolve()
    if path.is_file():
        with open_scene(
            path, tile_px, modality=modality, footprint_m=footprint_m, units=units
        ) as scene:
            grid = MosaicGrid(scene.grid_shape, scene.grid_transform, scene.crs, scene.tile_px)
            # Every window is then read with the units told here, whatever its own content.
            told = scene.units if scene.units_source != "layout" else None
            source = scene.units_source
        synthetic = _is_synthetic(path, path)
        return BatchInput(
            path, "mosaic", modality, synthetic, grid=grid, units=told, units_source=source
        )
    if not path.is_dir():
        raise TileError(f"expected a folder of tiles or a GeoTIFF mosaic, found nothing at {path}")
    notes: tuple[str, ...] = ()
    if find_partitions(path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = index_dataset(path, modality, read_labels=False)
        # Chips the index drops (no split, missing or non-raster tile file) never reach the
        # decoder: its warning is passed on to the summary.
        notes = tuple(str(w.message) for w in caught)
        files = tuple(
            sorted((TileSource(r.identifier, str(r.path)) for r in records), key=_identifier)
        )
        kind = "geetiles"
    else:
        files = _find_tile_files(path, modality, exclude)
        kind = "files"
    if not files:
        suffixes = _suffixes(modality)
        raise TileError(
            f"no {modality} tiles in {path}: expected a geetiles layout or {'/'.join(suffixes)} "
            "files, found none"
        )
    synthetic = _is_synthetic(path, Path(files[0].path))
    return BatchInput(
        path,
        kind,
        modality,
        synthetic,
        files,
        notes=notes,
        units=units,
        units_source="declared" if units is not None else "per tile",
    )


def _identifier(source: TileSource) -> str:
    return source.identifier


def _suffixes(modality: str) -> tuple[str, ...]:
    # read_tile decodes NetCDF as GSSIC only, so an S1GRD model never lists .nc files.
    return TIFF_SUFFIXES + (NETCDF_SUFFIXES if modality == "gssic" else ())


def _find_tile_files(root: Path, modality: str, exclude: Path | None) -> tuple[TileSource, ...]:
    suffixes = _suffixes(modality)
    excluded = exclude.resolve() if exclude is not None else None
    found = []
    for file in root.rglob("*"):
        if file.suffix.lower() not in suffixes or not file.is_file():
            continue
        if excluded is not None and file.is_relative_to(excluded):
            continue
        relative = file.relative_to(root)
        if any(part.lower().startswith(LABEL_DIR_PREFIX) for part in relative.parts[:-1]):
            continue
        identifier = relative.with_suffix("").as_posix()
        found.append(TileSource(identifier, str(file)))
    return tuple(sorted(found, key=_identifier))


def _is_synthetic(path: Path, first_tile: Path) -> bool:
    """True if a simulator manifest sits at or above ``path``, or the first GeoTIFF is tagged."""
    folder = path if path.is_dir() else path.parent
    for candidate in [folder, *folder.parents][:MANIFEST_SEARCH_DEPTH]:
        manifest = candidate / SIMULATION_MANIFEST
        if manifest.is_file():
            try:
                return bool(json.loads(manifest.read_text()).get("synthetic", False))
            except (OSError, ValueError, AttributeError):
                return False
    if first_tile.suffix.lower() not in TIFF_SUFFIXES:
        return False
    try:
        with rasterio.open(first_tile) as dataset:
            return SYNTHETIC_TAG_KEY in dataset.tags()
    except RasterioError:
        return False
