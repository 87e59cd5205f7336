"""The calibrated simulator against the real BigEarthNet-S1 patches (simulated side synthetic).

Guards the calibration of ``docs/simulator.md``: per-class medians and the forest - grass/crops
VH contrast of simulated europe single dates stay within 1 dB of the real patches, and texture
within 0.1. Scene tails depend on which landscapes a small sample draws, so they are left to
``bench/simulator_realism.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from testkit.realism import compare, real_references, simulated


@pytest.fixture(scope="module")
def rows() -> dict[str, tuple]:
    real = {k: v.stats() for k, v in real_references().items()}
    sim = {k: v.stats() for k, v in simulated("europe", 24, seed=0, size=112).items()}
    return {row[0]: row for row in compare(real, sim)}


def test_class_medians_and_contrast_match_real_patches(rows: dict[str, tuple]) -> None:
    names = [n for n in rows if n.startswith(("forest", "grass/crops", "VH contrast"))]
    assert len(names) == 7
    for name in names:
        _, real, sim, tolerance, _ = rows[name]
        assert abs(sim - real) <= tolerance, f"{name}: real {real:.2f}, simulated {sim:.2f}"


def test_texture_and_scene_medians_match_real_patches(rows: dict[str, tuple]) -> None:
    for name in ("scene corr_vv (40 m)", "scene corr_vh (40 m)", "scene vv_p50", "scene vh_p50"):
        _, real, sim, tolerance, _ = rows[name]
        assert abs(sim - real) <= tolerance, f"{name}: real {real:.2f}, simulated {sim:.2f}"


def test_real_forest_is_brighter_than_open_land_by_a_few_db(rows: dict[str, tuple]) -> None:
    # The real references themselves: C-band VH over forest above green grass and crops, but
    # by a couple of dB, not the ~6 dB the uncalibrated simulator had.
    _, real, _, _, _ = rows["VH contrast forest - grass/crops"]
    assert 0.5 < real < 4.0 and np.isfinite(real)
