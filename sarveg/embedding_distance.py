"""Distances from tile embeddings to one region's reference embeddings (numpy only).

``NeighbourIndex``: exact k-nearest neighbours (the ``knn_distance`` score and the interval
difficulty). ``Whitening``: the Mahalanobis distance under a Ledoit-Wolf-shrunk covariance (the
``mahalanobis`` score). Both are built once per bundle from the fine-tuning region's reference.
"""

from __future__ import annotations

import numpy as np

from sarveg.reference import RegionReference
from sarveg.swd import check_embeddings

# Rows of the (B, n) distance matrix computed at once: bounds memory for large batches.
KNN_BLOCK_ROWS = 512


class NeighbourIndex:
    """Exact k-nearest-neighbour search in one region's reference embeddings."""

    def __init__(self, reference: RegionReference, k: int) -> None:
        embedding = check_embeddings(reference.embedding, "reference embeddings")
        # Centring first keeps the float32 expansion |x|^2 + |r|^2 - 2 x.r free of cancellation;
        # float32 halves the memory traffic that dominates a batch-of-one search.
        self.centre = embedding.mean(axis=0, dtype=np.float64).astype(np.float32)  # (D,)
        self.embedding = embedding - self.centre  # (n, D) float32
        self.squared_norms = np.sum(self.embedding**2, axis=1)  # (n,)
        self.abs_error = np.abs(
            np.asarray(reference.vegetation_pct, np.float64)
            - np.asarray(reference.predicted_pct, np.float64)
        )  # (n,)
        self.k = min(k, self.embedding.shape[0])

    def search(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(distances, indices)``, both ``(B, k)``, nearest first."""
        x = check_embeddings(embedding, "tile embeddings", self.embedding.shape[1]) - self.centre
        distances = np.empty((x.shape[0], self.k))
        indices = np.empty((x.shape[0], self.k), dtype=np.int64)
        for start in range(0, x.shape[0], KNN_BLOCK_ROWS):
            block = x[start : start + KNN_BLOCK_ROWS]  # (b, D)
            squared = block @ self.embedding.T  # (b, n)
            squared *= -2.0
            squared += np.sum(block**2, axis=1)[:, None]
            squared += self.squared_norms
            np.maximum(squared, 0.0, out=squared)  # rounding can dip just below zero
            if self.k < squared.shape[1]:
                nearest = np.argpartition(squared, self.k - 1, axis=1)[:, : self.k]  # (b, k)
            else:
                nearest = np.broadcast_to(np.arange(squared.shape[1]), squared.shape)
            nearest_sq = np.take_along_axis(squared, nearest, axis=1)
            order = np.argsort(nearest_sq, axis=1)
            stop = start + len(block)
            distances[start:stop] = np.sqrt(np.take_along_axis(nearest_sq, order, axis=1))
            indices[start:stop] = np.take_along_axis(nearest, order, axis=1)
        return distances, indices


def ledoit_wolf_shrinkage(x: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage intensity towards a scaled identity, from the data alone.

    Args:
        x: ``(n, D)`` samples.

    Returns:
        The weight in [0, 1] of ``tr(C) / D * I`` in the shrunk covariance.
    """
    x = x - x.mean(axis=0)
    n, dim = x.shape
    cov = x.T @ x / n  # (D, D)
    target = np.trace(cov) / dim
    dispersion = np.sum((cov - target * np.eye(dim)) ** 2) / dim
    # Mean squared Frobenius distance of the one-sample estimates x x^T from cov, over n.
    spread = (np.sum(np.sum(x**2, axis=1) ** 2) - n * np.sum(cov**2)) / (n**2 * dim)
    return float(min(spread, dispersion) / dispersion) if dispersion > 0 else 1.0


class Whitening:
    """Mahalanobis distance to one region's reference embeddings, with covariance shrinkage.

    The covariance is shrunk towards a scaled identity, ``(1 - s) C + s tr(C) / D I``, so it
    stays well conditioned when the reference holds few tiles per embedding dimension; ``s`` is
    the Ledoit-Wolf intensity estimated from the reference itself unless given.
    """

    def __init__(self, reference: RegionReference, shrinkage: float | None = None):
        x = check_embeddings(reference.embedding, "reference embeddings").astype(np.float64)
        self.mean = x.mean(axis=0)  # (D,)
        self.shrinkage = ledoit_wolf_shrinkage(x) if shrinkage is None else shrinkage
        cov = np.cov(x, rowvar=False, bias=True)  # (D, D)
        dim = cov.shape[0]
        cov = (1.0 - self.shrinkage) * cov + self.shrinkage * np.trace(cov) / dim * np.eye(dim)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        self.transform = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-12))  # (D, D)

    def distance(self, embedding: np.ndarray) -> np.ndarray:
        """Mahalanobis distance ``(B,)`` of embeddings ``(B, D)``."""
        x = check_embeddings(embedding, "tile embeddings", self.mean.size).astype(np.float64)
        return np.sqrt(np.sum(((x - self.mean) @ self.transform) ** 2, axis=1))
