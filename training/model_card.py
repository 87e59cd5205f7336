"""The Markdown model card written beside every exported bundle (``MODEL_CARD.md``).

Everything in it is read from the bundle manifest, so the card can never disagree with the
bundle it describes.
"""

from __future__ import annotations

from typing import Any

from sarveg.bundle import BundleManifest, OODMeasured

CARD_FILE = "MODEL_CARD.md"
# How ``sarveg export --ood-data`` names its evaluation tiles in ``ood.measured``.
INDEPENDENT_FOLDER = "independent folder"
# The OOD targets of the project (issue 5), printed next to the measured figures.
FALSE_FLAG_TOLERANCE = 0.02
COVERAGE_TOLERANCE = 0.03
AUROC_TARGET = 0.9
SPEARMAN_TARGET = 0.3


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "**misses target**"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _metrics_table(manifest: BundleManifest) -> list[str]:
    lines = [
        "| region | test tiles | RMSE (points) | MAE | bias | label sd | RMSE / sd |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    fine_tuned = set(manifest.provenance.fine_tuning_regions)
    pretrained = set(manifest.provenance.pretraining_regions)
    for region, m in manifest.metrics.items():
        role = (
            " (fine-tuned)"
            if region in fine_tuned
            else (" (pre-training only)" if region in pretrained else " (never seen)")
        )
        ratio = m.rmse / m.label_std if m.label_std > 0 else float("nan")
        lines.append(
            f"| {region}{role} | {m.n_tiles} | {m.rmse:.2f} | {m.mae:.2f} | {m.bias:+.2f} | "
            f"{m.label_std:.2f} | {ratio:.2f} |"
        )
    return lines


def _independent(measured: OODMeasured | None) -> bool:
    """Whether the OOD block was measured on an independent folder (``export --ood-data``)."""
    return (
        measured is not None
        and measured.evaluation_tiles is not None
        and INDEPENDENT_FOLDER in measured.evaluation_tiles
    )


def _ood_lines(manifest: BundleManifest) -> list[str]:
    ood = manifest.ood
    lines = [
        f"Method: {ood.method}",
        "",
    ]
    measured = ood.measured
    if measured is None:
        return [*lines, "No OOD figures were measured for this bundle."]
    coverage_target = 1.0 - ood.interval_alpha
    independent = _independent(measured)
    inside = "independent" if independent else "held-out"
    outside = "independent" if independent else "val"
    if measured.evaluation_tiles is not None:
        lines += [f"Evaluation tiles: {measured.evaluation_tiles}.", ""]
    lines += [
        "| figure | measured | target | |",
        "|---|---:|---|---|",
        f"| false-flag rate on {measured.n_in_distribution} {inside} "
        f"{ood.fine_tuning_region} tiles | {measured.false_flag_rate:.3f} | "
        f"{ood.alpha:.2f} +/- {FALSE_FLAG_TOLERANCE} | "
        f"{_verdict(abs(measured.false_flag_rate - ood.alpha) <= FALSE_FLAG_TOLERANCE)} |",
        f"| {coverage_target:.0%} interval coverage, same tiles | "
        f"{measured.interval_coverage:.3f} | {coverage_target:.2f} +/- {COVERAGE_TOLERANCE} | "
        f"{_verdict(abs(measured.interval_coverage - coverage_target) <= COVERAGE_TOLERANCE)} |",
        f"| mean interval width (points) | {measured.interval_width_mean:.1f} | | |",
    ]
    if measured.unseen_region is not None:
        auroc_ok = measured.auroc is not None and measured.auroc >= AUROC_TARGET
        rho = measured.spearman_abs_error
        lines += [
            f"| AUROC, {measured.n_unseen} {outside} {measured.unseen_region} tiles vs "
            "in-distribution "
            f"| {_fmt(measured.auroc)} | >= {AUROC_TARGET} | {_verdict(auroc_ok)} |",
            f"| Spearman(score, absolute error) on {measured.unseen_region} | {_fmt(rho)} | "
            f">= {SPEARMAN_TARGET} | {_verdict(rho is not None and rho >= SPEARMAN_TARGET)} |",
        ]
        if not auroc_ok:
            lines += [
                "",
                f"Why the AUROC misses: the score is a distance to the "
                f"{ood.fine_tuning_region} reference embeddings, so {measured.unseen_region} "
                f"tiles whose embeddings fall among {ood.fine_tuning_region} tiles cannot be told "
                "apart from them, however wrong their prediction. The Spearman correlation says "
                "that the tiles the score does place far away are the ones with large errors: "
                "treat `unreliable` as a warning that is raised for some, not all, unseen tiles.",
            ]
    return lines


def routing_sentence(routing: dict[str, Any] | None) -> str:
    """The model card's sentence on routing old-region tiles to the parent ('' without a record)."""
    if not routing:
        return ""
    decision = routing.get("decision")
    measured = (
        ""
        if decision is None
        else f" (route_old_regions=auto: on {decision['tiles']} held-out old-region tiles the "
        f"fine-tuned model errs {decision['rmse_adapted']:.2f} points RMSE against the parent's "
        f"{decision['rmse_parent']:.2f}, {100 * decision['worse_by']:+.1f} %; routing above "
        f"{100 * decision['threshold']:+.0f} %)"
    )
    if not routing.get("routed", True):
        return f" Not routed{measured}: the graph is the fine-tuned model alone."
    gate = routing["mean_gate_on_fitted_tiles"]
    return (
        f" Routed{measured}: the graph holds the parent's model too, and a gate on the embedding "
        f"(mean {gate['old']:.2f} on the old region's fitted tiles, {gate['new']:.2f} on the new "
        "region's reference tiles) gives old-region tiles its estimate; the weights file holds "
        "the fine-tuned model alone."
    )


def _adaptation_lines(manifest: BundleManifest) -> list[str]:
    """Before / after figures of a bundle written by ``sarveg adapt`` (nothing otherwise)."""
    record = manifest.provenance.config.get("adapt")
    if not record:
        return []
    tiles = record["tiles"]
    lines = [
        "## Adaptation (sarveg adapt)",
        "",
        f"Adapted from `{record['parent']['name']}` to {record['new_region']} with "
        f"{record['labels']['n']} labels ({tiles['new_train']} fine-tuned on, "
        f"{tiles['new_early_stopping']} early stopping, {tiles['new_calibration_labelled']} "
        + (
            "interval calibration: held out of a first fine-tune, whose errors on them calibrate "
            "the interval and give the region's metrics; the shipped model was refitted on every "
            "label"
            if tiles.get("refit_all_labels")
            else "interval calibration"
        )
        + f"), {tiles['old_rehearsal']} old-region tiles rehearsed. "
        f"In distribution: {', '.join(manifest.ood.in_distribution)}; the {record['new_region']} "
        f"reference and OOD calibration are {tiles['new_reference_unlabelled']} and "
        f"{tiles['new_calibration_unlabelled']} of its unlabelled tiles."
        + (
            ""
            if record["old_data"]
            else " Without the old training data: the old region was not re-embedded, not "
            "rehearsed and its forgetting is not measured."
        )
        + routing_sentence(record.get("routing")),
        "",
        "| region | tiles | n | RMSE before | RMSE after | unreliable before | unreliable after "
        "| interval coverage after |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["evaluation"]:
        lines.append(
            f"| {row['region']} | {row['tiles']} | {row['n_tiles']} | "
            f"{_fmt(row['rmse_before'], 2)} | {_fmt(row['rmse_after'], 2)} | "
            f"{row['unreliable_before']:.3f} | {row['unreliable_after']:.3f} | "
            f"{_fmt(row.get('coverage_after'))} |"
        )
    return [
        *lines,
        "",
        "Unreliable: share of tiles flagged (p < alpha); on in-distribution tiles that is the "
        f"false-flag rate, target {manifest.ood.alpha} +/- {FALSE_FLAG_TOLERANCE}"
        + (" (synthetic data)." if manifest.provenance.synthetic else "."),
        "",
    ]


NEAREST_ACCURACY_TARGET = 0.95


def _region_lines(manifest: BundleManifest) -> list[str]:
    """The region membership figures: confusion matrix and coverage of plausible regions."""
    ood = manifest.ood
    measured = ood.region_membership
    if measured is None:
        return ["No region membership figures were measured for this bundle."]
    regions = measured.regions
    lines = [
        f"Evaluation tiles: {measured.evaluation_tiles}."
        + (" Synthetic (simulated tiles)." if measured.synthetic else ""),
        "",
        "`nearest_region` (columns) of tiles of each region (rows):",
        "",
        "| true \\ nearest | " + " | ".join(regions) + " | accuracy | target |",
        "|---|" + "---:|" * (len(regions) + 2),
    ]
    for name, row in zip(regions, measured.confusion, strict=True):
        if name not in measured.n_tiles:
            continue
        accuracy = measured.nearest_accuracy[name]
        lines.append(
            f"| {name} | " + " | ".join(str(v) for v in row) + f" | {accuracy:.3f} | "
            f">= {NEAREST_ACCURACY_TARGET} {_verdict(accuracy >= NEAREST_ACCURACY_TARGET)} |"
        )
    lines += [
        "",
        f"| region | tiles | plausible_regions covers it (target >= {1 - ood.alpha:.2f}) | "
        "mean set size | per-tile SWD argmin accuracy (old rule) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in regions:
        if name not in measured.n_tiles:
            continue
        covered = measured.plausible_coverage[name]
        lines.append(
            f"| {name} | {measured.n_tiles[name]} | {covered:.3f} "
            f"{_verdict(covered >= 1 - ood.alpha)} | {measured.mean_plausible_size[name]:.2f} | "
            f"{measured.swd_nearest_accuracy[name]:.3f} |"
        )
    return lines


def _variant_lines(export: dict[str, Any]) -> list[str]:
    lines = [
        f"Shipped graph: **{export['variant']}**: {export['reason']}.",
        "",
        f"Checked on {export['drift_tiles']} test tiles of all regions (rule: vegetation drift "
        "<= 0.3 points RMSE from fp32, every embedding cosine >= 0.99). Throughput: ONNX "
        "Runtime, 2 threads, measured during export on a shared CPU (indicative only).",
        "",
        "| variant | size (MB) | drift RMSE (points) | min cosine | tiles/s batch 1 | "
        "tiles/s batch 16 | passes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in export["variants"]:
        lines.append(
            f"| {r['name']} | {r['size_mb']:.1f} | {r['drift_rmse_pct']:.4f} | "
            f"{r['min_cosine']:.5f} | {r['tiles_per_s_batch1']:.0f} | "
            f"{r['tiles_per_s_batch16']:.0f} | {'yes' if r['passes'] else 'no'} |"
        )
    return lines


def render_model_card(manifest: BundleManifest) -> str:
    """Return the Markdown model card of a bundle manifest."""
    p = manifest.provenance
    config = p.config
    finetune = config.get("finetune", {})
    tiles = config.get("tiles", {})
    pretrain = config.get("pretrain") or {}
    arch = manifest.architecture
    synthetic_banner = (
        "> **Synthetic.** This model was trained and evaluated only on the simulated benchmark "
        "written by `sarveg simulate`, not on real Sentinel-1 data. Its figures show that the "
        "pipeline works; they say nothing about accuracy on real SAR."
        if p.synthetic
        else "> Trained on the data described below."
    )
    pretraining = (
        f"DINO self-supervised pre-training on the train split of "
        f"{', '.join(p.pretraining_regions)} "
        f"({pretrain.get('optim', {}).get('epochs', '?')} epochs)"
        if p.pretraining_regions
        else "none (trained from scratch)"
    )
    backbone_mode = "frozen" if finetune.get("freeze_backbone") else "trained"
    reference = tiles.get("reference", {})
    region_ft = manifest.ood.fine_tuning_region
    if tiles.get("reference_from"):
        reference_line = (
            f"- Reference embeddings: tiles per region {reference}, drawn at random from every "
            f"split; the {region_ft} ones leave out every tile the fine-tune fitted, stopped or "
            "calibrated on"
            + (
                " (an independent folder measures the OOD block)."
                if _independent(manifest.ood.measured)
                else ", and half of the rest, which measures the OOD block."
            )
        )
    else:
        split_note = (
            "the whole test split of each; an independent folder measures the OOD block"
            if _independent(manifest.ood.measured)
            else f"the {region_ft} test split is halved: one half is the reference, the other "
            "measures the OOD block"
        )
        reference_line = (
            f"- Reference embeddings: test tiles per region {reference} ({split_note})."
        )
    lines = [
        f"# Model card: {manifest.name}",
        "",
        synthetic_banner,
        "",
        "## What it does",
        "",
        f"Predicts the mean tree-cover percentage (MODIS VCF style, 0..100) of a "
        f"{manifest.modality.upper()} tile and returns its {manifest.embedding_size}-d CLS "
        f"embedding, the last block's CLS-to-patch attention, and an OOD block (distance to "
        f"each reference region, conformal p-value, `unreliable` flag, "
        f"{1 - manifest.ood.interval_alpha:.0%} prediction interval).",
        "",
        f"- Input `tiles`: float32 `(batch, {arch.in_chans}, {manifest.input_size}, "
        f"{manifest.input_size})` in {manifest.units}, channels "
        f"`{', '.join(manifest.band_names)}`; NaN = nodata. Tiles of any size are first "
        f'resampled with the rule "{manifest.resampling}"; scenes are cut into windows of '
        f"{manifest.source_tile_px} px (the native tile side)."
        + (
            f" Training chips cover {manifest.footprint_m / 1000:.2g} km a side at "
            f"{manifest.pixel_size_m:.3g} m pixels; tiles more than 2x off that footprint get a "
            "warning in the answer's `input` block."
            if manifest.footprint_m is not None and manifest.pixel_size_m is not None
            else ""
        ),
        f"- Backbone: `{arch.name}` with patch {arch.patch_size}, width {arch.embed_dim}, "
        f"depth {arch.depth}, {arch.num_heads} heads; linear decoder on the "
        f"{'CLS token' if arch.decoder_input == 'cls' else 'CLS-to-patch attention maps'}.",
        "",
        "## Training data and procedure",
        "",
        f"- Data: {p.data}.",
        f"- Pre-training: {pretraining}.",
        f"- Fine-tuning: {tiles.get('labelled', '?')} labelled train tiles of "
        f"{', '.join(p.fine_tuning_regions)} ({p.label_fraction:.1%} of its train split), "
        f"backbone {backbone_mode}, MSE on the vegetation fraction, flips only, early stopping "
        f"on {tiles.get('early_stopping', '?')} val tiles.",
        f"- OOD calibration: {tiles.get('calibration', '?')} further tiles of {region_ft} that "
        "the fine-tuning run held out for it (used to fit nothing).",
        reference_line,
        f"- Code: {p.code_version}; created {p.created.isoformat(timespec='seconds')}.",
        "",
        "## Test metrics (whole test split of each region; RMSE in percentage points)",
        "",
        *_metrics_table(manifest),
        "",
        *_adaptation_lines(manifest),
        "## Out-of-distribution block",
        "",
        *_ood_lines(manifest),
        "",
        "## Region membership",
        "",
        *_region_lines(manifest),
        "",
        "## ONNX graph",
        "",
        *_variant_lines(config.get("export", {"variant": "?", "reason": "?", "variants": []})),
        "",
        "## Limits",
        "",
        "- Synthetic training and test data (see the banner); real Sentinel-1 will differ in "
        "speckle, terrain, seasonality and label noise, so re-train and re-calibrate before use."
        if p.synthetic
        else "- Evaluated only on the regions listed above.",
        "- Predictions outside the fine-tuning region are much less accurate (see the table); "
        "the `unreliable` flag and the region distances exist to say so, but a p-value above "
        "alpha does not prove a prediction right.",
        f"- The false-flag bound (alpha = {manifest.ood.alpha}) and the interval coverage are "
        f"marginal guarantees for tiles drawn like the {manifest.ood.fine_tuning_region} "
        "calibration tiles; tiles of one scene are spatially correlated, so scene-level rates "
        "can differ. Intervals carry no guarantee for out-of-distribution tiles.",
        "- Mean tree cover of a whole tile only: no per-pixel map, no other land-cover classes.",
        "",
    ]
    return "\n".join(lines)
