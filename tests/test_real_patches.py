"""Real Sentinel-1 patches (BigEarthNet-S1 examples, fetched from PyPI into a cache) through the
reader, the service and ``sarveg predict``: two-band VV/VH files in dB, power and amplitude."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import requests

from sarveg import TileError, bands, read_tile
from serving.batch.cli import main as predict_main
from serving.decoding import DecodeLimits
from serving.predictor import Predictor
from serving.runtime import CPU
from testkit.bundles import build_bundle
from testkit.real import RealPatch, bigearthnet_s1, two_band_geotiff
from testkit.tiles import s1grd_db, write_geotiff
from tests.conftest import Served


@pytest.fixture(scope="module")
def patches() -> list[RealPatch]:
    found = bigearthnet_s1()
    assert len(found) == 6
    return found


def test_two_band_db_files_read_as_single_dates(patches: list[RealPatch]) -> None:
    for patch in patches:
        db, _ = patch.read_db()
        tile = read_tile(two_band_geotiff(patch, "db", angle=True))
        assert tile.modality == "s1grd" and tile.array.shape == (12, 120, 120)
        assert tile.crs.to_epsg() in (32629, 32633, 32635)
        np.testing.assert_array_equal(tile.array[0], db[0])  # winter VV = the acquisition
        np.testing.assert_array_equal(tile.array[3], db[0])  # fall VV too: replicated
        np.testing.assert_allclose(tile.array[8], db[0] - db[1], atol=1e-5)
        info = tile.input
        assert (info.kind, info.layout, info.units, info.units_source, info.seasons) == (
            "single_date",
            "s1grd-2band",
            "db",
            "detected",
            "replicated",
        )
        assert info.date == patch.date


@pytest.mark.parametrize("units", ["power", "amplitude"])
def test_linear_units_are_detected_and_converted(patches: list[RealPatch], units: str) -> None:
    detected = 0
    for patch in patches:
        reference = read_tile(two_band_geotiff(patch, "db")).array
        data = two_band_geotiff(patch, units, names=("vv", "Vh"))  # names: case-insensitive
        try:
            tile = read_tile(data)
        except TileError as error:  # a file that fits both readings is refused, never guessed
            assert "could not tell the units" in str(error) and "pass units=" in str(error)
            tile = read_tile(data, units=units)
            assert tile.input.units_source == "declared"
        else:
            detected += 1
            assert tile.input.units == units and tile.input.units_source == "detected"
        np.testing.assert_allclose(tile.array, reference, atol=1e-3)
    assert detected >= 5


def test_refusals_name_what_was_expected(patches: list[RealPatch], tmp_path: Path) -> None:
    power = two_band_geotiff(patches[0], "power")
    with pytest.raises(TileError, match="sigma0 does not look like dB.*linear power"):
        read_tile(power, units="db")
    with pytest.raises(TileError, match="unknown units 'kelvin': expected one of db, power"):
        read_tile(power, units="kelvin")
    with pytest.raises(TileError, match="could not tell the units of the VV/VH values"):
        read_tile(two_band_geotiff(patches[-1], "amplitude"))  # bright winter forest: ambiguous
    with pytest.raises(TileError, match="wrong band count.*two bands named VV and VH"):
        read_tile(two_band_geotiff(patches[0], names=("", "")))
    composite = write_geotiff(tmp_path / "16band.tif", s1grd_db(), bands.S1GRD_RAW_BANDS)
    with pytest.raises(TileError, match="units=power applies to two-band VV/VH files"):
        read_tile(composite, units="power")
    assert read_tile(composite).input.kind == "seasonal_composite"


def test_predictor_answers_real_patches_with_an_input_block(
    patches: list[RealPatch], tmp_path: Path
) -> None:
    bundle = build_bundle(tmp_path / "models", "s1grd", footprint_m=4500.0)
    predictor = Predictor([bundle], providers=[CPU], limits=DecodeLimits(workers=1))
    try:
        answer = predictor.predict(
            two_band_geotiff(patches[1], "power", date_tag=False), name=patches[1].vv.name
        )
    finally:
        predictor.close()
    assert 0.0 <= answer.vegetation_pct <= 100.0
    assert answer.input is not None and answer.input.units == "power"
    assert answer.input.date == patches[1].date  # from the file name
    assert answer.input.footprint_m == (1200.0, 1200.0) and answer.input.pixel_size_m == 10.0
    (warning,) = answer.input.warnings
    assert warning.startswith("footprint 1.2 km against training chips of 4.5 km (0.27x)")
    # The calibration covers training-footprint tiles only: such a tile is flagged whatever
    # its p-value, and the answer says why.
    assert answer.input.footprint_ratio == pytest.approx(1200.0 / 4500.0)
    assert answer.ood.unreliable
    assert any(r.startswith("footprint 0.27x") for r in answer.ood.unreliable_reasons)


def test_tiles_of_the_training_footprint_are_flagged_by_p_value_only(tmp_path: Path) -> None:
    # A tile 4.8 km wide (within 2x of 4.5 km): no footprint reason, flag = p < alpha.
    bundle = build_bundle(tmp_path / "models", "s1grd", footprint_m=4500.0)
    path = tmp_path / "t.tif"
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 16, "dtype": "float32"}
    transform = rasterio.transform.from_origin(400_000.0, 5_000_000.0, 150.0, 150.0)
    with rasterio.open(path, "w", crs="EPSG:32633", transform=transform, **profile) as dst:
        dst.write(s1grd_db(32, seed=3))
        for index, name in enumerate(bands.S1GRD_RAW_BANDS, start=1):
            dst.set_band_description(index, name)
    predictor = Predictor([bundle], providers=[CPU], limits=DecodeLimits(workers=1))
    try:
        answer = predictor.predict(path.read_bytes())
    finally:
        predictor.close()
    assert answer.input is not None and answer.input.footprint_ratio == pytest.approx(4800 / 4500)
    assert answer.ood.unreliable == (answer.ood.p_value < 0.05)
    assert not any(r.startswith("footprint") for r in answer.ood.unreliable_reasons)


def test_service_answers_a_real_patch(patches: list[RealPatch], served: Served) -> None:
    patch = patches[2]
    answer = requests.post(
        f"{served.url}/predict",
        files={"tile": (f"{patch.name}.tif", two_band_geotiff(patch, "amplitude", date_tag=False))},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["input"] == {
        "kind": "single_date",
        "layout": "s1grd-2band",
        "units": "amplitude",
        "units_source": "detected",
        "seasons": "replicated",
        "date": patch.date,
        "footprint_m": [1200.0, 1200.0],
        "pixel_size_m": 10.0,
        "footprint_ratio": None,
        "warnings": [],  # the tiny test bundle records no training footprint
    }
    declared = requests.post(
        f"{served.url}/predict",
        files={"tile": ("x.tif", two_band_geotiff(patch, "power"))},
        data={"units": "power"},
        timeout=60,
    )
    assert declared.status_code == 200 and declared.json()["input"]["units_source"] == "declared"
    bad = requests.post(
        f"{served.url}/predict",
        files={"tile": ("x.tif", two_band_geotiff(patch, "power"))},
        data={"units": "kelvin"},
        timeout=60,
    )
    assert bad.status_code == 400 and "unknown units 'kelvin'" in bad.json()["error"]


def test_sarveg_predict_over_a_folder_of_real_patches(
    patches: list[RealPatch], tmp_path: Path
) -> None:
    folder = tmp_path / "real"
    folder.mkdir()
    for patch in patches:
        (folder / f"{patch.name}.tif").write_bytes(two_band_geotiff(patch, "db"))
    bundle = build_bundle(tmp_path / "models", "s1grd")
    out = tmp_path / "out"
    code = predict_main(
        [str(folder), "--model", str(bundle.directory), "--out", str(out), "--no-progress"]
    )
    assert code == 0
    table = pq.read_table(out / "tiles.parquet").to_pylist()
    assert len(table) == len(patches)
    assert all(0.0 <= row["vegetation_pct"] <= 100.0 for row in table)
    # A bundle trained on 4.5 km chips flags every 1.2 km patch, as the service does.
    trained = build_bundle(tmp_path / "models-4500", "s1grd", footprint_m=4500.0)
    flagged = tmp_path / "flagged"
    code = predict_main(
        [str(folder), "--model", str(trained.directory), "--out", str(flagged), "--no-progress"]
    )
    assert code == 0
    rows = pq.read_table(flagged / "tiles.parquet").to_pylist()
    assert len(rows) == len(patches) and all(row["unreliable"] for row in rows)
    assert not all(row["unreliable"] for row in table)  # the same tiles without a footprint


def test_small_input_rules(tmp_path: Path) -> None:
    from testkit import hostile
    from testkit.tiles import coherence_x100

    # Float coherence: 0 is a real value (water), NaN is nodata; uint8 keeps 0 as nodata.
    coherence = coherence_x100()[:, :2].transpose(1, 0, 2, 3).reshape(8, 24, 24) / 100.0
    coherence[:, :4, :4] = 0.0
    tile = read_tile(
        write_geotiff(tmp_path / "c.tif", coherence.astype(np.float32), bands.GSSIC_CHANNELS)
    )
    assert np.all(tile.array[:, :4, :4] == 0.0)
    # A NetCDF without a CRS whose coordinates cannot be degrees is refused, not mislocated.
    utm = hostile.gssic_netcdf4(bounds=(500_000.0, 4_000_000.0, 502_000.0, 4_002_000.0))
    with pytest.raises(TileError, match="NetCDF without a CRS: expected longitude/latitude"):
        read_tile(utm)
    # Only descending passes in a geetiles tile: refused, naming the direction.
    data = np.zeros((16, 24, 24), np.float32)
    descending = [i for i, n in enumerate(bands.S1GRD_RAW_BANDS) if n.endswith("des")]
    data[descending] = s1grd_db()[descending]
    only_des = write_geotiff(tmp_path / "des.tif", data, bands.S1GRD_RAW_BANDS)
    with pytest.raises(TileError, match="no ascending pass in this tile.*descending bands only"):
        read_tile(only_des)
    # /predict needs the scenes' valid share (25 %), not a single valid pixel.
    sparse = s1grd_db()
    sparse[:, 6:, :] = 0.0  # 6 of 24 rows valid: exactly 25 %
    sparse[:, 5, :] = 0.0  # now 5 of 24
    bundle = build_bundle(tmp_path / "models", "s1grd")
    predictor = Predictor([bundle], providers=[CPU], limits=DecodeLimits(sandbox=False))
    path = write_geotiff(tmp_path / "sparse.tif", sparse, bands.S1GRD_RAW_BANDS)
    with pytest.raises(TileError, match="too little valid data: expected at least 25%.*found 21%"):
        predictor.predict(path.read_bytes())


def test_composite_and_mosaic_of_real_patches(patches: list[RealPatch], tmp_path: Path) -> None:
    from sarveg.composite import main as composite_main

    # The separate-file layout (BigEarthNet's own): one summer acquisition, seasons filled.
    patch = patches[0]
    out = tmp_path / "composite.tif"
    args = [str(patch.vv), str(patch.vh), "--out", str(out), "--no-progress"]
    assert composite_main(args) == 1  # one date: the other seasons are missing
    assert composite_main([*args, "--fill-missing-seasons"]) == 0
    db, profile = patch.read_db()
    tile = read_tile(out)
    np.testing.assert_allclose(tile.array[:4], np.broadcast_to(db[0], (4, 120, 120)), atol=1e-5)
    # A UTM mosaic of real values (the patch tiled 2 x 2 on its own grid) through sarveg predict.
    mosaic = tmp_path / "mosaic.tif"
    values = np.tile(db, (1, 2, 2))
    with rasterio.open(
        mosaic, "w", **(profile | {"count": 2, "width": 240, "height": 240, "driver": "GTiff"})
    ) as dst:
        dst.write(values)
        dst.descriptions = ("VV", "VH")
    bundle = build_bundle(tmp_path / "models", "s1grd")
    code = predict_main(
        [
            str(mosaic),
            "--model",
            str(bundle.directory),
            "--out",
            str(tmp_path / "m"),
            "--no-progress",
        ]
    )
    assert code == 0
    rows = pq.read_table(tmp_path / "m" / "tiles.parquet").to_pylist()
    assert len(rows) == 100  # 240 px in windows of the tiny bundle's 24 px: a 10 x 10 grid
    assert all(0.0 <= r["vegetation_pct"] <= 100.0 for r in rows)


def test_windows_cover_the_training_footprint_in_metres(
    patches: list[RealPatch], tmp_path: Path
) -> None:
    # The 10 m patch tiled 2 x 2 (2.4 km); a bundle trained on 1.2 km chips cuts it into 2 x 2
    # windows of 120 px, where its 24 px native side would give 10 x 10 windows of 240 m.
    db, profile = patches[3].read_db()
    mosaic = tmp_path / "mosaic.tif"
    with rasterio.open(
        mosaic, "w", **(profile | {"count": 2, "width": 240, "height": 240, "driver": "GTiff"})
    ) as dst:
        dst.write(np.tile(db, (1, 2, 2)))
        dst.descriptions = ("VV", "VH")
    bundle = build_bundle(tmp_path / "models", "s1grd", footprint_m=1200.0)
    predictor = Predictor([bundle], providers=[CPU], limits=DecodeLimits(workers=1))
    try:
        scene = predictor.predict_scene(mosaic.read_bytes())
    finally:
        predictor.close()
    assert (scene.summary.grid.rows, scene.summary.grid.cols, scene.summary.grid.tile_px) == (
        2,
        2,
        120,
    )
    out = tmp_path / "out"
    assert (
        predict_main(
            [str(mosaic), "--model", str(bundle.directory), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    rows = pq.read_table(out / "tiles.parquet").to_pylist()
    assert sorted(r["identifier"] for r in rows) == ["r0_c0", "r0_c1", "r1_c0", "r1_c1"]
    by_cell = {(t.row, t.col): t.vegetation_pct for t in scene.tiles}
    for row in rows:  # the batch command and the scene endpoint agree window by window
        r, c = int(row["identifier"][1]), int(row["identifier"][4])
        assert row["vegetation_pct"] == pytest.approx(by_cell[(r, c)], abs=1e-4)
