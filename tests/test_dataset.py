"""Indexing a geetiles layout and computing MODIS labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sarveg.dataset import index_dataset, read_index_csv, region_of, write_index_csv
from sarveg.labels import read_label, vegetation_pct_from_codes
from testkit.tiles import write_geotiff, write_layout

IDS = [f"{i:013x}" for i in range(1, 7)]


def test_vegetation_pct_codes() -> None:
    codes = np.array([[10, 30], [200, 253]], np.uint8)  # water counts 0 %, fill is nodata
    assert vegetation_pct_from_codes(codes) == pytest.approx((10 + 30 + 0) / 3)
    assert math.isnan(vegetation_pct_from_codes(np.full((2, 2), 253, np.uint8)))


def test_read_label_needs_the_year_band(tmp_path: Path) -> None:
    codes = np.full((1, 4, 4), 50, np.uint8)
    path = write_geotiff(tmp_path / "l.tif", codes, ["Percent_Tree_Cover_2019"])
    assert read_label(path, 2019) == 50
    with pytest.raises(ValueError, match="expected a MODIS band named Percent_Tree_Cover_2020"):
        read_label(path, 2020)


def test_index_layout_with_gaps(tmp_path: Path) -> None:
    splits = dict(zip(IDS[:5], ["train", "train", "train", "test", "val"], strict=True))
    labels = {i: np.full((4, 4), 10 * n, np.uint8) for n, i in enumerate(IDS[:4])}
    labels[IDS[0]][0, 0] = 253  # fill pixel must not count
    labels[IDS[1]][:2] = 200  # water counts as 0 %
    write_layout(tmp_path, "europe", IDS, splits, labels, skip_tiles=(IDS[2],))
    # An unreadable tile: right name, not a raster.
    bad = next(tmp_path.glob("*/s1grd-2020")) / f"{IDS[3]}.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.warns(UserWarning, match=r"skipped .*1 missing tile.*1 no split.*1 unreadable"):
        records = index_dataset(tmp_path, "s1grd")
    assert [r.identifier for r in records] == [IDS[0], IDS[1], IDS[4]]
    by_id = {r.identifier: r for r in records}
    assert by_id[IDS[0]].vegetation_pct == 0.0
    assert by_id[IDS[1]].vegetation_pct == pytest.approx(10 * 8 / 16)
    assert math.isnan(by_id[IDS[4]].vegetation_pct)  # no label file: kept, unlabelled
    assert by_id[IDS[4]].split == "val" and by_id[IDS[0]].region == "europe"
    assert by_id[IDS[0]].lon == pytest.approx(10.02) and by_id[IDS[0]].lat == pytest.approx(47.02)
    csv_path = tmp_path / "index.csv"
    write_index_csv(records, csv_path)
    again = read_index_csv(csv_path)
    assert [r.identifier for r in again] == [r.identifier for r in records]
    assert again[1].vegetation_pct == records[1].vegetation_pct


def test_index_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no geetiles layout"):
        index_dataset(tmp_path)
    write_layout(tmp_path, "china", IDS[:1], {IDS[0]: "train"}, {})
    with pytest.raises(ValueError, match=r"regions \['mars'\] not found.*available \['china'\]"):
        index_dataset(tmp_path, regions=["mars"])
    assert region_of(next(tmp_path.glob("*.geojson"))) == "china"
