"""ONNX Runtime sessions: which execution provider, how many threads, and running a batch.

CUDA is used when onnxruntime offers ``CUDAExecutionProvider`` *and* an NVIDIA device is present
(onnxruntime-gpu lists the provider on machines without a GPU, then falls back with a warning);
otherwise the CPU provider with intra-op threads matched to the cores this process may use. The
provider a session actually got (``session.get_providers()``) is logged and reported.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# "auto" (default), "cpu" or "cuda": lets an operator pin the provider.
PROVIDER_ENV = "SARVEG_ORT_PROVIDER"
NVIDIA_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def usable_cores() -> int:
    """Return the number of CPU cores this process may run on (affinity and cgroup quota)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def gpu_present() -> bool:
    """Return True if an NVIDIA device node exists (a CUDA session could actually run)."""
    return any(Path(name).exists() for name in NVIDIA_DEVICE_FILES)


def choose_providers(preference: str | None = None) -> list[str]:
    """Return the providers to ask for, best first.

    Args:
        preference: ``"auto"``, ``"cpu"`` or ``"cuda"``; default from ``SARVEG_ORT_PROVIDER``.

    Raises:
        ValueError: an unknown preference, or ``"cuda"`` where CUDA is not available.
    """
    preference = (preference or os.environ.get(PROVIDER_ENV) or "auto").lower()
    available = ort.get_available_providers()
    if preference not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"{PROVIDER_ENV}: expected auto, cpu or cuda, found {preference!r}")
    if preference == "cpu":
        return [CPU]
    cuda_ok = CUDA in available and gpu_present()
    if preference == "cuda" and not cuda_ok:
        raise ValueError(
            f"{PROVIDER_ENV}=cuda: expected {CUDA} and an NVIDIA device, found providers "
            f"{available} and {'a' if gpu_present() else 'no'} device"
        )
    return [CUDA, CPU] if cuda_ok else [CPU]


@functools.cache
def single_threaded_blas() -> None:
    """Run numpy's BLAS on one thread in this process (once; it stays so).

    ONNX Runtime already uses the cores; numpy's matrix products (resampling, OOD distances) run
    in decode and request threads beside it, where BLAS worker threads only oversubscribe the
    cores: measured under load, a tile's resampling took 5.3 ms with 2 BLAS threads and 0.35 ms
    with one.
    """
    threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class ModelOutputs:
    """Outputs of one batch."""

    vegetation_pct: np.ndarray  # (B,) float32, 0..100
    embedding: np.ndarray  # (B, D) float32


class OnnxModel:
    """One bundle's ONNX graph in an inference session (``run`` is thread-safe)."""

    def __init__(
        self,
        model_path: Path,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        self.intra_op_threads = intra_op_threads or usable_cores()
        single_threaded_blas()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads would steal the cores that decode the next uploads.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        requested = providers or choose_providers()
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=requested
        )
        self.providers: list[str] = self.session.get_providers()
        self.provider = self.providers[0]
        if requested[0] != self.provider:
            logger.warning(
                "%s: asked for %s, onnxruntime gave %s", model_path, requested[0], self.provider
            )
        outputs = {o.name for o in self.session.get_outputs()}
        missing = {"vegetation_pct", "embedding"} - outputs
        if missing:
            raise ValueError(
                f"{model_path}: expected ONNX outputs vegetation_pct and embedding, "
                f"found {sorted(outputs)}"
            )
        self.input_name = self.session.get_inputs()[0].name

    def run(self, tiles: np.ndarray) -> ModelOutputs:
        """Run a batch ``(B, C, H, W)`` float32 in physical units (NaN allowed)."""
        vegetation_pct, embedding = self.session.run(
            ["vegetation_pct", "embedding"],
            {self.input_name: np.ascontiguousarray(tiles, dtype=np.float32)},
        )
        return ModelOutputs(
            vegetation_pct=np.asarray(vegetation_pct, np.float32).reshape(-1),
            embedding=np.asarray(embedding, np.float32),
        )
