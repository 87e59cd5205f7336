"""Which tiles of a new region to label first: a representative, spread-out few (numpy only).

``sarveg select`` runs this on the embeddings a ``sarveg predict`` run kept. The aim is a small
label budget ``K`` that teaches a model the new region, so the chosen tiles should

- stand for the region's embedding distribution *in proportion*: a kind of tile that makes up a
  third of the region should get about a third of the labels, however tightly its embeddings
  bunch together;
- lean towards the tiles the model flagged ``unreliable``: those are where the model knows least;
- never be two near-duplicates: a second label on an almost identical tile teaches little.

**Algorithm: kernel herding.** Each tile is mapped to random Fourier features ``phi`` of a
Gaussian kernel on the embeddings (bandwidth: the median distance between tiles), so that the
mean of ``phi`` over a set of tiles stands for the set's distribution. The target is the mean
over the region, each tile weighted ``1 + unreliable_weight`` if flagged and ``1`` otherwise.
Tiles are chosen one at a time, each the one that brings the mean of the chosen tiles' features
closest to the target (a greedy minimum of the maximum mean discrepancy); a candidate closer
than ``duplicate_distance`` to a tile already chosen is skipped. The first picks land in the
largest groups of tiles, later ones in smaller groups, in proportion to their weight.

Why not the medoids of k-means clusters, which this module used before: k-means spends its
centres where the embeddings are spread out, not where the tiles are. On the simulated
south_america the flagged, sparse-canopy tiles are spread out and the dense forests bunch
together, so 50 medoids held 4-6 forest tiles where the region has 43 % (labels averaging 32 %
vegetation against 61 % for the region), and adapting on them did worse than random labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_UNRELIABLE_WEIGHT = 0.5
# Near-duplicates: closer than this fraction of the median nearest-neighbour distance.
DEFAULT_DUPLICATE_FRACTION = 0.25
# Random Fourier features: enough that the kernel means of two 50-tile sets compare reliably.
FEATURES = 1024
# Candidates kept in memory (FEATURES float64 each); a larger region is subsampled for them, while
# the target mean is taken over every tile.
MAX_CANDIDATES = 20_000
# Rows of a distance or feature block: bounds memory for large regions.
BLOCK_ROWS = 4096


@dataclass(frozen=True)
class Selection:
    """The chosen tiles.

    Attributes:
        positions: ``(K,)`` row numbers into the candidate embeddings, in choice order.
        represents: ``(K,)`` tiles of the region whose nearest chosen tile (in the embedding)
            is this one.
        duplicate_distance: the near-duplicate threshold used (embedding units).
    """

    positions: np.ndarray
    represents: np.ndarray
    duplicate_distance: float


def squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(n, k)`` from rows of ``x`` ``(n, D)`` to ``centres``."""
    out = np.empty((x.shape[0], centres.shape[0]), np.float64)
    centre_norms = np.sum(centres**2, axis=1)  # (k,)
    for start in range(0, x.shape[0], BLOCK_ROWS):
        block = x[start : start + BLOCK_ROWS]  # (b, D)
        squared = np.sum(block**2, axis=1)[:, None] - 2.0 * block @ centres.T + centre_norms
        out[start : start + len(block)] = np.maximum(squared, 0.0)
    return out


