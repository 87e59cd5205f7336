"""The 54 more real BigEarthNet patches of the ``configilm`` wheel (LMDB records, fetched from
PyPI into the cache): decoded faithfully, georeferenced consistently, read by the tile reader,
and decoded without letting a pickle run code."""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarveg import TileError, read_tile
from testkit.real import RealPatch, real_patches, two_band_geotiff
from testkit.real_lmdb import S1_NAME, Record, RecordUnpickler


@pytest.fixture(scope="module")
def patches() -> list[RealPatch]:
    return real_patches()


def test_sixty_distinct_real_patches_with_labels_and_sentinel_2(patches: list[RealPatch]) -> None:
    assert len({p.name for p in patches}) == len(patches) == 60
    assert Counter(p.source for p in patches) == {
        "bigearthnet-common": 6,
        "configilm BENv1": 30,
        "configilm BENv2": 24,
    }
    assert {p.country for p in patches} >= {"Austria", "Finland", "Ireland", "Portugal", "Serbia"}
    assert sum(p.seasonal_snow for p in patches) == 4  # all Finnish, November and February
    for patch in patches:
        db, profile = patch.read_db()
        assert db.shape == (2, 120, 120) and np.isfinite(db).all()
        assert -35.0 < float(np.median(db[1])) < -10.0  # VH in dB, not linear power
        assert profile["transform"].a == 10.0
        zone = (
            int(S1_NAME.match(patch.name).group(2)) if patch.source != "bigearthnet-common" else 0
        )
        if zone:
            assert profile["crs"].to_epsg() == 32600 + zone
        ndvi = patch.ndvi()
        assert ndvi.shape == (120, 120) and ndvi.min() >= -1.0 and ndvi.max() <= 1.0
        assert patch.labels and patch.date[:2] == "20"


def test_neighbouring_patches_sit_side_by_side(patches: list[RealPatch]) -> None:
    """The nominal georeference puts the patch east / south of its neighbour where the
    Sentinel-2 images continue across the shared edge (and not across the other one)."""
    tile = {p.name.rsplit("_33UUP_", 1)[-1]: p for p in patches if "_33UUP_37_" in p.name}

    def nir(patch: RealPatch) -> tuple[np.ndarray, rasterio.Affine]:
        assert patch.s2_dir is not None
        with rasterio.open(next(patch.s2_dir.glob("*_B08.tif"))) as src:
            return src.read(1).astype(np.float64), src.transform

    upper, t_upper = nir(tile["37_88"])
    lower, t_lower = nir(tile["37_89"])
    assert t_lower.c == t_upper.c and t_lower.f == t_upper.f - 1200.0  # directly south
    continued = np.corrcoef(upper[-1], lower[0])[0, 1]
    across = np.corrcoef(upper[:, -1], lower[:, 0])[0, 1]
    assert continued > 0.8 > across


def test_every_real_patch_reads_as_a_single_date_in_db(patches: list[RealPatch]) -> None:
    ambiguous = 0
    for patch in patches:
        db, _ = patch.read_db()
        data = two_band_geotiff(patch, "db")
        try:
            tile = read_tile(data)
        except TileError as error:  # refused, never guessed: it names the way out
            assert "could not tell the units" in str(error) and "pass units=" in str(error)
            ambiguous += 1
            tile = read_tile(data, units="db")
        assert tile.input.kind == "single_date" and tile.input.units == "db"
        np.testing.assert_array_equal(tile.array[0], db[0])
    assert ambiguous <= 3


def test_record_pickles_build_arrays_and_refuse_any_other_global(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A band record as bigearthnet-patch-interface pickles it (its module only while pickling).
    module = types.ModuleType("bigearthnet_patch_interface.band_interface")

    class BenS1_Band:  # noqa: N801 - the real class name
        pass

    BenS1_Band.__module__, BenS1_Band.__qualname__ = module.__name__, "BenS1_Band"
    module.BenS1_Band = BenS1_Band
    band = BenS1_Band()
    band.__dict__.update(name="VV", data=np.arange(4, dtype=np.float32))
    package = types.ModuleType("bigearthnet_patch_interface")
    package.band_interface = module
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    payload = pickle.dumps(band, protocol=4)
    monkeypatch.delitem(sys.modules, module.__name__)
    monkeypatch.delitem(sys.modules, package.__name__)
    built = RecordUnpickler(io.BytesIO(payload)).load()
    assert isinstance(built, Record) and built.state["name"] == "VV"
    np.testing.assert_array_equal(built.state["data"], np.arange(4, dtype=np.float32))
    with pytest.raises(pickle.UnpicklingError, match="refusing testkit.real_lmdb.Record"):
        RecordUnpickler(io.BytesIO(pickle.dumps(built))).load()  # not a BEN module

    class Plant:
        def __reduce__(self) -> tuple:
            return (Path.touch, (tmp_path / "ran",))

    class Shell:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, (f"touch {tmp_path / 'shell'}",))

    for hostile, name in ((Plant(), "pathlib"), (Shell(), "system")):
        with pytest.raises(pickle.UnpicklingError, match=f"refusing .*{name}.*expected numpy"):
            RecordUnpickler(io.BytesIO(pickle.dumps(hostile))).load()
    assert not (tmp_path / "ran").exists() and not (tmp_path / "shell").exists()
