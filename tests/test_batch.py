"""Batch inference (``sarveg predict``) over tiny real bundles and simulated tiles (synthetic)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

import serving.batch.pipeline
from sarveg import bands
from sarveg.bundle import load_bundle
from sarveg.ood import OODScorer
from sarveg.simulate.layout import simulate_dataset
from serving.batch.cli import main
from serving.batch.inputs import discover_input
from serving.batch.outputs import TABLE_COLUMNS
from serving.batch.pipeline import BatchJob, LocalEngine, run_batch
from serving.batch.ray_engine import ray_available
from serving.predictor import Predictor
from serving.runtime import CPU
from serving.scenes import MAP_BANDS
from testkit.bundles import SOURCE_TILE_PX, build_bundles
from testkit.tiles import coherence_x100, s1grd_db, write_geotiff, write_gssic_netcdf4
from tests.test_predictor import crashing_netcdf, utm_scene
from tests.test_scene import farmland_and_town_db
from tests.test_serving_no_torch import run_blocked

N_SIM_TILES = 20


@pytest.fixture(scope="module")
def bundle_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny S1GRD and GSSIC bundles (europe), by modality."""
    bundles = build_bundles(tmp_path_factory.mktemp("models"))
    return {b.manifest.modality: b.directory for b in bundles}


@pytest.fixture(scope="module")
def s1grd_model(bundle_dirs: dict[str, Path]) -> Path:
    return bundle_dirs["s1grd"]


