"""sarveg core: reading SAR tiles, indexing datasets, the simulator, bundles and OOD maths.

Depends on numpy, rasterio and pydantic only; never on torch or bentoml.
"""

from sarveg.errors import TileError
from sarveg.tiles import Tile, read_tile

__all__ = ["Tile", "TileError", "read_tile", "__version__"]
__version__ = "0.1.0"
