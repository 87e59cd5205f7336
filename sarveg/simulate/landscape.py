"""The physical state of one simulated tile: land cover, trees, crops, soil and terrain.

``simulate_landscape`` draws, for one chip, the per-pixel fields the radar physics needs: a
land-cover class map with region-specific patch scales, tree-cover fraction,
deciduous share, herbaceous vegetation per season (crop calendars per agricultural parcel),
soil moisture per season, surface roughness, terrain elevation / slope / aspect, and the urban
double-bounce strength. Nothing here knows about radar; ``physics`` turns it into backscatter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarveg.simulate.chips import CHIP_SIDE_KM
from sarveg.simulate.fields import assign_by_quantile, gaussian_fields, parcel_grid
from sarveg.simulate.regions import (
    BARE,
    FOREST,
    HERBACEOUS,
    URBAN,
    WATER,
    Archetype,
    RegionParams,
)

PARCEL_TABLE = 1021  # prime: parcel ids index random tables modulo this length
N_SEASONS = 4


@dataclass(frozen=True)
class Landscape:
    """Per-pixel state of one tile on its S1GRD grid (all arrays ``(H, W)`` unless noted).

    Attributes:
        land_cover: uint8 class codes (``regions.FOREST`` ... ``regions.WATER``).
        tree_cover: tree-cover fraction 0..1.
        deciduous: deciduous share of the canopy 0..1.
        herb_vegetation: ``(4, H, W)`` herbaceous vegetation descriptor V per season.
        soil_moisture: ``(4, H, W)`` volumetric soil moisture (m3/m3) per season.
        roughness_db: soil-roughness offset of bare-soil backscatter (dB).
        slope_x: terrain gradient dz/dx (eastward, m/m).
        slope_y: terrain gradient dz/dy (northward, m/m).
        urban_vv_db: ``(2, H, W)`` double-bounce VV strength for the ascending and descending
            look directions (building orientation makes them differ), NaN-free.
        water_roughness_db: ``(4,)`` wind roughening of water per season (dB).
        incidence_deg: ``(2,)`` ellipsoid incidence angle at the tile for ascending, descending.
        archetype: the tile's archetype name.
    """

    land_cover: np.ndarray
    tree_cover: np.ndarray
    deciduous: np.ndarray
    herb_vegetation: np.ndarray
    soil_moisture: np.ndarray
    roughness_db: np.ndarray
    slope_x: np.ndarray
    slope_y: np.ndarray
    urban_vv_db: np.ndarray
    water_roughness_db: np.ndarray
    incidence_deg: np.ndarray
    archetype: str


def choose_archetype(params: RegionParams, gradient: float, rng: np.random.Generator) -> Archetype:
    """Pick a tile archetype; the regional gradient tilts the region's base weights."""
    weights = np.array([a.weight * np.exp(a.geo_tilt * gradient) for a in params.archetypes])
    return params.archetypes[int(rng.choice(len(weights), p=weights / weights.sum()))]


