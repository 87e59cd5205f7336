"""Reading the new region's labels: a ``sarveg select`` CSV or a folder of MODIS VCF rasters."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from tqdm import tqdm

from sarveg.errors import TileError
from sarveg.labels import read_label


def read_labels(path: Path) -> dict[str, float]:
    """Labels by chip identifier from a CSV (``identifier,vegetation_pct``) or MODIS rasters.

    Raises:
        ValueError: a missing file or column, a value that is not a percentage, a duplicate.
    """
    labels: dict[str, float] = {}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise ValueError(f"expected MODIS VCF GeoTIFFs in {path}, found none")
        for file in tqdm(files, desc="read labels", leave=False):
            try:
                value = read_label(file)
            except TileError as error:
                raise ValueError(f"{file}: {error}") from error
            if math.isfinite(value):  # a chip with no valid MODIS pixel has no label
                labels[file.stem] = value
        return labels
    if not path.is_file():
        raise ValueError(
            f"expected a labels CSV or a folder of MODIS rasters at {path}, found none"
        )
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"identifier", "vegetation_pct"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: expected columns identifier,vegetation_pct, found {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            text = (row["vegetation_pct"] or "").strip()
            if not text:  # a tile sarveg select proposed but nobody labelled
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"{path}:{line}: expected vegetation_pct a number in 0..100, found {text!r}"
                ) from None
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{path}:{line}: expected vegetation_pct in 0..100, found {value}")
            identifier = row["identifier"].strip()
            if identifier in labels:
                raise ValueError(
                    f"{path}:{line}: expected one label per tile, found {identifier} twice"
                )
            labels[identifier] = value
    return labels
