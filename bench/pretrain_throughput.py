"""Images/s and peak memory of our DINO training step next to a reference built from `lightly`.

    python bench/pretrain_throughput.py [--config cpu-s1grd] [--steps 6] [key=value ...]

Same backbone (our timm ViT, same initial weights), same multi-crop views, same batch, same
AdamW parameter groups, LR / WD values and per-parameter clipping in every variant. What differs
is the DINO part:

- ``sarveg``: our head, loss (one einsum over all view pairs), foreach EMA update, and the views
  of equal size batched through the backbone together (``training.pretrain.train_step``).
- ``lightly``: `lightly`'s ``DINOProjectionHead``, ``DINOLoss`` and ``update_momentum``, with
  one backbone call per view as in lightly's DINO example.
- ``lightly-batched``: as ``lightly`` but with the views batched like ours, to show how much of
  the gap is the batching alone.

Speed: the variants run in one process with their steps interleaved (order rotated each round),
so background load on a shared machine hits them alike; median images/s over the timed steps.
Memory: peak RSS of a separate process per variant that builds it and runs its steps.
Target: sarveg >= 1.0x lightly.
`lightly` is a bench-only dependency (``pip install lightly``). Synthetic inputs: random tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("sarveg", "lightly", "lightly-batched")


class PeakRss:
    """Sample this process's RSS in a thread; ``peak`` is the maximum seen while running."""

    def __init__(self, interval_s: float = 0.002) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.process.memory_info().rss
        self.running = False
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.running = True
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


