"""``sarveg report``: run the paper's protocol and write a Markdown report with figures and CSVs.

    sarveg report --data DIR --pretrained PRETRAIN_RUN [--pretrained PRETRAIN_RUN ...]
        --out REPORT_DIR [--config report-cpu|report-tiny|FILE.yaml] [--runs RUNS_DIR]
        [key=value ...]
    sarveg report --data DIR --out REPORT_DIR --render-only    # rewrite report.md only
    sarveg report --data DIR --out REPORT_DIR --merge REPORT_A --merge REPORT_B

One ``--pretrained`` run per modality (its modality is read from the checkpoint); modalities
missing from ``--config``'s list are skipped. Fine-tuning runs go to ``RUNS_DIR`` (default
``REPORT_DIR/runs``) and are reused on a rerun, so an interrupted report picks up where it
stopped. Writes ``REPORT_DIR/report.md``, ``report.json``, the resolved ``config.yaml``, CSV
tables and PNG figures. ``--merge`` joins reports of different modalities (e.g. run one after
the other) into one: their results, tables and figures, one ``report.md`` and ``config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from training.config import ConfigError
from training.evaluate import synthetic_data
from training.finetune import resolve_pretrained
from training.report import figures
from training.report.config import ReportConfig, load_report_config
from training.report.markdown import check_targets, write_report
from training.report.protocol import ModalityResult, Protocol


def label_distributions(protocol: Protocol, regions: list[str]) -> dict[str, np.ndarray]:
    """Every labelled tile's vegetation_pct per region (all splits)."""
    assert protocol.cache is not None
    labels = protocol.cache.vegetation_pct
    names = np.asarray(protocol.cache.regions)
    return {r: labels[(names == r) & np.isfinite(labels)] for r in regions}


