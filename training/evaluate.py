"""Predictions, embeddings and per-region RMSE of a fine-tuned model on a set of tiles.

    sarveg evaluate --checkpoint RUN_DIR --data DIR [--split test] [--regions a,b] [--csv OUT]

Tiles come from the prepared-tile cache (``training.cache``), the same resampled float16 arrays
fine-tuning saw; a cache is keyed by the (regions, splits) selection, so evaluating the test
split of every region builds one cache that every later evaluation reuses.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.cache import TileCache, prepare_cache
from training.regressor import FinetunedModel, VegetationRegressor, load_finetuned

SIMULATION_MANIFEST = "simulation.json"


@dataclass(frozen=True)
class RegionScores:
    """Errors of predictions against labels, in percentage points."""

    rmse: float
    mae: float
    bias: float  # mean(prediction - label)
    n_tiles: int
    label_std: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (JSON, ``sarveg.bundle.RegionMetrics``)."""
        return asdict(self)


def score_predictions(vegetation_pct: np.ndarray, predicted_pct: np.ndarray) -> RegionScores:
    """Return RMSE, MAE, bias and label spread over tiles with a finite label.

    Raises:
        ValueError: if no tile has a label.
    """
    y = np.asarray(vegetation_pct, np.float64)
    yhat = np.asarray(predicted_pct, np.float64)
    keep = np.isfinite(y)
    if not keep.any():
        raise ValueError("expected at least one labelled tile to score, found none")
    error = yhat[keep] - y[keep]
    return RegionScores(
        rmse=float(np.sqrt(np.mean(error**2))),
        mae=float(np.mean(np.abs(error))),
        bias=float(np.mean(error)),
        n_tiles=int(keep.sum()),
        label_std=float(np.std(y[keep])),
    )


