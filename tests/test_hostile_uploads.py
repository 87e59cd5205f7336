"""Hostile and odd uploads: no server file read, no memory bomb, no 500 (synthetic tiles).

Each class is tried in-process against a :class:`Predictor` (decoding in its child processes)
and over HTTP against the session's real ``bentoml serve`` process.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from sarveg import TileError, bands, read_tile
from serving.decoding import DecodeLimits, DecoderPool, ModelSpec
from serving.decoding.jobs import TileRequest
from serving.predictor import Predictor
from serving.runtime import CPU
from testkit import hostile as hf
from testkit.bundles import INPUT_SIZE, SOURCE_TILE_PX, build_bundles
from testkit.tiles import coherence_x100, s1grd_db, write_geotiff
from tests.conftest import Served

SPECS = {
    "s1grd": ModelSpec(INPUT_SIZE, SOURCE_TILE_PX),
    "gssic": ModelSpec(INPUT_SIZE, SOURCE_TILE_PX),
}
# The server at rest holds the model sessions, the reference sets and two decoding children; a
# bomb or a fuzz run must not add more than this to its whole process tree.
RSS_GROWTH_BOUND_MB = 150.0


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    root = tmp_path_factory.mktemp("models")
    build_bundles(root)
    predictor = Predictor.from_paths(
        str(root), providers=[CPU], intra_op_threads=1, limits=DecodeLimits(workers=2)
    )
    yield predictor
    predictor.close()


@pytest.fixture(scope="module")
def server_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files on the 'server' side that hostile uploads point at."""
    root = tmp_path_factory.mktemp("server-side")
    return {
        "raw": hf.write_marker_file(root / "secret.bin"),
        "hdf5": hf.write_marker_hdf5(root / "secret.h5", (4, 4, hf.SIDE, hf.SIDE)),
    }


def file_readers(server_files: dict[str, Path]) -> dict[str, bytes]:
    return {
        "external_storage": hf.external_storage_netcdf(server_files["raw"]),
        "virtual_dataset": hf.virtual_dataset_netcdf(server_files["hdf5"]),
        "external_link": hf.external_link_netcdf(server_files["hdf5"]),
        "soft_link": hf.soft_link_netcdf(),
        "lzf_filter": hf.lzf_filter_netcdf(),
    }


def leaks_marker(text: str) -> bool:
    """Whether an answer shows the marker (coherence 2.0, or the server file's path)."""
    return "[2, 2]" in text or "secret" in text or "2.0" in text


def test_the_file_read_attack_is_real(server_files: dict[str, Path]) -> None:
    # Without the pre-scan, GDAL's netCDF driver decodes the server file and says so.
    for name in ("external_storage", "virtual_dataset"):
        data = file_readers(server_files)[name]
        with pytest.raises(TileError, match=r"found \[2, 2\]"):
            read_tile(data)


@pytest.mark.parametrize(
    "name", ["external_storage", "virtual_dataset", "external_link", "soft_link", "lzf_filter"]
)
def test_files_pointing_outside_are_refused(
    predictor: Predictor, server_files: dict[str, Path], name: str
) -> None:
    data = file_readers(server_files)[name]
    with pytest.raises(
        TileError, match="refused NetCDF4/HDF5 file: expected a self-contained"
    ) as e:
        predictor.predict(data, include_embedding=True)
    assert not leaks_marker(str(e.value))
    found = {
        "external_storage": "found external storage for '/coherence'",
        "virtual_dataset": "found a virtual dataset ('/coherence')",
        "external_link": "found an external link ('/coherence')",
        "soft_link": "found a soft link ('/alias')",
        "lzf_filter": "found filter 32000 on '/coherence'",
    }
    assert str(e.value).endswith(found[name])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (hf.sparse_bomb(), r"tile too large: expected at most 4,000,000 pixels .* 2048 x 2048"),
        (hf.cint16_tiff(), "unsupported data type for S1GRD.*found complex_int16"),
        (hf.gssic_netcdf4(deltadays=np.array([12, 24, np.nan, 48.0])), "found 'nan'"),
        (hf.gssic_netcdf4(deltadays=np.array([12.9, 24, 36, 48.0])), "whole days.*'12.9'"),
        (hf.gssic_netcdf4(extra_dim=2), r"found coherence\(orbit, season, deltadays, y, x\)"),
    ],
    ids=["sparse_bomb", "cint16", "nan_deltadays", "fractional_deltadays", "extra_dimension"],
)
def test_odd_tiles_are_refused(predictor: Predictor, data: bytes, match: str) -> None:
    with pytest.raises(TileError, match=match):
        predictor.predict(data)


