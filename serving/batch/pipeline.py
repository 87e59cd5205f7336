"""Batch inference over a folder of tiles or a mosaic: the engine-independent pipeline.

A run lists the input's tiles (:mod:`serving.batch.inputs`), drops those an earlier run into the
same output folder finished, cuts the rest into *units* of ``batch_size`` tiles in a fixed
order, and hands the units to an engine:

- :class:`LocalEngine`: decode threads -> batched ONNX Runtime inference -> a writer thread,
  joined by bounded queues, so decoding, inference and writing overlap and memory stays
  bounded whatever the input size;
- ``serving.batch.ray_engine.RayEngine``: the same unit functions in a Ray Data actor pool.

Either way a unit goes through :meth:`UnitDecoder.decode` and :func:`predict_unit`, which do
what the service does with an upload (:func:`serving.decoding.jobs.prepare_tile`, NetCDF in a
child process, the bundle's resampling, the tile checks on every mosaic window,
:meth:`ServedModel.predict_batch`), so a tile gets the service's numbers and both engines form
identical batches. Results are appended to a part-file store as they come
(:mod:`serving.batch.outputs`); the map, table and summary are rebuilt from it at the end.
Unreadable tiles are recorded and skipped, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from sarveg.bundle import Bundle
from sarveg.errors import TileError
from sarveg.footprint import footprint_mismatch
from sarveg.resample import resample_tile
from sarveg.scene import SceneTile, open_scene
from sarveg.tiles import sniff_format
from serving.batch.inputs import BatchInput, TileSource
from serving.batch.outputs import (
    BOUNDS_COLUMNS,
    FLOAT_COLUMNS,
    STRING_COLUMNS,
    PartStore,
    finalise,
    prepare_out_dir,
)
from serving.decoding import DecodeLimits, DecoderPool, ModelSpec, PreparedTile
from serving.decoding.jobs import TileRequest, prepare_tile
from serving.model import ServedModel
from serving.runtime import OnnxModel, usable_cores

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BATCH_SIZE = 32
# Decoded units waiting for the model: enough to hide decoding, few enough to bound memory.
PREFETCH_BYTES = 256 * 1024 * 1024
MAX_PENDING_WRITES = 2

Columns = dict[str, np.ndarray]
"""One unit's results: a row per source (every column the same length)."""


@dataclass(frozen=True)
class BatchJob:
    """What an engine needs to run units.

    Attributes:
        bundle: the verified model bundle.
        batch_size: tiles per unit (one model call per unit).
        intra_op_threads: ONNX Runtime threads per session (None: the usable cores).
        providers: ONNX Runtime providers (None: CUDA if usable, else CPU).
        decode_workers: decoding threads of the local engine.
        units: units every two-band VV/VH tile or window is read as (None: told per tile);
            :func:`run_batch` sets them from the input.
    """

    bundle: Bundle
    batch_size: int = DEFAULT_BATCH_SIZE
    intra_op_threads: int | None = None
    providers: list[str] | None = None
    decode_workers: int | None = None
    units: str | None = None

    @property
    def modality(self) -> str:
        """The bundle's modality: the only tiles this run reads."""
        return self.bundle.manifest.modality

    @property
    def tile_px(self) -> int:
        """Mosaic window side in mosaic pixels."""
        return self.bundle.manifest.source_tile_px


class Engine(Protocol):
    """Runs units and passes each unit's results to ``sink`` (from any one thread)."""

    name: str

    def run(
        self, job: BatchJob, units: Iterable[list[TileSource]], sink: Callable[[Columns], None]
    ) -> None:
        """Process every unit."""


def load_served_model(
    bundle: Bundle, intra_op_threads: int | None, providers: list[str] | None
) -> ServedModel:
    """The bundle in an ONNX Runtime session, for tile scoring only (no set-scoring caches)."""
    onnx = OnnxModel(bundle.model_path, providers=providers, intra_op_threads=intra_op_threads)
    return ServedModel(bundle, onnx, prepare_sets=False)


