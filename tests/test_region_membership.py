"""Region membership: exact full-conformal k-NN p-values, their validity, and nearest regions."""

from __future__ import annotations

import numpy as np
import pytest

from sarveg.reference import RegionReference
from sarveg.region_membership import RegionMembership


def region(embedding: np.ndarray) -> RegionReference:
    n = len(embedding)
    zeros = np.zeros(n, np.float32)
    return RegionReference(
        embedding=embedding.astype(np.float32), vegetation_pct=zeros, predicted_pct=zeros
    )


def knn_score(point: np.ndarray, others: np.ndarray, k: int) -> float:
    return float(np.sort(np.linalg.norm(others - point, axis=1))[:k].mean())


def naive_p_value(x: np.ndarray, reference: np.ndarray, k: int) -> float:
    """Full conformal by definition: every point scored against all the others, x included."""
    augmented = np.vstack([reference, x[None]])
    scores = [
        knn_score(augmented[i], np.delete(augmented, i, axis=0), k) for i in range(len(augmented))
    ]
    return (np.sum(np.array(scores[:-1]) >= scores[-1]) + 1) / len(augmented)


def test_p_values_equal_full_conformal_by_definition() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 5))
    tiles = np.vstack(
        [rng.normal(size=(6, 5)), rng.normal(3.0, 1.0, size=(2, 5)), np.full((1, 5), 9)]
    )
    membership = RegionMembership({"a": region(reference)}, k=4, alpha=0.1).score(tiles)
    expected = [naive_p_value(t.astype(np.float32), reference.astype(np.float32), 4) for t in tiles]
    np.testing.assert_allclose(membership.p_value[:, 0], expected, atol=1e-9)
    assert membership.p_value[-1, 0] == pytest.approx(1 / 41)  # far tiles: the smallest p


def test_compact_and_diffuse_regions() -> None:
    # A compact region beside a diffuse one: the per-tile SWD, sqrt((|x - mu|^2 + tr S) / D),
    # sends most tiles of the diffuse region to the compact one; membership p-values do not.
    rng = np.random.default_rng(1)
    dim, n = 16, 400
    compact_mean, diffuse_mean = np.zeros(dim), np.full(dim, 2.0)

    def draw(mean: np.ndarray, sd: float, size: int) -> np.ndarray:
        return rng.normal(mean, sd, size=(size, dim))

    refs = {"compact": draw(compact_mean, 0.3, n), "diffuse": draw(diffuse_mean, 2.0, n)}
    alpha = 0.1
    membership = RegionMembership({r: region(e) for r, e in refs.items()}, k=10, alpha=alpha)
    for name, mean, sd in (("compact", compact_mean, 0.3), ("diffuse", diffuse_mean, 2.0)):
        fresh = draw(mean, sd, 1000)
        result = membership.score(fresh)
        accuracy = np.mean([r == name for r in result.nearest_region])
        covered = np.mean([name in p for p in result.plausible_regions])
        assert accuracy >= 0.95, (name, accuracy)
        assert covered >= 1 - alpha - 0.03, (name, covered)  # 1000 draws: sd ~0.01
        swd = {
            r: np.sqrt((np.sum((fresh - e.mean(0)) ** 2, 1) + np.trace(np.cov(e.T))) / dim)
            for r, e in refs.items()
        }
        if name == "diffuse":  # the old rule's failure, for the record
            assert np.mean(swd["compact"] < swd["diffuse"]) > 0.3
    nowhere = membership.score(np.full((3, dim), 40.0))
    assert nowhere.plausible_regions == [[], [], []]


def test_validity_on_exchangeable_tiles() -> None:
    # Validity is marginal, over the draw of the reference too: average over 40 references.
    rng = np.random.default_rng(2)
    p = []
    for _ in range(40):
        reference = rng.standard_t(df=4, size=(200, 8))
        fresh = rng.standard_t(df=4, size=(200, 8))
        p.append(RegionMembership({"a": region(reference)}, 10, 0.05).score(fresh).p_value[:, 0])
    p_all = np.concatenate(p)
    for alpha in (0.05, 0.1, 0.2):  # the pooled rate's sd is ~0.006 at alpha 0.2
        assert alpha - 0.02 <= np.mean(p_all < alpha) <= alpha + 0.02, alpha


def test_unequal_references_give_each_region_alone() -> None:
    rng = np.random.default_rng(4)
    refs = {"a": rng.normal(size=(50, 6)), "b": rng.normal(1.0, 2.0, size=(80, 6))}
    tiles = rng.normal(0.5, 1.5, size=(7, 6))
    both = RegionMembership({r: region(e) for r, e in refs.items()}, k=5, alpha=0.1).score(tiles)
    for column, (name, embedding) in enumerate(refs.items()):
        alone = RegionMembership({name: region(embedding)}, k=5, alpha=0.1).score(tiles)
        np.testing.assert_allclose(both.p_value[:, column], alone.p_value[:, 0])
        np.testing.assert_allclose(
            both.knn_distance[:, column], alone.knn_distance[:, 0], rtol=1e-5
        )
