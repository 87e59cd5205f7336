"""``sarveg composite``: seasonal model tiles from dated single Sentinel-1 acquisitions.

Usage::

    sarveg composite FILE_OR_FOLDER [...] --out TILE.tif [--like GRID.tif] [--direction asc]
                     [--fill-missing-seasons] [--units db|power|amplitude] [--no-progress]

Each input is one acquisition: a two-band GeoTIFF with bands named VV and VH, or a pair of
single-band files whose names differ only by ``VV`` / ``VH`` (BigEarthNet, ASF RTC products).
Its date comes from a time or date tag or from the file name (``YYYYMMDD``), its orbit direction
from an ``orbitProperties_pass`` / ``pass`` / ``direction`` tag (else ``--direction``), its
units are detected per acquisition (or ``--units``). Every acquisition is put on one grid (the
first input's, or ``--like``'s), and the composite is built the way geetiles defines it: seasons
winter (Dec-Feb), spring (Mar-May), summer (Jun-Aug), fall (Sep-Nov), the per-pixel median in dB
of each season, polarisation and direction. The output is the 16-band geetiles layout
(``{season}_{pol}{dir}``, float32 dB, 0 where a direction has no data) that every other command
reads.

A season without an ascending acquisition is an error naming it, unless
``--fill-missing-seasons`` copies the nearest season that has one (ties: the preceding season;
the output's tags record which seasons were filled).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject
from tqdm import tqdm

from sarveg import bands
from sarveg.dual_pol import check_units, detect_units, find_date, to_db
from sarveg.errors import TileError
from sarveg.tiles import normalised_descriptions

SEASON_OF_MONTH = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring"}
SEASON_OF_MONTH |= {6: "summer", 7: "summer", 8: "summer", 9: "fall", 10: "fall", 11: "fall"}
DIRECTION_TAGS = ("orbitproperties_pass", "pass", "direction", "orbit_direction")
POL_PATTERN = re.compile(r"(?<![A-Za-z])(VV|VH)(?![A-Za-z])", re.IGNORECASE)
SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Acquisition:
    """One dated acquisition: where its VV and VH values are, and when and how it was taken."""

    vv: tuple[Path, int]  # file, 1-based band
    vh: tuple[Path, int]
    date: str
    direction: str  # "asc" or "des"

    @property
    def season(self) -> str:
        """Geetiles' season of the acquisition date."""
        return SEASON_OF_MONTH[int(self.date[5:7])]


def _direction(tags: dict[str, str], default: str) -> str:
    lowered = {k.lower(): v.lower() for k, v in tags.items()}
    for key in DIRECTION_TAGS:
        if key in lowered:
            return "des" if lowered[key].startswith("des") else "asc"
    return default


