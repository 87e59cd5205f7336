"""Turning untrusted upload bytes into model inputs, where they cannot harm the server.

- :mod:`serving.decoding.limits`: upload caps, pixel budgets and child limits from the env.
- :mod:`serving.decoding.hdf5_scan`: refusing HDF5 files that point outside themselves.
- :mod:`serving.decoding.jobs`: the decoding work (tiles and scenes window by window).
- :mod:`serving.decoding.child`: the child process that runs the jobs under resource limits.
- :mod:`serving.decoding.pool`: the pool of children, and the in-process alternative.
"""

from serving.decoding.jobs import (
    ModelSpec,
    PreparedTile,
    SceneHeader,
    SceneRequest,
    TileRequest,
    Window,
    WindowBatch,
)
from serving.decoding.limits import DecodeLimits
from serving.decoding.pool import Decoder, DecoderPool, InProcessDecoder, make_decoder

__all__ = [
    "DecodeLimits",
    "Decoder",
    "DecoderPool",
    "InProcessDecoder",
    "ModelSpec",
    "PreparedTile",
    "SceneHeader",
    "SceneRequest",
    "TileRequest",
    "Window",
    "WindowBatch",
    "make_decoder",
]
