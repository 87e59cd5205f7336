"""The HTTP service, against a real ``bentoml serve`` process on tiny bundles (synthetic)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds

from sarveg import bands
from testkit.bundles import SOURCE_TILE_PX, build_bundles, region_tiles
from testkit.tiles import (
    BOUNDS,
    coherence_x100,
    s1grd_db,
    write_geotiff,
    write_gssic_netcdf4,
)
from tests.conftest import SCENE_UPLOAD_CAP_MB, UPLOAD_CAP_MB, Served

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def server(served: Served) -> str:
    """The base URL of the session's ``bentoml serve`` process."""
    return served.url


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiles and scenes written with rasterio / h5netcdf, good and bad."""
    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    out = {
        "s1grd": write_geotiff(d / "s1grd.tif", s1grd_db(), bands.S1GRD_RAW_BANDS),
        "s1grd_40px": write_geotiff(d / "s40.tif", s1grd_db(side=40), bands.S1GRD_RAW_BANDS),
        "gssic_nc": write_gssic_netcdf4(d / "gssic.nc", coherence_x100()),
        "gssic_tif": write_geotiff(
            d / "gssic.tif",
            region_tiles("gssic", "europe", 1, 20, rng)[0],
            bands.GSSIC_CHANNELS,
        ),
        "wrong_count": write_geotiff(d / "five.tif", s1grd_db()[:5], None),
        "bad_names": write_geotiff(d / "names.tif", s1grd_db()[:8], [f"band{i}" for i in range(8)]),
        "int32": write_geotiff(d / "int32.tif", s1grd_db().astype(np.int32), bands.S1GRD_RAW_BANDS),
        "nodata": write_geotiff(
            d / "nodata.tif", np.zeros((16, 24, 24), np.float32), bands.S1GRD_RAW_BANDS
        ),
        "small": write_geotiff(d / "small.tif", s1grd_db(side=8), bands.S1GRD_RAW_BANDS),
    }
    inf = s1grd_db()
    inf[0, 3, 3] = np.inf
    out["inf"] = write_geotiff(d / "inf.tif", inf, bands.S1GRD_RAW_BANDS)
    # Declares 16 x 6000 x 6000 float32 (2.3 GB) in a few kB: sparse tiles are never written.
    profile = {
        "driver": "GTiff",
        "width": 6000,
        "height": 6000,
        "count": 16,
        "dtype": "float32",
        "tiled": True,
        "compress": "deflate",
        "sparse_ok": True,
        "crs": "EPSG:4326",
        "transform": from_bounds(*BOUNDS, 6000, 6000),
    }
    with rasterio.open(d / "huge.tif", "w", **profile):
        pass
    out["huge"] = d / "huge.tif"
    scene = s1grd_db(side=100, seed=4)[:, :60, :100].copy()
    scene[:, :, 70:] = 0.0  # masked: grid columns 3 and 4 have no data
    out["scene"] = write_scene(d / "scene.tif", scene, bands.S1GRD_RAW_BANDS)
    return out


def write_scene(path: Path, data: np.ndarray, names: Sequence[str]) -> Path:
    """A (C, H, W) float32 scene in UTM 33N at 20 m pixels, bands described by ``names``."""
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype="float32",
        crs="EPSG:32633",
        transform=Affine(20.0, 0.0, 400_000.0, 0.0, -20.0, 4_800_000.0),
    ) as dst:
        dst.write(data.astype(np.float32))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return path


def post_file(url: str, path: Path, **data: str) -> requests.Response:
    with path.open("rb") as handle:
        return requests.post(url, files={"tile": (path.name, handle)}, data=data, timeout=30)


def test_readyz_livez_metrics(server: str) -> None:
    assert requests.get(f"{server}/readyz", timeout=5).status_code == 200
    assert requests.get(f"{server}/livez", timeout=5).status_code == 200
    assert "bentoml_service_request" in requests.get(f"{server}/metrics", timeout=5).text


def test_predict_s1grd_multipart(server: str, files: dict[str, Path]) -> None:
    response = post_file(f"{server}/predict", files["s1grd"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "tiny-s1grd-europe", "modality": "s1grd"}
    assert 0.0 <= body["interval"]["low"] <= body["vegetation_pct"] <= body["interval"]["high"]
    assert body["interval"]["coverage"] == pytest.approx(0.9)
    assert set(body["ood"]) == {
        "swd_by_region",
        "knn_distance_by_region",
        "region_p_values",
        "nearest_region",
        "plausible_regions",
        "score",
        "p_value",
        "unreliable",
        "unreliable_reasons",
    }
    assert body["ood"]["nearest_region"] in body["ood"]["plausible_regions"]
    assert body["ood"]["nearest_region"] == "europe" and body["ood"]["unreliable"] is False
    assert body["ood"]["unreliable_reasons"] == []
    assert "embedding" not in body


def test_predict_raw_body_with_embedding(server: str, files: dict[str, Path]) -> None:
    response = requests.post(
        f"{server}/predict?include_embedding=true",
        data=files["s1grd"].read_bytes(),
        headers={"Content-Type": "image/tiff"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["embedding"]) == 16


def test_predict_gssic_netcdf_and_geotiff(server: str, files: dict[str, Path]) -> None:
    netcdf = post_file(f"{server}/predict", files["gssic_nc"], modality="gssic")
    assert netcdf.status_code == 200, netcdf.text
    assert netcdf.json()["model"]["modality"] == "gssic"
    raw = requests.post(
        f"{server}/predict",
        data=files["gssic_tif"].read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["ood"]["nearest_region"] == "europe"


def test_predict_other_pixel_size(server: str, files: dict[str, Path]) -> None:
    small = post_file(f"{server}/predict", files["s1grd"]).json()
    large = post_file(f"{server}/predict", files["s1grd_40px"]).json()
    # Same statistics at 24 and 40 px: resampled to the same input, nearly the same answer.
    assert large["vegetation_pct"] == pytest.approx(small["vegetation_pct"], abs=2.0)


def test_predict_scene_json(server: str, files: dict[str, Path]) -> None:
    response = post_file(f"{server}/predict_scene", files["scene"])
    assert response.status_code == 200, response.text
    body = response.json()
    summary = body["summary"]
    assert summary["tile_count"] == len(body["tiles"]) == 9
    assert summary["grid"]["crs"] == "EPSG:32633"
    assert summary["grid"]["transform"] == pytest.approx(
        [20.0 * SOURCE_TILE_PX, 0.0, 400_000.0, 0.0, -20.0 * SOURCE_TILE_PX, 4_800_000.0]
    )
    assert set(summary["ood"]["swd_by_region"]) == {"europe", "china", "conus", "south_america"}
    assert summary["ood"]["nearest_region"] == "europe"
    assert set(summary["vegetation_pct"]) == {"mean", "p10", "p25", "p50", "p75", "p90"}
    tile = next(t for t in body["tiles"] if (t["row"], t["col"]) == (1, 0))
    assert tile["bounds"] == pytest.approx([400_000.0, 4_799_040.0, 400_480.0, 4_799_520.0])


def test_predict_scene_map(server: str, files: dict[str, Path]) -> None:
    response = post_file(f"{server}/predict_scene_map", files["scene"])
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "image/tiff"
    with (
        rasterio.open(files["scene"]) as src,
        MemoryFile(response.content) as memfile,
        memfile.open() as dst,
    ):
        assert dst.crs == src.crs
        assert dst.transform == src.transform @ Affine.scale(SOURCE_TILE_PX, SOURCE_TILE_PX)
        assert (dst.height, dst.width) == (
            math.ceil(src.height / SOURCE_TILE_PX),
            math.ceil(src.width / SOURCE_TILE_PX),
        )
        assert dst.descriptions == ("vegetation_pct", "ood_p_value", "unreliable")
        grid = dst.read()  # (3, 3, 5)
    assert np.isfinite(grid[:, :, :3]).all() and np.isnan(grid[:, :, 3:]).all()
    assert ((grid[0, :, :3] >= 0) & (grid[0, :, :3] <= 100)).all()
    assert set(np.unique(grid[2, :, :3])) <= {0.0, 1.0}


def test_two_band_scene_units_are_detected_once_or_declared(
    server: str, files: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    vv = rng.normal(-10.0, 1.0, (60, 100))
    db = np.stack([vv, vv - 7.0 + rng.normal(0.0, 0.5, vv.shape)])  # (2, 60, 100)
    scenes = {
        units: write_scene(tmp_path / f"{units}.tif", values, ["VV", "VH"])
        for units, values in (("db", db), ("power", 10.0 ** (db / 10.0)))
    }
    answers = {
        "db": post_file(f"{server}/predict_scene", scenes["db"]),
        "detected": post_file(f"{server}/predict_scene", scenes["power"]),
        "declared": post_file(f"{server}/predict_scene", scenes["power"], units="power"),
    }
    summaries = {}
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text[:300])
        summaries[name] = response.json()["summary"]
    assert (summaries["db"]["units"], summaries["db"]["units_source"]) == ("db", "detected")
    assert (summaries["detected"]["units"], summaries["detected"]["units_source"]) == (
        "power",
        "detected",
    )
    assert summaries["declared"]["units_source"] == "declared"
    means = [summary["vegetation_pct"]["mean"] for summary in summaries.values()]
    assert means == pytest.approx([means[0]] * 3, abs=1e-3)  # the same scene in every unit
    mapped = post_file(f"{server}/predict_scene_map", scenes["power"], units="power")
    assert mapped.status_code == 200, mapped.text[:300]
    wrong = post_file(f"{server}/predict_scene", files["scene"], units="power")
    assert wrong.status_code == 400
    assert "units=power applies to two-band VV/VH files" in wrong.json()["error"]


def test_model_card_get_and_post(server: str) -> None:
    card = requests.get(f"{server}/model_card", timeout=10)
    assert card.status_code == 200, card.text
    body = card.json()
    assert {b["modality"] for b in body["bundles"]} == {"s1grd", "gssic"}
    s1grd = next(b for b in body["bundles"] if b["modality"] == "s1grd")
    assert s1grd["band_names"] == list(bands.S1GRD_CHANNELS)
    assert s1grd["provider"] == "CPUExecutionProvider" and s1grd["ood"]["alpha"] == 0.05
    assert s1grd["ood"]["measured"]["false_flag_rate"] >= 0.0 and "europe" in s1grd["metrics"]
    limits = body["limits"]
    assert limits["tile_max_upload_mb"] == UPLOAD_CAP_MB and limits["sandbox"] is True
    assert limits["scene_max_upload_mb"] == SCENE_UPLOAD_CAP_MB
    assert requests.post(f"{server}/model_card", json={}, timeout=10).json() == body


def test_openapi_lists_endpoints(server: str) -> None:
    spec = requests.get(f"{server}/docs.json", timeout=10).json()
    for path in ("/predict", "/predict_scene", "/predict_scene_map", "/model_card"):
        assert "post" in spec["paths"][path], path
    for path in ("/readyz", "/livez", "/metrics"):
        assert path in spec["paths"]
    form = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["tile"]["format"] == "binary"
    assert requests.get(f"{server}/", timeout=10).status_code == 200  # Swagger UI


BAD_FILES = [
    ("not_a_raster", None, b"hello, this is text", "not a raster: expected a GeoTIFF"),
    ("corrupt_tiff", None, b"II*\x00" + b"\x07" * 200, "could not decode the raster"),
    ("wrong_band_count", "wrong_count", None, "wrong band count: expected 16 .* found 5 bands"),
    ("unrecognised_names", "bad_names", None, "unrecognised band names: expected VV and VH"),
    ("unsupported_dtype", "int32", None, "unsupported data type for S1GRD: .* found int32"),
    ("all_nodata", "nodata", None, "all pixels are nodata"),
    ("too_small", "small", None, "tile too small: expected at least 16 x 16 pixels, found 8 x 8"),
    ("too_large_dims", "huge", None, "tile too large: expected at most 4,000,000 pixels"),
    ("infinities", "inf", None, "non-finite values: expected finite values or NaN"),
]


@pytest.mark.parametrize(
    ("key", "content", "message"),
    [(key, content, message) for _, key, content, message in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_files_are_400(
    server: str, files: dict[str, Path], key: str | None, content: bytes | None, message: str
) -> None:
    data = files[key].read_bytes() if key else content
    assert data is not None
    for response in (
        requests.post(f"{server}/predict", files={"tile": ("x.tif", data)}, timeout=30),
        requests.post(
            f"{server}/predict", data=data, headers={"Content-Type": "image/tiff"}, timeout=30
        ),
    ):
        assert response.status_code == 400, response.text
        body = response.json()
        assert isinstance(body, dict) and list(body) == ["error"]
        assert re.search(message, body["error"]), body["error"]
        assert "/tmp" not in body["error"]


def test_truncated_tiff_is_400(server: str, files: dict[str, Path]) -> None:
    data = files["s1grd"].read_bytes()
    response = requests.post(
        f"{server}/predict", files={"tile": ("t.tif", data[: len(data) // 2])}, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("could not decode the raster")


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"files": {"file": ("t.tif", b"II*\x00")}}, 400, "unexpected field 'file'"),
        ({"data": {"modality": "s1grd"}, "files": {}}, 400, "unsupported Content-Type"),
        ({"files": {"modality": (None, "s1grd")}}, 400, "missing field 'tile'"),
        ({}, 400, "empty body: expected a GeoTIFF or NetCDF file"),
        ({"json": {"tile": "abc"}}, 400, "unsupported Content-Type 'application/json'"),
        (
            {"data": b"II*\x00", "headers": {"Content-Type": "text/plain"}},
            400,
            "unsupported Content-Type 'text/plain': expected multipart/form-data",
        ),
        (
            {"files": {"tile": ("t.tif", b"II*\x00")}, "data": {"modality": "radar"}},
            400,
            "unknown modality 'radar': expected one of s1grd, gssic",
        ),
        (
            {"files": {"tile": ("t.tif", b"II*\x00")}, "data": {"include_embedding": "maybe"}},
            400,
            "invalid include_embedding: expected true or false",
        ),
        ({"files": {"tile": (None, "t.tif")}}, 400, "field 'tile' holds text, not a file"),
        (
            {"data": b"x" * int(UPLOAD_CAP_MB * 1024 * 1024 + 1), "headers": {}},
            413,
            "upload too large: expected at most 1 MiB",
        ),
    ],
    ids=[
        "wrong_field",
        "urlencoded_form",
        "missing_field",
        "empty_body",
        "json",
        "text_plain",
        "unknown_modality",
        "bad_boolean",
        "text_instead_of_file",
        "over_cap",
    ],
)
def test_bad_requests(server: str, kwargs: dict, status: int, message: str) -> None:
    response = requests.post(f"{server}/predict", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_wrong_modality_and_scene_errors(server: str, files: dict[str, Path]) -> None:
    mismatch = post_file(f"{server}/predict", files["s1grd"], modality="gssic")
    assert mismatch.status_code == 400
    assert "expected a gssic tile, found s1grd bands" in mismatch.json()["error"]
    netcdf = post_file(f"{server}/predict_scene", files["gssic_nc"])
    assert netcdf.status_code == 400 and "scene must be a GeoTIFF" in netcdf.json()["error"]
    extra = post_file(f"{server}/predict_scene_map", files["scene"], include_embedding="true")
    assert extra.status_code == 400
    assert "unexpected field 'include_embedding'" in extra.json()["error"]


def test_netcdf_that_crashes_the_decoder_is_400(server: str, files: dict[str, Path]) -> None:
    data = bytearray(files["gssic_nc"].read_bytes())
    data[4487] = 57  # see tests/test_predictor.py: segfaults GDAL's netCDF driver
    response = requests.post(f"{server}/predict", files={"tile": ("c.nc", bytes(data))}, timeout=60)
    assert response.status_code == 400
    assert "crashed the decoder" in response.json()["error"]
    assert post_file(f"{server}/predict", files["gssic_nc"]).status_code == 200


def test_still_serving_after_bad_input_and_under_concurrency(
    server: str, files: dict[str, Path]
) -> None:
    requests.post(f"{server}/predict", data=b"\x00" * 64, timeout=30)
    data = files["s1grd"].read_bytes()

    def one(_: int) -> int:
        return requests.post(
            f"{server}/predict", data=data, headers={"Content-Type": "image/tiff"}, timeout=60
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(48)))
    assert statuses == [200] * 48
    assert requests.get(f"{server}/readyz", timeout=5).status_code == 200


@pytest.mark.slow
def test_bentoml_build_offline(tmp_path: Path) -> None:
    """``bentoml build`` packages code and bundles, with unlocked packages and no torch."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("sarveg", "serving"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "bentofile.yaml", project / "bentofile.yaml")
    build_bundles(project / "models")
    env = os.environ | {
        "BENTOML_HOME": str(tmp_path / "home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(project),
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    result = subprocess.run(
        [str(bentoml), "build", "--output", "tag"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    built = next((tmp_path / "home" / "bentos" / "sarveg").glob("*/bento.yaml")).parent
    assert (built / "src" / "models" / "tiny-s1grd-europe" / "bundle.json").is_file()
    assert (built / "src" / "serving" / "service.py").is_file()
    requirements = (built / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "torch" not in requirements
