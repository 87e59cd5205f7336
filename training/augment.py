"""Multi-crop augmentation for C-channel SAR batches: random resized crops and horizontal flips.

Nothing else: colour jitter, blur and solarisation assume RGB photographs and would change the
physical meaning of backscatter (dB) or coherence values. Crops are drawn per sample, with
continuous boxes, and resampled for the whole batch at once with one bilinear ``grid_sample`` per
view, which keeps augmentation a small fraction of a CPU training step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.config import AugmentConfig

ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
BOX_TRIES = 10


def sample_boxes(
    n: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = ASPECT_RATIO,
) -> torch.Tensor:
    """Draw random-resized-crop boxes as fractions of the image side.

    As torchvision's ``RandomResizedCrop``: area fraction uniform in ``scale``, aspect ratio
    log-uniform in ``ratio``, up to ``BOX_TRIES`` draws until the box fits, else the largest
    box of the clamped ratio that fits.

    Returns:
        ``(n, 4)`` tensor of ``(centre_x, centre_y, width, height)``, all in ``[0, 1]``.
    """
    area = torch.empty(n, BOX_TRIES).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n, BOX_TRIES).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect)  # (n, tries)
    height = torch.sqrt(area / aspect)
    fits = (width <= 1.0) & (height <= 1.0)
    first = torch.argmax(fits.to(torch.int8), dim=1)  # first fitting try, 0 if none
    rows = torch.arange(n)
    width, height = width[rows, first], height[rows, first]
    none_fit = ~fits.any(dim=1)
    width = torch.where(none_fit, torch.ones_like(width), width).clamp(max=1.0)
    height = torch.where(none_fit, torch.ones_like(height), height).clamp(max=1.0)
    offsets = torch.rand(n, 2, generator=generator)
    centre_x = width / 2 + offsets[:, 0] * (1 - width)
    centre_y = height / 2 + offsets[:, 1] * (1 - height)
    return torch.stack([centre_x, centre_y, width, height], dim=1)


def crop_resize(
    images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int
) -> torch.Tensor:
    """Resample one box per image to ``size x size``, mirrored where ``flips`` is true.

    Args:
        images: ``(B, C, H, W)`` float, finite.
        boxes: ``(B, 4)`` from ``sample_boxes``.
        flips: ``(B,)`` bool.
        size: output side in pixels.

    Returns:
        ``(B, C, size, size)``.
    """
    b, c = images.shape[:2]
    centre_x, centre_y, width, height = boxes.to(images.dtype).unbind(1)
    sign = 1.0 - 2.0 * flips.to(images.dtype)  # -1 mirrors the sampling grid
    theta = torch.zeros(b, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = 2 * centre_x - 1
    theta[:, 1, 1] = height
    theta[:, 1, 2] = 2 * centre_y - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)  # (B, size, size, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class MultiCrop:
    """Produce 2 global and N local views of a batch.

    Args:
        config: crop sizes, scale ranges, number of local crops and flip probability.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    @property
    def n_views(self) -> int:
        """Total number of views: 2 global + local."""
        return 2 + self.config.n_local_crops

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """Return the views, the 2 global ones first.

        Args:
            images: ``(B, C, S, S)`` finite float tensor (fill nodata before cropping).
            generator: the source of randomness, so a step's crops can be reproduced.

        Returns:
            ``[(B, C, G, G)] * 2 + [(B, C, L, L)] * n_local_crops``.
        """
        if not torch.isfinite(images).all():
            raise ValueError("expected finite images for cropping, found NaN or inf")
        cfg = self.config
        b = images.shape[0]
        plan = [(cfg.global_crop_scale, cfg.global_crop_size)] * 2 + [
            (cfg.local_crop_scale, cfg.local_crop_size)
        ] * cfg.n_local_crops
        views = []
        for scale, size in plan:
            boxes = sample_boxes(b, scale, generator)
            flips = torch.rand(b, generator=generator) < cfg.hflip_prob
            views.append(crop_resize(images, boxes, flips, size))
        return views
