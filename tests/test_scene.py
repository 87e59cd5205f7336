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
