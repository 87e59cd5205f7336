"""Simulator realism against real Sentinel-1 patches, per class and per scene.

See the benchmark's docstring and ``docs/simulator.md`` for what is compared and why. The real
side comes from :mod:`testkit.real`; the simulated side is SYNTHETIC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarveg import bands
from sarveg.simulate import REGIONS, make_chips, simulate_tile
from sarveg.simulate.regions import FOREST, HERBACEOUS
from testkit.real import RealPatch, real_patches

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


def block_db(db: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """``(..., H, W)`` dB averaged in linear power over ``block`` x ``block`` pixels.

    Rows and columns that do not fill a whole block are dropped.
    """
    *lead, h, w = db.shape
    h, w = (h // block) * block, (w // block) * block
    power = 10.0 ** (db[..., :h, :w] / 10.0)
    blocks = power.reshape(*lead, h // block, block, w // block, block).mean(axis=(-3, -1))
    return 10.0 * np.log10(blocks)


def block_all(mask: np.ndarray) -> np.ndarray:
    """A 40 m pixel is in a class when all of its 10 m sub-pixels are."""
    h, w = mask.shape
    return mask.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).all(axis=(1, 3))


def real_references(patches: list[RealPatch] | None = None) -> dict[str, Pixels]:
    """Real class and scene pixels at 40 m from BigEarthNet patches (default: all 60).

    Patches whose labels are all water (sea, lakes) are left out: the simulated scenes are land.
    Class pixels: forest from summer patches whose first two labels are forest, grass/crops
    from patches labelled only arable land, pasture or agriculture; NDVI masks as in the bench.
    """
    groups = {"forest": Pixels.empty(), "grass/crops": Pixels.empty(), "scene": Pixels.empty()}
    for patch in real_patches() if patches is None else patches:
        if patch.water_only:
            continue
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
