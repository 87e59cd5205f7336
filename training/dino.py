"""DINO: projection head, centred cross-entropy loss, schedules and the EMA teacher.

Follows the semantics of Caron et al. (2021), "Emerging Properties in Self-Supervised Vision
Transformers": a 3-layer MLP head ending in an L2-normalised bottleneck and a weight-normalised
prototype layer; the teacher's outputs are centred (momentum-averaged over all processes) and
sharpened with a temperature that warms up linearly; the loss sums the cross-entropy over every
(teacher global view, student view) pair except a view with itself; the teacher is an EMA of the
student with a cosine momentum schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from training.backbone import SarViT


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised linear layer to ``out_dim`` logits.

    Args:
        in_dim: backbone embedding size.
        out_dim: number of prototypes K.
        hidden_dim: MLP hidden width.
        bottleneck_dim: width of the normalised bottleneck.
        nlayers: number of MLP layers (>= 1).
        use_bn: batch norm between MLP layers.
        norm_last_layer: fix the weight-norm magnitude to 1 (trainable if False).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if nlayers == 1:
            layers.append(nn.Linear(in_dim, bottleneck_dim))
        else:
            dims = [in_dim] + [hidden_dim] * (nlayers - 1)
            for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
                layers.append(nn.Linear(d_in, d_out))
                if use_bn:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.apply(init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0  # (out_dim, 1)
        with torch.no_grad():
            magnitude.fill_(1.0)
        if norm_last_layer:
            magnitude.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_dim)`` embeddings to ``(B, out_dim)`` logits."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)  # (B, bottleneck_dim)
        return self.last_layer(x)


def init_linear(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) weights and zero biases for linear layers, as in DINO."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MultiCropModel(nn.Module):
    """Backbone + head that runs crops of equal size through the backbone in one batch.

    ``forward(crops)`` takes the list of views, each ``(B, C, S_v, S_v)``, and returns the head
    logits of all views concatenated view-major, ``(V * B, out_dim)``.
    """

    def __init__(self, backbone: SarViT, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return ``(V * B, out_dim)`` logits for ``V`` views of a batch."""
        embeddings = []
        start = 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            embeddings.append(self.backbone(torch.cat(list(crops[start:end]))))  # (n*B, D)
            start = end
        return self.head(torch.cat(embeddings))


class DINOLoss(nn.Module):
    """Cross-entropy between sharpened, centred teacher and student distributions.

    Args:
        out_dim: number of prototypes K.
        n_crops: total number of student views (2 global + local).
        teacher_temps: teacher temperature per epoch (see ``teacher_temp_schedule``).
        student_temp: student temperature.
        center_momentum: EMA momentum of the centre.
    """

    center: torch.Tensor

    def __init__(
        self,
        out_dim: int,
        n_crops: int,
        teacher_temps: np.ndarray,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.n_crops = n_crops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.teacher_temps = np.asarray(teacher_temps, dtype=np.float64)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temp(self, epoch: int) -> float:
        """Return the teacher temperature used during ``epoch``."""
        return float(self.teacher_temps[min(epoch, len(self.teacher_temps) - 1)])

    def teacher_probs(self, teacher_logits: torch.Tensor, epoch: int) -> torch.Tensor:
        """Return the centred, sharpened teacher distribution, ``(2 * B, K)``."""
        return F.softmax((teacher_logits - self.center) / self.teacher_temp(epoch), dim=-1)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, epoch: int
    ) -> torch.Tensor:
        """Return the mean cross-entropy over all (teacher global, other student view) pairs.

        Args:
            student_logits: ``(n_crops * B, K)``, view-major (the 2 global views first).
            teacher_logits: ``(2 * B, K)``, view-major.
            epoch: current epoch, for the teacher temperature.

        Also updates the centre with the teacher logits (after computing the loss).
        """
        n_teacher = 2
        batch = teacher_logits.shape[0] // n_teacher
        student_logp = F.log_softmax(student_logits / self.student_temp, dim=-1)
        student_logp = student_logp.view(self.n_crops, batch, -1)  # (V, B, K)
        teacher_probs = self.teacher_probs(teacher_logits, epoch).detach()
        teacher_probs = teacher_probs.view(n_teacher, batch, -1)  # (2, B, K)
        # Mean cross-entropy of every (teacher view t, student view s) pair: (2, V).
        pair_ce = -torch.einsum("tbk,sbk->ts", teacher_probs, student_logp) / batch
        # A view is never its own target: drop the pairs t == s.
        keep = ~torch.eye(n_teacher, self.n_crops, dtype=torch.bool, device=pair_ce.device)
        loss = pair_ce[keep].mean()
        self.update_center(teacher_logits)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the batch mean of the teacher logits, averaged over all processes."""
        batch_sum = teacher_logits.sum(dim=0, keepdim=True)  # (1, K)
        count = teacher_logits.new_tensor(float(teacher_logits.shape[0]))
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        batch_center = batch_sum / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Return one value per step: linear warm-up, then a half cosine from base to final.

    Args:
        base_value: value at the end of warm-up.
        final_value: value at the last step.
        epochs: total epochs.
        steps_per_epoch: optimiser steps per epoch.
        warmup_epochs: epochs of linear warm-up from ``start_warmup_value``.
        start_warmup_value: value at step 0 when warming up.

    Returns:
        float64 array of length ``epochs * steps_per_epoch``.
    """
    total = epochs * steps_per_epoch
    warmup_steps = min(warmup_epochs * steps_per_epoch, total)
    warmup = np.linspace(start_warmup_value, base_value, warmup_steps, endpoint=False)
    steps = np.arange(total - warmup_steps)
    span = max(len(steps) - 1, 1)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * steps / span))
    schedule = np.concatenate([warmup, cosine]).astype(np.float64)
    if len(schedule) != total:
        raise AssertionError(f"schedule length {len(schedule)} != {total}")
    return schedule


