"""Fine-tuning: label budgets, held-out splits, frozen backbones, checkpoints and evaluation."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import yaml

from sarveg.dataset import index_dataset
from tests.training_runs import finetune_tiny, pretrain_tiny, simulate_tiny
from training.backbone import load_backbone
from training.cache import prepare_cache
from training.config import ConfigError
from training.evaluate import predict_selection, score_predictions
from training.finetune import choose_tiles, fit, main
from training.finetune_config import FinetuneConfig, load_finetune_config
from training.label_budget import budget_per_region, sample_label_budget, split_holdout
from training.regressor import load_finetuned


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return simulate_tiny(tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    return pretrain_tiny(data, tmp_path_factory.mktemp("pretrain"))


@pytest.fixture(scope="module")
def finetuned(data, pretrained, tmp_path_factory):
    run = tmp_path_factory.mktemp("finetune")
    return run, finetune_tiny(data, run, pretrained)


def make_candidates(n_per_region: dict[str, int]) -> tuple[list[str], list[str]]:
    ids, regions = [], []
    for r, (region, n) in enumerate(n_per_region.items()):
        ids += [f"{r:02x}{i:011x}" for i in range(n)]
        regions += [region] * n
    return ids, regions


def chosen_ids(ids, regions, labels, seed):
    return {ids[i] for i in sample_label_budget(ids, regions, labels, seed)}


def test_label_fraction_sampling_is_reproducible_and_order_free():
    ids, regions = make_candidates({"conus": 300, "europe": 200})
    first = sample_label_budget(ids, regions, 0.1, seed=3)
    again = sample_label_budget(ids, regions, 0.1, seed=3)
    np.testing.assert_array_equal(first, again)
    assert len(first) == 50  # 10 % of each region: 30 + 20
    assert sum(regions[i] == "conus" for i in first) == 30
    shuffled = list(zip(ids, regions, strict=True))
    random.Random(1).shuffle(shuffled)
    ids2, regions2 = map(list, zip(*shuffled, strict=True))
    assert chosen_ids(ids2, regions2, 0.1, 3) == chosen_ids(ids, regions, 0.1, 3)
    assert chosen_ids(ids, regions, 0.1, 4) != chosen_ids(ids, regions, 0.1, 3)


def test_label_budgets_are_nested_and_counts_exact():
    ids, regions = make_candidates({"conus": 300, "europe": 200, "china": 101})
    small = chosen_ids(ids, regions, 0.01, 0)
    medium = chosen_ids(ids, regions, 0.1, 0)
    assert small < medium < chosen_ids(ids, regions, 1.0, 0) == set(ids)
    assert len(chosen_ids(ids, regions, 137, 0)) == 137
    assert budget_per_region({"a": 300, "b": 100}, 100) == {"a": 75, "b": 25}
    assert sum(budget_per_region({"a": 1, "b": 1, "c": 1}, 2).values()) == 2
    with pytest.raises(ValueError, match="at most 601 tiles, found 1000"):
        sample_label_budget(ids, regions, 1000, 0)


def test_label_budget_config_rejects_fractional_counts_and_unknown_keys():
    assert FinetuneConfig(labels=1000).labels == 1000
    with pytest.raises(ConfigError, match="whole count of tiles, found 2.5"):
        load_finetune_config(None, ["labels=2.5"])
    with pytest.raises(ConfigError, match="optim.epochs"):
        load_finetune_config(None, ["optim.epochs=3"])


def test_holdout_split_is_disjoint_and_complete():
    ids, regions = make_candidates({"conus": 101, "europe": 40})
    first, rest = split_holdout(ids, regions, 0.5, seed=0)
    assert not set(first) & set(rest)
    assert sorted([*first, *rest]) == list(range(len(ids)))
    assert abs(len(first) - 70) <= 1


def test_finetune_writes_a_run_with_finite_rmse(finetuned, data):
    run, summary = finetuned
    for name in ("checkpoint.pt", "config.yaml", "log.jsonl", "summary.json"):
        assert (run / name).is_file()
    assert math.isfinite(summary["best_val_rmse"]) and summary["best_val_rmse"] > 0
    assert math.isfinite(summary["test"]["conus"]["rmse"])
    assert json.loads((run / "summary.json").read_text()) == summary
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(summary["epochs_run"]))
    assert all(math.isfinite(r["val_rmse"]) for r in rows)
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["modality"] == "s1grd" and resolved["data"]["input_size"] == 32
    assert resolved["normalization"]["mean"] is not None
    # A resolved config loads back as a valid config.
    assert FinetuneConfig.model_validate(resolved).labels == 0.5


def test_checkpoint_keeps_tile_roles_apart(finetuned, data):
    run, summary = finetuned
    checkpoint = load_finetuned(run).checkpoint
    tiles = {k: {tuple(p) for p in v} for k, v in checkpoint["tiles"].items()}
    assert len(tiles["labelled"]) == summary["n_labelled"] > 0
    assert tiles["calibration"] and tiles["early_stopping"]
    assert not tiles["calibration"] & tiles["early_stopping"]
    assert not tiles["labelled"] & (tiles["calibration"] | tiles["early_stopping"])
    assert {region for region, _ in tiles["labelled"]} == {"conus"}
    # Calibration spans the train and val bands: half unlabelled train tiles, half val tiles.
    split_of = {(r.region, r.identifier): r.split for r in index_dataset(data, regions=["conus"])}
    splits = [split_of[tile] for tile in tiles["calibration"]]
    assert set(splits) == {"train", "val"}
    assert abs(splits.count("train") - splits.count("val")) <= 1


def test_loaded_checkpoint_reproduces_the_run_metrics(finetuned, data):
    run, summary = finetuned
    model = load_finetuned(run)
    predictions = predict_selection(model, data, ["conus"], ["test"], progress=False)
    scores = score_predictions(predictions.vegetation_pct, predictions.predicted_pct)
    assert scores.rmse == pytest.approx(summary["test"]["conus"]["rmse"], rel=1e-5)
    assert predictions.embedding.shape == (scores.n_tiles, 32)
    assert np.all((predictions.predicted_pct >= 0) & (predictions.predicted_pct <= 100))


def test_frozen_backbone_leaves_backbone_weights_unchanged(data, pretrained, tmp_path):
    finetune_tiny(data, tmp_path, pretrained, "freeze_backbone=true", "decoder_input=attention")
    before = load_backbone(pretrained / "checkpoint.pt").state_dict()
    model = load_finetuned(tmp_path).model
    after = model.backbone.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    # The decoder reads heads x patches attention features.
    assert model.decoder.in_features == 2 * (32 // 8) ** 2


def test_trained_backbone_moves_from_pretrained_weights(finetuned, pretrained):
    run, _ = finetuned
    before = load_backbone(pretrained / "checkpoint.pt").state_dict()
    after = load_finetuned(run).model.backbone.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items() if v.is_floating_point())


def test_from_scratch_without_pretraining_run(data, tmp_path):
    summary = finetune_tiny(data, tmp_path, None, "labels=6")
    assert summary["n_labelled"] == 6 and summary["from_scratch"] is True
    checkpoint = load_finetuned(tmp_path).checkpoint
    assert checkpoint["pretrained"] is None and math.isfinite(summary["best_val_rmse"])


def test_cli_reports_bad_budget(data, tmp_path, capsys):
    code = main(
        [
            "--data",
            str(data),
            "--out",
            str(tmp_path),
            "--labels",
            "5000",
            "--modality",
            "s1grd",
            "--no-progress",
            "data.prepare_workers=1",
            "data.input_size=32",
        ]
    )
    assert code == 1
    assert "label budget of at most" in capsys.readouterr().err


class SnapshotLog:
    """A run log that also keeps the model's weights at each epoch's end (when fit logs it)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.rows, self.states = model, [], []

    def write(self, row: dict) -> None:
        self.rows.append(row)
        self.states.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})


