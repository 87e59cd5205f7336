"""Tests for the bundle contract: manifest schema, checksums, reference arrays."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import sarveg.bundle
from sarveg.bands import GSSIC_CHANNELS, S1GRD_CHANNELS
from sarveg.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    SCHEMA_VERSION,
    Architecture,
    BundleError,
    BundleManifest,
    Normalisation,
    OODCalibration,
    Provenance,
    RegionMetrics,
    finalise_bundle,
    load_bundle,
    parse_manifest,
)
from sarveg.ood import OODScorer, calibrate_ood
from sarveg.reference import RegionReference, save_reference

DIM = 8


def make_reference(rng: np.random.Generator, n: int, shift: float = 0.0) -> RegionReference:
    embedding = (rng.standard_normal((n, DIM)) + shift).astype(np.float32)
    y = rng.uniform(0.0, 100.0, n).astype(np.float32)
    return RegionReference(
        embedding, y, np.clip(y + rng.normal(0.0, 5.0, n), 0, 100).astype(np.float32)
    )


def make_manifest(ood: OODCalibration, **changes: object) -> BundleManifest:
    fields: dict[str, object] = {
        "name": "s1grd-europe-test",
        "modality": "s1grd",
        "band_names": list(S1GRD_CHANNELS),
        "units": "dB",
        "input_size": 32,
        "source_tile_px": 48,
        "normalisation": Normalisation(mean=[-12.0] * 12, std=[3.0] * 12),
        "architecture": Architecture(
            name="vit_tiny_patch16_224",
            patch_size=16,
            embed_dim=DIM,
            depth=2,
            num_heads=2,
            input_size=32,
            in_chans=12,
        ),
        "embedding_size": DIM,
        "provenance": Provenance(
            data="synthetic benchmark (test fixture)",
            synthetic=True,
            fine_tuning_regions=["europe"],
            pretraining_regions=["europe", "china"],
            label_fraction=0.01,
            config={"epochs": 1},
            code_version="0.1.0+test",
            created=datetime(2026, 11, 24, tzinfo=UTC),
        ),
        "metrics": {
            "europe": RegionMetrics(rmse=5.3, mae=4.0, bias=-0.2, n_tiles=60, label_std=20.0)
        },
        "ood": ood,
    }
    return BundleManifest.model_validate(fields | changes)


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    regions = {"europe": make_reference(rng, 60), "china": make_reference(rng, 50, shift=3.0)}
    reference, ood = calibrate_ood(regions, "europe", make_reference(rng, 40), knn_k=5)
    directory = tmp_path / "models" / "s1grd-europe-test"
    directory.mkdir(parents=True)
    (directory / MODEL_FILE).write_bytes(b"not really onnx, just bytes with a checksum")
    save_reference(directory / REFERENCE_FILE, reference)
    finalise_bundle(directory, make_manifest(ood))
    return directory


def rewrite_manifest(directory: Path, edit: dict[str, object]) -> None:
    path = directory / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw.update(edit)
    path.write_text(json.dumps(raw))


def test_round_trip(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest.schema_version == SCHEMA_VERSION
    assert bundle.model_path == bundle_dir / MODEL_FILE
    assert set(bundle.manifest.files) == {MODEL_FILE, REFERENCE_FILE}
    assert bundle.reference.regions["china"].embedding.shape == (50, DIM)
    assert bundle.reference.calibration.score.shape == (40,)
    assert load_bundle(bundle_dir / MANIFEST_FILE).manifest == bundle.manifest
    scorer = OODScorer.from_bundle(bundle)
    tile = scorer.score_tiles(np.zeros((1, DIM)), np.array([30.0]))[0]
    assert tile.nearest_region == "europe" and not tile.unreliable


def test_checksum_mismatch_names_the_file(bundle_dir: Path) -> None:
    (bundle_dir / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(
        BundleError,
        match=r"s1grd-europe-test/model\.onnx: sha256 mismatch, expected [0-9a-f]{64}, found",
    ):
        load_bundle(bundle_dir)


def test_missing_and_unlisted_files(bundle_dir: Path) -> None:
    (bundle_dir / "notes.txt").write_text("added after finalise")
    with pytest.raises(BundleError, match=r"notes\.txt: file not listed in bundle\.json"):
        load_bundle(bundle_dir)
    (bundle_dir / "notes.txt").unlink()
    (bundle_dir / REFERENCE_FILE).unlink()
    with pytest.raises(BundleError, match=r"reference\.npz: listed in bundle\.json but missing"):
        load_bundle(bundle_dir)
    with pytest.raises(
        BundleError, match=r"bundle\.json: expected a bundle manifest, found no such file"
    ):
        load_bundle(bundle_dir.parent)


def test_unknown_key_is_named(bundle_dir: Path) -> None:
    rewrite_manifest(bundle_dir, {"colour": "green"})
    with pytest.raises(
        BundleError, match=r"bundle\.json: invalid bundle manifest: field 'colour': unknown key"
    ):
        load_bundle(bundle_dir)


def test_wrong_band_names_are_named(bundle_dir: Path) -> None:
    rewrite_manifest(bundle_dir, {"band_names": list(reversed(S1GRD_CHANNELS))})
    with pytest.raises(BundleError, match=r"field 'band_names': .*expected the 12 s1grd channels"):
        load_bundle(bundle_dir)


def test_schema_version_and_json_errors(bundle_dir: Path) -> None:
    rewrite_manifest(bundle_dir, {"schema_version": 2})
    with pytest.raises(BundleError, match="field 'schema_version': expected 1, found 2"):
        load_bundle(bundle_dir)
    (bundle_dir / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="expected JSON"):
        load_bundle(bundle_dir)


def test_cross_field_validation(bundle_dir: Path) -> None:
    text = (bundle_dir / MANIFEST_FILE).read_text()
    raw = json.loads(text)
    raw["modality"] = "gssic"
    raw["band_names"] = list(GSSIC_CHANNELS)
    with pytest.raises(BundleError, match=r"field 'units': Value error, expected 'coherence"):
        parse_manifest(json.dumps(raw))
    raw = json.loads(text)
    raw["architecture"]["in_chans"] = 8
    with pytest.raises(
        BundleError, match=r"field 'architecture': .*expected in_chans == 12 bands, found 8"
    ):
        parse_manifest(json.dumps(raw))
    raw = json.loads(text)
    raw["embedding_size"] = DIM + 1
    with pytest.raises(BundleError, match="field 'embedding_size'"):
        parse_manifest(json.dumps(raw))
    raw = json.loads(text)
    raw["files"]["../escape.bin"] = "0" * 64
    with pytest.raises(BundleError, match="field 'files'.*relative file names"):
        parse_manifest(json.dumps(raw))
    raw = json.loads(text)
    raw["source_tile_px"] = 8
    with pytest.raises(
        BundleError, match="field 'source_tile_px': Input should be greater than or equal to 16"
    ):
        parse_manifest(json.dumps(raw))
    del raw["source_tile_px"]
    with pytest.raises(BundleError, match="field 'source_tile_px': Field required"):
        parse_manifest(json.dumps(raw))
    raw = json.loads(text)
    raw["ood"]["fine_tuning_region"] = "mars"
    with pytest.raises(BundleError, match="field 'ood'.*fine_tuning_region"):
        parse_manifest(json.dumps(raw))


def test_reference_arrays_checked_against_manifest(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    reference = bundle.reference
    reference.regions["china"] = RegionReference(
        np.zeros((50, DIM + 1), np.float32), np.zeros(50, np.float32), np.zeros(50, np.float32)
    )
    save_reference(bundle_dir / REFERENCE_FILE, reference)
    with pytest.raises(
        BundleError,
        match=r"reference\.npz: key 'china/embedding': expected a float array of shape \(50, 8\)",
    ):
        finalise_bundle(bundle_dir, bundle.manifest)
    del reference.regions["china"]
    save_reference(bundle_dir / REFERENCE_FILE, reference)
    with pytest.raises(
        BundleError, match=r"reference\.npz: expected keys .*missing \['china/embedding'"
    ):
        finalise_bundle(bundle_dir, bundle.manifest)


def test_finalise_rejects_oversized_and_incomplete_bundles(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = load_bundle(bundle_dir).manifest
    monkeypatch.setattr(sarveg.bundle, "MAX_BUNDLE_BYTES", 100)
    with pytest.raises(BundleError, match="expected at most 100 bytes of files, found"):
        finalise_bundle(bundle_dir, manifest)
    monkeypatch.undo()
    (bundle_dir / MODEL_FILE).unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: expected a required bundle file"):
        finalise_bundle(bundle_dir, manifest)


def test_core_imports_no_torch_or_onnxruntime() -> None:
    code = (
        "import sys, sarveg.bundle, sarveg.ood, sarveg.swd, sarveg.conformal; "
        "bad = {'torch', 'onnxruntime', 'timm', 'bentoml', 'ot'} & set(sys.modules); "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
