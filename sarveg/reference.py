"""The arrays of ``reference.npz``: reference embeddings and conformal calibration tiles.

The layout is documented in :mod:`sarveg.bundle`; this module writes and reads it, checking every
key, shape and value against what the manifest announces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarveg.errors import BundleError

CALIBRATION_GROUP = "calibration"
REGION_ARRAYS: tuple[str, ...] = ("embedding", "vegetation_pct", "predicted_pct")
CALIBRATION_ARRAYS: tuple[str, ...] = (*REGION_ARRAYS, "score", "abs_error_norm")
# Arrays that may hold NaN: tiles without a label (only in adapted bundles, see sarveg.bundle).
OPTIONAL_VALUE_ARRAYS: tuple[str, ...] = ("vegetation_pct", "abs_error_norm")


@dataclass(frozen=True, eq=False)
class RegionReference:
    """Held-out tiles of one region, as stored in ``reference.npz``."""

    embedding: np.ndarray  # (n, D) float32
    vegetation_pct: np.ndarray  # (n,) float32
    predicted_pct: np.ndarray  # (n,) float32


@dataclass(frozen=True, eq=False)
class CalibrationReference(RegionReference):
    """Held-out fine-tuning-region tiles used only for conformal calibration."""

    score: np.ndarray  # (m,) float64
    abs_error_norm: np.ndarray  # (m,) float64


@dataclass(frozen=True, eq=False)
class ReferenceArrays:
    """Everything in ``reference.npz``."""

    regions: dict[str, RegionReference]
    calibration: CalibrationReference


def concat_references(groups: Sequence[RegionReference]) -> RegionReference:
    """The tiles of several groups as one group, in order."""
    return RegionReference(
        *(np.concatenate([getattr(g, key) for g in groups]) for key in REGION_ARRAYS)
    )


def save_reference(path: str | Path, reference: ReferenceArrays) -> None:
    """Write ``reference`` to ``path`` in the ``reference.npz`` layout of this module."""
    arrays: dict[str, np.ndarray] = {}
    for region, group in reference.regions.items():
        for key in REGION_ARRAYS:
            arrays[f"{region}/{key}"] = np.asarray(getattr(group, key), dtype=np.float32)
    for key in CALIBRATION_ARRAYS:
        dtype = np.float32 if key in REGION_ARRAYS else np.float64
        arrays[f"{CALIBRATION_GROUP}/{key}"] = np.asarray(
            getattr(reference.calibration, key), dtype
        )
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def read_reference(
    path: str | Path,
    reference_regions: Sequence[str],
    calibration_size: int,
    embedding_size: int,
) -> ReferenceArrays:
    """Read ``reference.npz`` and check its keys and shapes against the manifest.

    Args:
        path: the ``reference.npz`` file.
        reference_regions: the manifest's ``ood.reference_regions``.
        calibration_size: the manifest's ``ood.calibration_size``.
        embedding_size: ``D``.

    Raises:
        BundleError: naming the file and the offending key.
    """
    groups = {r: REGION_ARRAYS for r in reference_regions} | {CALIBRATION_GROUP: CALIBRATION_ARRAYS}
    expected_keys = {f"{g}/{k}" for g, keys in groups.items() for k in keys}
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as error:
        raise BundleError(
            f"{path}: expected a numpy .npz archive, found unreadable data ({error})"
        ) from error
    missing = sorted(expected_keys - stored.keys())
    unexpected = sorted(stored.keys() - expected_keys)
    if missing or unexpected:
        raise BundleError(
            f"{path}: expected keys {sorted(expected_keys)}, "
            f"missing {missing}, unexpected {unexpected}"
        )
    loaded: dict[str, dict[str, np.ndarray]] = {}
    for group, keys in groups.items():
        n = stored[f"{group}/embedding"].shape[0]
        if group == CALIBRATION_GROUP and n != calibration_size:
            raise BundleError(
                f"{path}: key '{group}/embedding': expected {calibration_size} rows "
                f"(ood.calibration_size), found {n}"
            )
        loaded[group] = {}
        for key in keys:
            array = stored[f"{group}/{key}"]
            shape = (n, embedding_size) if key == "embedding" else (n,)
            if array.shape != shape or n == 0 or not np.issubdtype(array.dtype, np.floating):
                raise BundleError(
                    f"{path}: key '{group}/{key}': expected a float array of shape {shape} "
                    f"with n > 0, found {array.dtype} {array.shape}"
                )
            # A label (and so a residual) may be missing: NaN. Nothing else may be.
            allowed = np.isnan(array) if key in OPTIONAL_VALUE_ARRAYS else False
            if not np.all(np.isfinite(array) | allowed):
                raise BundleError(
                    f"{path}: key '{group}/{key}': expected finite values, found NaN or inf"
                )
            loaded[group][key] = array
    calibration = CalibrationReference(**loaded.pop(CALIBRATION_GROUP))
    regions = {region: RegionReference(**arrays) for region, arrays in loaded.items()}
    return ReferenceArrays(regions=regions, calibration=calibration)
