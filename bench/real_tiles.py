"""Every real Sentinel-1 patch the project can get, through a packaged bundle, beside its labels.

Usage:
    python bench/real_tiles.py [--model models/s1grd-conus]

The patches are the six BigEarthNet-S1 examples shipped in the ``bigearthnet-common`` wheel on
PyPI (Apache-2.0; fetched once into ``$SARVEG_DATA_CACHE``, default ``~/.cache/sarveg``): single
GRD acquisitions, VV and VH in dB, 120 x 120 pixels at 10 m (1.2 km), UTM. Each goes to the
bundle as a two-band VV/VH GeoTIFF, the way ``/predict`` takes it (units detected, the date
replicated into the four seasons), and the answer is printed beside the patch's CORINE labels.

Caveats, printed with the table: the packaged bundles were trained on *simulated* seasonal
composites of ~4.5 km chips, so a 1.2 km single-date patch is outside what they learnt, and the
simulator is not calibrated against real backscatter yet. The figure is the starting point that
calibration must move, not a result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from serving.decoding import DecodeLimits  # noqa: E402
from serving.predictor import Predictor  # noqa: E402
from testkit.real import bigearthnet_s1, two_band_geotiff  # noqa: E402

FOREST_WORDS = ("forest", "woodland")


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
        f"{manifest.provenance.synthetic})"
    )
    header = f"{'patch':<46}{'date':>11}{'veg %':>7}{'interval':>14}{'p':>7}{'flag':>6}"
    print(header + f"  {'nearest':<14}{'plausible':<22}labels (CORINE)")
    for patch in bigearthnet_s1():
        answer = predictor.predict(two_band_geotiff(patch, "db"), name=patch.vv.name)
        ood = answer.ood
        interval = f"{answer.interval.low:.0f}-{answer.interval.high:.0f}"
        forest = any(w in label.lower() for label in patch.labels for w in FOREST_WORDS)
        labels = "; ".join(patch.labels) + (" [forest]" if forest else "")
        print(
            f"{patch.name:<46}{patch.date:>11}{answer.vegetation_pct:>7.1f}{interval:>14}"
            f"{ood.p_value:>7.3f}{'yes' if ood.unreliable else 'no':>6}  "
            f"{ood.nearest_region:<14}{','.join(ood.plausible_regions) or '-':<22}{labels}"
        )
    print(
        "caveat: simulator-trained bundle, 4.5 km seasonal chips; these are 1.2 km single dates "
        "(replicated into the seasons): expect the flag, not a usable estimate"
    )
    predictor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
