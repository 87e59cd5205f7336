"""``sarveg finetune``: regress mean vegetation % from a pre-trained (or fresh) SAR ViT.

    sarveg finetune --data DIR --pretrained PRETRAIN_RUN --out RUN_DIR [--labels 0.01|1000]
        [--decoder-input cls|attention] [--freeze-backbone] [--from-scratch] [key=value ...]

The labelled tiles are a reproducible sample of the fine-tuning regions' train split: a fraction
(``--labels 0.01``) or a count (``--labels 1000``), see ``training.label_budget``. The val split
of the fine-tuning regions is cut in two, again reproducibly: an early-stopping part (the model
with the lowest RMSE on it is kept) and a calibration part that nothing here touches, kept for
the conformal OOD calibration of ``sarveg export``.

Writes ``RUN_DIR/checkpoint.pt`` (model, architecture, which tiles were used for what),
``RUN_DIR/config.yaml`` (resolved), ``RUN_DIR/log.jsonl`` (one line per epoch) and
``RUN_DIR/summary.json``. Loss: MSE on the vegetation fraction (percent / 100); RMSE is
reported in percentage points.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from sarveg import bands
from training.backbone import SarViT, backbone_from_description, build_backbone
from training.cache import TileCache, channel_stats, prepare_cache
from training.config import ConfigError, ModelConfig, NormalizationConfig
from training.evaluate import evaluate_rows, load_rows, synthetic_data
from training.finetune_config import FinetuneConfig, FinetuneOptimConfig, load_finetune_config
from training.label_budget import sample_label_budget, split_holdout
from training.regressor import CHECKPOINT_FILE, CHECKPOINT_FORMAT, VegetationRegressor
from training.runlog import JsonlLog

DEFAULT_INPUT_SIZE = 64
PRETRAIN_CHECKPOINT_FILE = "checkpoint.pt"


def resolve_pretrained(path: str | Path) -> Path:
    """Accept a pre-training run folder or checkpoint file; return the checkpoint file."""
    path = Path(path)
    file = path / PRETRAIN_CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"expected a pre-training checkpoint at {file}, found no file")
    return file


def resolve_config(
    config: FinetuneConfig, pretrained: dict[str, Any] | None
) -> tuple[FinetuneConfig, dict[str, Any] | None]:
    """Fill modality, input size, architecture and statistics from the pre-training checkpoint.

    Returns:
        The resolved config and the backbone description to build (None: build from config).
    """
    if pretrained is None:
        if config.from_scratch is False and config.pretrained is None:
            config = config.model_copy(update={"from_scratch": True})
        if config.modality is None:
            raise ConfigError("expected modality=s1grd|gssic when no pre-training run is given")
        size = config.data.input_size or DEFAULT_INPUT_SIZE
        data = config.data.model_copy(update={"input_size": size})
        model = config.model.model_copy(update={"drop_path_rate": config.drop_path_rate})
        return config.model_copy(update={"data": data, "model": model}), None
    modality = pretrained["modality"]
    if config.modality is not None and config.modality != modality:
        raise ConfigError(
            f"expected modality {modality} (the pre-training run's), found {config.modality}"
        )
    size = int(pretrained["input_size"])
    if config.data.input_size is not None and config.data.input_size != size:
        raise ConfigError(
            f"expected data.input_size {size} (the pre-training run's), "
            f"found {config.data.input_size}"
        )
    description = copy.deepcopy(pretrained["backbone"])
    description["kwargs"]["drop_path_rate"] = config.drop_path_rate
    model = ModelConfig.model_validate(pretrained["config"]["model"])
    normalization = NormalizationConfig.model_validate(pretrained["normalization"])
    update = {
        "modality": modality,
        "data": config.data.model_copy(update={"input_size": size}),
        "model": model.model_copy(update={"drop_path_rate": config.drop_path_rate}),
        "normalization": normalization,
    }
    return config.model_copy(update=update), description


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(
    model: VegetationRegressor, config: FinetuneOptimConfig
) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms; the decoder gets its own LR."""
    groups: list[dict[str, Any]] = []
    for part, lr in ((model.backbone, config.lr), (model.decoder, config.decoder_lr)):
        params = [(n, p) for n, p in part.named_parameters() if p.requires_grad]
        decay = [p for n, p in params if p.ndim > 1 and not n.endswith(".bias")]
        no_decay = [p for n, p in params if not (p.ndim > 1 and not n.endswith(".bias"))]
        for chunk, wd in ((decay, config.weight_decay), (no_decay, 0.0)):
            if chunk:
                groups.append({"params": chunk, "peak_lr": lr, "weight_decay": wd})
    return torch.optim.AdamW(groups, lr=config.lr)


