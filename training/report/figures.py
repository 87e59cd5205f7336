"""PNG figures of the report (matplotlib, Agg canvas, no global pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REGION_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
DPI = 90  # keeps the committed PNGs small


def save(figure: Figure, path: Path) -> Path:
    """Render a figure to PNG."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def plot_label_histograms(labels: dict[str, np.ndarray], path: Path) -> Path:
    """Figure 6 (left) analogue: the distribution of tile-mean vegetation per region."""
    figure = Figure(figsize=(3.0 * len(labels), 2.6))
    bins = np.linspace(0.0, 100.0, 26)
    for i, (region, values) in enumerate(labels.items()):
        axes = figure.add_subplot(1, len(labels), i + 1)
        axes.hist(values, bins=bins, color=REGION_COLOURS[i % len(REGION_COLOURS)])
        axes.set_title(f"{region} (n={len(values)})", fontsize=9)
        axes.set_xlabel("vegetation_pct")
        if i == 0:
            axes.set_ylabel("tiles")
    return save(figure, path)


def plot_budget_curves(
    curves: dict[str, list[tuple[str, int, float]]], modality: str, path: Path
) -> Path:
    """Figure 6 (right) analogue: in-region test RMSE against labelled tiles, per region."""
    figure = Figure(figsize=(4.6, 3.2))
    axes = figure.add_subplot(1, 1, 1)
    for i, (region, points) in enumerate(curves.items()):
        counts = [count for _, count, _ in points]
        rmses = [rmse for _, _, rmse in points]
        axes.plot(counts, rmses, "o-", color=REGION_COLOURS[i % len(REGION_COLOURS)], label=region)
        for name, count, rmse in points:
            axes.annotate(
                name, (count, rmse), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    axes.set_xscale("log")
    axes.set_xlabel("labelled tiles (log)")
    axes.set_ylabel("test RMSE (points)")
    axes.set_title(f"{modality.upper()}: RMSE by label budget (synthetic)", fontsize=9)
    axes.legend(fontsize=8)
    return save(figure, path)


def plot_cross_region(
    matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], modality: str, path: Path
) -> Path:
    """Table 3 analogue as a heat map: fine-tuning region (rows) x inference region (columns)."""
    figure = Figure(figsize=(1.3 * len(columns) + 2.0, 0.55 * len(rows) + 1.6))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(matrix, cmap="viridis")
    for r in range(len(rows)):
        for c in range(len(columns)):
            value = matrix[r, c]
            colour = "white" if value < np.nanmean(matrix) else "black"
            axes.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=8, color=colour)
    axes.set_xticks(range(len(columns)), columns, fontsize=8)
    axes.set_yticks(range(len(rows)), rows, fontsize=8)
    axes.set_xlabel("inference region (test split)")
    axes.set_ylabel("fine-tuned on")
    axes.set_title(f"{modality.upper()}: test RMSE, points (synthetic)", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return save(figure, path)


def scatter_panel(
    figure: Figure,
    position: int,
    xy: np.ndarray,
    title: str,
    values: np.ndarray | None = None,
    regions: np.ndarray | None = None,
    region_order: Sequence[str] = (),
    colour_label: str = "",
) -> None:
    """One t-SNE panel, coloured by a value (colour bar) or by region (legend)."""
    axes = figure.add_subplot(2, 3, position)
    if regions is not None:
        for i, region in enumerate(region_order):
            mask = regions == region
            axes.scatter(
                *xy[mask].T,
                s=2,
                color=REGION_COLOURS[i % len(REGION_COLOURS)],
                label=region,
                rasterized=True,
            )
        axes.legend(fontsize=6, markerscale=4, loc="best")
    else:
        assert values is not None
        shown = np.isfinite(values)
        axes.scatter(*xy[~shown].T, s=1, color="0.85", rasterized=True)
        points = axes.scatter(*xy[shown].T, c=values[shown], s=2, cmap="viridis", rasterized=True)
        figure.colorbar(points, ax=axes, shrink=0.8, label=colour_label)
    axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])


def plot_tsne(
    before: np.ndarray,
    after: np.ndarray,
    vegetation_pct: np.ndarray,
    regions: np.ndarray,
    unseen_error: np.ndarray,
    region_order: Sequence[str],
    unseen_region: str,
    modality: str,
    path: Path,
) -> Path:
    """Figures 2 and 3 analogues: t-SNE before (top) and after (bottom) fine-tuning.

    Columns: log vegetation, region, and the fine-tuned model's absolute error on the unseen
    region's tiles (other tiles grey).
    """
    figure = Figure(figsize=(13.0, 7.6))
    log_veg = np.log1p(vegetation_pct)
    for row, (xy, when) in enumerate(((before, "pre-trained"), (after, "fine-tuned"))):
        base = 3 * row
        scatter_panel(
            figure,
            base + 1,
            xy,
            f"{when}: log(1 + vegetation_pct)",
            values=log_veg,
            colour_label="log(1+%)",
        )
        scatter_panel(
            figure, base + 2, xy, f"{when}: region", regions=regions, region_order=region_order
        )
        scatter_panel(
            figure,
            base + 3,
            xy,
            f"{when}: |error| on {unseen_region} (points)",
            values=unseen_error,
            colour_label="points",
        )
    figure.suptitle(f"{modality.upper()} CLS embeddings, t-SNE of test tiles (synthetic)")
    return save(figure, path)


def plot_swd_vs_rmse(
    pairs: list[tuple[str, str, float, float]], rho: float, modality: str, path: Path
) -> Path:
    """Cross-region RMSE against the SWD between fine-tuning and inference regions."""
    figure = Figure(figsize=(4.8, 3.6))
    axes = figure.add_subplot(1, 1, 1)
    for source, target, swd, rmse in pairs:
        axes.scatter(swd, rmse, s=14, color="tab:blue")
        axes.annotate(
            f"{source[:2]}>{target[:2]}",
            (swd, rmse),
            fontsize=6,
            xytext=(2, 2),
            textcoords="offset points",
        )
    axes.set_xlabel("SWD(fine-tuning region, inference region)")
    axes.set_ylabel("cross-region test RMSE (points)")
    axes.set_title(f"{modality.upper()}: Spearman rho = {rho:.2f} (synthetic)", fontsize=9)
    return save(figure, path)


def plot_attention(
    images: np.ndarray,
    maps: np.ndarray,
    captions: Sequence[str],
    channel_name: str,
    modality: str,
    path: Path,
) -> Path:
    """Figure 5 analogue: a channel of each tile next to each head's CLS -> patch attention."""
    tiles, heads = maps.shape[:2]
    figure = Figure(figsize=(1.9 * (heads + 1), 1.9 * tiles + 0.4))
    for t in range(tiles):
        axes = figure.add_subplot(tiles, heads + 1, t * (heads + 1) + 1)
        axes.imshow(images[t], cmap="gray")
        axes.set_title(f"{channel_name}\n{captions[t]}", fontsize=7)
        axes.axis("off")
        for h in range(heads):
            axes = figure.add_subplot(tiles, heads + 1, t * (heads + 1) + h + 2)
            axes.imshow(maps[t, h], cmap="inferno")
            axes.set_title(f"head {h}", fontsize=7)
            axes.axis("off")
    figure.suptitle(f"{modality.upper()}: last-block CLS attention (synthetic)", fontsize=9)
    return save(figure, path)
