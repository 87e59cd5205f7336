"""Band names and model channel order: the one place that defines them.

Every reader, the simulator, training and serving take channel order from here, so a bundle's
``band_names`` always match what ``read_tile`` produces.
"""

from __future__ import annotations

from typing import Literal

Modality = Literal["s1grd", "gssic"]
MODALITIES: tuple[Modality, ...] = ("s1grd", "gssic")

# geetiles S1GRD seasonal composites, in the order the simulator writes them.
S1GRD_SEASONS: tuple[str, ...] = ("winter", "spring", "summer", "fall")
S1GRD_POLS: tuple[str, ...] = ("vv", "vh")
S1GRD_DIRECTIONS: tuple[str, ...] = ("asc", "des")
S1GRD_RAW_BANDS: tuple[str, ...] = tuple(
    f"{season}_{pol}{direction}"
    for season in S1GRD_SEASONS
    for direction in S1GRD_DIRECTIONS
    for pol in S1GRD_POLS
)  # 16 bands: winter_vvasc, winter_vhasc, winter_vvdes, winter_vhdes, spring_vvasc, ...

# The 12 S1GRD model channels, derived from the ascending bands: vv x4 seasons, vh x4, vv-vh x4.
S1GRD_CHANNELS: tuple[str, ...] = (
    tuple(f"{season}_vvasc" for season in S1GRD_SEASONS)
    + tuple(f"{season}_vhasc" for season in S1GRD_SEASONS)
    + tuple(f"{season}_vvmvhasc" for season in S1GRD_SEASONS)
)

# sartiles GSSIC NetCDF: coherence(season, deltadays, y, x), seasons in this order.
GSSIC_NC_SEASONS: tuple[str, ...] = ("summer", "fall", "winter", "spring")
GSSIC_NC_DELTADAYS: tuple[int, ...] = (12, 24, 36, 48)
# The 8 GSSIC model channels: coherence at 12 and 24 days x 4 seasons (seasons in S1GRD order).
GSSIC_DELTADAYS_USED: tuple[int, ...] = (12, 24)
GSSIC_CHANNELS: tuple[str, ...] = tuple(
    f"{season}_coh{days}" for days in GSSIC_DELTADAYS_USED for season in S1GRD_SEASONS
)

CHANNELS: dict[str, tuple[str, ...]] = {"s1grd": S1GRD_CHANNELS, "gssic": GSSIC_CHANNELS}
UNITS: dict[str, str] = {"s1grd": "dB", "gssic": "coherence (0..1)"}

# MODIS VCF (MOD44B) codes.
MODIS_WATER = 200
MODIS_FILL = 253
