"""Decoding uploads in a pool of limited child processes, or in-process.

:class:`DecoderPool` keeps ``limits.workers`` children (:mod:`serving.decoding.child`). A
request takes an idle child for itself, so a slow file holds one child and the others keep
serving; its wall-clock timeout starts when that child starts on it, not while it queues. A
child that times out is killed; one that dies (CPU limit, crash) or is killed is replaced before
it is handed out again, and the request is answered as bad input.

:class:`InProcessDecoder` runs the same jobs in the calling process (same checks, no resource
limits): for tests, benchmarks and trusted local files.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from sarveg.errors import TileError
from serving.decoding.jobs import (
    InBuffer,
    PreparedTile,
    SceneHeader,
    SceneRequest,
    SceneSession,
    TileRequest,
    WindowBatch,
    prepare_tile,
)
from serving.decoding.limits import DecodeLimits

CHILD_MODULE = "serving.decoding.child"
PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
# A child imports numpy, rasterio and h5py before it says it is ready.
STARTUP_TIMEOUT_S = 120.0
CHILD_ENV = {
    # No HDF5 filter plugin is ever loaded from disk, whatever a file asks for (the pre-scan
    # refuses such files; this holds even if one slipped past it).
    "HDF5_PLUGIN_PRELOAD": "::",
    # One thread each: there are as many children as cores already.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GDAL_NUM_THREADS": "1",
}


class SceneStream(Protocol):
    """An open scene: its header and its batches of windows."""

    header: SceneHeader

    def next_batch(self, size: int) -> WindowBatch | None:
        """The next batch of windows, None at the end."""
        ...


class Decoder(Protocol):
    """What the predictor needs to turn upload bytes into model inputs."""

    def prepare_tile(self, request: TileRequest) -> PreparedTile:
        """Decode one tile (see :func:`serving.decoding.jobs.prepare_tile`)."""
        ...

    def open_scene(self, request: SceneRequest) -> contextlib.AbstractContextManager[SceneStream]:
        """Open a scene for batch reading (see :class:`serving.decoding.jobs.SceneSession`)."""
        ...

    def close(self) -> None:
        """Release processes, if any."""
        ...


class InProcessDecoder:
    """Runs the decoding jobs in this process."""

    def prepare_tile(self, request: TileRequest) -> PreparedTile:
        """Decode one tile here."""
        return prepare_tile(request)

    @contextlib.contextmanager
    def open_scene(self, request: SceneRequest) -> Iterator[SceneStream]:
        """Open a scene here."""
        session = SceneSession(request)
        try:
            yield session
        finally:
            session.close()

    def close(self) -> None:
        """Nothing to release."""


def _death_message(exitcode: int | None, limits: DecodeLimits) -> str:
    if exitcode == -signal.SIGXCPU:
        return (
            f"could not decode the raster: expected a file that decodes within "
            f"{limits.cpu_s:g} CPU seconds, found one that did not"
        )
    return (
        "could not decode the raster: expected a readable GeoTIFF or NetCDF, found a file that "
        "crashed the decoder (corrupt or hostile?)"
    )


def upload_buffer_fd() -> int:
    """A descriptor for an anonymous shared buffer: a memfd on Linux, else an unlinked file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("sarveg-upload", os.MFD_CLOEXEC)
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - the descriptor outlives the object
    fd = os.dup(handle.fileno())
    handle.close()
    return fd


