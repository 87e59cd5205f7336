"""``sarveg export``: turn a fine-tuning run into a model bundle (``sarveg.bundle`` contract).

    sarveg export --checkpoint FINETUNE_RUN --data DIR --out models/NAME

Which tiles go where (fine-tuning region ``F``, e.g. conus; every split is the dataset's own):

- ``model.onnx``: the fp32 graph or a faster variant that passes the drift rule
  (``training.onnx_export``), checked on up to ``DRIFT_TILES`` test tiles of all regions.
- reference (``reference.npz``, one group per region): labelled tiles drawn at random from
  *every* split of each region, at most ``max_reference`` each, so that they cover the whole
  region rather than one geographic band (a band's tiles are each other's near neighbours, so
  a band-only reference makes tiles of the other bands look less like the region than they
  are). ``F``'s reference leaves out every tile the fine-tuning run fitted, stopped on or
  calibrated on, and, unless ``--ood-data`` is given, a reproducible half of the rest, which
  measures the OOD block; without ``--ood-data`` the unseen region's val split is left out too.
- calibration: the tiles the fine-tuning run held out for it (recorded in its checkpoint: val
  tiles not used for early stopping and train tiles outside the label budget), so it was used
  to fit nothing.
- OOD evaluation (``ood.measured``): that other half of ``F``'s unused tiles (false-flag rate,
  interval coverage) and the val split of the unseen region (AUROC, Spearman with error).
  With ``--ood-data DIR`` (an independent folder in the same layout, e.g. a simulation with
  another seed), every labelled tile of ``F`` and of the unseen region there instead, and all of
  ``F``'s unused tiles are candidates for the reference. 500 evaluation tiles measure a
  false-flag rate of 0.05 to +/- 0.02 only at about two standard errors; 2,000 tiles halve that
  error.
- ``metrics``: every region's whole test split.
- ``--checkpoint`` may also be a bundle with trainable weights: the same model is exported again
  (e.g. with a new reference), from its ``weights.safetensors`` and the tiles ``weights.json``
  records.
- ``weights.safetensors`` + ``weights.json``: the checkpoint's fp32 weights, for fine-tuning the
  bundle further (``training.bundle_weights``).

All embeddings and predictions stored or measured come from the shipped ONNX graph in ONNX
Runtime, i.e. exactly what serving will compute.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import numpy as np
import yaml

from sarveg import __version__, bands
from sarveg.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    Architecture,
    BundleManifest,
    Normalisation,
    OODCalibration,
    Provenance,
    RegionMetrics,
    finalise_bundle,
    load_bundle,
)
from sarveg.dataset import index_dataset
from sarveg.ood import OODScorer, calibrate_ood
from sarveg.ood_evaluation import evaluate_ood, measure_region_membership
from sarveg.reference import RegionReference, save_reference
from sarveg.tiles import read_tile
from training.bundle_weights import load_bundle_weights, save_bundle_weights
from training.cache import TileCache, prepare_cache
from training.evaluate import score_predictions, simulation_seed, synthetic_data
from training.label_budget import region_rng, split_holdout
from training.model_card import CARD_FILE, INDEPENDENT_FOLDER, render_model_card
from training.onnx_export import export_best, make_session, reports_as_dicts, run_session
from training.regressor import FinetunedModel, load_finetuned

DRIFT_TILES = 1000
# Per region: the membership search costs one (B, regions x tiles) product per batch.
MAX_REFERENCE_TILES = 1000
DEFAULT_UNSEEN_REGION = "south_america"
SOURCE_SIDE_SAMPLES = 25


def load_exportable(source: str | Path) -> FinetunedModel:
    """A fine-tuning run, or a bundle's own trainable weights (to export that model again)."""
    if (Path(source) / WEIGHTS_FILE).is_file():
        return load_bundle_weights(source)
    return load_finetuned(source)


