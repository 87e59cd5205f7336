"""The Ray engine of batch inference: Ray Data ``map_batches`` over an ONNX actor pool.

Each dataset row is one unit of tile sources (the units :func:`serving.batch.pipeline.plan_units`
cuts for the local engine too). A pool of :class:`UnitPredictor` actors, each holding one ONNX
Runtime session loaded once, decodes and predicts a unit per call with the local engine's own
functions, so both engines form the same batches and give the same numbers. The driver
streams the results into the part store as they arrive (Ray Data executes in a streaming
fashion, so neither side holds the whole run).

Ray is an optional extra (``pip install 'sarveg[ray]'``). Without ``address`` a local Ray
instance is started with ``num_cpus`` CPUs and stopped at the end; with ``address`` (e.g.
``ray://head:10001`` or ``auto``) an existing cluster is used, whose nodes must have sarveg
installed and read the input paths (a shared filesystem).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from sarveg.bundle import load_bundle
from serving.batch.inputs import TileSource
from serving.batch.pipeline import BatchJob, Columns, UnitDecoder, load_served_model, predict_unit
from serving.runtime import usable_cores

# One ONNX thread per actor: Ray's parallelism is the actors.
DEFAULT_ACTOR_THREADS = 1
# Input blocks per actor: enough to keep every actor busy, few enough to bound scheduling cost.
MAX_BLOCKS_PER_ACTOR = 16
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def ray_available() -> bool:
    """True if ``ray[data]`` can be imported."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


class UnitPredictor:
    """Ray Data actor: one ONNX session per actor, then one unit per call.

    Args:
        bundle_dir: the model bundle directory (verified again on the worker).
        intra_op_threads: ONNX Runtime threads of this actor's session.
        providers: ONNX Runtime providers (None: CUDA if usable, else CPU).
        units: units of two-band VV/VH tiles and windows (None: told per tile or scene).
    """

    def __init__(
        self,
        bundle_dir: str,
        intra_op_threads: int,
        providers: list[str] | None,
        units: str | None = None,
    ) -> None:
        self.model = load_served_model(load_bundle(bundle_dir), intra_op_threads, providers)
        self.decoder = UnitDecoder(self.model, units)

    def __call__(self, batch: dict[str, np.ndarray]) -> Columns:
        """Decode and predict each unit of ``batch`` (a ``unit`` column of JSON source lists)."""
        results = [
            predict_unit(
                self.model,
                self.decoder.decode([TileSource.from_json(item) for item in json.loads(unit)]),
            )
            for unit in batch["unit"]
        ]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def __del__(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()


class RayEngine:
    """Runs units on Ray.

    Args:
        address: an existing cluster's address; None starts a local instance.
        num_cpus: CPUs of the local instance (default: the usable cores).
        actors: actor pool size (default: the cluster's CPUs / threads per actor).
        threads_per_actor: ONNX Runtime threads (and reserved CPUs) per actor.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        actors: int | None = None,
        threads_per_actor: int = DEFAULT_ACTOR_THREADS,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.actors = actors
        self.threads_per_actor = threads_per_actor

    def _start(self) -> bool:
        """Connect to or start Ray; True if this call started it (and must stop it)."""
        import ray

        if ray.is_initialized():
            return False
        # Ray's own INFO lines would interleave with the progress bar.
        logging.getLogger("ray").setLevel(logging.WARNING)
        if self.address is not None:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            return True
        # Workers of a local instance must import this checkout even when it is not installed.
        path = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
        ray.init(
            num_cpus=self.num_cpus or usable_cores(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
        return True

    def run(
        self, job: BatchJob, units: Iterable[list[TileSource]], sink: Callable[[Columns], None]
    ) -> None:
        """Process every unit on the actor pool; ``sink`` runs in the calling thread."""
        items = [{"unit": json.dumps([s.to_json() for s in unit])} for unit in units]
        if not items:
            return
        import ray
        import ray.data

        started = self._start()
        try:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the run shows its own tiles/s bar
            cpus = int(ray.cluster_resources().get("CPU", 1))
            actors = self.actors or max(1, cpus // self.threads_per_actor)
            actors = min(actors, len(items))
            blocks = min(len(items), MAX_BLOCKS_PER_ACTOR * actors)
            dataset = ray.data.from_items(items, override_num_blocks=blocks)
            predicted = dataset.map_batches(
                UnitPredictor,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=self.threads_per_actor,
                fn_constructor_kwargs={
                    "bundle_dir": str(job.bundle.directory),
                    "intra_op_threads": self.threads_per_actor,
                    "providers": job.providers,
                    "units": job.units,
                },
            )
            for batch in predicted.iter_batches(batch_size=None, batch_format="numpy"):
                sink(batch)
        finally:
            if started:
                ray.shutdown()
