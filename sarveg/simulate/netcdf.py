"""A small writer for the NetCDF classic format (CDF-1 / CDF-2), in pure numpy.

The core package may not depend on netCDF4 or h5py, and GDAL's netCDF driver cannot write the
4-D ``coherence(season, deltadays, y, x)`` variable sartiles produces, so the simulator encodes
NetCDF itself. The classic format is simple (spec: "NetCDF Classic and 64-bit Offset File
Formats", Unidata): a big-endian header listing dimensions, global attributes and variables with
their attributes, types, sizes and file offsets, followed by each variable's data, padded to
4 bytes. No record (unlimited) dimension is used.

NC_BYTE is signed in the classic model; unsigned bytes are written as NC_BYTE with the attribute
``_Unsigned = "true"`` (the NetCDF Users Guide convention GDAL and xarray honour).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

NC_DIMENSION, NC_VARIABLE, NC_ATTRIBUTE = 0x0A, 0x0B, 0x0C
NC_TYPES: dict[str, int] = {
    "i1": 1,  # NC_BYTE
    "u1": 1,  # NC_BYTE, flagged _Unsigned by the caller
    "S1": 2,  # NC_CHAR
    "i2": 3,  # NC_SHORT
    "i4": 4,  # NC_INT
    "f4": 5,  # NC_FLOAT
    "f8": 6,  # NC_DOUBLE
}
CDF1_MAX_OFFSET = 2**31 - 1

Attribute = (
    str | int | float | np.ndarray | np.generic | list[float] | list[int] | tuple[float, ...]
)


@dataclass
class NcVariable:
    """One variable: name, dimension names, data (shape matching the dims) and attributes."""

    name: str
    dims: tuple[str, ...]
    data: np.ndarray
    attrs: dict[str, Attribute] = field(default_factory=dict)


def pad4(blob: bytes) -> bytes:
    """Zero-pad to a multiple of 4 bytes."""
    return blob + b"\x00" * (-len(blob) % 4)


def type_code(dtype: np.dtype) -> tuple[int, np.dtype]:
    """The classic type code and big-endian numpy dtype for ``dtype``."""
    key = dtype.str[1:]
    if key not in NC_TYPES:
        raise ValueError(
            f"unsupported NetCDF classic type: expected one of {sorted(NC_TYPES)}, found {key}"
        )
    return NC_TYPES[key], np.dtype(">" + key) if key not in ("i1", "u1", "S1") else dtype


def encode_name(name: str) -> bytes:
    """``nelems namestring`` padded to 4 bytes."""
    raw = name.encode("utf-8")
    return struct.pack(">i", len(raw)) + pad4(raw)


def attribute_values(value: Attribute) -> np.ndarray:
    """Normalise a Python or numpy attribute value to a 1-D numpy array of a classic type."""
    if isinstance(value, str):
        return np.frombuffer(value.encode("utf-8"), dtype="S1")
    if isinstance(value, bool):
        raise ValueError("boolean attributes are not supported: use 0/1 or a string")
    if isinstance(value, int):
        return np.array([value], dtype=np.int32)
    if isinstance(value, float):
        return np.array([value], dtype=np.float64)
    if isinstance(value, list):
        kind = np.float64 if any(isinstance(v, float) for v in value) else np.int32
        return np.asarray(value, dtype=kind)
    return np.atleast_1d(np.asarray(value))


@lru_cache(maxsize=4096, typed=True)  # typed: 0, 0.0 and np.uint8(0) encode differently
def encode_attribute(name: str, value: Attribute) -> bytes:
    """One ``attr``: name, type, count and values padded to 4 bytes (cached: most repeat)."""
    values = attribute_values(list(value) if isinstance(value, tuple) else value)
    code, big = type_code(values.dtype)
    return (
        encode_name(name)
        + struct.pack(">ii", code, values.size)
        + pad4(values.astype(big, copy=False).tobytes())
    )


def encode_attributes(attrs: dict[str, Attribute]) -> bytes:
    """``att_list``: ABSENT or NC_ATTRIBUTE nelems [attr ...]."""
    if not attrs:
        return struct.pack(">ii", 0, 0)
    out = [struct.pack(">ii", NC_ATTRIBUTE, len(attrs))]
    for name, value in attrs.items():
        if isinstance(value, list):
            value = tuple(value)  # hashable for the cache
        if isinstance(value, np.ndarray):
            values = attribute_values(value)
            code, big = type_code(values.dtype)
            out.append(encode_name(name) + struct.pack(">ii", code, values.size))
            out.append(pad4(values.astype(big, copy=False).tobytes()))
        else:
            out.append(encode_attribute(name, value))
    return b"".join(out)


def encode_netcdf(
    dims: dict[str, int],
    variables: list[NcVariable],
    attrs: dict[str, Attribute] | None = None,
) -> bytes:
    """Encode a NetCDF classic file.

    Args:
        dims: dimension names and lengths, in file order (all fixed-size, non-zero).
        variables: the variables, written in this order.
        attrs: global attributes.

    Returns:
        The file's bytes (CDF-1, or CDF-2 when offsets exceed 2 GiB).

    Raises:
        ValueError: a variable's shape does not match its dimensions, or a type is unsupported.
    """
    dim_ids = {name: i for i, name in enumerate(dims)}
    encoded: list[tuple[NcVariable, int, bytes]] = []
    for var in variables:
        expected = tuple(dims[d] for d in var.dims)
        if var.data.shape != expected:
            raise ValueError(
                f"variable {var.name}: expected shape {expected} from dims {var.dims}, "
                f"found {var.data.shape}"
            )
        code, big = type_code(var.data.dtype)
        data = pad4(np.ascontiguousarray(var.data).astype(big, copy=False).tobytes())
        encoded.append((var, code, data))

    def header(version: int, offsets: list[int]) -> bytes:
        width = ">i" if version == 1 else ">q"
        parts = [b"CDF" + bytes([version]), struct.pack(">i", 0)]
        if dims:
            parts.append(struct.pack(">ii", NC_DIMENSION, len(dims)))
            for name, length in dims.items():
                parts.append(encode_name(name) + struct.pack(">i", length))
        else:
            parts.append(struct.pack(">ii", 0, 0))
        parts.append(encode_attributes(attrs or {}))
        if encoded:
            parts.append(struct.pack(">ii", NC_VARIABLE, len(encoded)))
        else:
            parts.append(struct.pack(">ii", 0, 0))
        for (var, code, data), begin in zip(encoded, offsets, strict=True):
            parts.append(encode_name(var.name))
            parts.append(struct.pack(">i", len(var.dims)))
            parts.append(b"".join(struct.pack(">i", dim_ids[d]) for d in var.dims))
            parts.append(encode_attributes(var.attrs))
            parts.append(struct.pack(">ii", code, len(data)))
            parts.append(struct.pack(width, begin))
        return b"".join(parts)

    total = sum(len(d) for _, _, d in encoded)
    version = 1
    size = len(header(version, [0] * len(encoded)))
    if size + total > CDF1_MAX_OFFSET:
        version = 2
        size = len(header(version, [0] * len(encoded)))
    offsets, position = [], size
    for _, _, data in encoded:
        offsets.append(position)
        position += len(data)
    return header(version, offsets) + b"".join(d for _, _, d in encoded)


def write_netcdf(
    path: str | Path,
    dims: dict[str, int],
    variables: list[NcVariable],
    attrs: dict[str, Attribute] | None = None,
) -> int:
    """Write a NetCDF classic file (see ``encode_netcdf``); returns the bytes written."""
    blob = encode_netcdf(dims, variables, attrs)
    Path(path).write_bytes(blob)
    return len(blob)