@pytest.fixture(scope="module")
def gssic_model(bundle_dirs: dict[str, Path]) -> Path:
    return bundle_dirs["gssic"]


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated unseen region in the geetiles layout (synthetic)."""
    root = tmp_path_factory.mktemp("sim")
    simulate_dataset(root, ["south_america"], N_SIM_TILES, 48, seed=0, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def predictor(s1grd_model: Path) -> Iterator[Predictor]:
    predictor = Predictor.from_paths(str(s1grd_model), providers=[CPU])
    yield predictor
    predictor.close()


def predict(*args: str | Path) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def assert_same_results(out: Path, expected: Path) -> None:
    """Tables of two runs whose batches were cut differently: the same up to BLAS rounding.

    The k-NN score (hence the interval) of a tile depends on the last bits of a matrix product
    whose blocking follows the batch size; the service's micro-batching has the same property.
    """
    a, b = (pq.read_table(p / "tiles.parquet").to_pydict() for p in (out, expected))
    assert a.keys() == b.keys()
    for name, values in a.items():
        if name in ("score", "interval_low", "interval_high"):
            np.testing.assert_allclose(values, b[name], rtol=1e-6)
        else:
            assert values == b[name], name


def plain_folder(root: Path, n: int, start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        write_geotiff(root / f"t{i:02d}.tif", s1grd_db(seed=i), bands.S1GRD_RAW_BANDS)
    return root


def test_folder_run_gives_the_service_numbers(
    sim_dir: Path, s1grd_model: Path, predictor: Predictor, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert predict(sim_dir, "--model", s1grd_model, "--out", out) == 0
    table = pq.read_table(out / "tiles.parquet")
    assert tuple(table.column_names) == TABLE_COLUMNS
    assert table.num_rows == N_SIM_TILES
    identifiers = table["identifier"].to_pylist()
    assert identifiers == sorted(identifiers)

    # The service's path for the same tiles in the same batch: decode, resample, predict_batch.
    paths = sorted((sim_dir).glob("*/s1grd-2020/*.tif"))
    assert [p.stem for p in paths] == identifiers
    model = predictor.model_for("s1grd")
    stacked = np.stack([predictor.prepare(p.read_bytes())[1] for p in paths])
    outcomes = model.predict_batch(stacked)
    rows = table.to_pylist()
    for row, outcome in zip(rows, outcomes, strict=True):
        assert outcome is not None
        assert row["vegetation_pct"] == outcome.vegetation_pct
        assert row["p_value"] == outcome.ood.p_value
        assert row["score"] == outcome.ood.score
        assert (row["interval_low"], row["interval_high"]) == (
            outcome.ood.interval_low,
            outcome.ood.interval_high,
        )
        assert row["unreliable"] == outcome.ood.unreliable
        assert row["nearest_region"] == outcome.ood.nearest_region
    # One tile through /predict (a batch of one) agrees too.
    single = predictor.predict(paths[0].read_bytes())
    assert rows[0]["vegetation_pct"] == pytest.approx(single.vegetation_pct, rel=1e-6)
    assert rows[0]["nearest_region"] == single.ood.nearest_region

    summary = read_summary(out)
    assert summary["synthetic"] is True
    assert summary["input"]["kind"] == "geetiles" and summary["input"]["crs"] == "EPSG:4326"
    assert summary["counts"] == {
        "tiles": N_SIM_TILES,
        "predicted": N_SIM_TILES,
        "empty_windows": 0,
        "skipped_by_reason": {},
        "unreadable": 0,
        "done_before_this_run": 0,
    }
    unreliable = np.array([r["unreliable"] for r in rows])
    assert summary["unreliable_share"] == pytest.approx(unreliable.mean())
    # The model was fine-tuned on (generated) europe tiles: an unseen region is flagged.
    assert summary["unreliable_share"] > 0.5
    expected = OODScorer.from_bundle(load_bundle(s1grd_model)).score_set(
        np.stack([o.embedding for o in outcomes])
    )
    region = summary["region_ood"]
    assert region["swd_by_region"] == pytest.approx(expected.swd_by_region, rel=1e-6)
    assert set(region["swd_by_region"]) == {"europe", "china", "conus", "south_america"}
    assert region["n_tiles_sampled"] == N_SIM_TILES
    assert summary["unreadable"] == [] and summary["tiles_per_s"] > 0

    with rasterio.open(out / "map.tif") as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.crs.to_epsg() == 4326
        assert dst.descriptions == MAP_BANDS
        grid = dst.read()  # (3, H, W)
        assert np.isfinite(grid[0]).sum() >= N_SIM_TILES  # at least one pixel per tile
        for row in rows:
            centre = (0.5 * (row["left"] + row["right"]), 0.5 * (row["bottom"] + row["top"]))
            r, c = dst.index(*centre)
            assert grid[0, r, c] == np.float32(row["vegetation_pct"])
            assert grid[1, r, c] == np.float32(row["p_value"])
            assert grid[2, r, c] == float(row["unreliable"])
    assert (out / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mosaic_matches_the_scene_endpoint(
    s1grd_model: Path, predictor: Predictor, tmp_path: Path
) -> None:
    # 60 x 100 px at 24 px windows: a 3 x 5 grid; columns 3 and 4 are under 25 % valid.
    scene_path = utm_scene(tmp_path / "scene.tif", 60, 100, masked_cols=30)
    out = tmp_path / "out"
    assert predict(scene_path, "--model", s1grd_model, "--out", out) == 0
    scene = predictor.predict_scene(scene_path.read_bytes())
    table = pq.read_table(out / "tiles.parquet").to_pylist()
    assert len(table) == len(scene.tiles) == 9
    by_cell = {f"r{t.row}_c{t.col}": t for t in scene.tiles}
    for row in table:
        tile = by_cell[row["identifier"]]
        assert row["vegetation_pct"] == tile.vegetation_pct
        assert row["p_value"] == tile.ood.p_value and row["score"] == tile.ood.score
        assert (row["left"], row["bottom"], row["right"], row["top"]) == tile.bounds
    summary = read_summary(out)
    assert summary["input"]["kind"] == "mosaic" and summary["input"]["crs"] == "EPSG:32632"
    assert summary["counts"]["empty_windows"] == 6 and summary["counts"]["tiles"] == 15
    assert summary["synthetic"] is False
    with rasterio.open(out / "map.tif") as dst, rasterio.open(scene_path) as src:
        assert dst.transform == src.transform * src.transform.scale(SOURCE_TILE_PX)
        assert (dst.height, dst.width) == (3, 5) and dst.crs.to_epsg() == 32632
        grid = dst.read()
    for tile in scene.tiles:
        assert grid[0, tile.row, tile.col] == np.float32(tile.vegetation_pct)
    assert np.isnan(grid[:, :, 3:]).all()


def test_mosaic_windows_get_the_tile_checks(
    s1grd_model: Path, predictor: Predictor, tmp_path: Path
) -> None:
    # Columns 1..4 in linear power (0.05): skipped like the scene endpoint skips them, not
    # answered as 90 % vegetation.
    path = utm_scene(tmp_path / "scene.tif", 48, 120)
    with rasterio.open(path, "r+") as dst:
        data = dst.read()
        data[:, :, SOURCE_TILE_PX:] = 0.05
        dst.write(data)
    out = tmp_path / "out"
    assert predict(path, "--model", s1grd_model, "--out", out) == 0
    predicted = pq.read_table(out / "tiles.parquet").to_pylist()
    assert {r["identifier"] for r in predicted} == {"r0_c0", "r1_c0"}
    with (out / "skipped.csv").open() as handle:
        skipped = sorted(csv.DictReader(handle), key=lambda r: (int(r["row"]), int(r["col"])))
    assert len(skipped) == 8
    assert all(r["reason"].startswith("sigma0 does not look like dB") for r in skipped)
    summary = read_summary(out)
    assert summary["counts"]["skipped_by_reason"] == {"sigma0 does not look like dB": 8}
    scene = predictor.predict_scene(path.read_bytes())
    assert {(t.row, t.col) for t in scene.tiles} == {(0, 0), (1, 0)}
    assert [s.reason for s in scene.skipped] == [r["reason"] for r in skipped]


def test_two_band_units_are_told_once_per_mosaic_or_declared(
    s1grd_model: Path, gssic_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = farmland_and_town_db()  # (2, 24, 96): three farmland windows, a bright built-up one
    power = (10.0 ** (db / 10.0)).astype(np.float32)
    db_scene = write_geotiff(tmp_path / "db.tif", db, ["VV", "VH"])
    power_scene = write_geotiff(tmp_path / "power.tif", power, ["VV", "VH"])

    def vegetation(out: Path) -> list[float]:
        rows = pq.read_table(out / "tiles.parquet").to_pylist()
        return [r["vegetation_pct"] for r in sorted(rows, key=lambda r: r["identifier"])]

    runs = {
        "db": [db_scene],
        "detected": [power_scene],
        "declared": [power_scene, "--units", "power"],
    }
    for name, args in runs.items():
        assert predict(*args, "--model", s1grd_model, "--out", tmp_path / name) == 0
    expected = vegetation(tmp_path / "db")
    assert len(expected) == 4
    for name, units in (("detected", ("power", "detected")), ("declared", ("power", "declared"))):
        summary = read_summary(tmp_path / name)
        assert (summary["input"]["units"], summary["input"]["units_source"]) == units
        np.testing.assert_allclose(vegetation(tmp_path / name), expected, atol=1e-3)
    # The same results again in another unit are another run, not a resume.
    again = [power_scene, "--model", s1grd_model, "--out", tmp_path / "detected"]
    assert predict(*again, "--units", "amplitude") == 2
    assert "another run: expected units amplitude (found power)" in capsys.readouterr().err

    # A folder: the bright tile alone reads as amplitude unless the units are declared.
    folder = tmp_path / "tiles"
    folder.mkdir()
    for col in range(4):
        window = np.ascontiguousarray(power[:, :, 24 * col : 24 * (col + 1)])
        write_geotiff(folder / f"t{col}.tif", window, ["VV", "VH"])
    assert predict(folder, "--model", s1grd_model, "--out", tmp_path / "per-tile") == 0
    assert read_summary(tmp_path / "per-tile")["input"]["units_source"] == "per tile"
    per_tile = vegetation(tmp_path / "per-tile")
    np.testing.assert_allclose(per_tile[:3], expected[:3], atol=1e-3)
    assert abs(per_tile[3] - expected[3]) > 1e-3
    declared = [folder, "--model", s1grd_model, "--out", tmp_path / "folder-power"]
    assert predict(*declared, "--units", "power") == 0
    np.testing.assert_allclose(vegetation(tmp_path / "folder-power"), expected, atol=1e-3)

    refused = [db_scene, "--model", gssic_model, "--out", tmp_path / "gssic", "--units", "db"]
    assert predict(*refused) == 2
    assert "--units applies to two-band VV/VH input of an S1GRD model" in capsys.readouterr().err
    twelve = utm_scene(tmp_path / "twelve.tif", 48, 48)
    assert predict(twelve, "--model", s1grd_model, "--out", tmp_path / "o", "--units", "power") == 2
    assert "units=power applies to two-band VV/VH files" in capsys.readouterr().err


def test_unreadable_tiles_are_listed_never_fatal(gssic_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    nested = folder / "nested"
    nested.mkdir(parents=True)
    write_gssic_netcdf4(folder / "good_a.nc", coherence_x100(seed=1))
    write_gssic_netcdf4(nested / "good_b.nc", coherence_x100(seed=2))
    (folder / "crash.nc").write_bytes(crashing_netcdf(tmp_path / "base.nc"))
    (folder / "text.tif").write_text("not a raster")
    s1grd = write_geotiff(folder / "radar.tif", s1grd_db(), bands.S1GRD_RAW_BANDS)
    truncated = write_gssic_netcdf4(tmp_path / "full.nc", coherence_x100(seed=3)).read_bytes()
    (folder / "cut.nc").write_bytes(truncated[: len(truncated) // 2])
    out = tmp_path / "out"
    assert predict(folder, "--model", gssic_model, "--out", out, "--batch-size", "2") == 0
    table = pq.read_table(out / "tiles.parquet")
    assert table["identifier"].to_pylist() == ["good_a", "nested/good_b"]
    summary = read_summary(out)
    errors = {e["identifier"]: e["error"] for e in summary["unreadable"]}
    assert set(errors) == {"crash", "cut", "radar", "text"}
    assert "crashed the decoder" in errors["crash"]
    assert "expected a gssic tile, found s1grd bands" in errors["radar"]
    assert "not a raster: expected a GeoTIFF" in errors["text"]
    assert errors["cut"].startswith("could not decode")
    assert summary["counts"]["unreadable"] == 4 and summary["counts"]["predicted"] == 2
    listed = (out / "unreadable.csv").read_text().splitlines()
    assert listed[0] == "identifier,path,error" and len(listed) == 5
    assert str(s1grd) in (out / "unreadable.csv").read_text()


def test_rerun_skips_finished_tiles_and_resumes_an_interrupted_run(
    s1grd_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = plain_folder(tmp_path / "tiles", 6)
    fresh = tmp_path / "fresh"
    assert predict(folder, "--model", s1grd_model, "--out", fresh, "--batch-size", "2") == 0

    # New tiles arrive: only they are predicted, earlier parts are left alone.
    half = plain_folder(tmp_path / "growing", 3)
    out = tmp_path / "out"
    assert predict(half, "--model", s1grd_model, "--out", out, "--batch-size", "2") == 0
    first_parts = {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    plain_folder(half, 3, start=3)
    assert predict(half, "--model", s1grd_model, "--out", out, "--batch-size", "2") == 0
    assert read_summary(out)["counts"]["done_before_this_run"] == 3
    assert all(p.stat().st_mtime_ns == t for p, t in first_parts.items())
    assert_same_results(out, fresh)

    # An interrupted run keeps what it finished; the rerun does the rest.
    calls = {"n": 0}
    original = serving.batch.pipeline.predict_unit

    def interrupted(*args: object) -> dict:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(serving.batch.pipeline, "predict_unit", interrupted)
    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        predict(folder, "--model", s1grd_model, "--out", broken, "--batch-size", "2")
    assert not (broken / "tiles.parquet").exists()
    monkeypatch.setattr(serving.batch.pipeline, "predict_unit", original)
    assert predict(folder, "--model", s1grd_model, "--out", broken, "--batch-size", "2") == 0
    assert read_summary(broken)["counts"]["done_before_this_run"] == 2
    # Same units as the fresh run (2, 2, 2): the same numbers exactly.
    assert pq.read_table(broken / "tiles.parquet").equals(pq.read_table(fresh / "tiles.parquet"))
    assert read_summary(broken)["region_ood"] == read_summary(fresh)["region_ood"]


def test_command_line_errors(
    s1grd_model: Path, gssic_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = plain_folder(tmp_path / "tiles", 2)
    assert predict(tmp_path / "missing", "--model", s1grd_model, "--out", tmp_path / "o") == 2
    assert "expected a folder of tiles or a GeoTIFF mosaic" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert predict(tmp_path / "empty", "--model", s1grd_model, "--out", tmp_path / "o") == 2
    assert "no s1grd tiles in" in capsys.readouterr().err
    out = tmp_path / "out"
    assert predict(folder, "--model", s1grd_model, "--out", out) == 0
    assert predict(folder, "--model", gssic_model, "--out", out) == 2
    assert "holds results of another run" in capsys.readouterr().err
    assert predict(folder, "--model", tmp_path, "--out", tmp_path / "o2") == 2
    with pytest.raises(SystemExit):
        predict(folder, "--model", s1grd_model, "--out", out, "--batch-size", "0")
    with pytest.raises(SystemExit):
        predict(folder, "--model", s1grd_model, "--out", out, "--ray-address", "auto")


def test_output_folder_inside_the_input_is_not_read(s1grd_model: Path, tmp_path: Path) -> None:
    folder = plain_folder(tmp_path / "tiles", 2)
    out = folder / "results"
    assert predict(folder, "--model", s1grd_model, "--out", out) == 0
    assert predict(folder, "--model", s1grd_model, "--out", out) == 0  # map.tif is not a tile
    summary = read_summary(out)
    assert summary["counts"]["tiles"] == 2 and summary["counts"]["unreadable"] == 0
    assert summary["counts"]["done_before_this_run"] == 2


def test_tiles_in_another_crs_are_placed_in_the_map_crs(s1grd_model: Path, tmp_path: Path) -> None:
    folder = plain_folder(tmp_path / "tiles", 2)
    other = write_geotiff(folder / "utm.tif", s1grd_db(seed=9), bands.S1GRD_RAW_BANDS)
    with rasterio.open(other, "r+") as dst:  # the same pixels, georeferenced in UTM 32N
        dst.crs = "EPSG:32632"
        dst.transform = rasterio.transform.from_bounds(
            500_000, 5_200_000, 502_400, 5_202_400, 24, 24
        )
    out = tmp_path / "out"
    assert predict(folder, "--model", s1grd_model, "--out", out) == 0
    rows = {r["identifier"]: r for r in pq.read_table(out / "tiles.parquet").to_pylist()}
    assert read_summary(out)["input"]["crs"] == "EPSG:4326"
    assert rows["utm"]["left"] == pytest.approx(9.0, abs=0.01)  # UTM 32N's central meridian
    assert rows["utm"]["top"] == pytest.approx(46.96, abs=0.05)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own DataContext fields
@pytest.mark.skipif(not ray_available(), reason="ray[data] is not installed (extra 'ray')")
def test_ray_engine_gives_the_local_engine_outputs(
    sim_dir: Path, s1grd_model: Path, tmp_path: Path
) -> None:
    from serving.batch.ray_engine import RayEngine

    bundle = load_bundle(s1grd_model)
    job = BatchJob(bundle=bundle, batch_size=8, providers=[CPU])
    batch_input = discover_input(sim_dir, "s1grd", bundle.manifest.source_tile_px)
    outputs = {}
    for engine in (LocalEngine(), RayEngine(num_cpus=2)):
        out = tmp_path / engine.name
        run_batch(batch_input, job, out, engine, set_sample=4096, progress=False)
        outputs[engine.name] = out
    local = pq.read_table(outputs["local"] / "tiles.parquet").sort_by("identifier")
    ray_table = pq.read_table(outputs["ray"] / "tiles.parquet").sort_by("identifier")
    assert local.num_rows == N_SIM_TILES
    assert ray_table.equals(local)
    local_summary, ray_summary = read_summary(outputs["local"]), read_summary(outputs["ray"])
    assert ray_summary["engine"] == "ray"
    for key in ("counts", "region_ood", "unreliable_share", "vegetation_pct", "synthetic"):
        assert ray_summary[key] == local_summary[key]
    with (
        rasterio.open(outputs["local"] / "map.tif") as a,
        rasterio.open(outputs["ray"] / "map.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())


def test_input_listing_is_ordered_and_skips_other_modalities(sim_dir: Path, tmp_path: Path) -> None:
    geetiles = discover_input(sim_dir, "gssic", SOURCE_TILE_PX)
    assert geetiles.kind == "geetiles" and geetiles.n_sources == N_SIM_TILES
    assert all(s.path.endswith(".nc") for s in geetiles.iter_sources())
    stem_dir = next(p for p in sim_dir.iterdir() if p.is_dir())
    plain = discover_input(stem_dir, "s1grd", SOURCE_TILE_PX)
    assert plain.kind == "files" and plain.synthetic  # simulation.json sits above
    # An S1GRD model lists no NetCDF, and MODIS label folders are not tiles.
    assert {Path(s.path).parent.name for s in plain.iter_sources()} == {"s1grd-2020"}
    ids = [s.identifier for s in plain.iter_sources()]
    assert ids == sorted(ids) and len(ids) == N_SIM_TILES
    assert ids[0].startswith("s1grd-2020/")


def test_batch_runs_without_torch(s1grd_model: Path, tmp_path: Path) -> None:
    folder = plain_folder(tmp_path / "tiles", 2)
    out = tmp_path / "out"
    result = run_blocked(
        f"""
        from serving.batch.cli import main
        assert main([{str(folder)!r}, "--model", {str(s1grd_model)!r}, "--out", {str(out)!r},
                     "--no-progress"]) == 0
        leaked = {{"torch", "timm", "training"}} & {{m.split(".")[0] for m in sys.modules}}
        assert not leaked, leaked
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert read_summary(out)["counts"]["predicted"] == 2


