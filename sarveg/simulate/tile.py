"""One simulated tile: S1GRD composites, GSSIC coherence and the MODIS-like label, in memory.

``simulate_tile`` is a pure function of (chip, size, seed): the same arguments give the same
arrays whatever process runs it. Writing the arrays to files is ``tilefiles``' job; the per-pixel
land-cover map is kept here (not on disk) for benchmarks and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from sarveg import bands
from sarveg.resample import area_weights
from sarveg.simulate.chips import (
    CHIP_SIDE_KM,
    STREAM_ACQUISITION,
    STREAM_PHYSICS,
    Chip,
    tile_rng,
)
from sarveg.simulate.landscape import Landscape, simulate_landscape
from sarveg.simulate.physics import (
    coherence_decay,
    composite_looks,
    compute_backscatter,
    decay_parameters,
    estimate_coherence,
    speckled_db,
)
from sarveg.simulate.regions import WATER, region_params

DB_STEP = 1.0 / 8.0  # quantisation of stored dB: error std 0.036 dB, speckle std >= 0.29 dB
GSSIC_PIXEL_RATIO = 0.45  # ~90 m GSSIC pixels for ~40 m S1GRD pixels at 112 px
MIN_GSSIC_SIDE = 16  # readers refuse rasters below 16 x 16
MODIS_PIXEL_KM = 0.25
# GSSIC NetCDF season order (summer, fall, winter, spring) as indexes into S1GRD season order.
NC_SEASON_INDEX = [bands.S1GRD_SEASONS.index(s) for s in bands.GSSIC_NC_SEASONS]


@dataclass(frozen=True)
class SimulatedTile:
    """Everything simulated for one chip. Synthetic data.

    Attributes:
        chip: the chip.
        s1grd_db: ``(16, H, W)`` float32 sigma0 dB in ``bands.S1GRD_RAW_BANDS`` order, NaN outside
            the chip polygon, quantised to ``DB_STEP``.
        coherence: ``(4, 4, h, w)`` coherence 0..1 (season in ``bands.GSSIC_NC_SEASONS`` order,
            deltadays ``bands.GSSIC_NC_DELTADAYS``), NaN outside the chip.
        amplitude_db: ``(4, 2, h, w)`` seasonal mean ascending sigma0 dB (vv, vh), NaN outside.
        rho: ``(4, h, w)`` long-term coherence per season (NetCDF season order).
        tau_days: ``(4, h, w)`` decay time per season (days).
        incidence_deg: ``(h, w)`` ascending local incidence angle.
        layover_shadow: ``(h, w)`` uint8: 0 clear, 1 layover, 2 shadow.
        tree_cover_codes: ``(m, m)`` uint8 MODIS VCF codes: 0..100 %, 200 water, 253 fill.
        vegetation_pct: the tile label, mean of ``tree_cover_codes`` over valid pixels
            (water counts as 0 %).
        land_cover: ``(H, W)`` uint8 class codes (``regions.CLASS_NAMES``) on the S1GRD grid.
        tree_cover: ``(H, W)`` float32 tree-cover fraction on the S1GRD grid.
        archetype: the tile's archetype name.
        single_date_season: ``None`` for seasonal composites; for a single-date tile, the
            season index (``bands.S1GRD_SEASONS``) of its one acquisition, which every season
            and both look directions of ``s1grd_db`` repeat (as the service replicates a date).
        herb_vegetation: ``(4, H, W)`` grass / crop vegetation descriptor V per season (S1GRD
            season order), on the S1GRD grid; for benchmarks (green-vegetation masks).
    """

    chip: Chip
    s1grd_db: np.ndarray
    coherence: np.ndarray
    amplitude_db: np.ndarray
    rho: np.ndarray
    tau_days: np.ndarray
    incidence_deg: np.ndarray
    layover_shadow: np.ndarray
    tree_cover_codes: np.ndarray
    vegetation_pct: float
    land_cover: np.ndarray
    tree_cover: np.ndarray
    archetype: str
    single_date_season: int | None = None
    herb_vegetation: np.ndarray | None = None


def gssic_side(size: int) -> int:
    """GSSIC grid side (~90 m pixels) for an S1GRD tile of ``size`` pixels."""
    return max(MIN_GSSIC_SIDE, int(round(size * GSSIC_PIXEL_RATIO)))


def modis_side() -> int:
    """MODIS grid side (~250 m pixels) of a chip."""
    return int(round(CHIP_SIDE_KM / MODIS_PIXEL_KM))


@cache
def banded_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``resample.area_weights`` as per-output-pixel (input indexes, weights), ``(n_out, K)``."""
    dense = area_weights(n_in, n_out)  # (n_out, n_in)
    width = int((dense > 0).sum(axis=1).max())
    index = np.zeros((n_out, width), dtype=np.intp)
    weight = np.zeros((n_out, width), dtype=np.float32)
    for i in range(n_out):
        nonzero = np.flatnonzero(dense[i])
        index[i, : nonzero.size] = nonzero
        weight[i, : nonzero.size] = dense[i, nonzero]
    return index, weight


def area_average(array: np.ndarray, side: int) -> np.ndarray:
    """Area-average the last two axes of ``array`` (square, no NaN) to ``side`` x ``side``.

    Same weights as ``sarveg.resample``, applied as a banded sum: no BLAS call, whose threads
    thrash when several simulator processes share the cores.
    """
    index, weight = banded_weights(array.shape[-1], side)
    rows_done = (array[..., index] * weight).sum(axis=-1)  # (..., H, side)
    both = (np.swapaxes(rows_done, -1, -2)[..., index] * weight).sum(axis=-1)  # (..., side, side)
    return np.swapaxes(both, -1, -2)


