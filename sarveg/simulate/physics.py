"""C-band radar physics of the simulator: Water Cloud Model, speckle and coherence decay.

Backscatter, per pixel, season, look direction and polarisation, in linear
power::

    s0 = A*V*cos(t)*(1 - g) + g*s0_soil,   g = exp(-2*B*V/cos(t))

``V`` is a vegetation descriptor: the canopy term grows with tree cover and saturates (how early
is region-specific), deciduous trees lose part of it in leaf-off seasons, and grass / crops add
their own seasonal term. ``A`` and ``B`` are mixed between the region's forest type and
herbaceous vegetation by their share of ``V``. ``s0_soil`` is linear in soil moisture in dB and
falls with the local incidence angle ``t`` (ellipsoid angle minus the terrain slope towards the
radar). Built-up pixels add a double-bounce term; calm water is a specular, very dark surface.
Sigma0 is ellipsoid-normalised as in GRD products, so slopes facing the radar are brighter.

Speckle: a seasonal composite of ``n`` scenes of ENL ``L`` is intensity times
Gamma(shape L*n, scale 1/(L*n)), converted to dB after averaging. ``L`` is 4.4 at the GRD's
10 m pixels and grows with the number of resolution cells a coarser tile pixel averages.

Coherence: ``gamma(t) = (1 - rho) * exp(-t / tau) + rho``. A resolution cell mixes the returns
of tree crowns and of the gaps between them in proportion to their footprint: crowns (in leaf)
decorrelate as a vegetation volume; in the gaps, ground and grass / crops are mixed by the
herbaceous volume's share of the gap backscatter. So a savanna with a fifth of its area under
trees keeps most of its open-ground coherence, while a closed canopy loses it. Rain and snow
shorten both; the estimate from a finite number of looks adds its bias and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from sarveg.simulate.landscape import Landscape
from sarveg.simulate.regions import BARE, URBAN, WATER, RegionParams

ENL_PER_SCENE = 4.4  # Sentinel-1 IW GRDH equivalent number of looks, at its 10 m pixels
# A GRDH resolution cell is ~20 m x 22 m: a coarser pixel averages this many independent cells,
# so a 40 m pixel (112 px per 4.5 km chip) has ~3.7 times the ENL of the 10 m product.
GRD_RESOLUTION_CELL_M2 = 20.0 * 22.0
LN10 = float(np.log(10.0))
SPECKLE_LEVELS, SPECKLE_SAMPLES_PER_LEVEL, SPECKLE_TABLE_SEED = 4096, 256, 20230605
REFERENCE_INCIDENCE_DEG = 37.0
# Look azimuths (degrees from north) of a right-looking SAR: ascending passes head ~-12 deg and
# look east, descending passes head ~192 deg and look west.
LOOK_AZIMUTH_DEG = (78.0, 282.0)
NOISE_FLOOR_DB = -27.0  # residual thermal noise after GRD noise removal
URBAN_VH_OFFSET_DB = -9.0
WATER_VH_OFFSET_DB = -8.0
WATER_INCIDENCE_SLOPE_DB_PER_DEG = -0.45
# Coherence decay of the ground per class (rho, tau in days); vegetation volume decorrelates fast.
GROUND_RHO = {"soil": 0.30, "bare": 0.45, "urban": 0.60, "water": 0.0}
GROUND_TAU_DAYS = {"soil": 14.0, "bare": 25.0, "urban": 80.0, "water": 0.5}
VOLUME_RHO, VOLUME_TAU_DAYS = 0.05, 4.0
COHERENCE_LOOKS = 50


@dataclass(frozen=True)
class Backscatter:
    """Speckle-free sigma0 and what coherence needs from it.

    Attributes:
        sigma0: ``(4 seasons, 2 directions, 2 pols, H, W)`` linear power, directions
            (asc, des), pols (vv, vh).
        volume_fraction: ``(4, H, W)`` share of ascending VV power scattered by vegetation volume.
        herb_volume_fraction: ``(4, H, W)`` the same share for the gaps between tree crowns,
            where only grass / crops stand over the soil.
        incidence_local_deg: ``(2, H, W)`` local incidence angle for (asc, des).
    """

    sigma0: np.ndarray
    volume_fraction: np.ndarray
    herb_volume_fraction: np.ndarray
    incidence_local_deg: np.ndarray


def local_incidence_deg(landscape: Landscape) -> np.ndarray:
    """``(2, H, W)`` local incidence angle for the ascending and descending look directions."""
    out = []
    for direction, azimuth in enumerate(LOOK_AZIMUTH_DEG):
        az = np.radians(azimuth)
        # Terrain rising along the look direction faces the radar and lowers the local angle.
        towards = landscape.slope_x * np.sin(az) + landscape.slope_y * np.cos(az)
        theta = landscape.incidence_deg[direction] - np.degrees(np.arctan(towards))
        out.append(theta)
    return np.stack(out).astype(np.float32)


def canopy_vegetation(params: RegionParams, tree_cover: np.ndarray) -> np.ndarray:
    """In-leaf canopy descriptor V from tree cover, saturating at a region-specific rate."""
    k = params.canopy_saturation
    return (params.canopy_v_max * (1.0 - np.exp(-k * tree_cover)) / (1.0 - np.exp(-k))).astype(
        np.float32
    )


def db_to_power(db: np.ndarray | float) -> np.ndarray:
    """Decibels to linear power (float32)."""
    return np.exp(np.asarray(db, dtype=np.float32) * np.float32(LN10 / 10.0))


def compute_backscatter(landscape: Landscape, params: RegionParams) -> Backscatter:
    """Speckle-free sigma0 of every season, look direction and polarisation.

    Args:
        landscape: the tile's physical state.
        params: the region (WCM, soil, urban and water parameters).

    Returns:
        The tile's ``Backscatter``.
    """
    lc = landscape.land_cover
    theta_loc = local_incidence_deg(landscape)  # (2, H, W)
    theta_used = np.radians(np.clip(theta_loc, 12.0, 80.0))  # (2, H, W)
    cos_t = np.cos(theta_used)[None, :, None]  # (1, 2, 1, H, W)
    is_water = lc == WATER
    # Ellipsoid-normalised sigma0 over tilted terrain: illuminated-area factor (water is level).
    area = np.sin(np.radians(landscape.incidence_deg))[:, None, None] / np.sin(theta_used)
    area[:, is_water] = 1.0

    v_canopy = canopy_vegetation(params, landscape.tree_cover)[None] * leaf_state(
        landscape, params
    )  # (4, H, W)
    v_herb = landscape.herb_vegetation * (1.0 - landscape.tree_cover)[None]  # (4, H, W)
    v = v_canopy + v_herb + np.float32(1e-4)  # (4, H, W)
    w_tree = v_canopy / v  # (4, H, W) share of V from trees
    f, h = params.forest_wcm, params.herb_wcm
    # A and B mixed between forest and herbaceous vegetation: (4, 1, 2, H, W), pols (vv, vh).
    a = np.stack([h.a_vv + (f.a_vv - h.a_vv) * w_tree, h.a_vh + (f.a_vh - h.a_vh) * w_tree], 1)
    b = np.stack([h.b_vv + (f.b_vv - h.b_vv) * w_tree, h.b_vh + (f.b_vh - h.b_vh) * w_tree], 1)
    a, b = a[:, None], b[:, None]
    v5 = v[:, None, None]  # (4, 1, 1, H, W)

    soil = params.soil
    moisture = landscape.soil_moisture[:, None]  # (4, 1, H, W)
    soil_pol_db = np.stack(
        [
            soil.intercept_vv_db + soil.moisture_slope_vv_db * moisture[:, 0],
            soil.intercept_vh_db + soil.moisture_slope_vh_db * moisture[:, 0],
        ],
        axis=1,
    )  # (4, 2 pols, H, W)
    soil_geom_db = (
        soil.incidence_slope_db_per_deg * (np.degrees(theta_used) - REFERENCE_INCIDENCE_DEG)
        + landscape.roughness_db
    )  # (2 dirs, H, W)
    soil_power = db_to_power(soil_pol_db[:, None] + soil_geom_db[None, :, None])  # (4, 2, 2, H, W)

    g = np.exp((-2.0 * b * v5) / cos_t)  # (4, 2, 2, H, W) two-way canopy transmissivity
    volume = a * v5 * cos_t * (1.0 - g)
    sigma0 = volume + g * soil_power

    is_urban = lc == URBAN
    if is_urban.any():
        urban_db = landscape.urban_vv_db  # (2 dirs, H, W)
        double_bounce = np.stack([urban_db, urban_db + URBAN_VH_OFFSET_DB], axis=1)
        sigma0 += db_to_power(double_bounce)[None] * is_urban  # (4, 2, 2, H, W)
    if is_water.any():
        water_vv_db = (
            params.water_vv_db
            + landscape.water_roughness_db[:, None, None, None]
            + WATER_INCIDENCE_SLOPE_DB_PER_DEG
            * (landscape.incidence_deg - REFERENCE_INCIDENCE_DEG)[None, :, None, None]
        )  # (4, 2, 1, 1)
        water = np.stack([water_vv_db, water_vv_db + WATER_VH_OFFSET_DB], axis=2)  # (4, 2, 2, 1, 1)
        sigma0 = np.where(is_water, db_to_power(water), sigma0)

    sigma0 *= area[None, :, None]
    sigma0 += db_to_power(NOISE_FLOOR_DB)
    volume_fraction = np.where(is_water, 0.0, volume[:, 0, 0] / sigma0[:, 0, 0])  # (4, H, W)
    # Gaps between crowns: the herbaceous layer alone over the soil (ascending VV).
    v_gap = landscape.herb_vegetation  # (4, H, W)
    cos_asc = cos_t[0, 0, 0]  # (H, W)
    g_gap = np.exp((-2.0 * h.b_vv * v_gap) / cos_asc)
    volume_gap = h.a_vv * v_gap * cos_asc * (1.0 - g_gap)
    gap_power = volume_gap + g_gap * soil_power[:, 0, 0] + db_to_power(NOISE_FLOOR_DB)
    herb_volume_fraction = np.where(is_water | is_urban, 0.0, volume_gap / gap_power)
    return Backscatter(
        sigma0=sigma0.astype(np.float32, copy=False),
        volume_fraction=volume_fraction.astype(np.float32),
        herb_volume_fraction=herb_volume_fraction.astype(np.float32),
        incidence_local_deg=theta_loc,
    )


def composite_looks(scenes: int, pixel_m: float) -> float:
    """Equivalent number of looks of a seasonal composite of ``scenes`` scenes at ``pixel_m``.

    ``L * n`` with ``L`` the single-scene ENL at the tile's pixel size: 4.4 at the 10 m GRD
    pixels, times the number of independent resolution cells a coarser pixel averages.
    """
    spatial = max(1.0, pixel_m**2 / GRD_RESOLUTION_CELL_M2)
    return ENL_PER_SCENE * spatial * scenes


@cache
def speckle_table_db(looks: float) -> np.ndarray:
    """Gamma(``looks``, 1 / ``looks``) speckle in dB at ``SPECKLE_LEVELS`` equiprobable levels.

    Each level is the mean of one quantile bin of a large fixed-seed Gamma sample, so drawing a
    level uniformly is drawing from the Gamma distribution (to a resolution far below the stored
    dB step) at a fraction of the cost of sampling it afresh for every pixel.
    """
    rng = np.random.default_rng(SPECKLE_TABLE_SEED)
    sample = rng.standard_gamma(looks, SPECKLE_LEVELS * SPECKLE_SAMPLES_PER_LEVEL) / looks
    levels = np.sort(sample).reshape(SPECKLE_LEVELS, -1).mean(axis=1)  # (levels,) mean 1
    return (10.0 * np.log10(levels)).astype(np.float32)


def speckled_db(
    sigma0: np.ndarray, looks: float, rng: np.random.Generator, step_db: float
) -> np.ndarray:
    """Composite in dB: intensity times Gamma(shape ``looks``, scale 1 / ``looks``) speckle.

    Args:
        sigma0: linear power, any shape.
        looks: equivalent number of looks of the composite (``composite_looks``).
        rng: random generator.
        step_db: quantisation step of the returned dB values.

    Returns:
        float32 dB, same shape, rounded to multiples of ``step_db``.
    """
    level = rng.integers(0, SPECKLE_LEVELS, size=sigma0.shape, dtype=np.uint16)
    db = np.log(sigma0) * np.float32(10.0 / LN10) + speckle_table_db(looks)[level]
    return (np.round(db * np.float32(1.0 / step_db)) * np.float32(step_db)).astype(np.float32)


def leaf_state(landscape: Landscape, params: RegionParams) -> np.ndarray:
    """``(4, H, W)`` share of the in-leaf canopy left per season (deciduous leaf-off)."""
    leaf_off = np.asarray(params.leaf_off, np.float32)[:, None, None]
    return 1.0 - landscape.deciduous[None] * leaf_off


def decay_parameters(
    landscape: Landscape, params: RegionParams, radar: Backscatter
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel coherence decay parameters ``rho`` and ``tau`` (days), ``(4, H, W)`` each."""
    lc = landscape.land_cover
    rho_g = np.full(lc.shape, GROUND_RHO["soil"], np.float32)
    tau_g = np.full(lc.shape, GROUND_TAU_DAYS["soil"], np.float32)
    for code, key in ((BARE, "bare"), (URBAN, "urban"), (WATER, "water")):
        rho_g[lc == code] = GROUND_RHO[key]
        tau_g[lc == code] = GROUND_TAU_DAYS[key]
    # Wetter soil decorrelates faster (moisture changes between acquisitions).
    wet = np.clip((landscape.soil_moisture - 0.15) / 0.3, 0.0, 1.0)  # (4, H, W)
    rho_g = rho_g[None] * (1.0 - 0.3 * wet)
    tau_g = tau_g[None] * (1.0 - 0.4 * wet)
    rain = np.asarray(params.rain_decorrelation, np.float32)[:, None, None]  # (4, 1, 1)
    fh = radar.herb_volume_fraction  # (4, H, W) in the gaps
    crowns = landscape.tree_cover[None] * leaf_state(landscape, params)  # (4, H, W) footprint
    rho_gap = (1.0 - fh) * rho_g + fh * VOLUME_RHO
    log_tau_gap = (1.0 - fh) * np.log(tau_g) + fh * np.log(VOLUME_TAU_DAYS)
    rho = ((1.0 - crowns) * rho_gap + crowns * VOLUME_RHO) * (1.0 - rain)
    log_tau = (1.0 - crowns) * log_tau_gap + crowns * np.log(VOLUME_TAU_DAYS)
    tau = np.exp(log_tau) * (1.0 - 0.6 * rain)
    return rho.astype(np.float32), np.maximum(tau, 0.3).astype(np.float32)


def coherence_decay(rho: np.ndarray, tau: np.ndarray, days: tuple[int, ...]) -> np.ndarray:
    """``gamma(t) = (1 - rho) exp(-t / tau) + rho`` for each ``t`` in ``days``.

    Args:
        rho: long-term coherence, ``(S, ...)``.
        tau: decay time in days, same shape.
        days: temporal baselines.

    Returns:
        ``(S, len(days), ...)`` coherence.
    """
    t = np.asarray(days, np.float32).reshape((1, -1) + (1,) * (rho.ndim - 1))
    return (1.0 - rho[:, None]) * np.exp(-t / tau[:, None]) + rho[:, None]


def estimate_coherence(
    gamma: np.ndarray, rng: np.random.Generator, looks: int = COHERENCE_LOOKS
) -> np.ndarray:
    """Coherence magnitude as estimated from ``looks`` samples: biased upwards and noisy."""
    sigma = np.sqrt((1.0 - gamma**2) / (2.0 * looks))
    re = gamma + sigma * rng.standard_normal(gamma.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(gamma.shape, dtype=np.float32)
    return np.clip(np.hypot(re, im), 0.0, 1.0).astype(np.float32)
