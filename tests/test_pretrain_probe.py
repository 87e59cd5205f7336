"""The probe's diagnostics in bench/pretrain_probe.py: effective dimension and the ridge probe."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

PROBE_PATH = Path(__file__).resolve().parents[1] / "bench" / "pretrain_probe.py"


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pretrain_probe", PROBE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_effective_dimension_counts_directions_that_carry_variance(probe: ModuleType) -> None:
    rng = np.random.default_rng(0)
    isotropic = rng.normal(size=(4000, 16))
    assert probe.effective_dimension(isotropic) == pytest.approx(16.0, rel=0.05)
    # Standardisation makes every feature unit variance, so redundancy (not scale) is what
    # lowers the count: 16 copies of 2 independent signals span 2 directions.
    two_signals = rng.normal(size=(4000, 2))
    redundant = np.repeat(two_signals, 8, axis=1) + 1e-3 * rng.normal(size=(4000, 16))
    assert probe.effective_dimension(redundant) == pytest.approx(2.0, rel=0.05)


def test_ridge_probe_finds_a_label_in_one_feature_of_many_that_knn_misses(
    probe: ModuleType,
) -> None:
    # The label lives in one of 32 features; the other 31 are unrelated noise of equal variance.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 32))
    y = 50.0 + 10.0 * x[:, 0]
    train, test = slice(0, 2000), slice(2000, None)
    ridge = probe.rmse(probe.ridge_predictions(x[train], y[train], x[test]), y[test])
    knn = probe.rmse(probe.knn_rmse(x[train], y[train], x[test], y[test], k=20), y[test])
    assert ridge < 0.1
    assert knn > 5.0