def teacher_temp_schedule(
    warmup_temp: float, final_temp: float, warmup_epochs: int, epochs: int
) -> np.ndarray:
    """Return the teacher temperature per epoch: linear from ``warmup_temp``, then constant."""
    warmup_epochs = min(warmup_epochs, epochs)
    warmup = np.linspace(warmup_temp, final_temp, warmup_epochs)
    return np.concatenate([warmup, np.full(epochs - warmup_epochs, final_temp)])


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter."""
    student_params = [p.detach() for p in student.parameters()]
    teacher_params = list(teacher.parameters())
    if len(student_params) != len(teacher_params):
        raise ValueError(
            f"expected teacher and student with the same parameters, found "
            f"{len(teacher_params)} vs {len(student_params)}"
        )
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1 - momentum)


def param_groups(model: nn.Module) -> list[dict[str, object]]:
    """Split trainable parameters: weight decay on weights only, none on biases and norms.

    Returns:
        Two groups for the optimiser; the second has ``"apply_wd": False`` and weight decay 0.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # 1-D tensors are biases, norm scales, tokens' per-channel params: never decayed.
        if name.endswith(".bias") or param.ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "apply_wd": True},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
    ]


def clip_gradients(model: nn.Module, clip: float) -> list[float]:
    """Clip every parameter's gradient to norm ``clip`` on its own (DINO's per-parameter rule).

    Returns:
        The gradient norms before clipping.
    """
    norms = []
    for param in model.parameters():
        if param.grad is None:
            continue
        norm = float(param.grad.detach().norm(2))
        norms.append(norm)
        coefficient = clip / (norm + 1e-6)
        if coefficient < 1:
            param.grad.mul_(coefficient)
    return norms


def cancel_last_layer_gradients(head: DINOHead, epoch: int, freeze_epochs: int) -> None:
    """Drop the prototype layer's gradients during the first ``freeze_epochs`` epochs.

    Training the prototypes from the start lets the student fall into a trivial solution; DINO
    holds them fixed for the first epoch.
    """
    if epoch >= freeze_epochs:
        return
    for param in head.last_layer.parameters():
        param.grad = None


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Return the entropy (nats) of each row of ``(B, K)`` probabilities, ``(B,)``."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def set_lr_and_wd(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Write the scheduled LR into every group and the scheduled WD into the decayed group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group.get("apply_wd", True):
            group["weight_decay"] = wd


def uniform_loss(out_dim: int) -> float:
    """The DINO loss of a collapsed, uniform output: ``ln(out_dim)``."""
    return math.log(out_dim)
