"""Benchmark ``sarveg predict`` (batch inference) against the bare ONNX Runtime call.

Usage:
    python bench/batch.py [--model models/s1grd-conus | --tiny] [--data DIR]
                          [--region south_america] [--throughput-tiles 1000]
                          [--memory-tiles 500,5000] [--engine local|ray] [--batch-size 32]

Tiles are the simulator's (synthetic): the region's files of the model's modality under
``--data`` (a ``sarveg simulate`` folder; default ``/work/data/bench`` if present, else a fresh
simulation in a temporary folder), linked into plain folders of the first N tiles. Prints side
by side:

- throughput: raw ONNX Runtime tiles/s on the same tiles preloaded as resampled arrays
  (``session.run`` on batches of ``--batch-size``, nothing else), against ``sarveg predict``
  over the folder: its streaming stage (decode + inference + OOD + writing parts, the rate the
  progress bar shows) and the whole command (start-up, listing, map, table, summary, PNG);
  target: streaming stage at least 0.85x raw;
- memory: peak resident memory of the command (with its child processes, polled) for each
  ``--memory-tiles`` size; target: roughly constant, under 1.5 GiB.

- the decode floor (unless ``--tiny`` or ``--no-floor``): the same command over the same folder
  with a stub of the real bundle (``testkit.bundles.build_stub_like``: the same bands, input
  size, embedding size and reference set, but a pooled linear graph that costs almost
  nothing), so its rate ``D`` is what decoding, resampling, OOD scoring and writing allow on
  these cores at the real sizes.
  With the model alone at ``R`` tiles/s on the same cores, a pipeline that pays both costs cannot
  exceed about ``D * R / (D + R)``: that bound is printed as a ratio next to the target (it comes
  from two timed runs, so the measured ratio can sit a few % above it).

``--tiny`` uses that test bundle for everything: the throughput ratio then measures decoding,
not the model, and is not the target figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarveg.bundle import load_bundle  # noqa: E402
from sarveg.resample import resample_array  # noqa: E402
from sarveg.tiles import read_tile  # noqa: E402
from serving.runtime import OnnxModel, usable_cores  # noqa: E402

DEFAULT_DATA = Path("/work/data/bench")
DEFAULT_MODEL = ROOT / "models" / "s1grd-conus"
TARGET_RATIO = 0.85
RSS_LIMIT_MIB = 1536
POLL_S = 0.05
COMMAND = "import sys; from serving.batch.cli import main; sys.exit(main(sys.argv[1:]))"


def find_tiles(data: Path, region: str, modality: str) -> list[Path]:
    """The region's tile files of ``modality``, sorted by identifier."""
    stems = sorted(p for p in data.glob(f"{region}_partitions_*") if p.is_dir())
    if not stems:
        raise SystemExit(f"no {region} tiles in {data}: expected a sarveg simulate folder")
    folder = next((p for p in sorted(stems[0].iterdir()) if p.name.startswith(modality)), None)
    if folder is None:
        raise SystemExit(f"no {modality} folder in {stems[0]}")
    return sorted(p for p in folder.iterdir() if p.suffix in (".tif", ".nc"))


def link_folder(tiles: list[Path], folder: Path, data: Path) -> Path:
    """A plain folder of symbolic links to ``tiles`` (plus the simulator's manifest)."""
    folder.mkdir(parents=True)
    for tile in tiles:
        (folder / tile.name).symlink_to(tile.resolve())  # a relative --data would dangle
    manifest = data / "simulation.json"
    if manifest.is_file():
        shutil.copy(manifest, folder / manifest.name)
    return folder


