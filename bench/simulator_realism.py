"""Realism check of the SAR simulator: VV / VH dB quantiles per land-cover class and per tile.

Simulates a few tiles per region (in memory, nothing written) and prints, for every land-cover
class and for whole tiles, the 5th, 50th and 95th percentiles of ascending VV and VH sigma0 (dB,
all seasons) next to the C-band target ranges of docs section 4. All figures are from
SYNTHETIC data.

    python bench/simulator_realism.py [--tiles 40] [--size 112] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from sarveg import bands
from sarveg.simulate import REGIONS, make_chips, simulate_tile
from sarveg.simulate.regions import BARE, CLASS_NAMES, FOREST, HERBACEOUS, URBAN, WATER
from sarveg.simulate.tile import area_average

DENSE_FOREST_TREE_COVER = 0.6
# (name, VV median target, VH median target, note) from docs section 4; None = no target.
TARGETS: dict[str, tuple[tuple[float, float] | None, tuple[float, float] | None]] = {
    "dense forest": ((-9.0, -6.0), (-14.0, -11.0)),
    "grass/crops": ((-14.0, -8.0), (-22.0, -15.0)),
    "bare soil": ((-15.0, -10.0), (-25.0, -18.0)),
    "calm water": ((-60.0, -18.0), None),
    "urban": ((-5.0, 5.0), None),
    "mixed-land tiles": ((-14.0, -11.0), None),
    "all tiles": (None, None),
}
# A tile is "mixed land" (rural, no single cover dominating) when no class covers more than 70 %
# and built-up land less than 5 %.
MIXED_MAX_CLASS_SHARE, MIXED_MAX_URBAN_SHARE = 0.7, 0.05
TAILS_DB = {"p5": -21.0, "p95": -6.0}  # VV over mixed land
VV_ASC = [bands.S1GRD_RAW_BANDS.index(f"{s}_vvasc") for s in bands.S1GRD_SEASONS]
VH_ASC = [bands.S1GRD_RAW_BANDS.index(f"{s}_vhasc") for s in bands.S1GRD_SEASONS]


def class_masks(land_cover: np.ndarray, tree_cover: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel selections of each reported class on the S1GRD grid."""
    shares = np.bincount(land_cover.ravel(), minlength=5) / land_cover.size
    mixed = bool(shares.max() <= MIXED_MAX_CLASS_SHARE and shares[URBAN] < MIXED_MAX_URBAN_SHARE)
    return {
        "dense forest": (land_cover == FOREST) & (tree_cover >= DENSE_FOREST_TREE_COVER),
        "grass/crops": (land_cover == HERBACEOUS) & (tree_cover < 0.1),
        "bare soil": land_cover == BARE,
        "calm water": land_cover == WATER,
        "urban": land_cover == URBAN,
        "mixed-land tiles": np.full(land_cover.shape, mixed, dtype=bool),
        "all tiles": np.ones_like(land_cover, dtype=bool),
    }


PURE_COARSE_PIXEL = 0.9  # a GSSIC pixel belongs to a class when 90 % of its area is that class


def coherence_by_class(tile_land_cover: np.ndarray, coherence_12d: np.ndarray) -> list[np.ndarray]:
    """12-day coherence of GSSIC pixels that are (almost) pure in each class, all seasons."""
    side = coherence_12d.shape[-1]
    out = []
    for code in range(len(CLASS_NAMES)):
        share = area_average((tile_land_cover == code).astype(np.float32), side)  # (h, w)
        pure = (share >= PURE_COARSE_PIXEL) & np.isfinite(coherence_12d[0])
        out.append(coherence_12d[:, pure].ravel())
    return out


def collect(
    region: str, tiles: int, size: int, seed: int, coherence: list[list[np.ndarray]]
) -> dict[str, tuple[list, list]]:
    """VV and VH dB samples per class for one region; appends coherence samples per class."""
    samples: dict[str, tuple[list, list]] = {}
    for chip in make_chips(REGIONS[region], tiles, seed):
        tile = simulate_tile(chip, size, seed)
        for code, values in enumerate(coherence_by_class(tile.land_cover, tile.coherence[:, 0])):
            coherence[code].append(values)
        vv, vh = tile.s1grd_db[VV_ASC], tile.s1grd_db[VH_ASC]  # (4, H, W) each
        for name, mask in class_masks(tile.land_cover, tile.tree_cover).items():
            keep = mask & np.isfinite(vv[0])
            store = samples.setdefault(name, ([], []))
            store[0].append(vv[:, keep].ravel())
            store[1].append(vh[:, keep].ravel())
    return samples


