"""``sarveg adapt``: fine-tune a bundle on a few labels of a new region and ship a new bundle.

    sarveg adapt --model models/NAME --data NEW_REGION_DIR --labels LABELS --out models/NEW_NAME
        [--old-data OLD_TRAINING_DIR] [--ood-data INDEPENDENT_DIR] [--config YAML] [key=value ...]

``LABELS`` is a CSV with ``identifier,vegetation_pct`` (the file ``sarveg select`` writes, with
the ``vegetation_pct`` column filled in; rows left empty are ignored) or a folder of MODIS VCF
GeoTIFFs named ``{identifier}.tif`` (the geetiles ``modis*`` layout, searched recursively).

What goes where (``N`` = the new region, ``O`` = the region(s) the bundle was fine-tuned on):

- **labelled tiles of N**, split reproducibly by identifier (``seed``): ``calibration_fraction``
  (35 %) calibrates the interval and is never fitted, ``early_stopping_fraction`` (15 %) joins
  the early-stopping set, the rest is fine-tuned on. At least ``minimum_labels()`` (25 with the
  defaults: 35 % of them must be the 9 calibration tiles, the fewest for which a 90 %
  split-conformal interval is finite) or the command refuses.
- **fine-tuning** starts from the bundle's own weights (``weights.safetensors``). With
  ``--old-data`` (the folder the bundle was fine-tuned on) up to ``rehearsal_tiles`` of O's
  labelled train tiles, recorded in the weights, are mixed in (rehearsal, against forgetting),
  and the new tiles are repeated so they make ``new_share`` of every epoch; early stopping on the
  pooled RMSE of N's early-stopping tiles and as many of O's recorded early-stopping tiles.
  The finished fine-tune is kept in the work folder and reused by a rerun with the same inputs.
- **OOD block**, re-calibrated with the new graph. In distribution: N and, with ``--old-data``,
  O (``ood.in_distribution_regions``), each scored against its own reference and calibrated on
  its own tiles; a tile's p-value is the largest of its per-region p-values, so tiles of either
  region are mis-flagged at most ``alpha`` of the time. N's reference and OOD calibration tiles
  are random samples of its *unlabelled* tiles (``reference_tiles``, ``calibration_tiles``; the
  p-value needs no label), plus the labelled calibration tiles; O's are, as in ``sarveg export``,
  half its test split and the calibration tiles recorded in the weights, re-embedded. The
  interval is calibrated on every labelled calibration tile of both regions.
- **references** of every other region with labelled test tiles in ``--old-data``, re-embedded.
- **before / after** (``provenance.config.adapt.evaluation``, in the model card): RMSE and
  unreliable share of the parent and the adapted bundle on O's other test half, on N's labelled
  calibration tiles and on N's unlabelled tiles in neither reference nor calibration; with
  ``--ood-data`` also on every labelled tile of O and N there (and ``ood.measured`` from them).

Without ``--old-data`` the old region's tiles cannot be re-embedded: the adapted bundle has N
as its only in-distribution region (O's tiles will often be flagged), no rehearsal, and
forgetting is not measured. The interval calibration tiles of N are the labelled ones, chosen by
``sarveg select`` rather than at random, so their coverage is a guide, not a guarantee, for
random tiles of N (selection favours unusual tiles, which tends to widen the intervals).
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import Field
from tqdm import tqdm

from sarveg.bundle import (
    MODEL_FILE,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    Bundle,
    BundleManifest,
    RegionMetrics,
    finalise_bundle,
    load_bundle,
)
from sarveg.conformal import interval_coverage
from sarveg.errors import TileError
from sarveg.labels import read_label
from sarveg.ood import OODScorer, calibrate_ood
from sarveg.ood_evaluation import evaluate_ood
from sarveg.reference import RegionReference, concat_references, save_reference
from training.bundle_weights import load_bundle_weights, save_bundle_weights
from training.cache import TileCache, prepare_cache
from training.config import ConfigError, StrictModel, load_typed_config
from training.evaluate import score_predictions, synthetic_data
from training.export import (
    cap_positions,
    check_bundle_target,
    code_version,
    describe_data,
    labelled_rows,
    lookup_rows,
    require_independent,
    run_rows,
    stage_bundle,
    take,
)
from training.finetune import FinetuneTiles, fit, row_ids
from training.finetune_config import FinetuneConfig, FinetuneOptimConfig
from training.label_budget import region_rng, split_holdout
from training.model_card import CARD_FILE, INDEPENDENT_FOLDER, render_model_card
from training.onnx_export import export_best, make_session, reports_as_dicts
from training.regressor import FinetunedModel
from training.runlog import JsonlLog

# A split-conformal 90 % interval is finite only with ceil((m + 1) * 0.9) <= m, i.e. m >= 9.
MIN_CALIBRATION_LABELS = 9
MIN_TRAIN_LABELS = 4
MIN_EARLY_STOPPING_LABELS = 2
FINETUNE_FILE = "finetune.pt"
CONFIG_FILE = "adapt_config.yaml"
CHECK_TILES = 500


class AdaptConfig(StrictModel):
    """Choices of ``sarveg adapt`` besides its folders (unknown keys are errors)."""

    seed: int = 0
    region: str | None = Field(None, description="the new region (default: the data's only one)")
    calibration_fraction: float = Field(0.35, gt=0.0, lt=1.0)
    early_stopping_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    rehearsal_tiles: int = Field(128, ge=0, description="old-region train tiles mixed in")
    new_share: float = Field(0.5, gt=0.0, le=1.0, description="new tiles' share of an epoch")
    reference_tiles: int = Field(1000, ge=10, description="unlabelled new tiles as reference")
    calibration_tiles: int = Field(1000, ge=10, description="unlabelled new tiles calibrating")
    max_reference: int = Field(2000, ge=10, description="reference tiles per other region")
    variant: str = Field("same", description="'same' as the parent, 'auto' or a variant name")
    timing_seconds: float = Field(0.2, gt=0.0)
    timing_repeats: int = Field(1, ge=1)
    optim: FinetuneOptimConfig = Field(
        default_factory=lambda: FinetuneOptimConfig(
            max_epochs=20, patience=5, batch_size=16, lr=5e-5, decoder_lr=5e-4
        )
    )


def load_adapt_config(preset_or_path: str | Path | None, overrides: list[str]) -> AdaptConfig:
    """Defaults or a YAML file, then ``key=value`` overrides, validated."""
    return load_typed_config(AdaptConfig, preset_or_path, overrides, "adaptation config")


def minimum_labels(config: AdaptConfig) -> int:
    """The fewest labels whose split leaves enough tiles to calibrate, train and stop."""
    for n in range(1, 100_000):
        calibration, stopping, train = split_counts(n, config)
        if (
            calibration >= MIN_CALIBRATION_LABELS
            and stopping >= MIN_EARLY_STOPPING_LABELS
            and train >= MIN_TRAIN_LABELS
        ):
            return n
    raise ValueError("expected fractions that leave tiles to train on")


def split_counts(n: int, config: AdaptConfig) -> tuple[int, int, int]:
    """``(calibration, early stopping, train)`` tiles out of ``n`` labelled ones."""
    calibration = round(config.calibration_fraction * n)
    stopping = round(config.early_stopping_fraction * n)
    return calibration, stopping, n - calibration - stopping


def read_labels(path: Path) -> dict[str, float]:
    """Labels by chip identifier from a CSV (``identifier,vegetation_pct``) or MODIS rasters.

    Raises:
        ValueError: a missing file or column, a value that is not a percentage, a duplicate.
    """
    labels: dict[str, float] = {}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise ValueError(f"expected MODIS VCF GeoTIFFs in {path}, found none")
        for file in tqdm(files, desc="read labels", leave=False):
            try:
                value = read_label(file)
            except TileError as error:
                raise ValueError(f"{file}: {error}") from error
            if math.isfinite(value):  # a chip with no valid MODIS pixel has no label
                labels[file.stem] = value
        return labels
    if not path.is_file():
        raise ValueError(
            f"expected a labels CSV or a folder of MODIS rasters at {path}, found none"
        )
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"identifier", "vegetation_pct"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: expected columns identifier,vegetation_pct, found {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            text = (row["vegetation_pct"] or "").strip()
            if not text:  # a tile sarveg select proposed but nobody labelled
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"{path}:{line}: expected vegetation_pct a number in 0..100, found {text!r}"
                ) from None
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{path}:{line}: expected vegetation_pct in 0..100, found {value}")
            identifier = row["identifier"].strip()
            if identifier in labels:
                raise ValueError(
                    f"{path}:{line}: expected one label per tile, found {identifier} twice"
                )
            labels[identifier] = value
    return labels


@dataclass(frozen=True)
class NewRegionTiles:
    """Cache rows of the new region, by use."""

    train: np.ndarray
    early_stopping: np.ndarray
    calibration: np.ndarray  # labelled, never fitted
    reference: np.ndarray  # unlabelled sample
    ood_calibration: np.ndarray  # unlabelled sample
    held_out: np.ndarray  # unlabelled, in none of the above
    labels: np.ndarray  # (len(cache),) label per row, NaN unless in the labels file


def split_new_region(
    cache: TileCache, region: str, labels: dict[str, float], config: AdaptConfig, source: Path
) -> NewRegionTiles:
    """Match the labels to the new region's tiles and cut every part (see the module docstring).

    Raises:
        ValueError: labels for tiles that are not in the data, or too few labels.
    """
    rows = cache.indices(regions=[region])
    by_identifier = {cache.identifiers[i]: int(i) for i in rows}
    unknown = sorted(set(labels) - set(by_identifier))
    if unknown:
        raise ValueError(
            f"expected labels for tiles of {region} in {source}, found {len(unknown)} of "
            f"{len(labels)} identifiers that are not there (e.g. {', '.join(unknown[:3])}): the "
            "identifier column must hold chip identifiers, as sarveg select writes them"
        )
    needed = minimum_labels(config)
    if len(labels) < needed:
        raise ValueError(
            f"too few labels to calibrate: expected at least {needed} labelled tiles of {region} "
            f"({MIN_CALIBRATION_LABELS} calibrate a finite 90 % interval at calibration_fraction "
            f"{config.calibration_fraction}, plus tiles to train and stop on), found {len(labels)}"
        )
    values = np.full(len(cache), np.nan)
    for identifier, value in labels.items():
        values[by_identifier[identifier]] = value
    ordered = np.array(sorted(by_identifier[i] for i in labels), dtype=np.int64)
    ordered = ordered[np.argsort([cache.identifiers[i] for i in ordered], kind="stable")]
    shuffled = ordered[region_rng(config.seed, region, "adapt-labels").permutation(len(ordered))]
    n_cal, n_stop, _ = split_counts(len(ordered), config)
    unlabelled = np.setdiff1d(rows, ordered)
    unlabelled = unlabelled[np.argsort([cache.identifiers[i] for i in unlabelled], kind="stable")]
    pool = unlabelled[region_rng(config.seed, region, "adapt-pool").permutation(len(unlabelled))]
    n_ref = min(config.reference_tiles, len(pool) // 3)
    n_ood = min(config.calibration_tiles, (len(pool) - n_ref) // 2)
    if n_ref < 10 or n_ood < 10:
        raise ValueError(
            f"expected at least 30 unlabelled tiles of {region} in {source} for its reference "
            f"and OOD calibration, found {len(pool)}"
        )
    return NewRegionTiles(
        train=np.sort(shuffled[n_cal + n_stop :]),
        early_stopping=np.sort(shuffled[n_cal : n_cal + n_stop]),
        calibration=np.sort(shuffled[:n_cal]),
        reference=np.sort(pool[:n_ref]),
        ood_calibration=np.sort(pool[n_ref : n_ref + n_ood]),
        held_out=np.sort(pool[n_ref + n_ood :]),
        labels=values,
    )


def stack_rows(
    parts: list[tuple[TileCache, np.ndarray, np.ndarray]], input_size: int, path: Path
) -> TileCache:
    """An in-memory cache of rows of several caches, with the labels given for them.

    Args:
        parts: ``(cache, rows, vegetation_pct)`` per source; labels ``(len(rows),)``.
        input_size: the tile side.
        path: recorded as the cache's folder (the work folder).
    """
    first = parts[0][0]
    # Fancy indexing reads the rows in the order given, repeats included.
    tiles = np.concatenate([np.asarray(c.tiles[r]) for c, r, _ in parts])
    return TileCache(
        path=path,
        tiles=tiles,  # (N, C, S, S) float16
        identifiers=[c.identifiers[i] for c, r, _ in parts for i in r],
        regions=[c.regions[i] for c, r, _ in parts for i in r],
        splits=[c.splits[i] for c, r, _ in parts for i in r],
        vegetation_pct=np.concatenate([np.asarray(v, np.float64) for _, _, v in parts]),
        modality=first.modality,
        band_names=first.band_names,
        input_size=input_size,
        mean=first.mean,
        std=first.std,
        key="adapt-" + "-".join(c.key[:8] for c, _, _ in parts),
    )


@dataclass(frozen=True)
class OldRegion:
    """What ``--old-data`` gives: the old region's recorded tiles and every region's test tiles."""

    regions: list[str]
    cache: TileCache  # the old fine-tuning regions, every split
    rehearsal: np.ndarray
    early_stopping: np.ndarray
    calibration: np.ndarray
    test_cache: TileCache  # every region's test split
    test_rows: dict[str, np.ndarray]  # labelled test rows per region (new region excluded)
    reference_positions: dict[str, np.ndarray]  # into test_rows
    evaluation_positions: dict[str, np.ndarray]  # old in-distribution regions only


def gather_old_region(
    old_data: Path,
    checkpoint: dict[str, Any],
    new_region: str,
    modality: str,
    input_size: int,
    config: AdaptConfig,
    cache_dir: Path | None,
    progress: bool,
) -> OldRegion:
    """Look up the old region's recorded tiles in ``old_data`` and cut its test split in two."""
    regions = [r for r in checkpoint["config"]["data"]["regions"] if r != new_region]
    cache = prepare_cache(
        old_data, modality, input_size, regions, None, cache_dir, progress=progress
    )
    recorded = checkpoint["tiles"]

    def rows_of(key: str) -> np.ndarray:
        pairs = [p for p in recorded[key] if p[0] in regions]
        return lookup_rows(cache, pairs, key.replace("_", " "))

    labelled = rows_of("labelled")
    rehearsal = cap_positions(
        np.arange(len(labelled)), config.rehearsal_tiles, config.seed, "rehearsal"
    )
    test_cache = prepare_cache(
        old_data, modality, input_size, None, ["test"], cache_dir, progress=progress
    )
    test_rows = {
        r: labelled_rows(test_cache, test_cache.indices(regions=[r]))
        for r in sorted(set(test_cache.regions))
        if r != new_region
    }
    test_rows = {r: rows for r, rows in test_rows.items() if len(rows)}
    missing = [r for r in regions if r not in test_rows]
    if missing:
        raise ValueError(f"expected labelled test tiles of {missing} in {old_data}, found none")
    reference_positions, evaluation_positions = {}, {}
    for region, rows in test_rows.items():
        if region in regions:
            first, rest = split_holdout(
                [test_cache.identifiers[i] for i in rows], [region] * len(rows), 0.5, config.seed
            )
            evaluation_positions[region] = rest
        else:
            first = np.arange(len(rows))
        reference_positions[region] = cap_positions(
            first, config.max_reference, config.seed, region
        )
    return OldRegion(
        regions=regions,
        cache=cache,
        rehearsal=labelled[rehearsal],
        early_stopping=rows_of("early_stopping"),
        calibration=rows_of("calibration"),
        test_cache=test_cache,
        test_rows=test_rows,
        reference_positions=reference_positions,
        evaluation_positions=evaluation_positions,
    )


