"""A real ``torchrun --nproc_per_node=2`` pre-training on CPU (gloo): ranks stay in lockstep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.test_pretrain import tiny_config, write_tiny_benchmark
from training.runlog import read_log

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_ranks_end_with_identical_teachers(tmp_path):
    data = write_tiny_benchmark(tmp_path / "data")
    config = tiny_config(tmp_path, "s1grd", **{"optim.batch_size": 4})
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "training.pretrain",
        "--config",
        str(config),
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--stop-after",
        "3",
        "--dump-teacher",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    rank0 = torch.load(out / "teacher_rank0.pt")
    rank1 = torch.load(out / "teacher_rank1.pt")
    assert rank0.keys() == rank1.keys()
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    # 18 train tiles over 2 ranks: 9 each, 2 steps of 4 per epoch; step 3 is mid-epoch 1.
    assert checkpoint["steps_per_epoch"] == 2 and checkpoint["global_step"] == 3
    # The teacher moved away from its initial weights, and only rank 0 wrote the log.
    assert [row["step"] for row in read_log(out / "log.jsonl")] == [1, 2, 3]
    moved = [not torch.equal(value, checkpoint["student"][name]) for name, value in rank0.items()]
    assert any(moved)
    for name, value in rank0.items():
        torch.testing.assert_close(value, checkpoint["teacher"][name])