def simulate_landscape(
    params: RegionParams, size: int, gradient: float, rng: np.random.Generator
) -> Landscape:
    """Draw the physical state of one tile.

    Args:
        params: the region.
        size: tile side in pixels (the chip is ``CHIP_SIDE_KM`` wide whatever the size, so
            patch scales in metres are converted to pixels here).
        gradient: the chip's position on the regional gradient (``RegionParams.regional_gradient``).
        rng: the tile's random generator.

    Returns:
        The tile's ``Landscape``.
    """
    pixel_m = CHIP_SIDE_KM * 1000.0 / size
    archetype = choose_archetype(params, gradient, rng)
    cover = rng.dirichlet(np.asarray(archetype.cover) * archetype.concentration + 1e-3)

    patch_px = params.patch_scale_m * np.exp(rng.normal(0.0, 0.3)) / pixel_m
    # Field order: hills, hillocks, forest, water, urban, bare, canopy, deciduous, moisture,
    # roughness.
    scales = np.array([0.0, 0.0, 1.0, 1.4, 0.45, 0.8, 0.25, 1.5, 2.0, 0.35]) * patch_px
    scales[0] = max(6.0 * patch_px, 1200.0 / pixel_m)
    scales[1] = 300.0 / pixel_m
    fields = gaussian_fields(rng, size, scales)  # (10, H, W)
    hills, hillocks, f_forest, f_water, f_urban, f_bare, f_canopy, f_dec, f_moist, f_rough = fields
    elevation_n = (hills + 0.3 * hillocks) / np.float32(np.hypot(1.0, 0.3))

    relief_m = (
        archetype.relief_factor * params.relief_m * np.exp(rng.normal(0.0, params.relief_spread))
    )
    elevation_m = elevation_n * relief_m
    slope_y, slope_x = np.gradient(elevation_m, pixel_m)  # rows run south: dz/drow = -dz/dy
    slope_y = -slope_y
    steepness = np.hypot(slope_x, slope_y)
    steep_n = (steepness - steepness.mean()) / max(float(steepness.std()), 1e-6)

    scores = np.stack(
        [
            f_water - 0.8 * elevation_n,  # water in the lowest ground
            f_urban - 0.3 * steep_n,  # towns on flat land
            f_forest + params.slope_forest_affinity * steep_n,
            f_bare - params.slope_forest_affinity * 0.5 * steep_n,
        ]
    )  # (4, H, W)
    land_cover = assign_by_quantile(
        cover[[WATER, URBAN, FOREST, BARE]],
        scores,
        default=HERBACEOUS,
        valid=np.array([WATER, URBAN, FOREST, BARE]),
    )

    forest_mean = float(np.clip(archetype.forest_tree_cover + rng.normal(0.0, 0.06), 0.35, 0.97))
    tree_cover = np.zeros((size, size), dtype=np.float32)
    is_forest = land_cover == FOREST
    is_herb = land_cover == HERBACEOUS
    tree_cover[is_forest] = forest_mean + params.tree_cover_sd * f_canopy[is_forest]
    tree_cover[is_herb] = archetype.herb_tree_cover * np.exp(0.6 * f_canopy[is_herb] - 0.18)
    tree_cover[land_cover == URBAN] = 0.06
    tree_cover = np.clip(tree_cover, 0.0, 1.0)

    deciduous = np.clip(params.deciduous_share + 0.2 * f_dec, 0.0, 1.0).astype(np.float32)

    # Agricultural parcels: each gets a crop calendar, a vigour and its own roughness / moisture.
    parcel_px = rng.uniform(*params.parcel_m) / pixel_m
    parcels = (
        parcel_grid(
            size, max(parcel_px, 1.0), rng.uniform(0.0, np.pi / 2), tuple(rng.uniform(0, 1, 2))
        )
        % PARCEL_TABLE
    )  # (H, W)
    calendars = np.array([p.vegetation for p in params.phenology], dtype=np.float32)  # (P, 4)
    probs = np.array([p.weight for p in params.phenology])
    crop_of_parcel = rng.choice(len(probs), size=PARCEL_TABLE, p=probs / probs.sum())
    vigour = rng.uniform(0.6, 1.15, size=PARCEL_TABLE).astype(np.float32)
    parcel_rough = rng.normal(0.0, params.soil.roughness_sd_db, PARCEL_TABLE).astype(np.float32)
    parcel_moist = rng.normal(0.0, 0.3 * params.soil_moisture_sd, PARCEL_TABLE).astype(np.float32)
    per_parcel_v = calendars[crop_of_parcel] * vigour[:, None] * params.herb_v_max  # (T, 4)
    herb_v = np.moveaxis(per_parcel_v[parcels], -1, 0)  # (4, H, W)
    # Under forest and in towns there is only a thin herbaceous layer; none on rock or water.
    understory = np.where(is_forest, 0.25, np.where(is_herb, 1.0, 0.0)).astype(np.float32)
    urban_lawn = np.float32(0.15 * params.herb_v_max) * (land_cover == URBAN)
    herb_v = herb_v * understory + urban_lawn

    wet_anomaly = rng.normal(0.0, params.soil_moisture_sd, N_SEASONS)  # (4,)
    spatial_moisture = params.soil_moisture_sd * (0.8 * f_moist - 0.4 * elevation_n)
    on_parcels = np.where(is_herb, parcel_moist[parcels], 0.0)
    soil_moisture = np.clip(
        np.asarray(params.soil_moisture)[:, None, None]
        + wet_anomaly[:, None, None]
        + (spatial_moisture + on_parcels)[None],
        0.03,
        0.50,
    ).astype(np.float32)  # (4, H, W)

    roughness_db = 0.5 * params.soil.roughness_sd_db * f_rough + np.where(
        is_herb, parcel_rough[parcels], 0.0
    )
    roughness_db = np.where(land_cover == BARE, roughness_db + rng.normal(0.0, 1.0), roughness_db)

    # Urban blocks (~120 m): orientation relative to the two look directions sets double bounce.
    block_px = max(120.0 / pixel_m, 1.0)
    blocks = parcel_grid(size, block_px, rng.uniform(0, np.pi / 2), (0.0, 0.0)) % PARCEL_TABLE
    density_db = rng.normal(0.0, 2.5, PARCEL_TABLE)
    facing = rng.uniform(0.0, 1.0, (2, PARCEL_TABLE))
    urban_level = params.urban_vv_db + rng.normal(0.0, 1.5)
    urban_vv_db = (urban_level + density_db[blocks] + 6.0 * (facing[:, blocks] - 0.5)).astype(
        np.float32
    )  # (2, H, W)

    return Landscape(
        land_cover=land_cover,
        tree_cover=tree_cover.astype(np.float32),
        deciduous=deciduous,
        herb_vegetation=herb_v.astype(np.float32),
        soil_moisture=soil_moisture,
        roughness_db=roughness_db.astype(np.float32),
        slope_x=slope_x.astype(np.float32),
        slope_y=slope_y.astype(np.float32),
        urban_vv_db=urban_vv_db,
        water_roughness_db=rng.uniform(0.0, 4.0, N_SEASONS).astype(np.float32),
        incidence_deg=rng.uniform(30.5, 45.5, 2).astype(np.float32),
        archetype=archetype.name,
    )
