"""Writing the adapted bundle: export, embed, re-calibrate OOD, compare before and after."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sarveg.bundle import (
    MODEL_FILE,
    REFERENCE_FILE,
    Bundle,
    BundleManifest,
    RegionMetrics,
    finalise_bundle,
    load_bundle,
)
from sarveg.conformal import interval_coverage
from sarveg.ood import OODScorer, calibrate_ood
from sarveg.ood_evaluation import evaluate_ood
from sarveg.reference import RegionReference, concat_references, save_reference
from training.adapt.config import CHECK_TILES, AdaptConfig
from training.adapt.routing import RoutedRegressor, decide_routing, route_old_regions
from training.adapt.tiles import NewRegionTiles, OldRegion, labels_of
from training.bundle_weights import save_bundle_weights
from training.cache import TileCache, prepare_cache
from training.evaluate import score_predictions, synthetic_data
from training.export import (
    code_version,
    describe_data,
    labelled_rows,
    run_rows,
    take,
)
from training.model_card import CARD_FILE, INDEPENDENT_FOLDER, render_model_card
from training.onnx_export import export_best, make_session, reports_as_dicts
from training.regressor import FinetunedModel, VegetationRegressor


def outputs_of(
    session: Any, cache: TileCache, rows: np.ndarray, labels: np.ndarray | None = None
) -> RegionReference:
    """Predictions and embeddings of ``rows``, with ``labels`` instead of the cache's if given."""
    group = run_rows(session, cache, rows)
    if labels is None:
        return group
    return RegionReference(group.embedding, np.asarray(labels, np.float32), group.predicted_pct)


def unlabelled(group: RegionReference) -> RegionReference:
    """The same tiles with their labels dropped (NaN): the new region's labels are not known."""
    return RegionReference(
        group.embedding, np.full(len(group.embedding), np.nan, np.float32), group.predicted_pct
    )


def compare(
    before: tuple[OODScorer, Any],
    after: tuple[OODScorer, Any],
    cache: TileCache,
    rows: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, Any]:
    """RMSE, unreliable share and (after) interval coverage of the parent and the adapted bundle."""
    figures: dict[str, Any] = {"n_tiles": int(len(rows))}
    for name, (scorer, session) in (("before", before), ("after", after)):
        group = outputs_of(session, cache, rows, labels)
        ood = scorer.score_batch(group.embedding, group.predicted_pct)
        labelled = np.isfinite(group.vegetation_pct)
        figures[f"rmse_{name}"] = (
            score_predictions(group.vegetation_pct, group.predicted_pct).rmse
            if labelled.any()
            else None
        )
        figures[f"unreliable_{name}"] = float(ood.unreliable.mean())
        if labelled.any():
            figures[f"coverage_{name}"] = interval_coverage(
                group.vegetation_pct, ood.interval_low, ood.interval_high
            )
    return figures


