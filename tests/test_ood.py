"""Tests for the SWD maths, conformal p-values/intervals and the OOD scorer (synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest

from sarveg.conformal import (
    conformal_p_values,
    conformal_quantile,
    interval_coverage,
    normalise_residuals,
    predict_intervals,
)
from sarveg.ood import OODScorer, calibrate_ood, rank_sum_p_value
from sarveg.ood_evaluation import auroc, evaluate_ood, rank_average, spearman
from sarveg.reference import RegionReference
from sarveg.swd import (
    ProjectedReference,
    ReferenceMoments,
    draw_projections,
    quantile_pairs,
    set_swd,
    set_swd_sorted,
    sort_projected,
    swd_tile_exact,
    swd_tile_projected,
)

DIM = 16


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def brute_force_tile_swd(
    x: np.ndarray, reference: np.ndarray, theta: np.ndarray, p: int
) -> np.ndarray:
    out = []
    for tile in x:
        per_direction = [np.mean(np.abs(t @ tile - reference @ t) ** p) for t in theta]
        out.append(np.mean(per_direction) ** (1.0 / p))
    return np.array(out)


def test_draw_projections_unit_and_deterministic() -> None:
    a = draw_projections(50, DIM, seed=7)
    assert a.shape == (50, DIM) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a, draw_projections(50, DIM, seed=7))
    assert not np.array_equal(a, draw_projections(50, DIM, seed=8))


def test_exact_tile_swd_equals_orthonormal_projections(rng: np.random.Generator) -> None:
    # An orthonormal basis averages theta theta' to exactly I / D, like the whole sphere does.
    reference = rng.normal(0.5, 2.0, (300, DIM)).astype(np.float32)
    x = rng.normal(0.0, 3.0, (7, DIM)).astype(np.float32)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    exact = swd_tile_exact(x, ReferenceMoments.from_embeddings(reference))
    brute = brute_force_tile_swd(x.astype(np.float64), reference.astype(np.float64), basis.T, p=2)
    np.testing.assert_allclose(exact, brute, rtol=1e-5)


def test_exact_tile_swd_matches_many_random_projections(rng: np.random.Generator) -> None:
    reference = rng.normal(0.0, 1.0, (200, DIM)) * np.linspace(0.2, 3.0, DIM)
    x = rng.normal(1.0, 2.0, (5, DIM))
    exact = swd_tile_exact(x, ReferenceMoments.from_embeddings(reference))
    projected = ProjectedReference.from_embeddings(reference, draw_projections(20_000, DIM, 0))
    np.testing.assert_allclose(swd_tile_projected(x, projected, p=2), exact, rtol=0.02)


@pytest.mark.parametrize("p", [1, 2])
def test_projected_tile_swd_matches_brute_force(rng: np.random.Generator, p: int) -> None:
    reference = rng.gamma(2.0, 1.0, (150, DIM))
    x = np.concatenate(
        [rng.gamma(2.0, 1.0, (4, DIM)), np.full((1, DIM), 50.0), np.full((1, DIM), -50.0)]
    )
    theta = draw_projections(64, DIM, seed=3)
    projected = ProjectedReference.from_embeddings(reference, theta)
    brute = brute_force_tile_swd(
        x, reference.astype(np.float32).astype(np.float64), theta.astype(np.float64), p
    )
    np.testing.assert_allclose(swd_tile_projected(x, projected, p=p), brute, rtol=1e-6)


def test_projected_tile_swd_rejects_other_p(rng: np.random.Generator) -> None:
    projected = ProjectedReference.from_embeddings(
        rng.normal(size=(10, DIM)), draw_projections(4, DIM, 0)
    )
    with pytest.raises(ValueError, match="expected p of 1 or 2"):
        swd_tile_projected(rng.normal(size=(2, DIM)), projected, p=3)


@pytest.mark.parametrize(("n", "m"), [(4, 6), (7, 7), (1, 5), (12, 9)])
def test_quantile_pairs_cover_the_unit_interval(n: int, m: int) -> None:
    index_x, index_r, weights = quantile_pairs(n, m)
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(weights > 0) and len(weights) <= n + m - 1
    assert index_x.min() == 0 and index_x.max() == n - 1 and np.all(np.diff(index_x) >= 0)
    assert index_r.min() == 0 and index_r.max() == m - 1 and np.all(np.diff(index_r) >= 0)


@pytest.mark.parametrize("p", [1, 2])
def test_set_swd_equals_pot_with_the_same_projections(rng: np.random.Generator, p: int) -> None:
    ot = pytest.importorskip("ot")
    x = rng.normal(0.0, 1.0, (120, DIM)).astype(np.float32)
    reference = rng.normal(0.7, 1.5, (95, DIM)).astype(np.float32)
    theta = draw_projections(300, DIM, seed=5)
    ours = set_swd_sorted(x, theta, [sort_projected(reference, theta)], p=p)[0]
    theirs = ot.sliced_wasserstein_distance(
        x.astype(np.float64),
        reference.astype(np.float64),
        projections=theta.T.astype(np.float64),
        p=p,
    )
    assert ours == pytest.approx(float(theirs), rel=1e-5)


def test_set_swd_agrees_with_pot_at_10000_projections(rng: np.random.Generator) -> None:
    ot = pytest.importorskip("ot")
    x = rng.normal(0.0, 1.0, (300, DIM))
    reference = rng.normal(0.5, 1.3, (250, DIM))
    ours = set_swd(x, reference, n_projections=10_000, seed=0)
    theirs = float(ot.sliced_wasserstein_distance(x, reference, n_projections=10_000, seed=0))
    assert ours == pytest.approx(theirs, rel=0.02)
    assert set_swd(x, x, n_projections=100, seed=0) == pytest.approx(0.0, abs=1e-6)


def test_set_swd_rejects_mismatched_cache(rng: np.random.Generator) -> None:
    theta = draw_projections(10, DIM, 0)
    with pytest.raises(ValueError, match="expected sorted reference projections with 10 rows"):
        set_swd_sorted(rng.normal(size=(5, DIM)), theta, [np.zeros((9, 5), np.float32)])
    with pytest.raises(ValueError, match="expected finite set embeddings"):
        set_swd_sorted(np.full((5, DIM), np.nan), theta, [])


def test_conformal_p_values_formula() -> None:
    calibration = np.array([1.0, 2.0, 3.0, 4.0])
    p = conformal_p_values(np.array([0.5, 2.0, 2.5, 9.0]), calibration)
    np.testing.assert_allclose(p, [5 / 5, 4 / 5, 3 / 5, 1 / 5])


def test_conformal_p_values_false_flag_rate_is_alpha(rng: np.random.Generator) -> None:
    # Exchangeable scores: 400 calibration sets of 210 and 200 test tiles each. With continuous
    # scores P(p < alpha) is exactly (ceil(alpha (m + 1)) - 1) / (m + 1) = 10 / 211, below alpha.
    alpha, m = 0.05, 210
    calibration = rng.gamma(2.0, 1.0, (400, m))
    test = rng.gamma(2.0, 1.0, (400, 200))
    flagged = [conformal_p_values(t, c) < alpha for c, t in zip(calibration, test, strict=True)]
    rate = float(np.mean(flagged))
    assert rate == pytest.approx(10 / 211, abs=0.004)  # std of this average is ~0.001
    assert rate < alpha + 0.002
    shifted = [
        conformal_p_values(t + 4.0, c) < alpha for c, t in zip(calibration, test, strict=True)
    ]
    assert float(np.mean(shifted)) > 0.6


def test_conformal_quantile_rank_and_infinite() -> None:
    residuals = np.arange(1.0, 20.0)  # m = 19
    assert conformal_quantile(residuals, 0.1) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(residuals[:5], 0.1) == np.inf
    with pytest.raises(ValueError, match="expected alpha in"):
        conformal_quantile(residuals, 1.5)


def test_normalised_interval_coverage_heteroscedastic(rng: np.random.Generator) -> None:
    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sigma = rng.uniform(0.5, 8.0, n)  # known difficulty, noise scales with it
        y = rng.uniform(10.0, 90.0, n)
        return y, y + rng.standard_normal(n) * sigma, sigma

    y_cal, yhat_cal, sigma_cal = draw(2000)
    q = conformal_quantile(normalise_residuals(y_cal, yhat_cal, sigma_cal), 0.1)
    y, yhat, sigma = draw(5000)
    low, high = predict_intervals(yhat, sigma, q)
    assert interval_coverage(y, low, high) == pytest.approx(0.90, abs=0.03)
    hard, easy = sigma > 6.0, sigma < 2.0
    assert interval_coverage(y[hard], low[hard], high[hard]) > 0.8
    assert np.mean((high - low)[hard]) > 3 * np.mean((high - low)[easy])
    assert np.all((low >= 0.0) & (high <= 100.0))


def test_rank_metrics_match_brute_force(rng: np.random.Generator) -> None:
    negative = rng.integers(0, 10, 60).astype(float)  # ties on purpose
    positive = rng.integers(3, 14, 40).astype(float)
    pairs = (positive[:, None] > negative[None]) + 0.5 * (positive[:, None] == negative[None])
    assert auroc(negative, positive) == pytest.approx(pairs.mean())
    np.testing.assert_allclose(rank_average(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    a = rng.normal(size=50)
    b = a**3 + rng.normal(scale=0.1, size=50)
    expected = np.corrcoef(rank_average(a), rank_average(b))[0, 1]
    assert spearman(a, b) == pytest.approx(expected)
    assert np.isnan(spearman(a, np.ones(50)))


def make_region(
    rng: np.random.Generator, centres: np.ndarray, n: int, error_sd: float = 3.0
) -> RegionReference:
    """Tiles from a mixture of clusters; label error grows with the cluster index."""
    cluster = rng.integers(0, len(centres), n)
    embedding = centres[cluster] + rng.standard_normal((n, centres.shape[1]))
    y = np.clip(20.0 + 12.0 * cluster + 5.0 * embedding[:, 0], 0.0, 100.0)
    yhat = np.clip(y + rng.standard_normal(n) * error_sd * (1 + cluster), 0.0, 100.0)
    return RegionReference(
        embedding.astype(np.float32), y.astype(np.float32), yhat.astype(np.float32)
    )


def split(region: RegionReference, *sizes: int) -> list[RegionReference]:
    bounds = np.cumsum([0, *sizes])
    return [
        RegionReference(
            *(a[lo:hi] for a in (region.embedding, region.vegetation_pct, region.predicted_pct))
        )
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]


@pytest.fixture
def synthetic_world(rng: np.random.Generator) -> dict[str, object]:
    centres = rng.standard_normal((4, DIM)) * 3.0
    reference, calibration, evaluation = split(make_region(rng, centres, 2600), 1000, 600, 1000)
    other = make_region(rng, rng.standard_normal((4, DIM)) * 3.0 + 4.0, 800)
    # The unseen region's tiles sit between the fine-tuning clusters and err more.
    between = (centres + np.roll(centres, 1, axis=0)) / 2.0
    unseen = make_region(rng, between, 800, error_sd=9.0)
    return {
        "regions": {"home": reference, "other": other},
        "calibration": calibration,
        "evaluation": evaluation,
        "unseen": unseen,
    }


def test_scorer_end_to_end_on_shifted_synthetic_data(synthetic_world: dict) -> None:
    arrays, ood = calibrate_ood(synthetic_world["regions"], "home", synthetic_world["calibration"])
    assert ood.calibration_size == 600 and ood.score_name == "knn_distance"
    scorer = OODScorer(arrays, ood)
    measured = evaluate_ood(
        scorer,
        synthetic_world["evaluation"],
        synthetic_world["unseen"],
        unseen_region="unseen",
        synthetic=True,
    )
    assert measured.false_flag_rate == pytest.approx(0.05, abs=0.02)
    assert measured.auroc is not None and measured.auroc > 0.9
    assert measured.spearman_abs_error is not None and measured.spearman_abs_error > 0.1
    assert measured.interval_coverage == pytest.approx(0.90, abs=0.03)
    assert measured.synthetic and measured.unseen_region == "unseen"


def test_score_tiles_fields_and_nearest_region(synthetic_world: dict) -> None:
    arrays, ood = calibrate_ood(synthetic_world["regions"], "home", synthetic_world["calibration"])
    scorer = OODScorer(arrays, ood)
    home = synthetic_world["evaluation"].embedding[:3]
    other = synthetic_world["regions"]["other"].embedding[:2] + 0.01
    tiles = scorer.score_tiles(
        np.concatenate([home, other]), np.array([10.0, 50.0, 99.0, 40.0, 0.0])
    )
    assert [t.nearest_region for t in tiles] == ["home"] * 3 + ["other"] * 2
    for region, group in synthetic_world["regions"].items():
        exact = swd_tile_exact(home, ReferenceMoments.from_embeddings(group.embedding))
        np.testing.assert_allclose([t.swd_by_region[region] for t in tiles[:3]], exact, rtol=1e-9)
    for tile in tiles:
        assert set(tile.swd_by_region) == {"home", "other"}
        assert 0.0 < tile.p_value <= 1.0 and tile.unreliable == (tile.p_value < 0.05)
        assert 0.0 <= tile.interval_low <= tile.interval_high <= 100.0
        assert tile.interval_coverage == pytest.approx(0.9)
    with pytest.raises(ValueError, match=f"expected tile embeddings with D={DIM}, found D=3"):
        scorer.score_tiles(np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(ValueError, match="expected 2 predictions, found 1"):
        scorer.score_tiles(home[:2], np.zeros(1))


def test_swd_exact_score_misses_tiles_between_clusters(synthetic_world: dict) -> None:
    # Why knn_distance is the default: the exact SWD only sees the distance to the mean.
    aurocs = {}
    for name in ("knn_distance", "swd_exact"):
        arrays, ood = calibrate_ood(
            synthetic_world["regions"], "home", synthetic_world["calibration"], score_name=name
        )
        measured = evaluate_ood(
            OODScorer(arrays, ood),
            synthetic_world["evaluation"],
            synthetic_world["unseen"],
            synthetic=True,
        )
        aurocs[name] = measured.auroc
    assert aurocs["knn_distance"] > 0.9 > aurocs["swd_exact"] + 0.2


def test_score_set_verdicts(synthetic_world: dict) -> None:
    arrays, ood = calibrate_ood(
        synthetic_world["regions"],
        "home",
        synthetic_world["calibration"],
        n_projections=500,
        set_verdict_projections=100,
        set_bootstrap_sets=49,
    )
    scorer = OODScorer(arrays, ood)
    inside = scorer.score_set(synthetic_world["evaluation"].embedding[:300])
    assert inside.nearest_region == "home" and not inside.unreliable and inside.n_tiles == 300
    outside = scorer.score_set(synthetic_world["unseen"].embedding[:300])
    assert outside.unreliable and outside.p_value < 1e-6
    assert outside.unreliable_tile_fraction > 0.5
    far = scorer.score_set(synthetic_world["regions"]["other"].embedding[:100] + 0.05)
    assert far.nearest_region == "other" and far.swd_by_region["home"] > far.swd_by_region["other"]
    assert far.score == far.swd_by_region["home"]


def test_set_verdict_false_flags_random_sets_at_alpha() -> None:
    # Exchangeable scores (the hypothesis the rank-sum test is exact for), many draws of the
    # calibration set: the false-flag rate sits at alpha for every set size.
    rng = np.random.default_rng(3)
    for size in (1, 4, 16, 64):
        flags = [
            rank_sum_p_value(rng.gamma(2.0, size=size), rng.gamma(2.0, size=500)) < 0.05
            for _ in range(2000)
        ]
        assert 0.035 <= np.mean(flags) <= 0.065, size  # sd of a 2,000-set rate: ~0.005
    calibration = np.arange(1.0, 100.0)
    assert rank_sum_p_value(np.array([50.5]), calibration) == pytest.approx(50 / 100)
    assert rank_sum_p_value(calibration[-8:] + 100, calibration) < 1e-3  # a shifted set


def test_calibrate_rejects_calibration_tiles_in_the_reference(synthetic_world: dict) -> None:
    leaked = synthetic_world["regions"]["home"]
    with pytest.raises(
        ValueError, match="calibration tiles disjoint from the fine-tuning reference, found 1000"
    ):
        calibrate_ood(synthetic_world["regions"], "home", leaked)
    arrays, ood = calibrate_ood(synthetic_world["regions"], "home", synthetic_world["calibration"])
    with pytest.raises(ValueError, match="evaluation tiles disjoint from the calibration tiles"):
        evaluate_ood(OODScorer(arrays, ood), synthetic_world["calibration"], synthetic=True)
    with pytest.raises(ValueError, match="fine_tuning_region"):
        calibrate_ood(synthetic_world["regions"], "mars", synthetic_world["calibration"])


def test_mahalanobis_score_sees_shifts_along_quiet_directions() -> None:
    from sarveg.bundle import OODCalibration
    from sarveg.embedding_distance import Whitening

    rng = np.random.default_rng(3)
    scale = np.r_[np.full(4, 5.0), np.full(4, 0.05)]  # loud and quiet directions
    reference = rng.normal(size=(2000, 8)) * scale
    region = RegionReference(
        embedding=reference.astype(np.float32),
        vegetation_pct=np.zeros(2000, np.float32),
        predicted_pct=np.zeros(2000, np.float32),
    )
    whitening = Whitening(region, shrinkage=0.0)
    loud = np.zeros((1, 8))
    loud[0, 0] = 1.0  # 0.2 sd along a loud direction
    quiet = np.zeros((1, 8))
    quiet[0, 7] = 1.0  # 20 sd along a quiet direction
    assert whitening.distance(quiet)[0] > 10 * whitening.distance(loud)[0]
    assert whitening.distance(quiet)[0] == pytest.approx(20.0, rel=0.1)
    assert "mahalanobis" in OODCalibration.model_fields["score_name"].annotation.__args__


def test_ledoit_wolf_shrinkage_matches_its_definition() -> None:
    from sarveg.embedding_distance import ledoit_wolf_shrinkage

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 20)) * np.linspace(0.1, 3.0, 20)
    s = ledoit_wolf_shrinkage(x)
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / len(x)
    mu = np.trace(cov) / 20
    delta = np.linalg.norm(cov - mu * np.eye(20)) ** 2 / 20
    beta = sum(np.linalg.norm(np.outer(v, v) - cov) ** 2 for v in centred) / len(x) ** 2 / 20
    assert s == pytest.approx(min(beta, delta) / delta, rel=1e-9)
    assert 0.0 < s < 1.0
    # Many samples per dimension need little shrinkage; few need more.
    assert ledoit_wolf_shrinkage(x[:25]) > s


@pytest.mark.parametrize("score_name", ["knn_distance", "mahalanobis"])
def test_reused_membership_neighbours_give_the_searched_scores(
    synthetic_world: dict, score_name: str
) -> None:
    """score_batch reuses membership's k-NN of the fine-tuning region instead of searching."""
    arrays, ood = calibrate_ood(
        synthetic_world["regions"], "home", synthetic_world["calibration"], score_name=score_name
    )
    scorer = OODScorer(arrays, ood)
    x = np.concatenate(
        [synthetic_world["evaluation"].embedding[:40], synthetic_world["unseen"].embedding[:40]]
    )
    membership = scorer.membership.score(x)
    home = scorer.regions.index("home")
    searched, _ = scorer.index.search(x)
    np.testing.assert_allclose(membership.nearest_distances[:, home], searched, rtol=1e-4)
    reused = scorer.in_distribution.score(x, {"home": membership.nearest_distances[:, home]})
    fresh = scorer.in_distribution.score(x)
    for a, b in zip(reused, fresh, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4)
    # The p-values come from the calibration sorted once, exactly as from the definition.
    batch = scorer.score_batch(x, synthetic_world["evaluation"].predicted_pct[:80])
    expected = conformal_p_values(fresh[0][:, 0], arrays.calibration.score)
    np.testing.assert_array_equal(batch.p_value, expected)


