"""The serving predictor over tiny real bundles (ONNX graphs built without torch; synthetic)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

from sarveg import TileError, bands, read_tile
from sarveg.bundle import BundleError, load_bundle
from sarveg.resample import resample_array
from serving.batcher import MicroBatcher
from serving.predictor import MODELS_ENV, Predictor, find_bundle_dirs
from serving.runtime import CPU, ModelOutputs, choose_providers, gpu_present
from serving.scenes import MAP_BANDS
from serving.schemas import ServiceLimits
from testkit.bundles import INPUT_SIZE, SOURCE_TILE_PX, build_bundle, region_tiles
from testkit.tiles import (
    coherence_x100,
    s1grd_db,
    write_geotiff,
    write_gssic_netcdf4,
)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_bundle(root, "s1grd")
    build_bundle(root, "gssic")
    return root


@pytest.fixture(scope="module")
def predictor(models_dir: Path) -> Iterator[Predictor]:
    predictor = Predictor.from_paths(str(models_dir), providers=[CPU], intra_op_threads=1)
    yield predictor
    predictor.close()


def region_geotiff(path: Path, modality: str, region: str, side: int, seed: int = 0) -> Path:
    """A tile of one region's generated distribution, as a GeoTIFF of the model channels."""
    array = region_tiles(modality, region, 1, side, np.random.default_rng(seed))[0]
    return write_geotiff(path, array, bands.CHANNELS[modality])


def test_s1grd_tile_in_distribution(predictor: Predictor, tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "t.tif", s1grd_db(), bands.S1GRD_RAW_BANDS)
    result = predictor.predict(path.read_bytes(), include_embedding=True)
    assert result.model.modality == "s1grd" and result.model.name == "tiny-s1grd-europe"
    assert 0.0 <= result.interval.low <= result.vegetation_pct <= result.interval.high <= 100.0
    assert result.interval.coverage == pytest.approx(0.9)
    assert set(result.ood.swd_by_region) == {"europe", "china", "conus", "south_america"}
    assert result.ood.nearest_region == "europe"
    assert not result.ood.unreliable and result.ood.p_value > 0.05
    assert result.embedding is not None and len(result.embedding) == 16
    assert predictor.predict(path.read_bytes()).embedding is None


def test_out_of_distribution_tile_is_flagged(predictor: Predictor, tmp_path: Path) -> None:
    path = region_geotiff(tmp_path / "sa.tif", "s1grd", "south_america", 24)
    result = predictor.predict(path.read_bytes())
    assert result.ood.unreliable and result.ood.p_value < 0.05
    assert result.ood.nearest_region == "south_america"
    assert result.ood.swd_by_region["south_america"] < result.ood.swd_by_region["europe"]


def test_resampling_is_the_training_rule(predictor: Predictor, tmp_path: Path) -> None:
    # A 40 px tile is area-averaged to the 16 px input exactly as training does.
    path = write_geotiff(tmp_path / "big.tif", s1grd_db(side=40, seed=3), bands.S1GRD_RAW_BANDS)
    model, array = predictor.prepare(path.read_bytes())
    expected = resample_array(read_tile(path).array, INPUT_SIZE)
    assert array.shape == (12, INPUT_SIZE, INPUT_SIZE)
    np.testing.assert_array_equal(array, expected)
    direct = model.onnx.run(expected[None])
    result = predictor.predict(path.read_bytes())
    assert result.vegetation_pct == pytest.approx(float(direct.vegetation_pct[0]), abs=1e-4)
    small = write_geotiff(tmp_path / "s.tif", s1grd_db(side=17, seed=3), bands.S1GRD_RAW_BANDS)
    assert 0.0 <= predictor.predict(small.read_bytes()).vegetation_pct <= 100.0


def test_gssic_netcdf_and_geotiff(predictor: Predictor, tmp_path: Path) -> None:
    netcdf = write_gssic_netcdf4(tmp_path / "g.nc", coherence_x100())
    result = predictor.predict(netcdf.read_bytes())
    assert result.model.modality == "gssic" and result.ood.nearest_region == "europe"
    tif = region_geotiff(tmp_path / "g.tif", "gssic", "china", 30)
    china = predictor.predict(tif.read_bytes(), modality="gssic")
    assert china.ood.nearest_region == "china" and china.ood.unreliable


