"""The physically grounded SAR simulator behind ``sarveg simulate``.

Everything it produces is synthetic. ``simulate_tile`` gives one chip's arrays in memory (with the
per-pixel land-cover map that the files do not carry); ``simulate_dataset`` writes whole regions
in the geetiles layout.
"""

from sarveg.simulate.chips import Chip, make_chips
from sarveg.simulate.layout import SimulationSummary, simulate_dataset
from sarveg.simulate.regions import CLASS_NAMES, REGIONS, RegionParams, region_params
from sarveg.simulate.tile import SimulatedTile, simulate_tile

__all__ = [
    "CLASS_NAMES",
    "REGIONS",
    "Chip",
    "RegionParams",
    "SimulatedTile",
    "SimulationSummary",
    "make_chips",
    "region_params",
    "simulate_dataset",
    "simulate_tile",
]
