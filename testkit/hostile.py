"""Hostile and odd uploads, written by code.

NetCDF4 files that point at server files, header bombs, types and structures the readers must
refuse, and a seeded mutator for fuzzing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import rasterio
from rasterio.transform import from_bounds

from sarveg import bands
from testkit.tiles import BOUNDS, coherence_x100

SIDE = 32
MARKER_BYTE = 0xC8  # decodes to coherence 2.0 (uint8 x 100): it would show in a range message


def write_marker_file(path: Path, size: int = 1 << 16) -> Path:
    """A 'server file' full of the marker byte: any leak of it is recognisable."""
    path.write_bytes(bytes([MARKER_BYTE]) * size)
    return path


def write_marker_hdf5(path: Path, shape: tuple[int, ...]) -> Path:
    """A 'server' HDF5 file whose dataset ``data`` holds the marker value."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data", data=np.full(shape, MARKER_BYTE, np.uint8))
    return path


def gssic_netcdf4(
    coherence: Callable[[h5py.File, tuple[int, ...]], h5py.Dataset] | None = None,
    *,
    deltadays: np.ndarray | None = None,
    extra_dim: int = 0,
    side: int = SIDE,
    bounds: tuple[float, float, float, float] = BOUNDS,
) -> bytes:
    """A sartiles-like NetCDF4, written with h5py as netCDF-C expects it (dimension scales).

    Args:
        coherence: builds the ``coherence`` dataset (default: in-file uint8 data); given the
            open file and the variable's shape.
        deltadays: the deltadays coordinate values (default 12, 24, 36, 48).
        extra_dim: if > 0, a leading ``orbit`` dimension of that length.
        side: tile side in pixels.
        bounds: ``(left, bottom, right, top)`` of the x/y coordinates (no CRS is written).
    """
    buffer = io.BytesIO()
    days = np.asarray(bands.GSSIC_NC_DELTADAYS if deltadays is None else deltadays)
    dims: list[tuple[str, np.ndarray]] = []
    if extra_dim:
        dims.append(("orbit", np.arange(extra_dim, dtype="i4")))
    dims += [
        ("season", np.arange(4, dtype="i4")),
        ("deltadays", days),
        ("y", np.linspace(bounds[3], bounds[1], side)),
        ("x", np.linspace(bounds[0], bounds[2], side)),
    ]
    shape = tuple(len(values) for _, values in dims)
    with h5py.File(buffer, "w", libver="earliest") as handle:
        for name, values in dims:
            scale = handle.create_dataset(name, data=values)
            scale.make_scale(name)
            if name in ("x", "y"):  # CF units, from which GDAL derives the geotransform
                degrees = max(abs(v) for v in bounds) <= 360.0
                axis = "east" if name == "x" else "north"
                scale.attrs["units"] = f"degrees_{axis}" if degrees else "m"
                if not degrees:
                    scale.attrs["standard_name"] = f"projection_{name}_coordinate"
        if coherence is None:
            data = np.broadcast_to(coherence_x100(side), shape)
            var = handle.create_dataset("coherence", data=data)
        else:
            var = coherence(handle, shape)
        if isinstance(var, h5py.Dataset):
            for axis, (name, _) in enumerate(dims):
                var.dims[axis].attach_scale(handle[name])
    return buffer.getvalue()


def external_storage_netcdf(server_file: Path) -> bytes:
    """``coherence`` stored as raw bytes of ``server_file`` (HDF5 external storage)."""

    def build(handle: h5py.File, shape: tuple[int, ...]) -> h5py.Dataset:
        size = int(np.prod(shape))
        return handle.create_dataset(
            "coherence", shape, np.uint8, external=[(str(server_file), 0, size)]
        )

    return gssic_netcdf4(build)


def virtual_dataset_netcdf(server_hdf5: Path) -> bytes:
    """``coherence`` as a virtual dataset mapping a dataset of ``server_hdf5``."""

    def build(handle: h5py.File, shape: tuple[int, ...]) -> h5py.Dataset:
        layout = h5py.VirtualLayout(shape, np.uint8)
        layout[...] = h5py.VirtualSource(str(server_hdf5), "data", shape=shape)
        return handle.create_virtual_dataset("coherence", layout)

    return gssic_netcdf4(build)


def external_link_netcdf(server_hdf5: Path) -> bytes:
    """``coherence`` as an external link to a dataset of ``server_hdf5``."""

    def build(handle: h5py.File, shape: tuple[int, ...]) -> None:
        handle["coherence"] = h5py.ExternalLink(str(server_hdf5), "/data")

    return gssic_netcdf4(build)  # type: ignore[arg-type]


def soft_link_netcdf() -> bytes:
    """A valid file plus a soft link (which could later resolve anywhere)."""
    data = gssic_netcdf4()
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as handle:
        handle["alias"] = h5py.SoftLink("/coherence")
    return buffer.getvalue()


