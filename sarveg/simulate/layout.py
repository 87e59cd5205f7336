"""Writing a simulated benchmark in the geetiles layout, in parallel.

Per region ``r``, under ``out``::

    {r}_partitions_sim_{hash10}.geojson        chips (EPSG:4326): identifier, area_km2
    {stem}_splits.csv                          identifier,split by geographic bands
    {stem}/s1grd-2020/{identifier}.tif         16-band float32 sigma0 dB
    {stem}/gssic-2020/{identifier}.nc          sartiles NetCDF, coherence x 100
    {stem}/modis44b-2020/{identifier}.tif      MODIS VCF tree cover (label)

plus ``simulation.json`` at the top recording the arguments and marking the data as synthetic.
Tiles are independent pure functions of (seed, region, index), so the files are byte-identical
whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sarveg.simulate.chips import Chip, make_chips
from sarveg.simulate.regions import region_params
from sarveg.simulate.tile import simulate_tile
from sarveg.simulate.tilefiles import SYNTHETIC_TAG, write_gssic, write_modis, write_s1grd

S1GRD_DIR, GSSIC_DIR, MODIS_DIR = "s1grd-2020", "gssic-2020", "modis44b-2020"
FILE_KINDS: tuple[str, ...] = ("s1grd", "gssic", "modis")
CHUNK_TILES = 8


@dataclass(frozen=True)
class TileJob:
    """What a worker needs to simulate and write one tile."""

    chip: Chip
    stem_dir: Path
    size: int
    seed: int
    s1grd_encoding: str = "float32"
    single_date_share: float = 0.0


@dataclass(frozen=True)
class TileResult:
    """What a worker reports back: the label and the bytes of each file written."""

    region: str
    identifier: str
    vegetation_pct: float
    bytes_written: dict[str, int]


@dataclass
class SimulationSummary:
    """Counts and sizes of a simulation run.

    Attributes:
        stems: the partitions stem of each region.
        tiles: tiles written per region.
        bytes_written: total bytes per file kind (``s1grd``, ``gssic``, ``modis``).
        mean_vegetation_pct: mean tile label per region.
    """

    stems: dict[str, str] = field(default_factory=dict)
    tiles: dict[str, int] = field(default_factory=dict)
    bytes_written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILE_KINDS, 0))
    mean_vegetation_pct: dict[str, float] = field(default_factory=dict)

    def bytes_per_tile(self) -> dict[str, float]:
        """Mean bytes per tile of each file kind."""
        total = max(1, sum(self.tiles.values()))
        return {kind: n / total for kind, n in self.bytes_written.items()}


def partitions_stem(region: str, chips: list[Chip]) -> str:
    """``{region}_partitions_sim_{hash10}``, the hash covering every identifier and polygon."""
    digest = hashlib.sha1()
    for chip in chips:
        digest.update(f"{chip.identifier}:{chip.bounds}:{chip.cut};".encode())
    return f"{region}_partitions_sim_{digest.hexdigest()[:10]}"


def chips_geojson(chips: list[Chip]) -> dict:
    """The partitions FeatureCollection (EPSG:4326) of a region's chips."""
    return {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "identifier": chip.identifier,
                    "area_km2": round(chip.area_km2(), 4),
                },
                "geometry": {"type": "Polygon", "coordinates": [chip.ring()]},
            }
            for chip in chips
        ],
    }


def write_region_index(out: Path, region: str, chips: list[Chip]) -> Path:
    """Write a region's partitions GeoJSON and splits CSV; returns the stem folder."""
    stem = partitions_stem(region, chips)
    (out / f"{stem}.geojson").write_text(json.dumps(chips_geojson(chips)) + "\n")
    rows = "".join(f"{chip.identifier},{chip.split}\n" for chip in chips)
    (out / f"{stem}_splits.csv").write_text("identifier,split\n" + rows)
    stem_dir = out / stem
    for name in (S1GRD_DIR, GSSIC_DIR, MODIS_DIR):
        (stem_dir / name).mkdir(parents=True, exist_ok=True)
    return stem_dir


def check_no_other_simulation(out: Path, chips_of: dict[str, list[Chip]]) -> None:
    """Refuse to mix two simulations of a region in one folder (readers would index both).

    Re-running with the same arguments is fine: the same stem is overwritten byte for byte.
    """
    for region, chips in chips_of.items():
        stem = partitions_stem(region, chips)
        others = sorted(
            p.name for p in out.glob(f"{region}_partitions_*.geojson") if p.stem != stem
        )
        if others:
            raise ValueError(
                f"output folder {out} already holds {', '.join(others)}: expected no other "
                f"partitions of region {region} (use an empty folder or the same arguments)"
            )


