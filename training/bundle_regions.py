"""``sarveg regions``: measure a bundle's region membership on tiles it never saw, and record it.

Usage::

    sarveg regions --model models/s1grd-conus --data FOLDER [--per-region N] [--write]

Every labelled tile of every reference region in ``FOLDER`` (an independent folder in the
geetiles layout: another simulation seed than the bundle's training data, or real tiles) goes
through the bundle's ONNX graph at its input size; the bundle's scorer then gives each tile its
``nearest_region`` and ``plausible_regions``. Printed: the confusion matrix, the accuracy of
``nearest_region`` per region (target >= 0.95), the share of a region's tiles whose true region
is plausible (target >= 1 - alpha), the mean size of the plausible set, and the accuracy the old
rule (argmin of the per-tile SWD) would have had. ``--write`` records the figures in the
bundle's ``bundle.json`` (``ood.region_membership``, and the current method text), re-renders
``MODEL_CARD.md`` and re-checksums the bundle; the graph and the reference arrays are untouched.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sarveg.bundle import finalise_bundle, load_bundle
from sarveg.dataset import index_dataset
from sarveg.ood import OODScorer, describe_method
from sarveg.ood_evaluation import measure_region_membership
from sarveg.reference import RegionReference
from training.cache import TileCache, prepare_cache
from training.evaluate import simulation_seed, synthetic_data
from training.model_card import CARD_FILE, render_model_card
from training.onnx_export import run_session


def training_seed(data_description: str) -> int | None:
    """The simulation seed a bundle's provenance names (``..., seed 0``), if any."""
    match = re.search(r"\bseed (\d+)\b", data_description)
    return int(match.group(1)) if match else None


def labelled_region_rows(
    data: Path, modality: str, size: int, region: str, limit: int
) -> tuple[TileCache, np.ndarray]:
    """The decoded cache of ``region`` in ``data`` and up to ``limit`` of its labelled rows."""
    cache = prepare_cache(data, modality, size, [region], None, None)
    rows = np.flatnonzero(np.isfinite(cache.vegetation_pct[cache.indices()]))
    return cache, np.sort(cache.indices()[rows][:limit])


def region_tiles(
    session: ort.InferenceSession, data: Path, modality: str, size: int, region: str, limit: int
) -> RegionReference | None:
    """Embeddings and predictions of up to ``limit`` labelled tiles of ``region`` in ``data``."""
    cache, rows = labelled_region_rows(data, modality, size, region, limit)
    if not len(rows):
        return None
    predicted, embedding = run_session(session, np.asarray(cache.tiles[rows], np.float32))
    return RegionReference(
        embedding=embedding.astype(np.float32),
        vegetation_pct=cache.vegetation_pct[rows].astype(np.float32),
        predicted_pct=predicted.astype(np.float32),
    )


def main(argv: list[str]) -> int:
    """``sarveg regions`` entry point."""
    parser = argparse.ArgumentParser(prog="sarveg regions", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle folder")
    parser.add_argument("--data", type=Path, required=True, help="independent labelled folder")
    parser.add_argument("--per-region", type=int, default=2000, help="most tiles per region")
    parser.add_argument("--write", action="store_true", help="record the figures in the bundle")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.model)
    manifest = bundle.manifest
    seed = simulation_seed(args.data)
    if seed is not None and seed == training_seed(manifest.provenance.data):
        parser.error(
            f"expected tiles the bundle never saw, found a simulation with its training seed {seed}"
        )
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    scorer = OODScorer.from_bundle(bundle)
    present = {record.region for record in index_dataset(args.data, manifest.modality)}
    tiles = {}
    for region in (r for r in scorer.regions if r in present):
        group = region_tiles(
            session, args.data, manifest.modality, manifest.input_size, region, args.per_region
        )
        if group is not None:
            tiles[region] = group
    if not tiles:
        parser.error(f"expected labelled tiles of {', '.join(scorer.regions)} in {args.data}")
    synthetic = synthetic_data(args.data)
    where = f"every labelled tile (at most {args.per_region} per region) of {args.data.name}"
    if seed is not None:
        where += f" (simulation seed {seed})"
    measured = measure_region_membership(scorer, tiles, synthetic=synthetic, evaluation_tiles=where)
    print(
        f"region membership of {manifest.name} on {where}" + (" [synthetic]" if synthetic else "")
    )
    regions = measured.regions
    corner = "true / nearest"
    print(f"\n{corner:<16}" + "".join(f"{r:>15}" for r in regions))
    for name, row in zip(regions, measured.confusion, strict=True):
        if name in measured.n_tiles:
            print(f"{name:<16}" + "".join(f"{v:>15}" for v in row))
    print(
        f"\n{'region':<16}{'tiles':>7}{'nearest acc':>13}{'plausible cov':>15}"
        f"{'mean set':>10}{'SWD-rule acc':>14}"
    )
    for name in regions:
        if name in measured.n_tiles:
            print(
                f"{name:<16}{measured.n_tiles[name]:>7}{measured.nearest_accuracy[name]:>13.3f}"
                f"{measured.plausible_coverage[name]:>15.3f}"
                f"{measured.mean_plausible_size[name]:>10.2f}"
                f"{measured.swd_nearest_accuracy[name]:>14.3f}"
            )
    print(f"targets: nearest accuracy >= 0.95; coverage >= {1 - manifest.ood.alpha:.2f}")
    if args.write:
        ood = manifest.ood.model_copy(update={"region_membership": measured})
        n_reference = len(bundle.reference.regions[ood.fine_tuning_region].embedding)
        ood = ood.model_copy(update={"method": describe_method(ood, n_reference)})
        manifest = manifest.model_copy(update={"ood": ood})
        (args.model / CARD_FILE).write_text(render_model_card(manifest))
        finalise_bundle(args.model, manifest)
        load_bundle(args.model)
        print(f"recorded in {args.model / 'bundle.json'} and {CARD_FILE}")
    return 0
