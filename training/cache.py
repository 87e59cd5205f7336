"""The prepared-tile cache: decode rasters once, resample them, keep them memory-mapped.

Pre-training reads every tile many times; decoding GeoTIFF / NetCDF and area-averaging on every
epoch would cost more than the model on a CPU. ``prepare_cache`` reads the indexed tiles once
through ``sarveg.read_tile`` and ``sarveg.resample.resample_tile`` (the same rule serving uses),
and stores them as a float16 ``.npy`` of shape ``(N, C, S, S)`` that epochs memory-map, plus a JSON
sidecar with identifiers, regions, splits, labels and the per-channel statistics.

The cache folder name carries a hash of everything that determines its content: the file list
with sizes and modification times, labels, modality, input size, the resampling rule and
``PREPROCESS_VERSION``. Changing any of them makes a new cache instead of reusing a stale one.

This module imports no torch, so its decoding workers start quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sarveg import bands
from sarveg.dataset import TileRecord, index_dataset
from sarveg.errors import TileError
from sarveg.resample import RESAMPLING_RULE, resample_tile
from sarveg.tiles import read_tile

# Bump when the decoding or resampling of cached tiles changes.
PREPROCESS_VERSION = "2"  # 2: float32 resampling sums
CACHE_DTYPE = np.float16
TILES_FILE = "tiles.npy"
META_FILE = "meta.json"
STATS_CHUNK = 256


@dataclass
class TileCache:
    """A prepared cache, memory-mapped read-only.

    Attributes:
        path: the cache folder.
        tiles: ``(N, C, S, S)`` float16 memmap in physical units, NaN where nodata.
        identifiers: chip identifier per row.
        regions: region per row.
        splits: split per row.
        vegetation_pct: label per row, NaN when unlabelled.
        modality: ``"s1grd"`` or ``"gssic"``.
        band_names: channel names, ``bands.CHANNELS[modality]``.
        input_size: side ``S`` in pixels.
        mean: per-channel mean over valid pixels of the whole cache.
        std: per-channel standard deviation over valid pixels of the whole cache.
        key: the content hash the folder is named after.
    """

    path: Path
    tiles: np.ndarray
    identifiers: list[str]
    regions: list[str]
    splits: list[str]
    vegetation_pct: np.ndarray
    modality: str
    band_names: tuple[str, ...]
    input_size: int
    mean: list[float]
    std: list[float]
    key: str

    def __len__(self) -> int:
        return len(self.identifiers)

    def indices(
        self, splits: Sequence[str] | None = None, regions: Sequence[str] | None = None
    ) -> np.ndarray:
        """Return the row numbers whose split and region are in the given sets (all if None)."""
        keep = [
            i
            for i, (split, region) in enumerate(zip(self.splits, self.regions, strict=True))
            if (splits is None or split in splits) and (regions is None or region in regions)
        ]
        return np.asarray(keep, dtype=np.int64)


def cache_key(records: Sequence[TileRecord], modality: str, input_size: int) -> str:
    """Return the sha256 of everything that determines a cache's content."""
    digest = hashlib.sha256()
    header = {
        "modality": modality,
        "input_size": input_size,
        "resampling": RESAMPLING_RULE,
        "preprocess_version": PREPROCESS_VERSION,
        "dtype": np.dtype(CACHE_DTYPE).name,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for record in records:
        stat = record.path.stat()
        row = (
            f"{record.identifier}|{record.region}|{record.split}|{record.path.resolve()}|"
            f"{stat.st_size}|{stat.st_mtime_ns}|{record.vegetation_pct!r}\n"
        )
        digest.update(row.encode())
    return digest.hexdigest()


def select_records(
    root: str | Path,
    modality: str,
    regions: Sequence[str] | None,
    splits: Sequence[str] | None,
) -> list[TileRecord]:
    """Index ``root`` and keep the requested regions and splits, failing if nothing is left."""
    records = index_dataset(root, modality, list(regions) if regions else None)
    if splits is not None:
        records = [r for r in records if r.split in splits]
    if not records:
        raise ValueError(
            f"expected {modality} tiles of regions {regions} and splits {splits} at {root}, "
            "found none"
        )
    return records


def decode_tile(args: tuple[str, str, int]) -> np.ndarray:
    """Read one tile and resample it to the input size; runs in a worker process."""
    path, modality, input_size = args
    try:
        array = read_tile(path, modality=modality).array  # (C, H, W)
    except TileError as error:
        raise TileError(f"{path}: {error}") from None
    return resample_tile(array, input_size).astype(CACHE_DTYPE)  # (C, S, S)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Let spawned workers start with one BLAS thread each, so N workers use N cores."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def decode_all(
    records: Sequence[TileRecord],
    modality: str,
    input_size: int,
    out: np.ndarray,
    workers: int,
    progress: bool,
) -> None:
    """Decode every record into ``out[i]`` with a process pool and a progress bar."""
    jobs = [(str(r.path), modality, input_size) for r in records]
    bar = tqdm(total=len(jobs), desc=f"prepare {modality} {input_size}px", disable=not progress)
    with bar:
        if workers <= 1:
            for i, job in enumerate(jobs):
                out[i] = decode_tile(job)
                bar.update()
            return
        # spawn, not fork: the parent may already run torch / OpenMP threads.
        with (
            single_threaded_blas(),
            ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool,
        ):
            for i, array in enumerate(pool.map(decode_tile, jobs, chunksize=16)):
                out[i] = array
                bar.update()


