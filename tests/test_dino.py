"""DINO components: loss, schedules, EMA, head, freezing, parameter groups, crops, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from training.augment import MultiCrop, crop_resize, sample_boxes
from training.backbone import Normalize, build_backbone
from training.config import (
    AugmentConfig,
    ConfigError,
    ModelConfig,
    PretrainConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    list_presets,
    load_config,
)
from training.dino import (
    DINOHead,
    DINOLoss,
    MultiCropModel,
    cancel_last_layer_gradients,
    clip_gradients,
    cosine_schedule,
    param_groups,
    set_lr_and_wd,
    teacher_temp_schedule,
    update_teacher,
)
from training.pretrain import build_models, train_step

TINY_MODEL = ModelConfig(patch_size=8, depth=2, embed_dim=32, num_heads=2, drop_path_rate=0.0)


def tiny_backbone(modality: str = "s1grd", size: int = 32):
    channels = 12 if modality == "s1grd" else 8
    return build_backbone(TINY_MODEL, modality, size, [0.0] * channels, [1.0] * channels)


def naive_dino_loss(
    student: np.ndarray,
    teacher: np.ndarray,
    center: np.ndarray,
    n_crops: int,
    student_temp: float,
    teacher_temp: float,
) -> float:
    """Element by element, in float64: mean over pairs (t != s) of mean over the batch of CE."""
    batch = teacher.shape[0] // 2
    total, pairs = 0.0, 0
    for t_view in range(2):
        for s_view in range(n_crops):
            if s_view == t_view:
                continue
            pair = 0.0
            for b in range(batch):
                t_row = (teacher[t_view * batch + b] - center[0]) / teacher_temp
                t_prob = np.exp(t_row - t_row.max())
                t_prob /= t_prob.sum()
                s_row = student[s_view * batch + b] / student_temp
                s_logp = s_row - (np.log(np.exp(s_row - s_row.max()).sum()) + s_row.max())
                pair += -(t_prob * s_logp).sum()
            total += pair / batch
            pairs += 1
    return total / pairs


def test_loss_matches_naive_recomputation():
    gen = torch.Generator().manual_seed(0)
    out_dim, batch, n_crops = 17, 3, 5
    student = torch.randn(n_crops * batch, out_dim, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2 * batch, out_dim, generator=gen, dtype=torch.float64)
    temps = teacher_temp_schedule(0.04, 0.07, 3, 10)
    loss_fn = DINOLoss(out_dim, n_crops, temps, student_temp=0.1, center_momentum=0.9).double()
    loss_fn.center.copy_(torch.randn(1, out_dim, generator=gen, dtype=torch.float64))
    center_before = loss_fn.center.clone().numpy()
    epoch = 1
    loss = loss_fn(student, teacher, epoch)
    expected = naive_dino_loss(
        student.numpy(), teacher.numpy(), center_before, n_crops, 0.1, temps[epoch]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # The centre moves toward the batch mean of the teacher logits after the loss is computed.
    expected_center = 0.9 * center_before + 0.1 * teacher.numpy().mean(axis=0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.numpy(), expected_center, rtol=1e-12)


def test_loss_of_uniform_outputs_is_ln_out_dim():
    out_dim = 64
    loss_fn = DINOLoss(out_dim, 4, teacher_temp_schedule(0.04, 0.04, 0, 1))
    loss = loss_fn(torch.zeros(4 * 2, out_dim), torch.zeros(2 * 2, out_dim), 0)
    assert loss.item() == pytest.approx(math.log(out_dim), rel=1e-6)


def test_center_update_inside_a_process_group(tmp_path):
    out_dim = 5
    teacher = torch.arange(2 * 3 * out_dim, dtype=torch.float32).view(6, out_dim)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        loss_fn = DINOLoss(out_dim, 2, teacher_temp_schedule(0.04, 0.04, 0, 1), 0.1, 0.5)
        loss_fn.update_center(teacher)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(loss_fn.center, 0.5 * teacher.mean(dim=0, keepdim=True))


def test_cosine_schedule_end_points():
    values = cosine_schedule(1.0, 0.1, epochs=5, steps_per_epoch=4, warmup_epochs=2)
    assert len(values) == 20
    assert values[0] == 0.0  # warm-up starts at start_warmup_value
    assert values[8] == pytest.approx(1.0)  # end of warm-up = base value
    assert values[-1] == pytest.approx(0.1)
    assert np.all(np.diff(values[:9]) > 0) and np.all(np.diff(values[8:]) <= 0)
    momentum = cosine_schedule(0.996, 1.0, epochs=3, steps_per_epoch=5)
    assert momentum[0] == pytest.approx(0.996) and momentum[-1] == pytest.approx(1.0)


def test_teacher_temperature_warms_up_then_holds():
    temps = teacher_temp_schedule(0.04, 0.07, warmup_epochs=4, epochs=10)
    assert temps[0] == pytest.approx(0.04)
    assert temps[3] == pytest.approx(0.07)
    assert np.all(temps[3:] == pytest.approx(0.07))
    loss_fn = DINOLoss(3, 2, temps)
    assert loss_fn.teacher_temp(99) == pytest.approx(0.07)  # past the end: the last value


def test_ema_update():
    student = torch.nn.Linear(3, 2)
    teacher = torch.nn.Linear(3, 2)
    s_weight, t_weight = student.weight.detach().clone(), teacher.weight.detach().clone()
    update_teacher(student, teacher, 0.9)
    torch.testing.assert_close(teacher.weight.detach(), 0.9 * t_weight + 0.1 * s_weight)
    update_teacher(student, teacher, 1.0)  # momentum 1 keeps the teacher
    torch.testing.assert_close(teacher.weight.detach(), 0.9 * t_weight + 0.1 * s_weight)
    with pytest.raises(ValueError, match="same parameters"):
        update_teacher(torch.nn.Linear(3, 2), torch.nn.Sequential(), 0.5)


def test_head_normalises_bottleneck_and_fixes_last_layer_norm():
    head = DINOHead(16, 40, hidden_dim=32, bottleneck_dim=8)
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad
    row_norms = head.last_layer.weight.norm(dim=1)
    torch.testing.assert_close(row_norms, torch.ones(40))
    x = torch.randn(5, 16)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    torch.testing.assert_close(bottleneck.norm(dim=-1), torch.ones(5))
    assert head(x).shape == (5, 40)
    assert head(x).abs().max() <= 1.0 + 1e-5  # cosine similarities with unit prototypes


def test_last_layer_frozen_in_first_epoch_only():
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    head(torch.randn(3, 8)).sum().backward()
    cancel_last_layer_gradients(head, epoch=0, freeze_epochs=1)
    assert all(p.grad is None for p in head.last_layer.parameters())
    assert all(p.grad is not None for p in head.mlp.parameters())
    head(torch.randn(3, 8)).sum().backward()
    cancel_last_layer_gradients(head, epoch=1, freeze_epochs=1)
    assert head.last_layer.parametrizations.weight.original1.grad is not None


def test_train_step_keeps_prototypes_in_frozen_epoch():
    config = config_from_dict(
        {
            "data": {"input_size": 32},
            "model": TINY_MODEL.model_dump(),
            "head": {"out_dim": 12, "hidden_dim": 16, "bottleneck_dim": 8},
            "augment": {"global_crop_size": 32, "local_crop_size": 16, "n_local_crops": 2},
        }
    )
    student, teacher = build_models(config, [0.0] * 12, [1.0] * 12)
    loss_fn = DINOLoss(12, 4, teacher_temp_schedule(0.04, 0.04, 0, 2))
    optimizer = torch.optim.AdamW(param_groups(student))
    gen = torch.Generator().manual_seed(0)
    crops = MultiCrop(config.augment)(torch.randn(4, 12, 32, 32, generator=gen), gen)
    prototypes = student.head.last_layer.parametrizations.weight.original1
    first_mlp = student.head.mlp[0].weight
    before, mlp_before = prototypes.detach().clone(), first_mlp.detach().clone()
    train_step(student, teacher, loss_fn, optimizer, crops, 0, 1e-3, 0.04, 0.9, config)
    torch.testing.assert_close(prototypes.detach(), before)
    assert not torch.equal(first_mlp.detach(), mlp_before)
    train_step(student, teacher, loss_fn, optimizer, crops, 1, 1e-3, 0.04, 0.9, config)
    assert not torch.equal(prototypes.detach(), before)


def test_param_groups_exclude_biases_and_norms_from_weight_decay():
    model = MultiCropModel(tiny_backbone(), DINOHead(32, 10, hidden_dim=16, bottleneck_dim=4))
    decay, no_decay = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "backbone.vit.blocks.0.attn.qkv.weight" in decay_names
    assert "backbone.vit.blocks.0.attn.qkv.bias" in no_decay_names
    assert "backbone.vit.blocks.0.norm1.weight" in no_decay_names
    assert "backbone.vit.norm.weight" in no_decay_names
    assert all(not n.endswith(".bias") for n in decay_names)
    # The fixed weight-norm magnitude is not trained at all.
    assert "head.last_layer.parametrizations.weight.original0" not in decay_names | no_decay_names
    optimizer = torch.optim.AdamW(param_groups(model))
    set_lr_and_wd(optimizer, 0.5, 0.3)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.3, 0.0]
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.5]


def test_gradients_are_clipped_per_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    (model(torch.randn(8, 4) * 100).sum() * 100).backward()
    small = model[1].bias.grad.clone() * 0 + 1e-3
    model[1].bias.grad.copy_(small)
    norms = clip_gradients(model, 0.5)
    assert max(norms) > 0.5
    for param in model.parameters():
        assert param.grad.norm() <= 0.5 + 1e-4
    torch.testing.assert_close(model[1].bias.grad, small)  # under the limit: untouched


def test_multicrop_shapes_flips_and_reproducibility():
    config = AugmentConfig(global_crop_size=16, local_crop_size=8, n_local_crops=3)
    images = torch.randn(5, 8, 24, 24)
    views = MultiCrop(config)(images, torch.Generator().manual_seed(1))
    assert [tuple(v.shape) for v in views] == [(5, 8, 16, 16)] * 2 + [(5, 8, 8, 8)] * 3
    again = MultiCrop(config)(images, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    # A full-image box is the identity; its mirrored version is an exact horizontal flip.
    full = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).repeat(5, 1)
    same = crop_resize(images, full, torch.zeros(5, dtype=torch.bool), 24)
    torch.testing.assert_close(same, images)
    flipped = crop_resize(images, full, torch.ones(5, dtype=torch.bool), 24)
    torch.testing.assert_close(flipped, images.flip(-1))
    with pytest.raises(ValueError, match="finite"):
        MultiCrop(config)(torch.full((1, 8, 24, 24), float("nan")), torch.Generator())


def test_crop_boxes_respect_scale_and_image():
    boxes = sample_boxes(2000, (0.05, 0.4), torch.Generator().manual_seed(0))
    cx, cy, w, h = boxes.unbind(1)
    area = w * h
    assert area.min() >= 0.05 - 1e-6 and area.max() <= 0.4 + 1e-6
    assert (cx - w / 2).min() >= 0 and (cx + w / 2).max() <= 1 + 1e-6
    assert (cy - h / 2).min() >= 0 and (cy + h / 2).max() <= 1 + 1e-6


def test_same_size_crops_share_one_backbone_call(monkeypatch):
    model = MultiCropModel(tiny_backbone(), DINOHead(32, 10, hidden_dim=16, bottleneck_dim=4))
    calls = []
    original = model.backbone.forward

    def counting(x):
        calls.append(tuple(x.shape))
        return original(x)

    monkeypatch.setattr(model.backbone, "forward", counting)
    crops = [torch.randn(3, 12, 32, 32)] * 2 + [torch.randn(3, 12, 16, 16)] * 4
    assert model(crops).shape == (6 * 3, 10)
    assert calls == [(6, 12, 32, 32), (12, 12, 16, 16)]


def test_backbone_normalises_and_maps_nan_to_mean():
    norm = Normalize([1.0, -2.0], [2.0, 4.0])
    x = torch.tensor([[[[3.0]], [[float("nan")]]]])
    torch.testing.assert_close(norm(x), torch.tensor([[[[1.0]], [[0.0]]]]))
    backbone = tiny_backbone("gssic", 32).eval()
    tiles = torch.rand(2, 8, 32, 32)
    tiles[:, :, :4] = float("nan")
    embedding = backbone(tiles)
    assert embedding.shape == (2, 32) and torch.isfinite(embedding).all()
    attention = backbone.cls_attention(tiles)
    assert attention.shape == (2, 2, 4, 4)
    assert torch.all(attention.flatten(2).sum(-1) < 1.0)  # the CLS token keeps some for itself
    assert backbone(torch.rand(2, 8, 16, 16)).shape == (2, 32)  # local crops: other sizes


def test_backbone_rejects_pretrained_and_wrong_stats():
    with pytest.raises(ValueError, match="12 normalisation values"):
        build_backbone(TINY_MODEL, "s1grd", 32, [0.0] * 8, [1.0] * 8)
    with pytest.raises(ValueError, match="modality"):
        build_backbone(TINY_MODEL, "optical", 32, [0.0], [1.0])


def test_presets_load_with_paper_values():
    assert {"paper-s1grd", "paper-gssic", "cpu-s1grd", "cpu-gssic"} <= set(list_presets())
    s1 = load_config("paper-s1grd")
    gs = load_config("paper-gssic")
    assert (s1.modality, gs.modality) == ("s1grd", "gssic")
    assert s1.model.name == gs.model.name == "vit_base_patch16_224"
    assert s1.data.input_size == gs.data.input_size == 448
    assert (s1.optim.lr, gs.optim.lr) == (1e-6, 1e-5)
    assert (s1.loss.teacher_temp, gs.loss.teacher_temp) == (0.001, 0.04)
    assert (s1.loss.student_temp, gs.loss.student_temp) == (0.03, 0.1)
    assert (s1.loss.warmup_teacher_temp, gs.loss.warmup_teacher_temp) == (0.01, 0.04)
    assert (s1.loss.warmup_teacher_temp_epochs, gs.loss.warmup_teacher_temp_epochs) == (5, 10)
    assert (s1.loss.center_momentum, gs.loss.center_momentum) == (0.99, 0.90)
    cpu = load_config("cpu-gssic")
    assert cpu.modality == "gssic" and cpu.data.input_size == 48
    assert load_config("cpu-s1grd").data.input_size == 64


def test_config_rejects_unknown_keys_and_applies_overrides(tmp_path):
    config = load_config("cpu-s1grd", ["optim.epochs=3", "optim.lr=1e-4", "head.out_dim=256"])
    assert (config.optim.epochs, config.optim.lr, config.head.out_dim) == (3, 1e-4, 256)
    with pytest.raises(ConfigError, match="optim.epoch"):
        load_config("cpu-s1grd", ["optim.epoch=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("cpu-s1grd", ["epochs"])
    with pytest.raises(ConfigError, match="preset name"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        load_config("cpu-s1grd", ["augment.local_crop_size=30"])
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}
    assert isinstance(PretrainConfig(), PretrainConfig)
