"""Typed fine-tuning configuration: YAML or defaults, dotted overrides, unknown keys rejected.

``load_finetune_config("finetune-cpu", ["labels=1000", "optim.max_epochs=10"])`` reads
``training/presets/finetune-cpu.yaml`` (or any YAML path, or nothing: the defaults) and applies
``key=value`` overrides, values parsed as YAML. The modality, input size, architecture and
normalisation statistics are normally left unset here and taken from the pre-training run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from training.config import (
    ModelConfig,
    NormalizationConfig,
    StrictModel,
    load_typed_config,
)


class FinetuneDataConfig(StrictModel):
    """Which tiles fine-tune and stop the model."""

    regions: list[str] = Field(default_factory=lambda: ["conus"], min_length=1)
    input_size: int | None = Field(None, ge=8, description="default: the pre-training run's")
    cache_dir: str | None = Field(None, description="default: DATA_DIR/.cache")
    prepare_workers: int = Field(2, ge=1)
    early_stopping_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="share of the val split for early stopping"
    )
    max_early_stopping_tiles: int | None = Field(None, ge=1)
    calibration_train_share: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="share of the calibration tiles drawn from train tiles outside the label "
        "budget (the rest: the val tiles not used for early stopping), so that calibration "
        "spans the train and val bands of the region",
    )


class FinetuneOptimConfig(StrictModel):
    """AdamW with linear warm-up and cosine decay; early stopping on the val RMSE."""

    max_epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=1, description="epochs without a better val RMSE before stopping")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-4, gt=0.0, description="peak LR of the backbone")
    decoder_lr: float = Field(1e-3, gt=0.0, description="peak LR of the linear decoder")
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    warmup_epochs: int = Field(1, ge=0)
    weight_decay: float = Field(0.05, ge=0.0)
    clip_grad: float = Field(1.0, ge=0.0, description="global gradient norm; 0 disables")
    flips: bool = Field(True, description="random horizontal and vertical flips")


class FinetuneConfig(StrictModel):
    """Everything a fine-tuning run needs besides the data folder and the run folder."""

    modality: Literal["s1grd", "gssic"] | None = Field(
        None, description="default: the pre-training run's"
    )
    pretrained: str | None = Field(None, description="pre-training run folder or checkpoint")
    from_scratch: bool = Field(
        False, description="random init (architecture and statistics still from --pretrained)"
    )
    seed: int = 0
    labels: float = Field(0.01, gt=0.0, description="fraction (<= 1) or count (> 1) of tiles")
    decoder_input: Literal["cls", "attention"] = "cls"
    freeze_backbone: bool = False
    drop_path_rate: float = Field(0.1, ge=0.0, lt=1.0)
    data: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    optim: FinetuneOptimConfig = Field(default_factory=FinetuneOptimConfig)

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: float) -> float:
        if labels > 1.0 and labels != int(labels):
            raise ValueError(f"expected a fraction <= 1 or a whole count of tiles, found {labels}")
        return labels


def load_finetune_config(
    preset_or_path: str | Path | None, overrides: Sequence[str] = ()
) -> FinetuneConfig:
    """Load a preset name or YAML file (or the defaults), apply dotted overrides, validate."""
    return load_typed_config(FinetuneConfig, preset_or_path, overrides, "fine-tuning config")