def label_codes(landscape: Landscape, mask: np.ndarray, side: int) -> np.ndarray:
    """MODIS VCF-like codes: area-averaged tree cover in %, 200 where mostly water, 253 fill."""
    percent = area_average(landscape.tree_cover * 100.0, side)
    water = area_average((landscape.land_cover == WATER).astype(np.float32), side)
    codes = np.clip(np.round(percent), 0, 100).astype(np.uint8)
    codes[water > 0.5] = bands.MODIS_WATER
    codes[~mask] = bands.MODIS_FILL
    return codes


def vegetation_pct_of(codes: np.ndarray) -> float:
    """Tile label from MODIS codes: mean over valid pixels, water as 0 %, NaN if none valid."""
    valid = codes != bands.MODIS_FILL
    if not valid.any():
        return float("nan")
    percent = np.where(codes == bands.MODIS_WATER, 0, codes).astype(np.float64)
    return float(percent[valid].mean())


def single_date_s1grd(
    sigma0: np.ndarray, season: int, pixel_m: float, rng: np.random.Generator
) -> np.ndarray:
    """``(16, H, W)`` S1GRD bands of one ascending acquisition in ``season``, replicated.

    The speckle is a single scene's (ENL 4.4 at 10 m, more for coarser pixels), drawn once, so
    every season and both look directions carry the same values: what the service builds from
    a two-band VV/VH file.
    """
    looks = composite_looks(1, pixel_m)
    one = speckled_db(sigma0[season, 0], looks, rng, DB_STEP)  # (2 pols, H, W)
    return np.broadcast_to(one, (4, 2, *one.shape)).reshape(16, *one.shape[1:]).copy()


def simulate_tile(
    chip: Chip, size: int, seed: int, single_date_share: float = 0.0
) -> SimulatedTile:
    """Simulate one chip's SAR composites, coherence and label.

    Args:
        chip: where and what the chip is (region, index, bounds, corner cut).
        size: S1GRD tile side in pixels (~40 m pixels at 112).
        seed: simulation seed.
        single_date_share: probability that the tile's S1GRD bands are one acquisition
            (``single_date_s1grd``) instead of seasonal composites; drawn from a stream of its
            own, so the other arrays do not depend on it.

    Returns:
        The ``SimulatedTile`` (synthetic).
    """
    params = region_params(chip.region)
    rng = tile_rng(seed, chip.region, chip.index, STREAM_PHYSICS)
    landscape = simulate_landscape(params, size, params.regional_gradient(*chip.centroid), rng)
    radar = compute_backscatter(landscape, params)

    # S1GRD: (season, direction, pol) -> bands.S1GRD_RAW_BANDS order, which is the same nesting.
    pixel_m = CHIP_SIDE_KM * 1000.0 / size
    looks = composite_looks(params.scenes_per_season, pixel_m)
    s1grd_db = speckled_db(radar.sigma0, looks, rng, DB_STEP).reshape(16, size, size)
    single_date_season = None
    acquisition = tile_rng(seed, chip.region, chip.index, STREAM_ACQUISITION)
    if acquisition.random() < single_date_share:
        single_date_season = int(acquisition.integers(4))
        s1grd_db = single_date_s1grd(radar.sigma0, single_date_season, pixel_m, acquisition)
    mask = chip.mask(size, size)
    s1grd_db[:, ~mask] = np.nan

    side = gssic_side(size)
    coarse_mask = chip.mask(side, side)
    rho_fine, tau_fine = decay_parameters(landscape, params, radar)
    gamma_fine = coherence_decay(rho_fine, tau_fine, bands.GSSIC_NC_DELTADAYS)  # (4, 4, H, W)
    gamma = area_average(gamma_fine, side)[NC_SEASON_INDEX]  # (4, 4, h, w)
    observed = estimate_coherence(gamma, rng)
    rho = area_average(rho_fine, side)[NC_SEASON_INDEX]  # (4, h, w)
    tau = np.exp(area_average(np.log(tau_fine), side))[NC_SEASON_INDEX]
    amplitude_db = 10.0 * np.log10(area_average(radar.sigma0[:, 0], side))[NC_SEASON_INDEX]
    theta = area_average(radar.incidence_local_deg[0], side)
    layover_shadow = np.where(theta < 0.0, 1, np.where(theta > 90.0, 2, 0)).astype(np.uint8)

    outside = ~coarse_mask
    for array in (observed, amplitude_db):
        array[..., outside] = np.nan
    for array in (rho, tau):
        array[:, outside] = np.nan

    codes = label_codes(landscape, chip.mask(modis_side(), modis_side()), modis_side())
    return SimulatedTile(
        chip=chip,
        s1grd_db=s1grd_db,
        coherence=observed,
        amplitude_db=amplitude_db.astype(np.float32),
        rho=rho.astype(np.float32),
        tau_days=tau.astype(np.float32),
        incidence_deg=theta.astype(np.float32),
        layover_shadow=layover_shadow,
        tree_cover_codes=codes,
        vegetation_pct=vegetation_pct_of(codes),
        land_cover=landscape.land_cover,
        tree_cover=landscape.tree_cover,
        archetype=landscape.archetype,
        single_date_season=single_date_season,
        herb_vegetation=landscape.herb_vegetation,
    )
