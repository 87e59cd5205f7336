"""Tiny but real model bundles for serving tests, built without torch.

The ONNX graph is written with ``onnx.helper`` and honours the bundle contract: input
``tiles`` float32 ``(batch, C, H, W)`` in physical units, NaN allowed; outputs
``vegetation_pct`` ``(batch,)`` and ``embedding`` ``(batch, D)``. Inside: per-channel
normalisation, NaN -> 0, mean over H and W, a fixed random projection to ``D`` and a sigmoid
head scaled to 0..100. Reference and calibration arrays come from running that graph in
onnxruntime on generated tiles whose channel means differ by region, so the OOD block has
something to separate. Everything here is synthetic.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from sarveg import bands
from sarveg.bundle import (
    MODEL_FILE,
    REFERENCE_FILE,
    Architecture,
    Bundle,
    BundleManifest,
    Normalisation,
    Provenance,
    RegionMetrics,
    finalise_bundle,
    load_bundle,
)
from sarveg.ood import OODScorer, calibrate_ood
from sarveg.ood_evaluation import evaluate_ood
from sarveg.reference import RegionReference, save_reference

EMBEDDING_SIZE = 16
INPUT_SIZE = 16
SOURCE_TILE_PX = 24  # testkit.tiles.SIDE: a tile written by the factory is one window
REGIONS: tuple[str, ...] = ("europe", "china", "conus", "south_america")
FINE_TUNING_REGION = "europe"
OPSET = 17

# Per region, the mean of a tile's channel means (tiles scatter around it): S1GRD VV and the
# VV - VH gap in dB; GSSIC coherence at 12 and 24 days. Europe matches testkit.tiles.
S1GRD_REGION_DB: dict[str, tuple[float, float]] = {
    "europe": (-11.0, 7.0),
    "china": (-15.0, 9.0),
    "conus": (-9.0, 6.0),
    "south_america": (-6.5, 5.5),
}
GSSIC_REGION_COHERENCE: dict[str, tuple[float, float]] = {
    "europe": (0.5, 0.4),
    "china": (0.78, 0.68),
    "conus": (0.62, 0.52),
    "south_america": (0.22, 0.15),
}


def region_tiles(
    modality: str, region: str, n: int, side: int, rng: np.random.Generator
) -> np.ndarray:
    """Return ``(n, C, side, side)`` float32 tiles of one region in model channel order."""
    pixels = (n, 4, side, side)
    if modality == "s1grd":
        vv_mean, gap_mean = S1GRD_REGION_DB[region]
        vv = rng.normal(vv_mean, 1.2, (n, 1, 1, 1)) + rng.normal(0.0, 1.5, pixels)
        gap = rng.normal(gap_mean, 0.6, (n, 1, 1, 1)) + rng.normal(0.0, 0.7, pixels)
        return np.concatenate([vv, vv - gap, gap], axis=1).astype(np.float32)
    coh12_mean, coh24_mean = GSSIC_REGION_COHERENCE[region]
    coh12 = rng.normal(coh12_mean, 0.05, (n, 1, 1, 1)) + rng.normal(0.0, 0.08, pixels)
    coh24 = coh12 - (coh12_mean - coh24_mean) + rng.normal(0.0, 0.03, pixels)
    return np.clip(np.concatenate([coh12, coh24], axis=1), 0.01, 1.0).astype(np.float32)


def normalisation(modality: str) -> Normalisation:
    """Nominal per-channel statistics of the generated tiles."""
    if modality == "s1grd":
        return Normalisation(mean=[-11.0] * 4 + [-18.0] * 4 + [7.0] * 4, std=[3.0] * 12)
    return Normalisation(mean=[0.5] * 4 + [0.4] * 4, std=[0.2] * 8)


def build_graph(
    modality: str,
    seed: int = 0,
    *,
    embedding_size: int = EMBEDDING_SIZE,
    stats: Normalisation | None = None,
) -> onnx.ModelProto:
    """Return the tiny ONNX model for ``modality`` (a pooled linear map: nearly free to run)."""
    n_channels = len(bands.CHANNELS[modality])
    stats = stats or normalisation(modality)
    rng = np.random.default_rng(seed)
    weights = {
        "mean": np.array(stats.mean, np.float32).reshape(1, n_channels, 1, 1),
        "std": np.array(stats.std, np.float32).reshape(1, n_channels, 1, 1),
        "zero": np.zeros((), np.float32),
        "w_embed": (rng.standard_normal((n_channels, embedding_size)) / np.sqrt(n_channels)).astype(
            np.float32
        ),
        "b_embed": (0.1 * rng.standard_normal(embedding_size)).astype(np.float32),
        "w_head": (rng.standard_normal((embedding_size, 1)) / np.sqrt(embedding_size)).astype(
            np.float32
        ),
        "hundred": np.array(100.0, np.float32),
        "flat": np.array([-1], np.int64),
    }
    nodes = [
        helper.make_node("Sub", ["tiles", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),  # (B, C, H, W)
        helper.make_node("IsNaN", ["scaled"], ["missing"]),
        helper.make_node("Where", ["missing", "zero", "scaled"], ["filled"]),
        helper.make_node("ReduceMean", ["filled"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_embed"], ["projected"]),  # (B, D)
        helper.make_node("Add", ["projected", "b_embed"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "w_head"], ["logit"]),  # (B, 1)
        helper.make_node("Sigmoid", ["logit"], ["fraction"]),
        helper.make_node("Mul", ["fraction", "hundred"], ["percent"]),
        helper.make_node("Reshape", ["percent", "flat"], ["vegetation_pct"]),  # (B,)
    ]
    graph = helper.make_graph(
        nodes,
        f"tiny-{modality}",
        [
            helper.make_tensor_value_info(
                "tiles", TensorProto.FLOAT, ["batch", n_channels, "h", "w"]
            )
        ],
        [
            helper.make_tensor_value_info("vegetation_pct", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info(
                "embedding", TensorProto.FLOAT, ["batch", embedding_size]
            ),
        ],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_graph(session: ort.InferenceSession, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vegetation_pct (B,), embedding (B, D))`` of ``tiles`` ``(B, C, H, W)``."""
    vegetation_pct, embedding = session.run(["vegetation_pct", "embedding"], {"tiles": tiles})
    return vegetation_pct, embedding


