"""Chip definitions of a simulated region: where tiles are, their identifiers, masks and splits.

Chips are ~4.5 km squares on a regular latitude / longitude grid covering the region's bounding
box, as geetiles makes them. A region's tiles are a seeded random sample of that grid, so tile
``i`` has the same place and identifier whatever the number of tiles asked for. A few percent of
chips have a corner cut off (as chips clipped by an area-of-interest boundary are); pixels outside
the polygon are masked in every file.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from sarveg.simulate.regions import RegionParams, region_code

CHIP_SIDE_KM = 4.5
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON_EQUATOR = 111.320
CUT_CORNER_FRACTION = 0.04
SPLIT_PATTERN: tuple[str, ...] = ("train", "train", "train", "test", "val")
DEFAULT_SPLIT_BANDS = 10
# Independent random streams derived from (seed, region, tile index).
STREAM_CHIP, STREAM_PHYSICS, STREAM_ACQUISITION = 1, 2, 3


@dataclass(frozen=True)
class Chip:
    """One simulated chip.

    Attributes:
        region: region name.
        index: tile index within the region (0-based).
        identifier: 13 lowercase hex digits, unique, from (seed, region, index).
        bounds: ``(west, south, east, north)`` of the chip square in degrees.
        cut: corner cut as ``(corner, du, dv)`` in chip-normalised units, or None. ``corner`` is
            0..3 for north-west, north-east, south-east, south-west; ``du``/``dv`` are the cut's
            legs along x and y as fractions of the side.
        split: ``"train"``, ``"val"`` or ``"test"`` (filled in by ``assign_splits``).
    """

    region: str
    index: int
    identifier: str
    bounds: tuple[float, float, float, float]
    cut: tuple[int, float, float] | None
    split: str = ""

    @property
    def centroid(self) -> tuple[float, float]:
        """``(lon, lat)`` of the square's centre (the cut moves the true centroid slightly)."""
        west, south, east, north = self.bounds
        return 0.5 * (west + east), 0.5 * (south + north)

    def ring(self) -> list[list[float]]:
        """The chip polygon as a closed GeoJSON ring of ``[lon, lat]``, counter-clockwise."""
        west, south, east, north = self.bounds
        # Corners counter-clockwise from south-west, in normalised (u east, v south) units.
        corners = [(0.0, 1.0), (1.0, 1.0), (1.0, 0.0), (0.0, 0.0)]  # SW, SE, NE, NW
        corner_ids = [3, 2, 1, 0]
        points: list[tuple[float, float]] = []
        for (u, v), cid in zip(corners, corner_ids, strict=True):
            if self.cut is not None and self.cut[0] == cid:
                _, du, dv = self.cut
                su = 1.0 if u == 0.0 else -1.0
                sv = 1.0 if v == 0.0 else -1.0
                # Replace the corner by the two ends of the cut, keeping counter-clockwise order.
                ends = [(u + su * du, v), (u, v + sv * dv)]
                if cid in (3, 1):
                    ends.reverse()
                points.extend(ends)
            else:
                points.append((u, v))
        ring = [
            [round(west + u * (east - west), 7), round(north - v * (north - south), 7)]
            for u, v in points
        ]
        return ring + [ring[0]]

    def area_km2(self) -> float:
        """Polygon area in km2 (local equirectangular projection)."""
        ring = self.ring()
        lat0 = math.radians(self.centroid[1])
        kx = KM_PER_DEG_LON_EQUATOR * math.cos(lat0)
        twice = 0.0
        for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True):
            twice += (x0 * kx) * (y1 * KM_PER_DEG_LAT) - (x1 * kx) * (y0 * KM_PER_DEG_LAT)
        return abs(twice) / 2.0

    def mask(self, height: int, width: int) -> np.ndarray:
        """``(height, width)`` bool, True for pixels whose centre lies inside the chip polygon."""
        if self.cut is None:
            return np.ones((height, width), dtype=bool)
        corner, du, dv = self.cut
        u = (np.arange(width) + 0.5) / width  # east
        v = (np.arange(height) + 0.5) / height  # south
        du_dist = u if corner in (0, 3) else 1.0 - u  # distance from the cut corner along x
        dv_dist = v if corner in (0, 1) else 1.0 - v  # along y
        return (du_dist[None, :] / du + dv_dist[:, None] / dv) >= 1.0


