"""DINO checkpoints on disk: atomic writes and the random-number-generator state of a process.

A checkpoint (``RUN_DIR/checkpoint.pt``, written by ``training.pretrain``) is a dict with the
student and teacher weights (heads included, also under ``"head"``), optimizer and loss-centre
state, epoch / step / sampler position, each rank's RNG states, the normalisation statistics,
modality, input size, the backbone description and the resolved config. Restoring all of it
continues a run exactly as if it had not stopped.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = "sarveg-dino-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash never leaves a truncated file)."""
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def rng_state() -> dict[str, Any]:
    """Return the torch, numpy and python RNG states of this process."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