@dataclass(eq=False)
class DecodedUnit:
    """A unit after decoding: what happened to each source and the stacked model inputs."""

    sources: list[TileSource]
    status: list[
        str
    ]  # per source: "ok", "empty" (mosaic window skipped, reason in error), "failed"
    error: list[str]
    bounds: list[tuple[float, float, float, float]]
    crs: list[str]
    array: np.ndarray  # (b, C, S, S) float32, the "ok" sources in order
    # Per source: ground side over the training chips' (None: unknown); beyond 2x either way
    # the tile is flagged unreliable, as the service flags it.
    footprint_ratio: list[float | None] = field(default_factory=list)


@dataclass
class _Slot:
    status: str = "failed"
    error: str = ""
    bounds: tuple[float, float, float, float] = (np.nan, np.nan, np.nan, np.nan)
    crs: str = ""
    prepared: np.ndarray | None = None
    footprint_ratio: float | None = None


class UnitDecoder:
    """Decodes units of tile sources into model inputs, as the service decodes uploads.

    GeoTIFFs are read in the calling thread; NetCDF files in a decoding child per thread
    (:class:`serving.decoding.DecoderPool`), because a damaged one can crash GDAL.
    Thread-safe.

    Args:
        model: the served model.
        units: units of two-band VV/VH tiles and windows (None: told per tile, or per scene).
    """

    def __init__(self, model: ServedModel, units: str | None = None) -> None:
        self.model = model
        self.units = units
        self.modality = model.manifest.modality
        self.tile_px = model.manifest.source_tile_px
        self.specs = {
            self.modality: ModelSpec(
                model.manifest.input_size, self.tile_px, model.manifest.footprint_m
            )
        }
        self.limits = DecodeLimits.from_env()
        self._local = threading.local()
        self._sandboxes: list[DecoderPool] = []
        self._lock = threading.Lock()

    def _sandbox(self) -> DecoderPool:
        sandbox = getattr(self._local, "sandbox", None)
        if sandbox is None:
            limits = DecodeLimits(**{**vars(self.limits), "workers": 1})
            sandbox = self._local.sandbox = DecoderPool(limits)
            with self._lock:
                self._sandboxes.append(sandbox)
        return sandbox

    def close(self) -> None:
        """Stop the NetCDF child processes."""
        with self._lock:
            sandboxes, self._sandboxes = self._sandboxes, []
        for sandbox in sandboxes:
            sandbox.close()

    def read_file(self, path: str) -> PreparedTile:
        """Decode one tile file (the service's rule: NetCDF by content goes to the child)."""
        with open(path, "rb") as handle:
            data = handle.read()
        request = TileRequest(
            data, self.modality, self.specs, self.limits.tile_max_pixels, units=self.units
        )
        if sniff_format(data[:8]) == "netcdf":
            return self._sandbox().prepare_tile(request)
        return prepare_tile(request)

    def decode(self, sources: Sequence[TileSource]) -> DecodedUnit:
        """Decode and resample a unit; a tile that fails is recorded, never raised."""
        slots = [_Slot() for _ in sources]
        if sources and sources[0].row >= 0:
            self._decode_windows(sources, slots)
        else:
            for source, slot in zip(sources, slots, strict=True):
                _guard(slot, lambda s=source: self.read_file(s.path), self._accept)
        ready = [slot.prepared for slot in slots if slot.prepared is not None]
        channels, size = len(self.model.manifest.band_names), self.model.manifest.input_size
        array = np.stack(ready) if ready else np.empty((0, channels, size, size), np.float32)
        return DecodedUnit(
            sources=list(sources),
            status=[slot.status for slot in slots],
            error=[slot.error for slot in slots],
            bounds=[slot.bounds for slot in slots],
            crs=[slot.crs for slot in slots],
            array=array,
            footprint_ratio=[slot.footprint_ratio for slot in slots],
        )

    def _accept(self, slot: _Slot, tile: PreparedTile) -> None:
        slot.bounds = tile.bounds
        slot.crs = tile.crs
        slot.prepared = tile.array  # (C, S, S)
        slot.footprint_ratio = tile.input.footprint_ratio if tile.input is not None else None
        slot.status = "ok"

    def _decode_windows(self, sources: Sequence[TileSource], slots: list[_Slot]) -> None:
        """Mosaic windows of one unit, read from one open scene (the service's scene rule)."""
        try:
            footprint = self.model.manifest.footprint_m
            with open_scene(
                sources[0].path,
                self.tile_px,
                modality=self.modality,
                footprint_m=footprint,
                units=self.units,
            ) as scene:
                for source, slot in zip(sources, slots, strict=True):
                    _guard(
                        slot, lambda s=source: scene.read_tile(s.row, s.col), self._accept_window
                    )
        except TileError as error:  # the mosaic itself became unreadable
            for slot in slots:
                if slot.status == "failed" and not slot.error:
                    slot.error = str(error)

    def _accept_window(self, slot: _Slot, window: SceneTile) -> None:
        tile = window.tile
        slot.bounds = tile.bounds
        if window.problem is not None:  # skipped like the service skips it in a scene
            slot.status = "empty"
            slot.error = window.problem
            return
        slot.crs = tile.crs.to_string() if tile.crs is not None else ""
        slot.prepared = resample_tile(tile.array, self.model.manifest.input_size)  # (C, S, S)
        slot.status = "ok"


