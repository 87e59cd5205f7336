"""Single-date VV/VH tiles as users have them: a two-band GeoTIFF in dB, linear power or amplitude.

Earth Engine exports, BigEarthNet and most flood and crop datasets store one Sentinel-1
acquisition as bands named ``VV`` and ``VH`` (sometimes with ``angle``, ignored here). The
model was trained on seasonal composites (12 channels: VV, VH and VV - VH in dB for four
seasons), so a single acquisition is converted to dB and *replicated* into the four seasons;
the answer's ``input`` block says so.

Units are detected from the values unless declared: dB when the VV median is negative (power
and amplitude are never negative); otherwise linear power and amplitude are told apart by how
plausible each reading makes the VV median and the VV - VH difference of real C-band
backscatter (VV about -12 dB, VV - VH about 6 dB over land), and a file that fits both or
neither is refused with a request to declare ``units``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sarveg.errors import TileError

DUAL_POL_NAMES: tuple[str, ...] = ("vv", "vh")
IGNORED_NAMES = frozenset({"angle", ""})
UNITS: tuple[str, ...] = ("db", "power", "amplitude")
# dB per decade of the stored value: 10 log10 for power, 20 log10 for amplitude.
DB_FACTOR = {"power": 10.0, "amplitude": 20.0}
# Typical C-band values over land, and the spread that still counts as plausible.
TYPICAL_VV_DB, VV_SPREAD_DB = -12.0, 6.0
TYPICAL_DIFF_DB, DIFF_SPREAD_DB = 6.0, 2.0
# A reading must be this much more plausible than the other to be chosen.
UNITS_MARGIN = 1.0
IMPLAUSIBLE = 3.0
DATE_PATTERN = re.compile(r"(?<!\d)(20\d{2})-?(\d{2})-?(\d{2})(?:T|\b|_|\d{6})")


@dataclass(frozen=True)
class InputInfo:
    """What a reader assumed about an input, reported to the user.

    Attributes:
        kind: ``"seasonal_composite"`` (the training layout) or ``"single_date"``.
        layout: the band layout, e.g. ``"s1grd-2band"``.
        units: ``"db"``, ``"power"``, ``"amplitude"`` or ``"coherence"``.
        units_source: ``"layout"`` (fixed by the layout), ``"detected"`` or ``"declared"``.
        seasons: ``"per band"`` or ``"replicated"`` (one acquisition copied into four seasons).
        date: acquisition date (ISO) when the file's tags or name give one.
        footprint_m: ground ``(width, height)`` of the tile in metres, when its CRS allows.
        pixel_size_m: ground size of one pixel in metres.
        footprint_ratio: the tile's ground side over the model's training chips' (set by the
            server, which knows the model); beyond 2x either way the tile is flagged.
        warnings: what the user should know about how the tile was read.
    """

    kind: str
    layout: str
    units: str
    units_source: str
    seasons: str
    date: str | None = None
    footprint_m: tuple[float, float] | None = None
    pixel_size_m: float | None = None
    footprint_ratio: float | None = None
    warnings: tuple[str, ...] = ()


def check_units(units: str | None) -> str | None:
    """Return ``units`` lower-cased if known (or None), else raise ``TileError``."""
    if units is None:
        return None
    word = units.strip().lower()
    if word not in UNITS:
        raise TileError(f"unknown units {units!r}: expected one of {', '.join(UNITS)}")
    return word


def _plausibility(vv: np.ndarray, vh: np.ndarray, units: str) -> tuple[float, float, float]:
    """(distance from typical, VV median dB, VV - VH median dB) if the values were ``units``."""
    factor = DB_FACTOR[units]
    both = (vv > 0) & (vh > 0)
    vv_db = float(factor * np.log10(np.median(vv[vv > 0])))
    diff_db = float(np.median(factor * np.log10(vv[both] / vh[both])))
    distance = abs(vv_db - TYPICAL_VV_DB) / VV_SPREAD_DB + abs(diff_db - TYPICAL_DIFF_DB) / (
        DIFF_SPREAD_DB
    )
    return distance, vv_db, diff_db


def detect_units(vv: np.ndarray, vh: np.ndarray) -> str:
    """Tell dB, linear power and amplitude apart from the values (see the module docstring).

    Args:
        vv: VV values, NaN where nodata.
        vh: VH values, NaN where nodata.

    Raises:
        TileError: no valid values, or values that do not say which units they are in.
    """
    vv = vv[np.isfinite(vv)]
    vh = vh[np.isfinite(vh)]
    if vv.size == 0 or vh.size == 0:
        raise TileError("all pixels are nodata: expected valid VV and VH values, found none")
    if np.median(vv) < 0:
        return "db"
    if np.count_nonzero(vv > 0) == 0 or np.count_nonzero(vh > 0) == 0:
        raise TileError(
            "could not tell the units of the VV/VH values: expected dB, linear power or "
            "amplitude, found no positive values; pass units=db|power|amplitude"
        )
    readings = {units: _plausibility(vv, vh, units) for units in DB_FACTOR}
    ranked = sorted(readings, key=lambda u: readings[u][0])
    best, other = ranked
    if readings[best][0] < IMPLAUSIBLE and readings[other][0] - readings[best][0] >= UNITS_MARGIN:
        return best
    found = "; ".join(
        f"as {u}: VV median {v:.1f} dB, VV - VH {d:.1f} dB" for u, (_, v, d) in readings.items()
    )
    raise TileError(
        "could not tell the units of the VV/VH values: expected dB (mostly negative), linear "
        f"power or amplitude of land backscatter (VV about {TYPICAL_VV_DB:g} dB, VV - VH about "
        f"{TYPICAL_DIFF_DB:g} dB), found values that read {found}; pass units=db|power|amplitude"
    )


def to_db(raw: np.ndarray, units: str) -> np.ndarray:
    """``(2, H, W)`` VV/VH in ``units`` to float32 dB; non-positive power or amplitude is nodata."""
    values = raw.astype(np.float32, copy=True)
    if units == "db":
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        db = DB_FACTOR[units] * np.log10(values)
    db[~(values > 0)] = np.nan
    return db.astype(np.float32, copy=False)


def replicate_seasons(vv_vh_db: np.ndarray, seasons: int = 4) -> np.ndarray:
    """``(2, H, W)`` single-date VV/VH dB to the 12 model channels (VV x4, VH x4, VV - VH x4)."""
    vv, vh = vv_vh_db
    out = np.empty((3 * seasons, *vv.shape), np.float32)  # (12, H, W)
    out[:seasons] = vv
    out[seasons : 2 * seasons] = vh
    with np.errstate(invalid="ignore"):
        out[2 * seasons :] = vv - vh
    return out


def find_date(*texts: str | None) -> str | None:
    """The first ``YYYYMMDD`` / ``YYYY-MM-DD`` date in ``texts`` (tags, a file name), as ISO."""
    for text in texts:
        if not text:
            continue
        for match in DATE_PATTERN.finditer(text):
            year, month, day = (int(g) for g in match.groups())
            if 1 <= month <= 12 and 1 <= day <= 31:
                return f"{year:04d}-{month:02d}-{day:02d}"
    return None
