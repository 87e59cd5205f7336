"""The fine-tuned model: a SAR ViT backbone and a linear decoder regressing mean vegetation.

The decoder reads either the CLS token (default) or the last block's CLS -> patch attention maps,
flattened to ``heads x patches`` (the paper's wording). It predicts the vegetation *fraction*
(percent / 100), which keeps the loss and the initial gradients of order one; the exported graph
multiplies by 100 and clips to 0..100.

A fine-tuning checkpoint (``RUN_DIR/checkpoint.pt``) holds everything needed to rebuild the model
without the data: the backbone description, the decoder input, the weights, and the provenance
that the export writes into the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from training.backbone import SarViT, backbone_from_description

CHECKPOINT_FORMAT = "sarveg-finetune-checkpoint-1"
CHECKPOINT_FILE = "checkpoint.pt"
DecoderInput = Literal["cls", "attention"]


def patch_grid(backbone: SarViT, input_size: int) -> int:
    """Return the number of patches of a square tile of ``input_size`` pixels."""
    patch = backbone.vit.patch_embed.patch_size
    return (input_size // patch[0]) * (input_size // patch[1])


class VegetationRegressor(nn.Module):
    """Backbone + linear decoder.

    Args:
        backbone: the SAR ViT (normalisation inside, physical units in).
        decoder_input: ``"cls"`` or ``"attention"``.
        input_size: tile side in pixels (fixes the attention decoder's width).
    """

    def __init__(self, backbone: SarViT, decoder_input: DecoderInput, input_size: int) -> None:
        super().__init__()
        if decoder_input not in ("cls", "attention"):
            raise ValueError(
                f"expected decoder_input 'cls' or 'attention', found {decoder_input!r}"
            )
        self.backbone = backbone
        self.decoder_input = decoder_input
        self.input_size = input_size
        self.num_heads: int = backbone.vit.blocks[-1].attn.num_heads
        self.num_patches = patch_grid(backbone, input_size)
        width = backbone.embed_dim if decoder_input == "cls" else self.num_heads * self.num_patches
        self.decoder = nn.Linear(width, 1)
        nn.init.trunc_normal_(self.decoder.weight, std=0.02)
        nn.init.zeros_(self.decoder.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the decoder input ``(B, F)`` of a ``(B, C, H, W)`` batch (training path)."""
        if self.decoder_input == "cls":
            return self.backbone(x)  # (B, D)
        return self.backbone.cls_attention(x).flatten(1)  # (B, heads * patches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the predicted vegetation fraction ``(B,)``, unclipped (for the loss)."""
        return self.decoder(self.features(x)).squeeze(-1)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(vegetation_pct (B,), embedding (B, D), attention (B, heads, patches))``.

        ``vegetation_pct`` is in percent, clipped to 0..100: what the exported graph outputs.
        """
        embedding, attention = self.backbone.forward_with_attention(x)
        attention = attention.flatten(2)  # (B, heads, patches)
        features = embedding if self.decoder_input == "cls" else attention.flatten(1)
        fraction = self.decoder(features).squeeze(-1)  # (B,)
        return torch.clamp(fraction * 100.0, 0.0, 100.0), embedding, attention


@dataclass
class FinetunedModel:
    """A fine-tuned model rebuilt from its checkpoint, in eval mode on CPU."""

    model: VegetationRegressor
    checkpoint: dict[str, Any]
    path: Path

    @property
    def modality(self) -> str:
        """``"s1grd"`` or ``"gssic"``."""
        return str(self.checkpoint["modality"])

    @property
    def input_size(self) -> int:
        """Tile side in pixels."""
        return int(self.checkpoint["input_size"])


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder or a checkpoint file; return the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ValueError(f"expected a fine-tuning checkpoint file or run folder, found {path}")
    return path


def build_regressor(checkpoint: dict[str, Any]) -> VegetationRegressor:
    """Rebuild the (untrained) model a checkpoint describes."""
    backbone = backbone_from_description(checkpoint["backbone"])
    return VegetationRegressor(backbone, checkpoint["decoder_input"], checkpoint["input_size"])


def load_finetuned(path: str | Path) -> FinetunedModel:
    """Load a fine-tuning checkpoint written by ``sarveg finetune``.

    Args:
        path: ``RUN_DIR`` or ``RUN_DIR/checkpoint.pt``.

    Returns:
        The model in eval mode with the checkpoint's metadata.
    """
    file = resolve_checkpoint(path)
    checkpoint = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint)
        raise ValueError(
            f"{file}: expected a fine-tuning checkpoint ({CHECKPOINT_FORMAT}), found {found!r}"
        )
    model = build_regressor(checkpoint)
    model.load_state_dict(checkpoint["model"])
    return FinetunedModel(model=model.eval(), checkpoint=checkpoint, path=file)