def _guard(slot: _Slot, read: Callable[[], T], accept: Callable[[_Slot, T], None]) -> None:
    """Run ``read`` then ``accept``; any failure is written into the slot, never raised."""
    try:
        accept(slot, read())
    except TileError as error:
        slot.error = str(error)
    except Exception as error:  # noqa: BLE001 - one bad tile must not end a long run
        slot.error = f"{type(error).__name__}: {error}"


def predict_unit(model: ServedModel, decoded: DecodedUnit) -> Columns:
    """Run a decoded unit through the model and the OOD block; one row per source."""
    n = len(decoded.sources)
    columns: Columns = {name: np.full(n, np.nan) for name in FLOAT_COLUMNS}
    strings = {name: [""] * n for name in STRING_COLUMNS}
    strings["identifier"] = [s.identifier for s in decoded.sources]
    strings["path"] = [s.path for s in decoded.sources]
    strings["status"] = list(decoded.status)
    strings["error"] = list(decoded.error)
    strings["crs"] = list(decoded.crs)
    columns["row"] = np.array([s.row for s in decoded.sources], np.int32)
    columns["col"] = np.array([s.col for s in decoded.sources], np.int32)
    columns["unreliable"] = np.zeros(n, bool)
    bounds = np.array(decoded.bounds, np.float64).reshape(n, 4)
    for index, name in enumerate(BOUNDS_COLUMNS):
        columns[name] = bounds[:, index]
    embedding = np.full((n, model.manifest.embedding_size), np.nan, np.float32)  # (n, D)
    ok_rows = [i for i, status in enumerate(decoded.status) if status == "ok"]
    outcomes = model.predict_batch(decoded.array) if ok_rows else []
    for row, outcome in zip(ok_rows, outcomes, strict=True):
        if outcome is None:
            strings["status"][row] = "failed"
            strings["error"][row] = (
                "the model could not score this tile: expected finite model outputs, found NaN "
                "or infinity (too few valid pixels in some channels?)"
            )
            continue
        columns["vegetation_pct"][row] = outcome.vegetation_pct
        columns["interval_low"][row] = outcome.ood.interval_low
        columns["interval_high"][row] = outcome.ood.interval_high
        columns["p_value"][row] = outcome.ood.p_value
        columns["score"][row] = outcome.ood.score
        ratio = decoded.footprint_ratio[row] if decoded.footprint_ratio else None
        columns["unreliable"][row] = outcome.ood.unreliable or footprint_mismatch(ratio)
        strings["nearest_region"][row] = outcome.ood.nearest_region
        strings["plausible_regions"][row] = ";".join(outcome.ood.plausible_regions)
        embedding[row] = outcome.embedding
    for name, values in strings.items():
        columns[name] = np.array(values, dtype=object)
    columns["embedding"] = embedding
    return columns


def plan_units(
    sources: Iterable[TileSource], done: set[str], batch_size: int
) -> Iterator[list[TileSource]]:
    """Yield the not-yet-done sources in order, ``batch_size`` at a time."""
    unit: list[TileSource] = []
    for source in sources:
        if source.identifier in done:
            continue
        unit.append(source)
        if len(unit) == batch_size:
            yield unit
            unit = []
    if unit:
        yield unit


