"""More real BigEarthNet patches: the LMDB subsets shipped in the ``configilm`` wheel on PyPI.

``configilm`` 0.7.1 (MIT) ships, for its own tests, two small subsets of the BigEarthNet LMDB
archives as ``extra/mock_data``: 30 BigEarthNet v1 patches (pickled ``BigEarthNet_S1_S2_Patch``
records of ``bigearthnet-patch-interface``, keyed by Sentinel-2 name) and 24 BigEarthNet v2
(reBEN) patches (``safetensors`` records of bands, keyed by Sentinel-1 and Sentinel-2 name, with a
``metadata.parquet`` of labels and countries). Both are real Sentinel-1 GRD patches (VV, VH in dB,
120 x 120 at 10 m) with their Sentinel-2 L2A patch and CORINE labels; the v1 patches' Sentinel-1
names, countries and seasons come from ``s1_s2_name_country_season.csv`` of ``bigearthnet-common``.

:func:`configilm_patches` writes each patch once as GeoTIFFs into the data cache, in the layout of
the BigEarthNet-S1 example folders, so that :class:`testkit.real.RealPatch` reads them unchanged.
The records carry no georeference: the UTM zone is the real one (from the Sentinel-2 tile in the
Sentinel-1 name) and the pixel size is the real 10 m, but the position inside the zone is nominal.
The v1 records are pickles: they are read with an unpickler that only builds numpy arrays and plain
records, and refuses any other class.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

PACKAGE = "configilm==0.7.1"
MOCK_DATA = "configilm/extra/mock_data/"
V1_LMDB = MOCK_DATA + "BENv1/BigEarthNetEncoded.lmdb/"
V1_SPLITS = tuple(MOCK_DATA + f"BENv1/{split}.csv" for split in ("train", "val", "test"))
V2_LMDB = MOCK_DATA + "BENv2/BigEarthNet-V2-LMDB/"
V2_METADATA = (
    MOCK_DATA + "BENv2/metadata.parquet",
    MOCK_DATA + "BENv2/metadata_for_patches_with_snow_cloud_or_shadow.parquet",
)
PIXEL_M = 10.0
PATCH_PX = 120
# Position inside the UTM zone: nominal (the records carry none), one patch width per index,
# so that neighbouring patches of one Sentinel-2 tile sit side by side.
NOMINAL_ORIGIN = (300_000.0, 7_000_000.0)
S1_NAME = re.compile(r"^S1[AB]_IW_GRDH_1SDV_(\d{8}T\d{6})_(\d{2})([C-X])[A-Z]{2}_(\d+)_(\d+)$")
# The only globals the v1 pickles may name: numpy arrays and the patch-interface records.
NUMPY_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}
RECORD_MODULE = "bigearthnet_patch_interface."


class Record:
    """A stand-in for a ``bigearthnet-patch-interface`` class: keeps the pickled state only."""

    state: dict

    def __setstate__(self, state: dict) -> None:
        self.state = state


class RecordUnpickler(pickle.Unpickler):
    """Builds numpy arrays and ``Record`` objects; refuses every other global."""

    def find_class(self, module: str, name: str) -> type:
        """The class a pickle names, if it is one of the allowed ones.

        Raises:
            pickle.UnpicklingError: any other global (e.g. ``os.system``).
        """
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module.startswith(RECORD_MODULE):
            return Record
        raise pickle.UnpicklingError(f"refusing {module}.{name}: expected numpy or a BEN record")


def configilm_patches(root: Path, name_table_wheel: Path) -> list[Path]:
    """The configilm BigEarthNet patches as example-layout folders, written on first use.

    Args:
        root: cache folder; ``root/configilm`` receives the wheel, the LMDB files and the folders.
        name_table_wheel: the ``bigearthnet-common`` wheel (for the v1 Sentinel-1 names).

    Returns:
        One Sentinel-1 folder per patch (``*_VV.tif``, ``*_VH.tif``, ``*_labels_metadata.json``),
        sorted; the Sentinel-2 folders are beside them under ``root/configilm/S2``.

    Raises:
        RuntimeError: pip could not download the wheel.
    """
    from testkit.real import download_wheel, name_table

    base = root / "configilm"
    done = base / "S1" / ".complete"
    if not done.exists():
        wheel = download_wheel(PACKAGE, base / "wheel")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith((V1_LMDB, V2_LMDB)) or member in V1_SPLITS + V2_METADATA:
                    target = base / "lmdb" / member.removeprefix(MOCK_DATA)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
        names = {row[1]: row for row in name_table(name_table_wheel).values()}
        for record in [*read_v1(base / "lmdb", names), *read_v2(base / "lmdb")]:
            write_patch(base, record)
        done.touch()
    return sorted(p for p in (base / "S1").iterdir() if p.is_dir())


def read_v1(folder: Path, names: dict[str, list[str]]) -> list[dict]:
    """The BigEarthNet v1 records: bands in dB / reflectance, 43-class labels, names."""
    import lmdb

    keys = [
        k
        for split in V1_SPLITS
        for k in (folder / split.removeprefix(MOCK_DATA)).read_text().split()
    ]
    env = lmdb.open(str(folder / "BENv1/BigEarthNetEncoded.lmdb"), readonly=True, lock=False)
    records = []
    with env.begin() as txn:
        for s2_name in dict.fromkeys(keys):
            patch = RecordUnpickler(io.BytesIO(txn.get(s2_name.encode()))).load().state
            s1, s2 = patch["s1_patch"].state, patch["s2_patch"].state
            s1_name, _, country, _ = names[s2_name]
            records.append(
                {
                    "s1_name": s1_name,
                    "s2_name": s2_name,
                    "country": country,
                    "labels": list(patch["labels"]),
                    "vv": band(s1["bandVV"]),
                    "vh": band(s1["bandVH"]),
                    "b04": band(s2["band04"]),
                    "b08": band(s2["band08"]),
                    "source": "configilm BENv1",
                }
            )
    env.close()
    return records


def band(record: Record) -> np.ndarray:
    """The array of one pickled band record."""
    return np.asarray(record.state["__dict__"]["data"])


def read_v2(folder: Path) -> list[dict]:
    """The BigEarthNet v2 records: bands, 19-class labels, countries."""
    import lmdb
    import pyarrow.parquet as pq
    from safetensors.numpy import load

    rows = {}
    for table in V2_METADATA:
        for row in pq.read_table(folder / table.removeprefix(MOCK_DATA)).to_pylist():
            rows.setdefault(row["s1_name"], row)
    env = lmdb.open(str(folder / "BENv2/BigEarthNet-V2-LMDB"), readonly=True, lock=False)
    records = []
    with env.begin() as txn:
        for s1_name, row in rows.items():
            s1, s2 = load(txn.get(s1_name.encode())), load(txn.get(row["patch_id"].encode()))
            records.append(
                {
                    "s1_name": s1_name,
                    "s2_name": row["patch_id"],
                    "country": row["country"],
                    "seasonal_snow": bool(row["contains_seasonal_snow"]),
                    "labels": list(row["labels"]),
                    "vv": s1["VV"],
                    "vh": s1["VH"],
                    "b04": s2["B04"],
                    "b08": s2["B08"],
                    "source": "configilm BENv2",
                }
            )
    env.close()
    return records


def write_patch(base: Path, record: dict) -> None:
    """One record as an example-layout Sentinel-1 folder and its Sentinel-2 folder."""
    match = S1_NAME.match(record["s1_name"])
    if match is None:
        raise ValueError(f"expected a Sentinel-1 GRD patch name, got {record['s1_name']!r}")
    # BigEarthNet names end in column then row (checked on adjacent patches' Sentinel-2 edges).
    stamp, zone, band_letter, col, row = match.groups()
    north = band_letter >= "N"
    profile = {
        "driver": "GTiff",
        "height": PATCH_PX,
        "width": PATCH_PX,
        "count": 1,
        "crs": f"EPSG:{32600 + int(zone) if north else 32700 + int(zone)}",
        "transform": from_origin(
            NOMINAL_ORIGIN[0] + int(col) * PATCH_PX * PIXEL_M,
            NOMINAL_ORIGIN[1] - int(row) * PATCH_PX * PIXEL_M,
            PIXEL_M,
            PIXEL_M,
        ),
    }
    s1_dir, s2_dir = base / "S1" / record["s1_name"], base / "S2" / record["s2_name"]
    for folder, layers in (
        (s1_dir, {"VV": record["vv"], "VH": record["vh"]}),
        (s2_dir, {"B04": record["b04"], "B08": record["b08"]}),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        for name, values in layers.items():
            if values.shape != (PATCH_PX, PATCH_PX):
                raise ValueError(f"{folder.name} {name}: expected 120 x 120, got {values.shape}")
            dtype = "float32" if folder is s1_dir else "uint16"
            with rasterio.open(
                folder / f"{folder.name}_{name}.tif", "w", **profile, dtype=dtype
            ) as dst:
                dst.write(values.astype(dtype), 1)
    acquired = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"
    metadata = {
        "labels": record["labels"],
        "acquisition_time": acquired,
        "corresponding_s2_patch": record["s2_name"],
        "country": record["country"],
        "source": record["source"],
        "seasonal_snow": record.get("seasonal_snow", False),
    }
    (s1_dir / f"{s1_dir.name}_labels_metadata.json").write_text(json.dumps(metadata, indent=1))