def load_rows(tiles: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Read cache rows (ascending) as a float32 ``(B, C, S, S)`` tensor, NaN kept.

    NaN is left for the backbone's ``Normalize`` (NaN -> 0 after normalisation), exactly as the
    exported graph will see tiles in serving.
    """
    return torch.from_numpy(np.asarray(tiles[rows], dtype=np.float32))


def load_rows_in_order(tiles: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Read cache rows in any order as a float32 ``(B, C, S, S)`` tensor, in that order.

    The memmap is read in ascending row order (fastest) and the batch put back in ``rows`` order.
    """
    rows = np.asarray(rows, dtype=np.int64)
    ascending = np.argsort(rows)
    batch = np.asarray(tiles[rows[ascending]], dtype=np.float32)
    return torch.from_numpy(batch[np.argsort(ascending)])


@dataclass(frozen=True, eq=False)
class Predictions:
    """Model outputs for a set of cache rows, in row order."""

    identifiers: list[str]
    regions: list[str]
    vegetation_pct: np.ndarray  # (n,) labels, NaN when unlabelled
    predicted_pct: np.ndarray  # (n,) float32, clipped 0..100
    embedding: np.ndarray  # (n, D) float32, CLS token
    attention: np.ndarray | None  # (n, heads, patches) float32 when requested

    def select(self, mask: np.ndarray) -> Predictions:
        """The subset of tiles where ``mask`` is true."""
        index = np.flatnonzero(mask)
        return Predictions(
            identifiers=[self.identifiers[i] for i in index],
            regions=[self.regions[i] for i in index],
            vegetation_pct=self.vegetation_pct[index],
            predicted_pct=self.predicted_pct[index],
            embedding=self.embedding[index],
            attention=None if self.attention is None else self.attention[index],
        )

    def by_region(self) -> dict[str, RegionScores]:
        """Scores per region (regions without labels are left out)."""
        regions = np.asarray(self.regions)
        scores = {}
        for region in sorted(set(self.regions)):
            mask = regions == region
            if np.isfinite(self.vegetation_pct[mask]).any():
                scores[region] = score_predictions(
                    self.vegetation_pct[mask], self.predicted_pct[mask]
                )
        return scores


@torch.inference_mode()
def predict_rows(
    model: VegetationRegressor,
    cache: TileCache,
    rows: np.ndarray,
    batch_size: int = 128,
    with_attention: bool = False,
    progress: bool = False,
) -> Predictions:
    """Run the model (eval mode) over cache rows.

    Args:
        model: the fine-tuned regressor; put in eval mode here and left so.
        cache: the prepared tiles.
        rows: cache row numbers, any order (outputs follow it).
        batch_size: tiles per forward pass.
        with_attention: also keep the CLS -> patch attention of the last block.
        progress: show a progress bar.
    """
    model.eval()
    rows = np.asarray(rows, dtype=np.int64)
    predicted, embedded, attended = [], [], []
    for start in tqdm(
        range(0, len(rows), batch_size), desc="predict", disable=not progress, leave=False
    ):
        x = load_rows_in_order(cache.tiles, rows[start : start + batch_size])  # (B, C, S, S)
        vegetation_pct, embedding, attention = model.forward_all(x)
        predicted.append(vegetation_pct.numpy())
        embedded.append(embedding.numpy())
        if with_attention:
            attended.append(attention.numpy())
    dim = model.backbone.embed_dim
    return Predictions(
        identifiers=[cache.identifiers[i] for i in rows],
        regions=[cache.regions[i] for i in rows],
        vegetation_pct=cache.vegetation_pct[rows].astype(np.float64),
        predicted_pct=np.concatenate(predicted) if predicted else np.zeros(0, np.float32),
        embedding=np.concatenate(embedded) if embedded else np.zeros((0, dim), np.float32),
        attention=np.concatenate(attended) if with_attention and attended else None,
    )


def evaluate_rows(
    model: VegetationRegressor, cache: TileCache, rows: np.ndarray, batch_size: int = 128
) -> RegionScores:
    """Scores of the model on cache rows (all regions pooled); the model is left in eval mode."""
    predictions = predict_rows(model, cache, rows, batch_size)
    return score_predictions(predictions.vegetation_pct, predictions.predicted_pct)


def select_tiles(
    data_dir: str | Path,
    modality: str,
    input_size: int,
    regions: Sequence[str] | None,
    splits: Sequence[str] | None,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> tuple[TileCache, np.ndarray]:
    """Prepare (or reuse) the cache of a (regions, splits) selection; return it and its rows."""
    cache = prepare_cache(
        data_dir, modality, input_size, regions, splits, cache_dir, workers, progress
    )
    return cache, cache.indices(splits=splits, regions=regions)


def predict_selection(
    finetuned: FinetunedModel,
    data_dir: str | Path,
    regions: Sequence[str] | None,
    splits: Sequence[str] | None,
    cache_dir: str | Path | None = None,
    with_attention: bool = False,
    progress: bool = True,
) -> Predictions:
    """Predictions of a fine-tuned model on every tile of some regions and splits."""
    cache, rows = select_tiles(
        data_dir,
        finetuned.modality,
        finetuned.input_size,
        regions,
        splits,
        cache_dir,
        progress=progress,
    )
    return predict_rows(finetuned.model, cache, rows, with_attention=with_attention)


def simulation_seed(data_dir: str | Path) -> int | None:
    """The seed ``sarveg simulate`` recorded for ``data_dir`` (None: not a simulation)."""
    manifest = Path(data_dir) / SIMULATION_MANIFEST
    if not manifest.is_file():
        return None
    seed = json.loads(manifest.read_text()).get("seed")
    return None if seed is None else int(seed)


def synthetic_data(data_dir: str | Path) -> bool:
    """True when ``data_dir`` was written by ``sarveg simulate`` (its manifest says so)."""
    manifest = Path(data_dir) / SIMULATION_MANIFEST
    if not manifest.is_file():
        return False
    try:
        return bool(json.loads(manifest.read_text()).get("synthetic", False))
    except (json.JSONDecodeError, AttributeError):
        return False


def write_predictions_csv(predictions: Predictions, path: str | Path) -> None:
    """Write ``identifier,region,vegetation_pct,predicted_pct`` rows."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifier", "region", "vegetation_pct", "predicted_pct"])
        for i, identifier in enumerate(predictions.identifiers):
            label = predictions.vegetation_pct[i]
            writer.writerow(
                [
                    identifier,
                    predictions.regions[i],
                    "" if math.isnan(label) else f"{label:.4f}",
                    f"{predictions.predicted_pct[i]:.4f}",
                ]
            )


def main(argv: list[str]) -> int:
    """``sarveg evaluate``: per-region RMSE of a fine-tuned model."""
    parser = argparse.ArgumentParser(
        prog="sarveg evaluate", description="RMSE per region of a fine-tuned model."
    )
    parser.add_argument("--checkpoint", required=True, help="fine-tuning run folder or checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="folder in the geetiles layout")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--regions", default=None, help="comma-separated (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default DATA/.cache")
    parser.add_argument("--csv", type=Path, default=None, help="write per-tile predictions")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        finetuned = load_finetuned(args.checkpoint)
        predictions = predict_selection(
            finetuned,
            args.data,
            args.regions.split(",") if args.regions else None,
            [args.split],
            args.cache_dir,
            progress=not args.no_progress,
        )
    except ValueError as error:
        print(f"sarveg evaluate: {error}", file=sys.stderr)
        return 1
    print(f"{'region':<16}{'tiles':>7}{'RMSE':>8}{'MAE':>8}{'bias':>8}{'label sd':>10}")
    for region, s in predictions.by_region().items():
        print(
            f"{region:<16}{s.n_tiles:>7}{s.rmse:>8.2f}{s.mae:>8.2f}{s.bias:>8.2f}{s.label_std:>10.2f}"
        )
    if args.csv is not None:
        write_predictions_csv(predictions, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