def fingerprint(*parts: Any) -> str:
    """sha256 of the JSON of everything a finished fine-tune depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def finetune_adapted(
    finetuned: FinetunedModel,
    new_cache: TileCache,
    new: NewRegionTiles,
    old: OldRegion | None,
    config: AdaptConfig,
    work_dir: Path,
    key: str,
    progress: bool,
) -> tuple[FinetunedModel, dict[str, Any]]:
    """Fine-tune from the bundle's weights, or reuse the finished fine-tune in ``work_dir``."""
    ckpt = finetuned.checkpoint
    new_region = new_cache.regions[int(new.train[0])]
    ft_config = FinetuneConfig.model_validate(ckpt["config"])
    regions = ([*old.regions] if old is not None else []) + [new_region]
    ft_config = ft_config.model_copy(
        update={
            "seed": config.seed,
            "optim": config.optim,
            "pretrained": None,
            "data": ft_config.data.model_copy(update={"regions": regions}),
        }
    )
    n_old = 0 if old is None else len(old.rehearsal)
    repeat = (
        1
        if n_old == 0
        else max(
            1, round(config.new_share / (1 - config.new_share + 1e-9) * n_old / len(new.train))
        )
    )
    train_rows = np.repeat(new.train, repeat)
    parts = [
        (new_cache, train_rows, new.labels[train_rows]),
        (new_cache, new.early_stopping, new.labels[new.early_stopping]),
    ]
    stop_old = np.zeros(0, np.int64)
    if old is not None:
        stop_old = cap_positions(
            np.arange(len(old.early_stopping)), len(new.early_stopping), config.seed, "stop"
        )
        stop_old = old.early_stopping[stop_old]
        parts += [
            (old.cache, old.rehearsal, old.cache.vegetation_pct[old.rehearsal]),
            (old.cache, stop_old, old.cache.vegetation_pct[stop_old]),
        ]
    stacked = stack_rows(parts, finetuned.input_size, work_dir)
    sizes = np.cumsum([0, *(len(r) for _, r, _ in parts)])
    position = [np.arange(sizes[i], sizes[i + 1]) for i in range(len(parts))]
    labelled = np.concatenate([position[0], *([position[2]] if old is not None else [])])
    stopping = np.concatenate([position[1], *([position[3]] if old is not None else [])])
    tiles_used = {
        "labelled": row_ids(new_cache, new.train)
        + ([] if old is None else row_ids(old.cache, old.rehearsal)),
        "early_stopping": row_ids(new_cache, new.early_stopping)
        + ([] if old is None else row_ids(old.cache, stop_old)),
        "calibration": ([] if old is None else row_ids(old.cache, old.calibration))
        + row_ids(new_cache, new.calibration),
    }
    model = copy.deepcopy(finetuned.model)
    saved = work_dir / FINETUNE_FILE
    outcome: dict[str, Any]
    if (
        saved.is_file()
        and (state := torch.load(saved, map_location="cpu", weights_only=False))["key"] == key
    ):
        model.load_state_dict(state["model"])
        outcome = state["outcome"] | {"reused": True}
    else:
        torch.manual_seed(config.seed)
        tiles = FinetuneTiles(
            candidates=labelled,
            labelled=labelled,
            early_stopping=stopping,
            calibration=np.zeros(0, np.int64),
            test=np.zeros(0, np.int64),
        )
        started = time.perf_counter()
        log = JsonlLog(work_dir / "log.jsonl")
        # Keep the trained decoder's bias: resetting it to the label mean would undo training.
        outcome = fit(model, stacked, tiles, ft_config, log, progress, init_bias=False)
        outcome |= {"seconds": time.perf_counter() - started, "repeat_new": repeat}
        partial = saved.with_suffix(".partial")
        torch.save({"key": key, "model": model.state_dict(), "outcome": outcome}, partial)
        partial.replace(saved)
        outcome = outcome | {"reused": False}
    model.eval()
    summary = dict(ckpt.get("summary") or {}) | {"adapt": outcome}
    checkpoint = dict(ckpt) | {
        "config": ft_config.model_dump(mode="json"),
        "model": model.state_dict(),
        "tiles": tiles_used,
        "summary": summary,
    }
    return FinetunedModel(model=model, checkpoint=checkpoint, path=saved), outcome