def run_job(job: TileJob) -> TileResult:
    """Simulate one tile and write its three files."""
    tile = simulate_tile(job.chip, job.size, job.seed, job.single_date_share)
    name = job.chip.identifier
    written = {
        "s1grd": write_s1grd(tile, job.stem_dir / S1GRD_DIR / f"{name}.tif", job.s1grd_encoding),
        "gssic": write_gssic(tile, job.stem_dir / GSSIC_DIR / f"{name}.nc"),
        "modis": write_modis(tile, job.stem_dir / MODIS_DIR / f"{name}.tif"),
    }
    return TileResult(job.chip.region, name, tile.vegetation_pct, written)


def limit_worker_threads() -> None:
    """Keep each worker's BLAS / OpenMP single-threaded: the pool already uses every core."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def run_jobs(jobs: list[TileJob], workers: int) -> Iterator[TileResult]:
    """Run jobs in this process (``workers == 1``) or in a pool of fresh processes."""
    if workers <= 1:
        yield from map(run_job, jobs)
        return
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    limit_worker_threads()  # inherited by the spawned children before they import numpy
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            yield from pool.imap_unordered(run_job, jobs, chunksize=CHUNK_TILES)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def simulate_dataset(
    out: str | Path,
    regions: list[str],
    tiles_per_region: int,
    size: int = 112,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    s1grd_encoding: str = "float32",
    single_date_share: float = 0.0,
) -> SimulationSummary:
    """Simulate a synthetic benchmark and write it in the geetiles layout.

    Args:
        out: output folder (created if missing).
        regions: region names (``regions.REGIONS``).
        tiles_per_region: number of chips per region.
        size: S1GRD tile side in pixels (the chip is ~4.5 km wide whatever the size).
        seed: simulation seed; the same arguments always give byte-identical files.
        workers: processes to use (default: the number of cores).
        progress: show a tqdm progress bar.
        s1grd_encoding: ``"float32"`` dB, or ``"uint8"`` as geetiles writes it (wrapped).
        single_date_share: share of tiles whose S1GRD bands are one acquisition replicated
            into every season (``tile.single_date_s1grd``), not seasonal composites.

    Returns:
        A ``SimulationSummary``.

    Raises:
        ValueError: unknown region, non-positive tile count or size below 16 pixels.
    """
    if tiles_per_region < 1:
        raise ValueError(f"expected at least 1 tile per region, found {tiles_per_region}")
    if size < 16:
        raise ValueError(f"expected a tile size of at least 16 pixels, found {size}")
    if not 0.0 <= single_date_share <= 1.0:
        raise ValueError(f"expected a single-date share in [0, 1], found {single_date_share}")
    if len(set(regions)) != len(regions) or not regions:
        raise ValueError(f"expected a non-empty list of distinct regions, found {regions}")
    params = [region_params(name) for name in regions]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chips_of = {region.name: make_chips(region, tiles_per_region, seed) for region in params}
    check_no_other_simulation(out, chips_of)
    summary = SimulationSummary()
    jobs: list[TileJob] = []
    for region in params:
        chips = chips_of[region.name]
        stem_dir = write_region_index(out, region.name, chips)
        summary.stems[region.name] = stem_dir.name
        jobs.extend(
            TileJob(chip, stem_dir, size, seed, s1grd_encoding, single_date_share) for chip in chips
        )
    workers = workers or os.cpu_count() or 1
    labels: dict[str, list[float]] = {region.name: [] for region in params}
    bar = tqdm(total=len(jobs), desc="simulate", unit="tile", disable=not progress)
    with bar:
        for result in run_jobs(jobs, workers):
            labels[result.region].append(result.vegetation_pct)
            for kind, n in result.bytes_written.items():
                summary.bytes_written[kind] += n
            bar.update()
    for region, values in labels.items():
        summary.tiles[region] = len(values)
        summary.mean_vegetation_pct[region] = sum(values) / len(values)
    manifest = {
        "synthetic": True,
        "description": SYNTHETIC_TAG,
        "regions": regions,
        "tiles_per_region": tiles_per_region,
        "size": size,
        "seed": seed,
        "single_date_share": single_date_share,
        "partitions": summary.stems,
    }
    (out / "simulation.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary
