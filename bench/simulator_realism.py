"""Realism of the SAR simulator against real Sentinel-1: per class and per scene, side by side.

Real side: the 60 real BigEarthNet patches of ``testkit.real.real_patches`` (``--examples-only``:
the six bigearthnet-common examples), VV / VH dB single dates at 10 m from Austria, Finland,
Ireland, Lithuania, Portugal, Serbia and Switzerland (2017-2018), the nine sea-only patches left
out; averaged in linear power to the simulator's ~40 m pixels (4 x 4 blocks: the same ~16 looks a
single date has at 40 m). Class masks come from each patch's CORINE labels and the NDVI of its
Sentinel-2 patch:

- forest: summer patches (June-September) whose first two labels are coniferous or mixed forest
  (five: Finland and Austria), 40 m pixels whose 16 sub-pixels all have NDVI >= 0.6;
- grass/crops: patches labelled only arable land, pasture or agriculture (five: Ireland,
  Austria, Serbia), 40 m pixels whose sub-pixels all have NDVI >= 0.5;
- scene level: every pixel of every land patch.

Simulated side (SYNTHETIC): ``--tiles`` europe tiles (the real patches are European) written as
single dates (``single_date_share=1``) at 112 px (~40 m), classes from the simulator's own land
cover: forest = forest pixels with tree cover >= 0.5, grass/crops = herbaceous pixels with tree
cover < 0.1 and green (herbaceous vegetation descriptor V >= 0.25, the counterpart of the
NDVI mask). Class rows use the summer and autumn acquisitions (the real class patches are from
June to September, or green in winter); scene rows use every season.

Targets (from the project's realism issue): class medians within 1 dB of the real ones, the
forest - grass/crops VH contrast within 1 dB, scene VV and VH p5 / p50 / p95 within 2 dB,
neighbour correlation (adjacent 40 m pixels, within 1.2 km windows like the real patches)
within 0.1. The real references measure these patches, not Europe. Published C-band values for
comparison are in ``docs/simulator.md``.

    python bench/simulator_realism.py [--tiles 60] [--seed 0] [--region europe] [--examples-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sarveg.simulate import REGIONS  # noqa: E402
from testkit.real import bigearthnet_s1, real_patches  # noqa: E402
from testkit.realism import compare, real_references, simulated  # noqa: E402


def main() -> None:
    """Print the realism table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--region", default="europe", choices=sorted(REGIONS))
    parser.add_argument(
        "--examples-only", action="store_true", help="the six bigearthnet-common patches only"
    )
    args = parser.parse_args()
    patches = bigearthnet_s1() if args.examples_only else real_patches()
    references = real_references(patches)
    real = {k: v.stats() for k, v in references.items()}
    sim = {
        k: v.stats() for k, v in simulated(args.region, args.tiles, args.seed, args.size).items()
    }
    print(
        f"real: {len(patches)} BigEarthNet patches (water-only ones left out) at 40 m; "
        f"simulated: {args.tiles} {args.region} "
        f"single-date tiles (SYNTHETIC), seed {args.seed}"
    )
    counts = {
        side: ", ".join(f"{k} {int(v['n'])}" for k, v in stats.items())
        for side, stats in (("real", real), ("simulated", sim))
    }
    print(f"pixels: real {counts['real']}; simulated {counts['simulated']}")
    print("real patches: " + ", ".join(f"{k} {len(v.vv)}" for k, v in references.items()))
    print(f"{'statistic':<36}{'real':>8}{'sim':>8}{'tol':>6}  verdict")
    rows = compare(real, sim)
    for name, r, s, tol, ok in rows:
        print(f"{name:<36}{r:>8.2f}{s:>8.2f}{tol:>6.1f}  {ok}")
    print(f"met {sum(row[-1] == 'ok' for row in rows)} of {len(rows)} targets")


if __name__ == "__main__":
    main()
