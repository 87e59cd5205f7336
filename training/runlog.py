"""What a pre-training run tells its user: the JSON-lines log, collapse warnings, the loss plot.

Two DINO failure modes are watched (Caron et al. 2021, section 5.3): outputs collapsing to the
uniform distribution, where the loss sits at ``ln(out_dim)``, and one prototype dominating, where
the teacher sends every tile to the same output. The second is read from the entropy of the
batch-mean teacher distribution rather than the per-tile entropy, because a sharp teacher
temperature (0.001 in the paper's S1GRD preset) makes per-tile entropies legitimately ~0.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

LOSS_TOLERANCE = 1e-3
COLLAPSED_ENTROPY_NATS = 0.05


class CollapseWarning(RuntimeWarning):
    """Pre-training shows a symptom of DINO collapse."""


class JsonlLog:
    """Append-only JSON-lines log, one object per logged step.

    Args:
        path: the ``log.jsonl`` file.
        resume_step: when resuming, lines with ``step`` beyond this were written after the
            checkpoint and are dropped, so the log matches the restored state.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [row for row in read_log(self.path) if row.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``log.jsonl`` file into a list of dicts."""
    text = Path(path).read_text() if Path(path).exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class CollapseMonitor:
    """Warn once per symptom when it persists for ``patience`` consecutive steps.

    Args:
        out_dim: number of prototypes K; a uniform output has loss ``ln(K)``.
        patience: consecutive steps a symptom must last.
    """

    def __init__(self, out_dim: int, patience: int) -> None:
        self.uniform_loss = math.log(out_dim)
        self.patience = patience
        self.uniform_steps = 0
        self.dominant_steps = 0
        self.warned: set[str] = set()

    def update(self, loss: float, marginal_entropy: float) -> list[str]:
        """Record one step; return (and emit as ``CollapseWarning``) any new warning."""
        uniform = abs(loss - self.uniform_loss) < LOSS_TOLERANCE
        dominant = marginal_entropy < COLLAPSED_ENTROPY_NATS
        self.uniform_steps = self.uniform_steps + 1 if uniform else 0
        self.dominant_steps = self.dominant_steps + 1 if dominant else 0
        messages = []
        if self.uniform_steps >= self.patience and "uniform" not in self.warned:
            messages.append(
                f"DINO loss has stayed within {LOSS_TOLERANCE} of ln(out_dim) = "
                f"{self.uniform_loss:.4f} for {self.uniform_steps} steps: outputs look uniform "
                "(collapse). Try a lower teacher temperature or a higher centre momentum."
            )
            self.warned.add("uniform")
        if self.dominant_steps >= self.patience and "dominant" not in self.warned:
            messages.append(
                f"teacher output entropy (batch mean) has been below {COLLAPSED_ENTROPY_NATS} "
                f"nats for {self.dominant_steps} steps: one prototype takes every tile "
                "(collapse). Try a lower centre momentum or a higher teacher temperature."
            )
            self.warned.add("dominant")
        for message in messages:
            warnings.warn(message, CollapseWarning, stacklevel=2)
        return messages


def plot_loss_curve(log_path: str | Path, png_path: str | Path, out_dim: int) -> None:
    """Plot loss and teacher entropies against the step, with ``ln(out_dim)`` for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    steps = [row["step"] for row in rows]
    figure, (ax_loss, ax_entropy) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax_loss.plot(steps, [row["loss"] for row in rows], lw=1, label="DINO loss")
    ax_loss.axhline(math.log(out_dim), color="grey", ls="--", lw=1, label="ln(out_dim)")
    ax_loss.set_ylabel("loss (nats)")
    ax_loss.legend(loc="upper right")
    ax_entropy.plot(
        steps, [row["teacher_entropy"] for row in rows], lw=1, label="teacher entropy (per tile)"
    )
    ax_entropy.plot(
        steps,
        [row["teacher_marginal_entropy"] for row in rows],
        lw=1,
        label="teacher entropy (batch mean)",
    )
    ax_entropy.set_xlabel("step")
    ax_entropy.set_ylabel("entropy (nats)")
    ax_entropy.legend(loc="upper right")
    figure.suptitle("DINO pre-training")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
