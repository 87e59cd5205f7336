"""The written report: Markdown tables beside the paper's numbers, target checks, figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from training.report.config import ReportConfig
from training.report.protocol import ModalityResult

# "Exploring Generalisability of Self-Distillation with No Labels for SAR-Based Vegetation
# Prediction" (FDL Europe 2023): Table 2 (1 % labels) and Table 3 (in-region diagonal), RMSE %.
PAPER_TABLE2 = {
    "s1grd": {
        "scratch": {"europe": 5.50, "china": 3.39, "conus": 5.58, "south_america": 10.14},
        "pretrained": {"europe": 5.31, "china": 3.12, "conus": 5.30, "south_america": 11.73},
    },
    "gssic": {
        "scratch": {"europe": 6.33, "china": 7.29, "conus": 8.29, "south_america": 11.09},
        "pretrained": {"europe": 6.78, "china": 6.81, "conus": 7.54, "south_america": 10.77},
    },
}
PAPER_TABLE3_IN_REGION = {
    "s1grd": {"conus": 6.06, "europe": 5.53, "china": 3.74, "south_america": 12.72},
    "gssic": {"conus": 8.19, "europe": 7.22, "china": 8.77, "south_america": 11.87},
}
PAPER_CHINA_ON_CONUS = {"s1grd": 27.93, "gssic": 31.90}


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table cell ("-" when missing or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


PRETRAINED_BETTER = "pre-trained better"
SCRATCH_BETTER = "from scratch better"
TIE = "tie"
ONE_SEED = "one seed: no margin"


def combined_standard_error(row: dict[str, Any]) -> float | None:
    """Standard error of the difference of the two mean RMSEs of a Table 2 row (None: 1 seed).

    The row's ``*_std`` are population standard deviations over ``seeds`` runs, so each mean's
    standard error is ``std / sqrt(seeds - 1)``.
    """
    n = int(row["seeds"])
    if n < 2:
        return None
    return math.sqrt((row["rmse_scratch_std"] ** 2 + row["rmse_pretrained_std"] ** 2) / (n - 1))


def compare_rmse(row: dict[str, Any]) -> str:
    """A win needs the gap of the means to exceed their combined standard error; else a tie."""
    margin = combined_standard_error(row)
    if margin is None:
        return ONE_SEED
    gap = row["rmse_scratch"] - row["rmse_pretrained"]
    if gap > margin:
        return PRETRAINED_BETTER
    if -gap > margin:
        return SCRATCH_BETTER
    return TIE


def check_targets(result: ModalityResult, config: ReportConfig) -> dict[str, Any]:
    """The issue's targets on this modality, each with its figures and a pass flag."""
    verdicts = {r["region"]: compare_rmse(r) for r in result.table2}
    wins = [region for region, v in verdicts.items() if v == PRETRAINED_BETTER]
    half_std = {
        r["region"]: (r["rmse_pretrained"], 0.5 * r["test_label_std"]) for r in result.table2
    }
    regions = result.table3_columns
    single = np.asarray(result.table3[: len(regions)])  # rows: one region each, same order
    diagonal = np.diag(single)
    off = ~np.eye(len(regions), dtype=bool)
    own_best = [bool(np.all(single[:, c][off[:, c]] > diagonal[c])) for c in range(len(regions))]
    # Mean RMSE on each inference region over the models fine-tuned elsewhere: (a) only models
    # fine-tuned on pre-training regions, none of which saw the unseen region (the paper's
    # question: how do models do on a region never seen?); (b) every other single-region model,
    # including the one fine-tuned on the unseen region itself.
    seen = np.isin(regions, config.pretrain_regions)
    cross_mean = {
        regions[c]: float(single[:, c][off[:, c] & seen].mean()) for c in range(len(regions))
    }
    cross_mean_all = {
        regions[c]: float(single[:, c][off[:, c]].mean()) for c in range(len(regions))
    }
    worst = max(cross_mean, key=cross_mean.__getitem__)
    worst_all = max(cross_mean_all, key=cross_mean_all.__getitem__)
    return {
        "pretrained_beats_scratch": {
            "regions": wins,
            "verdicts": verdicts,
            "pass": len(wins) >= min(3, len(result.table2)),
        },
        "in_region_rmse_below_half_std": {
            "values": half_std,
            "pass": all(rmse <= limit for rmse, limit in half_std.values()),
        },
        "cross_region_above_in_region": {
            "mean_in_region": float(diagonal.mean()),
            "mean_cross_region": float(single[off].mean()),
            "own_model_best_per_region": dict(zip(regions, own_best, strict=True)),
            "pass": bool(single[off].mean() > diagonal.mean()) and all(own_best),
        },
        "unseen_region_worst": {
            "mean_cross_region_rmse_by_inference_region": cross_mean,
            "worst": worst,
            "pass": worst == config.unseen_region,
            "mean_over_all_other_region_models": cross_mean_all,
            "worst_over_all_other_region_models": worst_all,
            "in_region_rmse": dict(zip(regions, diagonal.tolist(), strict=True)),
            "worst_in_region": regions[int(np.argmax(diagonal))],
        },
    }