def flip_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each tile horizontally and/or vertically with probability 1/2 each."""
    flips = torch.rand(2, x.shape[0], generator=generator) < 0.5  # (2, B)
    x = torch.where(flips[0].view(-1, 1, 1, 1), x.flip(-1), x)
    return torch.where(flips[1].view(-1, 1, 1, 1), x.flip(-2), x)


def pick_rows(cache: TileCache, split: str, regions: Sequence[str]) -> np.ndarray:
    """Rows of ``split`` in ``regions`` that have a label."""
    rows = cache.indices(splits=[split], regions=list(regions))
    return rows[np.isfinite(cache.vegetation_pct[rows])]


def row_ids(cache: TileCache, rows: np.ndarray) -> list[list[str]]:
    """``[[region, identifier], ...]`` of cache rows, for the checkpoint."""
    return [[cache.regions[i], cache.identifiers[i]] for i in rows]


@dataclass(frozen=True)
class FinetuneTiles:
    """Cache rows of the fine-tuning regions, by use."""

    candidates: np.ndarray  # labelled train tiles the budget is drawn from
    labelled: np.ndarray  # the budget
    early_stopping: np.ndarray  # part of val: selects the epoch
    # OOD calibration, fitted on nothing: the val tiles not stopping training plus unlabelled
    # train tiles (``calibration_train_share`` of the set), so it spans train and val bands.
    calibration: np.ndarray
    test: np.ndarray  # labelled test tiles


def choose_tiles(cache: TileCache, config: FinetuneConfig) -> FinetuneTiles:
    """Draw the label budget and cut the val split, reproducibly from ``config.seed``."""
    regions = config.data.regions
    candidates = pick_rows(cache, "train", regions)
    val = pick_rows(cache, "val", regions)
    if len(candidates) == 0 or len(val) == 0:
        raise ValueError(
            f"expected labelled train and val tiles of {regions}, found {len(candidates)} "
            f"train and {len(val)} val"
        )
    labelled = candidates[
        sample_label_budget(
            [cache.identifiers[i] for i in candidates],
            [cache.regions[i] for i in candidates],
            config.labels,
            config.seed,
        )
    ]
    stop, held_out = split_holdout(
        [cache.identifiers[i] for i in val],
        [cache.regions[i] for i in val],
        config.data.early_stopping_fraction,
        config.seed,
    )
    stopping = val[stop]
    if config.data.max_early_stopping_tiles is not None:
        stopping = stopping[: config.data.max_early_stopping_tiles]
    return FinetuneTiles(
        candidates=candidates,
        labelled=labelled,
        early_stopping=stopping,
        calibration=np.concatenate(
            [val[held_out], unlabelled_train(cache, candidates, labelled, len(held_out), config)]
        ),
        test=pick_rows(cache, "test", regions),
    )


def unlabelled_train(
    cache: TileCache,
    candidates: np.ndarray,
    labelled: np.ndarray,
    n_val: int,
    config: FinetuneConfig,
) -> np.ndarray:
    """Train tiles outside the label budget that join ``n_val`` val tiles in calibration.

    As many as make them ``calibration_train_share`` of the calibration set (fewer if the train
    split runs out), drawn reproducibly and spread over the train bands like the budget.
    """
    share = config.data.calibration_train_share
    rest = np.setdiff1d(candidates, labelled)
    wanted = min(len(rest), round(n_val * share / (1.0 - share)))
    if wanted == 0:
        return rest[:0]
    # Ordered by identifier first, so the draw does not depend on the cache's row order.
    ordered = rest[np.argsort([cache.identifiers[i] for i in rest], kind="stable")]
    picked = np.random.default_rng(config.seed + 104729).permutation(len(ordered))[:wanted]
    return np.sort(ordered[picked])


def build_model(
    config: FinetuneConfig, description: dict[str, Any] | None, state: dict[str, Any] | None
) -> VegetationRegressor:
    """The regressor: pre-trained teacher weights unless from scratch or no run was given."""
    assert config.modality is not None and config.data.input_size is not None
    mean, std = config.normalization.mean, config.normalization.std
    assert mean is not None and std is not None
    backbone: SarViT
    if description is None:
        backbone = build_backbone(config.model, config.modality, config.data.input_size, mean, std)
    else:
        backbone = backbone_from_description(description)
        if not config.from_scratch:
            assert state is not None
            prefix = "backbone."
            teacher = state["teacher"]
            weights = {k[len(prefix) :]: v for k, v in teacher.items() if k.startswith(prefix)}
            backbone.load_state_dict(weights)
    return VegetationRegressor(backbone, config.decoder_input, config.data.input_size)


def fit(
    model: VegetationRegressor,
    cache: TileCache,
    tiles: FinetuneTiles,
    config: FinetuneConfig,
    log: JsonlLog,
    progress: bool,
    init_bias: bool = True,
    anchor_weight: float = 0.0,
    average_last: int = 0,
    epoch_rows: Callable[[int], np.ndarray] | None = None,
    distill_weight: float = 0.0,
    distill_rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train with early stopping (or weight averaging); leave that model loaded, in eval mode.

    ``init_bias`` sets the decoder's bias to the mean label first (a fresh decoder); a model
    fine-tuned further (``sarveg adapt``) keeps its own. ``anchor_weight`` > 0 adds L2-SP
    (Li et al. 2018): that weight times the squared distance of the trainable backbone weights to
    their starting values, which holds a model adapted on a few labels near what it knew.
    ``average_last`` > 0 stops no run early: it trains ``max_epochs`` epochs and leaves the
    uniform average of the weights at the end of the last ``average_last`` of them loaded
    (stochastic weight averaging, Izmailov et al. 2018); with a handful of early-stopping tiles
    the epoch they pick is mostly noise. The early-stopping RMSE is then only logged (if any).
    ``epoch_rows(epoch)``, when given, returns the cache rows fitted in that epoch instead of
    ``tiles.labelled`` (always as many: the schedule counts steps from ``tiles.labelled``), so a
    run can draw its rehearsal tiles afresh every epoch.
    ``distill_weight`` > 0 keeps the decoder input of the rows marked in ``distill_rows`` (a
    boolean mask over the cache rows, e.g. the rehearsed old-region tiles) near what the model
    gave them at the start (feature distillation; the loss term is that weight times the squared
    distance relative to the starting features' squared norm), so a model adapted to a new
    region moves less where it already was right.

    Returns:
        ``best_epoch``, ``epochs_run`` and ``best_val_rmse`` (for an average: ``None``, the
        epochs run, and the averaged model's early-stopping RMSE or ``None`` without those tiles).
    """
    if average_last > config.optim.max_epochs:
        raise ValueError(
            f"expected average_last <= max_epochs ({config.optim.max_epochs}), found {average_last}"
        )
    optim: FinetuneOptimConfig = config.optim
    labels = torch.tensor(cache.vegetation_pct[tiles.labelled] / 100.0, dtype=torch.float32)
    fraction = torch.tensor(cache.vegetation_pct / 100.0, dtype=torch.float32)  # (N,) every row
    if init_bias:  # start from the mean label: early epochs fit the signal, not the offset
        with torch.no_grad():
            model.decoder.bias.fill_(float(labels.mean()))
    if config.freeze_backbone:  # here, so a model fine-tuned further is frozen alike
        model.backbone.requires_grad_(False)
    optimizer = build_optimizer(model, optim)
    steps_per_epoch = math.ceil(len(tiles.labelled) / optim.batch_size)
    total_steps = steps_per_epoch * optim.max_epochs
    warmup_steps = steps_per_epoch * optim.warmup_epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    anchored = [p for p in model.backbone.parameters() if p.requires_grad and anchor_weight > 0]
    anchors = [p.detach().clone() for p in anchored]
    teacher = None
    if distill_weight > 0:
        if distill_rows is None or len(distill_rows) != len(cache.vegetation_pct):
            raise ValueError("expected distill_rows: one boolean per cache row")
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    best_rmse, best_epoch, best_state, step, waited, epoch = math.inf, -1, None, 0, 0, 0
    averaged: dict[str, torch.Tensor] = {}

    def stopping_rmse() -> float:  # NaN without early-stopping tiles (averaged runs)
        return (
            evaluate_rows(model, cache, tiles.early_stopping, optim.eval_batch_size).rmse
            if len(tiles.early_stopping)
            else math.nan
        )

    first_averaged = optim.max_epochs - average_last
    bar = tqdm(total=total_steps, desc=f"finetune {config.modality}", disable=not progress)
    with bar:
        for epoch in range(optim.max_epochs):
            tick = time.perf_counter()
            model.train()
            if config.freeze_backbone:
                model.backbone.eval()  # no drop path: frozen features stay fixed
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            fitted = tiles.labelled if epoch_rows is None else np.asarray(epoch_rows(epoch))
            if len(fitted) != len(tiles.labelled):
                raise ValueError(
                    f"expected {len(tiles.labelled)} rows in epoch {epoch}, found {len(fitted)}"
                )
            order = torch.randperm(len(fitted), generator=generator).numpy()
            squared, seen = 0.0, 0
            for start in range(0, len(order), optim.batch_size):
                rows = np.sort(fitted[order[start : start + optim.batch_size]])
                x = load_rows(cache.tiles, rows)  # (B, C, S, S)
                if optim.flips:
                    x = flip_batch(x, generator)
                factor = lr_factor(step, total_steps, warmup_steps, optim.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = group["peak_lr"] * factor
                features = model.features(x)  # (B, F)
                predicted = model.decoder(features).squeeze(-1)  # (B,)
                mse = torch.nn.functional.mse_loss(predicted, fraction[rows])
                loss = mse
                if teacher is not None and (kept := torch.from_numpy(distill_rows[rows])).any():
                    with torch.no_grad():
                        target = teacher.features(x[kept])  # (b, F)
                    moved = ((features[kept] - target) ** 2).sum() / (target**2).sum()
                    loss = loss + distill_weight * moved
                if anchors:
                    pairs = zip(anchored, anchors, strict=True)
                    drift = sum(((p - a) ** 2).sum() for p, a in pairs)
                    loss = loss + anchor_weight * drift
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if optim.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, optim.clip_grad)
                optimizer.step()
                squared += float(mse.detach()) * len(rows)
                seen += len(rows)
                step += 1
                bar.update()
            val_rmse = stopping_rmse()
            if average_last:
                if epoch >= first_averaged:
                    for name, value in model.state_dict().items():
                        if value.is_floating_point():
                            averaged[name] = averaged.get(name, 0) + value.detach() / average_last
            elif val_rmse < best_rmse:
                best_rmse, best_epoch, waited = val_rmse, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
            log.write(
                {
                    "epoch": epoch,
                    "step": step,
                    "train_rmse": 100.0 * math.sqrt(squared / seen),
                    "val_rmse": val_rmse if math.isfinite(val_rmse) else None,
                    "best_val_rmse": best_rmse if math.isfinite(best_rmse) else None,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - tick,
                }
            )
            bar.set_postfix(val_rmse=f"{val_rmse:.2f}", best=f"{best_rmse:.2f}")
            if waited >= optim.patience:
                break
    if average_last:
        model.load_state_dict(model.state_dict() | averaged)
        model.eval()
        val_rmse = stopping_rmse()
        return {
            "best_epoch": None,
            "epochs_run": epoch + 1,
            "best_val_rmse": val_rmse if math.isfinite(val_rmse) else None,
        }
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "epochs_run": epoch + 1, "best_val_rmse": best_rmse}


