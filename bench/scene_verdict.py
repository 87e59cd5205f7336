"""The scene verdict's false-flag rate on in-distribution scenes, and how often it flags others.

Usage:
    python bench/scene_verdict.py --data FOLDER [--models models/] [--scenes 200]

``FOLDER`` is an independent simulated folder (e.g. ``sarveg simulate --seed 2``). For each bundle,
``--scenes`` scenes of each size are drawn from the labelled tiles of its fine-tuning region:

- *random* scenes: tiles drawn at random (the exchangeable case);
- *contiguous* scenes: a random chip and its nearest chips by centroid, spatially correlated
  like the windows of a real scene.

Each scene gets the verdict ``/predict_scene`` gives it (``OODScorer.score_set``: a one-sided
rank-sum test of its tiles' scores against the calibration scores, unreliable when p < alpha;
the tile scores are computed once per tile, as ``score_set`` computes them); the false-flag
rate is the share of in-distribution scenes flagged. The same is done with the bundle's unseen
region (the share flagged there is the power). The fine-tuning region is measured twice:
against the bundle's calibration scores (tiles of the benchmark's simulated world; ``FOLDER``
is another world), and
"exchangeable": half of ``FOLDER``'s tiles of that region, chosen at random, replace the
calibration scores and the scenes are drawn from the other half, over 200 such random halves
(the guarantee is over the draw of the calibration too): the case the rank-sum test is exact
for. 95 % Wilson intervals beside each rate. Synthetic tiles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ood_calibration import wilson_interval  # noqa: E402
from sarveg.bundle import load_bundle  # noqa: E402
from sarveg.dataset import index_dataset  # noqa: E402
from sarveg.ood import OODScorer, rank_sum_p_value  # noqa: E402
from training.cache import prepare_cache  # noqa: E402
from training.onnx_export import run_session  # noqa: E402

SIZES = (4, 16, 64)
SPLITS = 200  # random calibration halves of the exchangeable case


def embed(bundle_dir: Path, data: Path, region: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and centroids (lon, lat) of the labelled tiles of ``region``."""
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    cache = prepare_cache(data, manifest.modality, manifest.input_size, [region], None, None)
    rows = cache.indices()
    rows = np.sort(rows[np.isfinite(cache.vegetation_pct[rows])])
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    _, embedding = run_session(session, np.asarray(cache.tiles[rows], np.float32))
    where = {r.identifier: (r.lon, r.lat) for r in index_dataset(data, manifest.modality, [region])}
    centroids = np.array([where[cache.identifiers[i]] for i in rows])
    return embedding, centroids


def draw_scenes(
    centroids: np.ndarray, size: int, count: int, contiguous: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    n = len(centroids)
    scenes = []
    for _ in range(count):
        if contiguous:
            centre = centroids[rng.integers(n)]
            scenes.append(np.argsort(np.sum((centroids - centre) ** 2, axis=1))[:size])
        else:
            scenes.append(rng.choice(n, size=size, replace=False))
    return scenes


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--scenes", type=int, default=200, help="scenes per size and kind")
    args = parser.parse_args()
    for bundle_dir in sorted(p.parent for p in args.models.glob("*/bundle.json")):
        bundle = load_bundle(bundle_dir)
        ood = bundle.manifest.ood
        scorer = OODScorer.from_bundle(bundle)
        unseen = ood.measured.unseen_region if ood.measured else None
        print(f"\n{bundle.manifest.name}: scene verdict, alpha {ood.alpha} [synthetic]")
        print(f"{'tiles':<20}{'scene':<12}{'size':>5}{'scenes':>8}{'flagged':>9}{'95 % CI':>16}")
        for region in [ood.fine_tuning_region, unseen]:
            if region is None:
                continue
            embedding, centroids = embed(bundle_dir, args.data, region)
            scores = scorer.score_batch(embedding, np.zeros(len(embedding))).score
            everything = np.arange(len(scores))
            # (label, number of splits, scenes per split): the bundle's calibration once, or
            # many random calibration halves of this folder, a few scenes each.
            plans = [(region, 1, args.scenes)]
            if region == ood.fine_tuning_region:
                plans.append((f"{region} exch.", SPLITS, max(1, args.scenes // SPLITS)))
            for label, splits, per_split in plans:
                counts: dict[tuple[bool, int], list[int]] = {}
                for split in range(splits):
                    rng = np.random.default_rng(split)
                    if splits == 1:
                        calibration, pool = scorer.calibration_scores, everything
                    else:
                        order = rng.permutation(len(scores))
                        half = len(order) // 2
                        calibration, pool = scores[order[:half]], np.sort(order[half:])
                    for contiguous in (False, True):
                        for size in SIZES:
                            drawn = draw_scenes(centroids[pool], size, per_split, contiguous, rng)
                            flags = [
                                rank_sum_p_value(scores[pool[d]], calibration) < ood.alpha
                                for d in drawn
                            ]
                            tally = counts.setdefault((contiguous, size), [0, 0])
                            tally[0] += sum(flags)
                            tally[1] += len(flags)
                for (contiguous, size), (flagged, n) in counts.items():
                    report(label, contiguous, size, flagged, n)
    return 0


def report(label: str, contiguous: bool, size: int, flagged: int, n: int) -> None:
    low, high = wilson_interval(flagged, n)
    kind = "contiguous" if contiguous else "random"
    print(f"{label:<20}{kind:<12}{size:>5}{n:>8}{flagged / n:>9.3f}{f'{low:.3f}..{high:.3f}':>16}")


if __name__ == "__main__":
    sys.exit(main())