def lzf_filter_netcdf() -> bytes:
    """``coherence`` compressed with LZF, a filter outside the allow-list."""

    def build(handle: h5py.File, shape: tuple[int, ...]) -> h5py.Dataset:
        data = np.broadcast_to(coherence_x100(SIDE), shape)
        return handle.create_dataset("coherence", data=data, compression="lzf", chunks=True)

    return gssic_netcdf4(build)


def _geotiff(profile: dict[str, object], data: np.ndarray | None, names: tuple[str, ...]) -> bytes:
    from rasterio.io import MemoryFile

    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            if data is not None:
                dst.write(data)
            for index, name in enumerate(names[: int(profile["count"])], start=1):  # type: ignore[call-overload]
                dst.set_band_description(index, name)
        return memfile.read()


def sparse_bomb(side: int = 2048, count: int = 16) -> bytes:
    """A tiny GeoTIFF declaring ``count x side x side`` values, none of them written."""
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": count,
        "dtype": "float32",
        "tiled": True,
        "sparse_ok": True,
        "compress": "deflate",
        "crs": "EPSG:4326",
        "transform": from_bounds(*BOUNDS, side, side),
    }
    return _geotiff(profile, None, bands.S1GRD_RAW_BANDS)


def cint16_tiff(side: int = SIDE) -> bytes:
    """A 16-band S1GRD-named GeoTIFF of complex int16 (SLC-like) values."""
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": 16,
        "dtype": "complex_int16",
        "crs": "EPSG:4326",
        "transform": from_bounds(*BOUNDS, side, side),
    }
    return _geotiff(profile, None, bands.S1GRD_RAW_BANDS)


def s1grd_scene(values: np.ndarray, side: int) -> bytes:
    """A 16-band float32 S1GRD scene of ``side`` px (``values`` broadcast per band)."""
    data = np.broadcast_to(values.astype(np.float32), (16, side, side)).copy()
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": 16,
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": rasterio.transform.from_origin(500_000, 5_000_000, 100, 100),
    }
    return _geotiff(profile, data, bands.S1GRD_RAW_BANDS)


# -- a seeded mutator for the fuzz tests ----------------------------------------------------


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random mutation of a valid file: bit flips, truncation, header edits, splices."""
    buf = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # flip bits anywhere
        for _ in range(int(rng.integers(1, 16))):
            pos = int(rng.integers(len(buf)))
            buf[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncate
        buf = buf[: int(rng.integers(8, len(buf)))]
    elif kind == 2:  # overwrite header bytes (TIFF IFD / tags, NetCDF / HDF5 superblock)
        for _ in range(int(rng.integers(1, 8))):
            pos = int(rng.integers(min(len(buf), 512)))
            buf[pos] = int(rng.integers(256))
    elif kind == 3:  # write a large or odd integer into the header (sizes, offsets, counts)
        pos = int(rng.integers(8, min(len(buf), 512) - 4))
        value = int(
            rng.choice([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, int(rng.integers(2**32))])
        )
        buf[pos : pos + 4] = value.to_bytes(4, "little")
    elif kind == 4:  # duplicate or drop a chunk
        start = int(rng.integers(len(buf)))
        length = int(rng.integers(1, 256))
        if rng.random() < 0.5:
            buf[start:start] = buf[start : start + length]
        else:
            del buf[start : start + length]
    else:  # random bytes after a valid magic
        buf = buf[:8] + bytearray(rng.integers(0, 256, int(rng.integers(16, 4096)), np.uint8))
    return bytes(buf)


def odd_geotiff(rng: np.random.Generator) -> bytes:
    """A structurally valid GeoTIFF with an odd shape, data type or band count."""
    count = int(rng.choice([1, 2, 3, 7, 8, 12, 15, 16, 17]))
    dtype = str(rng.choice(["uint8", "int8", "uint16", "int16", "int32", "float32", "float64"]))
    height, width = int(rng.choice([1, 15, 16, 17, 40])), int(rng.choice([1, 16, 33, 40]))
    values = rng.normal(-12, 8, (count, height, width))
    if rng.random() < 0.2:
        values[..., 0] = rng.choice([np.nan, np.inf, -np.inf, 1e30])
    data = values.astype(dtype) if dtype.startswith("float") else values.clip(0, 120).astype(dtype)
    names: tuple[str, ...] = ()
    if rng.random() < 0.5:
        names = (bands.S1GRD_RAW_BANDS if count >= 12 else bands.GSSIC_CHANNELS)[:count]
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "transform": from_bounds(*BOUNDS, width, height),
    }
    if rng.random() < 0.7:
        profile["crs"] = "EPSG:4326"
    return _geotiff(profile, data, names)
