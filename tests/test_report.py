"""``sarveg report`` on a tiny simulated folder: every table and figure, finite numbers, reuse."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import ot
import pytest
import yaml

from training.config import ConfigError
from training.report import analysis
from training.report.cli import main as report_main
from training.report.config import load_report_config

from .training_runs import pretrain_tiny, simulate_tiny

MODALITIES = ("s1grd", "gssic")
REGIONS = ["europe", "china", "conus", "south_america"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return simulate_tiny(tmp_path_factory.mktemp("report-data"))


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-pretrain")
    return {m: pretrain_tiny(data, root / m, modality=m) for m in MODALITIES}


@pytest.fixture(scope="module")
def report(data, pretrained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    argv = ["--data", str(data), "--out", str(out), "--config", "report-tiny", "--no-progress"]
    for run in pretrained.values():
        argv += ["--pretrained", str(run)]
    assert report_main(argv) == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_writes_every_table_and_figure(report):
    for modality in MODALITIES:
        for name in ("table2", "table3", "fig6_budget", "swd"):
            assert (report / f"{name}_{modality}.csv").stat().st_size > 0
        for name in ("tsne", "swd_vs_rmse", "table3", "fig6_budget", "attention"):
            png = report / f"{name}_{modality}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (report / "fig6_labels.png").is_file()
    text = (report / "report.md").read_text()
    assert "Synthetic data" in text
    for figure in ("tsne_s1grd.png", "attention_gssic.png", "fig6_labels.png"):
        assert f"]({figure})" in text
    # The paper's published numbers stand beside ours.
    assert "5.31" in text and "10.77" in text


def test_report_tables_hold_finite_numbers_for_every_region(report):
    for modality in MODALITIES:
        table2 = read_csv(report / f"table2_{modality}.csv")
        assert [row["region"] for row in table2] == REGIONS
        for row in table2:
            assert math.isfinite(float(row["rmse_scratch"]))
            assert math.isfinite(float(row["rmse_pretrained"]))
            assert int(row["labelled_tiles"]) >= 4  # the tiny preset's floor
        table3 = read_csv(report / f"table3_{modality}.csv")
        assert len(table3) == len(REGIONS) + 1  # one row per region + the combined model
        assert table3[-1]["finetune_region"].startswith("combined")
        for row in table3:
            assert all(math.isfinite(float(row[r])) for r in REGIONS)
        swd = read_csv(report / f"swd_{modality}.csv")
        pretrained_pairs = [r for r in swd if r["space"] == "pre-trained"]
        assert len(pretrained_pairs) == 6  # unordered pairs of four regions
        assert all(float(r["swd_mean"]) > 0 for r in swd)


def test_report_json_has_targets_and_budget_curves(report):
    record = json.loads((report / "report.json").read_text())
    assert {r["modality"] for r in record["results"]} == set(MODALITIES)
    for result in record["results"]:
        curve = result["budget_curves"]["conus"]
        assert [point[0] for point in curve] == ["1 %", "10 %", "100 %"]
        counts = [point[1] for point in curve]
        assert counts == sorted(counts) and counts[0] < counts[-1]
    for checks in record["targets"].values():
        assert set(checks) == {
            "pretrained_beats_scratch",
            "in_region_rmse_below_half_std",
            "cross_region_above_in_region",
            "unseen_region_worst",
        }
        assert all(isinstance(c["pass"], bool) for c in checks.values())


def test_budget_patience_reaches_its_runs_only(report):
    runs = report / "runs" / "s1grd"
    for name, patience in (("pretrained-conus-1pct-seed0", 2), ("pretrained-conus-10pct-seed0", 1)):
        resolved = yaml.safe_load((runs / name / "config.yaml").read_text())
        assert resolved["optim"]["patience"] == patience
    record = json.loads((runs / "pretrained-conus-10pct-seed0" / "report_run.json").read_text())
    assert "patience" not in record["spec"]  # left to the preset, so not recorded


def test_rerun_reuses_finished_runs(data, pretrained, report, tmp_path):
    runs = sorted((report / "runs" / "s1grd").iterdir())
    stamps = {p.name: (p / "checkpoint.pt").stat().st_mtime_ns for p in runs}
    argv = [
        "--data",
        str(data),
        "--out",
        str(tmp_path / "rerun"),  # the shared report stays as the fixture wrote it
        "--runs",
        str(report / "runs"),
        "--config",
        "report-tiny",
        "--no-progress",
        "--pretrained",
        str(pretrained["s1grd"]),
        "modalities=[s1grd]",
    ]
    assert report_main(argv) == 0
    after = {p.name: (p / "checkpoint.pt").stat().st_mtime_ns for p in runs}
    assert after == stamps


def test_swd_helper_is_pots_estimate_over_seeds():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 5)), rng.normal(1.0, 1.0, size=(50, 5))
    estimate = analysis.sliced_wasserstein(a, b, seeds=3, projections=200)
    expected = [ot.sliced_wasserstein_distance(a, b, n_projections=200, seed=s) for s in range(3)]
    assert estimate.values == pytest.approx(expected)
    assert estimate.mean == pytest.approx(np.mean(expected))


def test_report_config_rejects_unknown_keys_and_seen_unseen_region():
    with pytest.raises(ConfigError, match="colour"):
        load_report_config("report-tiny", ["colour=red"])
    with pytest.raises(ConfigError, match="must not be a pre-training region"):
        load_report_config("report-tiny", ["unseen_region=conus"])


def test_cli_names_a_missing_pretraining_run(data, tmp_path, capsys):
    code = report_main(
        ["--data", str(data), "--out", str(tmp_path), "--pretrained", str(tmp_path / "nope")]
    )
    assert code == 2
    assert "expected a pre-training checkpoint" in capsys.readouterr().err


def test_render_only_rewrites_the_markdown_from_the_json(data, report):
    markdown = report / "report.md"
    markdown.write_text("stale")
    argv = ["--data", str(data), "--out", str(report), "--config", "report-tiny", "--render-only"]
    assert report_main(argv) == 0
    text = markdown.read_text()
    assert text.startswith("# sarveg experiment report")
    assert "## Targets on this data" in text and "### Table 2 analogue" in text


def test_render_only_names_a_missing_report(data, tmp_path, capsys):
    argv = ["--data", str(data), "--out", str(tmp_path), "--render-only"]
    assert report_main(argv) == 2
    assert "report.json" in capsys.readouterr().err


def test_a_win_needs_a_margin():
    from training.report.markdown import compare_rmse, verdict_cell

    # The case: 4.44 +/- 0.18 vs 4.51 +/- 0.10 over 3 seeds is a tie, not a win.
    row = {
        "seeds": 3,
        "rmse_scratch": 4.51,
        "rmse_scratch_std": 0.10,
        "rmse_pretrained": 4.44,
        "rmse_pretrained_std": 0.18,
    }
    assert compare_rmse(row) == "tie" and "**" not in verdict_cell(row)
    assert compare_rmse(row | {"rmse_pretrained": 4.20}) == "pre-trained better"
    assert verdict_cell(row | {"rmse_pretrained": 4.20}).startswith("**")
    assert compare_rmse(row | {"rmse_pretrained": 4.90}) == "from scratch better"
    assert compare_rmse(row | {"seeds": 1}) == "one seed: no margin"


def split_report(report: Path, modality: str, out: Path) -> Path:
    """A one-modality report folder cut from the two-modality one (as if run on its own)."""
    out.mkdir()
    record = json.loads((report / "report.json").read_text())
    record["results"] = [r for r in record["results"] if r["modality"] == modality]
    record["pretrained"] = {modality: record["pretrained"][modality]}
    (out / "report.json").write_text(json.dumps(record))
    for file in [*report.glob(f"*_{modality}.*"), report / "fig6_labels.png"]:
        (out / file.name).write_bytes(file.read_bytes())
    return out


def test_merge_joins_one_modality_reports_into_one(data, report, tmp_path):
    parts = [split_report(report, m, tmp_path / m) for m in MODALITIES]
    merged = tmp_path / "merged"
    argv = ["--data", str(data), "--out", str(merged), "--config", "report-tiny"]
    assert report_main([*argv, "--merge", str(parts[0]), "--merge", str(parts[1])]) == 0
    record = json.loads((merged / "report.json").read_text())
    assert [r["modality"] for r in record["results"]] == list(MODALITIES)
    assert sorted(record["targets"]) == sorted(MODALITIES)
    assert yaml.safe_load((merged / "config.yaml").read_text())["modalities"] == list(MODALITIES)
    for modality in MODALITIES:
        assert (merged / f"table2_{modality}.csv").read_bytes() == (
            report / f"table2_{modality}.csv"
        ).read_bytes()
        assert f"tsne_{modality}.png" in (merged / "report.md").read_text()
    assert (merged / "fig6_labels.png").is_file()


def test_merge_refuses_a_modality_twice(data, report, tmp_path, capsys):
    argv = ["--data", str(data), "--out", str(tmp_path / "merged"), "--config", "report-tiny"]
    assert report_main([*argv, "--merge", str(report), "--merge", str(report)]) == 2
    assert "expected each modality in one source report" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_main([*argv, "--merge", str(report), "--render-only"])
