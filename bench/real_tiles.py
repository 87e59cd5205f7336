"""Every real Sentinel-1 patch the project can get, through a packaged bundle, beside its labels.

Usage:
    python bench/real_tiles.py [--model models/s1grd-conus] [--examples-only] [--plot PNG]

The patches are 60 real BigEarthNet patches from two wheels on PyPI (fetched once into
``$SARVEG_DATA_CACHE``, default ``~/.cache/sarveg``; sources and licences in
``docs/real-data.md``): the six BigEarthNet-S1 examples of ``bigearthnet-common`` and the 54
BigEarthNet v1 / v2 patches ``configilm`` ships for its tests (``--examples-only``: the six).
All are single GRD acquisitions, VV and VH in dB, 120 x 120 pixels at 10 m (1.2 km), from
Austria, Finland, Ireland, Lithuania, Portugal, Serbia and Switzerland, 2017-2018. Each goes to
the bundle as a two-band VV/VH GeoTIFF, the way ``/predict`` takes it (units detected, the date
replicated into the four seasons), and the answer is printed beside the patch's CORINE labels.

Each patch is classed from its labels (forest-dominated, open, mixed, water) and checked against
the real-data targets: no confidently wrong answer (each patch flagged unreliable, or
forest-dominated estimated >= 30 % and open <= 25 %), and forest-dominated patches estimated
above open ones (rank AUROC >= 0.8, with a bootstrap 95 % interval over patches). Patches that
BigEarthNet lists under seasonal snow are marked: the simulator has no snow, so the AUROC is
also given without them. Beside the bundle's AUROC, the AUROC of the patch's VH median alone
says how much a single backscatter level ranks these patches. Winter patches (November to
February) are set apart as well: a frozen canopy and frozen soil lower VH more than VV, which the
simulator does not model, so the forest and open patches' VV - VH ratio and estimate are printed
for winter and the other months, and the AUROC without winter. The patches are sent twice: as
they are (10 m pixels), and averaged in linear power to the bundle's pixel size first (the
bundles learnt from ~40 m pixels of simulated 4.5 km chips; a 1.2 km patch stays smaller than
their footprint either way). The figures describe these patches, nothing wider.
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
from testkit.real import RealPatch, bigearthnet_s1, real_patches, two_band_geotiff  # noqa: E402
from testkit.realism import block_db  # noqa: E402

FOREST_WORDS = ("forest", "woodland")
FOREST_MIN_PCT, OPEN_MAX_PCT, AUROC_TARGET = 30.0, 25.0, 0.8
WINTER_MONTHS = ("11", "12", "01", "02")
BOOTSTRAP_DRAWS = 2000


def patch_class(patch: RealPatch) -> str:
    """``water`` when every label is water, else ``forest`` when most CORINE labels are forest or
    woodland, ``open`` when none is, ``mixed`` otherwise."""
    if patch.water_only:
        return "water"
    labels = patch.labels
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


def auroc_interval(forest: list[float], open_land: list[float]) -> tuple[float, float]:
    """Bootstrap 95 % interval of :func:`auroc`, resampling each class's patches."""
    if not forest or not open_land:
        return float("nan"), float("nan")
    rng = np.random.default_rng(0)
    f, o = np.asarray(forest), np.asarray(open_land)
    draws = [
        auroc(list(rng.choice(f, f.size)), list(rng.choice(o, o.size)))
        for _ in range(BOOTSTRAP_DRAWS)
    ]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def rank_line(name: str, rows: list[dict], key: str) -> str:
    """AUROC of ``key`` (forest above open) over ``rows``, with its interval and counts."""
    forest = [r[key] for r in rows if r["class"] == "forest"]
    open_land = [r[key] for r in rows if r["class"] == "open"]
    low, high = auroc_interval(forest, open_land)
    return (
        f"  {name:<44}{auroc(forest, open_land):>6.2f}  [{low:.2f}, {high:.2f}]  "
        f"({len(forest)} forest x {len(open_land)} open)"
    )