def outputs_of(
    session: Any, cache: TileCache, rows: np.ndarray, labels: np.ndarray | None = None
) -> RegionReference:
    """Predictions and embeddings of ``rows``, with ``labels`` instead of the cache's if given."""
    group = run_rows(session, cache, rows)
    if labels is None:
        return group
    return RegionReference(group.embedding, np.asarray(labels, np.float32), group.predicted_pct)


def unlabelled(group: RegionReference) -> RegionReference:
    """The same tiles with their labels dropped (NaN): the new region's labels are not known."""
    return RegionReference(
        group.embedding, np.full(len(group.embedding), np.nan, np.float32), group.predicted_pct
    )


def compare(
    before: tuple[OODScorer, Any],
    after: tuple[OODScorer, Any],
    cache: TileCache,
    rows: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, Any]:
    """RMSE, unreliable share and (after) interval coverage of the parent and the adapted bundle."""
    figures: dict[str, Any] = {"n_tiles": int(len(rows))}
    for name, (scorer, session) in (("before", before), ("after", after)):
        group = outputs_of(session, cache, rows, labels)
        ood = scorer.score_batch(group.embedding, group.predicted_pct)
        labelled = np.isfinite(group.vegetation_pct)
        figures[f"rmse_{name}"] = (
            score_predictions(group.vegetation_pct, group.predicted_pct).rmse
            if labelled.any()
            else None
        )
        figures[f"unreliable_{name}"] = float(ood.unreliable.mean())
        if labelled.any():
            figures[f"coverage_{name}"] = interval_coverage(
                group.vegetation_pct, ood.interval_low, ood.interval_high
            )
    return figures


