"""One bundle ready to serve: its ONNX session, its OOD scorer and the tile -> result path.

Tiles arrive in physical units at any pixel size; they are resampled to the bundle's
``input_size`` with the one rule training used (:func:`sarveg.resample.resample_tile`), run
through the graph in batches, and every tile gets its OOD block and conformal interval.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from sarveg.bundle import Bundle, BundleManifest
from sarveg.dual_pol import InputInfo
from sarveg.errors import TileError
from sarveg.footprint import footprint_mismatch
from sarveg.ood import OODScorer, SetOOD, TileOOD
from sarveg.resample import resample_tile
from sarveg.tiles import Tile
from serving.runtime import OnnxModel
from serving.schemas import InputBlock, Interval, ModelRef, TileOODResult, TilePrediction

P_VALUE_REASON = "p_value < alpha: the tile is unlike the calibration tiles"


@dataclass(frozen=True, eq=False)
class TileOutcome:
    """Everything the model and the OOD block say about one tile."""

    vegetation_pct: float
    ood: TileOOD
    embedding: np.ndarray  # (D,) float32

    def interval(self) -> Interval:
        """The conformal interval as a response model."""
        return Interval(
            low=self.ood.interval_low,
            high=self.ood.interval_high,
            coverage=self.ood.interval_coverage,
        )

    def ood_result(self) -> TileOODResult:
        """The OOD block as a response model."""
        return TileOODResult(
            swd_by_region=self.ood.swd_by_region,
            knn_distance_by_region=self.ood.knn_distance_by_region,
            region_p_values=self.ood.region_p_values,
            nearest_region=self.ood.nearest_region,
            plausible_regions=self.ood.plausible_regions,
            score=self.ood.score,
            p_value=self.ood.p_value,
            unreliable=self.ood.unreliable,
            unreliable_reasons=[P_VALUE_REASON] if self.ood.unreliable else [],
        )


class ServedModel:
    """A loaded bundle with its session and scorer.

    Args:
        bundle: the verified bundle.
        onnx_model: its ONNX graph in a session.
        prepare_sets: build the set-scoring caches now (sorted reference projections, ~80 MB
            per region at 10,000 projections); a worker that only scores tiles skips them.
    """

    def __init__(self, bundle: Bundle, onnx_model: OnnxModel, *, prepare_sets: bool = True) -> None:
        self.bundle = bundle
        self.onnx = onnx_model
        self.scorer = OODScorer.from_bundle(bundle)
        # Set scoring fills caches (null distributions per set size) lazily: one scene at a time.
        self._set_lock = threading.Lock()
        if prepare_sets:
            with self._set_lock:
                self.scorer.prepare_set_scoring()

    @property
    def manifest(self) -> BundleManifest:
        """The bundle's manifest."""
        return self.bundle.manifest

    @property
    def ref(self) -> ModelRef:
        """Name and modality, as shown in every answer."""
        return ModelRef(name=self.manifest.name, modality=self.manifest.modality)

    def prepare(self, tile: Tile) -> np.ndarray:
        """Return the tile resampled to the model input, ``(C, S, S)`` float32."""
        return resample_tile(tile.array, self.manifest.input_size)

    def predict_batch(self, tiles: np.ndarray) -> list[TileOutcome | None]:
        """Run the model and the OOD block on ``(B, C, S, S)`` prepared tiles.

        Returns:
            One outcome per tile; None where the model's outputs are not finite (a tile the
            graph's NaN handling could not cope with), so one such tile cannot fail the others
            of its batch.
        """
        outputs = self.onnx.run(tiles)
        finite = np.isfinite(outputs.vegetation_pct) & np.isfinite(outputs.embedding).all(axis=1)
        results: list[TileOutcome | None] = [None] * len(finite)
        if finite.any():
            vegetation = outputs.vegetation_pct[finite]
            embedding = outputs.embedding[finite]  # (b, D)
            scored = self.scorer.score_batch(embedding, vegetation).tiles()
            for index, v, ood, emb in zip(
                np.flatnonzero(finite), vegetation, scored, embedding, strict=True
            ):
                results[index] = TileOutcome(float(v), ood, emb)
        return results

    def tile_prediction(
        self,
        outcome: TileOutcome | None,
        include_embedding: bool,
        input_info: InputInfo | None = None,
    ) -> TilePrediction:
        """Turn an outcome into the ``/predict`` answer.

        Raises:
            TileError: the model gave no finite output for the tile.
        """
        if outcome is None:
            raise TileError(
                "the model could not score this tile: expected finite model outputs, found "
                "NaN or infinity (too few valid pixels in some channels?)"
            )
        ood = outcome.ood_result()
        if input_info is not None and footprint_mismatch(input_info.footprint_ratio):
            reason = (
                f"footprint {input_info.footprint_ratio:.2g}x the training chips': the OOD "
                "calibration covers tiles of the training footprint only"
            )
            ood = ood.model_copy(
                update={"unreliable": True, "unreliable_reasons": [*ood.unreliable_reasons, reason]}
            )
        return TilePrediction(
            vegetation_pct=outcome.vegetation_pct,
            interval=outcome.interval(),
            ood=ood,
            model=self.ref,
            embedding=[float(x) for x in outcome.embedding] if include_embedding else None,
            input=InputBlock.from_info(input_info) if input_info is not None else None,
        )

    def score_set(self, embedding: np.ndarray) -> SetOOD:
        """Score a set of tile embeddings ``(N, D)`` as a whole (thread-safe)."""
        with self._set_lock:
            return self.scorer.score_set(embedding)
