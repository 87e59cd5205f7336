"""Reading one SAR tile, from a path or from the bytes of an upload, into model channels.

``read_tile`` accepts every encoding the geetiles / sartiles tools produce:

- S1GRD, 16 bands ``{season}_{pol}{dir}``: float32 dB; integer dB cast to uint16 (negative values
  wrapped, reinterpreted as int16); uint8 scaled from [-30, 0] dB to [0, 255]. Only the 8
  ascending bands feed the model, so only they are decoded (half the decompression); a pixel
  that is 0 in all of them (the chip mask, or no ascending pass) is nodata, as is NaN.
- S1GRD already derived to the 12 model channels (``bands.S1GRD_CHANNELS``), float dB.
- GSSIC as a sartiles NetCDF (``coherence(season, deltadays, y, x)``, uint8 coherence x 100,
  0 = nodata) or as an 8-band GeoTIFF of the model channels (uint8 x 100 or float 0..1).

Bands are matched by their GDAL descriptions when present, by count otherwise. Every failure is a
``TileError`` naming what was expected and what was found; messages never contain the server-side
location of an upload.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, MemoryFile

from sarveg import bands
from sarveg.dual_pol import (
    DUAL_POL_NAMES,
    IGNORED_NAMES,
    InputInfo,
    check_units,
    detect_units,
    find_date,
    replicate_seasons,
    to_db,
)
from sarveg.errors import TileError
from sarveg.footprint import ground_size_m

MIN_SIDE_PX = 16
# Refuse to decode tiles whose header declares more pixels (height x width) than this: a hostile
# header can declare gigapixels in a few bytes. One chip is a few hundred pixels a side.
MAX_TILE_PIXELS = 2000 * 2000
# A header may declare up to 65,535 bands; no layout has more than 16 (sartiles NetCDF: 16).
MAX_BANDS = 64
UINT8_DB_RANGE = (-30.0, 0.0)
# geetiles writes uint8(255 * (dB + 30) / 30) without clipping, so dB outside [-30, 0] wraps
# around modulo 256: a bright +3 dB target reads about -27 dB, very dark -33 dB water about -3.
# A wrap shows as a pixel at one end of the range whose neighbours sit in the middle: very dark
# among bright-ish neighbours, or very bright among dark ones.
WRAP_DARK_DB, WRAP_BRIGHT_DB = -24.0, -6.0
WRAP_NEIGHBOURS_BRIGHT_DB, WRAP_NEIGHBOURS_DARK_DB = -15.0, -18.0


def encode_uint8_db(db: np.ndarray) -> np.ndarray:
    """Geetiles' uint8 S1GRD encoding as it really is: scaled, truncated, wrapped modulo 256.

    NaN (nodata) becomes 0, the mask value the readers expect.
    """
    low, high = UINT8_DB_RANGE
    scaled = np.where(np.isfinite(db), 255.0 * (db - low) / (high - low), 0.0)
    return np.mod(np.trunc(scaled).astype(np.int64), 256).astype(np.uint8)


def suspected_wraps(vv_db: np.ndarray) -> int:
    """Pixels of decoded uint8 VV bands ``(4, H, W)`` that look wrapped (see above)."""
    padded = np.pad(vv_db, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = vv_db.shape[1:]
    shifts = [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    shifts.pop(4)  # the pixel itself
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods
        neighbours = np.nanmedian(np.stack(shifts), axis=0)  # (4, H, W)
    dark_wrap = (vv_db < WRAP_DARK_DB) & (neighbours > WRAP_NEIGHBOURS_BRIGHT_DB)
    bright_wrap = (vv_db > WRAP_BRIGHT_DB) & (neighbours < WRAP_NEIGHBOURS_DARK_DB)
    return int(np.count_nonzero(np.any(dark_wrap | bright_wrap, axis=0)))


DB_VALID_RANGE = (-100.0, 60.0)

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
NETCDF_MAGICS = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
EPSG_4326 = CRS.from_epsg(4326)
# A tile is one self-contained file: GDAL need not list its folder for side-car files on every
# open, which costs ~0.5 ms a tile in a folder of 5,000 tiles (and grows with the folder).
GDAL_OPEN_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


class NetcdfDimensionNoise(logging.Filter):
    """Drop GDAL's notes that sartiles' ``season`` / ``deltadays`` are not time / vertical axes.

    They are expected for every GSSIC file and would otherwise fill logs with one line per tile.
    """

    NOISE = ("is not a Time dimension", "is not a Vertical dimension")

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except the two dimension notes."""
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


