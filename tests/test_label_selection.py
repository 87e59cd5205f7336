"""Which tiles to label: distinct, spread out, weighted towards flagged tiles (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from sarveg.label_selection import coverage_radius, select_tiles


def clustered(
    sizes: list[int], seed: int = 0, spread: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Tiles in well separated Gaussian clusters of the given sizes; returns (x, cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (len(sizes), 8))
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    return centres[cluster] + rng.normal(0.0, spread, (len(cluster), 8)), cluster


def test_budget_gives_distinct_tiles_without_near_duplicates() -> None:
    x, _ = clustered([200, 100, 50])
    x = np.concatenate([x, x[:40] + 1e-6])  # 40 near-copies of tiles already present
    selection = select_tiles(x, 30, seed=1)
    chosen = selection.positions
    assert len(chosen) == 30 and len(set(chosen.tolist())) == 30
    gaps = np.linalg.norm(x[chosen][:, None] - x[chosen][None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= selection.duplicate_distance > 0.0


def test_every_cluster_is_covered_unlike_random_choice() -> None:
    sizes = [400, 200, 100, 50, 25, 12, 6, 3]
    x, cluster = clustered(sizes, seed=2)
    chosen = select_tiles(x, len(sizes), seed=0).positions
    assert sorted(set(cluster[chosen].tolist())) == list(range(len(sizes)))
    rng = np.random.default_rng(0)
    random_hits = [
        len(set(cluster[rng.choice(len(x), len(sizes), replace=False)].tolist()))
        for _ in range(200)
    ]
    assert np.mean(random_hits) < len(sizes) - 2  # random misses the small clusters
    selected_radius, _ = coverage_radius(x, chosen)
    random_radius = np.mean(
        [coverage_radius(x, rng.choice(len(x), len(sizes), replace=False))[0] for _ in range(20)]
    )
    assert selected_radius < 0.5 * random_radius


def test_larger_clusters_get_more_labels() -> None:
    x, cluster = clustered([600, 60], seed=3)
    chosen = select_tiles(x, 22, seed=0).positions
    counts = np.bincount(cluster[chosen], minlength=2)
    assert counts[0] > 3 * counts[1] >= 3


def test_flagged_tiles_draw_labels_towards_them() -> None:
    x, cluster = clustered([300, 300], seed=4)
    flagged = cluster == 1
    plain = np.bincount(cluster[select_tiles(x, 20, seed=0).positions], minlength=2)
    weighted = np.bincount(
        cluster[select_tiles(x, 20, flagged, unreliable_weight=4.0, seed=0).positions],
        minlength=2,
    )
    assert weighted[1] > plain[1] and weighted[1] >= 13


def test_impossible_requests_are_refused() -> None:
    x, _ = clustered([10])
    with pytest.raises(ValueError, match="expected a budget between 1 and the 10 tiles, found 11"):
        select_tiles(x, 11)
    with pytest.raises(ValueError, match="expected 10 unreliable flags"):
        select_tiles(x, 2, np.zeros(3, bool))
    copies = np.repeat(x[:2], 5, axis=0)  # two distinct tiles, each five times
    with pytest.raises(ValueError, match="not near-duplicates, found only 2"):
        select_tiles(copies, 3, duplicate_distance=0.1)
