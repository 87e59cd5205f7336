"""Realism of the SAR simulator against real Sentinel-1: per class and per scene, side by side.

Real side: the six BigEarthNet-S1 patches (``testkit.real``; VV / VH dB single dates at 10 m,
Austria, Ireland, Finland, Portugal, 2017-2018), averaged in linear power to the simulator's
~40 m pixels (4 x 4 blocks: the same ~16 looks a single date has at 40 m). Class masks come
from each patch's CORINE labels and the NDVI of its Sentinel-2 patch:

- forest: the forest-dominated patch (Finland, September; coniferous and mixed forest), 40 m
  pixels whose 16 sub-pixels all have NDVI >= 0.6;
- grass/crops: the three patches labelled only arable land and pasture (Ireland, Austria,
  June), 40 m pixels whose sub-pixels all have NDVI >= 0.5;
- scene level: every pixel of all six patches.

Simulated side (SYNTHETIC): ``--tiles`` europe tiles (the real patches are European) written as
single dates (``single_date_share=1``) at 112 px (~40 m), classes from the simulator's own land
cover: forest = forest pixels with tree cover >= 0.5, grass/crops = herbaceous pixels with tree
cover < 0.1 and green (herbaceous vegetation descriptor V >= 0.25, the counterpart of the
NDVI mask). Class rows use the summer and autumn acquisitions (the real class patches are from
June and September); scene rows use every season.

Targets (from the project's realism issue): class medians within 1 dB of the real ones, the
forest - grass/crops VH contrast within 1 dB, scene VV and VH p5 / p50 / p95 within 2 dB,
neighbour correlation (adjacent 40 m pixels, within 1.2 km windows like the real patches)
within 0.1. The real references are six patches:
they measure these patches, not Europe. Published C-band values for comparison are in
``docs/simulator.md``.

    python bench/simulator_realism.py [--tiles 60] [--seed 0] [--region europe]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sarveg import bands  # noqa: E402
from sarveg.simulate import REGIONS, make_chips, simulate_tile  # noqa: E402
from sarveg.simulate.regions import FOREST, HERBACEOUS  # noqa: E402
from testkit.real import bigearthnet_s1  # noqa: E402

BLOCK = 4  # 10 m real pixels per ~40 m simulated pixel, per side
WINDOW_PX = 30  # a real patch (120 px at 10 m) at 40 m
FOREST_LABELS = ("Coniferous forest", "Mixed forest", "Broad-leaved forest")
OPEN_LABELS = ("Non-irrigated arable land", "Pastures", "Land principally occupied by agriculture")
FOREST_NDVI, OPEN_NDVI = 0.6, 0.5
SIM_FOREST_TREE_COVER, SIM_OPEN_TREE_COVER = 0.5, 0.1
# Green grass / crops (the simulator's counterpart of NDVI >= 0.5): herbaceous V >= 0.25.
SIM_GREEN_HERB_V = 0.25
LEAF_ON_SEASONS = (bands.S1GRD_SEASONS.index("summer"), bands.S1GRD_SEASONS.index("fall"))
CLASS_TOLERANCE_DB, CONTRAST_TOLERANCE_DB, SCENE_TOLERANCE_DB, CORR_TOLERANCE = 1.0, 1.0, 2.0, 0.1


@dataclass
class Pixels:
    """VV and VH dB of the pixels of one class or scene, and neighbour correlations."""

    vv: list[np.ndarray]
    vh: list[np.ndarray]
    corr_vv: list[float]
    corr_vh: list[float]

    @classmethod
    def empty(cls) -> Pixels:
        """No pixels yet."""
        return cls([], [], [], [])

    def add(self, vv_db: np.ndarray, vh_db: np.ndarray, mask: np.ndarray) -> None:
        """Add the masked pixels of one ``(H, W)`` image pair."""
        self.vv.append(vv_db[mask])
        self.vh.append(vh_db[mask])

    def stats(self) -> dict[str, float]:
        """Medians, VV - VH, quantiles and mean neighbour correlations."""
        vv, vh = np.concatenate(self.vv), np.concatenate(self.vh)
        out = {"n": float(vv.size), "vv_vh": float(np.median(vv - vh))}
        for name, values in (("vv", vv), ("vh", vh)):
            for q in (5, 50, 95):
                out[f"{name}_p{q}"] = float(np.percentile(values, q))
        out["corr_vv"] = float(np.mean(self.corr_vv)) if self.corr_vv else float("nan")
        out["corr_vh"] = float(np.mean(self.corr_vh)) if self.corr_vh else float("nan")
        return out


def neighbour_correlation(image_db: np.ndarray) -> float:
    """Correlation of horizontally and vertically adjacent pixels (dB), NaN-free images."""
    pairs = [
        (image_db[:, :-1].ravel(), image_db[:, 1:].ravel()),
        (image_db[:-1].ravel(), image_db[1:].ravel()),
    ]
    return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in pairs]))


def block_db(db: np.ndarray) -> np.ndarray:
    """``(..., H, W)`` dB averaged in linear power over ``BLOCK`` x ``BLOCK`` pixels."""
    *lead, h, w = db.shape
    power = 10.0 ** (db / 10.0)
    blocks = power.reshape(*lead, h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean(axis=(-3, -1))
    return 10.0 * np.log10(blocks)


def block_all(mask: np.ndarray) -> np.ndarray:
    """A 40 m pixel is in a class when all of its 10 m sub-pixels are."""
    h, w = mask.shape
    return mask.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).all(axis=(1, 3))


def real_references() -> dict[str, Pixels]:
    """Real class and scene pixels at 40 m from the BigEarthNet-S1 patches."""
    groups = {"forest": Pixels.empty(), "grass/crops": Pixels.empty(), "scene": Pixels.empty()}
    for patch in bigearthnet_s1():
        db, _ = patch.read_db()
        vv, vh = block_db(db)  # (30, 30) each
        scene = groups["scene"]
        scene.add(vv, vh, np.ones_like(vv, dtype=bool))
        scene.corr_vv.append(neighbour_correlation(vv))
        scene.corr_vh.append(neighbour_correlation(vh))
        ndvi = patch.ndvi()
        forest = all(
            any(label.startswith(f) for f in FOREST_LABELS[:2]) for label in patch.labels[:2]
        ) and patch.date[5:7] in ("06", "07", "08", "09")
        open_land = all(any(label.startswith(o) for o in OPEN_LABELS) for label in patch.labels)
        if forest:
            groups["forest"].add(vv, vh, block_all(ndvi >= FOREST_NDVI))
        elif open_land:
            groups["grass/crops"].add(vv, vh, block_all(ndvi >= OPEN_NDVI))
    return groups


def simulated(region: str, tiles: int, seed: int, size: int) -> dict[str, Pixels]:
    """Simulated single-date class and scene pixels of ``tiles`` tiles of ``region``."""
    groups = {"forest": Pixels.empty(), "grass/crops": Pixels.empty(), "scene": Pixels.empty()}
    vv_band = bands.S1GRD_RAW_BANDS.index(f"{bands.S1GRD_SEASONS[0]}_vvasc")
    vh_band = bands.S1GRD_RAW_BANDS.index(f"{bands.S1GRD_SEASONS[0]}_vhasc")
    for chip in make_chips(REGIONS[region], tiles, seed):
        tile = simulate_tile(chip, size, seed, single_date_share=1.0)
        vv, vh = tile.s1grd_db[vv_band], tile.s1grd_db[vh_band]
        valid = np.isfinite(vv) & np.isfinite(vh)
        groups["scene"].add(vv, vh, valid)
        # Texture over windows of the real patches' 1.2 km (30 x 30 pixels at 40 m): larger
        # windows hold more large-scale contrast and would correlate more.
        for top in range(0, size - WINDOW_PX + 1, WINDOW_PX):
            for left in range(0, size - WINDOW_PX + 1, WINDOW_PX):
                win = np.s_[top : top + WINDOW_PX, left : left + WINDOW_PX]
                if valid[win].all():
                    groups["scene"].corr_vv.append(neighbour_correlation(vv[win]))
                    groups["scene"].corr_vh.append(neighbour_correlation(vh[win]))
        if tile.single_date_season in LEAF_ON_SEASONS:
            lc, tc = tile.land_cover, tile.tree_cover
            groups["forest"].add(vv, vh, valid & (lc == FOREST) & (tc >= SIM_FOREST_TREE_COVER))
            green = tile.herb_vegetation[tile.single_date_season] >= SIM_GREEN_HERB_V
            groups["grass/crops"].add(
                vv, vh, valid & (lc == HERBACEOUS) & (tc < SIM_OPEN_TREE_COVER) & green
            )
    return groups


def verdict(found: float, target: float, tolerance: float) -> str:
    """``ok`` within tolerance of the target, else ``MISS``."""
    return "ok" if abs(found - target) <= tolerance else "MISS"


def compare(real: dict[str, dict[str, float]], sim: dict[str, dict[str, float]]) -> list[tuple]:
    """Rows (statistic, real, simulated, tolerance, verdict) of every target."""
    rows = []
    for group in ("forest", "grass/crops"):
        for stat in ("vv_p50", "vh_p50", "vv_vh"):
            r, s = real[group][stat], sim[group][stat]
            rows.append((f"{group} {stat}", r, s, CLASS_TOLERANCE_DB, verdict(s, r, 1.0)))
    r = real["forest"]["vh_p50"] - real["grass/crops"]["vh_p50"]
    s = sim["forest"]["vh_p50"] - sim["grass/crops"]["vh_p50"]
    rows.append(("VH contrast forest - grass/crops", r, s, CONTRAST_TOLERANCE_DB, verdict(s, r, 1)))
    for stat in ("vv_p5", "vv_p50", "vv_p95", "vh_p5", "vh_p50", "vh_p95"):
        r, s = real["scene"][stat], sim["scene"][stat]
        rows.append((f"scene {stat}", r, s, SCENE_TOLERANCE_DB, verdict(s, r, SCENE_TOLERANCE_DB)))
    for stat in ("corr_vv", "corr_vh"):
        r, s = real["scene"][stat], sim["scene"][stat]
        rows.append((f"scene {stat} (40 m)", r, s, CORR_TOLERANCE, verdict(s, r, CORR_TOLERANCE)))
    return rows


def main() -> None:
    """Print the realism table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--region", default="europe", choices=sorted(REGIONS))
    args = parser.parse_args()
    real = {k: v.stats() for k, v in real_references().items()}
    sim = {
        k: v.stats() for k, v in simulated(args.region, args.tiles, args.seed, args.size).items()
    }
    print(
        f"real: 6 BigEarthNet-S1 patches at 40 m; simulated: {args.tiles} {args.region} "
        f"single-date tiles (SYNTHETIC), seed {args.seed}"
    )
    counts = {
        side: ", ".join(f"{k} {int(v['n'])}" for k, v in stats.items())
        for side, stats in (("real", real), ("simulated", sim))
    }
    print(f"pixels: real {counts['real']}; simulated {counts['simulated']}")
    print(f"{'statistic':<36}{'real':>8}{'sim':>8}{'tol':>6}  verdict")
    rows = compare(real, sim)
    for name, r, s, tol, ok in rows:
        print(f"{name:<36}{r:>8.2f}{s:>8.2f}{tol:>6.1f}  {ok}")
    print(f"met {sum(row[-1] == 'ok' for row in rows)} of {len(rows)} targets")


if __name__ == "__main__":
    main()
