"""Split-conformal p-values and normalised prediction intervals (numpy only).

Two guarantees are used by the OOD block, both from split conformal prediction. They hold when
the calibration tiles and the tiles being scored are exchangeable (drawn the same way from the
same distribution) and the calibration tiles were never used to fit anything: not the model,
not the reference embeddings, not the difficulty estimate.

**p-values.** Given nonconformity scores ``c_1..c_m`` of held-out in-distribution tiles and the
score ``s`` of a new tile (larger means stranger),

    p(s) = (1 + #{i : c_i >= s}) / (m + 1).

If the new tile is exchangeable with the calibration tiles, ``P(p(s) <= alpha) <= alpha`` for
every ``alpha``, so flagging ``p < alpha`` mis-flags at most a fraction ``alpha`` of
in-distribution tiles (on average over calibration draws; the realised rate for one calibration
set fluctuates by roughly ``sqrt(alpha (1 - alpha) / m)``).

**Intervals.** On the calibration tiles compute normalised residuals
``r_i = |y_i - yhat_i| / (sigma_i + eps)`` where ``sigma`` is any difficulty estimate that is a
fixed function of the tile (fitted without the calibration tiles). With ``k = ceil((m + 1)(1 -
alpha))`` and ``q`` the ``k``-th smallest ``r_i``, the interval ``yhat +/- q (sigma + eps)``
covers the true ``y`` of a new exchangeable tile with probability at least ``1 - alpha``
(marginally: on average over tiles, not for every tile). When ``k > m`` no finite ``q`` works
and the interval is the whole label range. Clipping to the label range 0..100 never removes a
true label, so coverage is kept.
"""

from __future__ import annotations

import math

import numpy as np

VEGETATION_PCT_RANGE: tuple[float, float] = (0.0, 100.0)
# Keeps the normalised residual finite where the difficulty estimate is zero (a tile sitting
# exactly on a reference embedding); in the units of the difficulty estimate.
DIFFICULTY_EPS = 1e-6


def conformal_p_values(scores: np.ndarray, calibration_scores: np.ndarray) -> np.ndarray:
    """Return conformal p-values ``(1 + #{cal >= s}) / (m + 1)`` for each score.

    Args:
        scores: nonconformity scores of the tiles to test, any shape; larger is stranger.
        calibration_scores: ``(m,)`` scores of held-out in-distribution tiles.

    Returns:
        float64 array of p-values in ``(0, 1]``, the same shape as ``scores``.
    """
    return p_values_from_sorted(scores, sort_calibration(calibration_scores))


def sort_calibration(calibration_scores: np.ndarray) -> np.ndarray:
    """Calibration scores checked and sorted once, for :func:`p_values_from_sorted`.

    Raises:
        ValueError: when there is no score or one is NaN or infinite.
    """
    calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64).ravel())
    if calibration.size == 0:
        raise ValueError("expected at least one calibration score, found none")
    if not np.all(np.isfinite(calibration)):
        raise ValueError("expected finite calibration scores, found NaN or inf")
    return calibration


def p_values_from_sorted(scores: np.ndarray, sorted_calibration: np.ndarray) -> np.ndarray:
    """:func:`conformal_p_values` against calibration scores from :func:`sort_calibration`.

    A server scores every tile against the same calibration set: sorting it once per tile
    would cost more than the rest of the p-value.
    """
    values = np.asarray(scores, dtype=np.float64)
    m = sorted_calibration.size
    n_at_least = m - np.searchsorted(sorted_calibration, values, side="left")
    return (1.0 + n_at_least) / (m + 1.0)


def conformal_quantile(residuals: np.ndarray, alpha: float) -> float:
    """Return the split-conformal quantile of calibration residuals for miscoverage ``alpha``.

    Args:
        residuals: ``(m,)`` nonconformity residuals of calibration tiles.
        alpha: allowed miscoverage in ``(0, 1)``, e.g. 0.1 for a 90 % interval.

    Returns:
        The ``ceil((m + 1)(1 - alpha))``-th smallest residual, or ``inf`` when that rank
        exceeds ``m`` (too few calibration tiles for the requested level).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"expected alpha in (0, 1), found {alpha}")
    values = np.sort(np.asarray(residuals, dtype=np.float64).ravel())
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("expected a non-empty array of finite residuals")
    rank = math.ceil((values.size + 1) * (1.0 - alpha))
    return float(values[rank - 1]) if rank <= values.size else math.inf


def normalise_residuals(
    vegetation_pct: np.ndarray,
    predicted_pct: np.ndarray,
    difficulty: np.ndarray,
    eps: float = DIFFICULTY_EPS,
) -> np.ndarray:
    """Return ``|y - yhat| / (difficulty + eps)``, the interval's nonconformity score.

    Args:
        vegetation_pct: ``(m,)`` true labels.
        predicted_pct: ``(m,)`` model predictions.
        difficulty: ``(m,)`` non-negative difficulty estimate per tile.
        eps: floor added to the difficulty.

    Returns:
        ``(m,)`` float64 normalised absolute residuals.
    """
    y = np.asarray(vegetation_pct, dtype=np.float64)
    yhat = np.asarray(predicted_pct, dtype=np.float64)
    sigma = np.asarray(difficulty, dtype=np.float64)
    if not y.shape == yhat.shape == sigma.shape:
        raise ValueError(
            "expected labels, predictions and difficulty of one shape, found "
            f"{y.shape}, {yhat.shape}, {sigma.shape}"
        )
    return np.abs(y - yhat) / (sigma + eps)


def predict_intervals(
    predicted_pct: np.ndarray,
    difficulty: np.ndarray,
    quantile: float,
    eps: float = DIFFICULTY_EPS,
    label_range: tuple[float, float] = VEGETATION_PCT_RANGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Return conformal intervals ``yhat +/- quantile * (difficulty + eps)``, clipped.

    Args:
        predicted_pct: ``(B,)`` predictions.
        difficulty: ``(B,)`` difficulty estimates, computed as for the calibration tiles.
        quantile: output of :func:`conformal_quantile` (may be ``inf``).
        eps: the same floor used by :func:`normalise_residuals`.
        label_range: the range labels can take; intervals are clipped to it.

    Returns:
        ``(low, high)``, two ``(B,)`` float64 arrays.
    """
    yhat = np.asarray(predicted_pct, dtype=np.float64)
    half_width = quantile * (np.asarray(difficulty, dtype=np.float64) + eps)
    low = np.clip(yhat - half_width, *label_range)
    high = np.clip(yhat + half_width, *label_range)
    return low, high


def interval_coverage(vegetation_pct: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Return the fraction of labels inside their ``[low, high]`` interval.

    Args:
        vegetation_pct: ``(B,)`` true labels; tiles without a label (NaN) are ignored.
        low: ``(B,)`` lower bounds.
        high: ``(B,)`` upper bounds.

    Returns:
        Empirical coverage in ``[0, 1]``.
    """
    y = np.asarray(vegetation_pct, dtype=np.float64)
    labelled = np.isfinite(y)
    if not labelled.any():
        raise ValueError("expected at least one labelled tile to measure coverage, found none")
    inside = (y >= low) & (y <= high)
    return float(inside[labelled].mean())
