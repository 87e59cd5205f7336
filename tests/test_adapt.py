"""sarveg select + sarveg adapt on tiny real runs: the few-label loop closes (synthetic data)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sarveg.bundle import WEIGHTS_FILE, WEIGHTS_META_FILE, finalise_bundle, load_bundle
from sarveg.dataset import index_dataset
from sarveg.ood import OODScorer
from sarveg.simulate.layout import simulate_dataset
from serving.batch.cli import main as predict_main
from serving.batch.select import main as select_main
from tests.training_runs import finetune_tiny, pretrain_tiny, reference_tiles, simulate_tiny
from training.adapt import AdaptConfig, adapt, minimum_labels
from training.adapt import main as adapt_main
from training.adapt.config import load_adapt_config
from training.adapt.finetune import rehearsal_draws
from training.adapt.routing import fit_gate, is_routed
from training.bundle_weights import load_bundle_weights
from training.cache import prepare_cache
from training.config import ConfigError
from training.evaluate import load_rows
from training.export import ExportSettings, build_bundle
from training.onnx_export import make_session, run_session

BUDGET = 25
NEW_REGION = "south_america"
# Routing off unless a test turns it on: the default (auto) decides on the tiny model's errors.
# One fine-tune unless a test asks for the refit (the default), which doubles the time.
FAST = AdaptConfig(
    average_last_epochs=2,
    route_old_regions=False,
    refit_all_labels=False,
    optim={"max_epochs": 2, "patience": 2, "batch_size": 8},
)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny bundle -> predict a new region -> select -> labels -> adapt."""
    root = tmp_path_factory.mktemp("adapt")
    data = simulate_tiny(root / "sim")
    pretrained = pretrain_tiny(data, root / "pretrain")
    finetune_tiny(data, root / "finetune", pretrained)
    bundle = root / "models" / "tiny"
    build_bundle(
        root / "finetune",
        data,
        bundle,
        ExportSettings(timing_seconds=0.02, timing_repeats=1, progress=False),
    )
    new = root / "new"
    simulate_dataset(new, [NEW_REGION], 120, 32, seed=1, workers=1, progress=False)
    run = root / "predict"
    assert predict_main([str(new), "--model", str(bundle), "--out", str(run), "--no-progress"]) == 0
    selected = root / "labels_to_collect.csv"
    argv = [str(run), "--budget", str(BUDGET), "--out", str(selected), "--no-progress"]
    assert select_main(argv) == 0
    truth = {r.identifier: r.vegetation_pct for r in index_dataset(new, "s1grd")}
    labels = root / "labels.csv"
    with selected.open() as source, labels.open("w", newline="") as target:
        rows = list(csv.DictReader(source))
        writer = csv.DictWriter(target, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:  # the labelling team fills in the column
            writer.writerow(row | {"vegetation_pct": f"{truth[row['identifier']]:.2f}"})
    adapted = root / "models" / "tiny-south_america"
    adapt(bundle, new, labels, adapted, FAST, old_data=data, progress=False)
    return {
        "root": root,
        "data": data,
        "bundle": bundle,
        "new": new,
        "run": run,
        "selected": selected,
        "labels": labels,
        "adapted": adapted,
    }


def adapt_loop(loop: dict, out: Path, config: AdaptConfig, **options: Any) -> Any:
    """Adapt the loop's bundle to its new region with its labels (conus rehearsed), quietly."""
    return adapt(
        loop["bundle"],
        loop["new"],
        loop["labels"],
        out,
        config,
        old_data=loop["data"],
        progress=False,
        **options,
    )


def test_select_writes_distinct_tiles_of_the_run_as_csv_geojson_and_png(loop) -> None:
    rows = list(csv.DictReader(loop["selected"].open()))
    identifiers = [r["identifier"] for r in rows]
    assert len(rows) == BUDGET and len(set(identifiers)) == BUDGET
    known = {r.identifier for r in index_dataset(loop["new"], "s1grd")}
    assert set(identifiers) <= known
    assert all(r["vegetation_pct"] == "" for r in rows)  # left for the labels
    assert all(int(r["represents"]) >= 1 for r in rows)  # each stands for itself at least
    assert all(-180 <= float(r["lon"]) <= 180 and -90 <= float(r["lat"]) <= 90 for r in rows)
    collection = json.loads(loop["selected"].with_suffix(".geojson").read_text())
    assert collection["synthetic"] is True
    assert [f["properties"]["identifier"] for f in collection["features"]] == identifiers
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    assert collection["features"][0]["geometry"]["type"] == "Polygon" and len(ring) == 5
    assert loop["selected"].with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_old_references_come_from_every_split_and_skip_the_parents_tiles(loop) -> None:
    adapted = load_bundle(loop["adapted"])
    recorded = load_bundle_weights(loop["bundle"]).checkpoint["tiles"]
    used = {i for key in ("labelled", "early_stopping", "calibration") for _, i in recorded[key]}
    conus = reference_tiles(adapted, loop["data"], "conus")
    assert conus and not used & {identifier for identifier, _ in conus}
    for region in ("conus", "europe"):
        assert len({split for _, split in reference_tiles(adapted, loop["data"], region)}) >= 2


def test_adapted_bundle_covers_both_regions_and_carries_its_weights(loop) -> None:
    bundle = load_bundle(loop["adapted"])
    ood = bundle.manifest.ood
    assert ood.in_distribution_regions == ["conus", NEW_REGION]
    assert NEW_REGION in ood.reference_regions and "conus" in ood.reference_regions
    assert (
        ood.calibration_counts is not None and sum(ood.calibration_counts) == ood.calibration_size
    )
    # The new region's reference is unlabelled tiles; its calibration block holds the labelled
    # calibration tiles first, then unlabelled ones.
    assert np.isnan(bundle.reference.regions[NEW_REGION].vegetation_pct).all()
    n_old, n_new = ood.calibration_counts
    new_labels = bundle.reference.calibration.vegetation_pct[n_old:]
    assert np.isfinite(new_labels).sum() == round(0.35 * BUDGET)
    assert np.isfinite(bundle.reference.calibration.vegetation_pct[:n_old]).all()
    record = bundle.manifest.provenance.config["adapt"]
    assert record["labels"]["n"] == BUDGET and record["old_data"] == "given"
    regions = {row["region"] for row in record["evaluation"]}
    assert regions == {"conus", NEW_REGION}
    for row in record["evaluation"]:
        assert 0.0 <= row["unreliable_before"] <= 1.0 and 0.0 <= row["unreliable_after"] <= 1.0
    assert bundle.manifest.ood.measured is not None
    assert sorted(bundle.manifest.metrics) == sorted(ood.reference_regions)
    card = (loop["adapted"] / "MODEL_CARD.md").read_text()
    assert "## Adaptation (sarveg adapt)" in card and "RMSE before" in card
    # The tiles of each in-distribution region score against their own reference: a calibration
    # tile of either block gets a p-value from the scorer, and the weights rebuild the model.
    scorer = OODScorer.from_bundle(bundle)
    calibration = bundle.reference.calibration
    scored = scorer.score_batch(calibration.embedding, calibration.predicted_pct)
    assert scored.p_value.min() > 0.0 and np.isfinite(scored.interval_low).all()
    assert load_bundle_weights(loop["adapted"]).modality == "s1grd"


def test_rerun_reuses_the_finished_fine_tune(loop, tmp_path) -> None:
    out = tmp_path / "again"
    work = loop["adapted"].with_name(loop["adapted"].name + ".work")
    manifest = adapt_loop(loop, out, FAST, work_dir=work)
    assert manifest.provenance.config["adapt"]["finetune"]["reused"] is True
    first = load_bundle(loop["adapted"]).manifest.files[WEIGHTS_FILE]
    assert manifest.files[WEIGHTS_FILE] == first


def test_an_adapted_bundle_adapts_again(loop, tmp_path) -> None:
    # A second round over the same region, from the adapted bundle's own weights: its old region
    # (conus) is looked up in --old-data; the first round's region is the new one again.
    out = tmp_path / "round-two"
    manifest = adapt(
        loop["adapted"],
        loop["new"],
        loop["labels"],
        out,
        FAST,
        old_data=loop["data"],
        progress=False,
    )
    assert manifest.ood.in_distribution_regions == ["conus", NEW_REGION]
    assert manifest.provenance.config["adapt"]["parent"]["name"] == loop["adapted"].name
    rebuilt = load_bundle_weights(out)
    assert rebuilt.checkpoint["config"]["data"]["regions"] == ["conus", NEW_REGION]
    scorer = OODScorer.from_bundle(load_bundle(out))
    assert list(scorer.regions) == load_bundle(loop["adapted"]).manifest.ood.reference_regions


def test_labels_of_tiles_not_in_the_data_are_refused(loop, tmp_path) -> None:
    labels = tmp_path / "labels.csv"
    rows = list(csv.DictReader(loop["labels"].open()))
    with labels.open("w") as handle:
        handle.write("identifier,vegetation_pct\n")
        handle.writelines(f"{r['identifier']},{r['vegetation_pct']}\n" for r in rows)
        handle.write("not-a-chip,40\n")
    with pytest.raises(
        ValueError, match="found 1 of 26 identifiers that are not there.*not-a-chip"
    ):
        adapt(loop["bundle"], loop["new"], labels, tmp_path / "out", FAST, progress=False)


def test_too_few_labels_are_refused(loop, tmp_path, capsys) -> None:
    labels = tmp_path / "labels.csv"
    rows = list(csv.DictReader(loop["labels"].open()))[: minimum_labels(FAST) - 1]
    with labels.open("w") as handle:
        handle.write("identifier,vegetation_pct\n")
        handle.writelines(f"{r['identifier']},{r['vegetation_pct']}\n" for r in rows)
    argv = ["--model", str(loop["bundle"]), "--data", str(loop["new"]), "--labels", str(labels)]
    assert adapt_main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "too few labels to calibrate: expected at least 25 labelled tiles" in error
    assert "found 24" in error and not (tmp_path / "out").exists()


def test_a_bundle_without_weights_is_refused(loop, tmp_path) -> None:
    old = tmp_path / "old-bundle"
    shutil.copytree(loop["bundle"], old)
    (old / WEIGHTS_FILE).unlink()
    (old / WEIGHTS_META_FILE).unlink()
    finalise_bundle(old, load_bundle(loop["bundle"]).manifest)  # a valid bundle, no weights
    with pytest.raises(ValueError, match="expected trainable weights"):
        adapt(old, loop["new"], loop["labels"], tmp_path / "out", FAST, progress=False)


def backbone_drift(parent: Path, adapted: Path) -> float:
    """Squared distance between two bundles' backbone weights."""
    before = load_bundle_weights(parent).model.backbone.state_dict()
    after = load_bundle_weights(adapted).model.backbone.state_dict()
    return float(sum(((after[k].float() - before[k].float()) ** 2).sum() for k in before))


def test_frozen_and_anchored_backbones_stay_near_the_parent(loop, tmp_path) -> None:
    free = backbone_drift(loop["bundle"], loop["adapted"])
    assert free > 0.0
    variants = (("frozen", {"freeze_backbone": True}), ("anchored", {"anchor_weight": 1e3}))
    for name, update in variants:
        out = tmp_path / name
        config = FAST.model_copy(update=update)
        adapt(loop["bundle"], loop["new"], loop["labels"], out, config, progress=False)
        drift = backbone_drift(loop["bundle"], out)
        if name == "frozen":
            assert drift == 0.0
        else:
            assert 0.0 < drift < 0.5 * free
        assert load_bundle(out).manifest.provenance.config["adapt"]["config"][next(iter(update))]


def old_feature_drift(loop: dict, adapted: Path) -> float:
    """Relative squared distance of the decoder input on the old region's labelled tiles."""
    parent = load_bundle_weights(loop["bundle"]).model.eval()
    child = load_bundle_weights(adapted).model.eval()
    cache = prepare_cache(
        loop["data"], "s1grd", parent.input_size, ["conus"], workers=1, progress=False
    )
    rows = np.flatnonzero(np.isfinite(cache.vegetation_pct))
    with torch.no_grad():
        x = load_rows(cache.tiles, rows)  # (N, C, S, S)
        before, after = parent.features(x), child.features(x)  # (N, F)
    return float(((after - before) ** 2).sum() / (before**2).sum())


def test_distillation_holds_the_old_regions_features_near_the_parents(loop, tmp_path) -> None:
    free = old_feature_drift(loop, loop["adapted"])
    out = tmp_path / "distilled"
    manifest = adapt_loop(loop, out, FAST.model_copy(update={"distill_weight": 100.0}))
    assert manifest.provenance.config["adapt"]["config"]["distill_weight"] == 100.0
    assert 0.0 < old_feature_drift(loop, out) < 0.5 * free
    # Without an old region nothing is distilled: the option is accepted and does nothing.
    alone = tmp_path / "alone"
    config = FAST.model_copy(update={"distill_weight": 100.0})
    adapt(loop["bundle"], loop["new"], loop["labels"], alone, config, progress=False)
    plain = tmp_path / "plain"
    adapt(loop["bundle"], loop["new"], loop["labels"], plain, FAST, progress=False)
    assert old_feature_drift(loop, alone) == pytest.approx(old_feature_drift(loop, plain))


def test_averaging_fits_the_stopping_share_early_stopping_keeps_it(loop, tmp_path) -> None:
    # The loop's bundle averages its last epochs (the default): every epoch ran, no tile stopped.
    averaged = load_bundle(loop["adapted"]).manifest.provenance.config["adapt"]["finetune"]
    assert averaged["best_epoch"] is None and averaged["epochs_run"] == FAST.optim.max_epochs
    tiles = load_bundle_weights(loop["adapted"]).checkpoint["tiles"]
    assert tiles["early_stopping"] == []
    out = tmp_path / "early-stopped"
    config = FAST.model_copy(update={"average_last_epochs": 0})
    manifest = adapt_loop(loop, out, config)
    stopped = manifest.provenance.config["adapt"]["finetune"]
    assert stopped["best_epoch"] in range(FAST.optim.max_epochs)
    early = load_bundle_weights(out).checkpoint["tiles"]
    # 15 % of the new labels (4 of 25) stop the run, with as many recorded conus tiles.
    new_stopping = [t for t in early["early_stopping"] if t[0] == NEW_REGION]
    assert len(new_stopping) == round(0.15 * BUDGET)
    assert len(early["early_stopping"]) == 2 * len(new_stopping)
    fitted = {tuple(t) for t in tiles["labelled"] if t[0] == NEW_REGION}
    kept = {tuple(t) for t in early["labelled"] if t[0] == NEW_REGION}
    assert fitted == kept | {tuple(t) for t in new_stopping}
    assert tiles["calibration"] == early["calibration"]
    # Refused when the config is read, before any work.
    with pytest.raises(ConfigError, match=r"average_last_epochs <= optim.max_epochs \(2\)"):
        load_adapt_config(None, ["optim.max_epochs=2", "average_last_epochs=3"])


def test_refit_fits_every_label_and_calibrates_on_the_first_fits_held_out_errors(
    loop, tmp_path
) -> None:
    # The first fine-tune is the loop's own (its state is copied, so it is reused): only the
    # refit on all 25 labels runs here.
    work = tmp_path / "refit.work"
    shutil.copytree(loop["adapted"].with_name(loop["adapted"].name + ".work"), work)
    out = tmp_path / "refit"
    config = FAST.model_copy(update={"refit_all_labels": True})
    manifest = adapt_loop(loop, out, config, work_dir=work)
    record = manifest.provenance.config["adapt"]
    assert record["finetune"]["calibration_finetune"]["reused"] is True
    assert record["finetune"]["reused"] is False
    assert record["tiles"]["new_train"] == BUDGET and record["tiles"]["refit_all_labels"] is True
    first = load_bundle_weights(loop["adapted"]).checkpoint["tiles"]
    refit = load_bundle_weights(out).checkpoint["tiles"]

    def new_tiles(tiles: list) -> set[tuple[str, str]]:
        return {tuple(t) for t in tiles if t[0] == NEW_REGION}

    held_out = new_tiles(first["calibration"])
    assert len(held_out) == round(0.35 * BUDGET)
    # Every label is fitted, and the weights no longer call the fitted tiles calibration ones.
    assert new_tiles(refit["labelled"]) == new_tiles(first["labelled"]) | held_out
    assert not new_tiles(refit["calibration"])
    # The interval's labelled tiles: the refitted graph's embeddings, the first fit's estimates
    # (the loop's bundle is that fit exported; torch against ONNX Runtime, to float error).
    n_old = manifest.ood.calibration_counts[0]
    rows = slice(n_old, n_old + len(held_out))
    mine = load_bundle(out).reference.calibration
    loops = load_bundle(loop["adapted"]).reference.calibration
    np.testing.assert_array_equal(mine.vegetation_pct[rows], loops.vegetation_pct[rows])
    np.testing.assert_allclose(mine.predicted_pct[rows], loops.predicted_pct[rows], atol=0.05)
    assert not np.allclose(mine.embedding[rows], loops.embedding[rows], atol=1e-3)
    card = (out / "MODEL_CARD.md").read_text()
    assert "the shipped model was refitted on every label" in card
    assert "refitted on: after is in-sample" in card


def test_rehearsal_draws_fresh_old_tiles_every_epoch(loop, tmp_path) -> None:
    draws = rehearsal_draws(np.arange(3), np.arange(10, 30), 5, seed=0)
    first, second = draws(0), draws(1)
    for rows in (first, second):
        assert rows[:3].tolist() == [0, 1, 2] and len(rows) == 8
        assert len(set(rows[3:])) == 5 and set(rows[3:]) <= set(range(10, 30))
    assert first.tolist() != second.tolist() and draws(0).tolist() == first.tolist()
    # Through sarveg adapt: resampled, every tile the parent fitted may be rehearsed (and is
    # recorded as fitted); one draw records only the rehearsal_tiles it fitted.
    parent = load_bundle_weights(loop["bundle"]).checkpoint["tiles"]["labelled"]
    parent_old = {tuple(t) for t in parent if t[0] != NEW_REGION}
    assert len(parent_old) > 4
    recorded = {}
    for resample in (True, False):
        config = FAST.model_copy(update={"rehearsal_tiles": 4, "rehearsal_resample": resample})
        out = tmp_path / f"resample-{resample}"
        adapt_loop(loop, out, config)
        tiles = load_bundle_weights(out).checkpoint["tiles"]["labelled"]
        recorded[resample] = {tuple(t) for t in tiles if t[0] != NEW_REGION}
    assert recorded[True] == parent_old
    assert len(recorded[False]) == 4 and recorded[False] <= parent_old


def graph_outputs(bundle_dir: Path, region_data: Path, region: str) -> tuple[np.ndarray, ...]:
    """``(vegetation_pct, embedding)`` of a bundle's ONNX graph on every tile of one region."""
    bundle = load_bundle(bundle_dir)
    cache = prepare_cache(
        region_data, "s1grd", bundle.manifest.input_size, [region], workers=1, progress=False
    )
    session = make_session(bundle.model_path)
    return run_session(session, np.asarray(cache.tiles[np.arange(len(cache.tiles))]))


def test_routing_gives_old_region_tiles_the_parents_estimate(loop, tmp_path) -> None:
    # Both bundles from the loop's finished fine-tune (routing changes the graph, not the fit),
    # in fp32 so that the graphs differ by the routing alone.
    work = loop["adapted"].with_name(loop["adapted"].name + ".work")
    fp32 = FAST.model_copy(update={"variant": "fp32"})
    plain, routed = tmp_path / "plain", tmp_path / "routed"
    adapt_loop(loop, plain, fp32, work_dir=work)
    manifest = adapt_loop(
        loop, routed, fp32.model_copy(update={"route_old_regions": True}), work_dir=work
    )
    record = manifest.provenance.config["adapt"]
    assert record["finetune"]["reused"] is True
    assert record["config"]["route_old_regions"] is True
    gate = record["routing"]["mean_gate_on_fitted_tiles"]
    assert gate["old"] > 0.5 > gate["new"]
    assert "Routed: the graph holds the parent's model" in (routed / "MODEL_CARD.md").read_text()
    assert "Routed" not in (plain / "MODEL_CARD.md").read_text()
    parent_pct, _ = graph_outputs(loop["bundle"], loop["data"], "conus")
    plain_pct, plain_embedding = graph_outputs(plain, loop["data"], "conus")
    routed_pct, routed_embedding = graph_outputs(routed, loop["data"], "conus")
    # The embedding (and so the OOD score) is the fine-tuned model's; the estimate the parent's.
    np.testing.assert_allclose(routed_embedding, plain_embedding, atol=1e-4)
    assert np.abs(routed_pct - parent_pct).mean() < 0.5 * np.abs(plain_pct - parent_pct).mean()
    new_plain, _ = graph_outputs(plain, loop["new"], NEW_REGION)
    new_routed, _ = graph_outputs(routed, loop["new"], NEW_REGION)
    new_parent, _ = graph_outputs(loop["bundle"], loop["new"], NEW_REGION)
    assert np.abs(new_routed - new_plain).mean() < np.abs(new_routed - new_parent).mean()
    # The weights are the fine-tuned model's alone: routing again from this bundle is refused.
    with pytest.raises(ValueError, match="expected a bundle without routing"):
        adapt(
            routed,
            loop["new"],
            loop["labels"],
            tmp_path / "twice",
            FAST.model_copy(update={"route_old_regions": True}),
            old_data=loop["data"],
            progress=False,
        )


@pytest.mark.parametrize("threshold", [-0.99, 1e6])
def test_auto_routes_only_where_the_fine_tune_errs_more_on_the_old_region(
    loop, tmp_path, threshold
) -> None:
    # -0.99: any fine-tune counts as worse (routes); 1e6: none does (stays one model).
    work = loop["adapted"].with_name(loop["adapted"].name + ".work")
    update = {"variant": "fp32", "route_old_regions": "auto", "route_if_worse_by": threshold}
    auto = FAST.model_copy(update=update)
    out = tmp_path / "auto"
    record = adapt_loop(loop, out, auto, work_dir=work).provenance.config["adapt"]
    assert AdaptConfig().route_old_regions == "auto"
    assert record["finetune"]["reused"] is True
    decision = record["routing"]["decision"]
    assert decision["tiles"] > 0 and decision["threshold"] == threshold
    assert decision["worse_by"] == pytest.approx(
        decision["rmse_adapted"] / decision["rmse_parent"] - 1.0
    )
    routes = threshold < 0
    assert decision["route"] is routes and record["routing"]["routed"] is routes
    assert is_routed(record) is routes
    card = (out / "MODEL_CARD.md").read_text()
    assert ("Routed (route_old_regions=auto: on" in card) is routes
    assert ("Not routed (route_old_regions=auto: on" in card) is not routes
    # A routed graph gives conus tiles the parent's estimates, an unrouted one the fine-tune's.
    parent_pct, _ = graph_outputs(loop["bundle"], loop["data"], "conus")
    adapted_pct, _ = graph_outputs(loop["adapted"], loop["data"], "conus")
    auto_pct, _ = graph_outputs(out, loop["data"], "conus")
    nearer = parent_pct if routes else adapted_pct
    farther = adapted_pct if routes else parent_pct
    assert np.abs(auto_pct - nearer).mean() < 0.5 * np.abs(auto_pct - farther).mean()


def test_auto_without_the_old_data_or_from_a_routed_bundle_does_not_route(loop, tmp_path) -> None:
    auto = FAST.model_copy(update={"route_old_regions": "auto"})
    out = tmp_path / "no-old"
    manifest = adapt(loop["bundle"], loop["new"], loop["labels"], out, auto, progress=False)
    assert manifest.provenance.config["adapt"]["routing"] is None
    # Records written before auto (no "routed" key) route; {"routed": false} and none do not.
    assert is_routed({"routing": {"gate_tiles": {"old": 3, "new": 3}}})
    assert not is_routed({"routing": {"routed": False}})
    assert not is_routed({"routing": None}) and not is_routed(None)


def test_routing_without_the_old_data_is_refused(loop, tmp_path) -> None:
    config = FAST.model_copy(update={"route_old_regions": True})
    with pytest.raises(ValueError, match="expected --old-data with route_old_regions=true"):
        adapt(loop["bundle"], loop["new"], loop["labels"], tmp_path / "x", config, progress=False)


def test_the_gate_separates_the_regions_and_refuses_empty_sides() -> None:
    rng = np.random.default_rng(0)
    old = rng.normal(1.0, 1.0, (200, 8)).astype(np.float32)
    new = rng.normal(-1.0, 1.0, (300, 8)).astype(np.float32)
    gate = fit_gate(old, new)
    with torch.no_grad():
        p_old = torch.sigmoid(gate(torch.from_numpy(old))).mean().item()
        p_new = torch.sigmoid(gate(torch.from_numpy(new))).mean().item()
    assert p_old > 0.9 and p_new < 0.1
    with pytest.raises(ValueError, match="expected embeddings of both the old and the new"):
        fit_gate(old[:0], new)
    with pytest.raises(ValueError, match="expected embeddings of one width"):
        fit_gate(old, new[:, :4])
