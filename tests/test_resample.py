"""NaN-aware area resampling against a direct per-pixel computation."""

from __future__ import annotations

import numpy as np
import pytest

from sarveg.resample import area_weights, resample_array


def naive_resample(array: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Overlap-weighted mean of the valid input pixels of every output pixel, in float64."""
    c, h, w = array.shape
    out = np.full((c, out_h, out_w), np.nan)
    for i in range(out_h):
        y0, y1 = i / out_h, (i + 1) / out_h
        for j in range(out_w):
            x0, x1 = j / out_w, (j + 1) / out_w
            for k in range(c):
                total = weight = 0.0
                for y in range(h):
                    dy = min(y1, (y + 1) / h) - max(y0, y / h)
                    if dy <= 0:
                        continue
                    for x in range(w):
                        dx = min(x1, (x + 1) / w) - max(x0, x / w)
                        if dx > 0 and np.isfinite(array[k, y, x]):
                            total += dx * dy * float(array[k, y, x])
                            weight += dx * dy
                if weight > 0:
                    out[k, i, j] = total / weight
    return out


@pytest.mark.parametrize(("shape", "size"), [((2, 21, 17), (12, 9)), ((3, 10, 10), (16, 16))])
def test_matches_direct_overlap_weighted_mean(shape: tuple[int, int, int], size) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(-12.0, 3.0, shape).astype(np.float32)
    array[0, :5, :6] = np.nan  # a masked corner
    array[1, :, ::3] = np.nan  # striped gaps
    out = resample_array(array, size)
    expected = naive_resample(array, *size)
    assert out.dtype == np.float32 and out.shape == (shape[0], *size)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_nan_only_where_no_valid_input_overlaps() -> None:
    array = np.full((1, 113, 113), np.nan, np.float32)
    array[0, 0, 0] = -7.0  # one valid pixel: a sliver of the first output pixel's footprint
    out = resample_array(array, 64)
    assert out[0, 0, 0] == pytest.approx(-7.0)
    assert np.isnan(out).sum() == 64 * 64 - 1


def test_all_valid_constant_stays_constant_and_same_size_is_untouched() -> None:
    array = np.full((4, 112, 112), -11.5, np.float32)
    np.testing.assert_allclose(resample_array(array, 64), -11.5, rtol=1e-6)
    assert resample_array(array, 112) is array


def test_weights_rows_sum_to_one_and_are_read_only() -> None:
    weights = area_weights(112, 64)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="read-only"):
        weights[0, 0] = 1.0


def test_rejects_arrays_that_are_not_channels_first() -> None:
    with pytest.raises(ValueError, match=r"expected a \(C, H, W\) array"):
        resample_array(np.zeros((8, 8), np.float32), 4)


def test_resample_tile_keeps_the_aspect_of_non_square_tiles() -> None:
    from sarveg.resample import resample_tile

    tile = np.arange(2 * 40 * 20, dtype=np.float32).reshape(2, 40, 20)  # tall: 40 x 20
    out = resample_tile(tile, 16)
    assert out.shape == (2, 16, 16)
    inside = ~np.isnan(out[0])
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    assert len(rows) == 16 and len(cols) == 8  # 2:1 kept, centred on a NaN canvas
    assert cols[0] == 4 and cols[-1] == 11
    np.testing.assert_allclose(out[:, :, 4:12], resample_array(tile, (16, 8)))
    square = tile[:, :20, :]
    np.testing.assert_array_equal(resample_tile(square, 16), resample_array(square, 16))
