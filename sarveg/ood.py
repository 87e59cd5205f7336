"""Out-of-distribution scores, p-values and intervals for tiles and sets (numpy only).

**Which data each step uses.** The guarantees below need three disjoint parts of the
fine-tuning region's held-out data, none of them used to train, early-stop or select the model:

1. *reference*: the test-split tiles stored as ``{region}/...`` in ``reference.npz`` (~2,000 per
   region, every region with labels). The fine-tuning region's reference defines "in
   distribution": its embeddings feed the k-NN search and the SWD moments, its residuals the
   ``knn_residual`` difficulty. The other regions' references only feed ``swd_by_region``.
2. *calibration*: other held-out tiles of the fine-tuning region, used once, by
   :func:`calibrate_ood`, to compute their scores and normalised residuals. Nothing is fitted on
   them, so a new in-distribution tile is exchangeable with them.
3. *evaluation*: a third part (in-distribution false-flag rate and interval coverage) and tiles
   of a region the model never saw (AUROC, Spearman), measured by
   :func:`sarveg.ood_evaluation.evaluate_ood`.

A tile that is also in the reference has k-NN distance 0 and looks perfectly typical, which is
why the three parts must not overlap (:func:`calibrate_ood` refuses exact duplicates).

**Per tile.** Region membership (:mod:`sarveg.region_membership`): ``knn_distance_by_region``,
the mean distance to the ``k`` nearest reference tiles of each region, its full-conformal
``region_p_values``, ``plausible_regions`` (regions with p >= alpha, a prediction set over
regions) and ``nearest_region`` (a k-NN vote among all regions' reference tiles).
``swd_by_region`` is the exact SWD_2 between the tile and each region's reference (closed form,
see :mod:`sarveg.swd`): it includes the region's spread, so it is a distance between
distributions, not a ranking of proximity, and does not decide ``nearest_region``. The OOD
``score`` is ``ood.score_name``: ``knn_distance``, the mean Euclidean distance to the ``k`` nearest
fine-tuning reference embeddings (default), ``mahalanobis``, the distance to the fine-tuning
reference under its shrunk covariance (``Whitening``: it weighs the few directions in which the
reference hardly varies, where unseen regions often move), or ``swd_exact``, the SWD_2 to the
fine-tuning reference. The exact SWD_2 is a monotone function of the distance to the reference
*mean*, so it cannot see a tile that sits in an empty pocket of a multi-modal embedding cloud
(between land cover clusters); the k-NN distance can, at the cost of one ``(B, n)`` distance
matrix. All are measured by ``bench/ood.py`` and :func:`sarveg.ood_evaluation.evaluate_ood`.
The score becomes a conformal p-value against the calibration scores and
``unreliable = p_value < alpha``.
The interval is normalised split conformal (:mod:`sarveg.conformal`) with difficulty
``knn_distance`` (the same mean k-NN distance, so intervals widen away from the reference) or
``knn_residual`` (mean absolute error of the k nearest reference tiles). With several
in-distribution regions (an adapted bundle) it is Mondrian: a tile's category is the region
whose reference is nearest by mean k-NN distance (a fixed function of the tile), and each
category's quantile comes from the labelled calibration tiles of that category alone. A pooled
quantile would be set by the region with most labelled calibration tiles (a thousand old-region
tiles against a few new-region ones) and under-cover the other.

**Per set** (a scene, a batch, a region). ``swd_by_region`` is the set-level SWD_2 at
``ood.n_projections`` fixed directions against reference projections sorted once and cached: a
description of how far the set's embedding distribution lies from each region's. The verdict
tests "the set's tiles are drawn like the calibration tiles" with a one-sided rank-sum
(Mann-Whitney) test of the set's tile scores against the calibration scores: under that
hypothesis the ``n + m`` scores are exchangeable and the rank-sum has a known distribution
whatever the score's, so ``P(p < alpha) <= alpha`` (normal approximation with continuity
correction; a set of one tile gets its conformal p-value). It is the test a mean of the tiles'
conformal p-values amounts to.

What it does not cover: tiles of one scene are spatially correlated, not random draws of the
region, and positive correlation makes the rank-sum overconfident (a homogeneous in-region
scene, all forest say, can be flagged). ``bench/scene_verdict.py`` measures the false-flag rate
on random and on spatially contiguous in-distribution scenes; read the verdict with
``unreliable_tile_fraction``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarveg.bundle import Bundle, OODCalibration
from sarveg.conformal import (
    conformal_p_values,
    conformal_quantile,
    normalise_residuals,
    p_values_from_sorted,
    predict_intervals,
    sort_calibration,
)
from sarveg.embedding_distance import NeighbourIndex, Whitening
from sarveg.reference import (
    CalibrationReference,
    ReferenceArrays,
    RegionReference,
    concat_references,
)
from sarveg.region_membership import RegionMembership
from sarveg.swd import (
    ReferenceMoments,
    check_embeddings,
    draw_projections,
    set_swd_sorted,
    sort_projected,
    swd_tile_exact,
)


def _score_and_difficulty(
    embedding: np.ndarray,
    index: NeighbourIndex,
    moments: ReferenceMoments,
    settings: OODCalibration,
    whitening: Whitening | None = None,
    distances: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the OOD score ``(B,)`` and interval difficulty ``(B,)`` of tiles.

    ``distances``: the tiles' ``(B, k)`` nearest distances in ``index`` if already known
    (region membership searched every reference region); they are searched otherwise, and
    always when the difficulty needs the neighbours themselves.
    """
    indices = None
    if distances is None or settings.difficulty != "knn_distance":
        distances, indices = index.search(embedding)  # (B, k)
    knn_distance = distances.mean(axis=1)
    if settings.score_name == "knn_distance":
        score = knn_distance
    elif settings.score_name == "mahalanobis":
        if whitening is None:
            raise ValueError("score 'mahalanobis' needs the fine-tuning region's whitening")
        score = whitening.distance(embedding)
    else:
        score = swd_tile_exact(embedding, moments)
    if settings.difficulty == "knn_distance":
        difficulty = knn_distance
    else:
        difficulty = index.abs_error[indices].mean(axis=1)
    return score, difficulty


