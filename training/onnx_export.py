"""ONNX export of a fine-tuned model, faster variants, and the drift/speed rule that picks one.

The graph takes ``tiles`` float32 ``(batch, C, H, W)`` in physical units (dB or coherence, NaN
for nodata) at the model's input size; normalisation and NaN -> 0 are inside it (the backbone's
``Normalize``). Outputs: ``vegetation_pct`` ``(batch,)`` clipped to 0..100, ``embedding``
``(batch, D)`` (CLS token) and ``attention`` ``(batch, heads, patches)`` (last block, CLS ->
patch). Exported with the TorchScript exporter (``dynamo=False``): a plain, fully static graph
apart from the batch axis.

Variants, each derived from the fp32 graph:

- ``fused``: ONNX Runtime's transformer optimiser (LayerNorm / skip-LayerNorm / bias-GELU
  fusion; ``onnxruntime.transformers``).
- ``ort-offline``: ONNX Runtime's own graph optimisation (``ORT_ENABLE_EXTENDED``) saved to disk.
- ``int8``: dynamic int8 quantisation of the weights of MatMul / Gemm (activations quantised on
  the fly), from the fp32 graph.
- ``fused-int8``: the same on the fused graph.

A variant may replace fp32 only if, on the given tiles, its ``vegetation_pct`` drifts at most
``MAX_DRIFT_RMSE_PCT`` points RMSE from fp32 and every embedding keeps cosine similarity at least
``MIN_COSINE``; among those that pass, the fastest at batch 16 wins if it beats fp32 by
``MIN_SPEEDUP``, else fp32 is kept. ``ort-offline`` is measured for the record only (see
``SHIPPABLE``).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training.regressor import VegetationRegressor

OPSET = 17
INPUT_NAME = "tiles"
OUTPUT_NAMES: tuple[str, ...] = ("vegetation_pct", "embedding", "attention")
MAX_DRIFT_RMSE_PCT = 0.3
MIN_COSINE = 0.99
MIN_SPEEDUP = 1.2  # below this, timing noise on a shared CPU could pick a variant by luck
BENCH_THREADS = 2
VARIANTS: tuple[str, ...] = ("fp32", "fused", "ort-offline", "int8", "fused-int8")
# ``ort-offline`` is measured but never shipped: serving applies the same optimisations when it
# loads any graph, and an offline-optimised file is tied to the provider it was optimised for.
SHIPPABLE: tuple[str, ...] = ("fused", "int8", "fused-int8")


class ExportGraph(nn.Module):
    """The fine-tuned model with the bundle's three outputs, for tracing."""

    def __init__(self, model: VegetationRegressor) -> None:
        super().__init__()
        self.model = model

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``vegetation_pct (B,)``, ``embedding (B, D)``, ``attention``."""
        return self.model.forward_all(tiles)


def export_onnx(model: VegetationRegressor, path: str | Path) -> onnx.ModelProto:
    """Export the fp32 graph with a dynamic batch axis and check it.

    Args:
        model: the fine-tuned regressor (put in eval mode).
        path: the ``.onnx`` file to write.

    Returns:
        The checked model as saved.
    """
    model = model.eval()
    channels = int(model.backbone.normalize.mean.numel())
    size = model.input_size
    example = torch.zeros(2, channels, size, size)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # timm's dynamic-size branches trace to constants at the export size, which is intended;
        # the TorchScript exporter's deprecation notice is expected too (see module docstring).
        warnings.simplefilter("ignore")
        # The wrapper in eval mode too: the exporter restores the exported module's mode
        # afterwards, and a fresh wrapper's (training) would switch the model's drop path on.
        torch.onnx.export(
            ExportGraph(model).eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    # The tracer leaves symbolic names on the attention dims; they are fixed by the architecture.
    shapes = {
        "vegetation_pct": ["batch"],
        "embedding": ["batch", model.backbone.embed_dim],
        "attention": ["batch", model.num_heads, model.num_patches],
    }
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(dims, shapes[output.name], strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    proto.doc_string = "sarveg vegetation regressor: tiles in physical units -> vegetation %"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return proto


def make_session(
    path: str | Path, threads: int = BENCH_THREADS, spinning: bool = False
) -> ort.InferenceSession:
    """A CPU session configured like serving: ``threads`` intra-op threads, no spinning.

    ``spinning=True`` lets idle worker threads busy-wait for the next op (ONNX Runtime's
    default): faster on an idle machine, but it steals cores from everything else.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(
    session: ort.InferenceSession, tiles: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vegetation_pct (n,), embedding (n, D))`` of ``tiles`` ``(n, C, H, W)``."""
    predicted, embedded = [], []
    for start in range(0, len(tiles), batch_size):
        chunk = np.ascontiguousarray(tiles[start : start + batch_size], dtype=np.float32)
        vegetation_pct, embedding = session.run(["vegetation_pct", "embedding"], {"tiles": chunk})
        predicted.append(vegetation_pct)
        embedded.append(embedding)
    return np.concatenate(predicted), np.concatenate(embedded)


def write_variants(fp32: Path, folder: Path, num_heads: int, hidden_size: int) -> dict[str, Path]:
    """Write every variant that can be built next to ``fp32``; failures are left out.

    Returns:
        ``{variant: path}``, ``fp32`` included.
    """
    paths = {"fp32": fp32}
    root_logger = logging.getLogger()
    level = root_logger.level
    # The quantiser logs advice at WARNING on the root logger for every call.
    root_logger.setLevel(logging.ERROR)
    try:
        _write_variants(fp32, folder, num_heads, hidden_size, paths)
    finally:
        root_logger.setLevel(level)
    return paths


def _write_variants(
    fp32: Path, folder: Path, num_heads: int, hidden_size: int, paths: dict[str, Path]
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fused = optimize_model(
                str(fp32),
                model_type="vit",
                num_heads=num_heads,
                hidden_size=hidden_size,
                opt_level=0,  # fusions only; ORT applies its own optimisations at load
            )
            fused.save_model_to_file(str(folder / "fused.onnx"))
            paths["fused"] = folder / "fused.onnx"
        except Exception as error:  # noqa: BLE001  (an optional variant; fp32 is still there)
            warnings.warn(f"transformer fusion failed: {error}", stacklevel=2)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(folder / "ort-offline.onnx")
        ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
        paths["ort-offline"] = folder / "ort-offline.onnx"
        for name, source in (("int8", "fp32"), ("fused-int8", "fused")):
            if source not in paths:
                continue
            quantize_dynamic(
                str(paths[source]),
                str(folder / f"{name}.onnx"),
                weight_type=QuantType.QInt8,
                # Fused contrib ops have no ONNX shape inference; their outputs are float.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            paths[name] = folder / f"{name}.onnx"


def measure_throughput(
    run: Callable[[np.ndarray], object],
    tiles: np.ndarray,
    batch_size: int,
    seconds: float = 1.0,
    repeats: int = 3,
) -> float:
    """Return tiles per second of ``run`` on batches of ``batch_size`` (median of repeats).

    One warm-up call, then ``repeats`` timed windows of about ``seconds`` each.
    """
    batch = np.ascontiguousarray(np.resize(tiles, (batch_size, *tiles.shape[1:])))
    run(batch)
    rates = []
    for _ in range(repeats):
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or done == 0:
            run(batch)
            done += batch_size
        rates.append(done / elapsed)
    return float(statistics.median(rates))


@dataclass(frozen=True)
class VariantReport:
    """How one variant compares with fp32 on the check tiles."""

    name: str
    size_mb: float
    drift_rmse_pct: float
    min_cosine: float
    tiles_per_s_batch1: float
    tiles_per_s_batch16: float
    passes: bool


def compare_variants(
    paths: dict[str, Path], tiles: np.ndarray, seconds: float = 1.0, repeats: int = 3
) -> list[VariantReport]:
    """Measure drift against fp32 and throughput of every variant on ``tiles``.

    Timing windows are interleaved across variants (round-robin, median per variant), so a
    burst of load from another process on the shared CPU does not favour one variant.
    """
    sessions = {name: make_session(path) for name, path in paths.items()}
    reference_pct, reference_embedding = run_session(sessions["fp32"], tiles)
    accuracy: dict[str, tuple[float, float]] = {}
    for name, session in sessions.items():
        pct, embedding = run_session(session, tiles)
        drift = float(np.sqrt(np.mean((pct.astype(np.float64) - reference_pct) ** 2)))
        cosine = np.sum(embedding * reference_embedding, axis=1) / (
            np.linalg.norm(embedding, axis=1) * np.linalg.norm(reference_embedding, axis=1) + 1e-12
        )
        accuracy[name] = (drift, float(cosine.min()))
    speed: dict[tuple[str, int], list[float]] = {}
    for batch_size in (1, 16):
        for _ in range(repeats):
            for name, session in sessions.items():

                def run(batch: np.ndarray, session: ort.InferenceSession = session) -> object:
                    return session.run(None, {INPUT_NAME: batch})

                rate = measure_throughput(run, tiles, batch_size, seconds, repeats=1)
                speed.setdefault((name, batch_size), []).append(rate)
    return [
        VariantReport(
            name=name,
            size_mb=path.stat().st_size / 1e6,
            drift_rmse_pct=accuracy[name][0],
            min_cosine=accuracy[name][1],
            tiles_per_s_batch1=float(statistics.median(speed[(name, 1)])),
            tiles_per_s_batch16=float(statistics.median(speed[(name, 16)])),
            passes=accuracy[name][0] <= MAX_DRIFT_RMSE_PCT and accuracy[name][1] >= MIN_COSINE,
        )
        for name, path in paths.items()
    ]


def choose_variant(reports: list[VariantReport]) -> tuple[str, str]:
    """Return ``(variant, reason)`` by the drift rule, then speed at batch 16."""
    fp32 = next(r for r in reports if r.name == "fp32")
    passing = [r for r in reports if r.passes and r.name in SHIPPABLE]
    failing = [r.name for r in reports if not r.passes]
    if not passing:
        return "fp32", f"no shippable variant passed the drift rule (failed: {failing})"
    best = max(passing, key=lambda r: r.tiles_per_s_batch16)
    speedup = best.tiles_per_s_batch16 / fp32.tiles_per_s_batch16
    if speedup < MIN_SPEEDUP:
        return "fp32", (
            f"the fastest variant that passed the drift rule ({best.name}) ran only "
            f"{speedup:.2f}x fp32 at batch 16 (needed {MIN_SPEEDUP}x); failed the drift rule: "
            f"{failing or 'none'}"
        )
    return best.name, (
        f"{best.name} passed the drift rule (RMSE drift {best.drift_rmse_pct:.3f} points, "
        f"min cosine {best.min_cosine:.4f}) and ran {speedup:.2f}x fp32 at batch 16"
    )


def export_best(
    model: VegetationRegressor,
    out_path: Path,
    check_tiles: np.ndarray,
    variant: str = "auto",
    seconds: float = 1.0,
    repeats: int = 3,
) -> tuple[str, str, list[VariantReport]]:
    """Export fp32, build the variants, and copy the chosen one to ``out_path``.

    Args:
        model: the fine-tuned regressor.
        out_path: the bundle's ``model.onnx``.
        check_tiles: ``(n, C, H, W)`` tiles in physical units (test tiles) for the drift rule.
        variant: ``"auto"`` (the rule) or a variant name to force (still measured).
        seconds: length of each timing window.
        repeats: timing windows per variant and batch size.

    Returns:
        ``(variant, reason, reports)``.
    """
    with tempfile.TemporaryDirectory(prefix="sarveg-export-") as scratch:
        folder = Path(scratch)
        export_onnx(model, folder / "fp32.onnx")
        paths = write_variants(
            folder / "fp32.onnx", folder, model.num_heads, model.backbone.embed_dim
        )
        reports = compare_variants(paths, check_tiles, seconds, repeats)
        if variant == "auto":
            chosen, reason = choose_variant(reports)
        elif variant in paths:
            chosen, reason = variant, f"{variant} requested on the command line"
        else:
            raise ValueError(f"expected a variant in {sorted(paths)} or 'auto', found {variant!r}")
        proto = onnx.load(str(paths[chosen]))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(out_path))
    return chosen, reason, reports


def reports_as_dicts(reports: list[VariantReport]) -> list[dict[str, object]]:
    """JSON-ready variant reports."""
    return [asdict(r) for r in reports]
