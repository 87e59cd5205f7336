"""``make models``: the independent OOD evaluation folder it prepares for the export."""

from __future__ import annotations

import argparse
import json

from sarveg.dataset import find_partitions, region_of
from sarveg.simulate.layout import simulate_dataset
from training.models_pipeline import prepare_ood_data


def pipeline_args(data, **changes) -> argparse.Namespace:
    values = dict(
        data=data,
        ood_data=None,
        ood_tiles=6,
        region="conus",
        size=32,
        workers=1,
        no_progress=True,
        single_date_share=0.25,
    )
    return argparse.Namespace(**(values | changes))


def test_simulated_benchmark_gets_a_fresh_folder_with_the_next_seed_once(tmp_path):
    data = tmp_path / "bench"
    simulate_dataset(data, ["conus"], 4, 32, seed=3, workers=1, progress=False)
    timings: dict[str, float] = {}
    folder = prepare_ood_data(pipeline_args(data), timings)
    assert folder == tmp_path / "bench-ood-eval"
    record = json.loads((folder / "simulation.json").read_text())
    assert record["seed"] == 4 and record["tiles_per_region"] == 6
    assert sorted(region_of(p) for p in find_partitions(folder)) == ["conus", "south_america"]
    assert "simulate-ood-eval" in timings
    again: dict[str, float] = {}
    assert prepare_ood_data(pipeline_args(data), again) == folder
    assert again == {}  # simulated once, then reused


def test_given_folder_or_no_simulation_record_means_no_simulation(tmp_path):
    data = tmp_path / "bench"
    simulate_dataset(data, ["conus"], 4, 32, seed=0, workers=1, progress=False)
    given = tmp_path / "mine"
    assert prepare_ood_data(pipeline_args(data, ood_data=given), {}) == given
    assert prepare_ood_data(pipeline_args(data, ood_tiles=0), {}) is None
    (data / "simulation.json").unlink()  # real data: nothing to simulate
    assert prepare_ood_data(pipeline_args(data), {}) is None
    assert not (tmp_path / "bench-ood-eval").exists()
