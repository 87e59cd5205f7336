"""Decoding NetCDF uploads in a child process, so a corrupt file cannot take the server down.

GDAL's netCDF driver (netCDF-C and HDF5 underneath) can crash the whole process on a damaged
file: fuzzing a sartiles NetCDF found a deterministic segmentation fault when the dataset is
closed, which no Python ``try`` can catch. GeoTIFF decoding (libtiff) survived the same fuzzing
and stays in-process. A crashed child is replaced and the upload answered as bad input.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sarveg.errors import TileError
from sarveg.tiles import Tile, read_tile

# A decode that takes longer than this is treated like a crash (a hostile file can make a
# decoder spin); the child is replaced.
DECODE_TIMEOUT_S = 60.0


def _warm_up() -> bool:
    """Run in the child once, so the first upload does not pay for imports."""
    return True


def _start_method() -> str:
    # Forking a threaded server is unsafe; forkserver forks from a clean helper process.
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class IsolatedDecoder:
    """Runs :func:`sarveg.read_tile` in a child process (one at a time; thread-safe)."""

    def __init__(self, timeout_s: float = DECODE_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _current_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context(_start_method())
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        children = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in children:  # a hung decoder would not exit by itself
            if process.is_alive():
                process.kill()

    def start(self) -> None:
        """Start the child now (at service start-up) rather than on the first NetCDF upload."""
        self._current_pool().submit(_warm_up).result(timeout=self.timeout_s)

    def read_tile(self, data: bytes, modality: str | None = None) -> Tile:
        """Decode ``data`` like :func:`sarveg.read_tile`, in the child process.

        Raises:
            TileError: the reader's own errors, or the decoder crashed or hung on the file.
        """
        # A crash also breaks the uploads queued behind the culprit: each gets one retry in a
        # fresh child, so only a file that crashes the decoder twice is refused.
        for attempt in range(2):
            pool = self._current_pool()
            future = pool.submit(read_tile, data, modality=modality)
            try:
                return future.result(timeout=self.timeout_s)
            except BrokenProcessPool:
                self._discard(pool)
                if attempt == 0:
                    continue
                raise TileError(
                    "could not decode the raster: expected a readable sartiles NetCDF, found a "
                    "file that crashed the NetCDF decoder (corrupt or truncated?)"
                ) from None
            except TimeoutError:
                self._discard(pool)
                raise TileError(
                    f"could not decode the raster: expected a NetCDF that decodes within "
                    f"{self.timeout_s:g} s, found one that did not"
                ) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the child process."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
