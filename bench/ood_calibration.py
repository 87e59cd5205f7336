"""Check a shipped bundle's OOD calibration on freshly simulated tiles it has never seen.

Usage:
    python bench/ood_calibration.py [--model models/s1grd-conus] [--tiles 2000] [--seed 2]
                                    [--data DIR]

``sarveg export`` measures the OOD block once, at export: on held-out test tiles, or on an
independent folder (``--ood-data``; ``make models`` simulates one with seed 1). Here the
simulator writes ``--tiles`` new tiles of the fine-tuning region and of the unseen region with
yet another seed (or ``--data`` names such a folder), the bundle scores them exactly as serving
does (``sarveg.read_tile``, the bundle's resampling, ONNX Runtime, ``OODScorer``), and the same
figures are printed next to the ones the bundle recorded, with 95 % Wilson intervals for the
rates:

- false-flag rate on in-distribution tiles (target alpha +/- 0.02);
- interval coverage on them (target 0.90 +/- 0.03 for a 90 % interval);
- AUROC of the score, unseen vs in-distribution tiles (target >= 0.9);
- Spearman correlation of the score with the absolute error on unseen tiles (target >= 0.3).

With ``--benchmark DIR`` (the bundle's training data) the calibration set is split by where its
tiles lie: train bands (unlabelled train tiles) and val bands; the script prints each part's
size, a two-sided rank-sum test that their scores come from one distribution, and the fresh
tiles' false-flag rate against each part alone. The bundle's ``weights.json`` lists the tiles.

The tiles are simulated, so these are synthetic results.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import json  # noqa: E402

from sarveg.conformal import conformal_p_values  # noqa: E402
from sarveg.dataset import TileRecord, index_dataset  # noqa: E402
from sarveg.ood import rank_sum_p_value  # noqa: E402
from sarveg.ood_evaluation import evaluate_ood  # noqa: E402
from sarveg.reference import RegionReference  # noqa: E402
from sarveg.tiles import read_tile  # noqa: E402
from serving.model import ServedModel  # noqa: E402
from serving.predictor import Predictor  # noqa: E402

BATCH = 32
Z95 = 1.959964


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


def simulate(out: Path, regions: list[str], tiles: int, side: int, seed: int) -> None:
    """Write a fresh simulated benchmark with ``sarveg simulate``."""
    sarveg = Path(sys.executable).with_name("sarveg")
    subprocess.run(
        [str(sarveg), "simulate", "--out", str(out), "--regions", ",".join(regions)]
        + ["--tiles-per-region", str(tiles), "--size", str(side), "--seed", str(seed)]
        + ["--workers", "2"],
        check=True,
    )


def run_records(model: ServedModel, records: list[TileRecord], desc: str) -> RegionReference:
    """Embeddings, predictions and labels of labelled tiles, as serving computes them."""
    records = [r for r in records if np.isfinite(r.vegetation_pct)]
    embeddings, predicted = [], []
    modality = model.manifest.modality
    for start in tqdm(range(0, len(records), BATCH), desc=desc, leave=False):
        chunk = records[start : start + BATCH]
        tiles = np.stack([model.prepare(read_tile(r.path, modality=modality)) for r in chunk])
        outputs = model.onnx.run(tiles)  # (B,), (B, D)
        predicted.append(outputs.vegetation_pct)
        embeddings.append(outputs.embedding)
    return RegionReference(
        embedding=np.concatenate(embeddings).astype(np.float32),
        vegetation_pct=np.array([r.vegetation_pct for r in records], np.float32),
        predicted_pct=np.concatenate(predicted).astype(np.float32),
    )


def compare_calibration_parts(model: ServedModel, inside: RegionReference, benchmark: Path) -> None:
    """Print the calibration set's parts by split and the fresh false-flag rate against each."""
    meta = json.loads((model.bundle.directory / "weights.json").read_text())
    tiles = [tuple(t) for t in meta["tiles"]["calibration"]]
    regions = sorted({region for region, _ in tiles})
    split_of = {
        (r.region, r.identifier): r.split
        for r in index_dataset(benchmark, model.manifest.modality, regions, read_labels=False)
    }
    splits = np.array([split_of[t] for t in tiles])
    scores = model.scorer.calibration_scores
    if len(scores) != len(splits):
        raise SystemExit(f"expected {len(splits)} calibration scores, found {len(scores)}")
    fresh = model.scorer.score_batch(inside.embedding, inside.predicted_pct).score
    alpha = model.manifest.ood.alpha
    print("\ncalibration set by split (where its tiles lie in the benchmark)")
    print(f"{'part':<10} {'tiles':>6} {'fresh false-flag rate vs this part':>36}")
    parts = {name: scores[splits == name] for name in ("train", "val") if np.any(splits == name)}
    for name, part in parts.items():
        rate = float(np.mean(conformal_p_values(fresh, part) < alpha))
        print(f"{name:<10} {len(part):>6} {rate:>36.3f}")
    if len(parts) == 2:
        high = rank_sum_p_value(parts["train"], parts["val"])
        low = rank_sum_p_value(parts["val"], parts["train"])
        two_sided = min(1.0, 2 * min(high, low))
        print(f"two-sided rank-sum p, train-band vs val-band scores: {two_sided:.3f}")


