"""``sarveg simulate``: write the synthetic SAR benchmark in the geetiles layout."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sarveg.simulate.layout import simulate_dataset
from sarveg.simulate.regions import REGIONS


def parse_regions(text: str) -> list[str]:
    """Comma-separated region names, validated against ``regions.REGIONS``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected regions among {', '.join(REGIONS)}, found {text!r}"
        )
    return names


def main(argv: list[str]) -> int:
    """Simulate Sentinel-1 S1GRD / GSSIC tiles and MODIS labels for the chosen regions."""
    parser = argparse.ArgumentParser(
        prog="sarveg simulate",
        description="Write a synthetic (simulated, not real) Sentinel-1 benchmark in the "
        "geetiles layout: per region a partitions GeoJSON, a splits CSV, and per chip an S1GRD "
        "GeoTIFF, a GSSIC NetCDF and a MODIS tree-cover label.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--regions", type=parse_regions, default=list(REGIONS), help="comma-separated regions"
    )
    parser.add_argument("--tiles-per-region", type=int, default=100)
    parser.add_argument("--size", type=int, default=112, help="S1GRD tile side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--s1grd-encoding",
        choices=("float32", "uint8"),
        default="float32",
        help="float32 dB, or uint8 as geetiles writes it (unclipped: wraps outside [-30, 0] dB)",
    )
    parser.add_argument(
        "--single-date-share",
        type=float,
        default=0.0,
        help="share of tiles whose S1GRD bands are one acquisition replicated into every "
        "season (single-date speckle), as the service builds from a two-band VV/VH file",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    args = parser.parse_args(argv)
    try:
        summary = simulate_dataset(
            args.out,
            args.regions,
            args.tiles_per_region,
            args.size,
            args.seed,
            args.workers,
            s1grd_encoding=args.s1grd_encoding,
            single_date_share=args.single_date_share,
        )
    except ValueError as error:
        parser.error(str(error))
    per_tile = summary.bytes_per_tile()
    print(f"wrote {sum(summary.tiles.values())} synthetic tiles to {args.out}")
    for region, stem in summary.stems.items():
        print(
            f"  {region:<14} {summary.tiles[region]:>6} tiles  "
            f"mean vegetation {summary.mean_vegetation_pct[region]:5.1f} %  {stem}"
        )
    sizes = ", ".join(f"{kind} {n / 1024:.1f} KB" for kind, n in per_tile.items())
    print(f"  bytes per tile: {sizes}, total {sum(per_tile.values()) / 1024:.1f} KB")
    return 0
