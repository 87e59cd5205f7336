"""Cutting a scene into tiles with georeferencing kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarveg import TileError, bands, read_tile
from sarveg.scene import open_scene
from testkit.tiles import s1grd_db, write_geotiff


def test_scene_grid_and_transforms(tmp_path: Path) -> None:
    data = s1grd_db(side=60)[:, :, :50]  # (16, 60, 50): 3 x 3 grid of 24 px with edges
    path = write_geotiff(tmp_path / "scene.tif", np.ascontiguousarray(data), bands.S1GRD_RAW_BANDS)
    whole = read_tile(path)
    with open_scene(path.read_bytes(), tile_px=24) as scene:
        assert scene.grid_shape == (3, 3) and scene.modality == "s1grd"
        tiles = list(scene.iter_tiles(min_valid_fraction=0.0))
        assert len(tiles) == 9
        first = tiles[0].tile
        np.testing.assert_array_equal(first.array, whole.array[:, :24, :24])
        assert first.transform == whole.transform
        edge = scene.read_tile(2, 2)  # rows 48..60 and cols 48..50 exist
        assert (
            np.isnan(edge.tile.array[:, 12:, :]).all() and np.isnan(edge.tile.array[:, :, 2:]).all()
        )
        np.testing.assert_array_equal(edge.tile.array[:, :12, :2], whole.array[:, 48:, 48:])
        assert edge.valid_fraction == pytest.approx(12 * 2 / 576)
        assert edge.tile.transform.c == pytest.approx(whole.transform.c + 48 * whole.transform.a)
        assert scene.grid_transform.a == pytest.approx(24 * whole.transform.a)
        windows = list(scene.iter_tiles())  # default: windows under 25 % valid carry a problem
        kept = [w for w in windows if w.problem is None]
        assert len(windows) == 9 and len(kept) == 4 + 2  # 2x2 block plus two edge tiles
        assert all(w.problem.startswith("too little valid data") for w in windows if w.problem)


def test_scene_errors(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "s.tif", s1grd_db(side=24), bands.S1GRD_RAW_BANDS)
    with pytest.raises(TileError, match="scene too small"), open_scene(path, tile_px=112):
        pass
    wrong = pytest.raises(TileError, match="expected a gssic scene, found s1grd")
    with wrong, open_scene(path, tile_px=24, modality="gssic"):
        pass
    with pytest.raises(TileError, match="scene too large"), open_scene(path, 24, max_pixels=10):
        pass


def farmland_and_town_db(side: int = 24) -> np.ndarray:
    """(2, side, 4 side) VV/VH dB: three farmland windows, then a bright built-up one."""
    rng = np.random.default_rng(3)
    db = np.empty((2, side, 4 * side), np.float32)
    for band, (land, bright) in enumerate(((-10.0, -1.0), (-17.0, -4.0))):
        db[band, :, : 3 * side] = land + rng.normal(0.0, 1.0, (side, 3 * side))
        db[band, :, 3 * side :] = bright + rng.normal(0.0, 1.0, (side, side))
    return db


def test_two_band_scene_units_are_told_once_for_the_whole_scene(tmp_path: Path) -> None:
    db = farmland_and_town_db()
    power = (10.0 ** (db / 10.0)).astype(np.float32)
    path = write_geotiff(tmp_path / "power.tif", power, ["VV", "VH"])
    # Alone, the bright window reads as amplitude: deciding window by window would mis-scale it.
    alone = write_geotiff(
        tmp_path / "bright.tif", np.ascontiguousarray(power[:, :, 72:]), ["VV", "VH"]
    )
    assert read_tile(alone).input.units == "amplitude"
    with open_scene(path, tile_px=24) as scene:
        assert (scene.units, scene.units_source) == ("power", "detected")
        for col in range(4):
            window = scene.read_tile(0, col).tile.array  # (12, 24, 24): VV, VH, VV - VH x 4
            expected = db[:, :, 24 * col : 24 * (col + 1)]
            np.testing.assert_allclose(window[0], expected[0], atol=1e-4)
            np.testing.assert_allclose(window[4], expected[1], atol=1e-4)
            np.testing.assert_allclose(window[8], expected[0] - expected[1], atol=1e-4)
    with open_scene(path, tile_px=24, units="amplitude") as scene:
        assert (scene.units, scene.units_source) == ("amplitude", "declared")
        np.testing.assert_allclose(
            scene.read_tile(0, 0).tile.array[0], 2 * db[0, :, :24], atol=1e-3
        )


def test_units_apply_to_two_band_scenes_only(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "s.tif", s1grd_db(side=48), bands.S1GRD_RAW_BANDS)
    refused = pytest.raises(TileError, match="units=power applies to two-band VV/VH")
    with refused, open_scene(path, tile_px=24, units="power"):
        pass
    unknown = pytest.raises(TileError, match="unknown units 'decibel'")
    with unknown, open_scene(path, tile_px=24, units="decibel"):
        pass
    with open_scene(path, tile_px=24, units="db") as scene:
        assert (scene.units, scene.units_source) == ("db", "layout")
