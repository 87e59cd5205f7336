"""What one upload may cost the server: sizes, pixels, decoding processes, memory and time.

Every figure is read once from the environment (defaults in brackets), documented in
``docs/serving.md``:

- ``SARVEG_TILE_MAX_UPLOAD_MB`` [32], ``SARVEG_SCENE_MAX_UPLOAD_MB`` [256]: body size caps of
  ``/predict`` and of the scene routes (413 above).
- ``SARVEG_TILE_MAX_PIXELS`` [4,000,000], ``SARVEG_SCENE_MAX_PIXELS`` [268,435,456]: height x
  width a header may declare, checked before any pixel is read (scenes are read window by
  window, so their memory does not grow with it).
- ``SARVEG_SCENE_MAX_WINDOWS`` [16,384]: windows in one scene request's grid (larger mosaics
  belong to the batch command, which streams).
- ``SARVEG_DECODE_WORKERS`` [cores, at least 2]: decoding child processes, and the number of
  uploads decoded at once.
- ``SARVEG_DECODE_MEMORY_MB`` [1536]: address space a child may add to its idle size.
- ``SARVEG_DECODE_CPU_S`` [30]: CPU seconds one decoding request may use in a child.
- ``SARVEG_DECODE_TIMEOUT_S`` [60]: wall seconds, from the start of that file's decoding.
- ``SARVEG_DECODE_SANDBOX`` [on]: ``off`` decodes in the server process (benchmarks compare the
  two); the file checks still run, the memory and time limits do not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sarveg.scene import MAX_SCENE_PIXELS
from sarveg.tiles import MAX_TILE_PIXELS
from serving.decoding.jobs import MAX_SCENE_TILES

DEFAULT_TILE_UPLOAD_MB = 32.0
DEFAULT_SCENE_UPLOAD_MB = 256.0
DEFAULT_MEMORY_MB = 1536
DEFAULT_CPU_S = 30.0
DEFAULT_TIMEOUT_S = 60.0
ON_WORDS = frozenset({"on", "true", "1", "yes"})
OFF_WORDS = frozenset({"off", "false", "0", "no"})


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _number(name: str, default: float, integer: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", "")) if integer else float(raw)
    except ValueError:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name}: expected {kind}, found {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name}: expected a positive number, found {raw!r}")
    return value


def _switch(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ON_WORDS | OFF_WORDS:
        return raw in ON_WORDS
    raise ValueError(f"{name}: expected on or off, found {raw!r}")


@dataclass(frozen=True)
class DecodeLimits:
    """Resource limits of upload decoding (see the module docstring for the variables).

    Attributes:
        tile_max_upload_bytes: body cap of ``/predict``.
        scene_max_upload_bytes: body cap of the scene routes.
        tile_max_pixels: header budget of a tile (height x width).
        scene_max_pixels: header budget of a scene (height x width).
        scene_max_windows: windows in one scene request's grid.
        workers: decoding child processes (= concurrent decodes).
        memory_mb: address space a child may add to its idle size, MiB.
        cpu_s: CPU seconds per decoding request.
        timeout_s: wall seconds per decoding request, from its start in the child.
        sandbox: decode in child processes (False: in the calling process).
    """

    tile_max_upload_bytes: int = int(DEFAULT_TILE_UPLOAD_MB * 2**20)
    scene_max_upload_bytes: int = int(DEFAULT_SCENE_UPLOAD_MB * 2**20)
    tile_max_pixels: int = MAX_TILE_PIXELS
    scene_max_pixels: int = MAX_SCENE_PIXELS
    scene_max_windows: int = MAX_SCENE_TILES
    workers: int = 2
    memory_mb: int = DEFAULT_MEMORY_MB
    cpu_s: float = DEFAULT_CPU_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    sandbox: bool = True

    @classmethod
    def from_env(cls) -> DecodeLimits:
        """Read the limits from the environment.

        Raises:
            ValueError: a variable that is not a positive number (or on/off).
        """
        return cls(
            tile_max_upload_bytes=int(
                _number("SARVEG_TILE_MAX_UPLOAD_MB", DEFAULT_TILE_UPLOAD_MB) * 2**20
            ),
            scene_max_upload_bytes=int(
                _number("SARVEG_SCENE_MAX_UPLOAD_MB", DEFAULT_SCENE_UPLOAD_MB) * 2**20
            ),
            tile_max_pixels=int(_number("SARVEG_TILE_MAX_PIXELS", MAX_TILE_PIXELS, True)),
            scene_max_pixels=int(_number("SARVEG_SCENE_MAX_PIXELS", MAX_SCENE_PIXELS, True)),
            scene_max_windows=int(_number("SARVEG_SCENE_MAX_WINDOWS", MAX_SCENE_TILES, True)),
            workers=int(_number("SARVEG_DECODE_WORKERS", max(2, usable_cores()), True)),
            memory_mb=int(_number("SARVEG_DECODE_MEMORY_MB", DEFAULT_MEMORY_MB, True)),
            cpu_s=_number("SARVEG_DECODE_CPU_S", DEFAULT_CPU_S),
            timeout_s=_number("SARVEG_DECODE_TIMEOUT_S", DEFAULT_TIMEOUT_S),
            sandbox=_switch("SARVEG_DECODE_SANDBOX", True),
        )