# One flipped byte of testkit.tiles' NetCDF that makes GDAL's netCDF driver (GDAL 3.10 in the
# rasterio 1.4.4 wheels) segfault when the dataset is closed; found by fuzzing.
CRASH_OFFSET, CRASH_BYTE = 4487, 57


def crashing_netcdf(path: Path) -> bytes:
    data = bytearray(write_gssic_netcdf4(path, coherence_x100()).read_bytes())
    data[CRASH_OFFSET] = CRASH_BYTE
    return bytes(data)


def test_netcdf_crash_is_contained(predictor: Predictor, tmp_path: Path) -> None:
    data = crashing_netcdf(tmp_path / "crash.nc")
    with pytest.raises(TileError, match="found a file that crashed the decoder"):
        predictor.predict(data)
    good = write_gssic_netcdf4(tmp_path / "good.nc", coherence_x100()).read_bytes()
    assert predictor.predict(good).model.modality == "gssic"  # a fresh child took over
    with pytest.raises(TileError, match="scene must be a GeoTIFF"):
        predictor.predict_scene(data, modality="gssic")  # refused before any decoder opens it


def test_the_crash_fixture_crashes_in_process(tmp_path: Path) -> None:
    """Why NetCDF is decoded in a child: in-process, this file kills the interpreter."""
    path = tmp_path / "crash.nc"
    path.write_bytes(crashing_netcdf(tmp_path / "base.nc"))
    code = (
        "import sys; from sarveg import read_tile, TileError\n"
        f"try: read_tile({str(path)!r})\nexcept TileError: sys.exit(0)"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    if result.returncode == 0:
        pytest.skip("this GDAL build no longer crashes on the fixture")
    assert result.returncode < 0  # killed by a signal, not a Python exception


def test_modality_errors(predictor: Predictor, models_dir: Path, tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "t.tif", s1grd_db(), bands.S1GRD_RAW_BANDS)
    with pytest.raises(TileError, match="expected a gssic tile, found s1grd bands"):
        predictor.predict(path.read_bytes(), modality="gssic")
    with pytest.raises(TileError, match="unknown modality 'radar': expected one of s1grd, gssic"):
        predictor.predict(path.read_bytes(), modality="radar")
    only_s1grd = Predictor([load_bundle(models_dir / "tiny-s1grd-europe")], providers=[CPU])
    netcdf = write_gssic_netcdf4(tmp_path / "g.nc", coherence_x100())
    with pytest.raises(TileError, match="no model for gssic tiles: this server expects s1grd"):
        only_s1grd.predict(netcdf.read_bytes())


def test_find_bundle_dirs(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both = find_bundle_dirs(str(models_dir))
    assert [p.name for p in both] == ["tiny-gssic-europe", "tiny-s1grd-europe"]
    single = models_dir / "tiny-s1grd-europe"
    spec = f"{single}{os.pathsep}{models_dir / 'tiny-gssic-europe'}"
    assert find_bundle_dirs(spec) == [single, models_dir / "tiny-gssic-europe"]
    monkeypatch.setenv(MODELS_ENV, str(single))
    assert find_bundle_dirs() == [single]
    with pytest.raises(BundleError, match="expected a bundle directory or a folder of bundles"):
        find_bundle_dirs(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no model bundles in .*: expected directories holding"):
        find_bundle_dirs(str(tmp_path / "empty"))
    twin = tmp_path / "twin"
    shutil.copytree(single, twin)
    with pytest.raises(BundleError, match="expected one bundle per modality, found a second s1grd"):
        Predictor([load_bundle(single), load_bundle(twin)], providers=[CPU])


def utm_scene(path: Path, height: int, width: int, masked_cols: int = 0) -> Path:
    """A 16-band S1GRD scene in UTM 32N with 10 m pixels; the last columns masked (0)."""
    data = s1grd_db(side=max(height, width), seed=5)[:, :height, :width].copy()
    if masked_cols:
        data[:, :, width - masked_cols :] = 0.0
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 16,
        "dtype": "float32",
        "crs": "EPSG:32632",
        "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_200_000.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(bands.S1GRD_RAW_BANDS, start=1):
            dst.set_band_description(i, name)
    return path


def test_scene_summary_and_map(predictor: Predictor, tmp_path: Path) -> None:
    # 60 x 100 px at 24 px tiles: a 3 x 5 grid. Columns 70..99 are masked, so grid columns 3 and 4
    # hold no data and are skipped; the bottom row (12 of 24 px) and column 2 (22 px) are kept.
    path = utm_scene(tmp_path / "scene.tif", 60, 100, masked_cols=30)
    scene = predictor.predict_scene(path.read_bytes())
    grid = scene.summary.grid
    assert (grid.rows, grid.cols, grid.tile_px) == (3, 5, SOURCE_TILE_PX)
    assert grid.crs == "EPSG:32632"
    assert grid.transform == pytest.approx((240.0, 0.0, 500_000.0, 0.0, -240.0, 5_200_000.0))
    cells = {(t.row, t.col) for t in scene.tiles}
    assert all(col <= 2 for _, col in cells)  # columns 3 and 4 are under 25 % valid
    assert scene.summary.tile_count == len(scene.tiles) == 9
    first = next(t for t in scene.tiles if (t.row, t.col) == (0, 1))
    assert first.bounds == pytest.approx((500_240.0, 5_199_760.0, 500_480.0, 5_200_000.0))
    stats = scene.summary.vegetation_pct
    predicted = [t.vegetation_pct for t in scene.tiles]
    assert stats.mean == pytest.approx(np.mean(predicted))
    assert stats.p50 == pytest.approx(np.median(predicted)) and stats.p10 <= stats.p50 <= stats.p90
    assert scene.summary.ood.nearest_region == "europe"
    assert set(scene.summary.ood.swd_by_region) == {"europe", "china", "conus", "south_america"}
    assert 0.0 <= scene.summary.unreliable_tile_share <= 1.0

    data = predictor.predict_scene_map(path.read_bytes())
    with MemoryFile(data) as memfile, memfile.open() as dst:
        assert dst.crs.to_epsg() == 32632
        with rasterio.open(path) as src:
            assert dst.transform == src.transform @ Affine.scale(SOURCE_TILE_PX)
            expected_shape = (math.ceil(src.height / 24), math.ceil(src.width / 24))
            assert (dst.height, dst.width) == expected_shape
        assert dst.descriptions == MAP_BANDS
        grid_values = dst.read()  # (3, 3, 5)
    by_cell = {(t.row, t.col): t for t in scene.tiles}
    for (row, col), tile in by_cell.items():
        assert grid_values[0, row, col] == pytest.approx(tile.vegetation_pct, abs=1e-4)
        assert grid_values[1, row, col] == pytest.approx(tile.ood.p_value, abs=1e-6)
        assert grid_values[2, row, col] == float(tile.ood.unreliable)
    assert np.isnan(grid_values[:, :, 3:]).all()


def test_scene_errors(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = utm_scene(tmp_path / "empty.tif", 48, 48, masked_cols=48)
    with pytest.raises(TileError, match="no usable tile in the scene: expected windows of 24 px"):
        predictor.predict_scene(empty.read_bytes())
    netcdf = write_gssic_netcdf4(tmp_path / "g.nc", coherence_x100())
    with pytest.raises(TileError, match="scene must be a GeoTIFF: expected TIFF data, found NetC"):
        predictor.predict_scene(netcdf.read_bytes())
    monkeypatch.setattr(predictor, "limits", replace(predictor.limits, scene_max_windows=8))
    big = utm_scene(tmp_path / "big.tif", 72, 72)  # 3 x 3 windows
    with pytest.raises(TileError, match="expected at most 8 windows of 24 px, found a 3 x 3 grid"):
        predictor.predict_scene(big.read_bytes())


def test_model_card(predictor: Predictor) -> None:
    card = predictor.model_card(notes=["n"])
    assert {b.modality for b in card.bundles} == {"s1grd", "gssic"}
    s1grd = next(b for b in card.bundles if b.modality == "s1grd")
    assert s1grd.band_names == list(bands.S1GRD_CHANNELS) and s1grd.provider == CPU
    assert s1grd.ood.alpha == 0.05 and s1grd.ood.measured is not None
    assert s1grd.provenance.synthetic and set(s1grd.metrics) >= {"europe", "south_america"}
    assert card.intra_op_threads == 1 and card.limits == ServiceLimits.from_limits(predictor.limits)
    assert card.limits.sandbox and card.limits.tile_max_upload_mb < card.limits.scene_max_upload_mb


def test_choose_providers() -> None:
    assert choose_providers("cpu") == [CPU]
    with pytest.raises(ValueError, match="expected auto, cpu or cuda, found 'tpu'"):
        choose_providers("tpu")
    if not gpu_present():
        assert choose_providers("auto") == [CPU]
        with pytest.raises(ValueError, match="cuda: expected CUDAExecutionProvider and an NVIDIA"):
            choose_providers("cuda")


def test_micro_batcher_groups_concurrent_requests() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def run_batch(tiles: np.ndarray) -> list[float]:
        sizes.append(len(tiles))
        gate.wait(timeout=10)  # holds the first batch until the others have queued
        if np.isnan(tiles).any():
            raise RuntimeError("model failed")
        return [float(t.sum()) for t in tiles]

    def tiles(value: float, n: int = 1) -> np.ndarray:
        return np.full((n, 1, 2, 2), value, np.float32)

    async def scenario() -> tuple[list[list[float]], BaseException | None]:
        batcher: MicroBatcher[float] = MicroBatcher(run_batch, max_batch_size=4)
        first = asyncio.ensure_future(batcher.submit(tiles(0.0)))
        await asyncio.sleep(0.1)  # the idle model takes the first request alone
        rest = [asyncio.ensure_future(batcher.submit(tiles(float(i)))) for i in range(1, 6)]
        await asyncio.sleep(0.1)
        gate.set()
        results = await asyncio.gather(first, *rest)
        try:
            await batcher.submit(tiles(np.nan, 2))
            failure = None
        except RuntimeError as error:
            failure = error
        await batcher.close()
        return results, failure

    results, failure = asyncio.run(scenario())
    assert results == [[4.0 * i] for i in range(6)]
    assert sizes == [1, 4, 1, 2]  # alone, then everything queued up to 4, then the rest
    assert isinstance(failure, RuntimeError)
    with pytest.raises(ValueError, match="expected max_batch_size >= 1"):
        MicroBatcher(run_batch, max_batch_size=0)


def test_non_finite_model_output_fails_only_its_tile(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = predictor.models["s1grd"]
    run = model.onnx.run

    def poisoned(tiles: np.ndarray) -> ModelOutputs:
        outputs = run(tiles)
        outputs.embedding[1] = np.nan
        return outputs

    monkeypatch.setattr(model.onnx, "run", poisoned)
    batch = np.full((3, 12, INPUT_SIZE, INPUT_SIZE), -11.0, np.float32)
    outcomes = model.predict_batch(batch)
    assert outcomes[0] is not None and outcomes[1] is None and outcomes[2] is not None
    assert outcomes[0].vegetation_pct == pytest.approx(outcomes[2].vegetation_pct)
    with pytest.raises(TileError, match="the model could not score this tile"):
        model.tile_prediction(outcomes[1], include_embedding=False)


def test_undecodable_band_names_are_bad_input(predictor: Predictor, tmp_path: Path) -> None:
    # Found by fuzzing: corrupt GDAL metadata made rasterio raise UnicodeDecodeError (a 500).
    names = ["qqqq" + bands.S1GRD_RAW_BANDS[0], *bands.S1GRD_RAW_BANDS[1:]]
    data = write_geotiff(tmp_path / "t.tif", s1grd_db(), names).read_bytes()
    assert data.count(b"qqqq") == 1
    with pytest.raises(TileError, match="unreadable band names: expected UTF-8 band descriptions"):
        predictor.predict(data.replace(b"qqqq", b"\x83\x83qq"))