def run_report(
    config: ReportConfig,
    data_dir: Path,
    pretrained: list[Path],
    out_dir: Path,
    runs_dir: Path,
    progress: bool = True,
) -> list[ModalityResult]:
    """Run the protocol for each modality with a pre-training run and write the report."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    protocols = [Protocol(config, p, data_dir, out_dir, runs_dir, progress) for p in pretrained]
    by_modality = {p.modality: p for p in protocols}
    if len(by_modality) != len(protocols):
        raise ValueError(
            f"expected one pre-training run per modality, found {[p.modality for p in protocols]}"
        )
    chosen = [by_modality[m] for m in config.modalities if m in by_modality]
    if not chosen:
        raise ValueError(
            f"expected a pre-training run of {config.modalities}, found {sorted(by_modality)}"
        )
    results = [protocol.execute() for protocol in chosen]
    figures.plot_label_histograms(
        label_distributions(chosen[0], config.regions), out_dir / "fig6_labels.png"
    )
    runs = {p.modality: p.pretrained for p in chosen}
    write_outputs(config, data_dir, runs, out_dir, results, time.perf_counter() - started)
    return results


def write_outputs(
    config: ReportConfig,
    data_dir: Path,
    pretrained: dict[str, Path],
    out_dir: Path,
    results: list[ModalityResult],
    elapsed: float,
) -> None:
    """Check the targets and write ``report.md`` and ``report.json``."""
    checks = {r.modality: check_targets(r, config) for r in results}
    synthetic = synthetic_data(data_dir)
    header = {
        "data": f"`{data_dir}`" + (" (simulated: synthetic)" if synthetic else ""),
        "pre-training runs": ", ".join(f"`{path}` ({m})" for m, path in pretrained.items()),
        "protocol config": "`config.yaml` beside this report",
        "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall time": ", ".join(f"{r.modality} {r.seconds / 60:.1f} min" for r in results)
        + f"; total {elapsed / 60:.1f} min (fine-tuning runs reused from earlier runs "
        "take no time)",
    }
    write_report(out_dir / "report.md", results, checks, config, header, synthetic)
    record = {
        "results": [asdict(r) for r in results],
        "targets": checks,
        "seconds": elapsed,
        "pretrained": {m: str(path) for m, path in pretrained.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(record, indent=2, default=float) + "\n")


def read_record(report_dir: Path) -> dict[str, Any]:
    """The ``report.json`` of an earlier run of the report."""
    path = report_dir / "report.json"
    if not path.is_file():
        raise ValueError(f"expected {path} from an earlier run of the report, found no file")
    return json.loads(path.read_text())


def render_report(config: ReportConfig, data_dir: Path, out_dir: Path) -> list[ModalityResult]:
    """Rewrite ``report.md`` from ``report.json`` (new wording or target checks, no training)."""
    record = read_record(out_dir)
    results = [ModalityResult(**r) for r in record["results"]]
    runs = {m: Path(p) for m, p in record.get("pretrained", {}).items()}
    write_outputs(config, data_dir, runs, out_dir, results, float(record["seconds"]))
    return results


def merge_reports(
    config: ReportConfig, data_dir: Path, sources: list[Path], out_dir: Path
) -> list[ModalityResult]:
    """Join reports of different modalities into ``out_dir`` (no training).

    Each source keeps its own figures and tables (files named ``*_{modality}.*``); the label
    histograms are the first source's (every report draws them from the same data), and so is
    the protocol config when the first source has its ``config.yaml`` (else ``config``).
    """
    if (sources[0] / "config.yaml").is_file():
        config = load_report_config(str(sources[0] / "config.yaml"), [])
    results: list[ModalityResult] = []
    runs: dict[str, Path] = {}
    seconds = 0.0
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        record = read_record(source)
        for row in record["results"]:
            if row["modality"] in runs:
                raise ValueError(
                    f"expected each modality in one source report, found {row['modality']} "
                    f"again in {source}"
                )
            runs[row["modality"]] = Path(record.get("pretrained", {}).get(row["modality"], ""))
            results.append(ModalityResult(**row))
            if source.resolve() != out_dir.resolve():
                for file in source.glob(f"*_{row['modality']}.*"):
                    shutil.copy2(file, out_dir / file.name)
        seconds += float(record["seconds"])
    labels = sources[0] / "fig6_labels.png"
    if labels.is_file() and sources[0].resolve() != out_dir.resolve():
        shutil.copy2(labels, out_dir / labels.name)
    merged = config.model_copy(update={"modalities": [r.modality for r in results]})
    (out_dir / "config.yaml").write_text(
        yaml.safe_dump(merged.model_dump(mode="json"), sort_keys=False)
    )
    write_outputs(merged, data_dir, runs, out_dir, results, seconds)
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="sarveg report", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--data", type=Path, required=True, help="folder in the geetiles layout")
    parser.add_argument(
        "--pretrained",
        type=Path,
        action="append",
        default=[],
        help="pre-training run folder (repeat: one per modality; not with --render-only)",
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--config", default="report-cpu", help="preset name or YAML file")
    parser.add_argument("--runs", type=Path, default=None, help="fine-tuning runs folder")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite report.md from REPORT_DIR/report.json without running anything",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        metavar="REPORT_DIR",
        help="join this report (repeat: one per modality) into --out without running anything",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``sarveg report``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum(map(bool, (args.pretrained, args.render_only, args.merge))) != 1:
        parser.error("expected one of --pretrained (one per modality), --render-only or --merge")
    try:
        config = load_report_config(args.config, args.overrides)
        if args.render_only:
            results = render_report(config, args.data, args.out)
        elif args.merge:
            results = merge_reports(config, args.data, args.merge, args.out)
        else:
            for path in args.pretrained:
                resolve_pretrained(path)
            runs = args.runs if args.runs is not None else args.out / "runs"
            results = run_report(
                config, args.data, args.pretrained, args.out, runs, not args.no_progress
            )
    except (ConfigError, ValueError) as error:
        print(f"sarveg report: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(
            f"{result.modality}: report in {args.out / 'report.md'} ({result.seconds / 60:.1f} min)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
