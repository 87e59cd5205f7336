"""Which reference regions a tile plausibly belongs to: full-conformal k-NN p-values (numpy).

For every reference region ``r`` with ``n`` reference embeddings, a tile's nonconformity score is
its mean Euclidean distance to its ``k`` nearest reference tiles of ``r``. Its p-value is the
*full* conformal one: each reference tile is scored against the other ``n - 1`` reference tiles
*plus the new tile*, and

    p_r(x) = (1 + #{i : score_i(x) >= score(x)}) / (n + 1).

Adding the tile changes a reference tile's score only when the tile falls among its ``k``
nearest neighbours, so the reference tiles' leave-one-out neighbour distances are computed once
and each new tile costs one ``(B, n)`` distance matrix per region. Nothing is fitted, so for a
tile exchangeable with region ``r``'s reference tiles, ``P(p_r < alpha) <= alpha`` exactly.

- ``plausible_regions``: the regions with ``p_r >= alpha``, a prediction set over regions that
  contains a tile's true region with probability at least ``1 - alpha`` (empty when the tile
  matches none).
- ``nearest_region``: a k-nearest-neighbour vote among all regions' reference tiles pooled
  (equal-sized references make it the usual k-NN classifier); ties go to the smaller summed
  distance. Not the largest p-value: a region's p-value is uniform for its own tiles, so a
  compact region inside a diffuse one would lose its own tiles to the diffuse one. The nearest
  region is usually, not always, among the plausible ones.

Why not the per-tile SWD: the exact SWD_2 between one tile and a region is
``sqrt((|x - mean_r|^2 + tr S_r) / D)``, so a region's spread ``tr S_r`` enters every tile's
distance alike and compact regions look nearest to almost any tile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sarveg.embedding_distance import KNN_BLOCK_ROWS
from sarveg.reference import RegionReference
from sarveg.swd import check_embeddings


def _squared_distances(x: np.ndarray, reference: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``(B, n)`` squared Euclidean distances, float32, clipped at 0."""
    squared = x @ reference.T  # (B, n)
    squared *= -2.0
    squared += np.sum(x**2, axis=1)[:, None]
    squared += norms
    return np.maximum(squared, 0.0, out=squared)