def test_weight_averaging_leaves_the_mean_of_the_last_epochs_loaded(finetuned, data):
    run, _ = finetuned
    loaded = load_finetuned(run)
    config = loaded.checkpoint["config"]
    config = FinetuneConfig.model_validate(config | {"optim": config["optim"] | {"max_epochs": 3}})
    cache = prepare_cache(data, "s1grd", 32, ["conus"], None, None, 1, progress=False)
    tiles = choose_tiles(cache, config)
    log = SnapshotLog(loaded.model)
    torch.manual_seed(0)
    outcome = fit(loaded.model, cache, tiles, config, log, False, average_last=2)
    # Every epoch runs (no early stop) and no single epoch is "best".
    assert outcome["best_epoch"] is None and outcome["epochs_run"] == 3
    assert [row["epoch"] for row in log.rows] == [0, 1, 2]
    assert math.isfinite(outcome["best_val_rmse"])
    final = loaded.model.state_dict()
    moved = 0
    for key, value in final.items():
        if value.is_floating_point():
            expected = (log.states[1][key] + log.states[2][key]) / 2
            torch.testing.assert_close(value, expected, msg=key)
            moved += not torch.equal(log.states[1][key], log.states[2][key])
    assert moved > 0  # the two epochs differ, so the average is neither of them
    assert not loaded.model.training
    with pytest.raises(ValueError, match=r"expected average_last <= max_epochs \(3\), found 4"):
        fit(loaded.model, cache, tiles, config, log, False, average_last=4)