def _files(inputs: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise TileError(f"expected a GeoTIFF or a folder of them, found nothing at {path}")
    if not found:
        raise TileError("expected at least one acquisition (a GeoTIFF), found none")
    return found


def list_acquisitions(inputs: Sequence[Path], default_direction: str = "asc") -> list[Acquisition]:
    """Group input files into acquisitions (two-band files, or VV and VH files paired by name).

    Raises:
        TileError: a file without a date, a VV without its VH (or the reverse), a file that is
            neither two-band VV/VH nor named for one polarisation.
    """
    acquisitions: list[Acquisition] = []
    singles: dict[str, dict[str, Path]] = {}
    for path in _files(inputs):
        with rasterio.open(path) as dataset:
            names = normalised_descriptions(dataset) or []
            tags = dataset.tags()
        date = find_date(
            *(v for k, v in tags.items() if "time" in k.lower() or "date" in k.lower())
        )
        date = date or find_date(path.name)
        if date is None:
            raise TileError(
                f"{path.name}: expected an acquisition date (a time or date tag, or YYYYMMDD in "
                "the file name), found none"
            )
        direction = _direction(tags, default_direction)
        if "vv" in names and "vh" in names:
            acquisitions.append(
                Acquisition(
                    (path, names.index("vv") + 1), (path, names.index("vh") + 1), date, direction
                )
            )
            continue
        matches = POL_PATTERN.findall(path.stem)
        if len(matches) != 1:
            raise TileError(
                f"{path.name}: expected two bands named VV and VH, or a single-polarisation file "
                "with VV or VH in its name, found neither"
            )
        pol = matches[0].lower()
        key = POL_PATTERN.sub("{pol}", path.stem) + f"|{date}|{direction}|{path.parent}"
        singles.setdefault(key, {})[pol] = path
    for key, pair in singles.items():
        missing = sorted({"vv", "vh"} - set(pair))
        if missing:
            have = next(iter(pair.values())).name
            raise TileError(
                f"missing polarisation: expected VV and VH files of each acquisition, found "
                f"{have} without its {missing[0].upper()} file"
            )
        _, date, direction, _ = key.split("|")
        acquisitions.append(Acquisition((pair["vv"], 1), (pair["vh"], 1), date, direction))
    return sorted(acquisitions, key=lambda a: a.date)


def _on_grid(source: tuple[Path, int], grid: rasterio.io.DatasetReader) -> np.ndarray:
    """One band reprojected onto ``grid`` (float32, NaN outside the source)."""
    path, band = source
    out = np.full((grid.height, grid.width), np.nan, np.float32)
    with rasterio.open(path) as src:
        reproject(
            src.read(band).astype(np.float32),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=np.nan,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=np.nan,
            resampling=Resampling.nearest,
        )
    return out


def build_composite(
    acquisitions: Sequence[Acquisition],
    like: Path,
    *,
    units: str | None = None,
    fill_missing_seasons: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, str]]:
    """The 16 geetiles bands ``(16, H, W)`` on ``like``'s grid, and tags describing them."""
    units = check_units(units)
    stacks: dict[tuple[str, str, str], list[np.ndarray]] = {}
    with rasterio.open(like) as grid:
        for acquisition in tqdm(acquisitions, desc="composite", disable=not progress):
            raw = np.stack([_on_grid(acquisition.vv, grid), _on_grid(acquisition.vh, grid)])
            raw[:, np.all(raw == 0, axis=0)] = np.nan
            unit = units or detect_units(raw[0], raw[1])
            db = to_db(raw, unit)  # (2, H, W)
            for pol, layer in zip(bands.S1GRD_POLS, db, strict=True):
                key = (acquisition.season, pol, acquisition.direction)
                stacks.setdefault(key, []).append(layer)
        shape = (grid.height, grid.width)
    seasons_found = {s for (s, _, d) in stacks if d == "asc"}
    missing = [s for s in bands.S1GRD_SEASONS if s not in seasons_found]
    if missing and not fill_missing_seasons:
        raise TileError(
            "missing seasons: expected ascending acquisitions in every season (winter Dec-Feb, "
            "spring Mar-May, summer Jun-Aug, fall Sep-Nov), found none in "
            f"{', '.join(missing)} (pass --fill-missing-seasons to copy the nearest season)"
        )
    if not seasons_found:
        raise TileError("expected at least one ascending acquisition, found none")
    filled: dict[str, str] = {}
    order = list(bands.S1GRD_SEASONS)
    for season in missing:  # nearest season on the yearly cycle; ties: the preceding one
        here = order.index(season)

        def nearness(other: str, here: int = here) -> tuple[int, int]:
            offset = (here - order.index(other)) % 4  # 1: the season before, 3: after
            return (min(offset, 4 - offset), offset)

        filled[season] = min(seasons_found, key=nearness)
    out = np.zeros((len(bands.S1GRD_RAW_BANDS), *shape), np.float32)  # (16, H, W)
    counts: dict[str, int] = {}
    for index, name in enumerate(bands.S1GRD_RAW_BANDS):
        season, rest = name.split("_")
        pol, direction = rest[:2], rest[2:]
        source = filled.get(season, season) if direction == "asc" else season
        layers = stacks.get((source, pol, direction))
        if layers is None:
            continue  # a direction without data stays 0: the geetiles mask
        with np.errstate(all="ignore"):
            median = np.nanmedian(np.stack(layers), axis=0)
        out[index] = np.where(np.isfinite(median), median, 0.0)
        counts[name] = len(layers)
    tags = {
        "composite": "per-season median in dB (geetiles seasons: winter Dec-Feb, ...)",
        "acquisitions": str(len(acquisitions)),
        "acquisitions_per_band": ",".join(f"{k}={v}" for k, v in counts.items()),
        "filled_seasons": ",".join(f"{k}<-{v}" for k, v in filled.items()),
    }
    return out, tags


def write_composite(path: Path, data: np.ndarray, like: Path, tags: dict[str, str]) -> Path:
    """Write the 16 bands on ``like``'s grid with the geetiles band names."""
    with rasterio.open(like) as grid:
        profile = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": len(bands.S1GRD_RAW_BANDS),
            "dtype": "float32",
            "crs": grid.crs,
            "transform": grid.transform,
            "compress": "deflate",
        }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(bands.S1GRD_RAW_BANDS, start=1):
            dst.set_band_description(index, name)
        dst.update_tags(**tags)
    return path


def main(argv: list[str] | None = None) -> int:
    """``sarveg composite`` entry point."""
    parser = argparse.ArgumentParser(prog="sarveg composite", description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="acquisition files or folders")
    parser.add_argument("--out", type=Path, required=True, help="the 16-band GeoTIFF to write")
    parser.add_argument("--like", type=Path, default=None, help="grid (default: first input)")
    parser.add_argument(
        "--direction",
        choices=("asc", "des"),
        default="asc",
        help="orbit direction of acquisitions whose tags do not say",
    )
    parser.add_argument("--units", default=None, help="db, power or amplitude (default: detect)")
    parser.add_argument("--fill-missing-seasons", action="store_true")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    try:
        acquisitions = list_acquisitions(args.inputs, args.direction)
        like = args.like or acquisitions[0].vv[0]
        data, tags = build_composite(
            acquisitions,
            like,
            units=args.units,
            fill_missing_seasons=args.fill_missing_seasons,
            progress=args.progress,
        )
    except TileError as error:
        print(f"sarveg composite: {error}", file=sys.stderr)
        return 1
    write_composite(args.out, data, like, tags)
    seasons = sorted({a.season for a in acquisitions})
    print(
        f"wrote {args.out}: {len(acquisitions)} acquisitions ({', '.join(seasons)}), 16 geetiles "
        f"bands on the grid of {like.name}"
        + (f"; filled {tags['filled_seasons']}" if tags["filled_seasons"] else "")
    )
    return 0
