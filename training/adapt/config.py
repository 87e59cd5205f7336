"""The ``sarveg adapt`` settings: ``AdaptConfig``, its loader, the label minimum and split sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from training.config import StrictModel, load_typed_config
from training.finetune_config import FinetuneOptimConfig

# A split-conformal 90 % interval is finite only with ceil((m + 1) * 0.9) <= m, i.e. m >= 9.
MIN_CALIBRATION_LABELS = 9
MIN_TRAIN_LABELS = 4
MIN_EARLY_STOPPING_LABELS = 2
FINETUNE_FILE = "finetune.pt"
CONFIG_FILE = "adapt_config.yaml"
CHECK_TILES = 500
# Settings that change the shipped graph but not the fine-tune: a rerun differing only in these
# reuses the finished fine-tune.
EXPORT_ONLY_KEYS = frozenset(
    {"route_old_regions", "route_if_worse_by", "variant", "timing_seconds", "timing_repeats"}
)
# Settings that add a second fine-tune but leave the first as it was (it is reused).
REFIT_ONLY_KEYS = frozenset({"refit_all_labels"})
REFIT_DIR = "refit"


class AdaptOptimConfig(FinetuneOptimConfig):
    """The optimiser of an adaptation: gentler than a first fine-tune, few labels to fit.

    Its own class so that a partial override (``optim.max_epochs=10``) keeps these defaults.
    """

    max_epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-5, gt=0.0, description="peak LR of the backbone")
    decoder_lr: float = Field(5e-4, gt=0.0, description="peak LR of the linear decoder")


class AdaptConfig(StrictModel):
    """Choices of ``sarveg adapt`` besides its folders (unknown keys are errors)."""

    seed: int = 0
    region: str | None = Field(None, description="the new region (default: the data's only one)")
    calibration_fraction: float = Field(0.35, gt=0.0, lt=1.0)
    early_stopping_fraction: float = Field(
        0.15, gt=0.0, lt=1.0, description="with average_last_epochs=0 only"
    )
    average_last_epochs: int = Field(
        6,
        ge=0,
        description="N > 0: no early-stopping tiles (they are fitted too), train "
        "optim.max_epochs epochs and keep the average of the last N epochs' weights; 0: stop "
        "early on early_stopping_fraction of the labels",
    )
    rehearsal_tiles: int = Field(512, ge=0, description="old-region train tiles per epoch")
    rehearsal_resample: bool = Field(
        False,
        description="draw the rehearsal_tiles afresh every epoch from all the parent's labelled "
        "tiles (default: one draw, fitted every epoch; resampling measured no gain)",
    )
    new_share: float = Field(0.5, gt=0.0, le=1.0, description="new tiles' share of an epoch")
    freeze_backbone: bool = Field(False, description="fit the decoder only")
    anchor_weight: float = Field(
        0.0,
        ge=0.0,
        description="L2-SP: weight of the squared distance of the backbone's weights to the "
        "bundle's, added to the loss (0: none)",
    )
    distill_weight: float = Field(
        0.0,
        ge=0.0,
        description="feature distillation: weight of the relative squared distance between the "
        "rehearsed old-region tiles' decoder input and the bundle's, added to the loss (0: none)",
    )
    route_old_regions: Literal["auto"] | bool = Field(
        "auto",
        description="ship the parent's model in the graph beside the fine-tuned one, with a "
        "logistic gate on the embedding that gives old-region tiles the parent's estimate (no "
        "forgetting; about twice the inference time; needs --old-data). 'auto': route when "
        "--old-data is given, the parent does not route itself, and the fine-tuned model errs "
        "more than the parent on held-out old-region tiles (by over route_if_worse_by)",
    )
    route_if_worse_by: float = Field(
        -0.02,
        gt=-1.0,
        description="auto routes when the fine-tuned model's RMSE on one half of the old "
        "regions' test splits exceeds the parent's by more than this share; negative (default "
        "-0.02): route unless the fine-tune is that much better (that half is one band of the "
        "region and understates the forgetting measured over the whole region)",
    )
    refit_all_labels: bool = Field(
        True,
        description="fine-tune twice: once without the labelled calibration tiles, whose "
        "held-out errors calibrate the interval, then on every label, which is the model shipped "
        "(twice the fine-tuning time; the interval is that of the first, smaller fit); false: "
        "one fine-tune, the calibration tiles never fitted (the default before)",
    )
    reference_tiles: int = Field(1000, ge=10, description="unlabelled new tiles as reference")
    calibration_tiles: int = Field(1000, ge=10, description="unlabelled new tiles calibrating")
    max_reference: int = Field(1000, ge=10, description="reference tiles per old or other region")
    variant: str = Field("same", description="'same' as the parent, 'auto' or a variant name")
    timing_seconds: float = Field(0.2, gt=0.0)
    timing_repeats: int = Field(1, ge=1)
    optim: AdaptOptimConfig = Field(default_factory=AdaptOptimConfig)

    @model_validator(mode="after")
    def _average_within_the_run(self) -> AdaptConfig:
        if self.average_last_epochs > self.optim.max_epochs:
            raise ValueError(
                f"expected average_last_epochs <= optim.max_epochs ({self.optim.max_epochs}), "
                f"found {self.average_last_epochs}"
            )
        return self


def load_adapt_config(preset_or_path: str | Path | None, overrides: list[str]) -> AdaptConfig:
    """Defaults or a YAML file, then ``key=value`` overrides, validated."""
    return load_typed_config(AdaptConfig, preset_or_path, overrides, "adaptation config")


def minimum_labels(config: AdaptConfig) -> int:
    """The fewest labels whose split leaves enough tiles to calibrate, train and stop."""
    for n in range(1, 100_000):
        calibration, stopping, train = split_counts(n, config)
        if (
            calibration >= MIN_CALIBRATION_LABELS
            and (stopping >= MIN_EARLY_STOPPING_LABELS or config.average_last_epochs)
            and train >= MIN_TRAIN_LABELS
        ):
            return n
    raise ValueError("expected fractions that leave tiles to train on")


def split_counts(n: int, config: AdaptConfig) -> tuple[int, int, int]:
    """``(calibration, early stopping, train)`` tiles out of ``n`` labelled ones."""
    calibration = round(config.calibration_fraction * n)
    stopping = 0 if config.average_last_epochs else round(config.early_stopping_fraction * n)
    return calibration, stopping, n - calibration - stopping