def test_scene_windows_get_the_tile_checks(predictor: Predictor) -> None:
    side = 3 * SOURCE_TILE_PX  # a 3 x 3 grid
    with pytest.raises(TileError, match=r"no usable tile.*\(9 sigma0 does not look like dB\)"):
        predictor.predict_scene(hf.s1grd_scene(np.full(1, 0.05), side))  # linear power
    with pytest.raises(TileError, match=r"no usable tile.*\(9 sigma0 out of range\)"):
        predictor.predict_scene(hf.s1grd_scene(np.full(1, 1e4), side))
    # Left column in dB, the rest linear power: 3 windows predicted, 6 skipped with the reason.
    values = np.full((16, side, side), 0.05, np.float32)
    values[:, :, :SOURCE_TILE_PX] = s1grd_db(side=side)[:, :, :SOURCE_TILE_PX]
    answer = predictor.predict_scene(hf.s1grd_scene(values, side))
    assert answer.summary.tile_count == 3 and {t.col for t in answer.tiles} == {0}
    assert answer.summary.skipped_tile_count == 6 == len(answer.skipped)
    assert answer.summary.skipped_by_reason == {"sigma0 does not look like dB": 6}
    assert all("linear power?" in s.reason and s.col > 0 for s in answer.skipped)


def test_bounds_use_all_four_corners(tmp_path: Path) -> None:
    from affine import Affine

    from sarveg.tiles import transformed_bounds

    rotated = Affine.rotation(30) * Affine.scale(10, -10)
    left, bottom, right, top = transformed_bounds(rotated, 20, 20)
    corners = [rotated * (x, y) for x in (0, 20) for y in (0, 20)]
    assert left == min(x for x, _ in corners) and top == max(y for _, y in corners)
    two = [rotated * (0, 0), rotated * (20, 20)]  # the old rule: wrong when rotated
    assert left < min(x for x, _ in two) or top > max(y for _, y in two)
    tile = read_tile(write_geotiff(tmp_path / "t.tif", s1grd_db(), bands.S1GRD_RAW_BANDS))
    assert tile.bounds == transformed_bounds(tile.transform, *tile.array.shape[1:])


# -- the decoding children --------------------------------------------------------------------


def s1grd_bytes(side: int, value: float | None = None) -> bytes:
    data = s1grd_db(side=side) if value is None else np.full((16, side, side), value, np.float32)
    buffer = io.BytesIO()
    from rasterio.io import MemoryFile

    with MemoryFile() as memfile:
        profile = {"driver": "GTiff", "width": side, "height": side, "count": 16}
        with memfile.open(**profile, dtype="float32", compress="deflate", tiled=True) as dst:
            dst.write(data)
            for i, name in enumerate(bands.S1GRD_RAW_BANDS, start=1):
                dst.set_band_description(i, name)
        buffer.write(memfile.read())
    return buffer.getvalue()


def test_memory_limit_costs_a_child_not_the_server() -> None:
    pool = DecoderPool(DecodeLimits(workers=1, memory_mb=64))
    try:
        big = s1grd_bytes(1800, value=-12.0)  # small upload, 100 MB of decoded bands
        assert len(big) < 2_000_000
        with pytest.raises(TileError, match="could not decode|too large to decode|crashed"):
            pool.prepare_tile(TileRequest(big, None, SPECS, 4_000_000))
        ok = pool.prepare_tile(TileRequest(s1grd_bytes(24), None, SPECS, 4_000_000))
        assert ok.modality == "s1grd" and ok.array.shape == (12, INPUT_SIZE, INPUT_SIZE)
    finally:
        pool.close()


def test_timeout_kills_and_replaces_the_child() -> None:
    pool = DecoderPool(DecodeLimits(workers=1, timeout_s=0.001))
    try:
        first = pool.pids()
        with pytest.raises(TileError, match=r"expected a file that decodes within 0.001 s"):
            pool.prepare_tile(TileRequest(s1grd_bytes(1000), None, SPECS, 4_000_000))
        assert pool.pids() and pool.pids() != first  # a fresh child took its place
    finally:
        pool.close()


def test_dead_child_is_replaced() -> None:
    pool = DecoderPool(DecodeLimits(workers=2))
    try:
        for pid in pool.pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for _ in range(3):  # each request finds a dead child once, then gets a fresh one
            ok = pool.prepare_tile(TileRequest(s1grd_bytes(24), None, SPECS, 4_000_000))
            assert ok.array.shape == (12, INPUT_SIZE, INPUT_SIZE)
    finally:
        pool.close()


# -- fuzzing ----------------------------------------------------------------------------------