def lookup_rows(cache: TileCache, pairs: list[list[str]], what: str) -> np.ndarray:
    """Cache rows of ``[[region, identifier], ...]``, failing if any tile is missing."""
    index = {
        (r, i): row for row, (r, i) in enumerate(zip(cache.regions, cache.identifiers, strict=True))
    }
    missing = [tuple(p) for p in pairs if tuple(p) not in index]
    if missing:
        raise ValueError(
            f"expected the {len(pairs)} {what} tiles recorded in the checkpoint in the data "
            f"folder, found {len(missing)} missing (e.g. {missing[0]}): is --data the folder "
            "the model was fine-tuned on?"
        )
    return np.array([index[tuple(p)] for p in pairs], dtype=np.int64)


def cap_positions(positions: np.ndarray, limit: int, seed: int, purpose: str) -> np.ndarray:
    """Keep at most ``limit`` of ``positions``, a reproducible sample, in ascending order."""
    positions = np.sort(np.asarray(positions, dtype=np.int64))
    if len(positions) <= limit:
        return positions
    return np.sort(region_rng(seed, purpose, "cap").choice(positions, size=limit, replace=False))


def take(group: RegionReference, positions: np.ndarray) -> RegionReference:
    """The tiles of ``group`` at ``positions``."""
    return RegionReference(
        embedding=group.embedding[positions],
        vegetation_pct=group.vegetation_pct[positions],
        predicted_pct=group.predicted_pct[positions],
    )


def labelled_rows(cache: TileCache, rows: np.ndarray) -> np.ndarray:
    """The rows that have a finite label."""
    return rows[np.isfinite(cache.vegetation_pct[rows])]


def used_tiles(recorded: dict[str, list[list[str]]]) -> set[tuple[str, str]]:
    """``(region, identifier)`` of every tile a fine-tuning run fitted, stopped or calibrated on."""
    return {
        (region, identifier)
        for key in ("labelled", "early_stopping", "calibration")
        for region, identifier in recorded[key]
    }


def reference_candidates(
    cache: TileCache, region: str, used: set[tuple[str, str]], held_split: str | None = None
) -> np.ndarray:
    """Labelled rows of ``region`` in every split, except ``used`` pairs and ``held_split``."""
    rows = labelled_rows(cache, cache.indices(regions=[region]))
    keep = [
        (region, cache.identifiers[i]) not in used and cache.splits[i] != held_split for i in rows
    ]
    return rows[np.asarray(keep, dtype=bool)]


def run_rows(session: Any, cache: TileCache, rows: np.ndarray) -> RegionReference:
    """ONNX Runtime predictions and embeddings of cache rows, with their labels."""
    tiles = np.asarray(cache.tiles[np.sort(rows)], dtype=np.float32)
    order = np.argsort(np.argsort(rows))  # back from ascending to the requested order
    predicted, embedding = run_session(session, tiles)
    return RegionReference(
        embedding=embedding[order].astype(np.float32),
        vegetation_pct=cache.vegetation_pct[rows].astype(np.float32),
        predicted_pct=predicted[order].astype(np.float32),
    )


def require_independent(data_dir: Path, ood_data: Path) -> None:
    """Fail unless ``ood_data`` is a different folder, and a different simulation if simulated."""
    if not ood_data.is_dir():
        raise ValueError(f"expected an OOD evaluation folder at {ood_data}, found none")
    if ood_data.resolve() == data_dir.resolve():
        raise ValueError(
            f"expected an OOD evaluation folder independent of the training data, found the "
            f"same folder {ood_data}"
        )
    seed = simulation_seed(data_dir)
    if seed is not None and seed == simulation_seed(ood_data):
        raise ValueError(
            f"expected an independent simulation in {ood_data}, found the training data's seed "
            f"{seed}: its tiles repeat the training tiles (simulate it with another --seed)"
        )


def native_side(data_dir: Path, modality: str, region: str) -> int:
    """Median native tile side (pixels) of a sample of a region's tiles: ``source_tile_px``."""
    records = index_dataset(data_dir, modality, [region])[:SOURCE_SIDE_SAMPLES]
    if not records:
        raise ValueError(f"expected {modality} tiles of {region} in {data_dir}, found none")
    sides = [max(read_tile(r.path, modality=modality).array.shape[1:]) for r in records]
    return int(np.median(sides))


