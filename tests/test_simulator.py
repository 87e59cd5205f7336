"""The synthetic SAR simulator: layout, formats, determinism and physics directions.

Everything here runs on a handful of tiny tiles (40 px) so the whole module takes seconds.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile

from sarveg import bands
from sarveg.simulate import REGIONS, make_chips, simulate_dataset, simulate_tile
from sarveg.simulate.chips import Chip, assign_splits
from sarveg.simulate.cli import main as simulate_main
from sarveg.simulate.landscape import Landscape
from sarveg.simulate.netcdf import NcVariable, encode_netcdf
from sarveg.simulate.physics import (
    coherence_decay,
    compute_backscatter,
    decay_parameters,
    speckle_table_db,
)
from sarveg.simulate.regions import FOREST, HERBACEOUS, URBAN, WATER, region_params

SIZE = 40
TILES = 6
REGION_NAMES = list(REGIONS)
HEX13 = re.compile(r"^[0-9a-f]{13}$")
VH_ASC = [bands.S1GRD_RAW_BANDS.index(f"{s}_vhasc") for s in bands.S1GRD_SEASONS]


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    simulate_dataset(root, REGION_NAMES, TILES, size=SIZE, seed=0, workers=1, progress=False)
    return root


def partitions(root: Path) -> dict[str, Path]:
    return {p.name.split("_partitions_")[0]: p for p in sorted(root.glob("*_partitions_*.geojson"))}


def test_layout_is_complete_and_well_formed(simulated: Path) -> None:
    found = partitions(simulated)
    assert sorted(found) == sorted(REGION_NAMES)
    for region, geojson in found.items():
        assert re.fullmatch(rf"{region}_partitions_sim_[0-9a-f]{{10}}\.geojson", geojson.name)
        collection = json.loads(geojson.read_text())
        assert collection["type"] == "FeatureCollection"
        features = collection["features"]
        assert len(features) == TILES
        identifiers = [f["properties"]["identifier"] for f in features]
        assert all(HEX13.match(i) for i in identifiers)
        assert len(set(identifiers)) == TILES
        west, south, east, north = REGIONS[region].bbox
        for feature in features:
            ring = feature["geometry"]["coordinates"][0]
            assert ring[0] == ring[-1] and len(ring) >= 5
            lons, lats = zip(*ring, strict=True)
            assert west <= min(lons) and max(lons) <= east
            assert south <= min(lats) and max(lats) <= north
            assert 10.0 < feature["properties"]["area_km2"] <= 20.3  # ~4.5 km squares

        stem = geojson.with_suffix("")
        with (simulated / f"{stem.name}_splits.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["identifier"] for r in rows] == identifiers
        assert {r["split"] for r in rows} == {"train", "val", "test"}
        for identifier in identifiers:
            assert (stem / "s1grd-2020" / f"{identifier}.tif").is_file()
            assert (stem / "gssic-2020" / f"{identifier}.nc").is_file()
            assert (stem / "modis44b-2020" / f"{identifier}.tif").is_file()
    manifest = json.loads((simulated / "simulation.json").read_text())
    assert manifest["synthetic"] is True and manifest["size"] == SIZE


def first_tile(root: Path, region: str, dataset: str, suffix: str) -> Path:
    stem = partitions(root)[region].with_suffix("")
    return sorted((stem / dataset).glob(f"*{suffix}"))[0]


def test_s1grd_geotiff_format(simulated: Path) -> None:
    path = first_tile(simulated, "europe", "s1grd-2020", ".tif")
    with rasterio.open(path) as src:
        assert (src.count, src.height, src.width) == (16, SIZE, SIZE)
        assert src.dtypes == ("float32",) * 16
        assert src.crs.to_epsg() == 4326
        assert src.descriptions == bands.S1GRD_RAW_BANDS
        assert src.nodata is None
        assert src.compression.name.lower() == "zstd"
        assert src.profile["tiled"]
        data = src.read()
    valid = data[np.isfinite(data)]
    assert valid.min() > -40.0 and valid.max() < 20.0
    np.testing.assert_array_equal(valid * 8, np.round(valid * 8))  # 1/8 dB steps


def test_gssic_netcdf_read_by_gdal_from_path_and_bytes(simulated: Path) -> None:
    path = first_tile(simulated, "conus", "gssic-2020", ".nc")
    with rasterio.open(f'NETCDF:"{path}":coherence') as src:
        assert src.count == 16
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        assert src.crs.to_epsg() == 4326
        side = src.height
        assert side == src.width == 18  # round(40 * 0.45)
        seasons = [src.tags(i)["NETCDF_DIM_season"] for i in range(1, 17)]
        days = [int(src.tags(i)["NETCDF_DIM_deltadays"]) for i in range(1, 17)]
        from_path = src.read()
        bounds = src.bounds
    assert seasons == [str(s) for s in range(4) for _ in range(4)]
    assert days == list(bands.GSSIC_NC_DELTADAYS) * 4
    assert from_path.max() <= 100 and (from_path > 0).any()
    # Coherence decays with the temporal baseline (12 -> 48 days), on average over all chips.
    per_day = []
    for nc in sorted(simulated.glob("*/gssic-2020/*.nc")):
        with rasterio.open(f'NETCDF:"{nc}":coherence') as src:
            codes = src.read().reshape(4, 4, side, side).astype(float)
        per_day.append(np.where(codes > 0, codes, np.nan))
    assert len(per_day) == len(REGION_NAMES) * TILES
    assert np.all(np.diff(np.nanmean(np.stack(per_day), axis=(0, 1, 3, 4))) < 0)
    with (
        MemoryFile(path.read_bytes()) as memfile,
        rasterio.open(f'NETCDF:"{memfile.name}":coherence') as src,
    ):
        np.testing.assert_array_equal(src.read(), from_path)
    geojson = partitions(simulated)["conus"]
    feature = json.loads(geojson.read_text())["features"][0]
    lons, lats = zip(*feature["geometry"]["coordinates"][0], strict=True)
    np.testing.assert_allclose(
        [bounds.left, bounds.bottom, bounds.right, bounds.top],
        [min(lons), min(lats), max(lons), max(lats)],
        atol=1e-6,
    )
    with rasterio.open(f'NETCDF:"{path}":amplitude') as src:
        assert src.count == 8 and src.scales[0] == pytest.approx(0.2)


def test_read_tile_reads_simulated_files(simulated: Path) -> None:
    read_tile = pytest.importorskip("sarveg").read_tile
    s1 = read_tile(first_tile(simulated, "china", "s1grd-2020", ".tif"))
    assert s1.array.shape == (12, SIZE, SIZE) and s1.modality == "s1grd"
    nc = first_tile(simulated, "china", "gssic-2020", ".nc")
    for source in (nc, nc.read_bytes()):
        tile = read_tile(source)
        assert tile.modality == "gssic" and tile.array.shape == (8, 18, 18)
        assert np.nanmax(tile.array) <= 1.0


def test_label_is_mean_of_label_raster(simulated: Path) -> None:
    chips = make_chips(REGIONS["south_america"], TILES, seed=0)
    stem = partitions(simulated)["south_america"].with_suffix("")
    for chip in chips:
        tile = simulate_tile(chip, SIZE, seed=0)
        with rasterio.open(stem / "modis44b-2020" / f"{chip.identifier}.tif") as src:
            assert src.descriptions == ("Percent_Tree_Cover_2020",)
            assert src.dtypes == ("uint8",)
            codes = src.read(1)
        np.testing.assert_array_equal(codes, tile.tree_cover_codes)
        assert set(np.unique(codes)) <= set(range(101)) | {200, 253}
        valid = codes != 253
        expected = np.where(codes == 200, 0, codes)[valid].astype(float).mean()
        assert tile.vegetation_pct == pytest.approx(expected, abs=1e-9)


def test_same_seed_same_bytes_any_workers_and_seed_matters(simulated: Path, tmp_path: Path) -> None:
    simulate_dataset(tmp_path / "a", REGION_NAMES, TILES, size=SIZE, seed=0, workers=2,
                     progress=False)  # fmt: skip
    assert dataset_files(tmp_path / "a") == dataset_files(simulated)
    simulate_dataset(tmp_path / "b", ["europe"], 2, size=SIZE, seed=1, workers=1, progress=False)
    other = dataset_files(tmp_path / "b")
    same_seed = {k: v for k, v in dataset_files(simulated).items() if k.startswith("europe")}
    tifs_b = sorted(v for k, v in other.items() if k.endswith(".tif"))
    assert not set(tifs_b) & set(same_seed.values())


def test_refuses_to_mix_simulations(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    simulate_dataset(root, ["china"], 2, size=24, seed=0, workers=1, progress=False)
    simulate_dataset(root, ["china"], 2, size=24, seed=0, workers=1, progress=False)  # same: ok
    with pytest.raises(ValueError, match="already holds china_partitions_sim_.*expected no other"):
        simulate_dataset(root, ["china"], 3, size=24, seed=0, workers=1, progress=False)


def test_tile_independent_of_tile_count() -> None:
    few, many = make_chips(REGIONS["europe"], 2, 3), make_chips(REGIONS["europe"], 9, 3)
    assert [c.identifier for c in few] == [c.identifier for c in many[:2]]
    a, b = simulate_tile(few[1], 24, 3), simulate_tile(many[1], 24, 3)
    np.testing.assert_array_equal(a.s1grd_db, b.s1grd_db)


def test_splits_are_geographic_bands_60_20_20() -> None:
    chips = make_chips(REGIONS["conus"], 200, seed=0)
    splits = [c.split for c in chips]
    assert (splits.count("train"), splits.count("test"), splits.count("val")) == (120, 40, 40)
    angle = REGIONS["conus"].split_angle_rad
    proj = {c.identifier: c.centroid[0] * np.cos(angle) + c.centroid[1] * np.sin(angle)
            for c in chips}  # fmt: skip
    order = sorted(chips, key=lambda c: proj[c.identifier])
    # First band of 20 chips along the direction is train, the fourth test, the fifth val.
    assert {c.split for c in order[:20]} == {"train"}
    assert {c.split for c in order[60:80]} == {"test"}
    assert {c.split for c in order[80:100]} == {"val"}
    assert assign_splits([], 0.0) == []


def test_cut_corner_is_masked_in_every_file() -> None:
    chip = replace(make_chips(REGIONS["europe"], 1, 0)[0], cut=(0, 0.5, 0.5))  # north-west
    tile = simulate_tile(chip, SIZE, seed=0)
    assert np.isnan(tile.s1grd_db[:, 0, 0]).all() and np.isfinite(tile.s1grd_db[:, -1, -1]).all()
    assert np.isnan(tile.coherence[..., 0, 0]).all()
    assert tile.tree_cover_codes[0, 0] == bands.MODIS_FILL
    assert tile.tree_cover_codes[-1, -1] != bands.MODIS_FILL
    masked = np.isnan(tile.s1grd_db[0]).mean()
    assert masked == pytest.approx(0.125, abs=0.03)  # a right triangle with legs of half a side
    ring = np.array(chip.ring())
    assert len(ring) == 6 and np.allclose(ring[0], ring[-1])
    assert chip.area_km2() == pytest.approx(0.875 * 4.5**2, rel=0.02)


def uniform_landscape(
    land_cover: np.ndarray, tree_cover: np.ndarray, incidence_deg: float = 37.0
) -> Landscape:
    """A flat landscape with the given class and tree-cover maps and average soils."""
    shape = land_cover.shape
    zeros = np.zeros(shape, np.float32)
    return Landscape(
        land_cover=land_cover.astype(np.uint8),
        tree_cover=tree_cover.astype(np.float32),
        deciduous=np.full(shape, 0.5, np.float32),
        herb_vegetation=np.full((4, *shape), 0.2, np.float32),
        soil_moisture=np.full((4, *shape), 0.25, np.float32),
        roughness_db=zeros,
        slope_x=zeros,
        slope_y=zeros,
        urban_vv_db=np.full((2, *shape), 2.0, np.float32),
        water_roughness_db=np.zeros(4, np.float32),
        incidence_deg=np.array([incidence_deg, incidence_deg], np.float32),
        archetype="test",
    )


def vh_and_coherence_by_tree_cover(region: str) -> tuple[np.ndarray, np.ndarray]:
    """Speckle-free VH (dB) and 12-day coherence over a ramp of tree cover 0, 0.1, ..., 1."""
    params = region_params(region)
    tree_cover = np.tile(np.linspace(0.0, 1.0, 11), (4, 1))  # (4, 11) columns of rising cover
    landscape = uniform_landscape(np.where(tree_cover >= 0.3, FOREST, HERBACEOUS), tree_cover)
    radar = compute_backscatter(landscape, params)
    vh_db = 10 * np.log10(radar.sigma0[:, 0, 1].mean(axis=(0, 1)))  # (11,) mean of seasons
    rho, tau = decay_parameters(landscape, params, radar)
    coh12 = coherence_decay(rho, tau, (12,))[:, 0].mean(axis=(0, 1))  # (11,)
    return vh_db, coh12


@pytest.mark.parametrize("region", REGION_NAMES)
def test_vh_rises_and_coherence_falls_with_tree_cover(region: str) -> None:
    vh_db, coh12 = vh_and_coherence_by_tree_cover(region)
    # Sensitive up to half cover; dense south_american canopies saturate C-band earliest.
    sensitive_up_to = 5 if region == "south_america" else 6
    assert np.all(np.diff(vh_db[:sensitive_up_to]) > 0.1)
    # Then at most flat: C-band saturates. Past saturation, closed south_american canopies may
    # dim slightly (their crowns scatter less VH per unit V than the savanna grass they replace).
    assert np.all(np.diff(vh_db) > (-0.15 if region == "south_america" else -0.05))
    assert vh_db[-1] - vh_db[0] > 3.0
    assert np.all(np.diff(coh12[:6]) < 0) and np.all(np.diff(coh12) < 1e-4)
    assert coh12[0] - coh12[-1] > 0.1


@pytest.mark.parametrize("region", REGION_NAMES)
def test_sparse_trees_keep_most_open_ground_coherence(region: str) -> None:
    # Backscatter saturates at a fifth of tree cover in south_america, but the gaps between
    # crowns still return coherent signal: coherence follows the crowns' footprint.
    _, coh12 = vh_and_coherence_by_tree_cover(region)
    contrast = coh12[0] - coh12[-1]
    assert coh12[2] - coh12[-1] > 0.6 * contrast  # 20 % cover
    assert coh12[5] - coh12[-1] > 0.3 * contrast  # half cover


def test_dense_canopies_saturate_earliest_in_south_america() -> None:
    gain_above_half = {r: np.ptp(vh_and_coherence_by_tree_cover(r)[0][5:]) for r in REGION_NAMES}
    assert min(gain_above_half, key=gain_above_half.get) == "south_america"
    assert gain_above_half["south_america"] < 0.4 < gain_above_half["europe"]


def test_water_is_darkest_and_urban_brightest() -> None:
    classes = np.array([[FOREST, HERBACEOUS, 2, URBAN, WATER]]).repeat(3, axis=0)
    tree_cover = np.where(classes == FOREST, 0.9, 0.02)
    for region in REGION_NAMES:
        radar = compute_backscatter(uniform_landscape(classes, tree_cover), region_params(region))
        vv_db = 10 * np.log10(radar.sigma0[:, :, 0].mean(axis=(0, 1, 2)))  # (5,) per class
        assert np.argmin(vv_db) == 4 and vv_db[4] < -18.0
        assert np.argmax(vv_db) == 3


def test_simulated_tiles_follow_physics() -> None:
    """Across many tiny tiles: VH tracks the label, coherence falls with it, water is darkest."""
    vh, coh, labels = [], [], []
    water_vs_rest = []
    for chip in make_chips(REGIONS["europe"], 40, seed=5):
        tile = simulate_tile(chip, 32, seed=5)
        vh.append(np.nanmean(tile.s1grd_db[VH_ASC]))
        coh.append(np.nanmean(tile.coherence[:, 0]))
        labels.append(tile.vegetation_pct)
        water = tile.land_cover == WATER
        if 0 < water.sum() < water.size:
            vv = tile.s1grd_db[bands.S1GRD_RAW_BANDS.index("summer_vvasc")]
            water_vs_rest.append(np.nanmean(vv[water]) < np.nanmean(vv[~water]) - 3.0)
    assert np.corrcoef(vh, labels)[0, 1] > 0.5
    assert np.corrcoef(coh, labels)[0, 1] < -0.5
    assert water_vs_rest and all(water_vs_rest)


def test_regions_differ_in_label_distribution() -> None:
    labels = {
        region: np.array([
            simulate_tile(chip, 24, seed=0).vegetation_pct
            for chip in make_chips(REGIONS[region], 60, seed=0)
        ])
        for region in REGION_NAMES
    }  # fmt: skip
    means = {region: values.mean() for region, values in labels.items()}
    assert means["south_america"] > means["conus"] > means["europe"] > means["china"]
    assert np.median(labels["china"]) < 10.0
    # conus is bimodal: forest tiles and crop tiles, few in between.
    conus = labels["conus"]
    assert (conus < 15).mean() > 0.2 and (conus > 45).mean() > 0.2


def test_speckle_table_is_gamma() -> None:
    looks = 30.8
    levels = 10 ** (speckle_table_db(looks) / 10)  # linear, equiprobable
    assert levels.mean() == pytest.approx(1.0, abs=1e-3)
    assert levels.var() == pytest.approx(1.0 / looks, rel=0.03)


def test_netcdf_writer_round_trip_and_errors(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 20 * 16, dtype=np.int16).reshape(2, 3, 20, 16)
    variables = [
        NcVariable("y", ("y",), np.linspace(45.0, 44.0, 20), {"units": "degrees_north"}),
        NcVariable("x", ("x",), np.linspace(5.0, 6.0, 16), {"units": "degrees_east"}),
        NcVariable("band", ("t", "k", "y", "x"), data, {"long_name": "test"}),
    ]
    blob = encode_netcdf({"t": 2, "k": 3, "y": 20, "x": 16}, variables, {"title": "t"})
    assert blob[:4] == b"CDF\x01"
    path = tmp_path / "t.nc"
    path.write_bytes(blob)
    with rasterio.open(f'NETCDF:"{path}":band') as src:
        assert src.count == 6
        np.testing.assert_array_equal(src.read(), data.reshape(6, 20, 16))
    bad = NcVariable("band", ("t", "y"), np.zeros((3, 20), np.int16))
    with pytest.raises(ValueError, match=r"expected shape \(2, 20\).*found \(3, 20\)"):
        encode_netcdf({"t": 2, "y": 20}, [bad])
    with pytest.raises(ValueError, match="unsupported NetCDF classic type"):
        encode_netcdf({"t": 2}, [NcVariable("v", ("t",), np.zeros(2, np.int64))])


def test_cli_runs_and_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = simulate_main(["--out", str(tmp_path), "--regions", "china", "--tiles-per-region",
                          "2", "--size", "24", "--workers", "1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 2 synthetic tiles" in out and "bytes per tile" in out
    with pytest.raises(SystemExit):
        simulate_main(["--out", str(tmp_path), "--regions", "mars"])
    assert "expected regions among" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        simulate_main(["--out", str(tmp_path), "--size", "8", "--tiles-per-region", "1"])
    assert "at least 16 pixels" in capsys.readouterr().err


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown region 'atlantis'"):
        region_params("atlantis")
    with pytest.raises(ValueError, match="too many tiles for region europe"):
        make_chips(REGIONS["europe"], 10**7, seed=0)
    chip = Chip("europe", 0, "0" * 13, (0.0, 45.0, 0.06, 45.04), None, "train")
    assert chip.mask(4, 4).all()


def test_single_date_tiles_repeat_one_speckled_acquisition() -> None:
    chips = make_chips(region_params("europe"), 8, seed=0)
    # ~40 m pixels, where one scene has ~16 looks and a europe composite ~14 times more.
    side = 112
    for chip in chips:
        composite = simulate_tile(chip, side, 0)
        single = simulate_tile(chip, side, 0, single_date_share=1.0)
        assert composite.single_date_season is None and single.single_date_season in range(4)
        # The label and the GSSIC arrays do not depend on how the S1GRD bands were acquired.
        assert single.vegetation_pct == composite.vegetation_pct
        np.testing.assert_array_equal(single.coherence, composite.coherence)
        stack = single.s1grd_db.reshape(4, 2, 2, side, side)  # (season, direction, pol, H, W)
        valid = np.isfinite(stack[0, 0, 0])
        for season in range(4):
            for direction in range(2):
                np.testing.assert_array_equal(stack[season, direction], stack[0, 0])
        # One scene's speckle: a rougher image than a 14-scene composite of the same ground.
        season = single.single_date_season
        rough_single = np.nanstd(np.diff(stack[0, 0, 0][valid]))
        rough_composite = np.nanstd(
            np.diff(composite.s1grd_db.reshape(4, 2, 2, side, side)[season, 0, 0][valid])
        )
        assert rough_single > 1.25 * rough_composite
    shares = [simulate_tile(c, 32, 0, single_date_share=0.5).single_date_season for c in chips]
    assert 0 < sum(s is not None for s in shares) < len(chips)
    with pytest.raises(ValueError, match="single-date share"):
        simulate_dataset(Path("unused"), ["europe"], 1, 32, single_date_share=1.5)
