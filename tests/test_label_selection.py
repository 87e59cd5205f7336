"""Which tiles to label: distinct, in proportion, weighted towards flagged tiles (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from sarveg import label_selection
from sarveg.label_selection import coverage_radius, select_tiles


def clustered(
    sizes: list[int], seed: int = 0, spread: float | list[float] = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Tiles in well separated Gaussian clusters of the given sizes; returns (x, cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (len(sizes), 8))
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    scale = np.broadcast_to(np.asarray(spread, np.float64), (len(sizes),))[cluster, None]
    return centres[cluster] + scale * rng.normal(0.0, 1.0, (len(cluster), 8)), cluster


def test_budget_gives_distinct_tiles_without_near_duplicates() -> None:
    x, _ = clustered([200, 100, 50])
    x = np.concatenate([x, x[:40] + 1e-6])  # 40 near-copies of tiles already present
    selection = select_tiles(x, 30, seed=1)
    chosen = selection.positions
    assert len(chosen) == 30 and len(set(chosen.tolist())) == 30
    gaps = np.linalg.norm(x[chosen][:, None] - x[chosen][None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= selection.duplicate_distance > 0.0


def test_every_common_cluster_is_covered_unlike_random_choice() -> None:
    sizes = [400, 200, 100, 50, 25]
    x, cluster = clustered(sizes, seed=2)
    budget = 10
    chosen = select_tiles(x, budget, seed=0).positions
    common = [c for c, size in enumerate(sizes) if size * budget >= len(x)]  # >= 1/K of tiles
    assert set(common) <= set(cluster[chosen].tolist())
    rng = np.random.default_rng(0)
    missed = [
        not set(common) <= set(cluster[rng.choice(len(x), budget, replace=False)].tolist())
        for _ in range(200)
    ]
    assert np.mean(missed) > 0.1  # random choice often misses one of them
    selected_radius, _ = coverage_radius(x, chosen)
    random_radius = np.mean(
        [coverage_radius(x, rng.choice(len(x), budget, replace=False))[0] for _ in range(20)]
    )
    assert selected_radius < 0.7 * random_radius


def test_labels_follow_how_many_tiles_a_cluster_holds_not_its_spread() -> None:
    # A large tight cluster (a saturated dense forest) beside smaller spread-out ones (mixed
    # open land): the tight one gets its share of labels, which k-means medoids did not give it.
    sizes = [600, 300, 100]
    x, cluster = clustered(sizes, seed=3, spread=[0.05, 2.0, 2.0])
    selection = select_tiles(x, 20, seed=0)
    counts = np.bincount(cluster[selection.positions], minlength=3)
    assert np.abs(counts - np.array([12, 6, 2])).max() <= 1
    assert selection.represents.sum() == len(x)
    assert np.all(selection.represents >= 1)  # a chosen tile is nearest to itself


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
    assert len(set(select_tiles(copies, 4, duplicate_distance=0.0).positions.tolist())) == 4
    with pytest.raises(ValueError, match="not near-duplicates, found only 2"):
        select_tiles(copies, 3, duplicate_distance=0.1)


def test_a_region_larger_than_the_candidate_cap_is_subsampled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(label_selection, "MAX_CANDIDATES", 150)
    x, cluster = clustered([600, 300], seed=5)
    selection = select_tiles(x, 9, seed=0)
    assert len(set(selection.positions.tolist())) == 9
    counts = np.bincount(cluster[selection.positions], minlength=2)
    assert np.abs(counts - np.array([6, 3])).max() <= 1
    assert selection.represents.sum() == len(x)