def native_footprint(
    data_dir: Path, modality: str, region: str
) -> tuple[float | None, float | None]:
    """Median ground side and pixel size (metres) of a sample of a region's tiles."""
    sizes = []
    for record in index_dataset(data_dir, modality, [region])[:SOURCE_SIDE_SAMPLES]:
        info = read_tile(record.path, modality=modality).input
        if info is not None and info.footprint_m is not None and info.pixel_size_m is not None:
            sizes.append((float(np.sqrt(np.prod(info.footprint_m))), info.pixel_size_m))
    if not sizes:
        return None, None
    side, pixel = np.median(np.array(sizes), axis=0)
    return round(float(side), 1), round(float(pixel), 2)


def code_version() -> str:
    """``sarveg <version>`` plus the git commit of the checkout when there is one."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"sarveg {__version__}"
    return f"sarveg {__version__} (git {commit}{'-dirty' if dirty else ''})"


def describe_data(data_dir: Path, synthetic: bool) -> str:
    """One line saying what the data are."""
    manifest = data_dir / "simulation.json"
    if synthetic and manifest.is_file():
        sim = json.loads(manifest.read_text())
        return (
            f"SYNTHETIC benchmark from sarveg simulate (not real Sentinel-1): regions "
            f"{', '.join(sim.get('regions', []))}, {sim.get('tiles_per_region')} tiles per "
            f"region, {sim.get('size')} px S1GRD tiles, seed {sim.get('seed')}"
        )
    return f"geetiles-layout folder {data_dir.name}"


def architecture_of(finetuned: FinetunedModel) -> Architecture:
    """The manifest's architecture block."""
    backbone = finetuned.model.backbone
    return Architecture(
        name=backbone.name,
        patch_size=int(backbone.vit.patch_embed.patch_size[0]),
        embed_dim=backbone.embed_dim,
        depth=len(backbone.vit.blocks),
        num_heads=finetuned.model.num_heads,
        input_size=finetuned.input_size,
        in_chans=len(bands.CHANNELS[finetuned.modality]),
        decoder_input=finetuned.checkpoint["decoder_input"],
    )


@dataclass(frozen=True)
class ExportSettings:
    """Choices of ``sarveg export`` besides the checkpoint, data and output folder.

    Attributes:
        unseen_region: region never seen in training, for AUROC / Spearman (None: skip).
        variant: ``"auto"`` or a variant of ``training.onnx_export.VARIANTS``.
        max_reference: reference tiles per region at most.
        alpha: conformal level of the ``unreliable`` flag.
        knn_k: neighbours of the k-NN score.
        score_name: the per-tile OOD score (``sarveg.bundle.OODCalibration.score_name``).
        cache_dir: parent folder of tile caches (default ``DATA/.cache``).
        timing_seconds: length of each throughput window when comparing variants.
        timing_repeats: throughput windows per variant and batch size.
        progress: progress bars while caches are prepared.
        ood_data: an independent folder (same layout) whose labelled tiles of the fine-tuning
            and unseen regions measure the OOD block (None: held-out tiles of ``data``).
    """

    unseen_region: str | None = DEFAULT_UNSEEN_REGION
    variant: str = "auto"
    max_reference: int = MAX_REFERENCE_TILES
    alpha: float = 0.05
    knn_k: int = 10
    score_name: str = "knn_distance"
    cache_dir: str | Path | None = None
    timing_seconds: float = 1.0
    timing_repeats: int = 3
    progress: bool = True
    ood_data: str | Path | None = None


