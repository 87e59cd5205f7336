"""Intervals of adapted bundles: one pooled quantile against one per region (Mondrian).

Usage:
    python bench/adapt_intervals.py --independent runs/bench-adapt/independent \
        [--cache runs/bench-adapt/cache] BUNDLE [BUNDLE ...]

An adapted bundle calibrates its interval on the labelled calibration tiles of two regions: the
old region's (about a thousand) and the new region's (9 at K = 25, 18 at K = 50). For each
bundle, on the same independent labelled tiles of each in-distribution region, with the same
predictions and the same difficulty, this prints the coverage and mean width of

- ``pooled``: one conformal quantile over every labelled calibration tile (before this version);
- ``mondrian``: the bundle's own interval, one quantile per category (the region whose
  reference is nearest), from the calibration tiles of that category alone,

and the quantiles themselves. Nominal coverage: ``1 - interval_alpha`` (0.9). The figures
include nothing but the interval arithmetic on ONNX Runtime outputs (no timing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sarveg.bundle import load_bundle  # noqa: E402
from sarveg.conformal import conformal_quantile, interval_coverage, predict_intervals  # noqa: E402
from sarveg.ood import OODScorer  # noqa: E402
from training.cache import prepare_cache  # noqa: E402
from training.export import labelled_rows, run_rows  # noqa: E402
from training.onnx_export import make_session  # noqa: E402


def compare_bundle(bundle_dir: Path, independent: Path, cache_dir: Path | None) -> list[str]:
    """Table lines for one bundle: per region, pooled and Mondrian coverage and width."""
    bundle = load_bundle(bundle_dir)
    settings = bundle.manifest.ood
    scorer = OODScorer.from_bundle(bundle)
    residuals = np.asarray(bundle.reference.calibration.abs_error_norm, np.float64)
    pooled = conformal_quantile(residuals[np.isfinite(residuals)], settings.interval_alpha)
    session = make_session(bundle.model_path)
    quantiles = ", ".join(
        f"{r} {q:.2f}"
        for r, q in zip(scorer.in_distribution.regions, scorer.interval_quantiles, strict=True)
    )
    synthetic = " [SYNTHETIC]" if bundle.manifest.provenance.synthetic else ""
    lines = [f"{bundle_dir}{synthetic}: quantile pooled {pooled:.2f}; per category {quantiles}"]
    for region in scorer.in_distribution.regions:
        cache = prepare_cache(
            independent,
            bundle.manifest.modality,
            bundle.manifest.input_size,
            [region],
            None,
            cache_dir,
            progress=False,
        )
        group = run_rows(session, cache, labelled_rows(cache, cache.indices()))
        batch = scorer.score_batch(group.embedding, group.predicted_pct)
        difficulty = scorer.in_distribution.score(group.embedding)[1]
        low, high = predict_intervals(
            group.predicted_pct, difficulty, pooled, settings.difficulty_eps
        )
        for name, (lo, hi) in (
            ("pooled", (low, high)),
            ("mondrian", (batch.interval_low, batch.interval_high)),
        ):
            lines.append(
                f"  {region:<14} {name:<9} n {len(lo):>5}  coverage "
                f"{interval_coverage(group.vegetation_pct, lo, hi):.3f}  mean width "
                f"{np.mean(hi - lo):6.2f} points"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--independent", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    for bundle_dir in args.bundles:
        print("\n".join(compare_bundle(bundle_dir, args.independent, args.cache)), flush=True)
    print("nominal coverage: 1 - interval_alpha (0.90 by default)")


if __name__ == "__main__":
    main()
