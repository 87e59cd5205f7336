"""The ground footprint of a raster in metres, for any CRS (projected or geographic).

A model sees a chip of a given ground size (the bundle's ``footprint_m``); a tile of another
size is resampled to the same input pixels, so its features are seen at another scale. The
footprint tells the user when that happens.
"""

from __future__ import annotations

import math

from affine import Affine
from rasterio.crs import CRS

# WGS84 metres per degree of latitude, and of longitude at the equator (mean values).
METRES_PER_DEGREE_LAT = 110_574.0
METRES_PER_DEGREE_LON = 111_320.0
FOOTPRINT_TOLERANCE = 2.0  # a factor: beyond it the input block warns


def ground_size_m(
    transform: Affine, crs: CRS | None, height: int, width: int
) -> tuple[float, float, float] | None:
    """``(width_m, height_m, pixel_m)`` of a raster, or None without a usable CRS.

    Projected CRSs use their linear unit; geographic ones the local metres per degree at the
    raster's centre latitude (accurate to well under 1 % for tiles of a few km).
    """
    if crs is None:
        return None
    col_x, col_y = transform.a, transform.d  # one column step
    row_x, row_y = transform.b, transform.e  # one row step
    if crs.is_geographic:
        _, centre_lat = transform * (width / 2, height / 2)
        scale_x = METRES_PER_DEGREE_LON * math.cos(math.radians(centre_lat))
        scale_y = METRES_PER_DEGREE_LAT
    else:
        try:
            factor = crs.linear_units_factor[1]
        except Exception:  # noqa: BLE001 - a CRS without linear units: no footprint
            return None
        scale_x = scale_y = factor
    column_m = math.hypot(col_x * scale_x, col_y * scale_y)
    row_m = math.hypot(row_x * scale_x, row_y * scale_y)
    return (width * column_m, height * row_m, math.sqrt(column_m * row_m))


def footprint_mismatch(ratio: float | None) -> bool:
    """Whether a tile's side is more than ``FOOTPRINT_TOLERANCE`` off the training chips'.

    Such a tile is flagged unreliable whatever its p-value: the calibration tiles all had the
    training footprint, so the conformal guarantee says nothing about another one.
    """
    return ratio is not None and not 1 / FOOTPRINT_TOLERANCE <= ratio <= FOOTPRINT_TOLERANCE


def footprint_warning(tile_m: float, trained_m: float) -> str | None:
    """A warning when a tile's side differs from the training chips' by more than 2x."""
    ratio = tile_m / trained_m
    if not footprint_mismatch(ratio):
        return None
    return (
        f"footprint {tile_m / 1000:.2g} km against training chips of {trained_m / 1000:.2g} km "
        f"({ratio:.2g}x): the tile is resampled to the model input, so its ground features are "
        "seen at another scale than in training, and the OOD calibration does not cover it "
        "(flagged unreliable)"
    )
