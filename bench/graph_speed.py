"""Inference time of two bundles' graphs side by side, as a ratio (e.g. a routed adapted bundle).

Usage:
    python bench/graph_speed.py BUNDLE_A BUNDLE_B [--batch 16] [--repeats 15] [--threads 1]

Both graphs run on the same random tiles in physical units (the bundles' input size, S1GRD-like
dB values), in the same ONNX Runtime settings, after the same warm-up; the repeats alternate
between the two so that machine noise falls on both. Prints the median seconds per batch of
each, the ratio B / A, and each bundle's shipped variant (a figure includes the whole graph:
normalisation, backbone(s), decoder and, for a routed bundle, the gate).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sarveg.bundle import load_bundle  # noqa: E402


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    bundles = [load_bundle(path) for path in args.bundles]
    sizes = {(b.manifest.input_size, b.manifest.architecture.in_chans) for b in bundles}
    if len(sizes) != 1:
        raise SystemExit(f"expected bundles of one input size and channel count, found {sizes}")
    size, channels = sizes.pop()
    rng = np.random.default_rng(0)
    tiles = rng.normal(-14.0, 4.0, (args.batch, channels, size, size)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    sessions = [
        ort.InferenceSession(str(b.model_path), options, providers=["CPUExecutionProvider"])
        for b in bundles
    ]
    for session in sessions:  # warm-up
        for _ in range(3):
            session.run(None, {"tiles": tiles})
    seconds: list[list[float]] = [[], []]
    for _ in range(args.repeats):
        for i, session in enumerate(sessions):
            started = time.perf_counter()
            session.run(None, {"tiles": tiles})
            seconds[i].append(time.perf_counter() - started)
    medians = [statistics.median(s) for s in seconds]
    for bundle, median in zip(bundles, medians, strict=True):
        variant = bundle.manifest.provenance.config.get("export", {}).get("variant", "?")
        print(
            f"{bundle.manifest.name:<32} variant {variant:<10} median {median * 1e3:8.1f} ms per "
            f"batch of {args.batch} ({args.threads} thread(s), {args.repeats} repeats)"
        )
    print(f"ratio B / A: {medians[1] / medians[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
