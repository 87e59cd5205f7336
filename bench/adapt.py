"""Few-label adaptation to the unseen south_america: selected versus random labels (synthetic).

Usage:
    python bench/adapt.py [--models models] [--old-data data/bench] [--ks 25,50,100]
        [--seeds 0,1,2] [--modalities s1grd,gssic] [--pool-tiles 2000] [--eval-tiles 1000]
        [--work runs/bench-adapt] [--max-epochs N] [--set KEY=VALUE ...] [--unreliable-weight W]
        [--pool-seed 11] [--eval-seed 12]

Per modality, with the packaged bundle ``models/{modality}-conus`` (it must carry trainable
weights) and the benchmark it was fine-tuned on (``--old-data``, seed 0):

1. simulates, once, a south_america *pool* (``--pool-tiles``, seed 11: the tiles a mapping team
   has, unlabelled) and an *independent* folder of ``--eval-tiles`` conus and south_america
   tiles (seed 12: never used to fit, select or calibrate anything);
2. runs ``sarveg predict`` over the pool with the packaged bundle (its unreliable share is the
   "before" of a fresh run);
3. for each K and seed, chooses K pool tiles with ``sarveg select`` (``selected``, its random
   features seeded with the seed) or uniformly at random (``random``), takes their simulated
   labels (the "labelling"),
   and runs ``sarveg adapt`` with ``--old-data`` and the independent folder as ``--ood-data``;
4. reads from the adapted bundle's manifest, on the independent tiles: south_america RMSE, the
   unreliable share of south_america tiles before and after (= the false-flag rate after, since
   they are in distribution then), the false-flag rate on conus tiles, and conus RMSE before and
   after (forgetting).

Prints the table (mean +/- sd over the seeds), checks the issue's targets and writes
``WORK/adapt.csv`` (one row per run) and ``WORK/adapt.png``. Each adaptation fine-tunes for up
to ``--max-epochs`` epochs (default: the adapt config's, 12); all 36 runs of the default
configuration take about an hour or two on 2 cores. A finished adaptation is reused on a rerun
when its bundle (kept in WORK) was made with the same adapt config, and re-run otherwise;
``--finished-only`` tabulates those finished with that config and starts none.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sarveg.bundle import load_bundle  # noqa: E402
from sarveg.dataset import index_dataset  # noqa: E402
from sarveg.simulate.layout import simulate_dataset  # noqa: E402
from serving.batch.cli import main as predict_main  # noqa: E402
from serving.batch.select import DEFAULT_UNRELIABLE_WEIGHT, run_select  # noqa: E402
from training.adapt import adapt  # noqa: E402
from training.adapt.config import AdaptConfig, load_adapt_config  # noqa: E402
from training.adapt.routing import is_routed  # noqa: E402
from training.models_pipeline import DEFAULT_SINGLE_DATE_SHARE  # noqa: E402

NEW_REGION = "south_america"
OLD_REGION = "conus"
POOL_SEED = 11
EVAL_SEED = 12
STRATEGIES = ("selected", "random")


def simulate_once(folder: Path, regions: list[str], tiles: int, seed: int) -> Path:
    """Simulate a folder unless a finished one is there (single dates as in the benchmark)."""
    if not (folder / "simulation.json").is_file():
        simulate_dataset(
            folder,
            regions,
            tiles,
            112,
            seed=seed,
            workers=2,
            progress=True,
            single_date_share=DEFAULT_SINGLE_DATE_SHARE,
        )
    return folder


def write_labels(path: Path, identifiers: list[str], truth: dict[str, float]) -> None:
    """The labels CSV a labelling team would return."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifier", "vegetation_pct"])
        writer.writerows([i, f"{truth[i]:.3f}"] for i in identifiers)