class LocalEngine:
    """One machine: decode threads, inference in the calling thread, one writer thread."""

    name = "local"

    def run(
        self, job: BatchJob, units: Iterable[list[TileSource]], sink: Callable[[Columns], None]
    ) -> None:
        """Process every unit, overlapping decoding, inference and writing."""
        model = load_served_model(job.bundle, job.intra_op_threads, job.providers)
        manifest = model.manifest
        workers = job.decode_workers or usable_cores()
        unit_bytes = job.batch_size * len(manifest.band_names) * manifest.input_size**2 * 4
        prefetch = int(np.clip(PREFETCH_BYTES // max(unit_bytes, 1), 1, 2 * workers))
        decoder = UnitDecoder(model, job.units)
        decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        write_pool = ThreadPoolExecutor(1, thread_name_prefix="write")
        pending: deque[Future[DecodedUnit]] = deque()
        writes: deque[Future[None]] = deque()
        remaining = iter(units)
        try:

            def submit_next() -> None:
                unit = next(remaining, None)
                if unit is not None:
                    pending.append(decode_pool.submit(decoder.decode, unit))

            for _ in range(prefetch):
                submit_next()
            while pending:
                decoded = pending.popleft().result()
                submit_next()
                result = predict_unit(model, decoded)
                del decoded
                writes.append(write_pool.submit(sink, result))
                while len(writes) > MAX_PENDING_WRITES:
                    writes.popleft().result()
            while writes:
                writes.popleft().result()
        finally:
            decode_pool.shutdown(wait=True, cancel_futures=True)
            write_pool.shutdown(wait=True)  # results already computed still reach the store
            decoder.close()


@dataclass
class RunReport:
    """What a run did, for the command line."""

    summary: dict
    out_dir: Path
    timings_s: dict[str, float] = field(default_factory=dict)


def run_batch(
    batch_input: BatchInput,
    job: BatchJob,
    out_dir: str | Path,
    engine: Engine,
    *,
    set_sample: int,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Predict every tile of ``batch_input`` not already done in ``out_dir`` and write outputs.

    Args:
        batch_input: the discovered input.
        job: the bundle and batching settings.
        out_dir: output folder (created; may hold an earlier run of the same input and model).
        engine: :class:`LocalEngine` or ``serving.batch.ray_engine.RayEngine``.
        set_sample: most tiles whose embeddings enter the region-level SWD.
        overwrite: discard an earlier run's results in ``out_dir`` instead of resuming.
        progress: show a progress bar (tiles/s).

    Raises:
        TileError: ``out_dir`` holds another input's or another model's results.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    # The input's units (declared, or told once for a whole mosaic) hold for every unit.
    job = replace(job, units=batch_input.units)
    prepare_out_dir(out_dir, batch_input, job.bundle, overwrite)
    store = PartStore(out_dir)
    done = store.done_identifiers()
    resumed = sum(1 for source in batch_input.iter_sources() if source.identifier in done)
    units = plan_units(batch_input.iter_sources(), done, job.batch_size)
    bar = tqdm(
        total=batch_input.n_sources,
        initial=resumed,
        unit="tile",
        desc=f"predict ({engine.name})",
        disable=not progress,
        smoothing=0.05,
    )

    processed = 0

    def sink(columns: Columns) -> None:
        nonlocal processed
        store.add(columns)
        processed += len(columns["identifier"])
        bar.update(len(columns["identifier"]))

    inference_started = time.perf_counter()
    try:
        engine.run(job, units, sink)
    finally:
        store.close()
        bar.close()
    inference_s = time.perf_counter() - inference_started
    timings = {"inference_s": inference_s}
    summary = finalise(
        out_dir,
        batch_input,
        job.bundle,
        store,
        engine=engine.name,
        resumed=resumed,
        processed=processed,
        set_sample=set_sample,
        timings=timings,
        started=started,
    )
    return RunReport(summary=summary, out_dir=out_dir, timings_s=summary["timings_s"])