def write_adapted_bundle(
    parent: Bundle,
    adapted: FinetunedModel,
    outcome: dict[str, Any],
    new_cache: TileCache,
    region: str,
    new: NewRegionTiles,
    old: OldRegion | None,
    config: AdaptConfig,
    staging: Path,
    name: str,
    *,
    data_dir: Path,
    ood_data: Path | None,
    labels_path: Path,
    cache_dir: Path | None,
    progress: bool,
    parent_model: VegetationRegressor | None = None,
    held_out_pct: np.ndarray | None = None,
) -> BundleManifest:
    """Export, embed, re-calibrate, measure and write every file of the adapted bundle.

    With ``parent_model`` (and ``old``), the exported graph routes old-region tiles to it
    (``training.adapt.routing``; with ``route_old_regions=auto`` only where the fine-tuned model
    errs more on held-out old-region tiles); the weights file holds the fine-tuned model alone.
    With ``held_out_pct`` (``refit_all_labels``: ``adapted`` was refitted on every label), the
    labelled calibration tiles keep the graph's embeddings but these held-out estimates of the
    first fine-tune, so the interval and the region's metrics rest on errors of tiles not fitted.
    """
    pm = parent.manifest
    stages = tqdm(
        total=5, desc="adapt: export, embed, calibrate, measure, write", disable=not progress
    )
    with stages:
        check = [
            new_cache.tiles[np.sort(np.concatenate([new.calibration, new.held_out[:CHECK_TILES]]))]
        ]
        if old is not None:
            for rows in old.test_rows.values():
                check.append(
                    old.test_cache.tiles[np.sort(rows[: CHECK_TILES // len(old.test_rows)])]
                )
        check_tiles = np.concatenate([np.asarray(t, np.float32) for t in check])
        parent_variant = pm.provenance.config.get("export", {}).get("variant", "auto")
        variant = parent_variant if config.variant == "same" else config.variant
        graph_model: VegetationRegressor | RoutedRegressor = adapted.model
        routing = None
        if parent_model is not None and old is not None:
            decision = None
            if config.route_old_regions == "auto":
                decision = decide_routing(
                    adapted.model, parent_model, old, config.route_if_worse_by
                )
            if decision is None or decision["route"]:
                graph_model, routing = route_old_regions(
                    adapted.model, parent_model, old, new_cache, new.reference, config.seed
                )
            else:
                routing = {"routed": False}
            if decision is not None:
                routing["decision"] = decision
        chosen, reason, reports = export_best(
            graph_model,
            staging / MODEL_FILE,
            check_tiles,
            variant,
            config.timing_seconds,
            config.timing_repeats,
        )
        stages.update()
        session = make_session(staging / MODEL_FILE)
        references: dict[str, RegionReference] = {}
        calibration: dict[str, RegionReference] = {}
        if old is not None:
            for r, rows in old.reference_rows.items():
                references[r] = outputs_of(session, old.reference_caches[r], rows)
            for r in old.regions:
                rows = old.calibration[np.asarray(old.cache.regions)[old.calibration] == r]
                calibration[r] = outputs_of(session, old.cache, rows)
        references[region] = unlabelled(outputs_of(session, new_cache, new.reference))
        labelled_cal = outputs_of(session, new_cache, new.calibration, new.labels[new.calibration])
        if held_out_pct is not None:
            labelled_cal = dataclasses.replace(
                labelled_cal, predicted_pct=np.asarray(held_out_pct, np.float32)
            )
        ood_cal = unlabelled(outputs_of(session, new_cache, new.ood_calibration))
        calibration[region] = concat_references([labelled_cal, ood_cal])
        references = dict(sorted(references.items()))
        stages.update()
        settings = {
            "alpha": pm.ood.alpha,
            "knn_k": pm.ood.knn_k,
            "score_name": pm.ood.score_name,
            "interval_alpha": pm.ood.interval_alpha,
            "n_projections": pm.ood.n_projections,
            "projection_seed": pm.ood.projection_seed,
        }
        reference, ood = calibrate_ood(references, region, calibration, **settings)
        stages.update()

        before = (OODScorer.from_bundle(parent), make_session(parent.model_path))
        after_scorer = OODScorer(reference, ood)
        after = (after_scorer, session)
        evaluation: list[dict[str, Any]] = []
        if old is not None:
            for r, positions in old.evaluation_positions.items():
                rows = old.test_rows[r][positions]
                evaluation.append(
                    {"region": r, "tiles": f"other half of the {r} test split (labelled)"}
                    | compare(before, after, old.test_cache, rows, None)
                )
        evaluation.append(
            {
                "region": region,
                "tiles": "the labelled calibration tiles (never fitted)"
                if held_out_pct is None
                else "the labelled calibration tiles (refitted on: after is in-sample)",
            }
            | compare(before, after, new_cache, new.calibration, new.labels[new.calibration])
        )
        if len(new.held_out):
            evaluation.append(
                {"region": region, "tiles": "unlabelled tiles in neither reference nor calibration"}
                | compare(
                    before, after, new_cache, new.held_out, np.full(len(new.held_out), np.nan)
                )
            )
        synthetic = bool(adapted.checkpoint.get("synthetic")) or synthetic_data(data_dir)
        measured = None
        measured_on: tuple[RegionReference, str] | None = None
        metrics_groups: dict[str, RegionReference] = {}
        if old is not None:
            metrics_groups = {
                r: outputs_of(session, old.test_cache, rows) for r, rows in old.test_rows.items()
            }
        metrics_groups[region] = labelled_cal
        if ood_data is not None:
            independent: list[RegionReference] = []
            for r in [*(old.regions if old is not None else []), region]:
                cache = prepare_cache(
                    ood_data, pm.modality, pm.input_size, [r], None, cache_dir, progress=progress
                )
                rows = labelled_rows(cache, cache.indices())
                if not len(rows):
                    raise ValueError(f"expected labelled {r} tiles in {ood_data}, found none")
                evaluation.append(
                    {
                        "region": r,
                        "tiles": f"every labelled tile in the {INDEPENDENT_FOLDER} {ood_data.name}",
                    }
                    | compare(before, after, cache, rows, None)
                )
                independent.append(outputs_of(session, cache, rows))
                if r == region:
                    metrics_groups[region] = independent[-1]
            measured_on = (
                concat_references(independent),
                f"every labelled tile of {', '.join(ood.in_distribution)} in the "
                f"{INDEPENDENT_FOLDER} {ood_data.name}",
            )
        elif old is not None:
            held = [
                take(outputs_of(session, old.test_cache, old.test_rows[r]), p)
                for r, p in old.evaluation_positions.items()
            ]
            measured_on = (
                concat_references(held),
                f"the other half of the {', '.join(old.regions)} test split (the {region} tiles "
                "are unlabelled: see the adaptation table)",
            )
        if measured_on is not None:
            measured = evaluate_ood(
                after_scorer, measured_on[0], synthetic=synthetic, evaluation_tiles=measured_on[1]
            )
        ood = ood.model_copy(update={"measured": measured})
        metrics = {
            r: RegionMetrics(**score_predictions(g.vegetation_pct, g.predicted_pct).as_dict())
            for r, g in sorted(metrics_groups.items())
        }
        stages.update()

        save_reference(staging / REFERENCE_FILE, reference)
        ckpt = adapted.checkpoint
        adapt_record = {
            "parent": {"name": pm.name, "model_sha256": pm.files[MODEL_FILE]},
            "new_region": region,
            "new_data": describe_data(data_dir, synthetic_data(data_dir)),
            "labels": {"file": labels_path.name, "n": int(np.isfinite(new.labels).sum())},
            "old_data": None if old is None else "given",
            "config": config.model_dump(mode="json"),
            "tiles": {
                "new_train": len(new.train) + (0 if held_out_pct is None else len(new.calibration)),
                "refit_all_labels": held_out_pct is not None,
                "new_early_stopping": len(new.early_stopping),
                "new_calibration_labelled": len(new.calibration),
                "new_reference_unlabelled": len(new.reference),
                "new_calibration_unlabelled": len(new.ood_calibration),
                "new_held_out_unlabelled": len(new.held_out),
                "old_rehearsal": 0 if old is None else len(old.rehearsal),
                "old_calibration": 0 if old is None else len(old.calibration),
            },
            "finetune": outcome,
            "routing": routing,
            "evaluation": evaluation,
        }
        provenance = pm.provenance.model_copy(
            update={
                "data": pm.provenance.data
                + f"; adapted to {region} with {len(labels_of(new))} labels",
                "synthetic": pm.provenance.synthetic or synthetic,
                "fine_tuning_regions": [
                    *(old.regions if old is not None else pm.provenance.fine_tuning_regions),
                    region,
                ],
                "config": {
                    "finetune": ckpt["config"],
                    "pretrain": pm.provenance.config.get("pretrain"),
                    "adapt": adapt_record,
                    "tiles": {
                        "labelled": len(ckpt["tiles"]["labelled"]),
                        "early_stopping": len(ckpt["tiles"]["early_stopping"]),
                        "calibration": ood.calibration_size,
                        "reference": {r: len(g.embedding) for r, g in references.items()},
                    },
                    "export": {
                        "variant": chosen,
                        "reason": reason,
                        "opset": 17,
                        "drift_tiles": int(len(check_tiles)),
                        "variants": reports_as_dicts(reports),
                    },
                },
                "code_version": code_version(),
                "created": datetime.now(UTC),
            }
        )
        manifest = pm.model_copy(
            update={
                "name": name,
                "provenance": provenance,
                "metrics": metrics,
                "ood": ood,
                "files": {},
            }
        )
        (staging / CARD_FILE).write_text(render_model_card(manifest))
        save_bundle_weights(staging, adapted)
        manifest = finalise_bundle(staging, manifest)
        load_bundle(staging)
        stages.update()
    return manifest