class _Child:
    """One decoding process, its socket and its upload buffer.

    The child is a fresh interpreter (``python -m serving.decoding.child``), not a
    ``multiprocessing`` process: it never re-imports the caller's ``__main__`` and shares nothing
    with the server but two descriptors. Uploads up to the tile cap reach it through a shared
    memory file (``memfd``) that it maps read-only, because pushing the bytes through the socket
    costs the server more CPU than decoding a small tile does; larger uploads (scenes) go through
    the socket.
    """

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.buffer_size = limits.tile_max_upload_bytes
        ours, theirs = socket.socketpair()
        fd = upload_buffer_fd()
        try:
            os.ftruncate(fd, self.buffer_size)
            self.buffer = mmap.mmap(fd, self.buffer_size)
            command = [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno()), str(fd)]
            command += [str(limits.memory_mb), str(limits.cpu_s), str(self.buffer_size)]
            path = os.pathsep.join(filter(None, [PROJECT_ROOT, os.getenv("PYTHONPATH")]))
            env = os.environ | CHILD_ENV | {"PYTHONPATH": path}
            self.process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(), fd), stdin=subprocess.DEVNULL, env=env
            )
        finally:
            os.close(fd)
            theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.broken = False

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return not self.broken and self.process.poll() is None

    def _wait_ready(self) -> None:
        # The child says so once its imports are done: start-up never counts against a file.
        if self.ready:
            return
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"decoding child not ready after {STARTUP_TIMEOUT_S:g} s")
        try:
            self.conn.recv()
        except (EOFError, ConnectionError, OSError):
            self.kill()
            raise _IdleDeath from None
        self.ready = True

    def call(self, kind: str, payload: Any = None) -> Any:
        """Send one request and wait for its answer (the timeout starts now)."""
        self._wait_ready()
        data = getattr(payload, "data", None)
        if isinstance(data, bytes) and len(data) <= self.buffer_size:
            self.buffer[: len(data)] = data
            payload = replace(payload, data=InBuffer(len(data)))
        try:
            self.conn.send((kind, payload))
        except (BrokenPipeError, ConnectionError, OSError):
            self.kill()
            raise _IdleDeath from None
        if not self.conn.poll(self.limits.timeout_s):
            self.kill()
            raise TileError(
                f"could not decode the raster: expected a file that decodes within "
                f"{self.limits.timeout_s:g} s, found one that did not"
            )
        try:
            status, value = self.conn.recv()
        except (EOFError, ConnectionError, OSError):
            try:
                returncode = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                returncode = None
            self.kill()
            raise TileError(_death_message(returncode, self.limits)) from None
        if status == "error":
            raise TileError(value)
        return value

    def kill(self) -> None:
        """End the process (idempotent)."""
        self.broken = True
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.conn.close()
        self.buffer.close()


class _IdleDeath(Exception):
    """The child was found dead before it got the request (nothing of it was decoded)."""


class _ChildScene:
    """A scene open in a child; the child is held until the scene is closed."""

    def __init__(self, child: _Child, header: SceneHeader) -> None:
        self.child = child
        self.header = header

    def next_batch(self, size: int) -> WindowBatch | None:
        return self.child.call("scene_next", size)


class DecoderPool:
    """``limits.workers`` decoding children, each taken by one request at a time.

    Args:
        limits: memory, CPU time, timeout and number of children.
    """

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self._idle: queue.SimpleQueue[_Child] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._children: list[_Child] = []
        self._closed = False
        for _ in range(limits.workers):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Child:
        child = _Child(self.limits)
        with self._lock:
            self._children = [c for c in self._children if not c.broken] + [child]
        return child

    @contextlib.contextmanager
    def _child(self) -> Iterator[_Child]:
        child = self._idle.get()
        if not child.alive():  # died while idle (killed from outside)
            child.kill()
            child = self._spawn()
        try:
            yield child
        finally:
            if not self._closed:
                self._idle.put(self._spawn() if child.broken else child)

    def _call(self, child: _Child, kind: str, payload: Any = None) -> Any:
        try:
            return child.call(kind, payload)
        except _IdleDeath:
            raise TileError(_death_message(child.process.returncode, self.limits)) from None

    def prepare_tile(self, request: TileRequest) -> PreparedTile:
        """Decode one tile in a child."""
        request = replace(request, specs=dict(request.specs))  # a plain dict pickles
        for attempt in range(2):
            with self._child() as child:
                try:
                    return child.call("tile", request)
                except _IdleDeath:
                    if attempt:  # a fresh child died before reading: a server fault
                        raise RuntimeError("decoding child died before its first request") from None
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def open_scene(self, request: SceneRequest) -> Iterator[SceneStream]:
        """Open a scene in a child, which stays with the scene until it is closed."""
        with self._child() as child:
            header = self._call(child, "scene_open", replace(request, specs=dict(request.specs)))
            del request
            try:
                yield _ChildScene(child, header)
            finally:
                if not child.broken:
                    with contextlib.suppress(TileError, _IdleDeath):
                        child.call("scene_close")

    def pids(self) -> list[int]:
        """Process ids of the live children (for memory accounting)."""
        with self._lock:
            return [c.pid for c in self._children if not c.broken]

    def close(self) -> None:
        """End every child."""
        self._closed = True
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            child.kill()


def make_decoder(limits: DecodeLimits) -> Decoder:
    """A :class:`DecoderPool`, or an :class:`InProcessDecoder` when the sandbox is off."""
    return DecoderPool(limits) if limits.sandbox else InProcessDecoder()
