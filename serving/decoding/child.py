"""The decoding child process: limits itself, then answers decoding requests from a pipe.

Requests are ``(kind, payload)`` pairs: ``("tile", TileRequest)``, ``("scene_open",
SceneRequest)``, ``("scene_next", size)`` and ``("scene_close", None)``; a request's ``data``
may be an ``InBuffer`` standing for bytes in the shared upload buffer. Replies are
``("ok", value)`` or ``("error", message)``.

Before the first request the child caps its address space (its idle size plus the configured
headroom); before each request it gives itself a fresh CPU-time allowance, past which the kernel
ends it with SIGXCPU. A file that makes the decoder allocate too much, spin or crash therefore
costs one child, which the parent replaces, never the server.
"""

from __future__ import annotations

import logging
import mmap
import os
import resource
import sys
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import rasterio

from sarveg.errors import TileError
from serving.decoding.jobs import InBuffer, SceneSession, prepare_tile

logger = logging.getLogger(__name__)
# GDAL's block cache defaults to 5 % of the machine's memory; one tile needs a few blocks.
GDAL_CACHE_MB = 64


def idle_address_space() -> int:
    """The virtual memory size of this process in bytes (``VmSize``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def limit_memory(headroom_mb: int) -> None:
    """Cap the address space at its current size plus ``headroom_mb``."""
    limit = idle_address_space() + headroom_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def allow_cpu(seconds: float) -> None:
    """Let the next request use ``seconds`` more CPU time before SIGXCPU ends the process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


class _Handler:
    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.session: SceneSession | None = None

    def handle(self, kind: str, payload: Any) -> Any:
        if kind == "tile":
            return prepare_tile(payload)
        if kind == "scene_open":
            self.close_session()
            self.session = SceneSession(payload)
            return self.session.header
        if kind == "scene_next":
            if self.session is None:
                raise TileError("no open scene")
            return self.session.next_batch(payload)
        if kind == "scene_close":
            self.close_session()
            return None
        raise ValueError(f"unknown decoding request {kind!r}")

    def close_session(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            session.close()

    def reply(self, kind: str, payload: Any) -> tuple[str, Any]:
        try:
            return ("ok", self.handle(kind, payload))
        except TileError as error:
            self.close_session()
            return ("error", str(error))
        except MemoryError:
            self.close_session()
            return (
                "error",
                "raster too large to decode: expected a file that decodes within "
                f"{self.memory_mb} MiB, found one that needs more",
            )
        except Exception as error:  # noqa: BLE001 - a hostile file must not end the child silently
            self.close_session()
            logger.warning("decoder failure on an upload", exc_info=True)
            return (
                "error",
                "could not decode the raster: expected a well-formed GeoTIFF or NetCDF, found "
                f"data that made the decoder fail ({type(error).__name__})",
            )


def run_child(
    conn: Connection, buffer_fd: int, memory_mb: int, cpu_s: float, buffer_size: int
) -> None:
    """The child's main loop.

    Args:
        conn: the socket to the parent.
        buffer_fd: the upload buffer (a memfd the parent writes), mapped read-only here.
        memory_mb: address space the child may add to its idle size.
        cpu_s: CPU seconds per request.
        buffer_size: size of the upload buffer.
    """
    buffer = mmap.mmap(buffer_fd, buffer_size, prot=mmap.PROT_READ)
    os.close(buffer_fd)
    limit_memory(memory_mb)
    try:
        conn.send(("ready", None))
    except (BrokenPipeError, ConnectionError, OSError):
        return  # the parent went away while this child started
    handler = _Handler(memory_mb)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        while True:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                return
            except MemoryError:
                conn.send(("error", f"upload too large to decode within {memory_mb} MiB"))
                continue
            allow_cpu(cpu_s)
            data = getattr(payload, "data", None)
            if isinstance(data, InBuffer):
                payload = replace(payload, data=buffer[: data.length])
            reply = handler.reply(kind, payload)
            del payload, data
            try:
                conn.send(reply)
            except MemoryError:
                conn.send(("error", f"answer too large to return within {memory_mb} MiB"))


if __name__ == "__main__":
    # python -m serving.decoding.child SOCKET_FD BUFFER_FD MEMORY_MB CPU_S BUFFER_SIZE
    socket_fd, buffer_fd, memory_mb, cpu_s, buffer_size = sys.argv[1:6]
    run_child(
        Connection(int(socket_fd)), int(buffer_fd), int(memory_mb), float(cpu_s), int(buffer_size)
    )
