"""Every real Sentinel-1 patch the project can get, through a packaged bundle, beside its labels.

Usage:
    python bench/real_tiles.py [--model models/s1grd-conus]

The patches are the six BigEarthNet-S1 examples shipped in the ``bigearthnet-common`` wheel on
PyPI (Apache-2.0; fetched once into ``$SARVEG_DATA_CACHE``, default ``~/.cache/sarveg``): single
GRD acquisitions, VV and VH in dB, 120 x 120 pixels at 10 m (1.2 km), UTM. Each goes to the
bundle as a two-band VV/VH GeoTIFF, the way ``/predict`` takes it (units detected, the date
replicated into the four seasons), and the answer is printed beside the patch's CORINE labels.

Each patch is classed from its labels (forest-dominated, open, mixed) and checked against the
real-data targets: no confidently wrong answer (each patch flagged unreliable, or forest-dominated
estimated >= 30 % and open <= 25 %), and forest-dominated patches estimated above open ones (rank
AUROC >= 0.8). The patches are sent twice: as they are (10 m pixels), and averaged in linear
power to the bundle's pixel size first (the bundles learnt from ~40 m pixels of simulated 4.5 km
chips; a 1.2 km patch stays smaller than their footprint either way). Six patches: the figures
describe these patches, nothing wider.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rasterio.io import MemoryFile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from serving.decoding import DecodeLimits  # noqa: E402
from serving.predictor import Predictor  # noqa: E402
from testkit.real import bigearthnet_s1, two_band_geotiff  # noqa: E402
from testkit.realism import block_db  # noqa: E402

FOREST_WORDS = ("forest", "woodland")
FOREST_MIN_PCT, OPEN_MAX_PCT, AUROC_TARGET = 30.0, 25.0, 0.8


def patch_class(labels: tuple[str, ...]) -> str:
    """``forest`` when most CORINE labels are forest or woodland, ``open`` when none is."""
    share = sum(any(w in label.lower() for w in FOREST_WORDS) for label in labels) / len(labels)
    return "forest" if share > 0.5 else "open" if share == 0 else "mixed"


def at_pixel_size(patch_bytes: bytes, pixel_m: float) -> bytes:
    """The two-band file averaged in linear power to ``pixel_m`` pixels (whole blocks)."""
    with MemoryFile(patch_bytes) as source, source.open() as src:
        block = max(1, round(pixel_m / abs(src.transform.a)))
        averaged_db = block_db(src.read().astype(np.float64), block)  # (2, H / block, W / block)
        profile = src.profile | {
            "height": averaged_db.shape[1],
            "width": averaged_db.shape[2],
            "transform": src.transform * src.transform.scale(block, block),
        }
        descriptions, tags = src.descriptions, src.tags()
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(averaged_db.astype(np.float32))
            for index, name in enumerate(descriptions, start=1):
                dst.set_band_description(index, name)
            dst.update_tags(**tags)
        return memfile.read()


def auroc(forest: list[float], open_land: list[float]) -> float:
    """Share of (forest, open) patch pairs with the forest patch estimated higher (ties 1/2)."""
    pairs = [(f > o) + 0.5 * (f == o) for f in forest for o in open_land]
    return float(np.mean(pairs)) if pairs else float("nan")


def run(predictor: Predictor, pixel_m: float | None) -> None:
    """Print one table: every patch as sent (``None``) or averaged to ``pixel_m`` first."""
    how = "as sent (10 m)" if pixel_m is None else f"averaged to {pixel_m:.0f} m pixels first"
    print(f"\n{how}")
    header = f"{'patch':<46}{'date':>11}{'class':>7}{'veg %':>7}{'interval':>10}{'p':>7}"
    print(header + f"{'flag':>6}{'verdict':>10}  {'nearest':<14}labels (CORINE)")
    estimates: dict[str, list[float]] = {"forest": [], "open": []}
    wrong = 0
    for patch in bigearthnet_s1():
        content = two_band_geotiff(patch, "db")
        if pixel_m is not None:
            content = at_pixel_size(content, pixel_m)
        answer = predictor.predict(content, name=patch.vv.name)
        ood, veg = answer.ood, answer.vegetation_pct
        kind = patch_class(patch.labels)
        consistent = {
            "forest": veg >= FOREST_MIN_PCT,
            "open": veg <= OPEN_MAX_PCT,
            "mixed": True,
        }[kind]
        verdict = "flagged" if ood.unreliable else "ok" if consistent else "WRONG"
        wrong += verdict == "WRONG"
        if kind in estimates:
            estimates[kind].append(veg)
        interval = f"{answer.interval.low:.0f}-{answer.interval.high:.0f}"
        print(
            f"{patch.name:<46}{patch.date:>11}{kind:>7}{veg:>7.1f}{interval:>10}"
            f"{ood.p_value:>7.3f}{'yes' if ood.unreliable else 'no':>6}{verdict:>10}  "
            f"{ood.nearest_region:<14}{'; '.join(patch.labels)}"
        )
    score = auroc(estimates["forest"], estimates["open"])
    print(
        f"confidently wrong (unflagged, forest < {FOREST_MIN_PCT:.0f} % or open > "
        f"{OPEN_MAX_PCT:.0f} %): {wrong} (target 0); rank AUROC forest vs open over "
        f"{len(estimates['forest'])} x {len(estimates['open'])} patches: {score:.2f} "
        f"(target >= {AUROC_TARGET})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "s1grd-conus")
    args = parser.parse_args()
    predictor = Predictor.from_paths(str(args.model), limits=DecodeLimits(sandbox=False))
    manifest = next(iter(predictor.models.values())).manifest
    print(
        f"real BigEarthNet-S1 patches through {manifest.name} (trained on synthetic data: "
        f"{manifest.provenance.synthetic}); class: forest = most CORINE labels forest or "
        f"woodland, open = none, mixed = the rest (no target)"
    )
    run(predictor, None)
    if manifest.pixel_size_m is not None:
        run(predictor, manifest.pixel_size_m)
    predictor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