def median_neighbour_distance(x: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Median distance from a sample of rows to their nearest other row of ``x``."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    squared = squared_distances(x[rows], x)  # (s, n)
    squared[np.arange(len(rows)), rows] = np.inf  # a row is not its own neighbour
    return float(np.sqrt(np.median(squared.min(axis=1))))


def median_distance(x: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> float:
    """Median distance between two different rows of a sample of ``x`` (the kernel bandwidth)."""
    rows = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    squared = squared_distances(x[rows], x[rows])
    upper = squared[np.triu_indices(len(rows), k=1)]
    positive = upper[upper > 0]
    return float(np.sqrt(np.median(positive))) if len(positive) else 1.0


class FourierFeatures:
    """Random Fourier features of the Gaussian kernel ``exp(-|a - b|^2 / (2 bandwidth^2))``."""

    def __init__(self, dim: int, bandwidth: float, rng: np.random.Generator) -> None:
        self.directions = rng.normal(0.0, 1.0 / bandwidth, (dim, FEATURES))  # (D, F)
        self.phases = rng.uniform(0.0, 2.0 * np.pi, FEATURES)  # (F,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Features ``(n, F)`` float32 of rows ``x`` ``(n, D)``."""
        out = np.empty((len(x), FEATURES), np.float32)
        for start in range(0, len(x), BLOCK_ROWS):
            block = x[start : start + BLOCK_ROWS] @ self.directions + self.phases  # (b, F)
            out[start : start + len(block)] = np.sqrt(2.0 / FEATURES) * np.cos(block)
        return out

    def weighted_mean(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """``sum_i weight_i phi(x_i) / sum_i weight_i`` ``(F,)``, a block at a time."""
        total = np.zeros(FEATURES, np.float64)
        for start in range(0, len(x), BLOCK_ROWS):
            stop = start + BLOCK_ROWS
            total += weight[start:stop] @ self(x[start:stop]).astype(np.float64)
        return total / weight.sum()


def check_inputs(x: np.ndarray, budget: int, flagged: np.ndarray, unreliable_weight: float) -> None:
    """Refuse impossible requests with what was expected."""
    if x.ndim != 2 or not len(x):
        raise ValueError(f"expected embeddings of shape (n, D) with n >= 1, found {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("expected finite embeddings, found NaN or inf")
    if budget < 1 or budget > len(x):
        raise ValueError(f"expected a budget between 1 and the {len(x)} tiles, found {budget}")
    if flagged.shape != (len(x),):
        raise ValueError(f"expected {len(x)} unreliable flags, found {flagged.shape}")
    if unreliable_weight < 0:
        raise ValueError(f"expected unreliable_weight >= 0, found {unreliable_weight}")


def select_tiles(
    embedding: np.ndarray,
    budget: int,
    unreliable: np.ndarray | None = None,
    *,
    unreliable_weight: float = DEFAULT_UNRELIABLE_WEIGHT,
    duplicate_distance: float | None = None,
    seed: int = 0,
) -> Selection:
    """Choose ``budget`` tiles to label (see the module docstring).

    Args:
        embedding: ``(n, D)`` the tiles' embeddings from the model to adapt.
        budget: ``K``, tiles to choose.
        unreliable: ``(n,)`` bool, the tiles the model flagged (None: no weighting).
        unreliable_weight: extra weight of a flagged tile (0: flags ignored).
        duplicate_distance: two chosen tiles are at least this far apart (None:
            ``DEFAULT_DUPLICATE_FRACTION`` x the median nearest-neighbour distance).
        seed: the random features (and the candidates of a region above ``MAX_CANDIDATES``).

    Returns:
        The chosen positions, with how many tiles each stands for.

    Raises:
        ValueError: a budget below 1 or above the number of distinct tiles, or bad inputs.
    """
    x = np.asarray(embedding, np.float64)
    flagged = np.zeros(len(x), bool) if unreliable is None else np.asarray(unreliable, bool)
    check_inputs(x, budget, flagged, unreliable_weight)
    rng = np.random.default_rng(seed)
    if duplicate_distance is None:
        duplicate_distance = DEFAULT_DUPLICATE_FRACTION * median_neighbour_distance(x, seed=seed)
    weight = 1.0 + unreliable_weight * flagged  # (n,)
    features = FourierFeatures(x.shape[1], median_distance(x, rng), rng)
    target = features.weighted_mean(x, weight)  # (F,)
    candidates = np.arange(len(x))
    if len(x) > MAX_CANDIDATES:
        candidates = np.sort(rng.choice(len(x), size=MAX_CANDIDATES, replace=False))
    pool = x[candidates]  # (m, D)
    # float64 once, so that no step casts the whole block again for its product with residual
    phi = features(pool).astype(np.float64)  # (m, F)
    phi_norm = np.sum(phi**2, axis=1)  # (m,)
    allowed = np.ones(len(candidates), bool)
    chosen_sum = np.zeros(FEATURES, np.float64)
    chosen: list[int] = []
    limit = duplicate_distance**2
    for step in range(budget):
        if not allowed.any():
            raise ValueError(
                f"expected {budget} tiles that are not near-duplicates, found only {len(chosen)} "
                f"(duplicate distance {duplicate_distance:.3g}): lower the budget"
            )
        # |target - (chosen_sum + phi_j) / (step + 1)|^2, up to terms that do not depend on j
        residual = (step + 1) * target - chosen_sum  # (F,)
        score = phi_norm - 2.0 * (phi @ residual)  # (m,)
        pick = int(np.argmin(np.where(allowed, score, np.inf)))
        chosen.append(int(candidates[pick]))
        chosen_sum += phi[pick]
        allowed &= squared_distances(pool, pool[pick][None])[:, 0] >= limit
        allowed[pick] = False  # even with a zero duplicate distance
    positions = np.asarray(chosen, np.int64)
    nearest = np.argmin(squared_distances(x, x[positions]), axis=1)  # (n,)
    return Selection(
        positions=positions,
        represents=np.bincount(nearest, minlength=budget),
        duplicate_distance=float(duplicate_distance),
    )


def coverage_radius(embedding: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
    """Mean and 95th percentile distance from every tile to its nearest chosen tile."""
    x = np.asarray(embedding, np.float64)
    nearest = np.sqrt(squared_distances(x, x[np.asarray(positions)]).min(axis=1))
    return float(nearest.mean()), float(np.percentile(nearest, 95))