def tile_rng(seed: int, region: str, index: int, stream: int) -> np.random.Generator:
    """The random generator of one tile and stream, independent of worker count and order."""
    return np.random.default_rng([seed, region_code(region), index, stream])


def chip_identifier(seed: int, region: str, index: int, salt: int = 0) -> str:
    """13 lowercase hex digits derived from (seed, region, index)."""
    text = f"sarveg-sim:{seed}:{region}:{index}:{salt}".encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()[:13]


def grid_rows(params: RegionParams) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows of the chip grid: each row's north edge, its number of columns, and the row height."""
    west, south, east, north = params.bbox
    dlat = CHIP_SIDE_KM / KM_PER_DEG_LAT
    n_rows = int((north - south) / dlat)
    row_north = north - dlat * np.arange(n_rows)  # (R,)
    row_lat = np.radians(row_north - 0.5 * dlat)
    dlon = CHIP_SIDE_KM / (KM_PER_DEG_LON_EQUATOR * np.cos(row_lat))  # (R,)
    n_cols = np.floor((east - west) / dlon).astype(np.int64)  # (R,)
    return row_north, n_cols, dlat


def make_chips(params: RegionParams, count: int, seed: int) -> list[Chip]:
    """Place ``count`` chips for a region and assign their splits.

    Args:
        params: the region.
        count: number of chips.
        seed: simulation seed.

    Returns:
        The chips, in tile-index order, with ``split`` set.

    Raises:
        ValueError: when the region's grid has fewer cells than ``count``.
    """
    row_north, n_cols, dlat = grid_rows(params)
    cells = int(n_cols.sum())
    if count > cells:
        raise ValueError(
            f"too many tiles for region {params.name}: expected at most {cells}, found {count}"
        )
    order = np.random.default_rng([seed, region_code(params.name), 0]).permutation(cells)
    first_cell = np.concatenate([[0], np.cumsum(n_cols)])  # (R + 1,)
    west = params.bbox[0]
    chips: list[Chip] = []
    seen: set[str] = set()
    for index in range(count):
        cell = int(order[index])
        row = int(np.searchsorted(first_cell, cell, side="right") - 1)
        col = cell - int(first_cell[row])
        north = float(row_north[row])
        south = north - dlat
        dlon = CHIP_SIDE_KM / (KM_PER_DEG_LON_EQUATOR * math.cos(math.radians(north - dlat / 2)))
        bounds = (west + col * dlon, south, west + (col + 1) * dlon, north)
        rng = tile_rng(seed, params.name, index, STREAM_CHIP)
        cut = None
        if rng.random() < CUT_CORNER_FRACTION:
            cut = (int(rng.integers(4)), float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.2, 0.6)))
        salt, identifier = 0, chip_identifier(seed, params.name, index)
        while identifier in seen:  # astronomically rare, but identifiers must be unique
            salt += 1
            identifier = chip_identifier(seed, params.name, index, salt)
        seen.add(identifier)
        chips.append(Chip(params.name, index, identifier, bounds, cut))
    return assign_splits(chips, params.split_angle_rad)


def assign_splits(
    chips: list[Chip], angle_rad: float, n_bands: int = DEFAULT_SPLIT_BANDS
) -> list[Chip]:
    """Split chips by geographic bands, as geetiles does.

    Centroids are projected on the direction ``angle_rad`` (radians from east, counter-clockwise),
    sorted, cut into ``n_bands`` bands of equal count and the bands labelled
    ``train, train, train, test, val`` repeating: 60 / 20 / 20 by area.
    """
    if not chips:
        return []
    bands_used = max(1, min(n_bands, len(chips)))
    centroids = np.array([c.centroid for c in chips])  # (N, 2) lon, lat
    projection = centroids[:, 0] * math.cos(angle_rad) + centroids[:, 1] * math.sin(angle_rad)
    order = np.argsort(projection, kind="stable")
    split = np.empty(len(chips), dtype=object)
    for band, members in enumerate(np.array_split(order, bands_used)):
        split[members] = SPLIT_PATTERN[band % len(SPLIT_PATTERN)]
    return [
        Chip(c.region, c.index, c.identifier, c.bounds, c.cut, str(s))
        for c, s in zip(chips, split, strict=True)
    ]
