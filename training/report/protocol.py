"""The protocol for one modality: every run, table, SWD, t-SNE and figure of the report.

Runs, for the modality's pre-training run:

- per region, from scratch and pre-trained, on the first budget ("1 %"): Table 2 and the rows
  of Table 3 (each model is evaluated on every region's test split);
- pre-trained on the pre-training regions together, first budget: the last row of Table 3, the
  "after fine-tuning" t-SNE and the attention maps;
- pre-trained on the other budgets for ``budget_regions``: Figure 6.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarveg import bands
from training.cache import TileCache, prepare_cache
from training.evaluate import load_rows_in_order
from training.finetune import resolve_pretrained
from training.report import analysis, figures
from training.report.config import ReportConfig
from training.report.experiments import (
    Init,
    RunResult,
    attention_maps,
    embed_pretrained,
    make_spec,
    run_experiment,
    test_rows,
)

COMBINED = "combined"
ATTENTION_CHANNEL = {"s1grd": "summer_vvasc", "gssic": "summer_coh12"}


@dataclass
class ModalityResult:
    """Everything the report writes about one modality (also dumped to ``report.json``)."""

    modality: str
    input_size: int
    budget_tiles: dict[str, dict[str, int]] = field(default_factory=dict)  # budget -> region -> n
    table2: list[dict[str, Any]] = field(default_factory=list)
    table3_rows: list[str] = field(default_factory=list)
    table3_columns: list[str] = field(default_factory=list)
    table3: list[list[float]] = field(default_factory=list)
    label_std: dict[str, float] = field(default_factory=dict)
    budget_curves: dict[str, list[tuple[str, int, float]]] = field(default_factory=dict)
    swd_pretrained: dict[str, dict[str, Any]] = field(default_factory=dict)
    swd_pairs: list[dict[str, Any]] = field(default_factory=list)
    swd_rmse_spearman: float = float("nan")
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class Protocol:
    """Runs the protocol of one modality, writing figures and CSVs into ``out_dir``."""

    def __init__(
        self,
        config: ReportConfig,
        pretrained: Path,
        data_dir: Path,
        out_dir: Path,
        runs_dir: Path,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.pretrained = pretrained
        self.data_dir = data_dir
        self.out_dir = out_dir
        self.runs_dir = runs_dir
        self.progress = progress
        state = torch.load(resolve_pretrained(pretrained), map_location="cpu", weights_only=False)
        self.modality: str = state["modality"]
        self.input_size = int(state["input_size"])
        del state
        self.cache: TileCache | None = None
        self.results: dict[str, RunResult] = {}
        # Pre-trained CLS embeddings of the test tiles and their regions: set by swd(), reused
        # by figures() for the "before fine-tuning" t-SNE.
        self.pretrained_embedding: tuple[np.ndarray, np.ndarray] | None = None

    def run(
        self, init: Init, regions: tuple[str, ...], budget_index: int, repeat: int = 0
    ) -> RunResult:
        """Fine-tune and evaluate one run (reused when its folder is complete)."""
        assert self.cache is not None
        budget = self.config.budgets[budget_index]
        seed = self.config.seed + repeat
        spec = make_spec(self.cache, self.config, init, regions, budget, seed)
        done = len(self.results) + 1
        print(f"[{self.modality} run {done}] {spec.name}: {spec.n_labels} labelled tiles")
        result = run_experiment(
            spec,
            self.pretrained,
            self.data_dir,
            self.cache,
            self.runs_dir,
            self.config,
            self.progress,
        )
        self.results[spec.name] = result
        return result

    def execute(self) -> ModalityResult:
        """Run everything and return the numbers; figures and CSVs are written on the way."""
        started = time.perf_counter()
        config = self.config
        self.cache = prepare_cache(
            self.data_dir,
            self.modality,
            self.input_size,
            config.regions,
            None,
            workers=config.workers,
            progress=self.progress,
        )
        result = ModalityResult(self.modality, self.input_size)
        first = config.budgets[0].name
        own: dict[str, RunResult] = {}  # the first seed's pre-trained runs: Table 3, SWD
        repeats: dict[tuple[str, str], list[float]] = {}  # (init, region) -> RMSE per seed
        for region in config.regions:
            for init in ("scratch", "pretrained"):
                for repeat in range(config.table2_seeds):
                    run = self.run(init, (region,), 0, repeat)
                    rmse = analysis.region_rmse(run.predictions, region)
                    repeats.setdefault((init, region), []).append(rmse)
                    if init == "pretrained" and repeat == 0:
                        own[region] = run
        combined = self.run("pretrained", tuple(config.pretrain_regions), 0)
        curves: dict[str, list[RunResult]] = {r: [own[r]] for r in config.budget_regions}
        for region in config.budget_regions:
            for index in range(1, len(config.budgets)):
                curves[region].append(self.run("pretrained", (region,), index))

        reference = combined.predictions
        result.label_std = {r: analysis.region_label_std(reference, r) for r in config.regions}
        result.budget_tiles = {b.name: {} for b in config.budgets}
        for run in self.results.values():
            where = run.spec.regions[0] if len(run.spec.regions) == 1 else COMBINED
            result.budget_tiles[run.spec.budget][where] = run.spec.n_labels
        for region in config.regions:
            scratch_rmse = repeats[("scratch", region)]
            pretrained_rmse = repeats[("pretrained", region)]
            result.table2.append(
                {
                    "region": region,
                    "labelled_tiles": own[region].spec.n_labels,
                    "test_tiles": int(np.sum(np.asarray(reference.regions) == region)),
                    "test_label_std": result.label_std[region],
                    "seeds": len(scratch_rmse),
                    "rmse_scratch": float(np.mean(scratch_rmse)),
                    "rmse_scratch_std": float(np.std(scratch_rmse)),
                    "rmse_pretrained": float(np.mean(pretrained_rmse)),
                    "rmse_pretrained_std": float(np.std(pretrained_rmse)),
                }
            )
        rows = {**own, f"{COMBINED} ({'+'.join(config.pretrain_regions)})": combined}
        result.table3_rows = list(rows)
        result.table3_columns = list(config.regions)
        result.table3 = [
            [analysis.region_rmse(run.predictions, c) for c in config.regions]
            for run in rows.values()
        ]
        result.budget_curves = {
            region: [
                (run.spec.budget, run.spec.n_labels, analysis.region_rmse(run.predictions, region))
                for run in runs
            ]
            for region, runs in curves.items()
        }
        self.write_tables(result, first)
        self.swd(result, own)
        self.figures(result, combined)
        result.seconds = time.perf_counter() - started
        return result

    def swd(self, result: ModalityResult, own: dict[str, RunResult]) -> None:
        """SWD between regions in the pre-trained space, and per fine-tuned model vs its RMSE."""
        assert self.cache is not None
        config = self.config
        rows = test_rows(self.cache, config.regions)
        embedded = embed_pretrained(self.pretrained, self.cache, rows)
        regions = np.asarray(self.cache.regions)[rows]
        before = {r: embedded[regions == r].astype(np.float64) for r in config.regions}
        self.pretrained_embedding = (embedded, regions)
        matrix = analysis.swd_matrix(
            before, config.regions, config.swd_seeds, config.swd_projections, config.workers
        )
        result.swd_pretrained = {
            f"{a}|{b}": {"mean": e.mean, "std": e.std}
            for (a, b), e in matrix.items()
            if config.regions.index(a) < config.regions.index(b)
        }
        for source, run in own.items():
            source_embedding = analysis.embeddings_of(run.predictions, source)
            for target in config.regions:
                if target == source:
                    continue
                estimate = analysis.sliced_wasserstein(
                    source_embedding,
                    analysis.embeddings_of(run.predictions, target),
                    config.swd_seeds,
                    config.swd_projections,
                    config.workers,
                )
                result.swd_pairs.append(
                    {
                        "finetune_region": source,
                        "inference_region": target,
                        "swd_mean": estimate.mean,
                        "swd_std": estimate.std,
                        "rmse": analysis.region_rmse(run.predictions, target),
                    }
                )
        result.swd_rmse_spearman = analysis.rank_correlation(
            [p["swd_mean"] for p in result.swd_pairs], [p["rmse"] for p in result.swd_pairs]
        )
        self.write_csv(
            f"swd_{self.modality}.csv",
            ["space", "region_a", "region_b", "swd_mean", "swd_std", "rmse_a_to_b"],
            [
                ["pre-trained", *key.split("|"), v["mean"], v["std"], ""]
                for key, v in result.swd_pretrained.items()
            ]
            + [
                [
                    f"fine-tuned on {p['finetune_region']}",
                    p["finetune_region"],
                    p["inference_region"],
                    p["swd_mean"],
                    p["swd_std"],
                    p["rmse"],
                ]
                for p in result.swd_pairs
            ],
        )

    def figures(self, result: ModalityResult, combined: RunResult) -> None:
        """t-SNE, SWD scatter, cross-region heat map, budget curves, attention maps."""
        assert self.cache is not None
        config, modality, out = self.config, self.modality, self.out_dir
        predictions = combined.predictions
        regions = np.asarray(predictions.regions)
        pick = analysis.subsample_by_region(
            predictions.regions, config.tsne_tiles_per_region, config.seed
        )
        assert self.pretrained_embedding is not None, "swd() computes them first"
        embedded_before, _ = self.pretrained_embedding
        error = np.abs(predictions.predicted_pct - predictions.vegetation_pct)
        unseen_error = np.where(regions == config.unseen_region, error, np.nan)
        files = result.files
        files["tsne"] = figures.plot_tsne(
            analysis.tsne_2d(embedded_before[pick], config.tsne_perplexity, config.seed),
            analysis.tsne_2d(predictions.embedding[pick], config.tsne_perplexity, config.seed),
            predictions.vegetation_pct[pick],
            regions[pick],
            unseen_error[pick],
            config.regions,
            config.unseen_region,
            modality,
            out / f"tsne_{modality}.png",
        ).name
        files["tsne_tiles"] = str(len(pick))
        files["swd_vs_rmse"] = figures.plot_swd_vs_rmse(
            [
                (p["finetune_region"], p["inference_region"], p["swd_mean"], p["rmse"])
                for p in result.swd_pairs
            ],
            result.swd_rmse_spearman,
            modality,
            out / f"swd_vs_rmse_{modality}.png",
        ).name
        files["cross_region"] = figures.plot_cross_region(
            np.asarray(result.table3),
            result.table3_rows,
            result.table3_columns,
            modality,
            out / f"table3_{modality}.png",
        ).name
        files["budget_curves"] = figures.plot_budget_curves(
            result.budget_curves, modality, out / f"fig6_budget_{modality}.png"
        ).name
        files["attention"] = self.attention(combined)

    def attention(self, combined: RunResult) -> str:
        """Attention maps of low, middle and high vegetation test tiles of the first region."""
        assert self.cache is not None
        config = self.config
        rows = test_rows(self.cache, [config.pretrain_regions[0]])
        labels = self.cache.vegetation_pct[rows]
        order = np.argsort(labels, kind="stable")
        picks = order[np.linspace(0, len(order) - 1, config.attention_tiles).round().astype(int)]
        chosen = rows[picks]
        run_dir = self.runs_dir / self.modality / combined.spec.name
        maps = attention_maps(run_dir, self.cache, chosen)
        channel = ATTENTION_CHANNEL[self.modality]
        index = bands.CHANNELS[self.modality].index(channel)
        images = load_rows_in_order(self.cache.tiles, chosen).numpy()[:, index]  # (n, S, S)
        captions = [
            f"{self.cache.identifiers[r]}: {self.cache.vegetation_pct[r]:.0f} %" for r in chosen
        ]
        return figures.plot_attention(
            images,
            maps,
            captions,
            channel,
            self.modality,
            self.out_dir / f"attention_{self.modality}.png",
        ).name

    def write_tables(self, result: ModalityResult, first: str) -> None:
        """Table 2, Table 3 and Figure 6 numbers as CSV."""
        self.write_csv(
            f"table2_{self.modality}.csv",
            list(result.table2[0]),
            [list(row.values()) for row in result.table2],
        )
        self.write_csv(
            f"table3_{self.modality}.csv",
            ["finetune_region", *result.table3_columns],
            [[name, *row] for name, row in zip(result.table3_rows, result.table3, strict=True)],
        )
        self.write_csv(
            f"fig6_budget_{self.modality}.csv",
            ["region", "budget", "labelled_tiles", "rmse"],
            [[r, *point] for r, points in result.budget_curves.items() for point in points],
        )

    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        """One CSV table in the report folder, floats with 4 decimals."""
        with open(self.out_dir / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows:
                writer.writerow([f"{v:.4f}" if isinstance(v, float) else v for v in row])