def independent_rows(manifest_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The adaptation's before/after figures on the independent folder, by region."""
    return {
        row["region"]: row
        for row in manifest_config["adapt"]["evaluation"]
        if "independent folder" in row["tiles"]
    }


def run_config(args: argparse.Namespace, seed: int) -> AdaptConfig:
    """The adapt config of one run: the defaults, the seed, ``--max-epochs`` and ``--set``."""
    epochs = [] if args.max_epochs is None else [f"optim.max_epochs={args.max_epochs}"]
    return load_adapt_config(None, [f"seed={seed}", *epochs, *args.set])


def finished_config(bundle_dir: Path) -> dict[str, Any] | None:
    """The adapt config of a finished run's bundle (None without one): reused only if equal."""
    if not (bundle_dir / "bundle.json").is_file():
        return None
    return load_bundle(bundle_dir).manifest.provenance.config["adapt"]["config"]


def run_one(
    args: argparse.Namespace,
    modality: str,
    strategy: str,
    k: int,
    seed: int,
    folders: dict[str, Path],
) -> dict[str, Any]:
    """One adaptation; returns its row of figures."""
    work = args.work / modality / f"{strategy}-k{k}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    pool = folders["pool"]
    truth = {r.identifier: r.vegetation_pct for r in index_dataset(pool, modality)}
    labelled = sorted(i for i, v in truth.items() if np.isfinite(v))
    if strategy == "selected":
        out = work / "labels_to_collect.csv"
        weight = args.unreliable_weight
        run_select(folders["run"], k, out, unreliable_weight=weight, seed=seed, progress=False)
        with out.open() as handle:
            chosen = [row["identifier"] for row in csv.DictReader(handle)]
    else:
        rng = np.random.default_rng([seed, k])
        chosen = [labelled[i] for i in rng.choice(len(labelled), size=k, replace=False)]
    chosen = [i for i in chosen if i in truth and np.isfinite(truth[i])]
    write_labels(work / "labels.csv", chosen, truth)
    bundle_dir = work / "bundle"
    config = run_config(args, seed)
    if finished_config(bundle_dir) != config.model_dump(mode="json"):
        adapt(
            folders["model"],
            pool,
            work / "labels.csv",
            bundle_dir,
            config,
            old_data=args.old_data,
            ood_data=folders["eval"],
            cache_dir=args.work / "cache",
            work_dir=work / "state",
            force=True,
            progress=False,
        )
    manifest = load_bundle(bundle_dir).manifest
    rows = independent_rows(manifest.provenance.config)
    new, old = rows[NEW_REGION], rows[OLD_REGION]
    routing = manifest.provenance.config["adapt"].get("routing") or {}
    return {
        "modality": modality,
        "strategy": strategy,
        "k": k,
        "seed": seed,
        "labels": len(chosen),
        "sa_rmse_before": new["rmse_before"],
        "sa_rmse_after": new["rmse_after"],
        "sa_unreliable_before": new["unreliable_before"],
        "sa_unreliable_after": new["unreliable_after"],
        "conus_false_flag_after": old["unreliable_after"],
        "conus_rmse_before": old["rmse_before"],
        "conus_rmse_after": old["rmse_after"],
        "alpha": manifest.ood.alpha,
        # share of independent tiles inside their interval (target 1 - interval_alpha)
        "sa_coverage_after": new.get("coverage_after"),
        "conus_coverage_after": old.get("coverage_after"),
        "routed": is_routed(manifest.provenance.config["adapt"]),
        # auto's measure: the fine-tune's relative RMSE excess on held-out old-region tiles
        "auto_worse_by": (routing.get("decision") or {}).get("worse_by"),
    }


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    array = np.asarray(values, np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(results: list[dict[str, Any]], parent_conus_rmse: dict[str, float]) -> list[str]:
    """The table and the target checks, as printed lines."""
    lines = [
        "| modality | K | labels | south_america RMSE | SA unreliable before -> after | "
        "false-flag SA | false-flag conus | conus RMSE before -> after |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["modality"], row["k"], row["strategy"]), []).append(row)

    def fmt(key: str, rows: list[dict[str, Any]], digits: int = 2) -> str:
        m, s = mean_sd([r[key] for r in rows])
        return f"{m:.{digits}f} +/- {s:.{digits}f}"

    for (modality, k, strategy), rows in sorted(groups.items()):
        lines.append(
            f"| {modality} | {k} | {strategy} (n={len(rows)}) | {fmt('sa_rmse_after', rows)} | "
            f"{fmt('sa_unreliable_before', rows, 3)} -> {fmt('sa_unreliable_after', rows, 3)} | "
            f"{fmt('sa_unreliable_after', rows, 3)} | {fmt('conus_false_flag_after', rows, 3)} | "
            f"{fmt('conus_rmse_before', rows)} -> {fmt('conus_rmse_after', rows)} |"
        )
    lines.append("")
    for modality in sorted({r["modality"] for r in results}):
        selected50 = groups.get((modality, 50, "selected"))
        if selected50:
            m, _ = mean_sd([r["sa_rmse_after"] for r in selected50])
            limit = 2 * parent_conus_rmse[modality]
            verdict = "met" if m <= limit else "NOT met"
            lines.append(
                f"{modality}: K=50 selected south_america RMSE {m:.2f} <= 2 x conus RMSE "
                f"{limit:.2f}: {verdict}"
            )
        for k in (25, 50):
            sel, rnd = groups.get((modality, k, "selected")), groups.get((modality, k, "random"))
            if sel and rnd:
                ms, ss = mean_sd([r["sa_rmse_after"] for r in sel])
                mr, sr = mean_sd([r["sa_rmse_after"] for r in rnd])
                verdict = "met" if mr - ms > max(ss, sr) else "NOT met"
                lines.append(
                    f"{modality}: K={k} selected {ms:.2f} beats random {mr:.2f} by more than "
                    f"the seed spread {max(ss, sr):.2f}: {verdict}"
                )
        rows = [r for r in results if r["modality"] == modality]
        worst = max(r["conus_rmse_after"] / r["conus_rmse_before"] for r in rows)
        alpha = rows[0]["alpha"]
        flags = [r[key] for r in rows for key in ("sa_unreliable_after", "conus_false_flag_after")]
        inside = sum(abs(f - alpha) <= 0.02 for f in flags)
        routed = sum(bool(r.get("routed")) for r in rows)
        lines.append(f"{modality}: {routed} of {len(rows)} adapted graphs route old-region tiles")
        lines.append(
            f"{modality}: conus RMSE at most {100 * (worst - 1):+.1f} % vs before (target <= "
            f"+10 %): {'met' if worst <= 1.10 else 'NOT met'}; false-flag rates within alpha "
            f"+/- 0.02 in {inside} of {len(flags)} (run, region) pairs"
        )
    return lines


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """south_america RMSE against K, selected vs random, one panel per modality."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modalities = sorted({r["modality"] for r in results})
    figure = Figure(figsize=(5.0 * len(modalities), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    for index, modality in enumerate(modalities, start=1):
        ax = figure.add_subplot(1, len(modalities), index)
        for strategy in STRATEGIES:
            ks = sorted({r["k"] for r in results if r["modality"] == modality})
            stats = [
                mean_sd(
                    [
                        r["sa_rmse_after"]
                        for r in results
                        if (r["modality"], r["strategy"], r["k"]) == (modality, strategy, k)
                    ]
                    or [np.nan]
                )
                for k in ks
            ]
            ax.errorbar(
                ks, [m for m, _ in stats], [s for _, s in stats], marker="o", label=strategy
            )
        ax.set_xlabel("labels K")
        ax.set_ylabel("south_america RMSE (points)")
        ax.set_title(f"{modality}: adapted bundle (SYNTHETIC)")
        ax.legend()
    figure.savefig(path, dpi=110)


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--old-data", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--ks", default="25,50,100")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--modalities", default="s1grd,gssic")
    parser.add_argument("--pool-tiles", type=int, default=2000)
    parser.add_argument("--eval-tiles", type=int, default=1000)
    parser.add_argument(
        "--pool-seed", type=int, default=POOL_SEED, help="simulation seed of the pool"
    )
    parser.add_argument(
        "--eval-seed", type=int, default=EVAL_SEED, help="simulation seed of the independent tiles"
    )
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-adapt")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sarveg adapt config override for every run, e.g. rehearsal_tiles=512",
    )
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--unreliable-weight",
        type=float,
        default=DEFAULT_UNRELIABLE_WEIGHT,
        help="sarveg select's weight on flagged tiles (give another value its own --work: "
        "finished runs are matched by adapt config, not by labels)",
    )
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="tabulate the adaptations already finished in WORK; start none",
    )
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    pool = simulate_once(args.work / "pool", [NEW_REGION], args.pool_tiles, args.pool_seed)
    evaluation = simulate_once(
        args.work / "independent", [OLD_REGION, NEW_REGION], args.eval_tiles, args.eval_seed
    )
    results: list[dict[str, Any]] = []
    parent_conus_rmse: dict[str, float] = {}
    for modality in args.modalities.split(","):
        model = args.models / f"{modality}-conus"
        parent_conus_rmse[modality] = load_bundle(model).manifest.metrics[OLD_REGION].rmse
        run = args.work / modality / "predict-pool"
        if args.finished_only and not (run / "summary.json").is_file():
            continue
        if not (run / "summary.json").is_file():
            predict_main([str(pool), "--model", str(model), "--out", str(run), "--no-progress"])
        folders = {"pool": pool, "eval": evaluation, "model": model, "run": run}
        for k in ks:
            for seed in seeds:
                for strategy in args.strategies.split(","):
                    finished = args.work / modality / f"{strategy}-k{k}-seed{seed}" / "bundle"
                    wanted = run_config(args, seed).model_dump(mode="json")
                    if args.finished_only and finished_config(finished) != wanted:
                        continue
                    row = run_one(args, modality, strategy, k, seed, folders)
                    print(json.dumps(row), flush=True)
                    results.append(row)
    if not results:
        print(f"no finished adaptation in {args.work}", file=sys.stderr)
        return 1
    with (args.work / "adapt.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    plot(results, args.work / "adapt.png")
    print(
        "\nSynthetic benchmark (simulated tiles). Figures on the independent folder "
        f"({args.eval_tiles} tiles per region, seed {args.eval_seed}); pool {args.pool_tiles} "
        f"south_america tiles (seed {args.pool_seed}); mean +/- sd over seeds {seeds}.\n"
    )
    print("\n".join(summarise(results, parent_conus_rmse)))
    print(f"\nwrote {args.work / 'adapt.csv'} and {args.work / 'adapt.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