def channel_stats(tiles: np.ndarray) -> tuple[list[float], list[float]]:
    """Return per-channel mean and std of a ``(N, C, S, S)`` array, ignoring NaN."""
    channels = tiles.shape[1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = np.zeros(channels)
    for start in range(0, len(tiles), STATS_CHUNK):
        chunk = np.asarray(tiles[start : start + STATS_CHUNK], dtype=np.float64)
        valid = np.isfinite(chunk)
        filled = np.where(valid, chunk, 0.0)
        total += filled.sum(axis=(0, 2, 3))
        total_sq += (filled**2).sum(axis=(0, 2, 3))
        count += valid.sum(axis=(0, 2, 3))
    if (count == 0).any():
        empty = [int(c) for c in np.flatnonzero(count == 0)]
        raise ValueError(f"expected valid pixels in every channel, found none in channels {empty}")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    # A constant channel would divide by zero; leave it centred but unscaled.
    std = np.where(std > 1e-6, std, 1.0)
    return mean.tolist(), std.tolist()


def default_cache_dir(root: str | Path) -> Path:
    """``DATA_DIR/.cache``."""
    return Path(root) / ".cache"


def open_cache(path: str | Path) -> TileCache:
    """Open a prepared cache folder read-only."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise ValueError(f"expected a prepared cache with {META_FILE} at {path}, found none")
    meta = json.loads(meta_path.read_text())
    tiles = np.load(path / TILES_FILE, mmap_mode="r")
    if tiles.shape[0] != len(meta["identifiers"]):
        raise ValueError(
            f"cache {path} is inconsistent: {tiles.shape[0]} tiles, "
            f"{len(meta['identifiers'])} identifiers"
        )
    labels = np.array([np.nan if v is None else v for v in meta["vegetation_pct"]], np.float64)
    return TileCache(
        path=path,
        tiles=tiles,
        identifiers=meta["identifiers"],
        regions=meta["regions"],
        splits=meta["splits"],
        vegetation_pct=labels,
        modality=meta["modality"],
        band_names=tuple(meta["band_names"]),
        input_size=int(meta["input_size"]),
        mean=meta["mean"],
        std=meta["std"],
        key=meta["key"],
    )


def prepare_cache(
    root: str | Path,
    modality: str,
    input_size: int,
    regions: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> TileCache:
    """Return the cache of the selected tiles, preparing it first if needed.

    Args:
        root: data folder in the geetiles layout.
        modality: ``"s1grd"`` or ``"gssic"``.
        input_size: side in pixels after resampling.
        regions: regions to include (all when None).
        splits: splits to include (all when None).
        cache_dir: parent folder of caches (default ``root/.cache``).
        workers: decoding processes (1 decodes in this process).
        progress: show a progress bar.

    Returns:
        The opened cache.
    """
    if modality not in bands.CHANNELS:
        raise ValueError(f"expected a modality in {list(bands.CHANNELS)}, found {modality!r}")
    records = select_records(root, modality, regions, splits)
    key = cache_key(records, modality, input_size)
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    final = parent / f"{modality}-{input_size}px-{key[:16]}"
    if (final / META_FILE).is_file():
        return open_cache(final)
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        channels = len(bands.CHANNELS[modality])
        tiles = np.lib.format.open_memmap(
            staging / TILES_FILE,
            mode="w+",
            dtype=CACHE_DTYPE,
            shape=(len(records), channels, input_size, input_size),
        )
        decode_all(records, modality, input_size, tiles, workers, progress)
        tiles.flush()
        mean, std = channel_stats(tiles)
        del tiles
        meta = {
            "key": key,
            "modality": modality,
            "band_names": list(bands.CHANNELS[modality]),
            "input_size": input_size,
            "resampling": RESAMPLING_RULE,
            "preprocess_version": PREPROCESS_VERSION,
            "root": str(Path(root).resolve()),
            "mean": mean,
            "std": std,
            "identifiers": [r.identifier for r in records],
            "regions": [r.region for r in records],
            "splits": [r.split for r in records],
            "vegetation_pct": [
                None if math.isnan(r.vegetation_pct) else r.vegetation_pct for r in records
            ],
        }
        (staging / META_FILE).write_text(json.dumps(meta))
        if final.exists():  # another process finished first; its content is identical
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_cache(final)


def main(argv: list[str]) -> int:
    """``sarveg prepare``: decode and cache tiles for pre-training (or any split)."""
    parser = argparse.ArgumentParser(
        prog="sarveg prepare",
        description="Decode, resample and cache tiles once so training epochs memory-map them.",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder in the geetiles layout")
    parser.add_argument(
        "--config",
        default=None,
        help="preset name or YAML: take modality, input size, regions and splits from it",
    )
    parser.add_argument("--modality", choices=bands.MODALITIES, default=None)
    parser.add_argument("--size", type=int, default=None, help="input size in px")
    parser.add_argument("--regions", default=None, help="comma-separated (default: config / all)")
    parser.add_argument("--splits", default=None, help="comma-separated (default: config / all)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default DATA/.cache")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes")
    args = parser.parse_args(argv)

    modality, size, regions, splits, workers = args.modality, args.size, None, None, 2
    cache_dir = args.cache_dir
    if args.config is not None:
        from training.config import load_config  # pydantic only; keeps --help fast

        config = load_config(args.config)
        modality = modality or config.modality
        size = size or config.data.input_size
        regions, splits = config.data.regions, list(config.data.splits)
        workers = config.data.prepare_workers
        if cache_dir is None and config.data.cache_dir is not None:
            cache_dir = Path(config.data.cache_dir)
    if modality is None or size is None:
        parser.error("expected --config, or both --modality and --size")
    regions = args.regions.split(",") if args.regions else regions
    splits = args.splits.split(",") if args.splits else splits
    workers = args.workers or workers
    try:
        cache = prepare_cache(args.data, modality, size, regions, splits, cache_dir, workers)
    except ValueError as error:  # TileError included
        print(f"sarveg prepare: {error}")
        return 1
    size_mb = cache.tiles.nbytes / 1e6
    print(f"cache {cache.path}: {len(cache)} tiles, {size_mb:.1f} MB")
    print("mean " + ", ".join(f"{v:.3f}" for v in cache.mean))
    print("std  " + ", ".join(f"{v:.3f}" for v in cache.std))
    return 0
