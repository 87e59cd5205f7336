"""MODIS VCF (MOD44B) tree-cover labels: one tile's mean vegetation percentage."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from sarveg import bands
from sarveg.errors import TileError

DEFAULT_LABEL_YEAR = 2020


def label_band_name(year: int) -> str:
    """Band description of MOD44B tree cover for ``year``."""
    return f"Percent_Tree_Cover_{year}"


def vegetation_pct_from_codes(codes: np.ndarray) -> float:
    """Mean tree cover of MODIS VCF codes: 0..100 percent, 200 water = 0 %, others nodata.

    Returns NaN when no pixel is valid.
    """
    codes = np.asarray(codes)
    percent = np.where(codes == bands.MODIS_WATER, 0, codes).astype(np.float64)
    valid = (codes <= 100) | (codes == bands.MODIS_WATER)
    return float(percent[valid].mean()) if valid.any() else float("nan")


def read_label(path: str | Path, year: int = DEFAULT_LABEL_YEAR) -> float:
    """Read a MODIS VCF chip and return its mean ``vegetation_pct`` (0..100, NaN if all fill).

    The band is chosen by its description ``Percent_Tree_Cover_{year}``; a single-band raster
    without descriptions is taken as that band.

    Raises:
        TileError: the file is unreadable or has no band for ``year``.

    """
    wanted = label_band_name(year)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                names = [d or "" for d in dataset.descriptions]
                if wanted in names:
                    index = names.index(wanted) + 1
                elif dataset.count == 1 and not any(names):
                    index = 1
                else:
                    raise TileError(
                        f"{Path(path).name}: expected a MODIS band named {wanted}, found "
                        f"{', '.join(n or '<none>' for n in names)}"
                    )
                codes = dataset.read(index)
    except RasterioError:
        raise TileError(
            f"{Path(path).name}: expected a readable MODIS VCF GeoTIFF, found corrupt data"
        ) from None
    return vegetation_pct_from_codes(codes)