def measure(
    model: ServedModel, data: Path, unseen_region: str, benchmark: Path | None = None
) -> None:
    """Score the fresh tiles and print the figures next to the bundle's."""
    manifest = model.manifest
    ood = manifest.ood
    region = ood.fine_tuning_region
    modality = manifest.modality
    inside = run_records(model, index_dataset(data, modality, [region]), region)
    outside = run_records(model, index_dataset(data, modality, [unseen_region]), unseen_region)
    fresh = evaluate_ood(model.scorer, inside, outside, unseen_region=unseen_region, synthetic=True)
    recorded = ood.measured
    n_in = fresh.n_in_distribution
    flagged = round(fresh.false_flag_rate * n_in)
    covered = round(fresh.interval_coverage * n_in)  # every tile here is labelled
    print(f"OOD calibration of {manifest.name} ({modality}) on fresh simulated tiles (synthetic)")
    print(f"fine-tuning region {region}: {n_in} tiles; unseen {unseen_region}: {fresh.n_unseen}")
    print(f"\n{'figure':<36} {'bundle':>9} {'fresh':>9} {'fresh 95 % CI':>17} {'target':>14}")
    rows = [
        (
            "false-flag rate",
            recorded.false_flag_rate if recorded else None,
            fresh.false_flag_rate,
            wilson_interval(flagged, n_in),
            f"{ood.alpha - 0.02:.2f}..{ood.alpha + 0.02:.2f}",
        ),
        (
            "interval coverage",
            recorded.interval_coverage if recorded else None,
            fresh.interval_coverage,
            wilson_interval(covered, n_in),
            f"{1 - ood.interval_alpha - 0.03:.2f}..{1 - ood.interval_alpha + 0.03:.2f}",
        ),
        (
            "AUROC unseen vs in-distribution",
            recorded.auroc if recorded else None,
            fresh.auroc,
            None,
            ">= 0.90",
        ),
        (
            "Spearman score vs |error|",
            recorded.spearman_abs_error if recorded else None,
            fresh.spearman_abs_error,
            None,
            ">= 0.30",
        ),
    ]
    for name, old, new, ci, target in rows:
        old_text = "-" if old is None else f"{old:.3f}"
        new_text = "-" if new is None else f"{new:.3f}"
        ci_text = "" if ci is None else f"{ci[0]:.3f}..{ci[1]:.3f}"
        print(f"{name:<36} {old_text:>9} {new_text:>9} {ci_text:>17} {target:>14}")
    if recorded is not None:
        print(f"(bundle: {recorded.n_in_distribution} in-distribution tiles at export)")
    if benchmark is not None:
        compare_calibration_parts(model, inside, benchmark)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "s1grd-conus")
    parser.add_argument("--tiles", type=int, default=2000, help="fresh tiles per region")
    parser.add_argument(
        "--seed",
        type=int,
        default=2,
        help="simulator seed (the benchmark: 0; make models' OOD evaluation folder: 1)",
    )
    parser.add_argument("--data", type=Path, default=None, help="use this simulated folder")
    parser.add_argument("--unseen-region", default=None, help="default: the bundle's")
    parser.add_argument(
        "--benchmark", type=Path, default=None, help="the bundle's training data (split check)"
    )
    args = parser.parse_args()
    predictor = Predictor.from_paths(str(args.model))
    model = next(iter(predictor.models.values()))
    ood = model.manifest.ood
    unseen = args.unseen_region or (ood.measured.unseen_region if ood.measured else None)
    if unseen is None:
        parser.error("the bundle records no unseen region: pass --unseen-region")
    if args.data is not None:
        measure(model, args.data, unseen, args.benchmark)
        return 0
    with tempfile.TemporaryDirectory(prefix="sarveg-ood-") as tmp:
        side = model.manifest.source_tile_px
        simulate(Path(tmp), [ood.fine_tuning_region, unseen], args.tiles, side, args.seed)
        measure(model, Path(tmp), unseen, args.benchmark)
    return 0


if __name__ == "__main__":
    sys.exit(main())