def raw_onnx_rate(model_dir: Path, tiles: list[Path], batch_size: int) -> float:
    """Tiles/s of ``session.run`` alone on tiles preloaded as the model's input arrays."""
    bundle = load_bundle(model_dir)
    size = bundle.manifest.input_size
    arrays = np.stack([resample_array(read_tile(t).array, size) for t in tiles])  # (N, C, S, S)
    model = OnnxModel(bundle.model_path, providers=["CPUExecutionProvider"])
    model.run(arrays[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(arrays), batch_size):
        model.run(arrays[start : start + batch_size])
    return len(arrays) / (time.perf_counter() - started)


def run_command(
    folder: Path, model_dir: Path, out: Path, engine: str, batch_size: int
) -> tuple[float, int, dict]:
    """Run ``sarveg predict``; return wall seconds, peak RSS (bytes, tree) and the summary."""
    argv = [str(folder), "--model", str(model_dir), "--out", str(out), "--no-progress"]
    argv += ["--engine", engine, "--batch-size", str(batch_size)]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", COMMAND, *argv], env=env, stdout=subprocess.DEVNULL
    )
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in family))
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"sarveg predict failed with exit code {process.returncode}")
    return seconds, peak, json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="the test bundle (no real model)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--region", default="south_america")
    parser.add_argument("--throughput-tiles", type=int, default=1000)
    parser.add_argument("--memory-tiles", default="500,5000")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the decode floor"
    )
    args = parser.parse_args()
    memory_sizes = [int(n) for n in args.memory_tiles.split(",") if n]
    work = Path(tempfile.mkdtemp(prefix="sarveg-bench-batch-"))
    try:
        if args.tiny:
            from testkit.bundles import build_bundle

            model_dir = build_bundle(work / "models", "s1grd").directory
        else:
            model_dir = args.model or DEFAULT_MODEL
            if not (model_dir / "bundle.json").is_file():
                raise SystemExit(f"no bundle at {model_dir}: pass --model DIR or --tiny")
        modality = load_bundle(model_dir).manifest.modality
        data = args.data or (DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)
        largest = max([args.throughput_tiles, *memory_sizes])
        if data is None:
            from sarveg.simulate.layout import simulate_dataset

            data = work / "sim"
            simulate_dataset(data, [args.region], largest, 112, progress=True)
        tiles = find_tiles(data, args.region, modality)
        if len(tiles) < largest:
            raise SystemExit(f"{len(tiles)} {args.region} tiles in {data}, need {largest}")
        print(
            f"model {model_dir.name} ({modality}), {usable_cores()} cores, synthetic tiles "
            f"of {args.region} from {data}, engine {args.engine}, batch {args.batch_size}"
        )

        n = args.throughput_tiles
        folder = link_folder(tiles[:n], work / f"tiles-{n}", data)
        raw = raw_onnx_rate(model_dir, tiles[:n], args.batch_size)
        seconds, _, summary = run_command(
            folder, model_dir, work / f"out-{n}", args.engine, args.batch_size
        )
        stream = summary["tiles_per_s"]
        whole = summary["counts"]["predicted"] / seconds
        print(f"\nthroughput over {n} tiles (tiles/s)")
        print(f"  {'raw ONNX Runtime, preloaded arrays':<44}{raw:>9.1f}")
        print(
            f"  {'sarveg predict, streaming stage':<44}{stream:>9.1f}   "
            f"ratio {stream / raw:.2f}  (target >= {TARGET_RATIO})"
        )
        print(f"  {'sarveg predict, whole command':<44}{whole:>9.1f}   ratio {whole / raw:.2f}")
        if args.floor and not args.tiny:
            from testkit.bundles import build_stub_like

            tiny_dir = build_stub_like(model_dir, work / "floor-models" / "stub")
            _, _, tiny_summary = run_command(
                folder, tiny_dir, work / f"floor-{n}", args.engine, args.batch_size
            )
            floor = tiny_summary["tiles_per_s"]
            bound = floor / (floor + raw)
            print(
                f"  {'decode floor: streaming, stub graph':<44}{floor:>9.1f}   "
                f"bound {bound:.2f} = D / (D + raw): the most these cores allow at this "
                "decoding cost (an estimate from two timed runs: a few % of noise)"
            )
        timings = summary["timings_s"]
        print(
            f"  (command {seconds:.1f} s: streaming {timings['inference_s']:.1f} s, "
            f"final products {timings['finalise_s']:.1f} s, rest start-up and listing)"
        )

        print("\npeak resident memory of the command and its children")
        peaks = []
        for size in memory_sizes:
            folder = link_folder(tiles[:size], work / f"mem-{size}", data)
            _, peak, _ = run_command(
                folder, model_dir, work / f"mem-out-{size}", args.engine, args.batch_size
            )
            peaks.append(peak)
            ratio = f"   ratio {peak / peaks[0]:.2f}" if len(peaks) > 1 else ""
            print(f"  {size:>7} tiles{peak / 2**20:>12.0f} MiB{ratio}  (limit {RSS_LIMIT_MIB} MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