def test_two_in_distribution_regions_each_get_their_own_interval(
    rng: np.random.Generator,
) -> None:
    """Mondrian intervals: a few labelled new-region tiles are not outvoted by many old ones."""
    old_centres = rng.standard_normal((4, DIM)) * 3.0
    new_centres = rng.standard_normal((4, DIM)) * 3.0
    new_centres[:, 1:] += 8.0  # far from the old region, with labels in the same range
    old_ref, old_cal, old_eval = split(make_region(rng, old_centres, 2600), 1000, 600, 1000)
    # The new region errs three times as much and has 40 labelled calibration tiles.
    new_ref, new_cal, new_eval = split(
        make_region(rng, new_centres, 2040, error_sd=9.0), 1000, 40, 1000
    )
    regions = {"old": old_ref, "new": new_ref}
    arrays, ood = calibrate_ood(regions, "new", {"old": old_cal, "new": new_cal})
    scorer = OODScorer(arrays, ood)
    assert np.isfinite(scorer.interval_quantiles).all()
    assert scorer.interval_quantiles[1] > 2.0 * scorer.interval_quantiles[0]
    covered = {}
    for name, group in (("old", old_eval), ("new", new_eval)):
        batch = scorer.score_batch(group.embedding, group.predicted_pct)
        low, high = batch.interval_low, batch.interval_high
        covered[name] = interval_coverage(group.vegetation_pct, low, high)
    # 600 tiles pin the old region's level; 40 give at least it, up to 1 - 0.1 + 1/41 expected.
    assert covered["old"] == pytest.approx(0.90, abs=0.03)
    assert 0.85 <= covered["new"] <= 0.99
    # One quantile pooled over both regions' residuals is the old region's, and under-covers.
    pooled = conformal_quantile(arrays.calibration.abs_error_norm, 0.1)
    assert pooled == pytest.approx(scorer.interval_quantiles[0], rel=0.1)
    difficulty = scorer.in_distribution.score(new_eval.embedding)[1]
    low, high = predict_intervals(new_eval.predicted_pct, difficulty, pooled)
    assert interval_coverage(new_eval.vegetation_pct, low, high) < 0.8
    # Without labelled tiles of its own, a region's intervals span the whole label range.
    unlabelled = RegionReference(
        new_cal.embedding, np.full(40, np.nan, np.float32), new_cal.predicted_pct
    )
    arrays, ood = calibrate_ood(regions, "new", {"old": old_cal, "new": unlabelled})
    batch = OODScorer(arrays, ood).score_batch(new_eval.embedding[:50], new_eval.predicted_pct[:50])
    np.testing.assert_array_equal(batch.interval_low, 0.0)
    np.testing.assert_array_equal(batch.interval_high, 100.0)