class _RegionKnn:
    """One region's reference with its leave-one-out k-NN distances."""

    def __init__(self, embedding: np.ndarray, k: int) -> None:
        x = check_embeddings(embedding, "reference embeddings")
        if x.shape[0] < 2:
            raise ValueError(f"expected at least 2 reference tiles per region, found {x.shape[0]}")
        self.centre = x.mean(axis=0, dtype=np.float64).astype(np.float32)  # (D,)
        self.embedding = x - self.centre  # (n, D)
        self.norms = np.sum(self.embedding**2, axis=1)  # (n,)
        n = self.embedding.shape[0]
        self.k = min(k, n - 1)
        loo = np.empty((n, self.k), np.float64)  # each tile's k nearest among the others
        for start in range(0, n, KNN_BLOCK_ROWS):
            block = self.embedding[start : start + KNN_BLOCK_ROWS]
            squared = _squared_distances(block, self.embedding, self.norms)  # (b, n)
            rows = np.arange(len(block))
            squared[rows, start + rows] = np.inf  # not its own neighbour
            nearest = np.partition(squared, self.k - 1, axis=1)[:, : self.k]
            loo[start : start + len(block)] = np.sort(np.sqrt(nearest), axis=1)
        self.loo_sum = loo.sum(axis=1)  # (n,)
        self.loo_kth = loo[:, -1]  # (n,)
        self.loo_score = self.loo_sum / self.k  # (n,)

    def score_and_p(self, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k-NN distances ``(B, k)``, score ``(B,)`` and p-value ``(B,)`` of tiles.

        Args:
            distances: ``(B, n)`` distances of the tiles to this region's reference tiles.
        """
        return _score_and_p(distances, self.k, self.loo_sum, self.loo_kth, self.loo_score)


def _score_and_p(
    distances: np.ndarray, k: int, loo_sum: np.ndarray, loo_kth: np.ndarray, loo_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full-conformal step over the last axis of ``distances (..., n)``.

    The reference tiles' leave-one-out sums, k-th distances and scores broadcast against it.
    """
    nearest = np.sort(np.partition(distances, k - 1, axis=-1)[..., :k], axis=-1)  # (..., k)
    score = nearest.mean(axis=-1, dtype=np.float64)  # (...,)
    # Reference tile i's score once the new tile joins: its k-th neighbour is replaced by the
    # new tile when that is closer.
    joined = np.where(distances < loo_kth, (loo_sum - loo_kth + distances) / k, loo_score)
    at_least = np.count_nonzero(joined >= score[..., None], axis=-1)
    return nearest, score, (1.0 + at_least) / (distances.shape[-1] + 1.0)


@dataclass(frozen=True, eq=False)
class Membership:
    """Region membership of a batch of tiles.

    Attributes:
        regions: region names, the column order of the arrays.
        knn_distance: ``(B, R)`` mean distance to the k nearest reference tiles of each region.
        p_value: ``(B, R)`` full-conformal p-value of membership in each region.
        nearest_region: per tile, the winner of the pooled k-NN vote.
        plausible_regions: per tile, the regions with ``p_value >= alpha`` (may be empty).
        nearest_distances: ``(B, R, k)`` each region's ``k`` nearest reference distances,
            ascending: the exact k-NN search of every reference region, which the OOD score
            reuses rather than searching the fine-tuning region again.
    """

    regions: tuple[str, ...]
    knn_distance: np.ndarray
    p_value: np.ndarray
    nearest_region: list[str]
    plausible_regions: list[list[str]]
    nearest_distances: np.ndarray


class RegionMembership:
    """Full-conformal k-NN membership p-values of tiles in every reference region.

    Args:
        regions: each region's reference tiles (their embeddings are used).
        k: neighbours per score.
        alpha: a region is plausible for a tile when its p-value is at least ``alpha``.
    """

    def __init__(self, regions: Mapping[str, RegionReference], k: int, alpha: float) -> None:
        self.regions = tuple(regions)
        self.alpha = alpha
        self._knn = [_RegionKnn(np.asarray(regions[r].embedding), k) for r in self.regions]
        self.k = min(knn.k for knn in self._knn)
        # All references in one matrix: one product per batch instead of one per region.
        stacked = np.concatenate([knn.embedding + knn.centre for knn in self._knn])  # (N, D)
        self._centre = stacked.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._stacked = stacked - self._centre
        self._norms = np.sum(self._stacked**2, axis=1)  # (N,)
        sizes = [knn.embedding.shape[0] for knn in self._knn]
        self._bounds = np.concatenate([[0], np.cumsum(sizes)])
        # Equal-sized references (as bundles store them): every region in one array operation.
        self._equal = len(set(sizes)) == 1 and len({knn.k for knn in self._knn}) == 1
        if self._equal:
            self._loo = tuple(
                np.stack([getattr(knn, name) for knn in self._knn])  # (R, n)
                for name in ("loo_sum", "loo_kth", "loo_score")
            )

    def _vote(self, nearest: list[np.ndarray]) -> list[int]:
        """Pooled k-NN vote from each region's ``(B, k)`` nearest distances: region indices."""
        pooled = np.concatenate(nearest, axis=1)  # (B, R k)
        n_regions = len(nearest)
        labels = np.repeat(np.arange(n_regions), self.k)  # (R k,)
        chosen = np.argpartition(pooled, self.k - 1, axis=1)[:, : self.k]  # (B, k)
        votes = labels[chosen][:, :, None] == np.arange(n_regions)  # (B, k, R)
        counts = votes.sum(axis=1)  # (B, R)
        sums = np.where(votes, np.take_along_axis(pooled, chosen, axis=1)[:, :, None], 0.0).sum(
            axis=1
        )  # (B, R)
        # Most votes first, then the smaller summed distance: sums / (total + 1) < 1 never
        # outweighs one vote.
        total = sums.sum(axis=1, keepdims=True)
        return np.argmax(counts - sums / (total + 1.0), axis=1).tolist()

    def score(self, embedding: np.ndarray) -> Membership:
        """Membership of tiles ``(B, D)`` in every region."""
        x = check_embeddings(embedding, "tile embeddings", self._knn[0].embedding.shape[1])
        scores, p_values, votes, neighbours = [], [], [], []
        for start in range(0, x.shape[0], KNN_BLOCK_ROWS):
            block = x[start : start + KNN_BLOCK_ROWS]
            distances = np.sqrt(
                _squared_distances(block - self._centre, self._stacked, self._norms)
            )
            if self._equal:
                by_region = distances.reshape(len(block), len(self._knn), -1)  # (b, R, n)
                nearest, score, p = _score_and_p(by_region, self.k, *self._loo)
                scores.append(score)
                p_values.append(p)
                neighbours.append(nearest)
                votes.extend(self._vote(list(nearest.transpose(1, 0, 2))))
                continue
            parts = [
                knn.score_and_p(distances[:, self._bounds[i] : self._bounds[i + 1]])
                for i, knn in enumerate(self._knn)
            ]
            scores.append(np.stack([s for _, s, _ in parts], axis=1))
            p_values.append(np.stack([p for _, _, p in parts], axis=1))
            nearest = np.stack([d[:, : self.k] for d, _, _ in parts], axis=1)  # (b, R, k)
            neighbours.append(nearest)
            votes.extend(self._vote(list(nearest.transpose(1, 0, 2))))
        empty = np.empty((0, len(self.regions)))
        score = np.concatenate(scores) if scores else empty
        p_value = np.concatenate(p_values) if p_values else empty
        nearest_distances = (
            np.concatenate(neighbours) if neighbours else np.empty((0, len(self.regions), self.k))
        )
        best = [self.regions[i] for i in votes]
        plausible = [
            [r for r, p in zip(self.regions, row, strict=True) if p >= self.alpha]
            for row in p_value
        ]
        return Membership(self.regions, score, p_value, best, plausible, nearest_distances)