def finetune(
    config: FinetuneConfig,
    data_dir: Path,
    run_dir: Path,
    progress: bool = True,
    cache: TileCache | None = None,
) -> dict[str, Any]:
    """Fine-tune and write the run folder.

    Args:
        config: the run config (modality etc. filled from ``config.pretrained`` when given).
        data_dir: folder in the geetiles layout.
        run_dir: where the checkpoint, config, log and summary go.
        progress: show progress bars.
        cache: an already prepared cache of ``data_dir`` holding at least the fine-tuning
            regions at the run's modality and input size (the report shares one across runs);
            prepared from ``config.data`` when None.

    Returns:
        The summary also written to ``summary.json``.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)  # the decoder's (and, from scratch, the backbone's) init
    pretrained_file = resolve_pretrained(config.pretrained) if config.pretrained else None
    state = None
    if pretrained_file is not None:
        state = torch.load(pretrained_file, map_location="cpu", weights_only=False)
    config, description = resolve_config(config, state)
    assert config.modality is not None and config.data.input_size is not None
    if cache is None:
        cache = prepare_cache(
            data_dir,
            config.modality,
            config.data.input_size,
            config.data.regions,
            None,
            config.data.cache_dir,
            config.data.prepare_workers,
            progress=progress,
        )
    elif (cache.modality, cache.input_size) != (config.modality, config.data.input_size):
        raise ValueError(
            f"expected a {config.modality} cache at {config.data.input_size} px, found "
            f"{cache.modality} at {cache.input_size} px"
        )
    tiles = choose_tiles(cache, config)
    if config.normalization.mean is None:  # from scratch without a run: the labelled tiles'
        mean, std = channel_stats(np.asarray(cache.tiles[tiles.labelled]))
        config = config.model_copy(
            update={"normalization": NormalizationConfig(mean=mean, std=std)}
        )
    model = build_model(config, description, state)
    del state

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    outcome = fit(model, cache, tiles, config, JsonlLog(run_dir / "log.jsonl"), progress)
    test_regions = np.asarray(cache.regions)[tiles.test]
    summary = {
        "modality": config.modality,
        "regions": config.data.regions,
        "n_labelled": len(tiles.labelled),
        "n_train_candidates": len(tiles.candidates),
        "label_fraction": len(tiles.labelled) / len(tiles.candidates),
        "n_early_stopping": len(tiles.early_stopping),
        "n_calibration_holdout": len(tiles.calibration),
        **outcome,
        "test": {
            region: evaluate_rows(model, cache, tiles.test[test_regions == region]).as_dict()
            for region in config.data.regions
            if np.any(test_regions == region)
        },
        "seconds": time.perf_counter() - started,
        "from_scratch": config.from_scratch,
        "decoder_input": config.decoder_input,
        "freeze_backbone": config.freeze_backbone,
    }
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": config.model_dump(mode="json"),
        "model": model.state_dict(),
        "backbone": model.backbone.describe(),
        "decoder_input": config.decoder_input,
        "modality": config.modality,
        "band_names": list(bands.CHANNELS[config.modality]),
        "input_size": config.data.input_size,
        "normalization": {"mean": config.normalization.mean, "std": config.normalization.std},
        "pretrained": None
        if pretrained_file is None
        else {"path": str(pretrained_file.resolve()), "config": _pretrain_config(pretrained_file)},
        "data_dir": str(Path(data_dir).resolve()),
        "synthetic": synthetic_data(data_dir),
        "cache_key": cache.key,
        "tiles": {
            "labelled": row_ids(cache, tiles.labelled),
            "early_stopping": row_ids(cache, tiles.early_stopping),
            "calibration": row_ids(cache, tiles.calibration),
        },
        "summary": summary,
    }
    partial = run_dir / (CHECKPOINT_FILE + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(run_dir / CHECKPOINT_FILE)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _pretrain_config(checkpoint_file: Path) -> dict[str, Any] | None:
    """The resolved config of a pre-training run (its ``config.yaml`` next to the checkpoint)."""
    path = checkpoint_file.parent / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def build_parser() -> argparse.ArgumentParser:
    """The ``sarveg finetune`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sarveg finetune",
        description="Fine-tune a SAR ViT + linear decoder to regress mean vegetation %.",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder in the geetiles layout")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--config", default=None, help="preset name or YAML (default: defaults)")
    parser.add_argument("--pretrained", default=None, help="pre-training run folder or checkpoint")
    parser.add_argument("--from-scratch", action="store_true", help="random initial weights")
    parser.add_argument(
        "--labels", type=float, default=None, help="fraction of the train split (<= 1) or a count"
    )
    parser.add_argument("--regions", default=None, help="comma-separated fine-tuning regions")
    parser.add_argument("--modality", choices=bands.MODALITIES, default=None)
    parser.add_argument("--decoder-input", choices=["cls", "attention"], default=None)
    parser.add_argument("--freeze-backbone", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    return parser


def main(argv: list[str]) -> int:
    """``sarveg finetune`` entry point."""
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    for key, value in (
        ("pretrained", args.pretrained),
        ("labels", args.labels),
        ("modality", args.modality),
        ("decoder_input", args.decoder_input),
        ("seed", args.seed),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.regions:
        overrides.append(f"data.regions=[{args.regions}]")
    if args.from_scratch:
        overrides.append("from_scratch=true")
    if args.freeze_backbone:
        overrides.append("freeze_backbone=true")
    try:
        config = load_finetune_config(args.config, overrides)
        summary = finetune(config, args.data, args.out, progress=not args.no_progress)
    except (ConfigError, ValueError) as error:
        print(f"sarveg finetune: {error}", file=sys.stderr)
        return 1
    tests = ", ".join(f"{r} {s['rmse']:.2f}" for r, s in summary["test"].items())
    print(
        f"finetune: {summary['n_labelled']} labelled tiles ({100 * summary['label_fraction']:.1f} "
        f"% of train), best epoch {summary['best_epoch']}, val RMSE "
        f"{summary['best_val_rmse']:.2f} points, test RMSE {tests}; "
        f"{summary['seconds']:.0f} s, run folder {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