logging.getLogger("rasterio._env").addFilter(NetcdfDimensionNoise())


@dataclass(frozen=True)
class Tile:
    """A decoded tile in model channel order.

    Attributes:
        array: float32 ``(C, H, W)`` in physical units (dB for S1GRD, coherence 0..1 for GSSIC),
            NaN where nodata.
        band_names: the channel names, ``bands.CHANNELS[modality]``.
        modality: ``"s1grd"`` or ``"gssic"``.
        crs: coordinate reference system of the raster (EPSG:4326 assumed for NetCDF without one).
        transform: affine pixel-to-CRS transform.
        encoding: how the source stored the values, e.g. ``"s1grd-16band-uint16-db"``.
        input: what the reader assumed (single date or composite, units and where they came
            from, the acquisition date when known).

    """

    array: np.ndarray
    band_names: tuple[str, ...]
    modality: str
    crs: CRS | None
    transform: Affine
    encoding: str
    input: InputInfo | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units, from all four corners."""
        _, h, w = self.array.shape
        return transformed_bounds(self.transform, h, w)


def transformed_bounds(
    transform: Affine, height: int, width: int
) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a ``height x width`` raster, from its four corners.

    Two corners are enough only for north-up transforms; a rotated or sheared one puts the
    extremes at the other two.
    """
    corners = [transform * (x, y) for x in (0, width) for y in (0, height)]
    xs = [x for x, _ in corners]
    ys = [y for _, y in corners]
    return (min(xs), min(ys), max(xs), max(ys))


def check_modality(modality: str | None) -> str | None:
    """Return ``modality`` if it is known (or None), else raise a ``TileError``."""
    if modality is not None and modality not in bands.MODALITIES:
        raise TileError(
            f"unknown modality {modality!r}: expected one of {', '.join(bands.MODALITIES)}"
        )
    return modality


def sniff_format(head: bytes) -> str:
    """Classify a file by its first bytes: ``"tiff"``, ``"netcdf"`` or raise ``TileError``."""
    if not head:
        raise TileError("empty input: expected a GeoTIFF or NetCDF file, found 0 bytes")
    if head.startswith(TIFF_MAGICS):
        return "tiff"
    if head.startswith(NETCDF_MAGICS):
        return "netcdf"
    raise TileError(
        "not a raster: expected a GeoTIFF (TIFF magic bytes) or a NetCDF file, "
        f"found data starting with {head[:8]!r}"
    )


def read_tile(
    source: str | Path | bytes,
    *,
    modality: str | None = None,
    max_pixels: int = MAX_TILE_PIXELS,
    units: str | None = None,
    name: str | None = None,
) -> Tile:
    """Read a tile from a path or from in-memory bytes.

    Args:
        source: path to a GeoTIFF / NetCDF file, or the file's bytes (read through GDAL's
            in-memory filesystem, no temporary files).
        modality: ``"s1grd"`` or ``"gssic"`` to insist on one; None infers it from the bands.
        max_pixels: refuse rasters declaring more pixels (height x width) than this, before
            decoding any pixel.
        units: ``"db"``, ``"power"`` or ``"amplitude"`` for a two-band VV/VH file; None detects
            them from the values (other layouts have fixed units).
        name: the file's name, searched for an acquisition date (a path's own name is used
            when ``source`` is a path).

    Returns:
        The decoded ``Tile`` in model channel order.

    Raises:
        TileError: for anything that is not a readable SAR tile; the message says what was
            expected and what was found.

    """
    check_modality(modality)
    units = check_units(units)
    if name is None and isinstance(source, str | Path):
        name = Path(source).name
    with open_raster(source) as (dataset, kind):
        if kind == "netcdf":
            if units is not None:
                raise TileError(
                    f"units={units} applies to two-band VV/VH GeoTIFFs: expected no units for "
                    "a GSSIC NetCDF (coherence), found one"
                )
            tile = decode_gssic_netcdf(dataset, max_pixels)
        else:
            tile = decode_geotiff(dataset, max_pixels, units, name)
    if modality is not None and tile.modality != modality:
        raise TileError(
            f"expected a {modality} tile, found {tile.modality} bands "
            f"({len(tile.band_names)} channels, encoding {tile.encoding})"
        )
    check_values(tile)
    return tile


