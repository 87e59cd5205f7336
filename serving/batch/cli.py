"""``sarveg predict``: batch inference over a folder of tiles or a mosaic, locally or on Ray."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sarveg.bundle import BundleError, load_bundle
from sarveg.errors import TileError
from serving.batch.inputs import discover_input
from serving.batch.outputs import DEFAULT_SET_SAMPLE
from serving.batch.pipeline import DEFAULT_BATCH_SIZE, BatchJob, Engine, LocalEngine, run_batch
from serving.runtime import choose_providers

DESCRIPTION = """\
Predict vegetation % and the OOD verdict for every tile of INPUT: a folder of tiles (geetiles
layout, or .tif/.nc files found recursively) or one GeoTIFF mosaic (cut into the model's
native tile size). Writes to OUT_DIR: map.tif (Cloud-Optimised GeoTIFF: vegetation_pct,
ood_p_value, unreliable), tiles.parquet (one row per tile), summary.json (counts, region-level
SWD to every reference region, unreliable share, unreadable tiles) and quicklook.png.
A rerun into the same OUT_DIR skips the tiles already done.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(prog="sarveg predict", description=DESCRIPTION)
    parser.add_argument("input", type=Path, help="folder of tiles, or a GeoTIFF mosaic")
    parser.add_argument("--model", type=Path, required=True, help="bundle directory (models/NAME)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument(
        "--ray-address", default=None, help="existing Ray cluster (default: start a local one)"
    )
    parser.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    parser.add_argument("--ray-actors", type=int, default=None, help="ONNX actors (default: CPUs)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="tiles/call")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime threads (local: default the cores; ray: per actor, default 1)",
    )
    parser.add_argument(
        "--decode-workers", type=int, default=None, help="decoding threads (local; default: cores)"
    )
    parser.add_argument(
        "--provider", choices=("auto", "cpu", "cuda"), default=None, help="ONNX Runtime provider"
    )
    parser.add_argument(
        "--set-sample",
        type=int,
        default=DEFAULT_SET_SAMPLE,
        help="most tiles in the region-level SWD (a fixed hash sample)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="discard earlier results in OUT_DIR"
    )
    parser.add_argument(
        "--units",
        choices=("db", "power", "amplitude"),
        default=None,
        help="units of two-band VV/VH input (default: told once per mosaic, per tile in a folder)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """Run ``sarveg predict``; returns 0 on success (unreadable tiles are listed, not fatal)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("batch_size", "set_sample", "threads", "decode_workers", "ray_actors"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive number, found {value}")
    if args.engine != "ray" and (args.ray_address or args.ray_actors or args.ray_cpus):
        parser.error("--ray-address, --ray-cpus and --ray-actors need --engine ray")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    engine: Engine
    if args.engine == "ray":
        from serving.batch.ray_engine import RayEngine, ray_available

        if not ray_available():
            parser.error("--engine ray needs Ray: pip install 'sarveg[ray]' (ray[data])")
        engine = RayEngine(args.ray_address, args.ray_cpus, args.ray_actors, args.threads or 1)
    else:
        engine = LocalEngine()
    try:
        bundle = load_bundle(args.model)
        if args.units is not None and bundle.manifest.modality != "s1grd":
            raise ValueError(
                f"--units applies to two-band VV/VH input of an S1GRD model: expected none for "
                f"the {bundle.manifest.modality} model {args.model}, found --units {args.units}"
            )
        job = BatchJob(
            bundle=bundle,
            batch_size=args.batch_size,
            intra_op_threads=args.threads,
            # Unset: each session picks (a Ray worker may have a GPU the driver lacks).
            providers=choose_providers(args.provider) if args.provider else None,
            decode_workers=args.decode_workers,
        )
        out_dir = args.out.expanduser().resolve()
        batch_input = discover_input(
            args.input,
            job.modality,
            job.tile_px,
            exclude=out_dir,
            footprint_m=job.bundle.manifest.footprint_m,
            units=args.units,
        )
        report = run_batch(
            batch_input,
            job,
            out_dir,
            engine,
            set_sample=args.set_sample,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (BundleError, TileError, ValueError) as error:
        print(f"sarveg predict: {error}", file=sys.stderr)
        return 2
    summary = report.summary
    counts = summary["counts"]
    print(
        f"{counts['predicted']} tiles predicted ({counts['done_before_this_run']} done before), "
        f"{counts['empty_windows']} empty, {counts['unreadable']} unreadable; "
        f"unreliable share {_percent(summary['unreliable_share'])}"
        + ("  [SYNTHETIC input]" if summary["synthetic"] else "")
    )
    region = summary["region_ood"]
    if region is not None:
        swd = ", ".join(f"{k} {v:.3g}" for k, v in region["swd_by_region"].items())
        print(f"region-level SWD: {swd}; nearest {region['nearest_region']}")
    print(f"wrote {report.out_dir} ({json.dumps(summary['outputs'])})")
    return 0


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
