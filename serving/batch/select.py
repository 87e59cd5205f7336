"""``sarveg select``: which tiles of a ``sarveg predict`` run to label first.

    sarveg select RUN_DIR --budget K --out labels_to_collect.csv

Reads the run's part files (each predicted tile's embedding, bounds and OOD flag), chooses ``K``
tiles with :func:`sarveg.label_selection.select_tiles` (kernel herding: a few tiles whose
embeddings stand for the run's in proportion, flagged tiles weighted up, no two near-duplicates)
and writes

- ``OUT.csv``: one row per chosen tile in choice order: ``identifier`` (the chip identifier, the
  tile file's name without suffix: what ``sarveg adapt --labels`` expects), the run's tile key and
  path, bounds in the tile's CRS, centroid in that CRS and in lon/lat, the model's prediction,
  p-value and flag, how many of the run's tiles it stands for (``represents``: those whose
  nearest chosen tile it is), and an empty ``vegetation_pct`` column for the label;
- ``OUT.geojson``: the chosen tiles' footprints (lon/lat) with the same properties;
- ``OUT.png``: a quick-look of every predicted tile (flagged ones marked) and the chosen ones.

Fill in ``vegetation_pct`` (0..100) and the CSV is a labels file for ``sarveg adapt``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform, transform_geom
from tqdm import tqdm

from sarveg.errors import TileError
from sarveg.label_selection import (
    DEFAULT_DUPLICATE_FRACTION,
    DEFAULT_UNRELIABLE_WEIGHT,
    Selection,
    coverage_radius,
    median_neighbour_distance,
    select_tiles,
)
from serving.batch.outputs import RUN_FILE, SUMMARY_FILE, read_run_embeddings

logger = logging.getLogger(__name__)

WGS84 = CRS.from_epsg(4326)
CSV_COLUMNS: tuple[str, ...] = (
    "rank",
    "identifier",
    "tile",
    "path",
    "crs",
    "left",
    "bottom",
    "right",
    "top",
    "centroid_x",
    "centroid_y",
    "lon",
    "lat",
    "predicted_pct",
    "p_value",
    "unreliable",
    "represents",
    "vegetation_pct",
)


def chip_identifier(tile: str) -> str:
    """The chip identifier of a run's tile key (``stem/dataset/identifier`` -> ``identifier``)."""
    return Path(tile).name


