r"""Sliced Wasserstein distances between embeddings: per tile and per set (numpy only).

Definition (as in POT's ``ot.sliced_wasserstein_distance``): for two distributions ``mu`` and
``nu`` on ``R^D`` and ``theta`` uniform on the unit sphere,

    SWD_p(mu, nu) = ( E_theta [ W_p^p(theta # mu, theta # nu) ] )^(1/p),

where ``theta # mu`` is the 1-D distribution of ``theta . x`` for ``x ~ mu`` and ``W_p`` is the
1-D Wasserstein distance. Everything here uses empirical distributions (equal weights).

**One tile against a reference set, exactly.** Take ``mu`` a single point ``x`` and ``nu`` the
reference embeddings ``r_1..r_m`` with mean ``rbar`` and (1/m) covariance ``S``. On a line all
the mass of a point has to go to every reference point, so ``W_p^p = mean_j |theta.x -
theta.r_j|^p``. For ``p = 2`` split ``theta.x - theta.r_j`` into ``theta.(x - rbar)`` minus the
centred ``theta.(r_j - rbar)``; the cross term averages to zero over ``j``, leaving
``(theta.(x - rbar))^2 + theta' S theta``. A uniform unit direction has ``E[theta theta'] =
I / D`` (by symmetry all ``D`` diagonal entries are equal and sum to ``|theta|^2 = 1``; the
off-diagonal ones vanish), so the expectation over the sphere is exact and needs no projections:

    SWD_2(x, R) = sqrt( (|x - rbar|^2 + tr S) / D ),   tr S = mean_j |r_j - rbar|^2.

As an OOD score this is a monotone function of the distance to the reference mean.

**One tile, fixed projections.** With ``P`` fixed unit directions the expectation becomes a mean
over them. For ``p = 2`` each direction needs only the mean and variance of the projected
reference. For ``p = 1`` the reference projections are sorted once with prefix sums ``C``; if
``k`` of the ``m`` sorted values ``b`` lie below ``a = theta.x`` then ``sum_j |a - b_j| =
a k - C_k + (C_m - C_k) - a (m - k)``, found by one binary search per direction.

**Two sets (a scene, a region).** In 1-D, ``W_p^p`` between empirical distributions is
``integral_0^1 |F^-1(u) - G^-1(u)|^p du`` with quantile functions that are step functions:
``F^-1(u)`` is the ``ceil(u n)``-th smallest of ``n`` values. Both functions are constant between
consecutive points of the merged grid ``{i / n} U {j / m}``, so the integral is an exact sum over
at most ``n + m - 1`` pieces. Which order statistics meet on each piece, and the piece widths,
depend only on ``(n, m)``: they are computed once (in integers, on the grid ``1 / (n m)``) and
reused for every direction. For ``n == m`` the pieces pair the ``i``-th smallest values.
Projecting the set once per direction, sorting, and comparing with reference projections that
were sorted once and cached gives the same value as POT with the same directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_N_PROJECTIONS = 10_000
# Work on blocks of directions whose sorted projections fill about this many float32 values, so
# memory stays bounded (~32 MB per buffer) whatever the set size or projection count.
BLOCK_VALUES = 8_000_000


def draw_projections(n_projections: int, dim: int, seed: int) -> np.ndarray:
    """Return ``n_projections`` unit directions, uniform on the sphere, deterministic in seed.

    Args:
        n_projections: number of directions ``P``.
        dim: embedding size ``D``.
        seed: seed of the numpy generator.

    Returns:
        float32 array ``(P, D)`` with unit rows.
    """
    if n_projections < 1 or dim < 1:
        raise ValueError(f"expected n_projections >= 1 and dim >= 1, found {n_projections}, {dim}")
    gaussian = np.random.default_rng(seed).standard_normal((n_projections, dim))  # (P, D)
    gaussian /= np.linalg.norm(gaussian, axis=1, keepdims=True)
    return gaussian.astype(np.float32)


def check_embeddings(embedding: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """Return ``embedding`` as a finite float32 ``(N, D)`` array or raise ``ValueError``.

    Args:
        embedding: array to check.
        name: what it is, for the error message.
        dim: required ``D``, if known.
    """
    array = np.asarray(embedding, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"expected {name} as a non-empty (N, D) array, found shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"expected {name} with D={dim}, found D={array.shape[1]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"expected finite {name}, found NaN or inf")
    return array


@dataclass(frozen=True, eq=False)
class ReferenceMoments:
    """First two moments of a reference set, all the exact per-tile SWD_2 needs."""

    mean: np.ndarray  # (D,) float64
    total_variance: float  # tr of the (1/m) covariance = mean squared distance to the mean

    @classmethod
    def from_embeddings(cls, reference: np.ndarray) -> ReferenceMoments:
        """Compute the moments of ``reference`` ``(m, D)``."""
        values = check_embeddings(reference, "reference embeddings").astype(np.float64)
        mean = values.mean(axis=0)
        total_variance = float(np.mean(np.sum((values - mean) ** 2, axis=1)))
        return cls(mean=mean, total_variance=total_variance)


def swd_tile_exact(embedding: np.ndarray, moments: ReferenceMoments) -> np.ndarray:
    """Return the exact SWD_2 (expectation over the sphere) of each tile to a reference set.

    Args:
        embedding: ``(B, D)`` tile embeddings.
        moments: moments of the reference set.

    Returns:
        ``(B,)`` float64 distances, ``sqrt((|x - mean|^2 + total_variance) / D)``.
    """
    x = check_embeddings(embedding, "tile embeddings", moments.mean.size).astype(np.float64)
    squared = np.sum((x - moments.mean) ** 2, axis=1)  # (B,)
    return np.sqrt((squared + moments.total_variance) / moments.mean.size)


@dataclass(frozen=True, eq=False)
class ProjectedReference:
    """A reference set projected on fixed directions, sorted, with prefix sums."""

    projections: np.ndarray  # (P, D) float32 unit rows
    sorted_values: np.ndarray  # (P, m) float64, each row ascending
    prefix_sums: np.ndarray  # (P, m + 1) float64, prefix_sums[:, k] = sum of k smallest
    mean: np.ndarray  # (P,)
    variance: np.ndarray  # (P,), the 1/m variance

    @classmethod
    def from_embeddings(cls, reference: np.ndarray, projections: np.ndarray) -> ProjectedReference:
        """Project ``reference`` ``(m, D)`` on ``projections`` ``(P, D)`` and sort each row."""
        values = check_embeddings(reference, "reference embeddings", projections.shape[1])
        projected = projections.astype(np.float64) @ values.T.astype(np.float64)  # (P, m)
        projected.sort(axis=1)
        prefix = np.zeros((projected.shape[0], projected.shape[1] + 1))
        np.cumsum(projected, axis=1, out=prefix[:, 1:])
        return cls(
            projections=projections,
            sorted_values=projected,
            prefix_sums=prefix,
            mean=projected.mean(axis=1),
            variance=projected.var(axis=1),
        )


def _count_below(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Return, for each row ``k``, how many of ``sorted_values[k]`` are ``< queries[:, k]``.

    One flat binary search: rows are shifted apart by more than their spread so the flattened
    array stays sorted, and queries are clipped into their own row's band.
    """
    n_rows, m = sorted_values.shape
    low = sorted_values[:, 0].min()
    span = sorted_values[:, -1].max() - low + 1.0
    offsets = np.arange(n_rows) * span  # (P,)
    flat = (sorted_values - low + offsets[:, None]).ravel()  # (P * m,) ascending
    shifted = np.clip(queries - low, -0.5, span - 0.5) + offsets  # (B, P)
    return np.searchsorted(flat, shifted, side="left") - np.arange(n_rows) * m  # (B, P)