def verdict_cell(row: dict[str, Any]) -> str:
    """``gap / SE: verdict``, bold only for a win of pre-training by more than the margin."""
    verdict = compare_rmse(row)
    margin = combined_standard_error(row)
    gap = row["rmse_scratch"] - row["rmse_pretrained"]
    text = f"{fmt(gap)} / {fmt(margin)}: {verdict}" if margin is not None else verdict
    return f"**{text}**" if verdict == PRETRAINED_BETTER else text


def modality_section(result: ModalityResult, config: ReportConfig) -> list[str]:
    """The report section of one modality."""
    m = result.modality
    paper2, paper3 = PAPER_TABLE2[m], PAPER_TABLE3_IN_REGION[m]
    first = config.budgets[0].name
    lines = [f"## {m.upper()} ({result.input_size} px model input)", ""]
    lines += [
        f"### Table 2 analogue: from scratch vs pre-trained, {first} labels",
        "",
        f"RMSE in points on each region's test split: mean +/- standard deviation over "
        f"{result.table2[0]['seeds']} seeds (each seed draws its own labelled tiles and "
        "initialises the decoder, and the backbone from scratch, anew).",
        "",
        *table(
            [
                "region",
                "labelled tiles",
                "test tiles",
                "test label std",
                "scratch RMSE",
                "pre-trained RMSE",
                "gap / combined SE",
                "paper scratch",
                "paper pre-trained",
            ],
            [
                [
                    r["region"],
                    r["labelled_tiles"],
                    r["test_tiles"],
                    fmt(r["test_label_std"]),
                    f"{fmt(r['rmse_scratch'])} +/- {fmt(r['rmse_scratch_std'])}",
                    f"{fmt(r['rmse_pretrained'])} +/- {fmt(r['rmse_pretrained_std'])}",
                    verdict_cell(r),
                    fmt(paper2["scratch"].get(r["region"])),
                    fmt(paper2["pretrained"].get(r["region"])),
                ]
                for r in result.table2
            ],
        ),
        "",
        f"### Table 3 analogue: cross-region RMSE, pre-trained, {first} labels, first seed",
        "",
        "Rows: the region fine-tuned on; columns: the region inferred on (its test split).",
        "",
        *table(
            ["fine-tuned on", *result.table3_columns],
            [
                [name, *[fmt(v) for v in row]]
                for name, row in zip(result.table3_rows, result.table3, strict=True)
            ],
        ),
        "",
        "Paper, in-region diagonal: "
        + ", ".join(f"{r} {v:.2f}" for r, v in paper3.items())
        + f"; fine-tuned on China, inferred on Conus: {PAPER_CHINA_ON_CONUS[m]:.2f}.",
        "",
        f"![cross-region RMSE]({result.files['cross_region']})",
        "",
        "### Figure 6 analogue: RMSE by label budget",
        "",
        *table(
            ["region", "budget", "labelled tiles", "test RMSE"],
            [
                [r, name, n, fmt(v)]
                for r, points in result.budget_curves.items()
                for name, n, v in points
            ],
        ),
        "",
        f"![RMSE by budget]({result.files['budget_curves']})",
        "",
        "### Figures 2 and 3 analogues: t-SNE of CLS embeddings",
        "",
        f"{result.files['tsne_tiles']} test tiles (at most {config.tsne_tiles_per_region} per "
        "region). Top: the pre-trained backbone; bottom: the model fine-tuned on "
        f"{first} of {' + '.join(config.pretrain_regions)}. Right: its absolute error on "
        f"{config.unseen_region} tiles, never seen in pre-training or fine-tuning.",
        "",
        f"![t-SNE]({result.files['tsne']})",
        "",
        "### Sliced Wasserstein distance between region embeddings",
        "",
        f"POT `ot.sliced_wasserstein_distance`, {config.swd_seeds} seeds x "
        f"{config.swd_projections:,} projections: mean +/- standard deviation over seeds.",
        "",
        "In the pre-trained embedding space (test tiles):",
        "",
        *table(
            ["regions", "SWD"],
            [
                [k.replace("|", " - "), f"{fmt(v['mean'], 3)} +/- {fmt(v['std'], 3)}"]
                for k, v in result.swd_pretrained.items()
            ],
        ),
        "",
        "In each fine-tuned model's space, against the cross-region RMSE of that model:",
        "",
        *table(
            ["fine-tuned on", "inferred on", "SWD", "RMSE"],
            [
                [
                    p["finetune_region"],
                    p["inference_region"],
                    f"{fmt(p['swd_mean'], 3)} +/- {fmt(p['swd_std'], 3)}",
                    fmt(p["rmse"]),
                ]
                for p in result.swd_pairs
            ],
        ),
        "",
        f"Spearman rank correlation of SWD with RMSE over these {len(result.swd_pairs)} region "
        f"pairs: **{fmt(result.swd_rmse_spearman)}**.",
        "",
        f"![SWD vs RMSE]({result.files['swd_vs_rmse']})",
        "",
        "### Figure 5 analogue: attention maps",
        "",
        f"![attention]({result.files['attention']})",
        "",
    ]
    return lines


