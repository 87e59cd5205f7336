"""The map of a batch run: a Cloud-Optimised GeoTIFF and its PNG quick-look.

Bands (float32, NaN where no tile was predicted) are those of the service's scene map
(:data:`serving.scenes.MAP_BANDS`): ``vegetation_pct``, ``ood_p_value`` and ``unreliable``
(1 flagged, 0 not). A mosaic's map has one pixel per window on the mosaic's tile grid. A folder
of tiles gets a north-up grid in the tiles' CRS covering all their bounds, with
``PIXELS_PER_TILE_SIDE`` pixels along a typical tile's shorter side, each tile's values burned
over the pixels whose centres fall inside it (in identifier order, so overlaps are
deterministic). The grid is coarsened if it would exceed ``MAX_MAP_PIXELS``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from sarveg.bundle import BundleManifest
from serving.batch.inputs import BatchInput
from serving.scenes import MAP_BANDS, label_map

logger = logging.getLogger(__name__)

PIXELS_PER_TILE_SIDE = 2
MAX_MAP_PIXELS = 4096 * 4096
QUICKLOOK_MAX_PX = 1200
HATCH = "////"
NO_DATA_GREY = "0.85"
# Below this share of map pixels with a prediction, tiles are drawn as markers.
DENSE_MAP_SHARE = 0.05


def harmonise_bounds(predicted: pa.Table, batch_input: BatchInput) -> tuple[CRS | None, np.ndarray]:
    """Return the map CRS and every tile's bounds ``(n, 4)`` in it.

    A mosaic's CRS is its own. A folder's is the CRS most of its tiles use; bounds of tiles in
    another CRS are transformed (tiles without a CRS are taken as they are).
    """
    bounds = np.stack(
        [predicted[name].to_numpy() for name in ("left", "bottom", "right", "top")], axis=1
    ).reshape(-1, 4)  # (n, 4)
    if batch_input.grid is not None:
        return batch_input.grid.crs, bounds
    names = [name for name in predicted["crs"].to_pylist() if name]
    if not names:
        return None, bounds
    target_name = Counter(names).most_common(1)[0][0]
    target = CRS.from_user_input(target_name)
    crs_column = predicted["crs"].to_pylist()
    for name in set(names) - {target_name}:
        source = CRS.from_user_input(name)
        for row in (i for i, value in enumerate(crs_column) if value == name):
            bounds[row] = transform_bounds(source, target, *bounds[row])
    return target, bounds


def folder_grid(bounds: np.ndarray) -> tuple[Affine, int, int]:
    """A north-up grid ``(transform, height, width)`` covering every tile's bounds."""
    left, bottom = bounds[:, 0].min(), bounds[:, 1].min()
    right, top = bounds[:, 2].max(), bounds[:, 3].max()
    sides = np.minimum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    resolution = float(np.median(sides)) / PIXELS_PER_TILE_SIDE
    if not resolution > 0:  # degenerate footprints: one pixel over the whole extent
        resolution = max(right - left, top - bottom, 1e-9)
    width = max(1, math.ceil((right - left) / resolution - 1e-9))
    height = max(1, math.ceil((top - bottom) / resolution - 1e-9))
    if width * height > MAX_MAP_PIXELS:
        resolution *= math.sqrt(width * height / MAX_MAP_PIXELS)
        width = max(1, math.ceil((right - left) / resolution))
        height = max(1, math.ceil((top - bottom) / resolution))
    return Affine(resolution, 0.0, left, 0.0, -resolution, top), height, width


def burn_folder(
    values: np.ndarray, bounds: np.ndarray, grid: np.ndarray, transform: Affine
) -> None:
    """Write ``values`` ``(n, 3)`` into ``grid`` ``(3, H, W)`` over each tile's footprint."""
    _, height, width = grid.shape
    resolution, left, top = transform.a, transform.c, transform.f
    col0 = np.rint((bounds[:, 0] - left) / resolution).astype(np.int64)
    col1 = np.maximum(np.rint((bounds[:, 2] - left) / resolution).astype(np.int64), col0 + 1)
    row0 = np.rint((top - bounds[:, 3]) / resolution).astype(np.int64)
    row1 = np.maximum(np.rint((top - bounds[:, 1]) / resolution).astype(np.int64), row0 + 1)
    for i in range(len(values)):
        r0, r1 = np.clip((row0[i], row1[i]), 0, height)
        c0, c1 = np.clip((col0[i], col1[i]), 0, width)
        grid[:, r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)] = values[i, :, None, None]


def map_values(predicted: pa.Table) -> np.ndarray:
    """The map bands of each predicted tile, ``(n, 3)`` float32."""
    return np.stack(
        [
            predicted["vegetation_pct"].to_numpy(),
            predicted["p_value"].to_numpy(),
            predicted["unreliable"].to_numpy(zero_copy_only=False).astype(np.float64),
        ],
        axis=1,
    ).astype(np.float32)