def describe(values: np.ndarray) -> str:
    """``p5 p50 p95`` of a sample, or dashes when empty."""
    if values.size == 0:
        return f"{'-':>6} {'-':>6} {'-':>6}"
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return f"{p5:6.1f} {p50:6.1f} {p95:6.1f}"


def verdict(values: np.ndarray, target: tuple[float, float] | None) -> str:
    """Whether the median falls in the target range."""
    if target is None or values.size == 0:
        return "  "
    return "ok" if target[0] <= np.median(values) <= target[1] else "!!"


def target_text(target: tuple[float, float] | None) -> str:
    """A target range as text."""
    if target is None:
        return f"{'':>11}"
    low, high = target
    return f"< {high:5.0f}    " if low <= -60 else f"{low:5.0f}..{high:<4.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=40, help="tiles per region")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"SYNTHETIC data: {args.tiles} simulated tiles per region at {args.size} px, "
        "ascending sigma0, all seasons"
    )
    header = (
        f"{'region':<14}{'class':<17}{'share':>6}  {'VV p5':>6} {'p50':>6} {'p95':>6}  "
        f"{'VV target':>11}     {'VH p5':>6} {'p50':>6} {'p95':>6}  {'VH target':>11}"
    )
    pooled: dict[str, tuple[list, list]] = {}
    coherence: dict[str, list[list[np.ndarray]]] = {}
    for region in [*REGIONS, "all"]:
        print(header if region == list(REGIONS)[0] else "")
        if region == "all":
            samples = {
                k: ([np.concatenate(v[0])], [np.concatenate(v[1])]) for k, v in pooled.items()
            }
        else:
            coherence[region] = [[] for _ in CLASS_NAMES]
            samples = collect(region, args.tiles, args.size, args.seed, coherence[region])
            for name, (vv, vh) in samples.items():
                store = pooled.setdefault(name, ([], []))
                store[0].extend(vv)
                store[1].extend(vh)
        total = np.concatenate(samples["all tiles"][0]).size
        for name, (vv_t, vh_t) in TARGETS.items():
            vv = np.concatenate(samples[name][0])
            vh = np.concatenate(samples[name][1])
            print(
                f"{region:<14}{name:<17}{vv.size / max(total, 1):6.1%}  {describe(vv)}  "
                f"{target_text(vv_t)} {verdict(vv, vv_t)}  {describe(vh)}  "
                f"{target_text(vh_t)} {verdict(vh, vh_t)}"
            )
    mixed = np.concatenate(pooled["mixed-land tiles"][0])
    p5, p95 = np.percentile(mixed, [5, 95])
    print(
        f"\nmixed-land VV tails, all regions: p5 {p5:.1f} dB (target ~{TAILS_DB['p5']:.0f}), "
        f"p95 {p95:.1f} dB (target ~{TAILS_DB['p95']:.0f})"
    )
    print(
        "\nGSSIC 12-day coherence, median (p5-p95) of pure ~90 m pixels, all seasons; expected "
        "order urban > bare soil > grass/crops > forest > water (estimator bias ~0.1)"
    )
    print(f"{'region':<14}" + "".join(f"{name:>19}" for name in CLASS_NAMES))
    for region, per_class in coherence.items():
        cells = []
        for values in per_class:
            v = np.concatenate(values) if values else np.empty(0)
            if v.size < 20:
                cells.append(f"{'-':>19}")
            else:
                p5, p50, p95 = np.percentile(v, [5, 50, 95])
                cells.append(f"{p50:8.2f} ({p5:.2f}-{p95:.2f})")
        print(f"{region:<14}" + "".join(cells))


if __name__ == "__main__":
    main()
