"""Per-region parameters of the synthetic SAR benchmark.

Every number that makes one region differ from another lives here, as frozen dataclasses: where
the region is, which kinds of tiles it holds (and so its label distribution), how patchy and hilly
its landscapes are, its soils and their seasonal moisture, its forests' Water Cloud Model
parameters and leaf-off behaviour, its urban fabric and how many scenes a seasonal composite
averages. The regions are named after the paper's areas; all data generated from them is
synthetic.

Seasons are always in ``bands.S1GRD_SEASONS`` order: winter, spring, summer, fall (northern
hemisphere months: DJF, MAM, JJA, SON, so for south_america "winter" is the wet season).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

# Land-cover classes of the simulator, as stored in the per-pixel class maps.
FOREST, HERBACEOUS, BARE, URBAN, WATER = 0, 1, 2, 3, 4
CLASS_NAMES: tuple[str, ...] = ("forest", "grass_crops", "bare_soil", "urban", "water")

Seasonal = tuple[float, float, float, float]  # winter, spring, summer, fall


@dataclass(frozen=True)
class Archetype:
    """A kind of tile (e.g. farmland, closed forest) with its land-cover mixture.

    Attributes:
        name: short label, only used in docs and debugging.
        weight: relative frequency of the archetype in the region.
        cover: mean area fractions of (forest, grass/crops, bare soil, urban, water), summing to 1.
        concentration: Dirichlet concentration around ``cover``: low values give more varied tiles.
        forest_tree_cover: mean tree-cover fraction inside forest patches of such tiles.
        herb_tree_cover: mean tree-cover fraction inside grass/crop patches (savanna trees).
        geo_tilt: how strongly the regional gradient favours the archetype (signed).
        relief_factor: terrain relief relative to the region's (forests survive where the land
            is too steep to farm).
    """

    name: str
    weight: float
    cover: tuple[float, float, float, float, float]
    concentration: float
    forest_tree_cover: float
    herb_tree_cover: float
    geo_tilt: float
    relief_factor: float = 1.0


@dataclass(frozen=True)
class WaterCloud:
    """Water Cloud Model parameters of one vegetation type (linear power units).

    ``s0 = A*V*cos(t)*(1 - g) + g*s0_soil`` with ``g = exp(-2*B*V/cos(t))``.
    """

    a_vv: float
    b_vv: float
    a_vh: float
    b_vh: float


@dataclass(frozen=True)
class Soil:
    """Bare-soil backscatter, linear in volumetric soil moisture in dB.

    ``s0_soil_db = intercept + slope * moisture + incidence_slope * (theta - 37 deg)``.
    """

    intercept_vv_db: float
    moisture_slope_vv_db: float
    intercept_vh_db: float
    moisture_slope_vh_db: float
    incidence_slope_db_per_deg: float
    roughness_sd_db: float


@dataclass(frozen=True)
class Phenology:
    """A grass / crop calendar: herbaceous vegetation descriptor V per season, and its frequency."""

    name: str
    weight: float
    vegetation: Seasonal


@dataclass(frozen=True)
class RegionParams:
    """Everything that distinguishes one simulated region.

    Attributes:
        name: region name, the ``aoi`` part of the geetiles file names.
        bbox: ``(west, south, east, north)`` in degrees where chips are placed.
        split_angle_rad: direction on which chip centroids are projected for the split bands.
        gradient_deg: compass direction (degrees, 0 = north, 90 = east) in which the regional
            gradient rises; archetypes with positive ``geo_tilt`` are commoner that way.
        archetypes: the kinds of tiles and their weights (the region's label distribution).
        patch_scale_m: correlation length of land-cover patches.
        parcel_m: (min, max) side of agricultural parcels.
        relief_m: median standard deviation of elevation within a tile.
        relief_spread: log-normal spread of relief between tiles.
        slope_forest_affinity: how much forests prefer slopes (negative: rock on slopes).
        tree_cover_sd: within-patch standard deviation of tree cover.
        deciduous_share: mean deciduous fraction of the canopy.
        leaf_off: fraction of canopy V lost by deciduous trees, per season.
        canopy_v_max: canopy V of a closed canopy in leaf.
        canopy_saturation: curvature of V against tree cover (large: V saturates early).
        forest_wcm: Water Cloud Model parameters of the region's forest type.
        herb_wcm: Water Cloud Model parameters of grass / crops.
        herb_v_max: V of the densest grass / crop stands.
        phenology: crop / grass calendars and their frequencies.
        soil: bare-soil backscatter model.
        soil_moisture: mean volumetric soil moisture (m3/m3) per season.
        soil_moisture_sd: spatial and tile-to-tile standard deviation of soil moisture.
        urban_vv_db: mean double-bounce VV backscatter of built-up pixels.
        water_vv_db: mean VV of calm open water.
        scenes_per_season: Sentinel-1 acquisitions averaged in one seasonal composite.
        rain_decorrelation: loss of interferometric coherence from rain / snow, per season (0..1).
    """

    name: str
    bbox: tuple[float, float, float, float]
    split_angle_rad: float
    gradient_deg: float
    archetypes: tuple[Archetype, ...]
    patch_scale_m: float
    parcel_m: tuple[float, float]
    relief_m: float
    relief_spread: float
    slope_forest_affinity: float
    tree_cover_sd: float
    deciduous_share: float
    leaf_off: Seasonal
    canopy_v_max: float
    canopy_saturation: float
    forest_wcm: WaterCloud
    herb_wcm: WaterCloud
    herb_v_max: float
    phenology: tuple[Phenology, ...]
    soil: Soil
    soil_moisture: Seasonal
    soil_moisture_sd: float
    urban_vv_db: float
    water_vv_db: float
    scenes_per_season: int
    rain_decorrelation: Seasonal

    def regional_gradient(self, lon: float, lat: float) -> float:
        """Position of a point along the region's gradient, about -1 (one side) to +1 (other)."""
        west, south, east, north = self.bbox
        u = 2.0 * (lon - west) / (east - west) - 1.0  # -1 west .. +1 east
        v = 2.0 * (lat - south) / (north - south) - 1.0  # -1 south .. +1 north
        angle = math.radians(self.gradient_deg)
        along = u * math.sin(angle) + v * math.cos(angle)
        # A gentle meander so that bands of equal gradient are not straight lines.
        meander = 0.25 * math.sin(3.1 * u + 1.7 * v + len(self.name))
        return float(np.clip(along / math.sqrt(2.0) + meander, -1.5, 1.5))


HERB_WCM = WaterCloud(a_vv=0.318, b_vv=0.7, a_vh=0.120, b_vh=0.55)
SOIL = Soil(
    intercept_vv_db=-19.0,
    moisture_slope_vv_db=24.0,
    intercept_vh_db=-27.5,
    moisture_slope_vh_db=24.0,
    incidence_slope_db_per_deg=-0.20,
    roughness_sd_db=1.2,
)

EUROPE = RegionParams(
    name="europe",
    bbox=(0.0, 45.0, 15.0, 52.0),
    split_angle_rad=0.35,
    gradient_deg=120.0,  # farmland in the north-west, forested uplands to the south-east
    archetypes=(
        Archetype("farmland", 0.45, (0.10, 0.79, 0.03, 0.03, 0.05), 14.0, 0.70, 0.03, -1.0),
        Archetype("mosaic", 0.30, (0.40, 0.51, 0.02, 0.03, 0.04), 10.0, 0.72, 0.05, 0.3),
        Archetype("forest", 0.20, (0.82, 0.16, 0.01, 0.005, 0.005), 20.0, 0.78, 0.08, 1.0, 2.0),
        Archetype("town", 0.05, (0.15, 0.52, 0.04, 0.25, 0.04), 8.0, 0.65, 0.05, -0.5),
    ),
    patch_scale_m=350.0,
    parcel_m=(120.0, 320.0),
    relief_m=35.0,
    relief_spread=0.8,
    slope_forest_affinity=0.8,
    tree_cover_sd=0.12,
    deciduous_share=0.70,
    leaf_off=(0.45, 0.15, 0.0, 0.20),
    canopy_v_max=1.0,
    canopy_saturation=1.2,
    forest_wcm=WaterCloud(a_vv=0.187, b_vv=0.9, a_vh=0.062, b_vh=0.8),
    herb_wcm=HERB_WCM,
    herb_v_max=0.55,
    phenology=(
        Phenology("grassland", 0.30, (0.35, 0.75, 0.60, 0.50)),
        Phenology("winter_cereal", 0.35, (0.30, 1.00, 0.25, 0.15)),
        Phenology("maize", 0.20, (0.05, 0.15, 1.00, 0.35)),
        Phenology("fallow", 0.15, (0.10, 0.15, 0.20, 0.10)),
    ),
    soil=SOIL,
    soil_moisture=(0.33, 0.27, 0.16, 0.25),
    soil_moisture_sd=0.05,
    urban_vv_db=-3.0,
    water_vv_db=-23.0,
    scenes_per_season=14,  # Sentinel-1A and 1B both acquiring: 6-day repeat
    rain_decorrelation=(0.45, 0.30, 0.15, 0.35),
)

CHINA = RegionParams(
    name="china",
    bbox=(105.0, 25.0, 120.0, 40.0),
    split_angle_rad=1.20,
    gradient_deg=150.0,  # loess and drylands in the north-west, forested hills in the south-east
    archetypes=(
        Archetype("dryland", 0.42, (0.01, 0.22, 0.75, 0.01, 0.01), 12.0, 0.45, 0.01, -1.2),
        Archetype("cropland", 0.28, (0.05, 0.79, 0.05, 0.05, 0.06), 12.0, 0.55, 0.02, 0.0),
        Archetype("hill_forest", 0.20, (0.55, 0.33, 0.10, 0.01, 0.01), 8.0, 0.62, 0.05, 1.2, 2.0),
        Archetype("city", 0.10, (0.04, 0.30, 0.12, 0.48, 0.06), 8.0, 0.50, 0.03, 0.3),
    ),
    patch_scale_m=220.0,
    parcel_m=(40.0, 110.0),
    relief_m=90.0,
    relief_spread=1.0,
    slope_forest_affinity=-0.4,
    tree_cover_sd=0.15,
    deciduous_share=0.35,
    leaf_off=(0.50, 0.15, 0.0, 0.20),
    canopy_v_max=0.95,
    canopy_saturation=0.8,
    forest_wcm=WaterCloud(a_vv=0.238, b_vv=0.7, a_vh=0.087, b_vh=0.6),
    herb_wcm=WaterCloud(a_vv=0.411, b_vv=0.7, a_vh=0.075, b_vh=0.5),
    herb_v_max=0.50,
    phenology=(
        Phenology("paddy_rice", 0.25, (0.02, 0.20, 1.00, 0.30)),
        Phenology("winter_wheat", 0.35, (0.35, 0.90, 0.15, 0.10)),
        Phenology("dry_grass", 0.25, (0.10, 0.25, 0.45, 0.25)),
        Phenology("fallow", 0.15, (0.05, 0.08, 0.12, 0.08)),
    ),
    soil=Soil(
        intercept_vv_db=-19.5,
        moisture_slope_vv_db=26.0,
        intercept_vh_db=-28.5,
        moisture_slope_vh_db=24.0,
        incidence_slope_db_per_deg=-0.22,
        roughness_sd_db=1.8,
    ),
    soil_moisture=(0.11, 0.15, 0.27, 0.19),  # monsoon summer, frozen / dry winter
    soil_moisture_sd=0.05,
    urban_vv_db=0.0,
    water_vv_db=-23.0,
    scenes_per_season=7,
    rain_decorrelation=(0.10, 0.25, 0.55, 0.25),
)

CONUS = RegionParams(
    name="conus",
    bbox=(-120.0, 33.0, -80.0, 45.0),
    split_angle_rad=0.05,
    gradient_deg=90.0,  # crops and rangeland in the interior, forests towards the east
    archetypes=(
        Archetype("forest", 0.44, (0.85, 0.11, 0.01, 0.01, 0.02), 18.0, 0.80, 0.05, 1.3, 2.0),
        Archetype("cropland", 0.44, (0.03, 0.90, 0.03, 0.01, 0.03), 18.0, 0.60, 0.01, -1.3),
        Archetype("suburb", 0.12, (0.30, 0.42, 0.03, 0.22, 0.03), 8.0, 0.70, 0.06, 0.3),
    ),
    patch_scale_m=700.0,
    parcel_m=(350.0, 800.0),
    relief_m=45.0,
    relief_spread=0.9,
    slope_forest_affinity=1.0,
    tree_cover_sd=0.10,
    deciduous_share=0.50,
    leaf_off=(0.55, 0.20, 0.0, 0.25),
    canopy_v_max=1.1,
    canopy_saturation=1.8,
    forest_wcm=WaterCloud(a_vv=0.151, b_vv=1.1, a_vh=0.055, b_vh=0.9),
    herb_wcm=WaterCloud(a_vv=0.355, b_vv=0.7, a_vh=0.081, b_vh=0.55),
    herb_v_max=0.65,
    phenology=(
        Phenology("corn", 0.35, (0.02, 0.10, 1.00, 0.30)),
        Phenology("soybean", 0.30, (0.02, 0.05, 0.85, 0.45)),
        Phenology("winter_wheat", 0.15, (0.25, 0.90, 0.15, 0.10)),
        Phenology("rangeland", 0.20, (0.15, 0.35, 0.30, 0.20)),
    ),
    soil=Soil(
        intercept_vv_db=-18.5,
        moisture_slope_vv_db=23.0,
        intercept_vh_db=-27.0,
        moisture_slope_vh_db=23.0,
        incidence_slope_db_per_deg=-0.20,
        roughness_sd_db=1.0,
    ),
    soil_moisture=(0.22, 0.28, 0.18, 0.17),
    soil_moisture_sd=0.05,
    urban_vv_db=-4.0,
    water_vv_db=-23.5,
    scenes_per_season=7,
    rain_decorrelation=(0.45, 0.35, 0.25, 0.20),  # snow in winter
)

SOUTH_AMERICA = RegionParams(
    name="south_america",
    bbox=(-70.0, -15.0, -45.0, 5.0),
    split_angle_rad=2.10,
    gradient_deg=315.0,  # Amazon rainforest to the north-west, Cerrado savanna to the south-east
    archetypes=(
        Archetype("rainforest", 0.55, (0.93, 0.04, 0.0, 0.0, 0.03), 30.0, 0.92, 0.20, 1.4),
        Archetype("savanna", 0.30, (0.30, 0.66, 0.01, 0.0, 0.03), 8.0, 0.75, 0.22, -1.0),
        Archetype("pasture", 0.15, (0.22, 0.75, 0.01, 0.01, 0.01), 8.0, 0.85, 0.06, -0.3),
    ),
    patch_scale_m=1200.0,
    parcel_m=(500.0, 1400.0),
    relief_m=20.0,
    relief_spread=0.7,
    slope_forest_affinity=0.3,
    tree_cover_sd=0.07,
    deciduous_share=0.12,
    leaf_off=(0.0, 0.10, 0.35, 0.15),  # dry-season leaf shedding, weak
    canopy_v_max=1.40,
    canopy_saturation=4.0,  # dense canopies saturate C-band early
    forest_wcm=WaterCloud(a_vv=0.115, b_vv=1.4, a_vh=0.038, b_vh=1.2),
    herb_wcm=WaterCloud(a_vv=0.392, b_vv=0.65, a_vh=0.078, b_vh=0.5),
    herb_v_max=0.70,
    phenology=(
        Phenology("wet_savanna_grass", 0.50, (0.90, 0.75, 0.30, 0.45)),
        Phenology("pasture", 0.40, (0.70, 0.65, 0.35, 0.45)),
        Phenology("soy", 0.10, (0.95, 0.40, 0.05, 0.20)),
    ),
    soil=Soil(
        intercept_vv_db=-18.0,
        moisture_slope_vv_db=22.0,
        intercept_vh_db=-26.5,
        moisture_slope_vh_db=23.0,
        incidence_slope_db_per_deg=-0.18,
        roughness_sd_db=1.0,
    ),
    soil_moisture=(0.40, 0.35, 0.19, 0.26),  # wet season DJF, dry season JJA
    soil_moisture_sd=0.05,
    urban_vv_db=-5.0,
    water_vv_db=-22.5,
    scenes_per_season=7,
    rain_decorrelation=(0.60, 0.45, 0.10, 0.30),
)

REGIONS: dict[str, RegionParams] = {
    params.name: params for params in (EUROPE, CHINA, CONUS, SOUTH_AMERICA)
}


def region_params(name: str) -> RegionParams:
    """Return the parameters of a simulated region.

    Raises:
        ValueError: for an unknown region name (the message lists the known ones).
    """
    try:
        return REGIONS[name]
    except KeyError:
        raise ValueError(f"unknown region {name!r}: expected one of {', '.join(REGIONS)}") from None


def region_code(name: str) -> int:
    """A stable integer for a region name, used to seed its random streams."""
    return zlib.crc32(name.encode("utf-8"))
