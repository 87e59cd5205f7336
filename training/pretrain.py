"""``sarveg pretrain``: DINO pre-training on prepared SAR tiles, one process or under ``torchrun``.

    sarveg pretrain --config cpu-s1grd --data DIR --out RUN_DIR [section.key=value ...]
    torchrun --nproc_per_node=2 -m training.pretrain --config ... --data DIR --out RUN_DIR

Each epoch writes ``RUN_DIR/checkpoint.pt`` (everything needed for an exact resume) and the
resolved ``RUN_DIR/config.yaml``; every ``log_every`` steps a line goes to ``RUN_DIR/log.jsonl``;
the end of the run plots ``RUN_DIR/loss.png``. Under ``torchrun`` the student is wrapped in DDP,
the data are sharded with a ``DistributedSampler`` and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from training.augment import MultiCrop
from training.backbone import build_backbone
from training.cache import TileCache, open_cache, prepare_cache
from training.checkpoint import (
    CHECKPOINT_FORMAT,
    restore_rng,
    rng_state,
    save_checkpoint,
    seed_everything,
)
from training.config import (
    ConfigError,
    NormalizationConfig,
    PretrainConfig,
    config_from_dict,
    load_config,
    save_config,
)
from training.dino import (
    DINOHead,
    DINOLoss,
    MultiCropModel,
    cancel_last_layer_gradients,
    clip_gradients,
    cosine_schedule,
    entropy,
    param_groups,
    set_lr_and_wd,
    teacher_temp_schedule,
    update_teacher,
)
from training.distributed import (
    DistContext,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    mean_across,
    shutdown,
)
from training.runlog import CollapseMonitor, JsonlLog, plot_loss_curve

REFERENCE_BATCH = 256  # DINO scales its LR linearly from this total batch size


@dataclass(frozen=True)
class Schedules:
    """Per-step LR, weight decay and teacher momentum; per-epoch teacher temperature."""

    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray


def build_schedules(config: PretrainConfig, steps_per_epoch: int, world_size: int) -> Schedules:
    """Build DINO's schedules for a run of ``config.optim.epochs`` epochs."""
    optim = config.optim
    peak_lr = optim.lr * optim.batch_size * world_size / REFERENCE_BATCH
    return Schedules(
        lr=cosine_schedule(
            peak_lr, optim.min_lr, optim.epochs, steps_per_epoch, optim.warmup_epochs
        ),
        wd=cosine_schedule(
            optim.weight_decay, optim.weight_decay_end, optim.epochs, steps_per_epoch
        ),
        momentum=cosine_schedule(optim.momentum_teacher, 1.0, optim.epochs, steps_per_epoch),
        teacher_temp=teacher_temp_schedule(
            config.loss.warmup_teacher_temp,
            config.loss.teacher_temp,
            config.loss.warmup_teacher_temp_epochs,
            optim.epochs,
        ),
    )


def build_models(
    config: PretrainConfig, mean: list[float], std: list[float]
) -> tuple[MultiCropModel, MultiCropModel]:
    """Return (student, teacher) with identical weights; the teacher has no drop path."""
    size = config.data.input_size
    backbone = build_backbone(config.model, config.modality, size, mean, std)
    student = MultiCropModel(backbone, make_head(config, backbone.embed_dim))
    teacher_model = config.model.model_copy(update={"drop_path_rate": 0.0})
    teacher = MultiCropModel(
        build_backbone(teacher_model, config.modality, size, mean, std),
        make_head(config, student.backbone.embed_dim),
    )
    teacher.load_state_dict(student.state_dict())
    for param in teacher.parameters():
        param.requires_grad_(False)
    return student, teacher


def make_head(config: PretrainConfig, in_dim: int) -> DINOHead:
    """The projection head for a backbone of width ``in_dim``."""
    head = config.head
    return DINOHead(
        in_dim=in_dim,
        out_dim=head.out_dim,
        hidden_dim=head.hidden_dim,
        bottleneck_dim=head.bottleneck_dim,
        nlayers=head.nlayers,
        use_bn=head.use_bn,
        norm_last_layer=head.norm_last_layer,
    )


