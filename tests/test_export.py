"""ONNX export: parity with PyTorch, NaN handling, variant choice, and the exported bundle."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from sarveg import bands
from sarveg.bundle import MAX_BUNDLE_BYTES, BundleError, load_bundle
from sarveg.dataset import index_dataset
from sarveg.ood import OODScorer
from sarveg.simulate.layout import simulate_dataset
from tests.training_runs import (
    REGIONS,
    SIDE_PX,
    finetune_tiny,
    pretrain_tiny,
    reference_tiles,
    simulate_tiny,
)
from training.backbone import build_backbone
from training.bundle_regions import main as regions_main
from training.bundle_weights import load_bundle_weights
from training.config import ModelConfig
from training.export import ExportSettings, build_bundle, main
from training.onnx_export import (
    MAX_DRIFT_RMSE_PCT,
    VariantReport,
    choose_variant,
    compare_variants,
    export_onnx,
    make_session,
    write_variants,
)
from training.regressor import VegetationRegressor, load_finetuned

SIZE = 32


def tiny_regressor(decoder_input: str = "cls", seed: int = 0) -> VegetationRegressor:
    torch.manual_seed(seed)
    channels = len(bands.S1GRD_CHANNELS)
    config = ModelConfig(depth=2, embed_dim=32, num_heads=2, drop_path_rate=0.0)
    mean = [-12.0] * 4 + [-19.0] * 4 + [7.0] * 4
    backbone = build_backbone(config, "s1grd", SIZE, mean, [3.0] * channels)
    model = VegetationRegressor(backbone, decoder_input, SIZE)
    with torch.no_grad():  # predictions spread over 0..100 rather than sitting near 0
        model.decoder.bias.fill_(0.4)
        model.decoder.weight.mul_(3.0)
    return model.eval()


def db_tiles(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tiles = rng.normal(-12.0, 4.0, (n, len(bands.S1GRD_CHANNELS), SIZE, SIZE)).astype(np.float32)
    tiles[0, :, :5, :7] = np.nan  # a masked corner, as chips clipped to their polygon
    return tiles


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_regressor()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path)
    return model, path


def test_export_leaves_the_model_in_eval_mode(exported):
    """The exporter restores its wrapper's mode: a training-mode wrapper turned drop path on."""
    model, _ = exported
    assert not any(module.training for module in model.modules())


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_runtime_matches_pytorch(exported, batch):
    model, path = exported
    tiles = db_tiles(batch, seed=batch)
    with torch.no_grad():
        expected = [t.numpy() for t in model.forward_all(torch.from_numpy(tiles))]
    found = make_session(path).run(None, {"tiles": tiles})
    vegetation, embedding, attention = found
    assert vegetation.shape == (batch,) and embedding.shape == (batch, 32)
    assert attention.shape == (batch, 2, (SIZE // 8) ** 2)
    assert np.all((expected[0] > 0.0) & (expected[0] < 100.0))  # inside the clip range
    np.testing.assert_allclose(vegetation, expected[0], rtol=0, atol=1e-3)
    np.testing.assert_allclose(embedding, expected[1], rtol=0, atol=1e-4)
    np.testing.assert_allclose(attention, expected[2], rtol=0, atol=1e-5)
    patch_share = attention.sum(axis=2)  # the CLS token's own weight is left out
    assert np.all((patch_share > 0.5) & (patch_share < 1.0))


def test_onnx_graph_passes_checker_and_declares_the_contract(exported):
    _, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (tiles,) = proto.graph.input
    assert tiles.name == "tiles"
    dims = tiles.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [12, SIZE, SIZE]
    outputs = {o.name: o.type.tensor_type.shape.dim for o in proto.graph.output}
    assert list(outputs) == ["vegetation_pct", "embedding", "attention"]
    assert [d.dim_value for d in outputs["attention"][1:]] == [2, 16]


def test_nan_pixels_are_the_channel_mean_and_outputs_are_clipped(exported):
    model, path = exported
    session = make_session(path)
    mean = model.backbone.normalize.mean.numpy().reshape(1, -1, 1, 1)
    all_nan = np.full((1, 12, SIZE, SIZE), np.nan, np.float32)
    filled = np.broadcast_to(mean, all_nan.shape).astype(np.float32)
    nan_out = session.run(None, {"tiles": all_nan})
    mean_out = session.run(None, {"tiles": filled})
    assert all(np.isfinite(o).all() for o in nan_out)
    for a, b in zip(nan_out, mean_out, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    extreme = np.full((2, 12, SIZE, SIZE), 60.0, np.float32)
    extreme[1] = -100.0
    vegetation = session.run(["vegetation_pct"], {"tiles": extreme})[0]
    assert np.all((vegetation >= 0.0) & (vegetation <= 100.0))


def test_variants_are_measured_against_fp32(exported, tmp_path):
    _, path = exported
    paths = write_variants(path, tmp_path, num_heads=2, hidden_size=32)
    assert {"fp32", "int8", "ort-offline"} <= set(paths)
    reports = compare_variants(paths, db_tiles(8), seconds=0.02, repeats=1)
    by_name = {r.name: r for r in reports}
    assert by_name["fp32"].drift_rmse_pct == 0.0 and by_name["fp32"].min_cosine > 0.9999
    assert all(r.tiles_per_s_batch16 > 0 and r.size_mb > 0 for r in reports)
    assert by_name["int8"].size_mb < by_name["fp32"].size_mb


def report(name, drift=0.0, cosine=1.0, speed=100.0):
    passes = drift <= MAX_DRIFT_RMSE_PCT and cosine >= 0.99
    return VariantReport(name, 1.0, drift, cosine, speed, speed, passes)


def test_variant_rule_ships_fp32_unless_a_passing_variant_is_clearly_faster():
    fp32 = report("fp32")
    assert choose_variant([fp32, report("int8", drift=0.5, speed=300)])[0] == "fp32"
    assert choose_variant([fp32, report("int8", cosine=0.98, speed=300)])[0] == "fp32"
    assert choose_variant([fp32, report("int8", speed=105)])[0] == "fp32"
    assert choose_variant([fp32, report("ort-offline", speed=300)])[0] == "fp32"
    chosen, reason = choose_variant(
        [fp32, report("int8", drift=0.2, speed=200), report("fused", speed=150)]
    )
    assert chosen == "int8" and "2.00x" in reason


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    data = simulate_tiny(tmp_path_factory.mktemp("sim"))
    pretrained = pretrain_tiny(data, tmp_path_factory.mktemp("pretrain"))
    run = tmp_path_factory.mktemp("finetune")
    finetune_tiny(data, run, pretrained)
    out = tmp_path_factory.mktemp("models") / "tiny-s1grd-conus"
    settings = ExportSettings(timing_seconds=0.02, timing_repeats=1, progress=False)
    build_bundle(run, data, out, settings)
    return out, run, data


def test_exported_bundle_loads_and_matches_the_contract(bundle_dir):
    out, run, _ = bundle_dir
    bundle = load_bundle(out)
    manifest = bundle.manifest
    assert sorted(manifest.files) == [
        "MODEL_CARD.md",
        "model.onnx",
        "reference.npz",
        "weights.json",
        "weights.safetensors",
    ]
    assert sum(p.stat().st_size for p in out.iterdir()) <= MAX_BUNDLE_BYTES
    assert manifest.outputs == ["vegetation_pct", "embedding", "attention"]
    assert manifest.input_size == 32 and manifest.source_tile_px == 32
    assert manifest.architecture.depth == 2 and manifest.embedding_size == 32
    assert manifest.provenance.synthetic and manifest.provenance.fine_tuning_regions == ["conus"]
    assert manifest.provenance.pretraining_regions == ["europe", "china", "conus"]
    assert manifest.provenance.config["export"]["variant"] in ("fp32", "fused", "int8")
    assert sorted(manifest.metrics) == sorted(REGIONS)
    assert all(np.isfinite(m.rmse) for m in manifest.metrics.values())
    assert manifest.ood.reference_regions == sorted(REGIONS)
    measured = manifest.ood.measured
    assert measured is not None and measured.synthetic
    assert measured.unseen_region == "south_america" and measured.n_unseen > 0
    checkpoint = load_finetuned(run).checkpoint
    assert manifest.ood.calibration_size == len(checkpoint["tiles"]["calibration"])
    card = (out / "MODEL_CARD.md").read_text()
    assert "Synthetic" in card and "south_america" in card
    # The stored reference runs through the shipped graph: re-scoring it is consistent.
    scorer = OODScorer.from_bundle(bundle)
    calibration = bundle.reference.calibration
    again = scorer.score_batch(calibration.embedding, calibration.predicted_pct)
    np.testing.assert_allclose(again.score, calibration.score, rtol=1e-6)


def test_references_spread_over_every_split_and_skip_the_tiles_the_fine_tune_used(bundle_dir):
    out, run, data = bundle_dir
    bundle = load_bundle(out)
    assert bundle.reference.regions["europe"].embedding.shape[1] == 32
    used = {
        identifier
        for key in ("labelled", "early_stopping", "calibration")
        for _, identifier in load_finetuned(run).checkpoint["tiles"][key]
    }
    conus = reference_tiles(bundle, data, "conus")
    assert conus and not used & {identifier for identifier, _ in conus}
    labelled_conus = sum(
        np.isfinite(r.vegetation_pct) for r in index_dataset(data, "s1grd", ["conus"])
    )
    # Half of the unused tiles: the other half measures the OOD block.
    assert len(conus) == (labelled_conus - len(used)) // 2
    for region in ("europe", "conus"):
        splits = {split for _, split in reference_tiles(bundle, data, region)}
        assert len(splits) >= 2, (region, splits)
    # Without an independent folder the unseen region's val split measures AUROC: not a reference.
    assert "val" not in {split for _, split in reference_tiles(bundle, data, "south_america")}


def test_a_bundle_exports_again_from_its_own_weights(bundle_dir, tmp_path):
    out, _, data = bundle_dir
    original = load_bundle(out)
    variant = original.manifest.provenance.config["export"]["variant"]
    settings = ExportSettings(
        variant=variant, timing_seconds=0.02, timing_repeats=1, progress=False
    )
    manifest = build_bundle(out, data, tmp_path / "again", settings)
    again = load_bundle(tmp_path / "again")
    for region, metrics in original.manifest.metrics.items():
        assert manifest.metrics[region].rmse == pytest.approx(metrics.rmse, abs=1e-3)
    np.testing.assert_allclose(
        again.reference.regions["conus"].embedding,
        original.reference.regions["conus"].embedding,
        atol=1e-4,
    )
    assert manifest.ood.calibration_size == original.manifest.ood.calibration_size


def test_tampered_bundle_fails_to_load(bundle_dir, tmp_path):
    out, _, _ = bundle_dir
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in out.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    (copy / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(BundleError, match="model.onnx: sha256 mismatch"):
        load_bundle(copy)


def test_bundle_weights_rebuild_the_checkpoint_model(bundle_dir, tmp_path):
    out, run, _ = bundle_dir
    rebuilt = load_bundle_weights(out)
    original = load_finetuned(run)
    x = torch.randn(3, 12, 32, 32)
    with torch.no_grad():
        expected = original.model.forward_all(x)[0]
        found = rebuilt.model.forward_all(x)[0]
    torch.testing.assert_close(found, expected)
    assert rebuilt.checkpoint["tiles"] == original.checkpoint["tiles"]
    assert rebuilt.input_size == 32 and rebuilt.modality == "s1grd"
    # Tampered weights fail the bundle's checksum; a bundle without weights names the gap.
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in out.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    (copy / "weights.safetensors").write_bytes(b"\0" + (out / "weights.safetensors").read_bytes())
    with pytest.raises(BundleError, match="weights.safetensors: sha256 mismatch"):
        load_bundle_weights(copy)
    manifest = json.loads((out / "bundle.json").read_text())
    for name in ("weights.safetensors", "weights.json"):
        del manifest["files"][name]
        (copy / name).unlink()
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="expected trainable weights"):
        load_bundle_weights(copy)


def test_export_cli_refuses_to_overwrite_without_force(bundle_dir, capsys):
    out, run, data = bundle_dir
    manifest = json.loads((out / "bundle.json").read_text())
    code = main(["--checkpoint", str(run), "--data", str(data), "--out", str(out)])
    assert code == 1 and "pass --force" in capsys.readouterr().err
    assert json.loads((out / "bundle.json").read_text()) == manifest
    assert not list(out.parent.glob(".*staging"))


def test_independent_folder_measures_the_ood_block(bundle_dir, tmp_path, capsys):
    _, run, data = bundle_dir
    fresh = tmp_path / "fresh"
    simulate_dataset(
        fresh, ["conus", "south_america"], 12, SIDE_PX, seed=1, workers=1, progress=False
    )
    out = tmp_path / "models" / "independent"
    settings = ExportSettings(timing_seconds=0.02, timing_repeats=1, progress=False, ood_data=fresh)
    manifest = build_bundle(run, data, out, settings)
    measured = manifest.ood.measured
    fresh_labelled = {
        region: sum(np.isfinite(r.vegetation_pct) for r in index_dataset(fresh, "s1grd", [region]))
        for region in ("conus", "south_america")
    }
    assert measured.n_in_distribution == fresh_labelled["conus"] > 0
    assert measured.n_unseen == fresh_labelled["south_america"] > 0
    assert "independent folder fresh" in measured.evaluation_tiles
    # No held-out half is needed any more: every tile the fine-tune left unused is a reference.
    held = load_bundle(out).reference.regions["conus"].embedding
    assert len(held) == len(load_bundle(bundle_dir[0]).reference.regions["conus"].embedding) * 2
    assert "independent conus tiles" in (out / "MODEL_CARD.md").read_text()
    membership = manifest.ood.region_membership
    assert membership is not None and set(membership.n_tiles) == {"conus", "south_america"}
    for region, n in membership.n_tiles.items():
        assert sum(membership.confusion[membership.regions.index(region)]) == n
        assert 0.0 <= membership.plausible_coverage[region] <= 1.0
    assert "## Region membership" in (out / "MODEL_CARD.md").read_text()
    # `sarveg regions` measures the regions the folder has, not failing on the others.
    assert regions_main(["--model", str(out), "--data", str(fresh)]) == 0
    table = capsys.readouterr().out.split("plausible cov")[1]
    assert "conus" in table and "south_america" in table and "europe" not in table


def test_ood_folder_must_be_independent_of_the_training_data(bundle_dir, tmp_path):
    _, run, data = bundle_dir
    same_seed = tmp_path / "same-seed"
    simulate_dataset(same_seed, ["conus"], 4, SIDE_PX, seed=0, workers=1, progress=False)
    for folder, message in ((data, "found the same folder"), (same_seed, "another --seed")):
        settings = ExportSettings(
            timing_seconds=0.02, timing_repeats=1, progress=False, ood_data=folder
        )
        out = tmp_path / "refused"
        with pytest.raises(ValueError, match=message):
            build_bundle(run, data, out, settings)
        assert not out.exists()


@pytest.mark.parametrize("decoder_input", ["cls", "attention"])
def test_export_path_predicts_what_training_optimised(decoder_input):
    model = tiny_regressor(decoder_input)
    tiles = torch.from_numpy(db_tiles(3))
    with torch.no_grad():
        trained = torch.clamp(model(tiles) * 100.0, 0.0, 100.0)
        exported, embedding, _ = model.forward_all(tiles)
        torch.testing.assert_close(exported, trained, rtol=0, atol=1e-4)
        torch.testing.assert_close(embedding, model.backbone(tiles), rtol=0, atol=1e-5)
