"""Resampling a tile to the model input size, shared by training, export and serving.

The rule is NaN-aware area averaging: every output pixel is the mean of the valid input pixels
whose footprint overlaps it, weighted by overlap area. It works for any input size (chips are
masked to their polygon, so they are not all the same size), down- and up-sampling alike, and
an output pixel with no valid input stays NaN.
"""

from __future__ import annotations

import numpy as np

RESAMPLING_RULE = "nan-aware area average (overlap-weighted)"


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """Return the ``(n_out, n_in)`` matrix of overlap fractions between 1-D pixel footprints.

    Rows sum to one: row ``i`` holds how much of output pixel ``i`` each input pixel covers.
    """
    edges_in = np.linspace(0.0, 1.0, n_in + 1)
    edges_out = np.linspace(0.0, 1.0, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None)  # (n_out, n_in)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resample_array(array: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resample a ``(C, H, W)`` array to ``(C, size, size)`` by NaN-aware area averaging.

    Args:
        array: float array, NaN where nodata, shape ``(C, H, W)``.
        size: output side in pixels, or ``(height, width)``.

    Returns:
        float32 array of shape ``(C, out_h, out_w)``; NaN only where no valid input overlaps.

    """
    if array.ndim != 3:
        raise ValueError(f"expected a (C, H, W) array, found shape {array.shape}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, h, w = array.shape
    if (h, w) == (out_h, out_w):
        return array.astype(np.float32, copy=False)
    wy = area_weights(h, out_h).astype(np.float64)  # (out_h, H)
    wx = area_weights(w, out_w).astype(np.float64)  # (out_w, W)
    valid = np.isfinite(array)
    if valid.all():
        # Rows of the weight matrices sum to one, so no renormalisation is needed.
        return (wy @ array.astype(np.float64) @ wx.T).astype(np.float32)
    filled = np.where(valid, array, 0.0).astype(np.float64)
    # Separable weighted sums: (out_h, H) @ (C, H, W) @ (W, out_w).
    total = wy @ filled @ wx.T  # (C, out_h, out_w)
    weight = wy @ valid.astype(np.float64) @ wx.T  # (C, out_h, out_w)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(weight > 1e-9, total / np.maximum(weight, 1e-12), np.nan)
    return out.astype(np.float32)
