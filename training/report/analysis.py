"""Numbers of the report: RMSE tables, SWD between region embeddings, rank correlation, t-SNE."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import ot
from sklearn.manifold import TSNE

from sarveg.ood_evaluation import spearman
from training.evaluate import Predictions, score_predictions


def region_rmse(predictions: Predictions, region: str) -> float:
    """RMSE (percentage points) on one region's tiles."""
    mask = np.asarray(predictions.regions) == region
    if not mask.any():
        raise ValueError(f"expected test tiles of {region!r} in the predictions, found none")
    return score_predictions(predictions.vegetation_pct[mask], predictions.predicted_pct[mask]).rmse


def region_label_std(predictions: Predictions, region: str) -> float:
    """Standard deviation (points) of one region's test labels."""
    mask = np.asarray(predictions.regions) == region
    return float(np.std(predictions.vegetation_pct[mask]))


def embeddings_of(predictions: Predictions, region: str) -> np.ndarray:
    """The CLS embeddings ``(n, D)`` of one region's tiles, float64 for POT."""
    mask = np.asarray(predictions.regions) == region
    return np.asarray(predictions.embedding[mask], dtype=np.float64)


@dataclass(frozen=True)
class SwdEstimate:
    """Sliced Wasserstein distance over several projection seeds."""

    mean: float
    std: float
    values: tuple[float, ...]


def sliced_wasserstein(
    source: np.ndarray, target: np.ndarray, seeds: int, projections: int, workers: int = 1
) -> SwdEstimate:
    """POT's ``ot.sliced_wasserstein_distance`` (uniform weights) repeated over ``seeds`` seeds.

    Seeds run on ``workers`` threads: POT's projection product and sort release the GIL.
    """

    def one(seed: int) -> float:
        return float(
            ot.sliced_wasserstein_distance(source, target, n_projections=projections, seed=seed)
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        values = tuple(pool.map(one, range(seeds)))
    return SwdEstimate(float(np.mean(values)), float(np.std(values)), values)


def swd_matrix(
    embeddings: dict[str, np.ndarray],
    regions: Sequence[str],
    seeds: int,
    projections: int,
    workers: int = 1,
) -> dict[tuple[str, str], SwdEstimate]:
    """SWD between every pair of distinct regions (computed once per unordered pair)."""
    result: dict[tuple[str, str], SwdEstimate] = {}
    for i, a in enumerate(regions):
        for b in regions[i + 1 :]:
            estimate = sliced_wasserstein(embeddings[a], embeddings[b], seeds, projections, workers)
            result[(a, b)] = result[(b, a)] = estimate
    return result


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho; NaN when fewer than three pairs or a constant input."""
    if len(x) < 3:
        return float("nan")
    return spearman(np.asarray(x), np.asarray(y))


def subsample_by_region(regions: Sequence[str], per_region: int, seed: int) -> np.ndarray:
    """Positions of at most ``per_region`` tiles of each region, reproducibly, sorted."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(regions)
    chosen = []
    for region in sorted(set(regions)):
        positions = np.flatnonzero(labels == region)
        if len(positions) > per_region:
            positions = rng.choice(positions, per_region, replace=False)
        chosen.append(positions)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def tsne_2d(embedding: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE ``(n, 2)`` of standardised embeddings (PCA initialisation)."""
    x = np.asarray(embedding, dtype=np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        x
    )
