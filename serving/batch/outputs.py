"""A batch run's output folder: the resumable part-file store and the final products.

``OUT_DIR`` holds:

- ``run.json``: which input and model the results belong to (a rerun must match it);
- ``parts/part-*.parquet``: results appended as they come, a few thousand tiles per file, each
  written to a temporary name and renamed, so an interrupted run leaves only whole parts; a
  rerun skips every identifier found there (tiles that failed are retried);
- ``unreadable.csv``: this run's tiles that could not be read or scored, with the reason;
- ``skipped.csv``: mosaic windows skipped by the tile checks (too little valid data, linear
  power, dB out of range, infinities), with the reason;
- rebuilt from the parts at the end of every run: ``tiles.parquet`` (one row per predicted tile,
  sorted by identifier), ``map.tif`` and ``quicklook.png`` (:mod:`serving.batch.quicklook_map`), and
  ``summary.json`` (counts, the region-level SWD of the tiles' embeddings to every reference
  region, the unreliable share, the unreadable tiles, the model, timings, a synthetic flag).

The region-level SWD uses at most ``set_sample`` embeddings, chosen by a hash of the
identifier (the same sample whatever the engine, the order or the interruptions).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sarveg.bundle import MODEL_FILE, Bundle
from sarveg.errors import TileError
from sarveg.ood import OODScorer
from sarveg.scene import reason_kind
from serving.batch.inputs import BatchInput
from serving.batch.quicklook_map import harmonise_bounds, map_values, write_map, write_quicklook
from serving.scenes import QUANTILES

RUN_FILE = "run.json"
PARTS_DIR = "parts"
TABLE_FILE = "tiles.parquet"
SUMMARY_FILE = "summary.json"
MAP_FILE = "map.tif"
QUICKLOOK_FILE = "quicklook.png"
UNREADABLE_FILE = "unreadable.csv"
SKIPPED_FILE = "skipped.csv"
PART_TILES = 2048
PART_SECONDS = 30.0
MAX_LISTED_FAILURES = 1000
DEFAULT_SET_SAMPLE = 4096
BOUNDS_COLUMNS: tuple[str, ...] = ("left", "bottom", "right", "top")
# The columns of one unit's results (``pipeline.predict_unit``), besides the embedding.
STRING_COLUMNS: tuple[str, ...] = (
    "identifier",
    "path",
    "status",
    "error",
    "crs",
    "nearest_region",
    "plausible_regions",  # ";"-separated, possibly empty
)
VALUE_COLUMNS: tuple[str, ...] = ("vegetation_pct", "interval_low", "interval_high", "p_value")
FLOAT_COLUMNS: tuple[str, ...] = (*BOUNDS_COLUMNS, *VALUE_COLUMNS, "score")
TABLE_COLUMNS: tuple[str, ...] = (
    "identifier",
    *BOUNDS_COLUMNS,
    *VALUE_COLUMNS,
    "unreliable",
    "nearest_region",
    "plausible_regions",
    "score",
)
# What a part keeps of those (failures go to unreadable.csv instead), and how it is typed.
PART_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    *((name, pa.string()) for name in STRING_COLUMNS),
    ("row", pa.int32()),
    ("col", pa.int32()),
    *((name, pa.float64()) for name in FLOAT_COLUMNS),
    ("unreliable", pa.bool_()),
)
DONE_STATUSES = ("ok", "empty")


def _write_skipped(path: Path, skipped: pa.Table) -> None:
    """``skipped.csv``: every mosaic window skipped (too little valid data, bad values), why."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifier", "row", "col", "reason"])
        for row in skipped.select(["identifier", "row", "col", "error"]).to_pylist():
            writer.writerow([row["identifier"], row["row"], row["col"], row["error"]])


def run_identity(batch_input: BatchInput, bundle: Bundle) -> dict[str, Any]:
    """What results in an output folder belong to: the input and the exact model."""
    manifest = bundle.manifest
    return {
        "input": str(batch_input.path),
        "input_kind": batch_input.kind,
        "modality": manifest.modality,
        "model": manifest.name,
        "model_sha256": manifest.files[MODEL_FILE],
        "source_tile_px": manifest.source_tile_px,
        "units": batch_input.units,
    }