def swd_tile_projected(
    embedding: np.ndarray, reference: ProjectedReference, p: int = 2
) -> np.ndarray:
    """Return SWD_p of each tile to a reference set, averaged over the fixed directions.

    Args:
        embedding: ``(B, D)`` tile embeddings.
        reference: the reference set projected on fixed directions.
        p: 1 or 2.

    Returns:
        ``(B,)`` float64 distances.
    """
    x = check_embeddings(embedding, "tile embeddings", reference.projections.shape[1])
    a = x.astype(np.float64) @ reference.projections.T.astype(np.float64)  # (B, P)
    if p == 2:
        per_direction = (a - reference.mean) ** 2 + reference.variance  # (B, P)
        return np.sqrt(per_direction.mean(axis=1))
    if p == 1:
        m = reference.sorted_values.shape[1]
        below = _count_below(reference.sorted_values, a)  # (B, P)
        rows = np.arange(a.shape[1])
        prefix_below = reference.prefix_sums[rows, below]  # (B, P)
        total = reference.prefix_sums[:, -1]  # (P,)
        absolute_sum = a * below - prefix_below + (total - prefix_below) - a * (m - below)
        return (absolute_sum / m).mean(axis=1)
    raise ValueError(f"expected p of 1 or 2 for fixed-projection tile SWD, found {p}")