def seeds() -> list[bytes]:
    """Valid tiles of both modalities and every encoding the readers take."""
    from rasterio.io import MemoryFile

    out = [s1grd_bytes(24), hf.gssic_netcdf4(side=24)]
    coherence = coherence_x100(side=24)[:, :2].transpose(1, 0, 2, 3).reshape(8, 24, 24)
    for data, names in [
        (s1grd_db(side=24), bands.S1GRD_RAW_BANDS),
        (np.round(s1grd_db(side=24)).astype(np.int16).view(np.uint16), bands.S1GRD_RAW_BANDS),
        (np.clip((s1grd_db(side=24) + 30) * 8.5, 1, 255).astype(np.uint8), None),
        (coherence, bands.GSSIC_CHANNELS),
    ]:
        with MemoryFile() as memfile:
            count = data.shape[0]
            with memfile.open(
                driver="GTiff", width=24, height=24, count=count, dtype=data.dtype.name
            ) as dst:
                dst.write(data)
                for i, name in enumerate(names or (), start=1):
                    dst.set_band_description(i, name)
            out.append(memfile.read())
    return out


def fuzz_cases(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    valid = seeds()
    cases = []
    for i in range(n):
        if i % 10 == 9:
            cases.append(hf.odd_geotiff(rng))
        else:
            cases.append(hf.mutate(valid[i % len(valid)], rng))
    return cases


def test_fuzz_in_process(predictor: Predictor) -> None:
    answered = refused = 0
    for data in fuzz_cases(600, seed=1):
        try:
            predictor.predict(data)
            answered += 1
        except TileError as error:
            assert "/tmp" not in str(error) and "vsimem" not in str(error)
            refused += 1
    assert answered + refused == 600 and refused > 300
    # the children survived or were replaced: a valid tile still decodes
    assert predictor.predict(s1grd_bytes(24)).model.modality == "s1grd"


# -- over HTTP --------------------------------------------------------------------------------


def post(served: Served, data: bytes, route: str = "/predict", **fields: str) -> requests.Response:
    return requests.post(
        f"{served.url}{route}", files={"tile": ("x.bin", data)}, data=fields, timeout=120
    )


def test_http_attacks(served: Served, server_files: dict[str, Path]) -> None:
    for name, data in file_readers(server_files).items():
        answer = post(served, data, include_embedding="true")
        assert answer.status_code == 400, (name, answer.text)
        assert set(answer.json()) == {"error"} and not leaks_marker(answer.text), name
    for data, needle in [
        (hf.cint16_tiff(), "complex_int16"),
        (hf.gssic_netcdf4(deltadays=np.array([12, 24, np.nan, 48.0])), "deltadays"),
        (hf.gssic_netcdf4(extra_dim=2), "orbit"),
    ]:
        answer = post(served, data)
        assert answer.status_code == 400 and needle in answer.json()["error"]
    side = 3 * SOURCE_TILE_PX
    answer = post(served, hf.s1grd_scene(np.full(1, 0.05), side), "/predict_scene")
    assert answer.status_code == 400 and "sigma0 does not look like dB" in answer.json()["error"]


def test_http_bomb_refused_before_decoding(served: Served) -> None:
    requests.get(f"{served.url}/livez", timeout=10)
    at_rest = served.rss_mb()
    bomb = hf.sparse_bomb()
    assert len(bomb) < 5_000
    for _ in range(8):
        answer = post(served, bomb)
        assert answer.status_code == 400 and "2048 x 2048" in answer.json()["error"]
    scene_bomb = hf.sparse_bomb(side=20_000, count=16)  # 400 M pixels: over the scene budget
    answer = post(served, scene_bomb, "/predict_scene")
    assert answer.status_code == 400 and "scene too large" in answer.json()["error"]
    assert served.rss_mb() - at_rest < RSS_GROWTH_BOUND_MB


def test_http_fuzz(served: Served) -> None:
    at_rest = served.rss_mb()
    statuses = []
    for data in fuzz_cases(120, seed=2):
        statuses.append(post(served, data).status_code)
    assert all(status < 500 for status in statuses), statuses
    assert statuses.count(200) + statuses.count(400) == len(statuses)
    assert requests.get(f"{served.url}/livez", timeout=10).status_code == 200
    assert served.rss_mb() - at_rest < RSS_GROWTH_BOUND_MB
    assert "Traceback" not in served.log.read_text()


def test_guard_sees_routes_behind_a_root_path() -> None:
    import asyncio

    from serving.uploads import UploadGuard, stashed_upload

    seen: list[dict] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        seen.append(scope)

    guard = UploadGuard(app, {"/predict": frozenset()}, {"/predict": 1024})
    body = s1grd_bytes(16)[:512]  # the guard only checks the transport, not the raster
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/predict",
        "root_path": "/api",
        "headers": [(b"content-type", b"image/tiff"), (b"content-length", str(len(body)).encode())],
        "query_string": b"",
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    asyncio.run(guard(scope, receive, None))
    upload = stashed_upload(seen[0])
    assert upload is not None and upload.data == body  # parsed and stashed, not passed through