def build_bundle(
    checkpoint: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    settings: ExportSettings | None = None,
    *,
    name: str | None = None,
    force: bool = False,
) -> BundleManifest:
    """Export a fine-tuning run as a verified bundle directory.

    The bundle is assembled in a hidden staging folder next to ``out_dir`` and moved into
    place only once ``load_bundle`` accepts it.

    Args:
        checkpoint: fine-tuning run folder or ``checkpoint.pt``, or a bundle with trainable
            weights.
        data_dir: the geetiles folder it was fine-tuned on.
        out_dir: the bundle directory to create (``models/NAME``).
        settings: export choices (defaults: ``ExportSettings()``).
        name: bundle name (default: the folder name).
        force: replace an existing bundle directory.

    Returns:
        The manifest as written.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    return stage_bundle(
        out_dir,
        force,
        lambda staging: write_bundle(
            checkpoint, data_dir, staging, name or out_dir.name, settings or ExportSettings()
        ),
    )


def check_bundle_target(out_dir: Path, force: bool) -> None:
    """Fail unless ``out_dir`` is new, or a bundle folder that ``force`` may replace."""
    if out_dir.exists():
        if not force:
            raise ValueError(f"expected a new bundle folder, found {out_dir}: pass --force")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
            raise ValueError(f"refusing to replace {out_dir}: it is not a bundle folder")


def stage_bundle(
    out_dir: Path, force: bool, write: Callable[[Path], BundleManifest]
) -> BundleManifest:
    """Run ``write(staging)`` in a hidden folder beside ``out_dir``, then move it into place.

    Shared by ``sarveg export`` and ``sarveg adapt``: a failed or interrupted run never leaves
    a half-written bundle where a good one was.
    """
    check_bundle_target(out_dir, force)
    staging = out_dir.parent / f".{out_dir.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return manifest


def write_bundle(
    checkpoint: str | Path, data_dir: Path, staging: Path, name: str, settings: ExportSettings
) -> BundleManifest:
    """Write and verify every bundle file in ``staging`` (see the module docstring)."""
    finetuned = load_exportable(checkpoint)
    ckpt = finetuned.checkpoint
    config = ckpt["config"]
    regions_ft = list(config["data"]["regions"])
    if len(regions_ft) != 1:
        raise ValueError(
            f"expected a model fine-tuned on one region (the OOD block is calibrated on one), "
            f"found {regions_ft}"
        )
    region_ft = regions_ft[0]
    modality, size, seed = finetuned.modality, finetuned.input_size, int(config["seed"])

    def cache_of(regions: list[str] | None, splits: list[str] | None) -> TileCache:
        return prepare_cache(
            data_dir,
            modality,
            size,
            regions,
            splits,
            settings.cache_dir,
            progress=settings.progress,
        )

    ft_cache = cache_of(regions_ft, None)
    calibration_rows = lookup_rows(ft_cache, ckpt["tiles"]["calibration"], "calibration")
    test_cache = cache_of(None, ["test"])
    test_rows = {
        r: labelled_rows(test_cache, test_cache.indices(regions=[r]))
        for r in sorted(set(test_cache.regions))
    }
    test_rows = {r: rows for r, rows in test_rows.items() if len(rows)}
    if region_ft not in test_rows:
        raise ValueError(f"expected labelled test tiles of {region_ft}, found none")
    unseen_region = settings.unseen_region
    if unseen_region == region_ft:
        unseen_region = None
    if settings.ood_data is not None:
        require_independent(data_dir, Path(settings.ood_data))
    region_caches = {r: ft_cache if r == region_ft else cache_of([r], None) for r in test_rows}
    fitted = used_tiles(ckpt["tiles"])
    candidates = {
        r: reference_candidates(
            cache,
            r,
            fitted,
            held_split="val" if settings.ood_data is None and r == unseen_region else None,
        )
        for r, cache in region_caches.items()
    }
    ft_pool = candidates[region_ft]
    if settings.ood_data is None:
        first, rest = split_holdout(
            [ft_cache.identifiers[i] for i in ft_pool], [region_ft] * len(ft_pool), 0.5, seed
        )
        candidates[region_ft], ft_held = ft_pool[first], ft_pool[rest]
    reference_rows = {
        r: rows[cap_positions(np.arange(len(rows)), settings.max_reference, seed, r)]
        for r, rows in candidates.items()
    }
    per_region = max(1, DRIFT_TILES // len(test_rows))
    drift_rows = np.concatenate(
        [
            rows[cap_positions(np.arange(len(rows)), per_region, seed, f"drift-{r}")]
            for r, rows in test_rows.items()
        ]
    )
    check_tiles = np.asarray(test_cache.tiles[np.sort(drift_rows)], dtype=np.float32)

    chosen, reason, reports = export_best(
        finetuned.model,
        staging / MODEL_FILE,
        check_tiles,
        settings.variant,
        settings.timing_seconds,
        settings.timing_repeats,
    )
    session = make_session(staging / MODEL_FILE)
    outputs = {r: run_rows(session, test_cache, rows) for r, rows in test_rows.items()}
    references = {
        r: run_rows(session, region_caches[r], rows) for r, rows in reference_rows.items()
    }
    calibration = run_rows(session, ft_cache, calibration_rows)
    reference, ood = calibrate_ood(
        references,
        region_ft,
        calibration,
        alpha=settings.alpha,
        knn_k=settings.knn_k,
        score_name=settings.score_name,
    )
    if settings.ood_data is None:
        in_distribution = run_rows(session, ft_cache, ft_held)
        unseen = None
        if unseen_region is not None:
            if unseen_region not in test_rows:
                raise ValueError(
                    f"expected labelled tiles of the unseen region {unseen_region} in "
                    f"{data_dir}, found regions {sorted(test_rows)} (pass --unseen-region none "
                    "to skip)"
                )
            unseen_cache = cache_of([unseen_region], ["val"])
            unseen = run_rows(
                session, unseen_cache, labelled_rows(unseen_cache, unseen_cache.indices())
            )
        evaluation_tiles = f"{len(ft_held)} unused {region_ft} tiles outside the reference" + (
            f"; the {unseen_region} val split" if unseen is not None else ""
        )
    else:
        ood_root = Path(settings.ood_data)

        def run_region(region: str) -> RegionReference:
            cache = prepare_cache(
                ood_root, modality, size, [region], None, None, progress=settings.progress
            )
            rows = labelled_rows(cache, cache.indices())
            if not len(rows):
                raise ValueError(f"expected labelled {region} tiles in {ood_root}, found none")
            return run_rows(session, cache, rows)

        in_distribution = run_region(region_ft)
        unseen = run_region(unseen_region) if unseen_region is not None else None
        evaluation_tiles = (
            f"every labelled tile of {region_ft}"
            + (f" and {unseen_region}" if unseen is not None else "")
            + f" in the {INDEPENDENT_FOLDER} {ood_root.name}"
        )
    synthetic = bool(ckpt.get("synthetic", synthetic_data(data_dir)))
    membership = None
    if settings.ood_data is not None:
        # Every reference region's tiles in the independent folder: the region confusion matrix.
        groups = {region_ft: in_distribution}
        if unseen is not None and unseen_region is not None:
            groups[unseen_region] = unseen
        present = {record.region for record in index_dataset(Path(settings.ood_data), modality)}
        for region in reference.regions:
            if region not in groups and region in present:
                groups[region] = run_region(region)
        membership = measure_region_membership(
            OODScorer(reference, ood),
            groups,
            synthetic=synthetic,
            evaluation_tiles=f"every labelled tile of each region in the {INDEPENDENT_FOLDER} "
            f"{Path(settings.ood_data).name}",
        )
    measured = evaluate_ood(
        OODScorer(reference, ood),
        in_distribution,
        unseen,
        unseen_region=unseen_region if unseen is not None else None,
        synthetic=synthetic,
        evaluation_tiles=evaluation_tiles,
    )
    ood = ood.model_copy(update={"measured": measured, "region_membership": membership})
    metrics = {
        r: RegionMetrics(**score_predictions(o.vegetation_pct, o.predicted_pct).as_dict())
        for r, o in outputs.items()
    }
    save_reference(staging / REFERENCE_FILE, reference)

    pretrained = ckpt.get("pretrained") or {}
    pretrain_config = pretrained.get("config") or {}
    summary = ckpt.get("summary", {})
    provenance = Provenance(
        data=describe_data(data_dir, synthetic),
        synthetic=synthetic,
        fine_tuning_regions=regions_ft,
        pretraining_regions=[]
        if config.get("from_scratch")
        else list(pretrain_config.get("data", {}).get("regions", [])),
        label_fraction=float(summary.get("label_fraction", 1.0)),
        config={
            "finetune": config,
            "pretrain": pretrain_config or None,
            "tiles": {
                "labelled": len(ckpt["tiles"]["labelled"]),
                "early_stopping": len(ckpt["tiles"]["early_stopping"]),
                "calibration": len(calibration_rows),
                "reference": {r: len(rows) for r, rows in reference_rows.items()},
                "reference_from": "every split, tiles the fine-tune used left out",
                "ood_evaluation_in_distribution": len(in_distribution.embedding),
                "ood_evaluation_unseen": 0 if unseen is None else len(unseen.embedding),
            },
            "export": {
                "variant": chosen,
                "reason": reason,
                "opset": 17,
                "drift_tiles": int(len(drift_rows)),
                "variants": reports_as_dicts(reports),
            },
        },
        code_version=code_version(),
        created=datetime.now(UTC),
    )
    stats = ckpt["normalization"]
    footprint_m, pixel_size_m = native_footprint(data_dir, modality, region_ft)
    manifest = BundleManifest(
        name=name,
        modality=modality,
        band_names=list(bands.CHANNELS[modality]),
        units=bands.UNITS[modality],
        input_size=size,
        source_tile_px=native_side(data_dir, modality, region_ft),
        footprint_m=footprint_m,
        pixel_size_m=pixel_size_m,
        normalisation=Normalisation(mean=stats["mean"], std=stats["std"]),
        architecture=architecture_of(finetuned),
        embedding_size=finetuned.model.backbone.embed_dim,
        outputs=["vegetation_pct", "embedding", "attention"],
        provenance=provenance,
        metrics=metrics,
        ood=ood,
    )
    (staging / CARD_FILE).write_text(render_model_card(manifest))
    save_bundle_weights(staging, finetuned)
    manifest = finalise_bundle(staging, manifest)
    load_bundle(staging)
    return manifest


def main(argv: list[str]) -> int:
    """``sarveg export`` entry point."""
    parser = argparse.ArgumentParser(
        prog="sarveg export",
        description="Export a fine-tuned model to ONNX and write a verified model bundle.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="fine-tuning run folder or .pt, or a bundle with trainable weights",
    )
    parser.add_argument("--data", type=Path, required=True, help="the data it was fine-tuned on")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder, e.g. models/NAME")
    parser.add_argument("--name", default=None, help="bundle name (default: folder name)")
    parser.add_argument(
        "--unseen-region",
        default=DEFAULT_UNSEEN_REGION,
        help="region never trained on, for AUROC / Spearman ('none' to skip)",
    )
    parser.add_argument("--variant", default="auto", help="auto, fp32, fused, ort-offline, int8")
    parser.add_argument("--max-reference", type=int, default=MAX_REFERENCE_TILES)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument(
        "--score",
        default="knn_distance",
        choices=get_args(OODCalibration.model_fields["score_name"].annotation),
        help="per-tile OOD score",
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--ood-data",
        type=Path,
        default=None,
        help="independent folder whose tiles measure the OOD block (default: held-out tiles)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    unseen = None if args.unseen_region.lower() == "none" else args.unseen_region
    try:
        settings = ExportSettings(
            unseen_region=unseen,
            variant=args.variant,
            max_reference=args.max_reference,
            alpha=args.alpha,
            knn_k=args.knn_k,
            score_name=args.score,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
            ood_data=args.ood_data,
        )
        manifest = build_bundle(
            args.checkpoint, args.data, args.out, settings, name=args.name, force=args.force
        )
    except ValueError as error:
        print(f"sarveg export: {error}", file=sys.stderr)
        return 1
    export = manifest.provenance.config["export"]
    measured = manifest.ood.measured
    print(f"bundle {args.out}: variant {export['variant']} ({export['reason']})")
    for region, m in manifest.metrics.items():
        print(f"  {region:<14} RMSE {m.rmse:6.2f}  label sd {m.label_std:6.2f}  n {m.n_tiles}")
    if measured is not None:
        print(
            f"  OOD: false-flag rate {measured.false_flag_rate:.3f} (alpha "
            f"{manifest.ood.alpha}), coverage {measured.interval_coverage:.3f}, AUROC "
            f"{measured.auroc}, Spearman {measured.spearman_abs_error}"
        )
    print(yaml.safe_dump({"files": manifest.files}, sort_keys=False).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