def adapt(
    model_dir: str | Path,
    data_dir: str | Path,
    labels_path: str | Path,
    out_dir: str | Path,
    config: AdaptConfig | None = None,
    *,
    old_data: str | Path | None = None,
    ood_data: str | Path | None = None,
    cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> BundleManifest:
    """Adapt a bundle to a new region and write the new bundle (see the module docstring).

    Args:
        model_dir: the parent bundle (must carry trainable weights).
        data_dir: the new region's tiles (geetiles layout; the ones ``sarveg predict`` ran on).
        labels_path: a labels CSV or a folder of MODIS VCF rasters.
        out_dir: the new bundle folder.
        config: adaptation choices (default ``AdaptConfig()``).
        old_data: the folder the parent was fine-tuned on (rehearsal, old-region reference and
            calibration, forgetting measured); without it the old region is not in distribution.
        ood_data: an independent folder with labelled tiles of both regions, for the figures.
        cache_dir: parent of tile caches (default: each data folder's ``.cache``).
        work_dir: resumable state (default ``OUT.work`` beside the bundle).
        force: replace an existing bundle folder.
        progress: progress bars.

    Returns:
        The new bundle's manifest.

    Raises:
        ValueError: a bundle without weights, unknown or too few labels, unusable folders.
    """
    config = config or AdaptConfig()
    model_dir, data_dir, out_dir = Path(model_dir), Path(data_dir), Path(out_dir)
    labels_path = Path(labels_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    check_bundle_target(out_dir, force)  # before the long fine-tune, not after
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    (work / CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

    parent = load_bundle(model_dir)
    finetuned = load_bundle_weights(model_dir)  # ValueError for a bundle without weights
    if parent.manifest.ood.difficulty != "knn_distance":
        raise ValueError(
            f"expected a bundle with interval difficulty knn_distance (it needs no labels of the "
            f"new region's reference tiles), found {parent.manifest.ood.difficulty}"
        )
    modality, size = finetuned.modality, finetuned.input_size
    labels = read_labels(labels_path)
    new_cache = prepare_cache(data_dir, modality, size, None, None, cache_dir, progress=progress)
    present = sorted(set(new_cache.regions))
    region = config.region or (present[0] if len(present) == 1 else None)
    if region is None or region not in present:
        raise ValueError(
            f"expected the new region among the regions of {data_dir} {present}, found "
            f"{config.region!r} (pass region=NAME when the folder holds several)"
        )
    new = split_new_region(new_cache, region, labels, config, data_dir)
    old = None
    if old_data is not None:
        old = gather_old_region(
            Path(old_data),
            finetuned.checkpoint,
            region,
            modality,
            size,
            config,
            cache_dir,
            progress,
        )
    if ood_data is not None:
        require_independent(data_dir, Path(ood_data))
        if old_data is not None:
            require_independent(Path(old_data), Path(ood_data))
    key = fingerprint(
        parent.manifest.files[WEIGHTS_FILE],
        sorted(labels.items()),
        new_cache.key,
        None if old is None else old.cache.key,
        config.model_dump(mode="json"),
    )
    adapted, outcome = finetune_adapted(finetuned, new_cache, new, old, config, work, key, progress)

    return stage_bundle(
        out_dir,
        force,
        lambda staging: write_adapted_bundle(
            parent,
            adapted,
            outcome,
            new_cache,
            region,
            new,
            old,
            config,
            staging,
            out_dir.name,
            data_dir=data_dir,
            ood_data=None if ood_data is None else Path(ood_data),
            labels_path=labels_path,
            cache_dir=cache_dir,
            progress=progress,
        ),
    )


def write_adapted_bundle(
    parent: Bundle,
    adapted: FinetunedModel,
    outcome: dict[str, Any],
    new_cache: TileCache,
    region: str,
    new: NewRegionTiles,
    old: OldRegion | None,
    config: AdaptConfig,
    staging: Path,
    name: str,
    *,
    data_dir: Path,
    ood_data: Path | None,
    labels_path: Path,
    cache_dir: Path | None,
    progress: bool,
) -> BundleManifest:
    """Export, embed, re-calibrate, measure and write every file of the adapted bundle."""
    pm = parent.manifest
    stages = tqdm(
        total=5, desc="adapt: export, embed, calibrate, measure, write", disable=not progress
    )
    with stages:
        check = [
            new_cache.tiles[np.sort(np.concatenate([new.calibration, new.held_out[:CHECK_TILES]]))]
        ]
        if old is not None:
            for rows in old.test_rows.values():
                check.append(
                    old.test_cache.tiles[np.sort(rows[: CHECK_TILES // len(old.test_rows)])]
                )
        check_tiles = np.concatenate([np.asarray(t, np.float32) for t in check])
        parent_variant = pm.provenance.config.get("export", {}).get("variant", "auto")
        variant = parent_variant if config.variant == "same" else config.variant
        chosen, reason, reports = export_best(
            adapted.model,
            staging / MODEL_FILE,
            check_tiles,
            variant,
            config.timing_seconds,
            config.timing_repeats,
        )
        stages.update()
        session = make_session(staging / MODEL_FILE)
        references: dict[str, RegionReference] = {}
        calibration: dict[str, RegionReference] = {}
        if old is not None:
            for r, rows in old.test_rows.items():
                references[r] = take(
                    outputs_of(session, old.test_cache, rows), old.reference_positions[r]
                )
            for r in old.regions:
                rows = old.calibration[np.asarray(old.cache.regions)[old.calibration] == r]
                calibration[r] = outputs_of(session, old.cache, rows)
        references[region] = unlabelled(outputs_of(session, new_cache, new.reference))
        labelled_cal = outputs_of(session, new_cache, new.calibration, new.labels[new.calibration])
        ood_cal = unlabelled(outputs_of(session, new_cache, new.ood_calibration))
        calibration[region] = concat_references([labelled_cal, ood_cal])
        references = dict(sorted(references.items()))
        stages.update()
        settings = {
            "alpha": pm.ood.alpha,
            "knn_k": pm.ood.knn_k,
            "score_name": pm.ood.score_name,
            "interval_alpha": pm.ood.interval_alpha,
            "n_projections": pm.ood.n_projections,
            "projection_seed": pm.ood.projection_seed,
        }
        reference, ood = calibrate_ood(references, region, calibration, **settings)
        stages.update()

        before = (OODScorer.from_bundle(parent), make_session(parent.model_path))
        after_scorer = OODScorer(reference, ood)
        after = (after_scorer, session)
        evaluation: list[dict[str, Any]] = []
        if old is not None:
            for r, positions in old.evaluation_positions.items():
                rows = old.test_rows[r][positions]
                evaluation.append(
                    {"region": r, "tiles": f"other half of the {r} test split (labelled)"}
                    | compare(before, after, old.test_cache, rows, None)
                )
        evaluation.append(
            {"region": region, "tiles": "the labelled calibration tiles (never fitted)"}
            | compare(before, after, new_cache, new.calibration, new.labels[new.calibration])
        )
        if len(new.held_out):
            evaluation.append(
                {"region": region, "tiles": "unlabelled tiles in neither reference nor calibration"}
                | compare(
                    before, after, new_cache, new.held_out, np.full(len(new.held_out), np.nan)
                )
            )
        synthetic = bool(adapted.checkpoint.get("synthetic")) or synthetic_data(data_dir)
        measured = None
        measured_on: tuple[RegionReference, str] | None = None
        metrics_groups: dict[str, RegionReference] = {}
        if old is not None:
            metrics_groups = {
                r: outputs_of(session, old.test_cache, rows) for r, rows in old.test_rows.items()
            }
        metrics_groups[region] = labelled_cal
        if ood_data is not None:
            independent: list[RegionReference] = []
            for r in [*(old.regions if old is not None else []), region]:
                cache = prepare_cache(
                    ood_data, pm.modality, pm.input_size, [r], None, cache_dir, progress=progress
                )
                rows = labelled_rows(cache, cache.indices())
                if not len(rows):
                    raise ValueError(f"expected labelled {r} tiles in {ood_data}, found none")
                evaluation.append(
                    {
                        "region": r,
                        "tiles": f"every labelled tile in the {INDEPENDENT_FOLDER} {ood_data.name}",
                    }
                    | compare(before, after, cache, rows, None)
                )
                independent.append(outputs_of(session, cache, rows))
                if r == region:
                    metrics_groups[region] = independent[-1]
            measured_on = (
                concat_references(independent),
                f"every labelled tile of {', '.join(ood.in_distribution)} in the "
                f"{INDEPENDENT_FOLDER} {ood_data.name}",
            )
        elif old is not None:
            held = [
                take(outputs_of(session, old.test_cache, old.test_rows[r]), p)
                for r, p in old.evaluation_positions.items()
            ]
            measured_on = (
                concat_references(held),
                f"the other half of the {', '.join(old.regions)} test split (the {region} tiles "
                "are unlabelled: see the adaptation table)",
            )
        if measured_on is not None:
            measured = evaluate_ood(
                after_scorer, measured_on[0], synthetic=synthetic, evaluation_tiles=measured_on[1]
            )
        ood = ood.model_copy(update={"measured": measured})
        metrics = {
            r: RegionMetrics(**score_predictions(g.vegetation_pct, g.predicted_pct).as_dict())
            for r, g in sorted(metrics_groups.items())
        }
        stages.update()

        save_reference(staging / REFERENCE_FILE, reference)
        ckpt = adapted.checkpoint
        adapt_record = {
            "parent": {"name": pm.name, "model_sha256": pm.files[MODEL_FILE]},
            "new_region": region,
            "new_data": describe_data(data_dir, synthetic_data(data_dir)),
            "labels": {"file": labels_path.name, "n": int(np.isfinite(new.labels).sum())},
            "old_data": None if old is None else "given",
            "config": config.model_dump(mode="json"),
            "tiles": {
                "new_train": len(new.train),
                "new_early_stopping": len(new.early_stopping),
                "new_calibration_labelled": len(new.calibration),
                "new_reference_unlabelled": len(new.reference),
                "new_calibration_unlabelled": len(new.ood_calibration),
                "new_held_out_unlabelled": len(new.held_out),
                "old_rehearsal": 0 if old is None else len(old.rehearsal),
                "old_calibration": 0 if old is None else len(old.calibration),
            },
            "finetune": outcome,
            "evaluation": evaluation,
        }
        provenance = pm.provenance.model_copy(
            update={
                "data": pm.provenance.data
                + f"; adapted to {region} with {len(labels_of(new))} labels",
                "synthetic": pm.provenance.synthetic or synthetic,
                "fine_tuning_regions": [
                    *(old.regions if old is not None else pm.provenance.fine_tuning_regions),
                    region,
                ],
                "config": {
                    "finetune": ckpt["config"],
                    "pretrain": pm.provenance.config.get("pretrain"),
                    "adapt": adapt_record,
                    "tiles": {
                        "labelled": len(ckpt["tiles"]["labelled"]),
                        "early_stopping": len(ckpt["tiles"]["early_stopping"]),
                        "calibration": ood.calibration_size,
                        "reference": {r: len(g.embedding) for r, g in references.items()},
                    },
                    "export": {
                        "variant": chosen,
                        "reason": reason,
                        "opset": 17,
                        "drift_tiles": int(len(check_tiles)),
                        "variants": reports_as_dicts(reports),
                    },
                },
                "code_version": code_version(),
                "created": datetime.now(UTC),
            }
        )
        manifest = pm.model_copy(
            update={
                "name": name,
                "provenance": provenance,
                "metrics": metrics,
                "ood": ood,
                "files": {},
            }
        )
        (staging / CARD_FILE).write_text(render_model_card(manifest))
        save_bundle_weights(staging, adapted)
        manifest = finalise_bundle(staging, manifest)
        load_bundle(staging)
        stages.update()
    return manifest


def labels_of(new: NewRegionTiles) -> np.ndarray:
    """The labelled rows of the new region."""
    return np.flatnonzero(np.isfinite(new.labels))


def build_parser() -> argparse.ArgumentParser:
    """The ``sarveg adapt`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sarveg adapt",
        description="Fine-tune a bundle on a few labels of a new region, re-calibrate it and "
        "write a new bundle.",
    )
    parser.add_argument("--model", type=Path, required=True, help="parent bundle (models/NAME)")
    parser.add_argument("--data", type=Path, required=True, help="the new region's tiles")
    parser.add_argument("--labels", type=Path, required=True, help="labels CSV or MODIS folder")
    parser.add_argument("--out", type=Path, required=True, help="new bundle folder")
    parser.add_argument("--old-data", type=Path, default=None, help="the parent's training data")
    parser.add_argument("--ood-data", type=Path, default=None, help="independent labelled folder")
    parser.add_argument("--config", default=None, help="YAML of AdaptConfig keys")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: OUT.work")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    return parser


def main(argv: list[str]) -> int:
    """``sarveg adapt`` entry point."""
    args = build_parser().parse_args(argv)
    try:
        config = load_adapt_config(args.config, list(args.overrides))
        manifest = adapt(
            args.model,
            args.data,
            args.labels,
            args.out,
            config,
            old_data=args.old_data,
            ood_data=args.ood_data,
            cache_dir=args.cache_dir,
            work_dir=args.work_dir,
            force=args.force,
            progress=not args.no_progress,
        )
    except (ConfigError, ValueError) as error:
        print(f"sarveg adapt: {error}", file=sys.stderr)
        return 1
    record = manifest.provenance.config["adapt"]
    print(f"bundle {args.out}: adapted {record['parent']['name']} to {record['new_region']}")
    for row in record["evaluation"]:
        rmse = (
            f"RMSE {row['rmse_before']:.2f} -> {row['rmse_after']:.2f}"
            if row["rmse_before"] is not None
            else "unlabelled"
        )
        print(
            f"  {row['region']:<14} {row['n_tiles']:>5} tiles ({row['tiles']}): {rmse}; unreliable "
            f"{row['unreliable_before']:.3f} -> {row['unreliable_after']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
