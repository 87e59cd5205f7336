"""Throughput of a shipped bundle's ONNX graph in ONNX Runtime vs the same model in PyTorch eager.

    python bench/onnx_vs_torch.py --bundle models/s1grd-conus \
        [--checkpoint RUNS/finetune-s1grd-conus] [--seconds 3] [--repeats 3]

The PyTorch model is the bundle's own trainable weights (``weights.safetensors``), or the
fine-tuning run's checkpoint when ``--checkpoint`` is given.

Both engines get 2 intra-op threads and run the same forward (vegetation %, embedding,
attention) on the same tiles, at batch 1 and 16, in the same process; timing windows alternate
between the engines (median of ``--repeats``) so load from other processes hits both alike.
ONNX Runtime runs the bundle's graph twice: with the session options serving uses (worker threads
sleep between ops) and with ONNX Runtime's default spinning threads; and, with the serving
options, the fp32 graph exported from the same checkpoint (``export_onnx``, no quantisation),
so that the runtime's gain (fp32 ORT vs eager) and quantisation's (bundle graph vs fp32 ORT) are
shown apart. Target: ORT >= 1.3x eager.
The tiles are random values drawn around the bundle's normalisation statistics (speed does not
depend on content) with a nodata corner.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sarveg.bundle import load_bundle
from training.bundle_weights import load_bundle_weights
from training.onnx_export import ExportGraph, export_onnx, make_session, measure_throughput
from training.regressor import load_finetuned

THREADS = 2
TARGET_RATIO = 1.3


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="the fine-tuning run (default: the bundle's)"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per timing window")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    manifest = bundle.manifest
    finetuned = (
        load_bundle_weights(args.bundle)
        if args.checkpoint is None
        else load_finetuned(args.checkpoint)
    )
    if finetuned.input_size != manifest.input_size or finetuned.modality != manifest.modality:
        print("the checkpoint does not match the bundle (modality or input size)", file=sys.stderr)
        return 1
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    graph = ExportGraph(finetuned.model.eval()).eval()
    session = make_session(bundle.model_path, threads=THREADS)
    spinning = make_session(bundle.model_path, threads=THREADS, spinning=True)
    with tempfile.TemporaryDirectory(prefix="sarveg-fp32-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_onnx(finetuned.model.eval(), fp32_path)
        fp32 = make_session(fp32_path, threads=THREADS)

    rng = np.random.default_rng(0)
    mean = np.array(manifest.normalisation.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.array(manifest.normalisation.std, np.float32).reshape(1, -1, 1, 1)
    shape = (16, len(manifest.band_names), manifest.input_size, manifest.input_size)
    tiles = (mean + std * rng.standard_normal(shape)).astype(np.float32)
    tiles[:, :, :4, :6] = np.nan

    def run_torch(batch: np.ndarray) -> object:
        with torch.inference_mode():
            return graph(torch.from_numpy(batch))

    def run_onnx(batch: np.ndarray) -> object:
        return session.run(None, {"tiles": batch})

    def run_spinning(batch: np.ndarray) -> object:
        return spinning.run(None, {"tiles": batch})

    def run_fp32(batch: np.ndarray) -> object:
        return fp32.run(None, {"tiles": batch})

    with torch.inference_mode():
        expected = [t.numpy() for t in graph(torch.from_numpy(tiles))]
    found = run_onnx(tiles)
    variant = manifest.provenance.config.get("export", {}).get("variant", "?")
    print(
        f"bundle {manifest.name} ({variant} graph), {manifest.modality}, input "
        f"{shape[1]} x {shape[2]} x {shape[3]}, {THREADS} threads each, "
        f"{args.repeats} x {args.seconds:.0f} s windows"
    )
    print(
        f"agreement on these tiles: vegetation max |diff| "
        f"{np.abs(found[0] - expected[0]).max():.2e} points, embedding max |diff| "
        f"{np.abs(found[1] - expected[1]).max():.2e}"
    )
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        # 2 OpenMP threads that must meet at a barrier after every op stall whenever another
        # process holds a core: eager PyTorch slows far more than ONNX Runtime's thread pool.
        print(
            f"WARNING: load average {load:.1f} on {cores} cores; other processes distort the "
            "comparison (PyTorch eager suffers most). Run on an otherwise idle machine."
        )
    rates: dict[tuple[str, int], list[float]] = {}
    for batch_size in (1, 16):
        for _ in range(args.repeats):
            for name, run in (
                ("torch", run_torch),
                ("fp32", run_fp32),
                ("onnx", run_onnx),
                ("spinning", run_spinning),
            ):
                time.sleep(0.2)  # let the spinning session's threads go back to sleep
                rate = measure_throughput(run, tiles, batch_size, args.seconds, repeats=1)
                rates.setdefault((name, batch_size), []).append(rate)
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"{'':<22}{'batch 1':>12}{'batch 16':>12}   (tiles/s)")
    rows = (
        ("PyTorch eager", "torch"),
        ("ORT fp32 graph", "fp32"),
        (f"ORT {variant} graph", "onnx"),
        (f"ORT {variant}, spinning", "spinning"),
    )
    for label, name in rows:
        print(f"{label:<22}{median[name, 1]:>12.1f}{median[name, 16]:>12.1f}")
    runtime = [median["fp32", b] / median["torch", b] for b in (1, 16)]
    quantised = [median["onnx", b] / median["fp32", b] for b in (1, 16)]
    print(f"{'runtime: fp32 / eager':<22}{runtime[0]:>11.2f}x{runtime[1]:>11.2f}x")
    print(f"{f'graph: {variant} / fp32':<22}{quantised[0]:>11.2f}x{quantised[1]:>11.2f}x")
    for name, label in (("onnx", "serving options"), ("spinning", "spinning threads")):
        ratios = [median[name, b] / median["torch", b] for b in (1, 16)]
        verdict = "met" if min(ratios) >= TARGET_RATIO else "NOT met"
        print(
            f"{'ratio, ' + label:<22}{ratios[0]:>11.2f}x{ratios[1]:>11.2f}x"
            f"   target >= {TARGET_RATIO}x: {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
