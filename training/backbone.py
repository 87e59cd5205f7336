"""The SAR ViT backbone: per-channel normalisation followed by a timm Vision Transformer.

The backbone takes tiles in physical units (dB or coherence) with NaN for nodata, so the same
module can be exported to ONNX and fed exactly what ``sarveg.read_tile`` produces. Normalisation
is a module with buffers; NaN becomes 0 after normalisation, i.e. the channel mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from sarveg import bands
from training.config import ModelConfig


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, then NaN -> 0.

    Args:
        mean: per-channel mean in physical units.
        std: per-channel standard deviation in physical units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(
                f"expected as many std as mean values, found {len(std)} vs {len(mean)}"
            )
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a ``(B, C, H, W)`` batch."""
        x = (x - self.mean) / self.std  # (B, C, H, W)
        # where/isnan rather than nan_to_num: it exports to every ONNX opset.
        return torch.where(torch.isnan(x), torch.zeros_like(x), x)


def vit_kwargs(config: ModelConfig, in_chans: int, input_size: int) -> dict[str, Any]:
    """Return the ``timm.create_model`` keyword arguments for a config.

    ``dynamic_img_size`` lets the same weights see global and local crops of different sizes (the
    position embedding is interpolated), as in the original DINO.
    """
    kwargs: dict[str, Any] = {
        "pretrained": False,
        "in_chans": in_chans,
        "img_size": input_size,
        "num_classes": 0,
        "dynamic_img_size": True,
        "drop_path_rate": config.drop_path_rate,
    }
    for key in ("patch_size", "depth", "embed_dim", "num_heads"):
        value = getattr(config, key)
        if value is not None:
            kwargs[key] = value
    return kwargs


class SarViT(nn.Module):
    """Normalisation + timm ViT; ``forward`` returns the CLS embedding.

    Args:
        name: timm model name, e.g. ``vit_tiny_patch16_224``.
        vit_kwargs: keyword arguments for ``timm.create_model`` (see ``vit_kwargs``).
        mean: per-channel mean in physical units.
        std: per-channel std in physical units.
    """

    def __init__(
        self, name: str, vit_kwargs: dict[str, Any], mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        if vit_kwargs.get("pretrained"):
            raise ValueError("expected pretrained=False (no downloads), found pretrained=True")
        self.name = name
        self.vit_kwargs = dict(vit_kwargs)
        self.normalize = Normalize(mean, std)
        self.vit = timm.create_model(name, **{**self.vit_kwargs, "pretrained": False})
        if len(mean) != self.vit_kwargs["in_chans"]:
            raise ValueError(
                f"expected {self.vit_kwargs['in_chans']} normalisation values (in_chans), "
                f"found {len(mean)}"
            )
        self.embed_dim: int = self.vit.embed_dim
        self.num_prefix_tokens: int = self.vit.num_prefix_tokens

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Return the tokens entering the first block, ``(B, 1 + N, D)``."""
        x = self.normalize(x)  # (B, C, H, W)
        x = self.vit.patch_embed(x)  # (B, h, w, D) with dynamic size, else (B, N, D)
        x = self.vit._pos_embed(x)  # (B, 1 + N, D)
        x = self.vit.patch_drop(x)
        return self.vit.norm_pre(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return all output tokens after the final norm, ``(B, 1 + N, D)``."""
        return self.vit.norm(self.vit.blocks(self.embed_tokens(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the CLS embedding ``(B, D)`` of a ``(B, C, H, W)`` batch in physical units."""
        return self.forward_features(x)[:, 0]

    def cls_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last block's CLS -> patch attention, ``(B, heads, h, w)``."""
        return self.forward_with_attention(x)[1]

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the CLS embedding ``(B, D)`` and last-block CLS -> patch attention in one pass.

        The attention ``(B, heads, h, w)`` is recomputed from the last block's query/key
        projections, since timm's fused attention never materialises the attention matrix.
        """
        _, _, height, width = x.shape
        tokens = self.embed_tokens(x)
        for block in self.vit.blocks[:-1]:
            tokens = block(tokens)
        last = self.vit.blocks[-1]
        attn = last.attn
        normed = last.norm1(tokens)  # (B, T, D)
        b, t, _ = normed.shape
        qkv = attn.qkv(normed).reshape(b, t, 3, attn.num_heads, attn.head_dim)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        q, k = attn.q_norm(q), attn.k_norm(k)
        weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, 1, T)
        patch = self.vit.patch_embed.patch_size
        grid = (height // patch[0], width // patch[1])
        attention = weights[:, :, 0, self.num_prefix_tokens :].reshape(b, attn.num_heads, *grid)
        cls = self.vit.norm(last(tokens))[:, 0]  # (B, D)
        return cls, attention

    def describe(self) -> dict[str, Any]:
        """Return what is needed to rebuild this backbone (name, kwargs, normalisation)."""
        return {
            "name": self.name,
            "kwargs": dict(self.vit_kwargs),
            "mean": self.normalize.mean.flatten().tolist(),
            "std": self.normalize.std.flatten().tolist(),
            "embed_dim": self.embed_dim,
        }


def build_backbone(
    config: ModelConfig,
    modality: str,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> SarViT:
    """Build the backbone for a modality: ``in_chans`` is its number of model channels.

    Args:
        config: architecture settings.
        modality: ``"s1grd"`` or ``"gssic"``.
        input_size: the side of the resampled tiles (and of global crops at most).
        mean: per-channel normalisation mean in physical units.
        std: per-channel normalisation std in physical units.
    """
    if modality not in bands.CHANNELS:
        raise ValueError(f"expected a modality in {list(bands.CHANNELS)}, found {modality!r}")
    in_chans = len(bands.CHANNELS[modality])
    return SarViT(config.name, vit_kwargs(config, in_chans, input_size), mean, std)


def backbone_from_description(description: dict[str, Any]) -> SarViT:
    """Rebuild an (untrained) backbone from ``SarViT.describe()`` output."""
    return SarViT(
        description["name"], description["kwargs"], description["mean"], description["std"]
    )


def load_backbone(checkpoint_path: str | Path, which: str = "teacher") -> SarViT:
    """Load a pre-trained backbone from a DINO checkpoint.

    Args:
        checkpoint_path: ``RUN_DIR/checkpoint.pt`` written by ``sarveg pretrain``.
        which: ``"teacher"`` (DINO's recommended weights for downstream use) or ``"student"``.

    Returns:
        The backbone in eval mode, on CPU.
    """
    if which not in {"teacher", "student"}:
        raise ValueError(f"expected which='teacher' or 'student', found {which!r}")
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    backbone = backbone_from_description(state["backbone"])
    prefix = "backbone."
    weights = {
        key[len(prefix) :]: value for key, value in state[which].items() if key.startswith(prefix)
    }
    backbone.load_state_dict(weights)
    return backbone.eval()
