"""Throughput and disk use of ``sarveg simulate`` (S1GRD + GSSIC + label per tile).

Writes a small synthetic benchmark into a temporary folder, once with one worker and once with
every core, and prints tiles per second next to the target (>= 50 tiles/s on 2 cores at 112 px)
as a ratio, with the bytes per tile of each file type and the projected size of the full
benchmark (>= 5,000 tiles per region, four regions, plus ~140 KB/tile of training caches,
within 10 GB). Figures are for SYNTHETIC data.

    python bench/simulate.py [--tiles 100] [--size 112] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from sarveg.simulate import REGIONS, simulate_dataset

TARGET_TILES_PER_S = 50.0
FULL_TILES = 4 * 5000
CACHE_BYTES_PER_TILE = 140e3
DISK_BUDGET_BYTES = 10e9


def disk_usage(root: Path) -> int:
    """Bytes allocated on disk under ``root`` (file-system blocks, not just file sizes)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(
    tiles_per_region: int, size: int, workers: int
) -> tuple[float, float, dict[str, float], int]:
    """Simulate into a temporary folder.

    Returns:
        (tiles per wall-clock second, CPU seconds per tile, bytes per tile by kind, disk bytes
        per tile).
    """
    with tempfile.TemporaryDirectory(prefix="sarveg-bench-") as tmp:
        start, cpu_start = time.perf_counter(), cpu_seconds()
        summary = simulate_dataset(
            tmp, list(REGIONS), tiles_per_region, size=size, seed=0, workers=workers, progress=False
        )
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        tiles = sum(summary.tiles.values())
        return (
            tiles / elapsed,
            cpu / tiles,
            summary.bytes_per_tile(),
            disk_usage(Path(tmp)) // tiles,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100, help="tiles per region (4 regions)")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(
        f"sarveg simulate throughput, SYNTHETIC data: {4 * args.tiles} tiles "
        f"({args.tiles} per region), {args.size} px, S1GRD + GSSIC + label per tile"
    )
    print(
        f"{'workers':>8} {'tiles/s':>9} {'target':>8} {'ratio':>7} {'CPU ms/tile':>12} "
        f"{'idle-cores tiles/s':>19}"
    )
    sizes: dict[str, float] = {}
    disk = 0
    for workers in sorted({1, args.workers}):
        rate, cpu_per_tile, sizes, disk = run(args.tiles, args.size, workers)
        # What the same CPU work gives when the cores are not shared with other jobs.
        idle_rate = min(workers, os.cpu_count() or 1) / cpu_per_tile
        if workers == args.workers:
            target = f"{TARGET_TILES_PER_S:8.0f} {rate / TARGET_TILES_PER_S:7.2f}"
        else:
            target = f"{'-':>8} {'-':>7}"
        print(f"{workers:>8} {rate:9.1f} {target} {cpu_per_tile * 1e3:12.1f} {idle_rate:19.1f}")
    print(
        f"load average over the last minute: {os.getloadavg()[0]:.2f} "
        "(other jobs on the machine lower the wall-clock rates)"
    )
    print("\nbytes per tile (file contents, KiB):")
    for kind, n in sizes.items():
        print(f"  {kind:<6} {n / 1024:8.1f}")
    print(f"  {'total':<6} {sum(sizes.values()) / 1024:8.1f}   on disk (blocks): {disk / 1024:.1f}")
    projected = FULL_TILES * (disk + CACHE_BYTES_PER_TILE)
    print(
        f"\nfull benchmark ({FULL_TILES} tiles + {CACHE_BYTES_PER_TILE / 1e3:.0f} KB/tile caches): "
        f"{projected / 1e9:.2f} GB vs budget {DISK_BUDGET_BYTES / 1e9:.0f} GB, "
        f"ratio {projected / DISK_BUDGET_BYTES:.2f}"
    )


if __name__ == "__main__":
    main()
