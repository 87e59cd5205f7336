"""How good is an OOD block? False flags, coverage, AUROC and Spearman on held-out tiles.

Measured once at export on tiles used for nothing else (see :mod:`sarveg.ood` for the three
disjoint parts) and written to ``bundle.json`` as ``ood.measured``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sarveg.bundle import OODMeasured, RegionMembershipMeasured
from sarveg.conformal import interval_coverage
from sarveg.ood import OODScorer, require_disjoint
from sarveg.reference import RegionReference


def rank_average(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks of ``values`` with ties given their average rank."""
    _, inverse, counts = np.unique(
        np.asarray(values, np.float64), return_inverse=True, return_counts=True
    )
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[inverse]


def auroc(negative_scores: np.ndarray, positive_scores: np.ndarray) -> float:
    """Return the area under the ROC curve of a score separating positives (higher) from negatives.

    Computed from ranks (Mann-Whitney U), ties counting one half.
    """
    negative = np.asarray(negative_scores, np.float64).ravel()
    positive = np.asarray(positive_scores, np.float64).ravel()
    if negative.size == 0 or positive.size == 0:
        raise ValueError("expected at least one negative and one positive score")
    ranks = rank_average(np.concatenate([negative, positive]))
    u = ranks[negative.size :].sum() - positive.size * (positive.size + 1) / 2.0
    return float(u / (positive.size * negative.size))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Return Spearman's rank correlation of two equal-length arrays (NaN if one is constant)."""
    ra, rb = rank_average(a), rank_average(b)
    if ra.shape != rb.shape:
        raise ValueError(f"expected arrays of one length, found {ra.shape} and {rb.shape}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt(np.sum(ra**2) * np.sum(rb**2))
    return float(np.sum(ra * rb) / denominator) if denominator > 0 else float("nan")


def evaluate_ood(
    scorer: OODScorer,
    in_distribution: RegionReference,
    unseen: RegionReference | None = None,
    *,
    unseen_region: str | None = None,
    synthetic: bool,
    evaluation_tiles: str | None = None,
) -> OODMeasured:
    """Measure the OOD block on evaluation tiles, for the bundle and the model card.

    Args:
        scorer: built from the bundle's reference and calibration.
        in_distribution: held-out fine-tuning-region tiles in neither the reference nor the
            calibration set: false-flag rate (target ``alpha``) and interval coverage.
        unseen: labelled tiles of a region the model never saw: AUROC of the score against the
            in-distribution tiles and Spearman correlation of the score with absolute error.
        unseen_region: its name, recorded.
        synthetic: whether the data are simulated (recorded; results must say so).
        evaluation_tiles: where both tile sets came from, in words (recorded).

    Returns:
        The measured figures.
    """
    calibration = scorer.reference.calibration
    fine_tuning_reference = scorer.reference.regions[scorer.fine_tuning_region]
    require_disjoint(in_distribution, fine_tuning_reference, "evaluation", "the reference")
    require_disjoint(in_distribution, calibration, "evaluation", "the calibration tiles")
    inside = scorer.score_batch(in_distribution.embedding, in_distribution.predicted_pct)
    y = np.asarray(in_distribution.vegetation_pct, np.float64)
    labelled = np.isfinite(y)
    measured: dict[str, Any] = {
        "synthetic": synthetic,
        "evaluation_tiles": evaluation_tiles,
        "n_in_distribution": len(y),
        "false_flag_rate": float(inside.unreliable.mean()),
        "interval_coverage": interval_coverage(y, inside.interval_low, inside.interval_high),
        "interval_width_mean": float(
            np.mean((inside.interval_high - inside.interval_low)[labelled])
        ),
    }
    if unseen is not None:
        outside = scorer.score_batch(unseen.embedding, unseen.predicted_pct)
        error = np.abs(
            np.asarray(unseen.vegetation_pct, np.float64)
            - np.asarray(unseen.predicted_pct, np.float64)
        )
        has_label = np.isfinite(error)
        correlation = spearman(outside.score[has_label], error[has_label])
        measured |= {
            "unseen_region": unseen_region,
            "n_unseen": len(outside.score),
            "auroc": auroc(inside.score, outside.score),
            "spearman_abs_error": None if np.isnan(correlation) else correlation,
        }
    return OODMeasured.model_validate(measured)


def measure_region_membership(
    scorer: OODScorer,
    tiles: dict[str, RegionReference],
    *,
    synthetic: bool,
    evaluation_tiles: str,
) -> RegionMembershipMeasured:
    """Confusion matrix of ``nearest_region`` and coverage of ``plausible_regions``.

    Args:
        scorer: the bundle's scorer.
        tiles: per reference region, tiles of that region the bundle never saw (not its
            reference or calibration tiles: those would look perfectly typical).
        synthetic: whether the tiles are simulated.
        evaluation_tiles: where the tiles came from, for the record.

    Raises:
        ValueError: a region that is not a reference region, or tiles shared with a reference.
    """
    regions = list(scorer.regions)
    unknown = sorted(set(tiles) - set(regions))
    if unknown:
        raise ValueError(f"expected tiles of reference regions {regions}, found {unknown}")
    confusion = np.zeros((len(regions), len(regions)), np.int64)
    accuracy, coverage, size, swd_accuracy, counts = {}, {}, {}, {}, {}
    for name, group in tiles.items():
        require_disjoint(group, scorer.reference.regions[name], f"{name} evaluation", "reference")
        membership = scorer.membership.score(group.embedding)
        row = regions.index(name)
        for nearest in membership.nearest_region:
            confusion[row, regions.index(nearest)] += 1
        n = len(membership.nearest_region)
        counts[name] = n
        accuracy[name] = float(confusion[row, row] / n)
        coverage[name] = float(np.mean([name in p for p in membership.plausible_regions]))
        size[name] = float(np.mean([len(p) for p in membership.plausible_regions]))
        swd = scorer.swd_by_region(group.embedding)  # (n, R)
        swd_accuracy[name] = float(np.mean(np.argmin(swd, axis=1) == row))
    return RegionMembershipMeasured(
        synthetic=synthetic,
        evaluation_tiles=evaluation_tiles,
        regions=regions,
        n_tiles=counts,
        confusion=confusion.tolist(),
        nearest_accuracy=accuracy,
        plausible_coverage=coverage,
        mean_plausible_size=size,
        swd_nearest_accuracy=swd_accuracy,
    )
