"""Spatially correlated random fields for the simulator's landscapes.

Fields are white Gaussian noise filtered in the Fourier domain, generated on a grid somewhat
larger than the tile and cropped, so that the FFT's periodic wrap-around does not join opposite
tile edges. Several fields are filtered in one batched FFT for speed.
"""

from __future__ import annotations

from functools import cache

import numpy as np

PAD_FRACTION = 0.12


def padded_side(size: int) -> int:
    """Side of the generation grid for a ``size`` x ``size`` tile.

    At least ``PAD_FRACTION`` larger than the tile, even (for the real FFT) and with no prime
    factor above 5, so the FFT is fast (128 for a 112 px tile).
    """
    side = int(np.ceil(size * (1.0 + PAD_FRACTION)))
    while True:
        side += side % 2
        rest = side
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return side
        side += 1


@cache
def frequency_grid(side: int) -> np.ndarray:
    """Squared spatial frequency ``|k|^2`` in cycles per pixel on the real-FFT grid."""
    fy = np.fft.fftfreq(side)[:, None]  # (side, 1)
    fx = np.fft.rfftfreq(side)[None, :]  # (1, side // 2 + 1)
    return (fy**2 + fx**2).astype(np.float32)  # (side, side // 2 + 1)


def gaussian_fields(
    rng: np.random.Generator,
    size: int,
    scales_px: list[float] | np.ndarray,
) -> np.ndarray:
    """Draw unit-variance correlated Gaussian fields, one per scale.

    The white noise is drawn directly in the Fourier domain (the transform of white Gaussian
    noise is white complex Gaussian noise), which saves the forward FFT.

    Args:
        rng: random generator.
        size: tile side in pixels.
        scales_px: correlation length of each field in pixels (the standard deviation of a
            Gaussian smoothing kernel).

    Returns:
        float32 array ``(len(scales_px), size, size)`` with zero mean and unit variance per field.
    """
    scales = np.asarray(scales_px, dtype=np.float32)
    count = scales.size
    side = padded_side(size)
    k2 = frequency_grid(side)  # (S, S // 2 + 1)
    sigma_f = 1.0 / (2.0 * np.pi * np.maximum(scales, 0.3))  # (K,)
    gain = np.exp(k2[None] * (-0.5 / sigma_f**2)[:, None, None])  # (K, S, S // 2 + 1)
    noise = rng.standard_normal((2, count) + k2.shape, dtype=np.float32)  # (2, K, S, S//2+1)
    spectrum = (noise[0] + 1j * noise[1]) * gain
    spectrum[:, 0, 0] = 0.0  # zero mean
    fields = np.fft.irfft2(spectrum, s=(side, side))[:, :size, :size]  # (K, H, W)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    std = fields.std(axis=(1, 2), keepdims=True)
    return (fields / np.maximum(std, 1e-12)).astype(np.float32)


def assign_by_quantile(
    shares: np.ndarray, scores: np.ndarray, default: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """Turn competing score fields into a class map with the requested area shares.

    Classes are taken in order: class ``i`` gets the ``shares[i]`` fraction of all pixels with the
    highest ``scores[i]`` among the pixels not yet assigned. What is left gets ``default``.

    Args:
        shares: ``(K,)`` area fraction of each class (their sum at most 1).
        scores: ``(K, H, W)`` score field of each class.
        default: class code of the remaining pixels.
        valid: optional ``(K,)`` class codes; defaults to ``0..K-1``.

    Returns:
        ``(H, W)`` uint8 class map.
    """
    _, height, width = scores.shape
    total = height * width
    codes = np.arange(len(shares)) if valid is None else valid
    classes = np.full(total, default, dtype=np.uint8)
    free = np.ones(total, dtype=bool)
    remaining = total
    for code, share, score in zip(codes, shares, scores, strict=True):
        count = min(int(round(share * total)), remaining)
        if count <= 0:
            continue
        candidates = np.where(free, score.ravel(), -np.inf)
        # The count-th largest free score is the threshold.
        threshold = np.partition(candidates, total - count)[total - count]
        chosen = free & (candidates >= threshold)
        classes[chosen] = code
        free &= ~chosen
        remaining = int(free.sum())
    return classes.reshape(height, width)


def parcel_grid(
    size: int, parcel_px: float, angle_rad: float, offset: tuple[float, float]
) -> np.ndarray:
    """Integer parcel id of every pixel on a rotated rectangular grid (field boundaries).

    Parcels are ``parcel_px`` x ``1.6 * parcel_px`` rectangles, rotated by ``angle_rad``.
    Ids are arbitrary non-negative integers, meant to index a table of random values modulo its
    length.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (H, W) each
    cos, sin = np.cos(angle_rad), np.sin(angle_rad)
    u = (xx * cos + yy * sin) / parcel_px + offset[0]
    v = (-xx * sin + yy * cos) / (1.6 * parcel_px) + offset[1]
    iu = np.floor(u).astype(np.int64) + 4096
    iv = np.floor(v).astype(np.int64) + 4096
    return (iu * 7919 + iv * 104729) & 0x7FFFFFFF