def train_step(
    student: nn.Module,
    teacher: MultiCropModel,
    loss_fn: DINOLoss,
    optimizer: torch.optim.Optimizer,
    crops: list[torch.Tensor],
    epoch: int,
    lr: float,
    wd: float,
    momentum: float,
    config: PretrainConfig,
) -> dict[str, torch.Tensor]:
    """One DINO optimisation step; returns detached loss and teacher entropies.

    Args:
        student: the student ``MultiCropModel``, possibly wrapped in DDP.
        teacher: the EMA teacher.
        loss_fn: the DINO loss (holds the centre).
        optimizer: AdamW over ``param_groups(student)``.
        crops: 2 global views then the local views, each ``(B, C, S, S)``.
        epoch: current epoch (teacher temperature, last-layer freeze).
        lr: learning rate of this step.
        wd: weight decay of this step.
        momentum: teacher EMA momentum of this step.
        config: the run config (clipping, freeze length).
    """
    module = student.module if isinstance(student, DistributedDataParallel) else student
    set_lr_and_wd(optimizer, lr, wd)
    with torch.no_grad():
        teacher_logits = teacher(crops[:2])  # (2B, K)
        probs = loss_fn.teacher_probs(teacher_logits, epoch)
        tile_entropy = entropy(probs).mean()
        marginal_entropy = entropy(probs.mean(dim=0, keepdim=True))[0]
    student_logits = student(crops)  # (V * B, K)
    loss = loss_fn(student_logits, teacher_logits, epoch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"expected a finite DINO loss, found {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.optim.clip_grad > 0:
        clip_gradients(module, config.optim.clip_grad)
    cancel_last_layer_gradients(module.head, epoch, config.optim.freeze_last_layer_epochs)
    optimizer.step()
    update_teacher(module, teacher, momentum)
    return {
        "loss": loss.detach(),
        "teacher_entropy": tile_entropy,
        "teacher_marginal_entropy": marginal_entropy,
    }


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The crop RNG of one step: a function of (seed, rank, step) only, so resume is exact."""
    state = np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def load_batch(tiles: np.ndarray, rows: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
    """Read rows of the cache as float32 ``(B, C, S, S)``, nodata filled with the channel mean.

    Filling with the mean before cropping equals the backbone's own rule (NaN -> 0 after
    normalisation) and keeps bilinear crops from smearing NaN into valid pixels.
    """
    batch = torch.from_numpy(np.asarray(tiles[np.sort(rows)], dtype=np.float32))
    return torch.where(torch.isnan(batch), fill.view(1, -1, 1, 1), batch)


def resolve_normalization(config: PretrainConfig, cache: TileCache) -> PretrainConfig:
    """Fill ``normalization`` from the cache statistics unless the config already sets it."""
    if config.normalization.mean is not None:
        return config
    stats = NormalizationConfig(
        mean=[float(v) for v in cache.mean], std=[float(v) for v in cache.std]
    )
    return config.model_copy(update={"normalization": stats})


@dataclass
class RunOptions:
    """Command-line switches that are not part of the config."""

    resume: bool = False
    stop_after: int | None = None
    dump_teacher: bool = False
    progress: bool = True
    device: str = "auto"


def pretrain(
    config: PretrainConfig, data_dir: Path, run_dir: Path, options: RunOptions
) -> dict[str, Any]:
    """Run (or resume) DINO pre-training.

    Args:
        config: the run config (ignored when resuming: the checkpoint's config is used).
        data_dir: folder in the geetiles layout.
        run_dir: where checkpoints, logs and plots go.
        options: resume / early-stop / debug switches.

    Returns:
        A summary: steps done, wall time, last loss, mean images/s.
    """
    ctx = init_distributed(options.device)
    try:
        return run(config, data_dir, run_dir, options, ctx)
    finally:
        shutdown(ctx)


def run(
    config: PretrainConfig,
    data_dir: Path,
    run_dir: Path,
    options: RunOptions,
    ctx: DistContext,
) -> dict[str, Any]:
    """The body of ``pretrain`` once the process group exists."""
    started = time.perf_counter()
    checkpoint_path = run_dir / "checkpoint.pt"
    checkpoint: dict[str, Any] | None = None
    if options.resume:
        if not checkpoint_path.is_file():
            raise ValueError(f"expected a checkpoint to resume at {checkpoint_path}, found none")
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        config = config_from_dict(checkpoint["config"], source=str(checkpoint_path))
    elif checkpoint_path.exists():
        raise ValueError(
            f"expected an empty run folder, found a checkpoint at {checkpoint_path}: "
            "pass --resume to continue it or choose another --out"
        )

    # Rank 0 decodes; the others open the finished cache instead of re-indexing the folder.
    cache_path = None
    if ctx.is_main:
        cache_path = prepare_cache(
            data_dir,
            config.modality,
            config.data.input_size,
            config.data.regions,
            config.data.splits,
            config.data.cache_dir,
            config.data.prepare_workers,
            progress=options.progress,
        ).path
    cache = open_cache(broadcast_object(ctx, cache_path))
    rows = cache.indices(splits=config.data.splits, regions=config.data.regions)
    config = resolve_normalization(config, cache)
    mean, std = config.normalization.mean, config.normalization.std
    assert mean is not None and std is not None

    optim = config.optim
    sampler = DistributedSampler(
        range(len(rows)),  # type: ignore[arg-type]  # only len() is used
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=True,
        seed=config.seed,
        drop_last=True,
    )
    steps_per_epoch = sampler.num_samples // optim.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"expected at least batch_size x processes = {optim.batch_size * ctx.world_size} "
            f"tiles, found {len(rows)} in {cache.path}"
        )
    total_steps = steps_per_epoch * optim.epochs
    schedules = build_schedules(config, steps_per_epoch, ctx.world_size)

    seed_everything(config.seed)  # same initial weights on every rank
    student, teacher = build_models(config, mean, std)
    student, teacher = student.to(ctx.device), teacher.to(ctx.device)
    multicrop = MultiCrop(config.augment)
    loss_fn = DINOLoss(
        config.head.out_dim,
        multicrop.n_views,
        schedules.teacher_temp,
        config.loss.student_temp,
        config.loss.center_momentum,
    ).to(ctx.device)
    optimizer = torch.optim.AdamW(param_groups(student), lr=0.0)  # LR/WD set every step
    seed_everything(config.seed + 1 + ctx.rank)  # per-rank drop-path randomness

    global_step = 0
    if checkpoint is not None:
        if checkpoint["world_size"] != ctx.world_size:
            raise ValueError(
                f"expected to resume with {checkpoint['world_size']} processes (the schedules "
                f"depend on it), found {ctx.world_size}"
            )
        if checkpoint["cache_key"] != cache.key:
            warnings.warn(
                "the data or preprocessing changed since the checkpoint was written", stacklevel=2
            )
        student.load_state_dict(checkpoint["student"])
        teacher.load_state_dict(checkpoint["teacher"])
        loss_fn.load_state_dict(checkpoint["loss"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng(checkpoint["rng"][ctx.rank])
        global_step = int(checkpoint["global_step"])

    wrapped: nn.Module = student
    if ctx.distributed:
        wrapped = DistributedDataParallel(
            student, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    log = (
        JsonlLog(run_dir / "log.jsonl", resume_step=global_step if checkpoint else None)
        if ctx.is_main
        else None
    )
    monitor = CollapseMonitor(config.head.out_dim, config.collapse_patience)
    fill = torch.tensor(mean, dtype=torch.float32)
    stop_at = total_steps if options.stop_after is None else min(options.stop_after, total_steps)

    def make_checkpoint() -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": config.model_dump(mode="json"),
            "epoch": global_step // steps_per_epoch,
            "step_in_epoch": global_step % steps_per_epoch,
            "global_step": global_step,
            "steps_per_epoch": steps_per_epoch,
            "world_size": ctx.world_size,
            "student": student.state_dict(),
            "teacher": teacher.state_dict(),
            "head": {"student": student.head.state_dict(), "teacher": teacher.head.state_dict()},
            "loss": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": gather_objects(ctx, rng_state()),
            "sampler": {
                "seed": config.seed,
                "epoch": global_step // steps_per_epoch,
                "position": global_step % steps_per_epoch,
                "num_replicas": ctx.world_size,
            },
            "normalization": {"mean": mean, "std": std},
            "modality": config.modality,
            "band_names": list(cache.band_names),
            "input_size": config.data.input_size,
            "backbone": student.backbone.describe(),
            "cache_key": cache.key,
        }

    def write_checkpoint() -> None:
        state = make_checkpoint()  # collective (RNG gather): every rank calls it
        if ctx.is_main:
            save_checkpoint(checkpoint_path, state)
            save_config(config, run_dir / "config.yaml")
        barrier(ctx)

    bar = tqdm(
        total=total_steps,
        initial=global_step,
        desc=f"pretrain {config.modality}",
        disable=not (ctx.is_main and options.progress),
    )
    rates: list[float] = []
    last: dict[str, float] = {}
    with bar:
        while global_step < stop_at:
            epoch, first = divmod(global_step, steps_per_epoch)
            sampler.set_epoch(epoch)
            order = np.fromiter(iter(sampler), dtype=np.int64)
            for position in range(first, steps_per_epoch):
                if global_step >= stop_at:
                    break
                tick = time.perf_counter()
                start = position * optim.batch_size
                batch_rows = rows[order[start : start + optim.batch_size]]
                images = load_batch(cache.tiles, batch_rows, fill)
                crops = multicrop(images, step_generator(config.seed, ctx.rank, global_step))
                crops = [crop.to(ctx.device) for crop in crops]
                metrics = train_step(
                    wrapped,
                    teacher,
                    loss_fn,
                    optimizer,
                    crops,
                    epoch,
                    float(schedules.lr[global_step]),
                    float(schedules.wd[global_step]),
                    float(schedules.momentum[global_step]),
                    config,
                )
                global_step += 1
                rate = optim.batch_size * ctx.world_size / (time.perf_counter() - tick)
                rates.append(rate)
                if global_step % config.log_every == 0 or global_step == stop_at:
                    reduced = mean_across(
                        ctx,
                        torch.stack(
                            [
                                metrics["loss"],
                                metrics["teacher_entropy"],
                                metrics["teacher_marginal_entropy"],
                            ]
                        ).cpu(),
                    ).tolist()
                    last = {
                        "epoch": epoch,
                        "step": global_step,
                        "loss": reduced[0],
                        "lr": float(schedules.lr[global_step - 1]),
                        "wd": float(schedules.wd[global_step - 1]),
                        "teacher_temp": loss_fn.teacher_temp(epoch),
                        "momentum": float(schedules.momentum[global_step - 1]),
                        "teacher_entropy": reduced[1],
                        "teacher_marginal_entropy": reduced[2],
                        "images_per_s": rate,
                    }
                    if log is not None:
                        log.write(last)
                        monitor.update(last["loss"], last["teacher_marginal_entropy"])
                        bar.set_postfix(loss=f"{last['loss']:.4f}", img_s=f"{rate:.1f}")
                bar.update()
            if global_step % steps_per_epoch == 0 or global_step == stop_at:
                write_checkpoint()

    if options.dump_teacher:
        torch.save(teacher.state_dict(), run_dir / f"teacher_rank{ctx.rank}.pt")
    if ctx.is_main:
        plot_loss_curve(run_dir / "log.jsonl", run_dir / "loss.png", config.head.out_dim)
    return {
        "steps": global_step,
        "total_steps": total_steps,
        "seconds": time.perf_counter() - started,
        "loss": last.get("loss", math.nan),
        "images_per_s": float(np.median(rates)) if rates else math.nan,
        "cache": str(cache.path),
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``sarveg pretrain`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sarveg pretrain",
        description="DINO pre-training of a SAR ViT on prepared tiles (CPU, GPU or torchrun).",
    )
    parser.add_argument("--config", default=None, help="preset name (e.g. cpu-s1grd) or YAML")
    parser.add_argument("--data", type=Path, required=True, help="folder in the geetiles layout")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt")
    parser.add_argument(
        "--stop-after", type=int, default=None, help="stop (and checkpoint) after this many steps"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--dump-teacher",
        action="store_true",
        help="debug: every rank writes RUN_DIR/teacher_rank{r}.pt at the end",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    return parser


def main(argv: list[str]) -> int:
    """``sarveg pretrain`` entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and (args.config or args.overrides):
        parser.error("--resume continues the run with its saved config: drop --config/overrides")
    if not args.resume and args.config is None:
        parser.error("expected --config PRESET_OR_YAML (or --resume)")
    try:
        config = load_config(args.config, args.overrides) if args.config else PretrainConfig()
        options = RunOptions(
            resume=args.resume,
            stop_after=args.stop_after,
            dump_teacher=args.dump_teacher,
            progress=not args.no_progress,
            device=args.device,
        )
        summary = pretrain(config, args.data, args.out, options)
    except (ConfigError, ValueError) as error:
        print(f"sarveg pretrain: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"pretrain: {summary['steps']}/{summary['total_steps']} steps in "
            f"{summary['seconds']:.1f} s, last loss {summary['loss']:.4f}, "
            f"{summary['images_per_s']:.1f} images/s (median), run folder {args.out}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
