r"""Refusing HDF5 (NetCDF4) uploads that would make a decoder open a second file.

HDF5 lets a file point outside itself: a dataset's values can live in *external storage* (raw
bytes of any file, at any offset), a link can be *external* (an object in another file) or *soft*
(a path that a later resolution may send elsewhere), a *virtual dataset* maps other files'
datasets into its own, and a *filter* outside the built-in ones makes the library load a plugin
from disk. netCDF-C (under GDAL) follows all of these, so a few kilobytes of upload could read
any file on the server. :func:`scan_hdf5` walks every object of the file with h5py, without
reading any data, and refuses the file if anything points outside it.

Classic NetCDF (``CDF\\x01`` / ``\\x02`` / ``\\x05``) has none of these features and is not scanned.
"""

from __future__ import annotations

import io

import h5py

from sarveg.errors import TileError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# deflate, shuffle and fletcher32: what netCDF-C writes (zlib compression, shuffle, checksums).
ALLOWED_FILTERS: dict[int, str] = {
    h5py.h5z.FILTER_DEFLATE: "deflate",
    h5py.h5z.FILTER_SHUFFLE: "shuffle",
    h5py.h5z.FILTER_FLETCHER32: "fletcher32",
}
# A sartiles file holds a dozen objects; a file with thousands is not one, and walking it would
# only cost time.
MAX_OBJECTS = 1_000
STORED_LAYOUTS = frozenset({h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED})
LINK_KINDS = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}


def _refuse(found: str) -> TileError:
    return TileError(
        "refused NetCDF4/HDF5 file: expected a self-contained file (no external storage, "
        f"external or soft links, virtual datasets or filters beyond deflate, shuffle and "
        f"fletcher32), found {found}"
    )


def _check_dataset(dataset: h5py.Dataset, name: str) -> None:
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise _refuse(f"a virtual dataset ({name!r})")
    if layout not in STORED_LAYOUTS:
        raise _refuse(f"an unknown storage layout ({layout}) for {name!r}")
    if plist.get_external_count() > 0:
        raise _refuse(f"external storage for {name!r}")
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in ALLOWED_FILTERS:
            raise _refuse(f"filter {code} on {name!r}")


def scan_hdf5(data: bytes) -> None:
    """Refuse an HDF5 file whose objects point outside it (see the module docstring).

    Args:
        data: the whole file.

    Raises:
        TileError: the file points outside itself, has too many objects, or is not readable
            HDF5.
    """
    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            _walk(handle)
    except TileError:
        raise
    except Exception:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError, RuntimeError...
        raise TileError(
            "could not decode the raster: expected a readable NetCDF4/HDF5 file, found corrupt, "
            "truncated or unsupported data"
        ) from None


def _walk(root: h5py.File) -> None:
    seen: set[object] = set()
    stack: list[tuple[h5py.Group, str]] = [(root, "/")]
    count = 0
    while stack:
        group, path = stack.pop()
        names = list(group.id)  # link names, bytes, without resolving anything
        for raw in names:
            count += 1
            if count > MAX_OBJECTS:
                raise _refuse(f"more than {MAX_OBJECTS:,} objects")
            name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            full = f"{path.rstrip('/')}/{name}"
            kind = group.id.links.get_info(raw).type
            if kind != h5py.h5l.TYPE_HARD:
                raise _refuse(f"{LINK_KINDS.get(kind, f'a user-defined link ({kind})')} ({full!r})")
            obj = group[raw]
            if isinstance(obj, h5py.Dataset):
                _check_dataset(obj, full)
            elif isinstance(obj, h5py.Group):
                token = h5py.h5o.get_info(obj.id).addr
                if token not in seen:
                    seen.add(token)
                    stack.append((obj, full))
