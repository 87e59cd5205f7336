"""Indexing a geetiles-layout folder into a table of tiles with region, split and label.

Layout, per area of interest ``aoi``::

    DIR/{aoi}_partitions_{name}_{hash}.geojson      chips: identifier, area_km2, geometry
    DIR/{stem}_splits*.csv                          identifier,split (train|val|test)
    DIR/{stem}/{dataset}/{identifier}.tif | .nc     one tile per chip and dataset
    DIR/{stem}/modis*/{identifier}.tif              MODIS VCF labels (Percent_Tree_Cover_{year})

``stem`` is the GeoJSON file name without extension; the region of a tile is its ``aoi``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tqdm import tqdm

from sarveg.bands import MODALITIES
from sarveg.errors import TileError
from sarveg.labels import DEFAULT_LABEL_YEAR, read_label
from sarveg.tiles import NETCDF_MAGICS, TIFF_MAGICS, check_modality

SPLITS = ("train", "val", "test")
PARTITIONS_MARKER = "_partitions_"
TILE_SUFFIXES = (".tif", ".tiff", ".nc")


@dataclass(frozen=True)
class TileRecord:
    """One indexed tile.

    Attributes:
        identifier: the chip identifier (13 hex digits in geetiles).
        region: the area of interest the chip belongs to.
        split: ``"train"``, ``"val"`` or ``"test"``.
        path: the tile file for the indexed modality.
        vegetation_pct: mean MODIS tree cover 0..100, NaN when the chip has no valid label.
        lon: chip centroid longitude (degrees).
        lat: chip centroid latitude (degrees).

    """

    identifier: str
    region: str
    split: str
    path: Path
    vegetation_pct: float
    lon: float
    lat: float


def find_partitions(root: str | Path) -> list[Path]:
    """Return the partition GeoJSON files under ``root``, sorted."""
    return sorted(Path(root).glob(f"*{PARTITIONS_MARKER}*.geojson"))


def region_of(partitions: Path) -> str:
    """The area-of-interest name of a partitions file (text before ``_partitions_``)."""
    return partitions.name.split(PARTITIONS_MARKER)[0]


def ring_centroid(ring: list[list[float]]) -> tuple[float, float]:
    """Area centroid of a closed lon/lat ring (shoelace), or the vertex mean if degenerate."""
    area2 = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True):
        cross = x0 * y1 - x1 * y0
        area2 += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(area2) < 1e-18:
        xs, ys = zip(*ring, strict=True)
        return float(sum(xs) / len(xs)), float(sum(ys) / len(ys))
    return cx / (3.0 * area2), cy / (3.0 * area2)


def geometry_centroid(geometry: dict) -> tuple[float, float]:
    """Centroid of a GeoJSON Polygon or MultiPolygon (its largest ring by vertex count)."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return ring_centroid(coords[0])
    if kind == "MultiPolygon":
        return ring_centroid(max((poly[0] for poly in coords), key=len))
    raise ValueError(f"expected a Polygon or MultiPolygon geometry, found {kind}")


def read_splits(partitions: Path) -> dict[str, str]:
    """Read ``{stem}_splits*.csv`` beside a partitions file into ``{identifier: split}``."""
    stem = partitions.with_suffix("").name
    candidates = sorted(partitions.parent.glob(f"{stem}_splits*.csv"))
    if not candidates:
        return {}
    exact = partitions.parent / f"{stem}_splits.csv"
    path = exact if exact in candidates else candidates[0]
    with path.open(newline="") as handle:
        return {row["identifier"]: row["split"].strip() for row in csv.DictReader(handle)}