def test_geetiles_chips_the_index_drops_are_reported(
    sim_dir: Path, s1grd_model: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sim"
    shutil.copytree(sim_dir, root)
    tiles = sorted(root.glob("*/s1grd-2020/*.tif"))
    tiles[0].unlink()  # missing
    tiles[1].write_text("garbage")  # not a raster: the index drops it
    data = tiles[2].read_bytes()
    tiles[2].write_bytes(data[: len(data) // 3])  # a TIFF header, truncated pixels
    out = tmp_path / "out"
    assert predict(root, "--model", s1grd_model, "--out", out) == 0
    summary = read_summary(out)
    (note,) = summary["input"]["notes"]
    assert "1 missing tile" in note and "1 unreadable tile" in note
    assert [e["identifier"] for e in summary["unreadable"]] == [tiles[2].stem]
    assert summary["counts"]["predicted"] == N_SIM_TILES - 3


def test_no_quicklook_without_matplotlib(
    s1grd_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    folder = plain_folder(tmp_path / "tiles", 2)
    out = tmp_path / "out"
    assert predict(folder, "--model", s1grd_model, "--out", out) == 0
    assert "matplotlib is not installed: no quick-look PNG" in caplog.text
    assert not (out / "quicklook.png").exists()
    assert read_summary(out)["outputs"]["quicklook"] is None
    assert (out / "map.tif").is_file()
