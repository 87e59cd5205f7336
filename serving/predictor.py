"""The predictor: bundles in, tile and scene answers out. Plain Python, no BentoML.

``Predictor`` owns one :class:`~serving.model.ServedModel` per modality. It decodes uploads
through a :mod:`serving.decoding` decoder (child processes with resource limits by default; the
file is recognised by its content, never by a declared content type), picks the bundle by the
tile's modality, and answers tiles, scenes, scene maps and the model card. The HTTP service
wraps it; batch scripts and tests can use it directly.

Bundles are found from ``SARVEG_MODELS``: an ``os.pathsep``-separated list of bundle
directories or of folders holding bundle directories (default: ``models/`` of the repository).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

import sarveg
from sarveg.bundle import MANIFEST_FILE, MODEL_FILE, Bundle, BundleError, load_bundle
from sarveg.dual_pol import check_units
from sarveg.errors import TileError
from sarveg.tiles import check_modality
from serving.decoding import DecodeLimits, ModelSpec, PreparedTile, make_decoder
from serving.decoding.jobs import SceneRequest, TileRequest
from serving.model import ServedModel
from serving.runtime import OnnxModel, choose_providers
from serving.scenes import SceneRun, run_scene, summarise_scene, write_scene_map
from serving.schemas import BundleCard, ModelCard, ScenePrediction, ServiceLimits, TilePrediction

logger = logging.getLogger(__name__)

MODELS_ENV = "SARVEG_MODELS"
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MAX_BATCH_SIZE = 32


def find_bundle_dirs(spec: str | None = None) -> list[Path]:
    """Return the bundle directories named by ``spec`` (default: ``$SARVEG_MODELS``).

    Args:
        spec: ``os.pathsep``-separated bundle directories or folders of bundle directories;
            empty or None means ``$SARVEG_MODELS``, then the repository's ``models/``.

    Raises:
        BundleError: an entry that does not exist, or no bundle found at all.
    """
    spec = spec or os.environ.get(MODELS_ENV) or str(DEFAULT_MODELS_DIR)
    found: list[Path] = []
    for entry in filter(None, spec.split(os.pathsep)):
        path = Path(entry).expanduser()
        if (path / MANIFEST_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.glob(f"*/{MANIFEST_FILE}")))
        else:
            raise BundleError(
                f"{MODELS_ENV}: expected a bundle directory or a folder of bundles, "
                f"found nothing at {path}"
            )
    if not found:
        raise BundleError(
            f"no model bundles in {spec!r}: expected directories holding {MANIFEST_FILE} "
            f"(set {MODELS_ENV}, or export a model into models/)"
        )
    return found


class Predictor:
    """Answers tiles and scenes with one bundle per modality.

    Args:
        bundles: verified bundles, at most one per modality.
        providers: ONNX Runtime providers to ask for (default: CUDA if usable, else CPU).
        intra_op_threads: threads per session (default: the usable cores).
        max_batch_size: most tiles per model call.
        limits: pixel budgets and decoding limits (default: from the environment,
            :class:`serving.decoding.DecodeLimits`); ``limits.sandbox`` decodes in child
            processes, so a file that crashes, spins or bloats the decoder costs a child only.
    """

    def __init__(
        self,
        bundles: Sequence[Bundle],
        *,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        limits: DecodeLimits | None = None,
    ) -> None:
        if not bundles:
            raise BundleError("expected at least one bundle, found none")
        self.max_batch_size = max_batch_size
        self.limits = limits if limits is not None else DecodeLimits.from_env()
        self.models: dict[str, ServedModel] = {}
        requested = providers or choose_providers()
        for bundle in bundles:
            modality = bundle.manifest.modality
            if modality in self.models:
                raise BundleError(
                    f"{bundle.directory}: expected one bundle per modality, found a second "
                    f"{modality} bundle (first: {self.models[modality].manifest.name})"
                )
            onnx_model = OnnxModel(
                bundle.model_path, providers=requested, intra_op_threads=intra_op_threads
            )
            self.models[modality] = ServedModel(bundle, onnx_model)
            logger.info(
                "loaded bundle %s (%s, input %d px, tiles of %d px) on %s with %d threads",
                bundle.manifest.name,
                modality,
                bundle.manifest.input_size,
                bundle.manifest.source_tile_px,
                onnx_model.provider,
                onnx_model.intra_op_threads,
            )
        self.specs = {
            modality: ModelSpec(
                model.manifest.input_size,
                model.manifest.source_tile_px,
                model.manifest.footprint_m,
            )
            for modality, model in self.models.items()
        }
        self.decoder = make_decoder(self.limits)

    @classmethod
    def from_paths(
        cls,
        spec: str | None = None,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        limits: DecodeLimits | None = None,
    ) -> Predictor:
        """Load every bundle named by ``spec`` (see :func:`find_bundle_dirs`)."""
        return cls(
            [load_bundle(path) for path in find_bundle_dirs(spec)],
            providers=providers,
            intra_op_threads=intra_op_threads,
            max_batch_size=max_batch_size,
            limits=limits,
        )

    def close(self) -> None:
        """Stop the decoding child processes, if any."""
        self.decoder.close()

    def model_for(self, modality: str) -> ServedModel:
        """Return the bundle for ``modality``; a ``TileError`` names what this server serves."""
        check_modality(modality)
        if modality not in self.models:
            raise TileError(
                f"no model for {modality} tiles: this server expects "
                f"{' or '.join(self.models)} tiles"
            )
        return self.models[modality]

    def decode(
        self,
        data: bytes,
        modality: str | None = None,
        units: str | None = None,
        name: str | None = None,
    ) -> tuple[ServedModel, PreparedTile]:
        """Decode an uploaded tile, resample it to its bundle's input and pick the bundle.

        Args:
            data: the file's bytes (GeoTIFF or sartiles NetCDF, recognised by content).
            modality: insist on ``"s1grd"`` or ``"gssic"``; None infers it from the bands.
            units: declared units of a two-band VV/VH file (None: detected from the values).
            name: the upload's file name (searched for an acquisition date).

        Raises:
            TileError: anything that is not a tile this server can answer.
        """
        if modality is not None:
            self.model_for(modality)  # an unknown or unserved modality fails before decoding
        prepared = self.decoder.prepare_tile(
            TileRequest(data, modality, self.specs, self.limits.tile_max_pixels, units, name)
        )
        return self.model_for(prepared.modality), prepared

    def prepare(self, data: bytes, modality: str | None = None) -> tuple[ServedModel, np.ndarray]:
        """Decode and resample an upload: its bundle and a ``(C, S, S)`` model input."""
        model, prepared = self.decode(data, modality)
        return model, prepared.array

    def predict(
        self,
        data: bytes,
        modality: str | None = None,
        include_embedding: bool = False,
        units: str | None = None,
        name: str | None = None,
    ) -> TilePrediction:
        """Answer one tile (decode, resample, run, OOD), without cross-request batching."""
        model, prepared = self.decode(data, modality, units, name)
        outcome = model.predict_batch(prepared.array[None])[0]
        return model.tile_prediction(outcome, include_embedding, prepared.input)

    def predict_scene(
        self, data: bytes, modality: str | None = None, units: str | None = None
    ) -> ScenePrediction:
        """Answer a scene: its summary, every predicted window and every skipped one.

        ``units`` declares a two-band VV/VH scene's units (None: told once for the scene).
        """
        model, run = self._run_scene(data, modality, units)
        return summarise_scene(model, run)

    def predict_scene_map(
        self, data: bytes, modality: str | None = None, units: str | None = None
    ) -> bytes:
        """Answer a scene as a GeoTIFF map (bands vegetation_pct, ood_p_value, unreliable)."""
        return write_scene_map(*self._run_scene(data, modality, units))

    def _run_scene(
        self, data: bytes, modality: str | None, units: str | None
    ) -> tuple[ServedModel, SceneRun]:
        if modality is not None:
            self.model_for(modality)
        limits = self.limits
        request = SceneRequest(
            data,
            modality,
            self.specs,
            limits.scene_max_pixels,
            limits.scene_max_windows,
            check_units(units),
        )
        with self.decoder.open_scene(request) as stream:
            model = self.model_for(stream.header.modality)
            return model, run_scene(model, stream, self.max_batch_size)

    def model_card(self, notes: Sequence[str] = ()) -> ModelCard:
        """Describe the loaded bundles, the runtime and the limits."""
        cards = []
        for model in self.models.values():
            manifest = model.manifest
            cards.append(
                BundleCard(
                    name=manifest.name,
                    modality=manifest.modality,
                    band_names=manifest.band_names,
                    units=manifest.units,
                    input_size=manifest.input_size,
                    source_tile_px=manifest.source_tile_px,
                    resampling=manifest.resampling,
                    embedding_size=manifest.embedding_size,
                    architecture=manifest.architecture,
                    metrics=manifest.metrics,
                    ood=manifest.ood,
                    provenance=manifest.provenance,
                    model_sha256=manifest.files[MODEL_FILE],
                    provider=model.onnx.provider,
                )
            )
        first = next(iter(self.models.values()))
        return ModelCard(
            bundles=cards,
            providers_available=ort.get_available_providers(),
            intra_op_threads=first.onnx.intra_op_threads,
            max_batch_size=self.max_batch_size,
            limits=ServiceLimits.from_limits(self.limits),
            sarveg_version=sarveg.__version__,
            notes=list(notes),
        )
