"""Which tiles of a new region to label first: a spread-out, representative few (numpy only).

``sarveg select`` runs this on the embeddings a ``sarveg predict`` run kept. The aim is a small
label budget ``K`` that teaches a model the new region, so the chosen tiles should

- cover the region's embedding distribution: every kind of tile the region holds should have a
  labelled tile near it, in proportion to how common it is (not only its odd corners);
- lean towards the tiles the model flagged ``unreliable``: those are where the model knows least;
- never be two near-duplicates: a second label on an almost identical tile teaches little.

**Algorithm.** Weighted k-means on the embeddings (k-means++ seeding, a few Lloyd iterations),
each tile weighted ``1 + unreliable_weight`` if flagged and ``1`` otherwise, so clusters gather
where flagged tiles are; then one tile per cluster, the one nearest its centroid (a medoid, so a
typical tile rather than an outlier), largest clusters first. A candidate closer than
``duplicate_distance`` to a tile already chosen is skipped in favour of the next nearest tile of
its cluster. k-center greedy (the farthest tile each time) covers the extremes better but picks
outliers, which teach a regression model little about the bulk of a region; the medoids of
weighted clusters are what ``bench/adapt.py`` measures against random choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_UNRELIABLE_WEIGHT = 1.0
# Near-duplicates: closer than this fraction of the median nearest-neighbour distance.
DEFAULT_DUPLICATE_FRACTION = 0.25
KMEANS_ITERATIONS = 10
# Rows of a (rows, K) distance block: bounds memory for large regions.
BLOCK_ROWS = 4096


@dataclass(frozen=True)
class Selection:
    """The chosen tiles.

    Attributes:
        positions: ``(K,)`` row numbers into the candidate embeddings, in choice order.
        cluster_size: ``(K,)`` tiles of the region in each chosen tile's cluster.
        cluster_weight: ``(K,)`` summed weight of the cluster (flagged tiles count more).
        duplicate_distance: the near-duplicate threshold used (embedding units).
    """

    positions: np.ndarray
    cluster_size: np.ndarray
    cluster_weight: np.ndarray
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


def seed_centres(x: np.ndarray, weight: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with tile weights: each centre drawn with probability ~ weight * d^2."""
    first = rng.choice(len(x), p=weight / weight.sum())
    centres = [x[first]]
    nearest = squared_distances(x, x[first][None])[:, 0]  # (n,)
    for _ in range(1, k):
        mass = weight * nearest
        if not mass.sum() > 0:  # every tile sits on a centre already
            break
        pick = rng.choice(len(x), p=mass / mass.sum())
        centres.append(x[pick])
        nearest = np.minimum(nearest, squared_distances(x, x[pick][None])[:, 0])
    return np.stack(centres)


def weighted_kmeans(
    x: np.ndarray, weight: np.ndarray, k: int, seed: int, iterations: int = KMEANS_ITERATIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means; returns ``(centres (k', D), assignment (n,))`` with ``k' <= k``."""
    rng = np.random.default_rng(seed)
    centres = seed_centres(x, weight, k, rng)
    assignment = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        assignment = np.argmin(squared_distances(x, centres), axis=1)
        mass = np.bincount(assignment, weights=weight, minlength=len(centres))  # (k,)
        keep = mass > 0
        sums = np.zeros_like(centres)
        np.add.at(sums, assignment, x * weight[:, None])
        updated = sums[keep] / mass[keep, None]
        if updated.shape == centres.shape and np.allclose(updated, centres):
            break
        centres = updated
    assignment = np.argmin(squared_distances(x, centres), axis=1)
    return centres, assignment


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
        seed: k-means++ seeding.

    Returns:
        The chosen positions with their clusters' sizes.

    Raises:
        ValueError: a budget below 1 or above the number of distinct tiles, or bad inputs.
    """
    x = np.asarray(embedding, np.float64)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"expected embeddings of shape (n, D) with n >= 1, found {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("expected finite embeddings, found NaN or inf")
    if budget < 1 or budget > len(x):
        raise ValueError(f"expected a budget between 1 and the {len(x)} tiles, found {budget}")
    flagged = np.zeros(len(x), bool) if unreliable is None else np.asarray(unreliable, bool)
    if flagged.shape != (len(x),):
        raise ValueError(f"expected {len(x)} unreliable flags, found {flagged.shape}")
    if unreliable_weight < 0:
        raise ValueError(f"expected unreliable_weight >= 0, found {unreliable_weight}")
    weight = 1.0 + unreliable_weight * flagged
    if duplicate_distance is None:
        duplicate_distance = DEFAULT_DUPLICATE_FRACTION * median_neighbour_distance(x, seed=seed)
    centres, assignment = weighted_kmeans(x, weight, budget, seed)
    mass = np.bincount(assignment, weights=weight, minlength=len(centres))
    size = np.bincount(assignment, minlength=len(centres))
    to_centre = squared_distances(x, centres)[np.arange(len(x)), assignment]  # (n,)
    chosen: list[int] = []
    chosen_cluster: list[int] = []
    limit = duplicate_distance**2

    def far_enough(row: int) -> bool:
        return not chosen or squared_distances(x[row][None], x[chosen]).min() >= limit

    for cluster in np.argsort(-mass, kind="stable"):
        members = np.flatnonzero(assignment == cluster)
        for row in members[np.argsort(to_centre[members], kind="stable")]:
            if far_enough(int(row)):
                chosen.append(int(row))
                chosen_cluster.append(int(cluster))
                break
    # Fewer clusters than the budget (duplicates, or a cluster whose tiles were all too close):
    # fill with the tiles farthest from every chosen one, the k-center greedy rule.
    while len(chosen) < budget:
        gap = squared_distances(x, x[chosen]).min(axis=1)  # (n,)
        priority = np.where(gap >= limit, gap * weight, -1.0)
        row = int(np.argmax(priority))
        if priority[row] < 0:
            raise ValueError(
                f"expected {budget} tiles that are not near-duplicates, found only {len(chosen)} "
                f"(duplicate distance {duplicate_distance:.3g}): lower the budget"
            )
        chosen.append(row)
        chosen_cluster.append(int(assignment[row]))
    clusters = np.asarray(chosen_cluster, np.int64)
    return Selection(
        positions=np.asarray(chosen, np.int64),
        cluster_size=size[clusters],
        cluster_weight=mass[clusters],
        duplicate_distance=float(duplicate_distance),
    )


def coverage_radius(embedding: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
    """Mean and 95th percentile distance from every tile to its nearest chosen tile."""
    x = np.asarray(embedding, np.float64)
    nearest = np.sqrt(squared_distances(x, x[np.asarray(positions)]).min(axis=1))
    return float(nearest.mean()), float(np.percentile(nearest, 95))
