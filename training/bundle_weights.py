"""Trainable weights inside a model bundle, so that a bundle can be fine-tuned further.

A bundle's ``model.onnx`` is an inference graph (often int8): it cannot be trained. ``sarveg
export`` therefore also writes, beside it,

- ``weights.safetensors``: the fine-tuned regressor's ``state_dict`` (float32, backbone and
  decoder), in the safetensors format: plain tensors, no pickles, readable without torch;
- ``weights.json``: what rebuilds the module and where the weights came from: the backbone
  description, decoder input, input size, modality, band names, normalisation, the resolved
  fine-tuning config and the tiles it was fitted, stopped and calibrated on.

Both are listed with their sha256 in ``bundle.json`` like every bundle file, so
``sarveg.bundle.load_bundle`` verifies them; serving never opens them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sarveg.bundle import WEIGHTS_FILE, WEIGHTS_META_FILE, load_bundle
from training.regressor import CHECKPOINT_FORMAT, FinetunedModel, build_regressor

WEIGHTS_FORMAT = "sarveg-bundle-weights-1"
# Everything of a fine-tuning checkpoint except the tensors; all JSON-serialisable.
META_KEYS = (
    "config",
    "backbone",
    "decoder_input",
    "modality",
    "band_names",
    "input_size",
    "normalization",
    "pretrained",
    "synthetic",
    "tiles",
    "summary",
)


def save_bundle_weights(directory: str | Path, finetuned: FinetunedModel) -> None:
    """Write ``weights.safetensors`` and ``weights.json`` of a fine-tuned model into a bundle.

    Args:
        directory: the bundle's staging folder (checksums are computed later, by
            ``sarveg.bundle.finalise_bundle``).
        finetuned: the model and its checkpoint metadata.
    """
    directory = Path(directory)
    # safetensors refuses views and shared storage: store independent contiguous copies.
    state = {
        name: tensor.detach().to(torch.float32).contiguous().clone()
        for name, tensor in finetuned.model.state_dict().items()
    }
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": WEIGHTS_FORMAT})
    meta = {key: finetuned.checkpoint.get(key) for key in META_KEYS}
    meta["format"] = WEIGHTS_FORMAT
    (directory / WEIGHTS_META_FILE).write_text(json.dumps(meta, indent=1) + "\n")


def load_bundle_weights(bundle_dir: str | Path) -> FinetunedModel:
    """Rebuild the trainable PyTorch model of a bundle, after checking the bundle's checksums.

    Args:
        bundle_dir: ``models/NAME``.

    Returns:
        The model in eval mode, with a checkpoint-like dict (the same keys as a fine-tuning
        checkpoint of ``sarveg finetune``) as its metadata.

    Raises:
        ValueError: the bundle has no trainable weights (exported before they were added), or
            they do not fit the module they describe.
    """
    bundle = load_bundle(bundle_dir)
    directory = bundle.directory
    missing = [n for n in (WEIGHTS_FILE, WEIGHTS_META_FILE) if n not in bundle.manifest.files]
    if missing:
        raise ValueError(
            f"{directory}: expected trainable weights ({WEIGHTS_FILE} and {WEIGHTS_META_FILE}) "
            f"in the bundle, found none of {missing}: re-export it with `sarveg export`"
        )
    meta: dict[str, Any] = json.loads((directory / WEIGHTS_META_FILE).read_text())
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(
            f"{directory / WEIGHTS_META_FILE}: expected format {WEIGHTS_FORMAT!r}, "
            f"found {meta.get('format')!r}"
        )
    checkpoint = {key: meta.get(key) for key in META_KEYS} | {"format": CHECKPOINT_FORMAT}
    model = build_regressor(checkpoint)
    state = load_file(str(directory / WEIGHTS_FILE))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{directory / WEIGHTS_FILE}: expected the weights of the module described in "
            f"{WEIGHTS_META_FILE}, found others ({str(error).splitlines()[0]})"
        ) from error
    checkpoint["model"] = model.state_dict()
    return FinetunedModel(model=model.eval(), checkpoint=checkpoint, path=directory / WEIGHTS_FILE)
