"""read_tile: every encoding the geetiles and sartiles tools write and every bad-input class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarveg import TileError, bands, read_tile
from sarveg.tiles import derive_s1grd_channels
from testkit.tiles import (
    coherence_x100,
    s1grd_db,
    write_geotiff,
    write_gssic_netcdf4,
)


@pytest.fixture
def db16() -> np.ndarray:
    data = s1grd_db()
    data[:, :3, :3] = 0.0  # chip mask in the corner, as geetiles writes it
    return data


def expected_channels(db16: np.ndarray) -> np.ndarray:
    out = derive_s1grd_channels(db16.copy())
    out[:, :3, :3] = np.nan
    return out


def test_s1grd_float32_db(tmp_path: Path, db16: np.ndarray) -> None:
    path = write_geotiff(tmp_path / "a.tif", db16, bands.S1GRD_RAW_BANDS)
    tile = read_tile(path)
    assert tile.modality == "s1grd"
    assert tile.band_names == bands.S1GRD_CHANNELS
    assert tile.array.dtype == np.float32 and tile.array.shape == (12, 24, 24)
    np.testing.assert_allclose(tile.array, expected_channels(db16), atol=1e-5)
    assert np.isnan(tile.array[:, 0, 0]).all() and np.isfinite(tile.array[:, 5, 5]).all()
    assert tile.crs.to_epsg() == 4326
    assert tile.bounds == pytest.approx((10.0, 47.0, 10.04, 47.04))


def test_vv_minus_vh_channel_is_db_difference(tmp_path: Path, db16: np.ndarray) -> None:
    tile = read_tile(write_geotiff(tmp_path / "a.tif", db16, bands.S1GRD_RAW_BANDS))
    winter_vv = db16[bands.S1GRD_RAW_BANDS.index("winter_vvasc")]
    winter_vh = db16[bands.S1GRD_RAW_BANDS.index("winter_vhasc")]
    np.testing.assert_allclose(tile.array[8, 5:, 5:], (winter_vv - winter_vh)[5:, 5:], atol=1e-5)


def test_descending_bands_are_ignored(tmp_path: Path, db16: np.ndarray) -> None:
    changed = db16.copy()
    for i, name in enumerate(bands.S1GRD_RAW_BANDS):
        if name.endswith("des"):
            changed[i, 5:, 5:] -= 3.0
    a = read_tile(write_geotiff(tmp_path / "a.tif", db16, bands.S1GRD_RAW_BANDS))
    b = read_tile(write_geotiff(tmp_path / "b.tif", changed, bands.S1GRD_RAW_BANDS))
    np.testing.assert_array_equal(a.array, b.array)


def test_band_order_follows_descriptions_not_position(tmp_path: Path, db16: np.ndarray) -> None:
    order = np.random.default_rng(1).permutation(16)
    shuffled_names = [bands.S1GRD_RAW_BANDS[i] for i in order]
    path = write_geotiff(tmp_path / "a.tif", db16[order], shuffled_names)
    np.testing.assert_allclose(read_tile(path).array, expected_channels(db16), atol=1e-5)


def test_s1grd_uint16_wrapped_integer_db(tmp_path: Path, db16: np.ndarray) -> None:
    integer_db = np.round(db16).astype(np.int16)
    path = write_geotiff(tmp_path / "a.tif", integer_db.view(np.uint16), bands.S1GRD_RAW_BANDS)
    tile = read_tile(path)
    assert tile.encoding == "s1grd-16band-uint16-db"
    np.testing.assert_allclose(tile.array, expected_channels(integer_db.astype(np.float32)))
    assert np.nanmax(tile.array[:8]) < 0  # negative dB recovered, not 65,000-ish


def test_s1grd_uint8_scaled_db(tmp_path: Path, db16: np.ndarray) -> None:
    scaled = np.round((np.clip(db16, -30, 0) + 30) / 30 * 255).astype(np.uint8)
    scaled[:, :3, :3] = 0
    tile = read_tile(write_geotiff(tmp_path / "a.tif", scaled, bands.S1GRD_RAW_BANDS))
    valid = np.isfinite(tile.array[:4])
    # Quantisation step of the uint8 encoding is 30/255 dB.
    np.testing.assert_allclose(
        tile.array[:4][valid], expected_channels(db16)[:4][valid], atol=30 / 255
    )
    assert np.isnan(tile.array[:, 0, 0]).all()


def test_s1grd_by_count_without_descriptions(tmp_path: Path, db16: np.ndarray) -> None:
    tile = read_tile(write_geotiff(tmp_path / "a.tif", db16, None))
    np.testing.assert_allclose(tile.array, expected_channels(db16), atol=1e-5)


def test_s1grd_already_derived_12_bands(tmp_path: Path, db16: np.ndarray) -> None:
    derived = derive_s1grd_channels(db16)
    tile = read_tile(write_geotiff(tmp_path / "a.tif", derived, bands.S1GRD_CHANNELS))
    assert tile.modality == "s1grd"
    np.testing.assert_allclose(tile.array, expected_channels(db16), atol=1e-5)


def test_nan_masked_pixels_are_nodata(tmp_path: Path, db16: np.ndarray) -> None:
    data = db16.copy()
    data[:, 10, 10] = np.nan
    tile = read_tile(write_geotiff(tmp_path / "a.tif", data, bands.S1GRD_RAW_BANDS))
    assert np.isnan(tile.array[:, 10, 10]).all()


def test_gssic_netcdf_from_path_and_bytes(tmp_path: Path) -> None:
    cube = coherence_x100()
    cube[:, :, 0, 0] = 0  # nodata
    path = write_gssic_netcdf4(tmp_path / "0123456789abc.nc", cube)
    tile = read_tile(path)
    assert tile.modality == "gssic" and tile.band_names == bands.GSSIC_CHANNELS
    assert tile.array.shape == (8, 24, 24)
    # Channel "winter_coh12": sartiles season index 2 (summer, fall, winter, spring), deltadays 12.
    index = bands.GSSIC_CHANNELS.index("winter_coh12")
    stored = cube[bands.GSSIC_NC_SEASONS.index("winter"), 0].astype(np.float32) / 100
    stored[0, 0] = np.nan
    # GDAL may present NetCDF rows north-up whatever the stored order; compare either way.
    got = tile.array[index]
    assert np.allclose(got, stored, equal_nan=True) or np.allclose(
        got, stored[::-1], equal_nan=True
    )
    index24 = bands.GSSIC_CHANNELS.index("fall_coh24")
    assert np.nanmean(tile.array[index24]) == pytest.approx(
        cube[bands.GSSIC_NC_SEASONS.index("fall"), 1].mean() / 100, abs=0.01
    )
    from_bytes = read_tile(path.read_bytes())
    np.testing.assert_array_equal(from_bytes.array, tile.array)


def test_gssic_8band_geotiff(tmp_path: Path) -> None:
    data = (coherence_x100()[:, :2].transpose(1, 0, 2, 3).reshape(8, 24, 24)).astype(np.uint8)
    tile = read_tile(write_geotiff(tmp_path / "g.tif", data, bands.GSSIC_CHANNELS))
    assert tile.modality == "gssic"
    np.testing.assert_allclose(tile.array, data / 100.0, atol=1e-6)
    float_tile = read_tile(write_geotiff(tmp_path / "f.tif", (data / 100).astype(np.float32), None))
    np.testing.assert_allclose(float_tile.array, tile.array, atol=1e-6)


def test_bytes_and_path_agree(tmp_path: Path, db16: np.ndarray) -> None:
    path = write_geotiff(tmp_path / "a.tif", db16, bands.S1GRD_RAW_BANDS)
    np.testing.assert_array_equal(read_tile(path.read_bytes()).array, read_tile(path).array)


def test_modality_argument(tmp_path: Path, db16: np.ndarray) -> None:
    path = write_geotiff(tmp_path / "a.tif", db16, bands.S1GRD_RAW_BANDS)
    assert read_tile(path, modality="s1grd").modality == "s1grd"
    with pytest.raises(TileError, match="expected a gssic tile, found s1grd"):
        read_tile(path, modality="gssic")
    with pytest.raises(TileError, match="unknown modality 'optical'"):
        read_tile(path, modality="optical")


# ---- bad input: one class each, always a TileError that says what was expected ----


def test_not_a_raster() -> None:
    with pytest.raises(TileError, match="not a raster: expected a GeoTIFF"):
        read_tile(b"hello, this is a text file")


def test_empty_bytes() -> None:
    with pytest.raises(TileError, match="empty input"):
        read_tile(b"")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TileError, match="found no file"):
        read_tile(tmp_path / "nope.tif")


def test_corrupt_tiff_bytes() -> None:
    with pytest.raises(TileError, match="could not decode") as info:
        read_tile(b"II*\x00" + bytes(range(256)) * 4)
    assert "/vsimem" not in str(info.value)


def test_truncated_tiff(tmp_path: Path, db16: np.ndarray) -> None:
    path = tmp_path / "a.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=24,
        height=24,
        count=16,
        dtype="float32",
        compress="deflate",
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(db16)
    data = path.read_bytes()
    with pytest.raises(TileError, match="could not decode") as info:
        read_tile(data[: len(data) // 2])
    assert "/vsimem" not in str(info.value)


def test_wrong_band_count(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "a.tif", s1grd_db()[:5], None)
    with pytest.raises(TileError, match="wrong band count: expected 16 .* found 5"):
        read_tile(path)


def test_unrecognised_band_names(tmp_path: Path) -> None:
    names = [f"B{i}" for i in range(16)]
    with pytest.raises(TileError, match="unrecognised band names.*found 16 bands named b0"):
        read_tile(write_geotiff(tmp_path / "a.tif", s1grd_db(), names))


def test_unsupported_dtype(tmp_path: Path) -> None:
    data = np.round(s1grd_db()).astype(np.int32)
    with pytest.raises(TileError, match="unsupported data type .* found int32"):
        read_tile(write_geotiff(tmp_path / "a.tif", data, bands.S1GRD_RAW_BANDS))


def test_all_nodata(tmp_path: Path) -> None:
    zeros = np.zeros((16, 24, 24), np.float32)
    with pytest.raises(TileError, match="all pixels are nodata"):
        read_tile(write_geotiff(tmp_path / "a.tif", zeros, bands.S1GRD_RAW_BANDS))
    nans = np.full((8, 24, 24), np.nan, np.float32)
    with pytest.raises(TileError, match="all pixels are nodata"):
        read_tile(write_geotiff(tmp_path / "g.tif", nans, bands.GSSIC_CHANNELS))


def test_too_small(tmp_path: Path) -> None:
    small = s1grd_db(side=8)
    with pytest.raises(TileError, match="too small: expected at least 16 x 16 pixels, found 8 x 8"):
        read_tile(write_geotiff(tmp_path / "a.tif", small, bands.S1GRD_RAW_BANDS))


def test_too_large_refused_from_header(tmp_path: Path) -> None:
    # A sparse 16 x 20,000 x 20,000 GeoTIFF: a few KB on disk, 6.4 G values declared.
    path = tmp_path / "huge.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=20_000,
        height=20_000,
        count=16,
        dtype="uint8",
        tiled=True,
        sparse_ok=True,
        compress="deflate",
    ):
        pass
    assert path.stat().st_size < 5_000_000
    with pytest.raises(TileError, match="tile too large.*found 20000 x 20000"):
        read_tile(path.read_bytes())
    ok = write_geotiff(tmp_path / "a.tif", s1grd_db(), bands.S1GRD_RAW_BANDS)
    with pytest.raises(TileError, match="expected at most 100 pixels"):
        read_tile(ok, max_pixels=100)


def test_infinite_values(tmp_path: Path) -> None:
    data = s1grd_db()
    data[0, 4, 4] = np.inf
    with pytest.raises(
        TileError, match="non-finite values: expected finite values or NaN.*infinite"
    ):
        read_tile(write_geotiff(tmp_path / "a.tif", data, bands.S1GRD_RAW_BANDS))


def test_linear_power_is_not_db(tmp_path: Path) -> None:
    linear = (10 ** (s1grd_db() / 10)).astype(np.float32)
    with pytest.raises(TileError, match="does not look like dB"):
        read_tile(write_geotiff(tmp_path / "a.tif", linear, bands.S1GRD_RAW_BANDS))


def test_coherence_out_of_range(tmp_path: Path) -> None:
    data = np.full((8, 24, 24), 3.0, np.float32)
    data[0, 0, 0] = 0.5
    with pytest.raises(TileError, match=r"coherence out of range: expected values in \[0, 1\]"):
        read_tile(write_geotiff(tmp_path / "g.tif", data / 1.0 + 0.0, bands.GSSIC_CHANNELS))
