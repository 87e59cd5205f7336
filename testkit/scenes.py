"""Simulated S1GRD scenes whose windows come from different regions, for the web page tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from sarveg import bands
from testkit.bundles import FINE_TUNING_REGION, SOURCE_TILE_PX, region_tiles

# A UTM grid with 20 m pixels: one window is SOURCE_TILE_PX x 20 m on a side.
SCENE_CRS = "EPSG:32633"
SCENE_TRANSFORM = Affine(20.0, 0.0, 400_000.0, 0.0, -20.0, 4_800_000.0)


def write_region_scene(
    path: Path,
    rows: int,
    cols: int,
    regions: Mapping[tuple[int, int], str | None] | None = None,
    seed: int = 0,
) -> Path:
    """Write a 12-band S1GRD scene of ``rows x cols`` windows, each drawn from one region.

    Args:
        path: the GeoTIFF to write.
        rows: windows down the scene.
        cols: windows across it.
        regions: region of a window by (row, col); None leaves the window empty (nodata, so the
            service skips it); windows not listed come from the fine-tuning region.
        seed: seed of the generated pixels.

    Returns:
        ``path``.
    """
    side = SOURCE_TILE_PX
    rng = np.random.default_rng(seed)
    scene = np.full((len(bands.S1GRD_CHANNELS), rows * side, cols * side), np.nan, np.float32)
    for row in range(rows):
        for col in range(cols):
            region = (regions or {}).get((row, col), FINE_TUNING_REGION)
            if region is not None:
                window = region_tiles("s1grd", region, 1, side, rng)[0]
                scene[:, row * side : (row + 1) * side, col * side : (col + 1) * side] = window
    profile = {
        "driver": "GTiff",
        "width": cols * side,
        "height": rows * side,
        "count": scene.shape[0],
        "dtype": "float32",
        "crs": SCENE_CRS,
        "transform": SCENE_TRANSFORM,
        "nodata": np.nan,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene)
        for i, name in enumerate(bands.S1GRD_CHANNELS, start=1):
            dst.set_band_description(i, name)
    return path