def quantile_pairs(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the pieces of the merged quantile grid of two empirical 1-D distributions.

    Args:
        n: size of the first set.
        m: size of the second set.

    Returns:
        ``(index_x, index_r, weight)``: on piece ``k`` the quantile functions equal the
        ``index_x[k]``-th and ``index_r[k]``-th smallest values (0-based); ``weight[k]`` is the
        piece width; weights sum to 1.
    """
    # Levels i/n and j/m written on the common integer grid 1/(n m) so nothing is rounded.
    levels = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)  # ascending, ends n*m
    widths = np.diff(levels, prepend=0) / (n * m)
    index_x = (levels + m - 1) // m - 1  # ceil(level / m) - 1
    index_r = (levels + n - 1) // n - 1
    return index_x, index_r, widths.astype(np.float32)


def wasserstein_sorted(
    sorted_x: np.ndarray,
    sorted_r: np.ndarray,
    p: float = 2,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Return ``W_p^p`` per row between two arrays of row-sorted 1-D samples.

    Args:
        sorted_x: ``(P, n)``, each row ascending.
        sorted_r: ``(P, m)``, each row ascending.
        p: Wasserstein exponent.
        pairs: ``quantile_pairs(n, m)`` when already computed (reused across many calls).

    Returns:
        ``(P,)`` float32 values of ``W_p^p`` (not its ``p``-th root).
    """
    n, m = sorted_x.shape[1], sorted_r.shape[1]
    if n == m:  # order statistics pair one to one
        diff = sorted_x - sorted_r  # (P, n)
        weights = None
    else:
        index_x, index_r, weights = quantile_pairs(n, m) if pairs is None else pairs
        diff = np.take(sorted_x, index_x, axis=1) - np.take(sorted_r, index_r, axis=1)  # (P, K)
    if p == 2:
        cost = np.square(diff, out=diff)
    elif p == 1:
        cost = np.abs(diff, out=diff)
    else:
        cost = np.abs(diff, out=diff) ** p
    return cost.mean(axis=1) if weights is None else cost @ weights


def sort_projected(reference: np.ndarray, projections: np.ndarray) -> np.ndarray:
    """Project ``reference`` ``(m, D)`` on ``projections`` ``(P, D)`` and sort every row.

    Returns:
        float32 ``(P, m)``, each row ascending: the cache a set-level SWD compares against.
    """
    values = check_embeddings(reference, "reference embeddings", projections.shape[1])
    out = np.empty((projections.shape[0], values.shape[0]), dtype=np.float32)
    block = max(1, BLOCK_VALUES // values.shape[0])
    for start in range(0, projections.shape[0], block):
        chunk = projections[start : start + block] @ values.T  # (Pc, m)
        chunk.sort(axis=1)
        out[start : start + block] = chunk
    return out


def set_swd_sorted(
    embedding: np.ndarray,
    projections: np.ndarray,
    sorted_references: Sequence[np.ndarray],
    p: float = 2,
) -> np.ndarray:
    """Return the set-level SWD_p of one set of embeddings to several pre-sorted references.

    Args:
        embedding: ``(n, D)`` embeddings of the set (a scene, a batch, a region).
        projections: ``(P, D)`` unit directions used to build every reference.
        sorted_references: per reference, the ``(P, m_r)`` output of :func:`sort_projected`.
        p: Wasserstein exponent (POT's default is 2).

    Returns:
        ``(len(sorted_references),)`` float64 distances.
    """
    x = check_embeddings(embedding, "set embeddings", projections.shape[1])
    n_projections = projections.shape[0]
    for ref in sorted_references:
        if ref.ndim != 2 or ref.shape[0] != n_projections:
            raise ValueError(
                f"expected sorted reference projections with {n_projections} rows, "
                f"found shape {ref.shape}"
            )
    n = x.shape[0]
    widest = max([n, *(n + ref.shape[1] for ref in sorted_references)])
    block = max(1, BLOCK_VALUES // widest)
    totals = np.zeros(len(sorted_references))
    x_t = np.ascontiguousarray(x.T)  # (D, n)
    for start in range(0, n_projections, block):
        projected = projections[start : start + block] @ x_t  # (Pc, n)
        projected.sort(axis=1)
        for i, ref in enumerate(sorted_references):
            per_direction = wasserstein_sorted(projected, ref[start : start + block], p)
            totals[i] += float(per_direction.sum(dtype=np.float64))
    return (totals / n_projections) ** (1.0 / p)


def set_swd(
    embedding: np.ndarray,
    reference: np.ndarray,
    n_projections: int = DEFAULT_N_PROJECTIONS,
    seed: int = 0,
    p: float = 2,
) -> float:
    """Return the sliced Wasserstein distance between two sets of embeddings.

    Same quantity as ``ot.sliced_wasserstein_distance(embedding, reference, n_projections=...,
    p=p)``; the directions come from :func:`draw_projections` with ``seed``.

    Args:
        embedding: ``(n, D)`` first set.
        reference: ``(m, D)`` second set.
        n_projections: number of random directions.
        seed: seed of the directions.
        p: Wasserstein exponent.

    Returns:
        The distance, in embedding units.
    """
    x = check_embeddings(embedding, "set embeddings")
    projections = draw_projections(n_projections, x.shape[1], seed)
    sorted_reference = sort_projected(reference, projections)
    return float(set_swd_sorted(x, projections, [sorted_reference], p)[0])
