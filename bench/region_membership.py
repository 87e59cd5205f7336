"""Region membership of the packaged bundles: the old and new nearest-region rules, coverage.

Usage:
    python bench/region_membership.py --data FOLDER [--models models/] [--splits 20]

``FOLDER`` is an independent simulated folder (e.g. ``sarveg simulate --seed 2``, 1,000 tiles
per region). For each bundle of ``--models``, side by side per region:

- accuracy of ``nearest_region`` (pooled k-NN vote) and of the old rule (argmin of the per-tile
  SWD) against the bundle's own reference sets; target >= 0.95;
- coverage of ``plausible_regions`` (the true region among them) with the bundle's reference
  sets, tiles of another simulated world than the references; target >= 1 - alpha;
- the same coverage when the references are a random half of ``FOLDER``'s tiles and the other
  half is tested, averaged over ``--splits`` random splits: the exchangeable case the
  full-conformal guarantee is about (one split's coverage has a sd of about 0.014).

Tiles are simulated, so these are synthetic results.
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

from sarveg.bundle import load_bundle  # noqa: E402
from sarveg.ood import OODScorer  # noqa: E402
from sarveg.reference import RegionReference  # noqa: E402
from sarveg.region_membership import RegionMembership  # noqa: E402
from training.bundle_regions import region_tiles  # noqa: E402


def half(group: RegionReference, rows: np.ndarray) -> RegionReference:
    return RegionReference(
        group.embedding[rows], group.vegetation_pct[rows], group.predicted_pct[rows]
    )


def measure(bundle_dir: Path, data: Path, splits: int) -> None:
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    alpha = manifest.ood.alpha
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    scorer = OODScorer.from_bundle(bundle)
    regions = list(scorer.regions)
    groups = {
        r: region_tiles(session, data, manifest.modality, manifest.input_size, r, 10_000)
        for r in regions
    }
    exchangeable = {r: [] for r in regions}
    for seed in range(splits):
        rng = np.random.default_rng(seed)
        refs, tests = {}, {}
        for r, g in groups.items():
            order = rng.permutation(len(g.embedding))
            refs[r], tests[r] = (
                half(g, order[: len(order) // 2]),
                g.embedding[order[len(order) // 2 :]],
            )
        membership = RegionMembership(refs, manifest.ood.knn_k, alpha)
        for r, x in tests.items():
            exchangeable[r].append(
                np.mean(membership.score(x).p_value[:, regions.index(r)] >= alpha)
            )
    print(f"\n{manifest.name} ({manifest.modality}) on {data.name} [synthetic]")
    print(
        f"{'region':<15}{'tiles':>7}{'nearest (new)':>15}{'nearest (SWD)':>15}"
        f"{'coverage':>10}{f'exch. x{splits}':>12}"
    )
    for r in regions:
        x = groups[r].embedding
        batch = scorer.score_batch(x, groups[r].predicted_pct)
        new = np.mean([n == r for n in batch.nearest_region])
        old = np.mean(np.argmin(batch.swd_by_region, axis=1) == regions.index(r))
        covered = np.mean([r in p for p in batch.plausible_regions])
        print(
            f"{r:<15}{len(x):>7}{new:>15.3f}{old:>15.3f}{covered:>10.3f}"
            f"{np.mean(exchangeable[r]):>12.4f}"
        )
    print(f"targets: nearest >= 0.95; coverage >= {1 - alpha:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--splits", type=int, default=20)
    args = parser.parse_args()
    for bundle_dir in sorted(p.parent for p in args.models.glob("*/bundle.json")):
        measure(bundle_dir, args.data, args.splits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
