"""The ``sarveg adapt`` command: ``adapt()`` (the whole run), its argument parser and ``main``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from sarveg.bundle import (
    WEIGHTS_FILE,
    BundleManifest,
    load_bundle,
)
from training.adapt.bundle import write_adapted_bundle
from training.adapt.config import (
    CONFIG_FILE,
    EXPORT_ONLY_KEYS,
    REFIT_ONLY_KEYS,
    AdaptConfig,
    load_adapt_config,
)
from training.adapt.finetune import finetune_adapted, fingerprint, refit_on_all_labels
from training.adapt.labels import read_labels
from training.adapt.routing import is_routed
from training.adapt.tiles import gather_old_region, split_new_region
from training.bundle_weights import load_bundle_weights
from training.cache import prepare_cache
from training.config import ConfigError
from training.export import (
    check_bundle_target,
    require_independent,
    stage_bundle,
)


def adapt(
    model_dir: str | Path,
    data_dir: str | Path,
    labels_path: str | Path,
    out_dir: str | Path,
    config: AdaptConfig | None = None,
    *,
    old_data: str | Path | None = None,
    ood_data: str | Path | None = None,
    cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> BundleManifest:
    """Adapt a bundle to a new region and write the new bundle (see ``training.adapt``).

    Args:
        model_dir: the parent bundle (must carry trainable weights).
        data_dir: the new region's tiles (geetiles layout; the ones ``sarveg predict`` ran on).
        labels_path: a labels CSV or a folder of MODIS VCF rasters.
        out_dir: the new bundle folder.
        config: adaptation choices (default ``AdaptConfig()``).
        old_data: the folder the parent was fine-tuned on (rehearsal, old-region reference and
            calibration, forgetting measured); without it the old region is not in distribution.
        ood_data: an independent folder with labelled tiles of both regions, for the figures.
        cache_dir: parent of tile caches (default: each data folder's ``.cache``).
        work_dir: resumable state (default ``OUT.work`` beside the bundle).
        force: replace an existing bundle folder.
        progress: progress bars.

    Returns:
        The new bundle's manifest.

    Raises:
        ValueError: a bundle without weights, unknown or too few labels, unusable folders.
    """
    config = config or AdaptConfig()
    model_dir, data_dir, out_dir = Path(model_dir), Path(data_dir), Path(out_dir)
    labels_path = Path(labels_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    check_bundle_target(out_dir, force)  # before the long fine-tune, not after
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    (work / CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

    parent = load_bundle(model_dir)
    finetuned = load_bundle_weights(model_dir)  # ValueError for a bundle without weights
    if parent.manifest.ood.difficulty != "knn_distance":
        raise ValueError(
            f"expected a bundle with interval difficulty knn_distance (it needs no labels of the "
            f"new region's reference tiles), found {parent.manifest.ood.difficulty}"
        )
    parent_adapt = parent.manifest.provenance.config.get("adapt")
    if config.route_old_regions is True:
        check_routable(parent_adapt, old_data, model_dir)
    # auto considers routing wherever it can be built, and decides after the fine-tune.
    routable = config.route_old_regions is True or (
        config.route_old_regions == "auto" and old_data is not None and not is_routed(parent_adapt)
    )
    modality, size = finetuned.modality, finetuned.input_size
    labels = read_labels(labels_path)
    new_cache = prepare_cache(data_dir, modality, size, None, None, cache_dir, progress=progress)
    present = sorted(set(new_cache.regions))
    region = config.region or (present[0] if len(present) == 1 else None)
    if region is None or region not in present:
        raise ValueError(
            f"expected the new region among the regions of {data_dir} {present}, found "
            f"{config.region!r} (pass region=NAME when the folder holds several)"
        )
    new = split_new_region(new_cache, region, labels, config, data_dir)
    old = None
    if old_data is not None:
        old = gather_old_region(
            Path(old_data),
            finetuned.checkpoint,
            region,
            modality,
            size,
            config,
            cache_dir,
            progress,
        )
    if ood_data is not None:
        require_independent(data_dir, Path(ood_data))
        if old_data is not None:
            require_independent(Path(old_data), Path(ood_data))
    key = fingerprint(
        parent.manifest.files[WEIGHTS_FILE],
        sorted(labels.items()),
        new_cache.key,
        None if old is None else old.cache.key,
        config.model_dump(mode="json", exclude=set(EXPORT_ONLY_KEYS | REFIT_ONLY_KEYS)),
    )
    adapted, outcome = finetune_adapted(finetuned, new_cache, new, old, config, work, key, progress)
    held_out_pct = None
    if config.refit_all_labels:
        adapted, outcome, held_out_pct = refit_on_all_labels(
            finetuned, adapted, outcome, new_cache, new, old, config, work, key, progress
        )

    return stage_bundle(
        out_dir,
        force,
        lambda staging: write_adapted_bundle(
            parent,
            adapted,
            outcome,
            new_cache,
            region,
            new,
            old,
            config,
            staging,
            out_dir.name,
            parent_model=finetuned.model if routable else None,
            held_out_pct=held_out_pct,
            data_dir=data_dir,
            ood_data=None if ood_data is None else Path(ood_data),
            labels_path=labels_path,
            cache_dir=cache_dir,
            progress=progress,
        ),
    )


def check_routable(
    parent_adapt: dict[str, Any] | None, old_data: str | Path | None, model_dir: Path
) -> None:
    """Refuse ``route_old_regions`` without old tiles to fit the gate, or from a routed bundle.

    A routed bundle's weights are its fine-tuned model alone (the graph also holds its parent's),
    so routing from it again would send its old regions to a model that has forgotten them.
    """
    if old_data is None:
        raise ValueError(
            "expected --old-data with route_old_regions=true (the gate is fitted on the old "
            "region's tiles), found none"
        )
    if is_routed(parent_adapt):
        raise ValueError(
            f"expected a bundle without routing for route_old_regions=true, found {model_dir}, "
            "which already routes to its own parent's model (not carried in its weights); adapt "
            "it with route_old_regions=false"
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``sarveg adapt`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sarveg adapt",
        description="Fine-tune a bundle on a few labels of a new region, re-calibrate it and "
        "write a new bundle.",
    )
    parser.add_argument("--model", type=Path, required=True, help="parent bundle (models/NAME)")
    parser.add_argument("--data", type=Path, required=True, help="the new region's tiles")
    parser.add_argument("--labels", type=Path, required=True, help="labels CSV or MODIS folder")
    parser.add_argument("--out", type=Path, required=True, help="new bundle folder")
    parser.add_argument("--old-data", type=Path, default=None, help="the parent's training data")
    parser.add_argument("--ood-data", type=Path, default=None, help="independent labelled folder")
    parser.add_argument("--config", default=None, help="YAML of AdaptConfig keys")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: OUT.work")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    return parser


def main(argv: list[str]) -> int:
    """``sarveg adapt`` entry point."""
    args = build_parser().parse_args(argv)
    try:
        config = load_adapt_config(args.config, list(args.overrides))
        manifest = adapt(
            args.model,
            args.data,
            args.labels,
            args.out,
            config,
            old_data=args.old_data,
            ood_data=args.ood_data,
            cache_dir=args.cache_dir,
            work_dir=args.work_dir,
            force=args.force,
            progress=not args.no_progress,
        )
    except (ConfigError, ValueError) as error:
        print(f"sarveg adapt: {error}", file=sys.stderr)
        return 1
    record = manifest.provenance.config["adapt"]
    print(f"bundle {args.out}: adapted {record['parent']['name']} to {record['new_region']}")
    for row in record["evaluation"]:
        rmse = (
            f"RMSE {row['rmse_before']:.2f} -> {row['rmse_after']:.2f}"
            if row["rmse_before"] is not None
            else "unlabelled"
        )
        print(
            f"  {row['region']:<14} {row['n_tiles']:>5} tiles ({row['tiles']}): {rmse}; unreliable "
            f"{row['unreliable_before']:.3f} -> {row['unreliable_after']:.3f}"
        )
    return 0