@contextlib.contextmanager
def open_raster(source: str | Path | bytes) -> Iterator[tuple[DatasetReader, str]]:
    """Open a GeoTIFF or a NetCDF ``coherence`` variable, turning GDAL errors into TileError."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        kind = sniff_format(data[:8])
        with MemoryFile(data) as memfile, open_dataset(memfile.name, kind) as dataset:
            yield dataset, kind
        return
    path = Path(source)
    if not path.is_file():
        raise TileError(f"expected a GeoTIFF or NetCDF file, found no file at {path}")
    with path.open("rb") as handle:
        kind = sniff_format(handle.read(8))
    with open_dataset(str(path), kind) as dataset:
        yield dataset, kind


@contextlib.contextmanager
def open_dataset(name: str, kind: str) -> Iterator[DatasetReader]:
    """Open ``name`` with rasterio; GDAL's own messages are not passed on (they name paths)."""
    target = f'NETCDF:"{name}":coherence' if kind == "netcdf" else name
    what = "a NetCDF file with a 'coherence' variable" if kind == "netcdf" else "a readable GeoTIFF"
    # Only the driver the magic bytes named may open the data: no other GDAL driver (VRT and
    # friends can reference other files) gets a say.
    driver = "netCDF" if kind == "netcdf" else "GTiff"
    with rasterio.Env(**GDAL_OPEN_OPTIONS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = rasterio.open(target, driver=driver)
        except RasterioError:
            raise TileError(
                f"could not decode the raster: expected {what}, found corrupt, "
                "truncated or unsupported data"
            ) from None
        try:
            yield dataset
        finally:
            dataset.close()


def check_header(dataset: DatasetReader, max_pixels: int, what: str = "tile") -> None:
    """Refuse huge rasters and absurd band counts using only the header."""
    h, w, c = dataset.height, dataset.width, dataset.count
    if c > MAX_BANDS:
        raise TileError(f"too many bands: expected at most {MAX_BANDS}, found {c}")
    if h * w > max_pixels:
        raise TileError(
            f"{what} too large: expected at most {max_pixels:,} pixels (height x width), found "
            f"{h} x {w} = {h * w:,}"
        )


def check_shape(dataset: DatasetReader, max_pixels: int) -> None:
    """Refuse tiny or huge tiles using only the header."""
    check_header(dataset, max_pixels)
    h, w = dataset.height, dataset.width
    if h < MIN_SIDE_PX or w < MIN_SIDE_PX:
        raise TileError(
            f"tile too small: expected at least {MIN_SIDE_PX} x {MIN_SIDE_PX} pixels, "
            f"found {h} x {w}"
        )


# Data types each modality's decoder handles (GDAL names); anything else is refused from the
# header, before numpy ever sees a type it cannot represent (complex_int16 SLC data).
SUPPORTED_DTYPES: dict[str, frozenset[str]] = {
    "s1grd": frozenset({"float32", "float64", "uint16", "int16", "uint8"}),
    "gssic": frozenset({"float32", "float64", "uint8"}),
}
DTYPE_HINTS = {
    "s1grd": "float32 dB, uint16/int16 integer dB or uint8 scaled dB",
    "gssic": "uint8 (coherence x 100) or float 0..1",
}


def band_dtype(dataset: DatasetReader, indexes: tuple[int, ...], modality: str) -> np.dtype:
    """The one stored data type of ``indexes``, if the modality's decoder supports it."""
    names = {dataset.dtypes[i - 1] for i in indexes}
    if len(names) != 1 or not names <= SUPPORTED_DTYPES[modality]:
        found = ", ".join(sorted(names))
        hint = " (complex SLC data: convert to sigma0 dB first)" if "complex" in found else ""
        raise TileError(
            f"unsupported data type for {modality.upper()}: expected {DTYPE_HINTS[modality]}, "
            f"found {found}{hint}"
        )
    return np.dtype(names.pop())


def read_all(dataset: DatasetReader, indexes: list[int] | None = None) -> np.ndarray:
    """Read bands (1-based ``indexes``); decode failures of truncated files become TileError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return dataset.read(indexes)
    except RasterioError:
        raise TileError(
            "could not decode the raster pixels: expected complete image data, "
            "found a corrupt or truncated file"
        ) from None


def normalised_descriptions(dataset: DatasetReader) -> list[str] | None:
    """Lower-cased band descriptions, or None when the file carries none."""
    try:
        raw = dataset.descriptions
    except UnicodeDecodeError:  # corrupt GDAL metadata
        raise TileError(
            "unreadable band names: expected UTF-8 band descriptions, found undecodable bytes"
        ) from None
    descriptions = [(d or "").strip().lower() for d in raw]
    return descriptions if any(descriptions) else None


@dataclass(frozen=True)
class BandLayout:
    """Which stored bands feed the model channels, and how they are encoded.

    Attributes:
        name: ``"s1grd-16band"``, ``"s1grd-12band"`` or ``"gssic-8band"``.
        indexes: 1-based band indexes to read, in the order the decoder expects.
        dtype: the stored data type.
    """

    name: str
    indexes: tuple[int, ...]
    dtype: np.dtype

    @property
    def modality(self) -> str:
        """``"gssic"`` or ``"s1grd"``."""
        return "gssic" if self.name.startswith("gssic") else "s1grd"

    @property
    def encoding(self) -> str:
        """A short description such as ``s1grd-16band-uint16-db``."""
        # Two-band VV/VH files carry dB, power or amplitude: the input block says which.
        suffix = "" if self.modality == "gssic" or self.name == "s1grd-2band" else "-db"
        return f"{self.name}-{self.dtype.name}{suffix}"


GEOTIFF_LAYOUTS: dict[str, tuple[str, ...]] = {
    "s1grd-16band": bands.S1GRD_RAW_BANDS,
    "s1grd-12band": bands.S1GRD_CHANNELS,
    "gssic-8band": bands.GSSIC_CHANNELS,
}
# The stored bands each layout decodes, in decoding order; the 16-band layout needs only its
# ascending VV and VH bands (the first 8 model channels), from which the other 4 are derived.
S1GRD_ASCENDING_BANDS: tuple[str, ...] = bands.S1GRD_CHANNELS[: 2 * len(bands.S1GRD_SEASONS)]
DECODED_BANDS: dict[str, tuple[str, ...]] = {
    "s1grd-16band": S1GRD_ASCENDING_BANDS,
    "s1grd-12band": bands.S1GRD_CHANNELS,
    "gssic-8band": bands.GSSIC_CHANNELS,
}


def identify_layout(dataset: DatasetReader) -> BandLayout:
    """Match a GeoTIFF's bands to a known layout by description, or by count without any."""
    names = normalised_descriptions(dataset)
    count = dataset.count
    if names is not None and set(DUAL_POL_NAMES) <= set(names):
        extra = sorted(set(names) - set(DUAL_POL_NAMES) - IGNORED_NAMES)
        if not extra:
            indexes = tuple(names.index(n) + 1 for n in DUAL_POL_NAMES)
            dtype = band_dtype(dataset, indexes, "s1grd")
            if dtype.kind != "f":
                raise TileError(
                    "unsupported data type for a VV/VH file: expected float32 or float64 (dB, "
                    f"linear power or amplitude), found {dtype.name}"
                )
            return BandLayout("s1grd-2band", indexes, dtype)
    if names is not None:
        layout = next(
            (key for key, expected in GEOTIFF_LAYOUTS.items() if set(expected) <= set(names)),
            None,
        )
        if layout is None:
            raise TileError(
                "unrecognised band names: expected VV and VH (a single acquisition, optionally "
                "with angle), the 16 geetiles S1GRD bands "
                f"({', '.join(bands.S1GRD_RAW_BANDS[:2])}, ...), the 12 S1GRD model channels or "
                f"the 8 GSSIC channels ({', '.join(bands.GSSIC_CHANNELS[:2])}, ...); "
                f"found {count} bands named {', '.join(n or '<none>' for n in names[:6])}"
                + (", ..." if count > 6 else "")
            )
    else:
        by_count = {16: "s1grd-16band", 12: "s1grd-12band", 8: "gssic-8band"}
        if count not in by_count:
            raise TileError(
                "wrong band count: expected 16 (geetiles S1GRD), 12 (S1GRD model channels) or "
                f"8 (GSSIC) bands, or two bands named VV and VH, found {count} bands without "
                "names"
            )
        layout = by_count[count]
        names = list(GEOTIFF_LAYOUTS[layout])
    indexes = tuple(names.index(n) + 1 for n in DECODED_BANDS[layout])
    modality = "gssic" if layout.startswith("gssic") else "s1grd"
    return BandLayout(layout, indexes, band_dtype(dataset, indexes, modality))


def decode_bands(raw: np.ndarray, layout: BandLayout, units: str | None = None) -> np.ndarray:
    """Decode stored values of ``layout`` (``(len(indexes), H, W)``) to model channels.

    ``units`` applies to the two-band VV/VH layout only (None: detected from the values).
    """
    if layout.name == "s1grd-2band":
        return decode_dual_pol(raw, units)[0]
    if layout.modality == "gssic":
        return decode_coherence(raw, layout.dtype)
    array = decode_sigma0_db(raw, layout.dtype)
    return ascending_to_channels(array) if layout.name == "s1grd-16band" else array


S1GRD_DESCENDING_BANDS: tuple[str, ...] = tuple(
    name.replace("asc", "des") for name in S1GRD_ASCENDING_BANDS
)


def refuse_descending_only(dataset: DatasetReader) -> None:
    """A tile with no ascending pass: refuse it, naming the direction that is there.

    The model's channels come from the ascending bands only, and the two orbit directions see
    the ground from opposite sides (other incidence and layover), so descending values are not
    substituted; without either, the usual all-nodata message follows.
    """
    names = normalised_descriptions(dataset) or list(bands.S1GRD_RAW_BANDS)
    indexes = [names.index(n) + 1 for n in S1GRD_DESCENDING_BANDS if n in names]
    if not indexes:
        return
    descending = read_all(dataset, indexes)
    if np.any(np.isfinite(descending) & (descending != 0)):
        raise TileError(
            "no ascending pass in this tile: expected ascending VV and VH bands (the model's "
            "channels are derived from them), found data in the descending bands only; the "
            "model was trained on ascending passes, so descending data are not substituted"
        )


def fixed_units(layout: BandLayout) -> str:
    """The units a layout other than two-band VV/VH fixes: ``db`` or ``coherence``."""
    return "coherence" if layout.modality == "gssic" else "db"


def check_fixed_units(layout: BandLayout, units: str | None) -> None:
    """Refuse declared units that a layout other than two-band VV/VH fixes otherwise."""
    if units not in (None, "db") and layout.modality == "s1grd":
        raise TileError(
            f"units={units} applies to two-band VV/VH files: expected dB for the "
            f"{layout.name} layout (geetiles stores dB), found units={units}"
        )
    if units is not None and layout.modality == "gssic":
        raise TileError(
            f"units={units} applies to two-band VV/VH files: expected none for GSSIC "
            "coherence, found one"
        )


def dual_pol_values(raw: np.ndarray) -> np.ndarray:
    """``(2, H, W)`` stored VV/VH as float32, NaN where both bands are 0 (the export's mask)."""
    values = raw.astype(np.float32, copy=True)
    values[:, np.all(values == 0, axis=0)] = np.nan
    return values


def decode_dual_pol(raw: np.ndarray, units: str | None) -> tuple[np.ndarray, str, str]:
    """``(2, H, W)`` stored VV/VH to the 12 model channels; also the units and their source."""
    values = dual_pol_values(raw)
    source = "declared" if units is not None else "detected"
    units = units or detect_units(values[0], values[1])
    return replicate_seasons(to_db(values, units)), units, source


def decode_geotiff(
    dataset: DatasetReader, max_pixels: int, units: str | None = None, name: str | None = None
) -> Tile:
    """Identify the band layout of a GeoTIFF and decode the whole raster to model channels."""
    check_shape(dataset, max_pixels)
    layout = identify_layout(dataset)
    raw = read_all(dataset, list(layout.indexes))  # (C, H, W)
    if layout.name == "s1grd-2band":
        array, units, source = decode_dual_pol(raw, units)
        tags = dataset.tags()
        date = find_date(
            *(tags.get(k) for k in sorted(tags) if "time" in k.lower() or "date" in k.lower()), name
        )
        info = InputInfo("single_date", layout.name, units, source, "replicated", date)
    else:
        check_fixed_units(layout, units)
        array = decode_bands(raw, layout)
        if layout.name == "s1grd-16band" and not np.isfinite(array).any():
            refuse_descending_only(dataset)
        info = InputInfo(
            "seasonal_composite", layout.name, fixed_units(layout), "layout", "per band"
        )
        if layout.modality == "s1grd" and layout.dtype == np.uint8:
            wrapped = suspected_wraps(array[:4])  # the four VV channels, decoded
            share = wrapped / (raw.shape[1] * raw.shape[2])
            if wrapped:
                info = replace(
                    info,
                    warnings=(
                        f"{wrapped} pixels ({share:.1%}) look wrapped: geetiles' uint8 encoding "
                        "wraps dB outside [-30, 0] around (bright targets read as very dark, "
                        "very dark water as bright), and these sit at one end of the range "
                        "among neighbours in the middle",
                    ),
                )
    return Tile(
        array=array,
        band_names=bands.CHANNELS[layout.modality],
        modality=layout.modality,
        crs=dataset.crs,
        transform=dataset.transform,
        encoding=layout.encoding,
        input=with_footprint(info, dataset.transform, dataset.crs, dataset.height, dataset.width),
    )


def with_footprint(
    info: InputInfo, transform: Affine, crs: CRS | None, height: int, width: int
) -> InputInfo:
    """``info`` with the raster's ground footprint, when its CRS gives one."""
    size = ground_size_m(transform, crs, height, width)
    if size is None:
        return info
    width_m, height_m, pixel_m = size
    return replace(info, footprint_m=(round(width_m, 1), round(height_m, 1)), pixel_size_m=pixel_m)


def decode_sigma0_db(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Turn stored S1GRD values into float32 dB with NaN nodata.

    A pixel that is 0 in every band is the chip mask (geetiles sets no nodata value); a single
    band at exactly 0 dB is a legitimate bright target and is kept.
    """
    masked = np.all(raw == 0, axis=0)  # (H, W)
    if dtype == np.uint16:
        # Integer dB cast to uint16: negative values wrapped around, so reinterpret the bits.
        values = raw.view(np.int16).astype(np.float32)
    elif dtype == np.int16:
        values = raw.astype(np.float32)
    elif dtype == np.uint8:
        low, high = UINT8_DB_RANGE
        values = low + raw.astype(np.float32) * ((high - low) / 255.0)
    elif dtype in (np.float32, np.float64):
        values = raw.astype(np.float32, copy=False)  # a fresh read: safe to write NaN into
    else:
        raise TileError(
            f"unsupported data type for S1GRD: expected float32 dB, uint16/int16 integer dB or "
            f"uint8 scaled dB, found {dtype.name}"
        )
    if masked.any():
        values[:, masked] = np.nan
    return values


def decode_coherence(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Turn stored coherence (uint8 x 100 or float 0..1) into float32 0..1 with NaN nodata.

    sartiles' uint8 encoding reserves 0 for nodata. In float files NaN is nodata and 0 is a
    real coherence (open water decorrelates completely), so it is kept.
    """
    if dtype == np.uint8:
        values = raw.astype(np.float32) / 100.0
        values[raw == 0] = np.nan  # sartiles: 0 = nodata
    elif dtype in (np.float32, np.float64):
        values = raw.astype(np.float32)
    else:
        raise TileError(
            "unsupported data type for GSSIC coherence: expected uint8 (coherence x 100) or "
            f"float 0..1, found {dtype.name}"
        )
    return values


def derive_s1grd_channels(raw_db: np.ndarray) -> np.ndarray:
    """Derive the 12 model channels from the 16 geetiles bands (ascending orbit only).

    Args:
        raw_db: ``(16, H, W)`` dB in ``bands.S1GRD_RAW_BANDS`` order.

    Returns:
        ``(12, H, W)`` in ``bands.S1GRD_CHANNELS`` order: vv x4 seasons, vh x4, vv - vh x4.

    """
    index = {name: i for i, name in enumerate(bands.S1GRD_RAW_BANDS)}
    return ascending_to_channels(raw_db[[index[name] for name in S1GRD_ASCENDING_BANDS]])


def ascending_to_channels(ascending_db: np.ndarray) -> np.ndarray:
    """The 12 model channels from the 8 ascending bands (``S1GRD_ASCENDING_BANDS`` order).

    Args:
        ascending_db: ``(8, H, W)`` dB: VV of the 4 seasons, then VH of the 4 seasons.

    Returns:
        ``(12, H, W)`` float32: VV x4, VH x4, VV - VH x4.
    """
    seasons = len(bands.S1GRD_SEASONS)
    out = np.empty((3 * seasons, *ascending_db.shape[1:]), np.float32)  # (12, H, W)
    out[: 2 * seasons] = ascending_db
    with np.errstate(invalid="ignore"):  # inf - inf in a hostile file: refused just after
        np.subtract(out[:seasons], out[seasons : 2 * seasons], out=out[2 * seasons :])
    return out


NETCDF_EXTRA_DIMS = ("season", "deltadays")


def netcdf_extra_dims(dataset: DatasetReader) -> tuple[str, ...]:
    """The non-spatial dimensions of the ``coherence`` variable, in stored order."""
    raw = dataset.tags().get("NETCDF_DIM_EXTRA", "")
    return tuple(name.strip() for name in raw.strip("{}").split(",") if name.strip())


def parse_deltadays(raw: str) -> int:
    """A ``deltadays`` coordinate as whole days; NaN, infinite or fractional values refused."""
    try:
        days = float(raw)
    except ValueError:
        days = float("nan")
    if not np.isfinite(days) or days != round(days) or not 0 < days < 10_000:
        raise TileError(
            f"invalid deltadays coordinate: expected whole days (12, 24, 36, 48), found {raw!r}"
        )
    return int(days)


def decode_gssic_netcdf(dataset: DatasetReader, max_pixels: int) -> Tile:
    """Decode sartiles' ``coherence(season, deltadays, y, x)`` to the 8 GSSIC channels."""
    check_shape(dataset, max_pixels)
    dims = netcdf_extra_dims(dataset)
    if dims != NETCDF_EXTRA_DIMS:
        raise TileError(
            "unexpected NetCDF structure: expected variable coherence(season, deltadays, y, x), "
            f"found coherence({', '.join([*dims, 'y', 'x'])})"
        )
    band_keys: dict[tuple[str, int], int] = {}
    season_values: list[str] = []
    for i in range(1, dataset.count + 1):
        tags = dataset.tags(i)
        season_raw = tags.get("NETCDF_DIM_season")
        days_raw = tags.get("NETCDF_DIM_deltadays")
        if season_raw is None or days_raw is None:
            raise TileError(
                "unexpected NetCDF structure: expected a season and a deltadays coordinate for "
                f"every coherence band, found none for band {i}"
            )
        if season_raw not in season_values:
            season_values.append(season_raw)
        key = (season_raw, parse_deltadays(days_raw))
        if key in band_keys:
            raise TileError(
                f"repeated NetCDF coordinates: expected each (season, deltadays) once, found "
                f"season {season_raw!r} at {key[1]} days twice"
            )
        band_keys[key] = i
    if len(season_values) != len(bands.GSSIC_NC_SEASONS):
        raise TileError(
            f"unexpected NetCDF seasons: expected {len(bands.GSSIC_NC_SEASONS)} "
            f"({', '.join(bands.GSSIC_NC_SEASONS)}), found {len(season_values)}"
        )
    # Seasons are stored as an index (or as names); position follows sartiles' order.
    season_name = {
        value: value if value in bands.GSSIC_NC_SEASONS else bands.GSSIC_NC_SEASONS[pos]
        for pos, value in enumerate(season_values)
    }
    lookup = {(season_name[s], d): i for (s, d), i in band_keys.items()}
    wanted = []
    for days in bands.GSSIC_DELTADAYS_USED:
        for season in bands.S1GRD_SEASONS:
            if (season, days) not in lookup:
                raise TileError(
                    f"missing coherence band: expected season {season!r} at {days} days, found "
                    f"deltadays {sorted({d for _, d in lookup})}"
                )
            wanted.append(lookup[(season, days)])
    dtype = band_dtype(dataset, tuple(wanted), "gssic")
    raw = read_all(dataset, wanted)  # (8, H, W)
    if dtype.kind == "f" and np.nanmax(raw, initial=0.0) > 1.5:
        raw = raw / 100.0  # float coherence x 100
    array = decode_coherence(raw, dtype)
    transform = dataset.transform
    # NetCDF row order: GDAL reports a north-up transform when y is stored ascending or
    # descending; it flips rows itself, so the transform can be used as it is.
    crs = dataset.crs or assumed_geographic(dataset)
    return Tile(
        array=array,
        band_names=bands.GSSIC_CHANNELS,
        modality="gssic",
        crs=crs,
        transform=transform,
        encoding=f"gssic-netcdf-{dtype.name}",
        input=with_footprint(
            InputInfo("seasonal_composite", "gssic-netcdf", "coherence", "layout", "per band"),
            transform,
            crs,
            dataset.height,
            dataset.width,
        ),
    )


def assumed_geographic(dataset: DatasetReader) -> CRS:
    """EPSG:4326 for a NetCDF without a CRS, if its coordinates can be degrees at all."""
    left, bottom, right, top = transformed_bounds(dataset.transform, dataset.height, dataset.width)
    if not (-180.0 <= left <= right <= 360.0 and -90.0 <= bottom <= top <= 90.0):
        raise TileError(
            "NetCDF without a CRS: expected longitude/latitude coordinates (EPSG:4326 is "
            f"assumed) or a grid_mapping, found x {left:.6g}..{right:.6g}, y {bottom:.6g}.."
            f"{top:.6g} (projected coordinates? add the CRS)"
        )
    return EPSG_4326


def check_values(tile: Tile) -> None:
    """Reject all-nodata tiles, infinities and values outside the modality's physical range."""
    problem = value_problem(tile.array, tile.modality)
    if problem is not None:
        raise TileError(problem)


def value_problem(array: np.ndarray, modality: str) -> str | None:
    """Why decoded values cannot be a tile of ``modality``, or None when they can.

    The one rule for uploaded tiles, scene windows and mosaic windows: not all nodata, no
    infinities, values in the modality's physical range, and S1GRD in dB rather than linear
    power or amplitude.

    Args:
        array: ``(C, H, W)`` model channels, NaN for nodata.
        modality: ``"s1grd"`` or ``"gssic"``.

    Returns:
        A message naming what was expected and what was found, or None.
    """
    flat = array.reshape(-1)
    # NaN-ignoring extremes in one pass each; NaN only when every value is NaN.
    low, high = np.fmin.reduce(flat), np.fmax.reduce(flat)
    if np.isnan(low):
        return (
            f"all pixels are nodata: expected at least some valid {modality} values, "
            "found only 0 / NaN"
        )
    if np.isinf(low) or np.isinf(high):
        return (
            "non-finite values: expected finite values or NaN for nodata, "
            f"found {int(np.isinf(array).sum())} infinite values"
        )
    if modality == "s1grd":
        low_db, high_db = DB_VALID_RANGE
        if low < low_db or high > high_db:
            return (
                f"sigma0 out of range: expected dB values within [{low_db:g}, {high_db:g}], "
                f"found [{low:.4g}, {high:.4g}]"
            )
        vv = array[:4]
        n_vv = np.count_nonzero(~np.isnan(vv))
        share = np.count_nonzero(vv >= 0.0) / n_vv if n_vv else 0.0  # NaN compares False
        if share > 0.95:
            return (
                "sigma0 does not look like dB: expected mostly negative VV values, found "
                f"{share:.0%} non-negative (linear power? convert with 10*log10)"
            )
    elif low < 0.0 or high > 1.0 + 1e-6:
        return (
            "coherence out of range: expected values in [0, 1] (or uint8 x 100), found "
            f"[{low:.4g}, {high:.4g}]"
        )
    return None