def write_map(
    path: Path,
    predicted: pa.Table,
    bounds: np.ndarray,
    crs: CRS | None,
    batch_input: BatchInput,
    manifest: BundleManifest,
    synthetic: bool,
) -> bool:
    """Write the map as a Cloud-Optimised GeoTIFF; False (nothing written) if no tile."""
    if predicted.num_rows == 0:
        path.unlink(missing_ok=True)
        return False
    values = map_values(predicted)  # (n, 3)
    if batch_input.grid is not None:
        (height, width), transform = batch_input.grid.shape, batch_input.grid.transform
        grid = np.full((len(MAP_BANDS), height, width), np.nan, np.float32)  # (3, H, W)
        rows, cols = predicted["row"].to_numpy(), predicted["col"].to_numpy()
        grid[:, rows, cols] = values.T
    else:
        transform, height, width = folder_grid(bounds)
        grid = np.full((len(MAP_BANDS), height, width), np.nan, np.float32)  # (3, H, W)
        burn_folder(values, bounds, grid, transform)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(MAP_BANDS),
        "dtype": "float32",
        "nodata": np.nan,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if crs is not None:
        profile["crs"] = crs
    staging = path.with_name(f".{path.name}.staging.tif")
    with rasterio.open(staging, "w", **profile) as dst:
        dst.write(grid)
        label_map(dst, manifest, tiles=str(predicted.num_rows), synthetic=str(synthetic).lower())
    del grid
    # The COG driver only copies: stage a tiled GeoTIFF, then let GDAL add overviews and order
    # the blocks. Nearest overviews keep the unreliable band 0/1.
    rasterio.shutil.copy(
        staging, path, driver="COG", compress="DEFLATE", overview_resampling="NEAREST"
    )
    staging.unlink()
    return True


def write_quicklook(
    path: Path,
    map_path: Path,
    bounds: np.ndarray,
    values: np.ndarray,
    title: str,
    alpha: float,
    synthetic: bool,
) -> bool:
    """Draw the vegetation map with unreliable tiles hatched; False if not drawn.

    A map that tiles mostly fill (a mosaic) is drawn as the raster; a sparse one (chips
    scattered over a region) as one square marker per tile, which stays visible at any extent.
    matplotlib is optional (the ``train`` extra): without it the PNG is skipped with a warning.

    Args:
        path: the PNG to write.
        map_path: the map GeoTIFF.
        bounds: ``(n, 4)`` tile bounds in the map's CRS.
        values: ``(n, 3)`` the map bands per tile.
        title: first line of the title.
        alpha: the OOD level (legend).
        synthetic: say so in the title.
    """
    path.unlink(missing_ok=True)  # never leave an earlier run's picture behind
    if not map_path.is_file():
        return False
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        logger.warning("matplotlib is not installed: no quick-look PNG (pip install matplotlib)")
        return False
    with rasterio.open(map_path) as src:
        factor = max(1, math.ceil(max(src.width, src.height) / QUICKLOOK_MAX_PX))
        shape = (math.ceil(src.height / factor), math.ceil(src.width / factor))
        raster = src.read((1, 3), out_shape=(2, *shape), resampling=Resampling.nearest)
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
        geographic = src.crs is not None and src.crs.is_geographic
        crs_text = src.crs.to_string() if src.crs is not None else "no CRS"
    figure = Figure(figsize=(8.0, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.set_facecolor(NO_DATA_GREY)
    style = {"cmap": "YlGn", "vmin": 0.0, "vmax": 100.0}
    if np.isfinite(raster[0]).mean() >= DENSE_MAP_SHARE:
        image = ax.imshow(
            np.ma.masked_invalid(raster[0]), extent=extent, interpolation="nearest", **style
        )
        flagged = np.nan_to_num(raster[1], nan=0.0)
        if flagged.any():
            # Upsampled so the hatched outline follows pixel edges rather than cutting corners.
            k = max(1, math.ceil(400 / max(flagged.shape)))
            ax.contourf(
                np.kron(flagged, np.ones((k, k))),
                levels=[0.5, 1.5],
                colors="none",
                hatches=[HATCH],
                extent=extent,
                origin="upper",
            )
    else:
        x = 0.5 * (bounds[:, 0] + bounds[:, 2])
        y = 0.5 * (bounds[:, 1] + bounds[:, 3])
        size = float(np.clip(6000.0 / len(values), 4.0, 64.0))  # points^2
        image = ax.scatter(x, y, c=values[:, 0], s=size, marker="s", linewidths=0, **style)
        flagged = values[:, 2] > 0.5
        ax.scatter(
            x[flagged],
            y[flagged],
            s=size,
            marker="s",
            facecolors="none",
            edgecolors="black",
            linewidths=0.3,
            hatch=HATCH,
        )
        pad_x, pad_y = 0.03 * (extent[1] - extent[0]), 0.03 * (extent[3] - extent[2])
        ax.set_xlim(extent[0] - pad_x, extent[1] + pad_x)
        ax.set_ylim(extent[2] - pad_y, extent[3] + pad_y)
        ax.set_aspect("equal")
    figure.colorbar(image, ax=ax, label="predicted vegetation (tree cover, %)", shrink=0.8)
    handles = [
        Patch(
            facecolor="none", edgecolor="black", hatch=HATCH, label=f"unreliable (p < {alpha:g})"
        ),
        Patch(facecolor=NO_DATA_GREY, edgecolor="0.6", label="no prediction"),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.9)
    ax.set_xlabel("longitude (°)" if geographic else f"x ({crs_text})")
    ax.set_ylabel("latitude (°)" if geographic else f"y ({crs_text})")
    ax.set_title(title + ("\nSYNTHETIC data (sarveg simulator)" if synthetic else ""))
    figure.savefig(path, dpi=110)
    return True