def build_variant(variant: str, config):
    """Return ``step(crops)`` for one variant; all variants start from the same weights."""
    import torch

    from training.dino import (
        DINOLoss,
        MultiCropModel,
        clip_gradients,
        param_groups,
        set_lr_and_wd,
        teacher_temp_schedule,
    )
    from training.pretrain import build_models, train_step

    channels = 12 if config.modality == "s1grd" else 8
    torch.manual_seed(0)
    student, teacher = build_models(config, [0.0] * channels, [1.0] * channels)
    temps = teacher_temp_schedule(
        config.loss.warmup_teacher_temp,
        config.loss.teacher_temp,
        config.loss.warmup_teacher_temp_epochs,
        config.optim.epochs,
    )
    n_views = 2 + config.augment.n_local_crops
    epoch, lr, wd, momentum = 1, 1e-4, 0.04, 0.996  # epoch 1: the last layer is trained too

    if variant == "sarveg":
        loss_fn = DINOLoss(
            config.head.out_dim,
            n_views,
            temps,
            config.loss.student_temp,
            config.loss.center_momentum,
        )
        optimizer = torch.optim.AdamW(param_groups(student))

        def step(crops):
            train_step(student, teacher, loss_fn, optimizer, crops, epoch, lr, wd, momentum, config)

        return step

    from lightly.loss import DINOLoss as LightlyDINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import update_momentum

    def lightly_head():
        return DINOProjectionHead(
            input_dim=student.backbone.embed_dim,
            hidden_dim=config.head.hidden_dim,
            bottleneck_dim=config.head.bottleneck_dim,
            output_dim=config.head.out_dim,
            batch_norm=config.head.use_bn,
            freeze_last_layer=config.optim.freeze_last_layer_epochs,
            norm_last_layer=config.head.norm_last_layer,
        )

    torch.manual_seed(1)
    ref_student = MultiCropModel(student.backbone, lightly_head())
    ref_teacher = MultiCropModel(teacher.backbone, lightly_head())
    ref_teacher.head.load_state_dict(ref_student.head.state_dict())
    for param in ref_teacher.parameters():
        param.requires_grad_(False)
    criterion = LightlyDINOLoss(
        output_dim=config.head.out_dim,
        warmup_teacher_temp=config.loss.warmup_teacher_temp,
        teacher_temp=config.loss.teacher_temp,
        warmup_teacher_temp_epochs=config.loss.warmup_teacher_temp_epochs,
        student_temp=config.loss.student_temp,
        center_momentum=config.loss.center_momentum,
    )
    optimizer = torch.optim.AdamW(param_groups(ref_student))
    batched = variant == "lightly-batched"

    def forward(model, views):
        if batched:
            return list(model(views).chunk(len(views)))
        return [model.head(model.backbone(view)) for view in views]

    def step(crops):
        set_lr_and_wd(optimizer, lr, wd)
        with torch.no_grad():
            teacher_out = forward(ref_teacher, crops[:2])
        student_out = forward(ref_student, crops)
        loss = criterion(teacher_out, student_out, epoch=epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(ref_student, config.optim.clip_grad)
        ref_student.head.cancel_last_layer_gradients(epoch)
        optimizer.step()
        update_momentum(ref_student, ref_teacher, m=momentum)

    return step


def make_crops(config, index: int):
    """The views of step ``index``: identical for every variant."""
    import torch

    from training.augment import MultiCrop
    from training.pretrain import step_generator

    channels = 12 if config.modality == "s1grd" else 8
    size = config.data.input_size
    images = torch.randn(
        config.optim.batch_size, channels, size, size, generator=torch.Generator().manual_seed(0)
    )
    return MultiCrop(config.augment)(images, step_generator(0, 0, index))


def measure_memory(variant: str, config, warmup: int) -> dict[str, float]:
    """Peak RSS of a process that builds one variant and runs ``warmup + 1`` steps."""
    import psutil

    step = build_variant(variant, config)
    for index in range(warmup):
        step(make_crops(config, index))
    baseline = psutil.Process().memory_info().rss
    with PeakRss() as rss:
        step(make_crops(config, warmup))
    return {"peak_rss_mb": rss.peak / 1e6, "step_rss_mb": (rss.peak - baseline) / 1e6}


def measure_speed(config, steps: int, warmup: int) -> dict[str, tuple[float, float]]:
    """(median, best) images/s per variant, steps interleaved so background load hits all alike."""
    import numpy as np

    runners = {variant: build_variant(variant, config) for variant in VARIANTS}
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for index in range(warmup + steps):
        crops = make_crops(config, index)
        shift = index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            tick = time.perf_counter()
            runners[variant](crops)
            if index >= warmup:
                times[variant].append(time.perf_counter() - tick)
    batch = config.optim.batch_size
    return {
        variant: (batch / float(np.median(t)), batch / float(np.min(t)))
        for variant, t in times.items()
    }


def measure_dino_parts(config, rounds: int) -> dict[str, tuple[float, float]]:
    """(median, best) ms of the DINO part alone: head, loss, backward, AdamW on the head, EMA.

    Fixed random backbone embeddings stand in for the ViT, so the backbone's cost (identical in
    every variant) does not drown the difference between the implementations.
    """
    import numpy as np
    import torch

    from training.dino import DINOLoss, param_groups, teacher_temp_schedule, update_teacher
    from training.pretrain import make_head

    batch, views = config.optim.batch_size, 2 + config.augment.n_local_crops
    width = config.model.embed_dim
    if width is None:
        import timm

        width = timm.create_model(config.model.name, pretrained=False, num_classes=0).embed_dim
    embeddings = torch.randn(views * batch, width, generator=torch.Generator().manual_seed(0))
    temps = teacher_temp_schedule(0.04, 0.04, 0, 2)
    cfg = config.loss

    torch.manual_seed(0)
    head, teacher_head = make_head(config, width), make_head(config, width)
    teacher_head.load_state_dict(head.state_dict())
    teacher_head.requires_grad_(False)
    loss_fn = DINOLoss(config.head.out_dim, views, temps, cfg.student_temp, cfg.center_momentum)
    optimizer = torch.optim.AdamW(param_groups(head))

    def ours() -> None:
        x = embeddings.clone().requires_grad_(True)
        with torch.no_grad():
            teacher_out = teacher_head(x[: 2 * batch])
        loss = loss_fn(head(x), teacher_out, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_teacher(head, teacher_head, 0.996)

    from lightly.loss import DINOLoss as LightlyDINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import update_momentum

    def lightly_head() -> DINOProjectionHead:
        return DINOProjectionHead(
            width, config.head.hidden_dim, config.head.bottleneck_dim, config.head.out_dim
        )

    ref_head, ref_teacher = lightly_head(), lightly_head()
    ref_teacher.load_state_dict(ref_head.state_dict())
    ref_teacher.requires_grad_(False)
    criterion = LightlyDINOLoss(
        config.head.out_dim, 0.04, 0.04, 0, cfg.student_temp, cfg.center_momentum
    )
    ref_optimizer = torch.optim.AdamW(param_groups(ref_head))

    def lightly() -> None:
        x = embeddings.clone().requires_grad_(True)
        with torch.no_grad():
            teacher_out = list(ref_teacher(x[: 2 * batch]).chunk(2))
        loss = criterion(teacher_out, list(ref_head(x).chunk(views)), epoch=1)
        ref_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ref_optimizer.step()
        update_momentum(ref_head, ref_teacher, m=0.996)

    runners = {"sarveg": ours, "lightly": lightly}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for index in range(rounds + 2):
        for name in list(runners)[:: 1 if index % 2 else -1]:
            tick = time.perf_counter()
            runners[name]()
            if index >= 2:
                times[name].append(time.perf_counter() - tick)
    return {
        name: (1000 * float(np.median(t)), 1000 * float(np.min(t))) for name, t in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default="cpu-s1grd", help="preset or YAML (model, crops, batch)"
    )
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--memory-of", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    args = parser.parse_args()

    import torch

    from training.config import load_config

    config = load_config(args.config, args.overrides)
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, config, args.warmup)))
        return 0

    memory = {}
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--memory-of", variant, "--config", args.config]
        command += ["--warmup", str(args.warmup), *args.overrides]
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}
        )
        if done.returncode != 0:
            print(f"{variant} failed:\n{done.stderr[-2000:]}")
            return 1
        memory[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    speed = measure_speed(config, args.steps, args.warmup)
    parts = measure_dino_parts(config, 3 * args.steps)

    print(
        f"DINO training step, config {args.config} {' '.join(args.overrides)}, batch "
        f"{config.optim.batch_size}, {torch.get_num_threads()} threads (synthetic tiles)"
    )
    header = ("variant", "images/s", "best img/s", "ours / this", "peak RSS MB", "ours / this")
    print(f"{header[0]:<18}" + "".join(f"{h:>13}" for h in header[1:]))
    ours_speed, ours_rss = speed["sarveg"][0], memory["sarveg"]["peak_rss_mb"]
    for variant in VARIANTS:
        median, best = speed[variant]
        rss = memory[variant]["peak_rss_mb"]
        print(
            f"{variant:<18}{median:>13.1f}{best:>13.1f}{ours_speed / median:>12.2f}x"
            f"{rss:>13.0f}{ours_rss / rss:>12.2f}x"
        )
    ratio = ours_speed / speed["lightly"][0]
    best_ratio = speed["sarveg"][1] / speed["lightly"][1]
    print(
        f"throughput sarveg / lightly = {ratio:.2f}x median, {best_ratio:.2f}x best-of-"
        f"{args.steps} (target >= 1.0x); peak RSS ratio "
        f"{ours_rss / memory['lightly']['peak_rss_mb']:.2f}x"
    )
    print(
        "DINO part alone (head, loss, backward, AdamW on the head, EMA; fixed embeddings): "
        f"sarveg {parts['sarveg'][0]:.0f} ms, lightly {parts['lightly'][0]:.0f} ms median "
        f"-> {parts['lightly'][0] / parts['sarveg'][0]:.2f}x; best "
        f"{parts['sarveg'][1]:.0f} vs {parts['lightly'][1]:.0f} ms "
        f"-> {parts['lightly'][1] / parts['sarveg'][1]:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
