"""Which tiles go where in ``sarveg adapt``: the new region's parts and the old region's.

Also the in-memory stack of rows of several caches that the fine-tune trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.adapt.config import (
    MIN_CALIBRATION_LABELS,
    AdaptConfig,
    minimum_labels,
    split_counts,
)
from training.cache import TileCache, prepare_cache
from training.export import (
    cap_positions,
    labelled_rows,
    lookup_rows,
    reference_candidates,
    used_tiles,
)
from training.label_budget import region_rng, split_holdout


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
    """Match the labels to the new region's tiles and cut every part (see ``training.adapt``).

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
    labelled: np.ndarray  # every tile the parent was fitted on
    rehearsal: np.ndarray  # rehearsal_tiles of them, one draw
    early_stopping: np.ndarray
    calibration: np.ndarray
    test_cache: TileCache  # every region's test split
    test_rows: dict[str, np.ndarray]  # labelled test rows per region (new region excluded)
    reference_caches: dict[str, TileCache]  # per region (new region excluded), every split
    reference_rows: dict[str, np.ndarray]  # into reference_caches
    evaluation_positions: dict[str, np.ndarray]  # into test_rows; old in-distribution regions
    # The first half of those test splits (into test_rows): labels never fitted nor reported,
    # on which the routing decision compares the fine-tuned model with the parent.
    decision_positions: dict[str, np.ndarray]


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
    """Look up the old region's recorded tiles in ``old_data`` and cut its test split in two.

    One half of each old in-distribution region's test split measures the adapted bundle there,
    the other decides whether to route (``training.adapt.routing``); every region's reference
    is drawn from all its splits (as ``sarveg export`` draws it), leaving out the measuring half
    and every tile the parent's fine-tune used.
    """
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
    used = used_tiles(recorded)
    evaluation_positions, decision_positions = {}, {}
    for region in regions:
        rows = test_rows[region]
        first, rest = split_holdout(
            [test_cache.identifiers[i] for i in rows], [region] * len(rows), 0.5, config.seed
        )
        evaluation_positions[region], decision_positions[region] = rest, first
        used |= {(region, test_cache.identifiers[i]) for i in rows[rest]}
    reference_caches = {
        r: cache
        if r in regions
        else prepare_cache(old_data, modality, input_size, [r], None, cache_dir, progress=progress)
        for r in test_rows
    }
    reference_rows = {}
    for region, region_cache in reference_caches.items():
        candidates = reference_candidates(region_cache, region, used)
        reference_rows[region] = candidates[
            cap_positions(np.arange(len(candidates)), config.max_reference, config.seed, region)
        ]
    return OldRegion(
        regions=regions,
        cache=cache,
        labelled=labelled,
        rehearsal=labelled[rehearsal],
        early_stopping=rows_of("early_stopping"),
        calibration=rows_of("calibration"),
        test_cache=test_cache,
        test_rows=test_rows,
        reference_caches=reference_caches,
        reference_rows=reference_rows,
        evaluation_positions=evaluation_positions,
        decision_positions=decision_positions,
    )


def labels_of(new: NewRegionTiles) -> np.ndarray:
    """The labelled rows of the new region."""
    return np.flatnonzero(np.isfinite(new.labels))