def lonlat_centroids(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Centroid longitude and latitude ``(n,)`` of each row's bounds (NaN without a CRS)."""
    x = 0.5 * (table["left"].to_numpy() + table["right"].to_numpy())
    y = 0.5 * (table["bottom"].to_numpy() + table["top"].to_numpy())
    lon, lat = np.full(len(x), np.nan), np.full(len(x), np.nan)
    crs_column = np.asarray(table["crs"].to_pylist(), dtype=object)
    for name in {c for c in crs_column if c}:
        rows = np.flatnonzero(crs_column == name)
        try:
            source = CRS.from_user_input(name)
        except CRSError:
            continue
        lon[rows], lat[rows] = transform(source, WGS84, x[rows].tolist(), y[rows].tolist())
    return lon, lat


def footprint(row: dict[str, Any]) -> dict[str, Any] | None:
    """The tile's bounds as a lon/lat GeoJSON polygon (None without a CRS)."""
    if not row["crs"]:
        return None
    left, bottom, right, top = (row[k] for k in ("left", "bottom", "right", "top"))
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    return transform_geom(CRS.from_user_input(row["crs"]), WGS84, polygon)


def selected_rows(table: pa.Table, selection: Selection) -> list[dict[str, Any]]:
    """The CSV rows of the chosen tiles, in choice order."""
    lon, lat = lonlat_centroids(table)
    rows = []
    for rank, (position, size) in enumerate(
        zip(selection.positions, selection.represents, strict=True), start=1
    ):
        tile = table.slice(int(position), 1).to_pylist()[0]
        rows.append(
            {
                "rank": rank,
                "identifier": chip_identifier(tile["identifier"]),
                "tile": tile["identifier"],
                "path": tile["path"],
                "crs": tile["crs"] or "",
                **{k: tile[k] for k in ("left", "bottom", "right", "top")},
                "centroid_x": 0.5 * (tile["left"] + tile["right"]),
                "centroid_y": 0.5 * (tile["bottom"] + tile["top"]),
                "lon": float(lon[position]),
                "lat": float(lat[position]),
                "predicted_pct": tile["vegetation_pct"],
                "p_value": tile["p_value"],
                "unreliable": bool(tile["unreliable"]),
                "represents": int(size),
                "vegetation_pct": "",
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``OUT.csv`` (see the module docstring)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def write_geojson(path: Path, rows: list[dict[str, Any]], synthetic: bool) -> None:
    """``OUT.geojson``: footprints in lon/lat with every CSV column as a property."""
    features = [
        {
            "type": "Feature",
            "geometry": footprint(row),
            "properties": {k: v for k, v in row.items() if k != "vegetation_pct"},
        }
        for row in rows
    ]
    collection = {"type": "FeatureCollection", "synthetic": synthetic, "features": features}
    path.write_text(json.dumps(collection, indent=1) + "\n")


def write_selection_quicklook(
    path: Path, table: pa.Table, selection: Selection, title: str, synthetic: bool
) -> bool:
    """Every predicted tile's centroid (flagged ones marked) and the chosen ones, numbered."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no quick-look PNG (pip install matplotlib)")
        return False
    lon, lat = lonlat_centroids(table)
    geographic = bool(np.isfinite(lon).all())
    if not geographic:  # no CRS: draw in the tiles' own coordinates
        lon = 0.5 * (table["left"].to_numpy() + table["right"].to_numpy())
        lat = 0.5 * (table["bottom"].to_numpy() + table["top"].to_numpy())
    flagged = table["unreliable"].to_numpy(zero_copy_only=False).astype(bool)
    figure = Figure(figsize=(8.0, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    size = float(np.clip(6000.0 / len(lon), 2.0, 30.0))
    ax.scatter(lon[~flagged], lat[~flagged], s=size, c="0.7", linewidths=0, label="tile")
    ax.scatter(lon[flagged], lat[flagged], s=size, c="tab:orange", linewidths=0, label="unreliable")
    chosen = selection.positions
    ax.scatter(
        lon[chosen],
        lat[chosen],
        s=60,
        facecolors="none",
        edgecolors="tab:red",
        linewidths=1.5,
        label=f"to label ({len(chosen)})",
    )
    for rank, position in enumerate(chosen[:50], start=1):  # more numbers would be unreadable
        ax.annotate(str(rank), (lon[position], lat[position]), fontsize=6, color="tab:red")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.9)
    ax.set_xlabel("longitude (°)" if geographic else "x (tile CRS)")
    ax.set_ylabel("latitude (°)" if geographic else "y (tile CRS)")
    ax.set_title(title + ("\nSYNTHETIC data (sarveg simulator)" if synthetic else ""))
    figure.savefig(path, dpi=110)
    return True


def run_select(
    run_dir: Path,
    budget: int,
    out: Path,
    *,
    unreliable_weight: float = DEFAULT_UNRELIABLE_WEIGHT,
    duplicate_fraction: float = DEFAULT_DUPLICATE_FRACTION,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Choose and write the tiles to label; return a summary.

    Raises:
        TileError: ``run_dir`` is not a predict run with predicted tiles.
        ValueError: an impossible budget.
    """
    with tqdm(total=3, desc="select", disable=not progress) as bar:
        table, embedding = read_run_embeddings(run_dir)
        bar.update()
        distance = duplicate_fraction * median_neighbour_distance(embedding, seed=seed)
        flagged = table["unreliable"].to_numpy(zero_copy_only=False).astype(bool)
        selection = select_tiles(
            embedding,
            budget,
            flagged,
            unreliable_weight=unreliable_weight,
            duplicate_distance=distance,
            seed=seed,
        )
        bar.update()
        summary_file = run_dir / SUMMARY_FILE
        synthetic = bool(
            summary_file.is_file() and json.loads(summary_file.read_text()).get("synthetic")
        )
        run_file = run_dir / RUN_FILE
        model = json.loads(run_file.read_text()).get("model") if run_file.is_file() else None
        rows = selected_rows(table, selection)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv(out, rows)
        write_geojson(out.with_suffix(".geojson"), rows, synthetic)
        title = f"{budget} tiles to label in {run_dir.name}" + (f" ({model})" if model else "")
        drawn = write_selection_quicklook(
            out.with_suffix(".png"), table, selection, title, synthetic
        )
        bar.update()
    mean_radius, p95_radius = coverage_radius(embedding, selection.positions)
    return {
        "tiles": table.num_rows,
        "budget": budget,
        "unreliable_share": float(flagged.mean()),
        "chosen_unreliable": int(flagged[selection.positions].sum()),
        "duplicate_distance": selection.duplicate_distance,
        "coverage_mean": mean_radius,
        "coverage_p95": p95_radius,
        "outputs": [str(out), str(out.with_suffix(".geojson"))]
        + ([str(out.with_suffix(".png"))] if drawn else []),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="sarveg select",
        description="Choose the tiles of a sarveg predict run whose labels would help most.",
    )
    parser.add_argument("run_dir", type=Path, help="a sarveg predict output folder")
    parser.add_argument("--budget", type=int, required=True, help="K, tiles to label")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write (.geojson, .png too)")
    parser.add_argument(
        "--unreliable-weight",
        type=float,
        default=DEFAULT_UNRELIABLE_WEIGHT,
        help="extra weight of a flagged tile in the distribution to stand for (0: no weight)",
    )
    parser.add_argument(
        "--duplicate-fraction",
        type=float,
        default=DEFAULT_DUPLICATE_FRACTION,
        help="near-duplicates: closer than this x the median nearest-neighbour distance",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    """``sarveg select`` entry point."""
    args = build_parser().parse_args(argv)
    try:
        summary = run_select(
            args.run_dir,
            args.budget,
            args.out,
            unreliable_weight=args.unreliable_weight,
            duplicate_fraction=args.duplicate_fraction,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except (TileError, ValueError) as error:
        print(f"sarveg select: {error}", file=sys.stderr)
        return 1
    print(
        f"select: {summary['budget']} of {summary['tiles']} tiles "
        f"({summary['chosen_unreliable']} flagged unreliable; "
        f"{100 * summary['unreliable_share']:.1f} % of the run is), every tile within "
        f"{summary['coverage_mean']:.3g} of a chosen one on "
        f"average (95th percentile {summary['coverage_p95']:.3g}); wrote "
        + ", ".join(summary["outputs"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
