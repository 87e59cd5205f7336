"""The protocol's fine-tuning runs and their test-split predictions, reused when already done.

Every run fine-tunes on a label budget of some regions' train split (``training.finetune``) and
is then evaluated on the test split of every region. A run folder holds the fine-tuning
checkpoint, a ``report_run.json`` naming what was asked for, and ``predictions.npz`` with the
test predictions and CLS embeddings, so a rerun of the report only does what is missing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from training.backbone import load_backbone
from training.cache import TileCache
from training.evaluate import Predictions, load_rows_in_order, predict_rows
from training.finetune import finetune, pick_rows, resolve_pretrained
from training.finetune_config import load_finetune_config
from training.regressor import CHECKPOINT_FILE, load_finetuned
from training.report.config import BudgetConfig, ReportConfig

Init = Literal["pretrained", "scratch"]
RUN_FILE = "report_run.json"
PREDICTIONS_FILE = "predictions.npz"


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run of the protocol."""

    modality: str
    init: Init
    regions: tuple[str, ...]  # fine-tuning regions
    budget: str  # the budget's name, e.g. "1 %"
    n_labels: int  # labelled tiles, all regions together
    max_epochs: int
    seed: int  # label sample, decoder init (and backbone init from scratch)
    patience: int | None = None  # None: the fine-tuning preset's

    @property
    def name(self) -> str:
        """Folder name, e.g. ``pretrained-conus-1pct``."""
        where = "+".join(self.regions) if len(self.regions) == 1 else "combined"
        slug = self.budget.replace(" ", "").replace("%", "pct").replace(".", "_")
        return f"{self.init}-{where}-{slug}-seed{self.seed}"


@dataclass(frozen=True)
class RunResult:
    """A finished run: what it was, its fine-tuning summary and its test predictions."""

    spec: RunSpec
    summary: dict
    predictions: Predictions  # every region's test tiles


def budget_tiles(
    cache: TileCache, regions: tuple[str, ...], budget: BudgetConfig, min_labels: int
) -> int:
    """Labelled tiles for a budget: the fraction of each region's train split, floored."""
    total = 0
    for region in regions:
        available = len(pick_rows(cache, "train", [region]))
        total += min(available, max(round(budget.fraction * available), min_labels))
    if total == 0:
        raise ValueError(f"expected labelled train tiles in {list(regions)}, found none")
    return total


def make_spec(
    cache: TileCache,
    config: ReportConfig,
    init: Init,
    regions: tuple[str, ...],
    budget: BudgetConfig,
    seed: int,
) -> RunSpec:
    """The run for a budget on some regions, its size in tiles fixed from the cache."""
    return RunSpec(
        modality=cache.modality,
        init=init,
        regions=regions,
        budget=budget.name,
        n_labels=budget_tiles(cache, regions, budget, config.min_labels),
        max_epochs=budget.max_epochs,
        seed=seed,
        patience=budget.patience,
    )


def test_rows(cache: TileCache, regions: list[str]) -> np.ndarray:
    """Labelled test tiles of the regions, in cache order."""
    return pick_rows(cache, "test", regions)


def save_predictions(predictions: Predictions, path: Path) -> None:
    """Write test predictions (no attention) as a compressed npz."""
    np.savez_compressed(
        path,
        identifiers=np.asarray(predictions.identifiers),
        regions=np.asarray(predictions.regions),
        vegetation_pct=predictions.vegetation_pct,
        predicted_pct=predictions.predicted_pct,
        embedding=predictions.embedding,
    )


def load_predictions(path: Path) -> Predictions:
    """Read predictions written by ``save_predictions``."""
    with np.load(path) as data:
        return Predictions(
            identifiers=data["identifiers"].tolist(),
            regions=data["regions"].tolist(),
            vegetation_pct=data["vegetation_pct"],
            predicted_pct=data["predicted_pct"],
            embedding=data["embedding"],
            attention=None,
        )


def finished(run_dir: Path, spec: RunSpec) -> bool:
    """True when the folder holds this very run, fine-tuned and evaluated."""
    record = run_dir / RUN_FILE
    if not (record.is_file() and (run_dir / PREDICTIONS_FILE).is_file()):
        return False
    return json.loads(record.read_text()).get("spec") == spec_record(spec)


def spec_record(spec: RunSpec) -> dict:
    """The spec as recorded in a run folder; settings left to the preset are not written."""
    as_json = json.loads(json.dumps(asdict(spec)))  # tuples read back as lists
    return {key: value for key, value in as_json.items() if value is not None}


def run_experiment(
    spec: RunSpec,
    pretrained: Path,
    data_dir: Path,
    cache: TileCache,
    runs_dir: Path,
    config: ReportConfig,
    progress: bool,
) -> RunResult:
    """Fine-tune (unless already done) and predict every region's test split.

    Args:
        spec: the run.
        pretrained: the modality's pre-training run (weights, or only the architecture and
            normalisation statistics for a from-scratch run).
        data_dir: the dataset folder.
        cache: prepared tiles of every protocol region, all splits.
        runs_dir: parent of the run folders.
        config: the protocol settings.
        progress: show progress bars.
    """
    run_dir = runs_dir / spec.modality / spec.name
    if finished(run_dir, spec):
        summary = json.loads((run_dir / "summary.json").read_text())
        return RunResult(spec, summary, load_predictions(run_dir / PREDICTIONS_FILE))
    overrides = [
        f"pretrained={pretrained}",
        f"from_scratch={'true' if spec.init == 'scratch' else 'false'}",
        f"labels={spec.n_labels}",
        f"data.regions=[{','.join(spec.regions)}]",
        f"optim.max_epochs={spec.max_epochs}",
        f"seed={spec.seed}",
        *config.finetune_overrides,
        # A budget's own patience wins over the protocol-wide overrides.
        *([f"optim.patience={spec.patience}"] if spec.patience is not None else []),
    ]
    finetune_config = load_finetune_config(config.finetune_preset, overrides)
    summary = finetune(finetune_config, data_dir, run_dir, progress=progress, cache=cache)
    model = load_finetuned(run_dir / CHECKPOINT_FILE).model
    predictions = predict_rows(model, cache, test_rows(cache, config.regions), progress=progress)
    save_predictions(predictions, run_dir / PREDICTIONS_FILE)
    (run_dir / RUN_FILE).write_text(json.dumps({"spec": spec_record(spec)}, indent=2) + "\n")
    return RunResult(spec, summary, predictions)


@torch.inference_mode()
def embed_pretrained(
    pretrained: Path, cache: TileCache, rows: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """CLS embeddings ``(n, D)`` of cache rows by the pre-trained teacher backbone."""
    backbone = load_backbone(resolve_pretrained(pretrained))
    out = []
    for start in range(0, len(rows), batch_size):
        x = load_rows_in_order(cache.tiles, rows[start : start + batch_size])  # (B, C, S, S)
        out.append(backbone(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, backbone.embed_dim), np.float32)


@torch.inference_mode()
def attention_maps(run_dir: Path, cache: TileCache, rows: np.ndarray) -> np.ndarray:
    """Last-block CLS -> patch attention ``(n, heads, h, w)`` of a fine-tuned run's backbone."""
    model = load_finetuned(run_dir / CHECKPOINT_FILE).model
    x = load_rows_in_order(cache.tiles, rows)  # (n, C, S, S)
    return model.backbone.cls_attention(x).numpy()
