"""The resumable fine-tune of ``sarveg adapt``: from the bundle's weights, with rehearsal."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.adapt.config import FINETUNE_FILE, REFIT_DIR, AdaptConfig
from training.adapt.routing import model_outputs
from training.adapt.tiles import NewRegionTiles, OldRegion, stack_rows
from training.cache import TileCache
from training.export import (
    cap_positions,
)
from training.finetune import FinetuneTiles, fit, row_ids
from training.finetune_config import FinetuneConfig, FinetuneOptimConfig
from training.regressor import FinetunedModel
from training.runlog import JsonlLog


def fingerprint(*parts: Any) -> str:
    """sha256 of the JSON of everything a finished fine-tune depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def rehearsal_draws(
    new_rows: np.ndarray, old_rows: np.ndarray, n_old: int, seed: int
) -> Callable[[int], np.ndarray]:
    """Rows fitted in epoch ``e``: every new row and ``n_old`` old rows drawn afresh (seeded)."""

    def rows(epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch, 7919])
        drawn = rng.choice(len(old_rows), size=n_old, replace=False)
        return np.concatenate([new_rows, old_rows[np.sort(drawn)]])

    return rows


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
            "optim": FinetuneOptimConfig.model_validate(config.optim.model_dump()),
            "freeze_backbone": config.freeze_backbone,
            "pretrained": None,
            "data": ft_config.data.model_copy(update={"regions": regions}),
        }
    )
    n_old = 0 if old is None else len(old.rehearsal)
    # Resampled: every tile the parent fitted is stacked, and each epoch fits n_old of them.
    old_pool = None if old is None else old.labelled if config.rehearsal_resample else old.rehearsal
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
        if len(new.early_stopping):  # as many old tiles stop the run as new ones
            stop_old = cap_positions(
                np.arange(len(old.early_stopping)), len(new.early_stopping), config.seed, "stop"
            )
            stop_old = old.early_stopping[stop_old]
        parts += [
            (old.cache, old_pool, old.cache.vegetation_pct[old_pool]),
            (old.cache, stop_old, old.cache.vegetation_pct[stop_old]),
        ]
    stacked = stack_rows(parts, finetuned.input_size, work_dir)
    sizes = np.cumsum([0, *(len(r) for _, r, _ in parts)])
    position = [np.arange(sizes[i], sizes[i + 1]) for i in range(len(parts))]
    labelled = np.concatenate([position[0], *([position[2][:n_old]] if old is not None else [])])
    stopping = np.concatenate([position[1], *([position[3]] if old is not None else [])])
    tiles_used = {
        "labelled": row_ids(new_cache, new.train)
        + ([] if old is None else row_ids(old.cache, old_pool)),
        "early_stopping": row_ids(new_cache, new.early_stopping)
        + ([] if old is None else row_ids(old.cache, stop_old)),
        "calibration": ([] if old is None else row_ids(old.cache, old.calibration))
        + row_ids(new_cache, new.calibration),
    }
    kept = np.zeros(sizes[-1], bool)  # rows whose features the distillation keeps
    if old is not None:
        kept[position[2]] = True
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
        outcome = fit(
            model,
            stacked,
            tiles,
            ft_config,
            log,
            progress,
            init_bias=False,
            anchor_weight=config.anchor_weight,
            average_last=config.average_last_epochs,
            epoch_rows=None
            if old is None or not config.rehearsal_resample
            else rehearsal_draws(position[0], position[2], n_old, config.seed),
            distill_weight=config.distill_weight if old is not None else 0.0,
            distill_rows=kept,
        )
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


def refit_on_all_labels(
    finetuned: FinetunedModel,
    calibration_fit: FinetunedModel,
    calibration_outcome: dict[str, Any],
    new_cache: TileCache,
    new: NewRegionTiles,
    old: OldRegion | None,
    config: AdaptConfig,
    work_dir: Path,
    key: str,
    progress: bool,
) -> tuple[FinetunedModel, dict[str, Any], np.ndarray]:
    """The second fine-tune of ``refit_all_labels``: from the bundle's weights, on every label.

    ``calibration_fit`` was fitted without ``new.calibration``; its estimates there are the
    held-out errors the interval is calibrated on. With few labels, fitting the calibration tiles
    too helps more than it costs: the interval of the smaller fit is expected to be, if anything,
    wider than the refitted model needs (expected, not guaranteed: watch the measured coverage).

    Returns:
        ``(refitted model, outcome, held-out estimates (n_calibration,) of the first fit)``.
    """
    held_out_pct = model_outputs(calibration_fit.model, new_cache, new.calibration, 0)
    # The calibration tiles are fitted now: the weights must not record them as calibration,
    # or a later adaptation from this bundle would calibrate on fitted tiles.
    everything = replace(
        new,
        train=np.sort(np.concatenate([new.train, new.calibration])),
        calibration=np.zeros(0, np.int64),
    )
    refit, outcome = finetune_adapted(
        finetuned,
        new_cache,
        everything,
        old,
        config,
        work_dir / REFIT_DIR,
        fingerprint(key, "refit on all labels"),
        progress,
    )
    return refit, outcome | {"calibration_finetune": calibration_outcome}, held_out_pct