def run(predictor: Predictor, patches: list[RealPatch], pixel_m: float | None) -> list[dict]:
    """Print one table: every patch as sent (``None``) or averaged to ``pixel_m`` first."""
    how = "as sent (10 m)" if pixel_m is None else f"averaged to {pixel_m:.0f} m pixels first"
    print(f"\n{how}")
    header = f"{'patch':<46}{'country':>9}{'date':>11}{'class':>7}{'snow':>5}{'VH':>6}{'VV-VH':>6}"
    print(header + f"{'veg %':>7}{'interval':>10}{'p':>7}{'flag':>5}{'verdict':>9}  labels")
    rows = []
    for patch in patches:
        content = two_band_geotiff(patch, "db")
        if pixel_m is not None:
            content = at_pixel_size(content, pixel_m)
        answer = predictor.predict(content, name=patch.vv.name)
        ood, veg = answer.ood, answer.vegetation_pct
        kind = patch_class(patch)
        consistent = {"forest": veg >= FOREST_MIN_PCT, "open": veg <= OPEN_MAX_PCT}.get(kind, True)
        verdict = "flagged" if ood.unreliable else "ok" if consistent else "WRONG"
        vv_vh_db = patch.read_db()[0]  # (2, H, W)
        vh_db = float(np.median(vv_vh_db[1]))
        ratio_db = float(np.median(vv_vh_db[0] - vv_vh_db[1]))
        rows.append(
            {"class": kind, "snow": patch.seasonal_snow, "veg": veg, "vh": vh_db}
            | {"ratio": ratio_db, "winter": patch.date[5:7] in WINTER_MONTHS}
            | {"verdict": verdict, "unreliable": ood.unreliable}
        )
        interval = f"{answer.interval.low:.0f}-{answer.interval.high:.0f}"
        print(
            f"{patch.name:<46}{patch.country[:8]:>9}{patch.date:>11}{kind:>7}"
            f"{'yes' if patch.seasonal_snow else '':>5}{vh_db:>6.1f}{ratio_db:>6.1f}{veg:>7.1f}"
            f"{interval:>10}"
            f"{ood.p_value:>7.3f}{'yes' if ood.unreliable else 'no':>5}{verdict:>9}  "
            f"{'; '.join(patch.labels)}"
        )
    wrong = sum(r["verdict"] == "WRONG" for r in rows)
    flagged = sum(r["unreliable"] for r in rows)
    print(
        f"flagged {flagged} of {len(rows)}; confidently wrong (unflagged, forest < "
        f"{FOREST_MIN_PCT:.0f} % or open > {OPEN_MAX_PCT:.0f} %): {wrong} (target 0)"
    )
    print(f"rank AUROC forest above open (target >= {AUROC_TARGET}), bootstrap 95 % interval:")
    snow_free = [r for r in rows if not r["snow"]]
    print(rank_line("bundle estimate, every patch", rows, "veg"))
    print(rank_line("bundle estimate, without seasonal snow", snow_free, "veg"))
    not_winter = [r for r in rows if not r["winter"]]
    print(rank_line("bundle estimate, March-October only", not_winter, "veg"))
    print(rank_line("VH median alone, every patch", rows, "vh"))
    print(rank_line("VH median alone, without seasonal snow", snow_free, "vh"))
    print_winter(rows)
    return rows


def print_winter(rows: list[dict]) -> None:
    """VV - VH and the estimate of forest and open patches, winter (November-February) or not.

    A frozen canopy and frozen soil lower VH more than VV, so winter patches carry a VV - VH
    ratio that the simulated summer-like landscapes give only to bare and sparse land.
    """
    print("forest and open patches, median of per-patch VV - VH (dB) and of the estimate (%):")
    for winter in (True, False):
        for kind in ("forest", "open"):
            group = [r for r in rows if r["class"] == kind and r["winter"] == winter]
            if group:
                ratio = np.median([r["ratio"] for r in group])
                veg = np.median([r["veg"] for r in group])
                when = "November-February" if winter else "March-October"
                print(
                    f"  {kind:<7}{when:<19}{len(group):>3} patches  VV-VH {ratio:5.1f}  "
                    f"estimate {veg:5.1f}"
                )


def plot(rows_by_mode: dict[str, list[dict]], path: Path, title: str) -> None:
    """Estimates per class, flagged patches hollow, one panel per way of sending."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = ("forest", "mixed", "open", "water")
    fig, axes = plt.subplots(1, len(rows_by_mode), figsize=(5 * len(rows_by_mode), 4), sharey=True)
    for ax, (mode, rows) in zip(np.atleast_1d(axes), rows_by_mode.items(), strict=True):
        rng = np.random.default_rng(0)
        for index, kind in enumerate(classes):
            for r in (r for r in rows if r["class"] == kind):
                x = index + rng.uniform(-0.18, 0.18)
                marker = "^" if r["snow"] else "o"
                face = "none" if r["unreliable"] else "C0"
                ax.scatter(x, r["veg"], marker=marker, facecolors=face, edgecolors="C0", s=28)
        ax.axhspan(FOREST_MIN_PCT, 100, xmin=0, xmax=0.25, color="C2", alpha=0.12)
        ax.axhspan(0, OPEN_MAX_PCT, xmin=0.5, xmax=0.75, color="C2", alpha=0.12)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_title(mode, fontsize=10)
        ax.set_ylim(-3, 100)
    np.atleast_1d(axes)[0].set_ylabel("estimated vegetation % (bundle)")
    fig.suptitle(f"{title}: hollow = flagged unreliable, triangle = seasonal snow", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "s1grd-conus")
    parser.add_argument("--examples-only", action="store_true", help="the six examples only")
    parser.add_argument("--plot", type=Path, help="write the estimates per class as a PNG")
    args = parser.parse_args()
    predictor = Predictor.from_paths(str(args.model), limits=DecodeLimits(sandbox=False))
    manifest = next(iter(predictor.models.values())).manifest
    patches = bigearthnet_s1() if args.examples_only else real_patches()
    print(
        f"{len(patches)} real BigEarthNet patches through {manifest.name} (trained on synthetic "
        f"data: {manifest.provenance.synthetic}); class: forest = most CORINE labels forest or "
        f"woodland, open = none (and not all water), water = all water, mixed = the rest (no "
        f"target)"
    )
    rows_by_mode = {"as sent (10 m)": run(predictor, patches, None)}
    if manifest.pixel_size_m is not None:
        mode = f"averaged to {manifest.pixel_size_m:.0f} m"
        rows_by_mode[mode] = run(predictor, patches, manifest.pixel_size_m)
    predictor.close()
    if args.plot is not None:
        plot(rows_by_mode, args.plot, f"{len(patches)} real patches, {manifest.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