def find_dataset_dir(stem_dir: Path, prefix: str) -> Path | None:
    """The first dataset folder under ``stem_dir`` whose name starts with ``prefix``."""
    if not stem_dir.is_dir():
        return None
    matches = sorted(p for p in stem_dir.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return matches[0] if matches else None


def find_tile(dataset_dir: Path | None, identifier: str) -> Path | None:
    """The tile file of ``identifier`` (``.tif``, ``.tiff`` or ``.nc``) if it exists."""
    if dataset_dir is None:
        return None
    for suffix in TILE_SUFFIXES:
        path = dataset_dir / f"{identifier}{suffix}"
        if path.is_file():
            return path
    return None


def looks_readable(path: Path) -> bool:
    """Cheap check that a tile file is a TIFF or NetCDF (reads 8 bytes, not the pixels)."""
    try:
        with path.open("rb") as handle:
            return handle.read(8).startswith(TIFF_MAGICS + NETCDF_MAGICS)
    except OSError:
        return False


def index_dataset(
    root: str | Path,
    modality: str = "s1grd",
    regions: list[str] | None = None,
    label_year: int = DEFAULT_LABEL_YEAR,
    dataset_prefix: str | None = None,
    progress: bool = False,
    read_labels: bool = True,
) -> list[TileRecord]:
    """Index a geetiles-layout folder.

    Args:
        root: the folder holding the partition GeoJSONs.
        modality: ``"s1grd"`` or ``"gssic"``: which dataset folder provides the tile paths.
        regions: keep only these areas of interest (all when None).
        label_year: MODIS VCF year whose band gives ``vegetation_pct``.
        dataset_prefix: dataset folder prefix (default: the modality, e.g. ``s1grd-2020``).
        progress: show a progress bar (label rasters are read one by one).
        read_labels: read MODIS labels; False leaves ``vegetation_pct`` NaN and skips the
            per-tile label reads (inference over a new region needs no labels).

    Returns:
        Records sorted by region then identifier. Chips whose tile is missing or unreadable, or
        that have no split, are skipped and counted in one warning.

    Raises:
        ValueError: no partitions file at ``root``, or a requested region is absent.

    """
    check_modality(modality)
    root = Path(root)
    partitions_files = find_partitions(root)
    if not partitions_files:
        raise ValueError(
            f"no geetiles layout at {root}: expected files named "
            f"'{{aoi}}{PARTITIONS_MARKER}{{name}}_{{hash}}.geojson', found none"
        )
    available = sorted({region_of(p) for p in partitions_files})
    if regions is not None:
        missing = sorted(set(regions) - set(available))
        if missing:
            raise ValueError(f"regions {missing} not found at {root}: available {available}")
        partitions_files = [p for p in partitions_files if region_of(p) in regions]
    prefix = dataset_prefix or modality
    skipped: Counter[str] = Counter()
    records: list[TileRecord] = []
    for partitions in partitions_files:
        region, stem_dir = region_of(partitions), partitions.with_suffix("")
        splits = read_splits(partitions)
        tile_dir = find_dataset_dir(stem_dir, prefix)
        label_dir = find_dataset_dir(stem_dir, "modis")
        features = json.loads(partitions.read_text())["features"]
        for feature in tqdm(features, desc=f"index {region}", disable=not progress):
            identifier = str(feature["properties"]["identifier"])
            split = splits.get(identifier)
            path = find_tile(tile_dir, identifier)
            if split not in SPLITS:
                skipped["no split"] += 1
                continue
            if path is None:
                skipped["missing tile"] += 1
                continue
            if not looks_readable(path):
                skipped["unreadable tile"] += 1
                continue
            records.append(
                TileRecord(
                    identifier=identifier,
                    region=region,
                    split=split,
                    path=path,
                    vegetation_pct=label_of(label_dir, identifier, label_year, skipped)
                    if read_labels
                    else float("nan"),
                    lon=(centroid := geometry_centroid(feature["geometry"]))[0],
                    lat=centroid[1],
                )
            )
    if skipped:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        warnings.warn(f"index_dataset({root}, {modality}): skipped {detail}", stacklevel=2)
    return sorted(records, key=lambda r: (r.region, r.identifier))


def label_of(label_dir: Path | None, identifier: str, year: int, skipped: Counter[str]) -> float:
    """The chip's label, NaN (and counted) when its MODIS raster is missing or unreadable."""
    path = find_tile(label_dir, identifier)
    if path is None:
        skipped["missing label (kept, unlabelled)"] += 1
        return float("nan")
    try:
        return read_label(path, year)
    except TileError:
        skipped["unreadable label (kept, unlabelled)"] += 1
        return float("nan")


def write_index_csv(records: list[TileRecord], path: str | Path) -> None:
    """Write records as CSV with a header of the ``TileRecord`` field names."""
    names = [f.name for f in fields(TileRecord)]
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for record in records:
            writer.writerow({k: str(v) for k, v in asdict(record).items()})


def read_index_csv(path: str | Path) -> list[TileRecord]:
    """Read records written by ``write_index_csv``."""
    with Path(path).open(newline="") as handle:
        return [
            TileRecord(
                identifier=row["identifier"],
                region=row["region"],
                split=row["split"],
                path=Path(row["path"]),
                vegetation_pct=float(row["vegetation_pct"]),
                lon=float(row["lon"]),
                lat=float(row["lat"]),
            )
            for row in csv.DictReader(handle)
        ]


def summarise(records: list[TileRecord]) -> str:
    """A short text table: tiles per region and split, and label mean per region."""
    lines = [f"{'region':<16}{'train':>7}{'val':>7}{'test':>7}{'mean veg %':>12}"]
    for region in sorted({r.region for r in records}):
        rows = [r for r in records if r.region == region]
        counts = Counter(r.split for r in rows)
        labels = [r.vegetation_pct for r in rows if not math.isnan(r.vegetation_pct)]
        mean = sum(labels) / len(labels) if labels else float("nan")
        lines.append(
            f"{region:<16}{counts['train']:>7}{counts['val']:>7}{counts['test']:>7}{mean:>12.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``sarveg index DIR [--modality M] [--regions a,b] [--out index.csv]``."""
    parser = argparse.ArgumentParser(prog="sarveg index", description=main.__doc__)
    parser.add_argument("root", type=Path, help="folder in the geetiles layout")
    parser.add_argument("--modality", choices=MODALITIES, default="s1grd")
    parser.add_argument("--regions", default=None, help="comma-separated areas of interest")
    parser.add_argument("--year", type=int, default=DEFAULT_LABEL_YEAR, help="MODIS label year")
    parser.add_argument("--out", type=Path, default=None, help="write the table as CSV here")
    args = parser.parse_args(argv)
    regions = args.regions.split(",") if args.regions else None
    try:
        records = index_dataset(args.root, args.modality, regions, args.year, progress=True)
    except ValueError as error:
        parser.error(str(error))
    print(summarise(records))
    if args.out:
        write_index_csv(records, args.out)
        print(f"wrote {len(records)} rows to {args.out}")
    return 0
