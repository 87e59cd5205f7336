"""``sarveg composite`` on tiny generated dated acquisitions with known seasonal medians."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarveg import bands, read_tile
from sarveg.composite import main

SIDE = 20
TRANSFORM = from_origin(600_000, 5_200_000, 10, 10)
# (date, VV dB): two acquisitions a season; VH = VV - 6 dB.
DATES = {
    "20200110": -9.0,
    "20200220": -11.0,
    "20200405": -12.0,
    "20200512": -14.0,
    "20200703": -8.0,
    "20200819": -10.0,
    "20201002": -13.0,
    "20201114": -15.0,
}


def write(path: Path, layers: list[np.ndarray], names: list[str], **tags: str) -> Path:
    profile = {
        "driver": "GTiff",
        "width": SIDE,
        "height": SIDE,
        "count": len(layers),
        "dtype": "float32",
        "crs": "EPSG:32632",
        "transform": TRANSFORM,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(layers).astype(np.float32))
        for index, name in enumerate(names, start=1):
            dst.set_band_description(index, name)
        dst.update_tags(**tags)
    return path


def power(db: float) -> np.ndarray:
    return np.full((SIDE, SIDE), 10 ** (db / 10), np.float32)


@pytest.fixture
def acquisitions(tmp_path: Path) -> Path:
    folder = tmp_path / "s1"
    folder.mkdir()
    for date, vv in DATES.items():
        write(folder / f"S1A_IW_{date}T053000_x.tif", [power(vv), power(vv - 6)], ["VV", "VH"])
    # A descending summer pass, known by its tag; and one acquisition as separate VV / VH files.
    write(
        folder / "S1B_20200715_des.tif",
        [power(-20.0), power(-26.0)],
        ["VV", "VH"],
        orbitProperties_pass="DESCENDING",
    )
    write(folder / "S1B_20200720_VV.tif", [power(-9.0)], [""])
    write(folder / "S1B_20200720_VH.tif", [power(-15.0)], [""])
    return folder


def test_seasonal_medians_in_the_geetiles_layout(acquisitions: Path, tmp_path: Path) -> None:
    out = tmp_path / "tile.tif"
    assert main([str(acquisitions), "--out", str(out), "--no-progress"]) == 0
    with rasterio.open(out) as dst:
        names = [d.lower() for d in dst.descriptions]
        data = {n: dst.read(i + 1) for i, n in enumerate(names)}
        assert names == list(bands.S1GRD_RAW_BANDS) and dst.crs.to_epsg() == 32632
    expected_vv = {"winter": -10.0, "spring": -13.0, "summer": -9.0, "fall": -14.0}  # medians
    for season, vv in expected_vv.items():
        np.testing.assert_allclose(data[f"{season}_vvasc"], vv, atol=1e-4)
        np.testing.assert_allclose(data[f"{season}_vhasc"], vv - 6, atol=1e-4)
    np.testing.assert_allclose(data["summer_vvdes"], -20.0, atol=1e-4)  # the descending pass
    assert np.all(data["winter_vvdes"] == 0.0)  # no descending winter pass: the geetiles mask
    tile = read_tile(out)
    assert tile.input.kind == "seasonal_composite" and tile.array.shape == (12, SIDE, SIDE)


def test_refusals(acquisitions: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (acquisitions / "S1B_20200720_VH.tif").unlink()
    assert main([str(acquisitions), "--out", str(tmp_path / "a.tif"), "--no-progress"]) == 1
    assert (
        "missing polarisation: expected VV and VH files of each acquisition, found "
        "S1B_20200720_VV.tif without its VH file" in capsys.readouterr().err
    )
    (acquisitions / "S1B_20200720_VV.tif").unlink()
    for date in ("20200405", "20200512"):
        (acquisitions / f"S1A_IW_{date}T053000_x.tif").unlink()
    assert main([str(acquisitions), "--out", str(tmp_path / "b.tif"), "--no-progress"]) == 1
    assert "missing seasons: expected ascending acquisitions in every season" in (
        capsys.readouterr().err
    )
    filled = tmp_path / "c.tif"
    args = [str(acquisitions), "--out", str(filled), "--no-progress", "--fill-missing-seasons"]
    assert main(args) == 0
    with rasterio.open(filled) as dst:
        assert "spring<-winter" in dst.tags()["filled_seasons"]
    undated = write(tmp_path / "scene.tif", [power(-9.0), power(-15.0)], ["VV", "VH"])
    assert main([str(undated), "--out", str(tmp_path / "d.tif"), "--no-progress"]) == 1
    assert "expected an acquisition date" in capsys.readouterr().err


def test_acquisitions_in_another_crs_are_put_on_the_grid(tmp_path: Path) -> None:
    # The same ground in EPSG:4326 lands on the first file's UTM grid.
    first = write(tmp_path / "a_20200110.tif", [power(-9.0), power(-15.0)], ["VV", "VH"])
    with rasterio.open(first) as src:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    geographic = tmp_path / "b_20200115.tif"
    profile = {
        "driver": "GTiff",
        "width": 40,
        "height": 40,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:4326",
        "transform": rasterio.transform.from_bounds(west, south, east, north, 40, 40),
    }
    with rasterio.open(geographic, "w", **profile) as dst:
        dst.write(np.stack([np.full((40, 40), 10**-1.1), np.full((40, 40), 10**-1.7)]))
        dst.descriptions = ("VV", "VH")
    out = tmp_path / "winter.tif"
    assert (
        main(
            [
                str(first),
                str(geographic),
                "--out",
                str(out),
                "--no-progress",
                "--fill-missing-seasons",
            ]
        )
        == 0
    )
    with rasterio.open(out) as dst:
        winter_vv = dst.read(1)
    inner = winter_vv[2:-2, 2:-2]
    np.testing.assert_allclose(inner, -10.0, atol=1e-3)  # median of -9 and -11 dB
