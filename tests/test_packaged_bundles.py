"""The bundles shipped in ``models/`` (what ``make serve`` loads): intact, servable, adaptable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sarveg.bundle import load_bundle
from training.bundle_weights import load_bundle_weights

MODELS = Path(__file__).resolve().parents[1] / "models"
BUNDLES = sorted(p for p in MODELS.iterdir() if (p / "bundle.json").is_file())


def test_models_folder_holds_both_modalities() -> None:
    assert {load_bundle(p).manifest.modality for p in BUNDLES} == {"s1grd", "gssic"}


@pytest.mark.parametrize("path", BUNDLES, ids=[p.name for p in BUNDLES])
def test_packaged_bundle_loads_and_its_weights_match_its_graph(path: Path) -> None:
    import onnxruntime as ort

    bundle = load_bundle(path)  # checksums of every file, reference layout
    manifest = bundle.manifest
    assert manifest.provenance.synthetic and manifest.ood.measured is not None
    finetuned = load_bundle_weights(path)
    size, channels = manifest.input_size, len(manifest.band_names)
    x = np.random.default_rng(0).normal(size=(2, channels, size, size)).astype(np.float32)
    mean = np.asarray(manifest.normalisation.mean, np.float32)[None, :, None, None]
    std = np.asarray(manifest.normalisation.std, np.float32)[None, :, None, None]
    tiles = x * std + mean  # plausible physical values
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    onnx_pct = session.run(["vegetation_pct"], {"tiles": tiles})[0]
    with torch.no_grad():
        torch_pct = finetuned.model.forward_all(torch.from_numpy(tiles))[0].numpy()
    # The shipped graph and the shipped weights are the same model (fp32 or a checked variant).
    np.testing.assert_allclose(onnx_pct, torch_pct, atol=1.0)