def prepare_out_dir(
    out_dir: Path, batch_input: BatchInput, bundle: Bundle, overwrite: bool
) -> None:
    """Create ``out_dir``, or check that its earlier results belong to this input and model.

    Raises:
        TileError: the folder holds results of another input or model (and not ``overwrite``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = run_identity(batch_input, bundle)
    run_file = out_dir / RUN_FILE
    if run_file.is_file() and not overwrite:
        try:
            found = json.loads(run_file.read_text())
        except ValueError:
            found = {}
        if found != identity:
            differ = ", ".join(
                f"{key} {identity[key]} (found {found.get(key)})"
                for key in identity
                if found.get(key) != identity[key]
            )
            raise TileError(
                f"{out_dir} holds results of another run: expected {differ} "
                "(use another --out, or --overwrite to discard them)"
            )
    if overwrite:
        shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
    run_file.write_text(json.dumps(identity, indent=2) + "\n")


def identifier_keys(identifiers: pa.Array | list[str]) -> np.ndarray:
    """A stable 64-bit hash of each identifier (the region-level SWD's sampling key)."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
            for i in identifiers
        ],
        dtype=np.uint64,
    )


class PartStore:
    """Appends unit results to part files and reads them back (the run's durable state).

    Args:
        out_dir: the run's output folder.
        part_tiles: tiles per part file.
        part_seconds: a part is written at least this often while results arrive.
    """

    def __init__(
        self, out_dir: Path, part_tiles: int = PART_TILES, part_seconds: float = PART_SECONDS
    ) -> None:
        self.directory = out_dir / PARTS_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.part_tiles = part_tiles
        self.part_seconds = part_seconds
        # Unique even for two runs within a second in one process (tests, notebooks).
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._sequence = 0
        self._last_write = time.monotonic()
        self.failed_count = 0
        self.failures: list[dict[str, str]] = []  # the first MAX_LISTED_FAILURES
        self._failure_file = (out_dir / UNREADABLE_FILE).open("w", newline="")
        self._failure_csv = csv.writer(self._failure_file)
        self._failure_csv.writerow(["identifier", "path", "error"])

    def part_files(self) -> list[Path]:
        """The finished part files, in the order they were written."""
        return sorted(self.directory.glob("part-*.parquet"))

    def done_identifiers(self) -> set[str]:
        """Identifiers an earlier run predicted or found empty (failed ones are retried)."""
        done: set[str] = set()
        for table in self.iter_parts(["identifier", "status"]):
            finished = pc.is_in(table["status"], pa.array(DONE_STATUSES))
            done.update(table["identifier"].filter(finished).to_pylist())
        return done

    def add(self, columns: dict[str, np.ndarray]) -> None:
        """Store one unit's rows: failures go to ``unreadable.csv``, the rest to a part."""
        status = columns["status"]
        failed = np.flatnonzero(status == "failed")
        for i in failed:
            row = [str(columns["identifier"][i]), str(columns["path"][i]), str(columns["error"][i])]
            self._failure_csv.writerow(row)
            if len(self.failures) < MAX_LISTED_FAILURES:
                self.failures.append(dict(zip(("identifier", "path", "error"), row, strict=True)))
        self.failed_count += len(failed)
        self._failure_file.flush()
        keep = np.flatnonzero(status != "failed")
        if keep.size:
            self._buffer.append(_to_table(columns, keep))
            self._buffered += keep.size
        if self._buffered >= self.part_tiles or (
            self._buffered and time.monotonic() - self._last_write >= self.part_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part file (atomically)."""
        if self._buffer:
            table = pa.concat_tables(self._buffer)
            name = f"part-{self.run_id}-{self._sequence:05d}.parquet"
            temporary = self.directory / f".{name}.tmp"
            pq.write_table(table, temporary)
            os.replace(temporary, self.directory / name)
            self._sequence += 1
            self._buffer, self._buffered = [], 0
        self._last_write = time.monotonic()

    def close(self) -> None:
        """Write what is buffered and close ``unreadable.csv``."""
        self.flush()
        self._failure_file.close()

    def iter_parts(self, columns: list[str]) -> Iterator[pa.Table]:
        """Yield each part's ``columns``."""
        for path in self.part_files():
            yield pq.read_table(path, columns=columns)

    def read_results(self) -> pa.Table:
        """Every stored row but the embeddings, sorted by identifier, each identifier once."""
        names = [name for name, _ in PART_FIELDS]
        tables = list(self.iter_parts(names))
        if not tables:
            return pa.schema(list(PART_FIELDS)).empty_table()
        table = pa.concat_tables(tables).sort_by("identifier")
        identifiers = table["identifier"].to_numpy(zero_copy_only=False)
        first = np.ones(len(identifiers), bool)
        first[1:] = identifiers[1:] != identifiers[:-1]  # two overlapping runs wrote a tile twice
        return table.filter(pa.array(first)) if not first.all() else table

    def sample_embeddings(self, size: int) -> np.ndarray:
        """The embeddings ``(n <= size, D)`` of the predicted tiles with the smallest hash keys."""
        keys = np.empty(0, np.uint64)
        sample: np.ndarray | None = None
        for table in self.iter_parts(["identifier", "status", "embedding"]):
            table = table.filter(pc.equal(table["status"], "ok"))
            if not table.num_rows:
                continue
            embedding = np.stack(table["embedding"].to_numpy(zero_copy_only=False))  # (n, D)
            keys = np.concatenate([keys, identifier_keys(table["identifier"].to_pylist())])
            sample = embedding if sample is None else np.concatenate([sample, embedding])
            keys, unique = np.unique(keys, return_index=True)  # sorted: smallest keys first
            keys, sample = keys[:size], sample[unique[:size]]
        if sample is None:
            return np.empty((0, 0), np.float32)
        return sample.astype(np.float32)


def read_run_embeddings(out_dir: Path) -> tuple[pa.Table, np.ndarray]:
    """The predicted tiles of a finished or interrupted run, with their embeddings.

    Args:
        out_dir: a ``sarveg predict`` output folder.

    Returns:
        ``(table, embedding)``: every stored column but the embedding, one row per predicted
        tile sorted by identifier, and the embeddings ``(n, D)`` float32 in the same order.

    Raises:
        TileError: the folder holds no part files or no predicted tile.
    """
    parts = sorted((Path(out_dir) / PARTS_DIR).glob("part-*.parquet"))
    if not parts:
        raise TileError(
            f"{out_dir}: expected a sarveg predict output folder with {PARTS_DIR}/part-*.parquet, "
            "found none"
        )
    names = [name for name, _ in PART_FIELDS] + ["embedding"]
    table = pa.concat_tables([pq.read_table(path, columns=names) for path in parts])
    table = table.filter(pc.equal(table["status"], "ok")).sort_by("identifier")
    if not table.num_rows:
        raise TileError(f"{out_dir}: expected predicted tiles in the run, found none")
    identifiers = table["identifier"].to_numpy(zero_copy_only=False)
    first = np.ones(len(identifiers), bool)
    first[1:] = identifiers[1:] != identifiers[:-1]  # two overlapping runs wrote a tile twice
    table = table.filter(pa.array(first))
    embedding = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    return table.drop_columns(["embedding"]), embedding


def _to_table(columns: dict[str, np.ndarray], rows: np.ndarray) -> pa.Table:
    arrays = {name: pa.array(columns[name][rows], type=kind) for name, kind in PART_FIELDS}
    embedding = np.ascontiguousarray(columns["embedding"][rows], np.float32)  # (n, D)
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(
        pa.array(embedding.reshape(-1)), embedding.shape[1]
    )
    return pa.table(arrays)


def finalise(
    out_dir: Path,
    batch_input: BatchInput,
    bundle: Bundle,
    store: PartStore,
    *,
    engine: str,
    resumed: int,
    processed: int,
    set_sample: int,
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """Rebuild the table, map, quick-look and summary from the part store; return the summary."""
    finalise_started = time.perf_counter()
    manifest = bundle.manifest
    results = store.read_results()
    predicted = results.filter(pc.equal(results["status"], "ok"))
    crs, bounds = harmonise_bounds(predicted, batch_input)
    table = predicted.select(list(TABLE_COLUMNS))
    for index, name in enumerate(BOUNDS_COLUMNS):
        table = table.set_column(index + 1, name, pa.array(bounds[:, index]))
    pq.write_table(table, out_dir / TABLE_FILE)
    synthetic = batch_input.synthetic
    write_map(out_dir / MAP_FILE, predicted, bounds, crs, batch_input, manifest, synthetic)
    embedding = store.sample_embeddings(set_sample)
    region = None
    if embedding.shape[0]:
        set_ood = OODScorer.from_bundle(bundle).score_set(embedding)
        region = {
            "n_tiles_sampled": set_ood.n_tiles,
            "swd_by_region": set_ood.swd_by_region,
            "nearest_region": set_ood.nearest_region,
            "score": set_ood.score,
            "p_value": set_ood.p_value,
            "unreliable": set_ood.unreliable,
            "fine_tuning_region": manifest.ood.fine_tuning_region,
        }
    vegetation = table["vegetation_pct"].to_numpy()
    unreliable = table["unreliable"].to_numpy(zero_copy_only=False)
    skipped = results.filter(pc.equal(results["status"], "empty"))
    n_empty = skipped.num_rows
    _write_skipped(out_dir / SKIPPED_FILE, skipped)
    reasons = Counter(reason_kind(r) for r in skipped["error"].to_pylist())
    title = f"{manifest.name} on {batch_input.path.name}"
    quicklook = write_quicklook(
        out_dir / QUICKLOOK_FILE,
        out_dir / MAP_FILE,
        bounds,
        map_values(predicted),
        title,
        manifest.ood.alpha,
        synthetic,
    )
    timings = dict(timings)
    timings["finalise_s"] = time.perf_counter() - finalise_started
    timings["total_s"] = time.perf_counter() - started
    summary: dict[str, Any] = {
        "synthetic": synthetic,
        "input": {
            "path": str(batch_input.path),
            "kind": batch_input.kind,
            "modality": batch_input.modality,
            "tiles": batch_input.n_sources,
            "crs": crs.to_string() if crs is not None else None,
            "notes": list(batch_input.notes),
            "units": batch_input.units,
            "units_source": batch_input.units_source,
        },
        "model": {
            "name": manifest.name,
            "modality": manifest.modality,
            "model_sha256": manifest.files[MODEL_FILE],
            "fine_tuning_regions": manifest.provenance.fine_tuning_regions,
            "trained_on_synthetic_data": manifest.provenance.synthetic,
            "ood_alpha": manifest.ood.alpha,
        },
        "engine": engine,
        "counts": {
            "tiles": batch_input.n_sources,
            "predicted": table.num_rows,
            "empty_windows": n_empty,
            "skipped_by_reason": dict(reasons),
            "unreadable": store.failed_count,
            "done_before_this_run": resumed,
        },
        "unreliable_share": float(unreliable.mean()) if unreliable.size else None,
        "vegetation_pct": _describe(vegetation),
        "region_ood": region,
        "unreadable": store.failures,
        "unreadable_listed": len(store.failures),
        "timings_s": timings,
        "tiles_per_s": _rate(processed, timings.get("inference_s", 0.0)),
        "outputs": {
            "table": TABLE_FILE,
            "map": MAP_FILE,
            "quicklook": QUICKLOOK_FILE if quicklook else None,
            "unreadable": UNREADABLE_FILE,
            "skipped": SKIPPED_FILE,
        },
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _describe(vegetation: np.ndarray) -> dict[str, float] | None:
    if not vegetation.size:
        return None
    quantiles = np.percentile(vegetation, QUANTILES)
    return {
        "mean": float(vegetation.mean()),
        **{f"p{q}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
    }


def _rate(tiles: int, seconds: float) -> float | None:
    """Tiles per second of this run's inference (None when nothing ran)."""
    return tiles / seconds if seconds > 0 and tiles > 0 else None