class InDistributionScore:
    """The OOD score of tiles against every in-distribution region, and their difficulty.

    One region (every exported bundle): the score and difficulty of :func:`_score_and_difficulty`
    against the fine-tuning reference. Several (an adapted bundle): per region ``r`` the score
    against ``r``'s reference; the interval difficulty is that of the region whose reference is
    nearest by mean k-NN distance, a fixed function of the tile, the same for calibration tiles
    and new ones.
    """

    def __init__(self, reference: Mapping[str, RegionReference], settings: OODCalibration):
        self.settings = settings
        self.regions: tuple[str, ...] = tuple(settings.in_distribution)
        self.indexes = {r: NeighbourIndex(reference[r], settings.knn_k) for r in self.regions}
        self.moments = {
            r: ReferenceMoments.from_embeddings(reference[r].embedding) for r in self.regions
        }
        self.whitenings = {
            r: Whitening(reference[r]) if settings.score_name == "mahalanobis" else None
            for r in self.regions
        }

    def score(
        self, embedding: np.ndarray, nearest: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the scores ``(B, R_in)``, the difficulty ``(B,)`` and the category ``(B,)``.

        Score columns are :attr:`regions`; the category is the column of the region whose
        reference is nearest (the interval's Mondrian category).

        Args:
            embedding: ``(B, D)`` tile embeddings.
            nearest: per region, the tiles' ``(B, k)`` ascending distances to its ``k`` nearest
                reference tiles, where already searched (the same k-NN the index would find).
        """
        nearest = nearest or {}
        scores, difficulties, nearness = [], [], []
        for region in self.regions:
            distances = nearest.get(region)
            if distances is not None and distances.shape[1] != self.indexes[region].k:
                distances = None
            score, difficulty = _score_and_difficulty(
                embedding,
                self.indexes[region],
                self.moments[region],
                self.settings,
                self.whitenings[region],
                distances,
            )
            scores.append(score)
            difficulties.append(difficulty)
            if len(self.regions) > 1:
                if distances is None:
                    distances = self.indexes[region].search(embedding)[0]
                nearness.append(distances.mean(axis=1))
        if len(self.regions) == 1:
            return scores[0][:, None], difficulties[0], np.zeros(len(embedding), np.int64)
        category = np.argmin(np.stack(nearness, axis=1), axis=1)  # (B,)
        difficulty = np.stack(difficulties, axis=1)[np.arange(len(category)), category]
        return np.stack(scores, axis=1), difficulty, category


def block_scores(
    scores: np.ndarray, counts: list[int], own_column: bool = True
) -> list[np.ndarray]:
    """Each in-distribution region's calibration scores, one array per region.

    Region ``i``'s are its block of rows of ``scores`` ``(m, R_in)``, in its own column
    (``own_column``) or in the only one.
    """
    bounds = np.cumsum([0, *counts])
    return [scores[bounds[i] : bounds[i + 1], i if own_column else 0] for i in range(len(counts))]


def best_p_values(
    scores: np.ndarray, calibration: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The largest per-region conformal p-value ``(B,)`` and the column it came from ``(B,)``.

    ``calibration``: per region, its calibration scores from :func:`sort_calibration`.
    """
    p_values = np.stack(
        [p_values_from_sorted(scores[:, i], c) for i, c in enumerate(calibration)], axis=1
    )  # (B, R_in)
    best = np.argmax(p_values, axis=1)
    return p_values[np.arange(len(best)), best], best


@dataclass(frozen=True)
class TileOOD:
    """The OOD block of one tile."""

    swd_by_region: dict[str, float]
    knn_distance_by_region: dict[str, float]
    region_p_values: dict[str, float]
    nearest_region: str
    plausible_regions: list[str]
    score: float
    p_value: float
    unreliable: bool
    interval_low: float
    interval_high: float
    interval_coverage: float  # nominal, 1 - interval_alpha


@dataclass(frozen=True, eq=False)
class TileOODBatch:
    """The OOD block of a batch of tiles, as arrays (for batch inference)."""

    regions: tuple[str, ...]
    swd_by_region: np.ndarray  # (B, R), columns in ``regions`` order
    knn_distance_by_region: np.ndarray  # (B, R)
    region_p_values: np.ndarray  # (B, R)
    nearest_region: list[str]
    plausible_regions: list[list[str]]
    score: np.ndarray  # (B,)
    p_value: np.ndarray  # (B,)
    unreliable: np.ndarray  # (B,) bool
    interval_low: np.ndarray  # (B,)
    interval_high: np.ndarray  # (B,)
    interval_coverage: float

    def tiles(self) -> list[TileOOD]:
        """Split the batch into one :class:`TileOOD` per tile."""

        def by_region(values: np.ndarray) -> dict[str, float]:
            return dict(zip(self.regions, map(float, values), strict=True))

        return [
            TileOOD(
                swd_by_region=by_region(self.swd_by_region[i]),
                knn_distance_by_region=by_region(self.knn_distance_by_region[i]),
                region_p_values=by_region(self.region_p_values[i]),
                nearest_region=self.nearest_region[i],
                plausible_regions=list(self.plausible_regions[i]),
                score=float(self.score[i]),
                p_value=float(self.p_value[i]),
                unreliable=bool(self.unreliable[i]),
                interval_low=float(self.interval_low[i]),
                interval_high=float(self.interval_high[i]),
                interval_coverage=self.interval_coverage,
            )
            for i in range(len(self.score))
        ]


@dataclass(frozen=True)
class SetOOD:
    """The OOD summary of a set of tiles (a scene, a batch, a region)."""

    n_tiles: int
    swd_by_region: dict[str, float]
    nearest_region: str  # smallest set SWD_2
    score: float  # set SWD_2 to the fine-tuning region, all projections
    p_value: float  # one-sided rank-sum test of the tiles' scores against the calibration
    unreliable: bool
    unreliable_tile_fraction: float


def rank_sum_p_value(scores: np.ndarray, calibration: np.ndarray) -> float:
    """One-sided Mann-Whitney p-value that ``scores`` sit higher than ``calibration``.

    Exactly the tile's conformal p-value for one score; the normal approximation of the
    rank-sum with a continuity correction for more (ties count one half).
    """
    x = np.asarray(scores, np.float64).ravel()
    c = np.sort(np.asarray(calibration, np.float64).ravel())
    n, m = x.size, c.size
    if n == 0 or m == 0:
        raise ValueError(f"expected scores and calibration scores, found {n} and {m}")
    if n == 1:
        return float(conformal_p_values(x, c)[0])
    below = np.searchsorted(c, x, side="left")
    ties = np.searchsorted(c, x, side="right") - below
    u = float(np.sum(below + 0.5 * ties))  # pairs (tile, calibration) with the tile higher
    mean = n * m / 2.0
    sd = math.sqrt(n * m * (n + m + 1) / 12.0)
    z = (u - mean - 0.5) / sd
    return float(0.5 * math.erfc(z / math.sqrt(2.0)))


class OODScorer:
    """Scores tiles and sets against a bundle's reference and calibration arrays."""

    def __init__(self, reference: ReferenceArrays, settings: OODCalibration) -> None:
        if list(reference.regions) != list(settings.reference_regions):
            raise ValueError(
                f"expected reference regions {settings.reference_regions}, "
                f"found {list(reference.regions)}"
            )
        self.settings = settings
        self.reference = reference
        self.regions: tuple[str, ...] = tuple(settings.reference_regions)
        self.fine_tuning_region = settings.fine_tuning_region
        self.moments = {
            r: ReferenceMoments.from_embeddings(g.embedding) for r, g in reference.regions.items()
        }
        self.dim = self.moments[self.fine_tuning_region].mean.size
        self._means = np.stack([self.moments[r].mean for r in self.regions])  # (R, D)
        self._total_variances = np.array([self.moments[r].total_variance for r in self.regions])
        self.in_distribution = InDistributionScore(reference.regions, settings)
        self.index = self.in_distribution.indexes[self.fine_tuning_region]
        self.whitening = self.in_distribution.whitenings[self.fine_tuning_region]
        self.membership = RegionMembership(reference.regions, settings.knn_k, settings.alpha)
        self.calibration_scores = np.asarray(reference.calibration.score, np.float64)
        # Per in-distribution region, its calibration tiles' scores (one block each).
        self.calibration_by_region = [
            sort_calibration(c)
            for c in block_scores(
                self.calibration_scores[:, None], settings.calibration_blocks, own_column=False
            )
        ]
        residuals = np.asarray(reference.calibration.abs_error_norm, np.float64)
        # Unlabelled calibration tiles (adapted bundles) calibrate the p-value, not the interval.
        labelled = np.isfinite(residuals)
        category = (
            self.in_distribution.score(reference.calibration.embedding)[2]
            if len(self.in_distribution.regions) > 1
            else np.zeros(len(residuals), np.int64)
        )
        self.interval_quantiles = interval_quantiles(
            residuals, labelled, category, len(self.in_distribution.regions), settings
        )
        self._projections: np.ndarray | None = None  # (P, D), drawn on first set scoring
        self._sorted: dict[str, np.ndarray] = {}  # region -> (P, n_r) sorted projections

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> OODScorer:
        """Build the scorer of a loaded bundle."""
        return cls(bundle.reference, bundle.manifest.ood)

    def swd_by_region(self, embedding: np.ndarray) -> np.ndarray:
        """Return the exact per-tile SWD_2 ``(B, R)`` to every reference region at once.

        Same values as :func:`sarveg.swd.swd_tile_exact` region by region.
        """
        x = check_embeddings(embedding, "tile embeddings", self.dim).astype(np.float64)
        squared = (
            np.sum(x**2, axis=1)[:, None] - 2.0 * x @ self._means.T + np.sum(self._means**2, axis=1)
        )  # (B, R), |x - mean_r|^2
        return np.sqrt((np.maximum(squared, 0.0) + self._total_variances) / self.dim)

    def score_batch(self, embedding: np.ndarray, predicted_pct: np.ndarray) -> TileOODBatch:
        """Score a batch of tiles.

        Args:
            embedding: ``(B, D)`` embeddings from the model.
            predicted_pct: ``(B,)`` the model's vegetation predictions.

        Returns:
            The batch's OOD block as arrays.
        """
        x = check_embeddings(embedding, "tile embeddings", self.dim)
        yhat = np.asarray(predicted_pct, dtype=np.float64).reshape(-1)
        if yhat.shape[0] != x.shape[0]:
            raise ValueError(f"expected {x.shape[0]} predictions, found {yhat.shape[0]}")
        swd = self.swd_by_region(x)  # (B, R)
        membership = self.membership.score(x)
        nearest = {
            r: membership.nearest_distances[:, i]  # (B, k)
            for i, r in enumerate(self.regions)
            if r in self.in_distribution.regions
        }
        scores, difficulty, category = self.in_distribution.score(x, nearest)  # (B, R_in), (B,)
        p_value, best = best_p_values(scores, self.calibration_by_region)
        score = scores[np.arange(len(best)), best]  # against the region that fits best
        low, high = predict_intervals(
            yhat, difficulty, self.interval_quantiles[category], self.settings.difficulty_eps
        )
        return TileOODBatch(
            regions=self.regions,
            swd_by_region=swd,
            knn_distance_by_region=membership.knn_distance,
            region_p_values=membership.p_value,
            nearest_region=membership.nearest_region,
            plausible_regions=membership.plausible_regions,
            score=score,
            p_value=p_value,
            unreliable=p_value < self.settings.alpha,
            interval_low=low,
            interval_high=high,
            interval_coverage=1.0 - self.settings.interval_alpha,
        )

    def score_tiles(self, embedding: np.ndarray, predicted_pct: np.ndarray) -> list[TileOOD]:
        """Score a batch of tiles, one :class:`TileOOD` per tile (see :meth:`score_batch`)."""
        return self.score_batch(embedding, predicted_pct).tiles()

    def prepare_set_scoring(self) -> None:
        """Build the set-scoring caches now rather than on the first :meth:`score_set` call.

        Draws the projections and sorts every reference's projections: ``n_projections x
        sum(n_r)`` float32 values, about 80 MB per region of 2,000 tiles at 10,000 projections.
        Not thread-safe: call it at start-up before serving requests concurrently.
        """
        if self._projections is None:
            self._projections = draw_projections(
                self.settings.n_projections, self.dim, self.settings.projection_seed
            )
        for region in self.regions:
            if region not in self._sorted:
                self._sorted[region] = sort_projected(
                    self.reference.regions[region].embedding, self._projections
                )

    def score_set(self, embedding: np.ndarray) -> SetOOD:
        """Score a set of tiles as a whole.

        Args:
            embedding: ``(N, D)`` embeddings of the set's tiles.

        Returns:
            Set-level SWD to each region, the nearest region and the set verdict.
        """
        x = check_embeddings(embedding, "set embeddings", self.dim)
        self.prepare_set_scoring()
        assert self._projections is not None
        swd = set_swd_sorted(x, self._projections, [self._sorted[r] for r in self.regions])
        tile_scores = self.in_distribution.score(x)[0]  # (N, R_in)
        tile_p, _ = best_p_values(tile_scores, self.calibration_by_region)
        # The set is in distribution if it is drawn like one in-distribution region's tiles.
        p_value = max(
            rank_sum_p_value(tile_scores[:, i], c) for i, c in enumerate(self.calibration_by_region)
        )
        by_region = dict(zip(self.regions, map(float, swd), strict=True))
        return SetOOD(
            n_tiles=x.shape[0],
            swd_by_region=by_region,
            nearest_region=min(by_region, key=by_region.__getitem__),
            score=by_region[self.fine_tuning_region],
            p_value=p_value,
            unreliable=p_value < self.settings.alpha,
            unreliable_tile_fraction=float(np.mean(tile_p < self.settings.alpha)),
        )


def require_disjoint(
    tiles: RegionReference, other: RegionReference, name: str, other_name: str
) -> None:
    """Raise ``ValueError`` if any embedding of ``tiles`` also appears in ``other``."""
    seen = {row.tobytes() for row in np.asarray(other.embedding, np.float32)}
    shared = sum(row.tobytes() in seen for row in np.asarray(tiles.embedding, np.float32))
    if shared:
        raise ValueError(f"expected {name} tiles disjoint from {other_name}, found {shared} shared")


def interval_quantiles(
    residuals: np.ndarray,
    labelled: np.ndarray,
    category: np.ndarray,
    n_categories: int,
    settings: OODCalibration,
) -> np.ndarray:
    """The interval's conformal quantile per category ``(n_categories,)`` (Mondrian).

    A category without labelled calibration tiles, or with too few for the level, gets ``inf``:
    an interval over the whole label range, rather than one borrowed from another region.
    """
    quantiles = np.full(n_categories, math.inf)
    for c in range(n_categories):
        own = residuals[labelled & (category == c)]
        if own.size:
            quantiles[c] = conformal_quantile(own, settings.interval_alpha)
    return quantiles


def describe_method(settings: OODCalibration, n_reference: int) -> str:
    """Return the human-readable method description stored in ``ood.method``."""
    return (
        f"Tile score {settings.score_name} (k={settings.knn_k}) against {n_reference} held-out "
        f"reference tiles of {settings.fine_tuning_region}; split-conformal p-value against "
        f"{settings.calibration_size} further held-out {settings.fine_tuning_region} tiles; "
        f"unreliable when p < {settings.alpha}. Interval: normalised split conformal, difficulty "
        f"{settings.difficulty}, nominal coverage {1 - settings.interval_alpha:.2f}. Region "
        f"membership: full-conformal k-NN p-value (k={settings.knn_k}) against each region's "
        f"reference tiles, plausible regions p >= {settings.alpha}, nearest region by a "
        f"pooled k-NN vote. Per-region SWD_2 exact (closed form) per tile; set SWD_2 over "
        f"{settings.n_projections} projections "
        f"(seed {settings.projection_seed}); set verdict: one-sided rank-sum test of the set's "
        "tile scores against the calibration scores (valid for tiles drawn at random)."
        + (
            f" In distribution: {', '.join(settings.in_distribution)}, each scored against its "
            f"own reference and calibrated on its own block of calibration tiles "
            f"({', '.join(map(str, settings.calibration_blocks))}); a tile's p-value is the "
            "largest of its per-region p-values, a set's the largest per-region rank-sum p. "
            "Interval per category (Mondrian): a tile takes the quantile of the labelled "
            "calibration tiles whose nearest reference is the same region as its own."
            if len(settings.in_distribution) > 1
            else ""
        )
    )


def calibrate_ood(
    regions: Mapping[str, RegionReference],
    fine_tuning_region: str,
    calibration: RegionReference | Mapping[str, RegionReference],
    **settings: Any,
) -> tuple[ReferenceArrays, OODCalibration]:
    """Compute the calibration arrays and OOD settings that go into a bundle.

    Args:
        regions: per region, held-out tiles fitted on nothing (the reference sets).
        fine_tuning_region: the region the model was fine-tuned on; must be in ``regions``.
        calibration: held-out tiles of the fine-tuning region, disjoint from its reference and
            never used to fit anything; or, for several in-distribution regions (an adapted
            bundle), such tiles per region, in the order their blocks are stored. Tiles without
            a label (NaN) calibrate the p-value only.
        **settings: any other :class:`OODCalibration` field (``alpha``, ``score_name``, ...).

    Returns:
        ``(reference, ood)``: the contents of ``reference.npz`` and the manifest's ``ood``.
    """
    n_reference = len(regions[fine_tuning_region].embedding) if fine_tuning_region in regions else 0
    blocks = dict(calibration) if isinstance(calibration, Mapping) else None
    groups = list((blocks or {fine_tuning_region: calibration}).values())
    pooled = concat_references(groups)
    fields = {
        "fine_tuning_region": fine_tuning_region,
        "reference_regions": list(regions),
        "calibration_size": len(pooled.embedding),
        "method": "pending",
    } | settings
    if blocks is not None:
        fields |= {
            "in_distribution_regions": list(blocks),
            "calibration_counts": [len(g.embedding) for g in groups],
        }
    ood = OODCalibration.model_validate(fields)
    if "method" not in settings:
        ood = ood.model_copy(update={"method": describe_method(ood, n_reference)})
    for region in ood.in_distribution:
        name = "the fine-tuning" if region == fine_tuning_region else f"the {region}"
        require_disjoint(pooled, regions[region], "calibration", f"{name} reference")
    scores, difficulty, _ = InDistributionScore(regions, ood).score(pooled.embedding)
    residuals = normalise_residuals(
        pooled.vegetation_pct, pooled.predicted_pct, difficulty, ood.difficulty_eps
    )
    if not np.isfinite(residuals).any():
        raise ValueError("expected labelled calibration tiles for the interval, found none")
    stored = CalibrationReference(
        embedding=np.asarray(pooled.embedding, np.float32),
        vegetation_pct=np.asarray(pooled.vegetation_pct, np.float32),
        predicted_pct=np.asarray(pooled.predicted_pct, np.float32),
        score=np.concatenate(block_scores(scores, ood.calibration_blocks)),
        abs_error_norm=residuals,
    )
    return ReferenceArrays(regions=dict(regions), calibration=stored), ood
