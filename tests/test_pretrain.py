"""The prepared-tile cache and the pre-training loop: logs, checkpoints, exact resume."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from sarveg import bands
from sarveg.simulate.layout import simulate_dataset
from training import cache as cache_module
from training.backbone import load_backbone
from training.cache import prepare_cache
from training.config import load_config
from training.pretrain import main
from training.runlog import CollapseMonitor, CollapseWarning, read_log

REGIONS = ("europe", "china", "conus")
TRAIN_PER_REGION = 6  # the simulator's 60/20/20 banded split of 8 chips


def write_tiny_benchmark(root: Path, tiles_per_region: int = 8, size: int = 32) -> Path:
    """A tiny ``sarveg simulate`` run (synthetic) with a masked corner in every S1GRD tile."""
    simulate_dataset(root, list(REGIONS), tiles_per_region, size, seed=0, workers=1, progress=False)
    for path in root.glob("*/s1grd-*/*.tif"):
        # Chips clipped to their polygon have nodata pixels: NaN in float32 dB tiles.
        with rasterio.open(path, "r+") as dataset:
            data = dataset.read()
            data[:, :2, :3] = np.nan
            dataset.write(data)
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_benchmark(tmp_path_factory.mktemp("bench"))


def tiny_config(tmp_path: Path, modality: str = "s1grd", **extra: object) -> Path:
    """A YAML config for a ViT of depth 2, width 32, 32 px input: a step takes milliseconds."""
    config = load_config(
        f"cpu-{modality}",
        [
            "data.input_size=32",
            "data.prepare_workers=1",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.depth=2",
            "model.embed_dim=32",
            "model.num_heads=2",
            "head.out_dim=64",
            "head.hidden_dim=64",
            "head.bottleneck_dim=16",
            "augment.global_crop_size=32",
            "augment.local_crop_size=16",
            "augment.n_local_crops=2",
            "optim.batch_size=4",
            "optim.epochs=2",
            "optim.warmup_epochs=1",
            "loss.warmup_teacher_temp_epochs=1",
            "loss.warmup_teacher_temp=0.02",
            *[f"{k}={v}" for k, v in extra.items()],
        ],
    )
    path = tmp_path / f"tiny-{modality}.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def run_cli(config: Path | None, data: Path, out: Path, *flags: str) -> int:
    argv = ["--data", str(data), "--out", str(out), "--no-progress", *flags]
    if config is not None:
        argv = ["--config", str(config), *argv]
    return main(argv)


def test_cache_holds_resampled_float16_tiles_with_stats(tiny_data, tmp_path):
    cache = prepare_cache(
        tiny_data, "s1grd", 16, list(REGIONS), ["train"], tmp_path / "c", workers=1
    )
    assert (
        cache.tiles.shape == (3 * TRAIN_PER_REGION, 12, 16, 16) and cache.tiles.dtype == np.float16
    )
    assert set(cache.splits) == {"train"} and set(cache.regions) == set(REGIONS)
    assert cache.band_names == bands.S1GRD_CHANNELS
    assert np.isnan(cache.tiles[:, :, 0, 0]).all()  # the masked corner stays nodata
    assert np.isfinite(cache.tiles[:, :, 8:, 8:]).all()
    values = cache.tiles.astype(np.float64)
    np.testing.assert_allclose(cache.mean, np.nanmean(values, axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(cache.std, np.nanstd(values, axis=(0, 2, 3)), rtol=1e-5)
    assert np.isfinite(cache.vegetation_pct).all()
    assert cache.tiles.nbytes / len(cache) == 12 * 16 * 16 * 2
    assert list(cache.indices(regions=["china"])) == [
        i for i, r in enumerate(cache.regions) if r == "china"
    ]


def test_cache_is_reused_and_invalidated_by_changes(tiny_data, tmp_path, monkeypatch):
    first = prepare_cache(tiny_data, "gssic", 12, ["europe"], None, tmp_path / "c", workers=1)
    assert first.tiles.shape == (8, 8, 12, 12) and first.band_names == bands.GSSIC_CHANNELS
    assert np.nanmin(first.tiles) >= 0.0 and np.nanmax(first.tiles) <= 1.0

    def no_decoding(*args, **kwargs):
        raise AssertionError("a valid cache must not be decoded again")

    monkeypatch.setattr(cache_module, "decode_all", no_decoding)
    again = prepare_cache(tiny_data, "gssic", 12, ["europe"], None, tmp_path / "c", workers=1)
    assert again.path == first.path
    monkeypatch.undo()
    other_size = prepare_cache(tiny_data, "gssic", 8, ["europe"], None, tmp_path / "c", workers=1)
    assert other_size.path != first.path
    tile = next(tiny_data.glob("europe_partitions_*/gssic-*/*.nc"))
    stat = tile.stat()
    os.utime(tile, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = prepare_cache(tiny_data, "gssic", 12, ["europe"], None, tmp_path / "c", workers=1)
    assert touched.path != first.path and touched.key != first.key


def test_cache_with_worker_pool_matches_inline(tiny_data, tmp_path):
    inline = prepare_cache(tiny_data, "s1grd", 16, ["conus"], None, tmp_path / "a", workers=1)
    pooled = prepare_cache(
        tiny_data, "s1grd", 16, ["conus"], None, tmp_path / "b", workers=2, progress=False
    )
    np.testing.assert_array_equal(inline.tiles, pooled.tiles)


def test_cache_reports_missing_tiles(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="regions"):
        prepare_cache(tiny_data, "s1grd", 16, ["mars"], None, tmp_path / "c", workers=1)


def test_prepare_command(tiny_data, tmp_path, capsys):
    argv = ["--data", str(tiny_data), "--modality", "gssic", "--size", "12"]
    argv += ["--regions", "china", "--splits", "train", "--cache-dir", str(tmp_path / "c")]
    assert cache_module.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{TRAIN_PER_REGION} tiles" in out and "gssic-12px-" in out


def test_short_run_writes_log_checkpoint_config_and_plot(tiny_data, tmp_path):
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    assert run_cli(config, tiny_data, out) == 0
    rows = read_log(out / "log.jsonl")
    steps_per_epoch = 3 * TRAIN_PER_REGION // 4
    assert [r["step"] for r in rows] == list(range(1, 2 * steps_per_epoch + 1))
    expected = {"epoch", "step", "loss", "lr", "wd", "teacher_temp", "momentum"}
    expected |= {"teacher_entropy", "teacher_marginal_entropy", "images_per_s"}
    assert expected <= set(rows[0])
    assert all(math.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in rows)
    assert rows[0]["lr"] == 0.0 and rows[0]["teacher_temp"] == pytest.approx(0.02)
    assert rows[-1]["teacher_temp"] == pytest.approx(0.04)
    assert rows[-1]["momentum"] == pytest.approx(1.0)
    assert (out / "loss.png").stat().st_size > 1000
    resolved = load_config(out / "config.yaml")
    assert resolved.normalization.mean is not None and len(resolved.normalization.mean) == 12
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["global_step"] == 2 * steps_per_epoch and checkpoint["epoch"] == 2
    assert checkpoint["normalization"]["mean"] == resolved.normalization.mean
    assert checkpoint["modality"] == "s1grd" and checkpoint["input_size"] == 32
    assert checkpoint["backbone"]["kwargs"]["in_chans"] == 12
    assert set(checkpoint["rng"][0]) == {"torch", "numpy", "python"}
    teacher = load_backbone(out / "checkpoint.pt")
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, checkpoint["teacher"][f"backbone.{name}"])
    assert torch.isfinite(teacher(torch.full((1, 12, 32, 32), -12.0))).all()
    # A finished run is not overwritten by accident.
    assert run_cli(config, tiny_data, out) == 1


def test_stop_then_resume_equals_uninterrupted_run(tiny_data, tmp_path):
    config = tiny_config(tmp_path, "gssic")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(config, tiny_data, straight) == 0
    assert run_cli(config, tiny_data, split, "--stop-after", "2") == 0
    halfway = torch.load(split / "checkpoint.pt", weights_only=False)
    assert (halfway["global_step"], halfway["epoch"], halfway["step_in_epoch"]) == (2, 0, 2)
    assert run_cli(None, tiny_data, split, "--resume") == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 2 * (3 * TRAIN_PER_REGION // 4)
    for part in ("student", "teacher", "loss"):
        for name, value in a[part].items():
            torch.testing.assert_close(b[part][name], value, rtol=0, atol=1e-6, msg=name)
    for index, state in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][index]["exp_avg"], state["exp_avg"])
    losses_a = [r["loss"] for r in read_log(straight / "log.jsonl")]
    losses_b = [r["loss"] for r in read_log(split / "log.jsonl")]
    assert losses_b == pytest.approx(losses_a, abs=1e-6)


def test_resume_refuses_overrides(tiny_data, tmp_path):
    with pytest.raises(SystemExit):
        main(["--data", str(tiny_data), "--out", str(tmp_path), "--resume", "optim.epochs=3"])
    assert run_cli(None, tiny_data, tmp_path / "empty", "--resume") == 1


def test_collapse_monitor_warns_once_per_symptom():
    monitor = CollapseMonitor(out_dim=64, patience=3)
    uniform = math.log(64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert monitor.update(uniform, 2.0) == []
        assert monitor.update(uniform + 5e-4, 2.0) == []
        assert monitor.update(3.0, 2.0) == []  # streak broken
    with pytest.warns(CollapseWarning, match="ln\\(out_dim\\)"):
        for _ in range(3):
            monitor.update(uniform, 2.0)
    with pytest.warns(CollapseWarning, match="one prototype"):
        for _ in range(3):
            monitor.update(2.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert monitor.update(uniform, 0.0) == []  # already reported