def targets_section(checks: dict[str, dict[str, Any]]) -> list[str]:
    """Pass/fail lines for the issue's targets, per modality."""
    lines = ["## Targets on this data", ""]
    for modality, check in checks.items():
        tick = {True: "met", False: "**not met**"}
        worst = check["unseen_region_worst"]
        lines += [
            f"- {modality.upper()}: pre-trained beats from scratch by more than the combined "
            f"standard error in {len(check['pretrained_beats_scratch']['regions'])} regions "
            f"({', '.join(check['pretrained_beats_scratch']['regions']) or 'none'}; ties count "
            f"as no win): {tick[check['pretrained_beats_scratch']['pass']]} (target >= 3 of 4).",
            f"- {modality.upper()}: in-region RMSE <= half the test-label std: "
            + ", ".join(
                f"{r} {fmt(a)} vs {fmt(b)}"
                for r, (a, b) in check["in_region_rmse_below_half_std"]["values"].items()
            )
            + f": {tick[check['in_region_rmse_below_half_std']['pass']]}.",
            f"- {modality.upper()}: cross-region RMSE "
            f"{fmt(check['cross_region_above_in_region']['mean_cross_region'])} vs in-region "
            f"{fmt(check['cross_region_above_in_region']['mean_in_region'])} on average; each "
            "region's own model best on it: "
            + ", ".join(
                f"{r} {'yes' if ok else 'no'}"
                for r, ok in check["cross_region_above_in_region"][
                    "own_model_best_per_region"
                ].items()
            )
            + f": {tick[check['cross_region_above_in_region']['pass']]}.",
            f"- {modality.upper()}: mean RMSE on each region of the models fine-tuned on the "
            "other pre-training regions (none saw the unseen region): "
            + ", ".join(
                f"{r} {fmt(v)}"
                for r, v in worst["mean_cross_region_rmse_by_inference_region"].items()
            )
            + f"; worst: {worst['worst']}: {tick[worst['pass']]}. Averaged over every other "
            "single-region model instead (the one fine-tuned on the unseen region included): "
            + ", ".join(
                f"{r} {fmt(v)}" for r, v in worst["mean_over_all_other_region_models"].items()
            )
            + f"; worst: {worst['worst_over_all_other_region_models']}. Worst in-region RMSE: "
            f"{worst['worst_in_region']}.",
        ]
    return [*lines, ""]


def write_report(
    path: Path,
    results: list[ModalityResult],
    checks: dict[str, dict[str, Any]],
    config: ReportConfig,
    header: dict[str, str],
    synthetic: bool,
) -> Path:
    """Write ``report.md``."""
    budgets = ", ".join(
        f"{b.name} = {b.fraction * 100:g} % of each region's train split, at least "
        f"{config.min_labels} tiles per region, at most {b.max_epochs} epochs"
        + (f" (patience {b.patience})" if b.patience is not None else "")
        for b in config.budgets
    )
    lines = ["# sarveg experiment report", ""]
    if synthetic:
        lines += [
            "> **Synthetic data.** Every number and figure below comes from the simulated "
            "benchmark written by `sarveg simulate`, not from real Sentinel-1 or MODIS data. "
            "It shows that the protocol runs and how the model behaves on the simulator; "
            "it says nothing about accuracy on real tiles. The paper's published numbers "
            "(real data) are printed beside ours for orientation, not as a comparison of "
            "like with like.",
            "",
        ]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [f"- label budgets: {budgets}", ""]
    lines += targets_section(checks)
    for result in results:
        lines += modality_section(result, config)
    lines += ["## Label distributions", "", "![labels](fig6_labels.png)", ""]
    path.write_text("\n".join(lines))
    return path
