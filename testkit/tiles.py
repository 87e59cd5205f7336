"""Tiny SAR files written with rasterio (and h5netcdf for NetCDF4), for reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_bounds

from sarveg import bands

SIDE = 24
BOUNDS = (10.0, 47.0, 10.04, 47.04)  # lon/lat, EPSG:4326


def s1grd_db(side: int = SIDE, seed: int = 0) -> np.ndarray:
    """Plausible 16-band sigma0 dB values, (16, side, side), VH ~7 dB below VV."""
    rng = np.random.default_rng(seed)
    vv = rng.uniform(-16.0, -6.0, size=(side, side))
    out = np.empty((16, side, side), np.float32)
    for i, name in enumerate(bands.S1GRD_RAW_BANDS):
        base = vv if "_vv" in name else vv - 7.0
        out[i] = base + rng.normal(0, 0.5, size=(side, side))
    return out


def write_geotiff(
    path: Path,
    data: np.ndarray,
    descriptions: list[str] | tuple[str, ...] | None,
    crs: str | None = "EPSG:4326",
) -> Path:
    """Write a (C, H, W) array as a GeoTIFF with optional band descriptions."""
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "transform": from_bounds(*BOUNDS, width, height),
    }
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)
    return path


def write_gssic_netcdf4(path: Path, coherence_x100: np.ndarray) -> Path:
    """Write sartiles' NetCDF4 structure: coherence(season, deltadays, y, x) uint8 x 100."""
    import h5netcdf

    n_season, n_days, height, width = coherence_x100.shape
    with h5netcdf.File(path, "w") as nc:
        nc.dimensions = {"season": n_season, "deltadays": n_days, "y": height, "x": width}
        season = nc.create_variable("season", ("season",), "i4")
        season[:] = np.arange(n_season)
        days = nc.create_variable("deltadays", ("deltadays",), "i4")
        days[:] = bands.GSSIC_NC_DELTADAYS[:n_days]
        y = nc.create_variable("y", ("y",), "f8")
        y[:] = np.linspace(BOUNDS[3], BOUNDS[1], height)
        y.attrs["units"] = "degrees_north"
        x = nc.create_variable("x", ("x",), "f8")
        x[:] = np.linspace(BOUNDS[0], BOUNDS[2], width)
        x.attrs["units"] = "degrees_east"
        var = nc.create_variable("coherence", ("season", "deltadays", "y", "x"), "u1")
        var[...] = coherence_x100
    return path


def coherence_x100(side: int = SIDE, seed: int = 0) -> np.ndarray:
    """(season=4, deltadays=4, side, side) uint8 coherence x 100 decaying with deltadays."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, size=(4, 1, side, side))
    decay = np.array([1.0, 0.8, 0.7, 0.6]).reshape(1, 4, 1, 1)
    return np.clip(np.round(base * decay * 100), 1, 100).astype(np.uint8)


def write_layout(
    root: Path,
    region: str,
    identifiers: list[str],
    splits: dict[str, str],
    label_codes: dict[str, np.ndarray],
    skip_tiles: tuple[str, ...] = (),
) -> Path:
    """Write a minimal geetiles layout for one region; returns the partitions GeoJSON path."""
    import json

    stem = f"{region}_partitions_test_0123456789"
    features = []
    for i, identifier in enumerate(identifiers):
        x0, y0 = 10.0 + 0.05 * i, 47.0
        ring = [[x0, y0], [x0 + 0.04, y0], [x0 + 0.04, y0 + 0.04], [x0, y0 + 0.04], [x0, y0]]
        features.append(
            {
                "type": "Feature",
                "properties": {"identifier": identifier, "area_km2": 13.6},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    geojson = root / f"{stem}.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    rows = "".join(f"{k},{v}\n" for k, v in splits.items())
    (root / f"{stem}_splits.csv").write_text("identifier,split\n" + rows)
    tiles = root / stem / "s1grd-2020"
    labels = root / stem / "modis44b-2020"
    tiles.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i, identifier in enumerate(identifiers):
        if identifier not in skip_tiles:
            write_geotiff(tiles / f"{identifier}.tif", s1grd_db(seed=i), bands.S1GRD_RAW_BANDS)
        if identifier in label_codes:
            write_geotiff(
                labels / f"{identifier}.tif",
                label_codes[identifier][None],
                ["Percent_Tree_Cover_2020"],
            )
    return geojson
