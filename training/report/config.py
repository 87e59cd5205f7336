"""Typed settings of the experiment protocol, loaded from a preset (``report-cpu``) or YAML."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from training.config import StrictModel, load_typed_config


class BudgetConfig(StrictModel):
    """One label budget of the protocol, in the paper's terms and in tiles."""

    name: str = Field(description="how the paper names it, e.g. '1 %'")
    fraction: float = Field(gt=0.0, le=1.0, description="share of the region's train split")
    max_epochs: int = Field(10, ge=1, description="epoch cap for this budget")
    patience: int | None = Field(
        None, ge=1, description="early-stopping patience in epochs (None: the preset's)"
    )


class ReportConfig(StrictModel):
    """What ``sarveg report`` runs. The first budget is the paper's 1 % (Tables 2 and 3)."""

    modalities: list[Literal["s1grd", "gssic"]] = Field(
        default_factory=lambda: ["s1grd", "gssic"], min_length=1
    )
    regions: list[str] = Field(
        default_factory=lambda: ["europe", "china", "conus", "south_america"], min_length=2
    )
    pretrain_regions: list[str] = Field(
        default_factory=lambda: ["europe", "china", "conus"], min_length=1
    )
    unseen_region: str = "south_america"
    min_labels: int = Field(
        100, ge=1, description="floor of every budget, in tiles per fine-tuning region"
    )
    budgets: list[BudgetConfig] = Field(
        default_factory=lambda: [
            BudgetConfig(name="1 %", fraction=0.01, max_epochs=10),
            BudgetConfig(name="10 %", fraction=0.10, max_epochs=6),
            BudgetConfig(name="100 %", fraction=1.0, max_epochs=3),
        ],
        min_length=1,
    )
    budget_regions: list[str] = Field(
        default_factory=lambda: ["conus", "europe"], description="regions of the Figure 6 curve"
    )
    finetune_preset: str = "finetune-cpu"
    finetune_overrides: list[str] = Field(default_factory=list)
    tsne_tiles_per_region: int = Field(2000, ge=10)
    tsne_perplexity: float = Field(30.0, gt=1.0)
    swd_seeds: int = Field(10, ge=1)
    swd_projections: int = Field(10_000, ge=1)
    attention_tiles: int = Field(3, ge=1)
    seed: int = 0
    table2_seeds: int = Field(
        3, ge=1, description="repeats of Table 2 (label sample and init): mean and spread"
    )
    workers: int = Field(2, ge=1, description="processes decoding tiles, threads computing SWD")

    @model_validator(mode="after")
    def _check_regions(self) -> ReportConfig:
        known = set(self.regions)
        for name, chosen in (
            ("pretrain_regions", self.pretrain_regions),
            ("budget_regions", self.budget_regions),
            ("unseen_region", [self.unseen_region]),
        ):
            missing = [r for r in chosen if r not in known]
            if missing:
                raise ValueError(f"{name}: expected regions among {self.regions}, found {missing}")
        if self.unseen_region in self.pretrain_regions:
            raise ValueError(
                f"unseen_region {self.unseen_region!r} must not be a pre-training region"
            )
        return self


def load_report_config(
    preset_or_path: str | Path | None, overrides: Sequence[str] = ()
) -> ReportConfig:
    """Load a preset name (``report-cpu``, ``report-tiny``) or YAML file, apply overrides."""
    return load_typed_config(ReportConfig, preset_or_path, overrides, "report config")