def labelled(
    session: ort.InferenceSession, tiles: np.ndarray, rng: np.random.Generator, noise: float
) -> RegionReference:
    """Embed ``tiles`` and give them synthetic labels near the predictions."""
    predicted, embedding = run_graph(session, tiles)
    label = np.clip(predicted + rng.normal(0.0, noise, predicted.shape), 0.0, 100.0)
    return RegionReference(embedding, label.astype(np.float32), predicted.astype(np.float32))


def region_metrics(reference: RegionReference) -> RegionMetrics:
    """Test-split-style metrics of one region's reference tiles."""
    error = reference.predicted_pct.astype(np.float64) - reference.vegetation_pct
    return RegionMetrics(
        rmse=float(np.sqrt(np.mean(error**2))),
        mae=float(np.mean(np.abs(error))),
        bias=float(np.mean(error)),
        n_tiles=len(error),
        label_std=float(np.std(reference.vegetation_pct)),
    )


def build_bundle(
    root: str | Path,
    modality: str,
    *,
    name: str | None = None,
    n_reference: int = 80,
    n_calibration: int = 60,
    seed: int = 0,
    footprint_m: float | None = None,
) -> Bundle:
    """Write a tiny bundle ``root/<name>/`` for ``modality`` and return it loaded.

    Args:
        root: folder that receives the bundle directory.
        modality: ``"s1grd"`` or ``"gssic"``.
        name: bundle name (default ``tiny-<modality>-europe``).
        n_reference: reference tiles per region.
        n_calibration: calibration tiles of the fine-tuning region.
        seed: seeds the weights and the generated tiles.
        footprint_m: the training chips' ground side to record (None: unknown).
    """
    name = name or f"tiny-{modality}-{FINE_TUNING_REGION}"
    directory = Path(root) / name
    directory.mkdir(parents=True, exist_ok=False)
    model = build_graph(modality, seed)
    onnx.save(model, directory / MODEL_FILE)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed + 1)
    noise = 3.0

    def tiles(region: str, n: int) -> np.ndarray:
        return region_tiles(modality, region, n, INPUT_SIZE, rng)

    regions = {r: labelled(session, tiles(r, n_reference), rng, noise) for r in REGIONS}
    calibration = labelled(session, tiles(FINE_TUNING_REGION, n_calibration), rng, noise)
    reference, ood = calibrate_ood(
        regions,
        FINE_TUNING_REGION,
        calibration,
        knn_k=5,
        n_projections=64,
        set_verdict_projections=32,
        set_bootstrap_sets=39,
    )
    evaluation = labelled(session, tiles(FINE_TUNING_REGION, n_calibration), rng, noise)
    unseen = labelled(session, tiles("south_america", n_calibration), rng, 3 * noise)
    measured = evaluate_ood(
        OODScorer(reference, ood),
        evaluation,
        unseen,
        unseen_region="south_america",
        synthetic=True,
    )
    ood = ood.model_copy(update={"measured": measured})
    save_reference(directory / REFERENCE_FILE, reference)
    n_channels = len(bands.CHANNELS[modality])
    manifest = {
        "name": name,
        "modality": modality,
        "band_names": list(bands.CHANNELS[modality]),
        "units": bands.UNITS[modality],
        "input_size": INPUT_SIZE,
        "source_tile_px": SOURCE_TILE_PX,
        "footprint_m": footprint_m,
        "normalisation": normalisation(modality),
        "architecture": Architecture(
            name="tiny-mean-pool-linear (test fixture, not a ViT)",
            patch_size=INPUT_SIZE,
            embed_dim=EMBEDDING_SIZE,
            depth=1,
            num_heads=1,
            input_size=INPUT_SIZE,
            in_chans=n_channels,
        ),
        "embedding_size": EMBEDDING_SIZE,
        "provenance": Provenance(
            data="synthetic test fixture (generated channel statistics, no simulator)",
            synthetic=True,
            fine_tuning_regions=[FINE_TUNING_REGION],
            label_fraction=1.0,
            config={"factory": "testkit/bundles.py", "seed": seed},
            code_version="test",
            created=datetime(2026, 11, 24, tzinfo=UTC),
        ),
        "metrics": {r: region_metrics(g) for r, g in regions.items()},
        "ood": ood,
    }
    finalise_bundle(directory, BundleManifest.model_validate(manifest))
    return load_bundle(directory)


def build_bundles(root: str | Path, seed: int = 0) -> list[Bundle]:
    """Write one S1GRD and one GSSIC tiny bundle under ``root``."""
    return [build_bundle(root, m, seed=seed) for m in bands.MODALITIES]


def build_stub_like(bundle_dir: str | Path, out_dir: str | Path) -> Path:
    """A copy of a real bundle whose graph costs almost nothing: for decode floors.

    Same bands, input size, tile size, embedding size, normalisation, reference set and OOD
    calibration as ``bundle_dir``, so decoding, resampling and OOD scoring cost what they cost
    with the real bundle; only the model call is (nearly) free. Its predictions are meaningless.
    """
    source = load_bundle(bundle_dir)
    manifest = source.manifest
    out = Path(out_dir)
    shutil.copytree(source.directory, out)
    graph = build_graph(
        manifest.modality, embedding_size=manifest.embedding_size, stats=manifest.normalisation
    )
    onnx.save(graph, out / MODEL_FILE)
    stub = manifest.model_copy(
        update={"name": f"{manifest.name}-stub", "outputs": ["vegetation_pct", "embedding"]}
    )
    finalise_bundle(out, stub)
    return out
