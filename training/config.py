"""Typed DINO pre-training configuration, loaded from YAML presets with dotted overrides.

A config is a tree of pydantic models that reject unknown keys, so a typo in a preset or on the
command line fails loudly instead of silently training with a default. Presets live in
``training/presets/{name}.yaml``; ``load_config("cpu-s1grd", ["optim.epochs=3"])`` reads one and
applies ``key=value`` overrides (values parsed as YAML) before validation. The resolved config, with
the normalisation statistics filled in, is written as YAML next to every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PRESET_DIR = Path(__file__).parent / "presets"
M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file, preset name or override that cannot be used."""


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    """Which tiles to pre-train on and how they are prepared."""

    regions: list[str] = Field(default_factory=lambda: ["europe", "china", "conus"])
    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["train"])
    input_size: int = Field(64, ge=8, description="side in px after area-average resampling")
    cache_dir: str | None = Field(None, description="default: DATA_DIR/.cache")
    prepare_workers: int = Field(2, ge=1)


class NormalizationConfig(StrictModel):
    """Per-channel statistics in physical units; None means: compute them on the cache."""

    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _check_pair(self) -> NormalizationConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("normalization.mean and normalization.std must be given together")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(
                    f"normalization.mean has {len(self.mean)} values, std has {len(self.std)}"
                )
            if any(s <= 0 for s in self.std):
                raise ValueError(f"normalization.std must be positive, found {self.std}")
        return self


class ModelConfig(StrictModel):
    """A timm ViT by name; the other fields override the architecture's defaults."""

    name: str = "vit_tiny_patch16_224"
    patch_size: int | None = 8
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = Field(0.1, ge=0.0, lt=1.0)


class HeadConfig(StrictModel):
    """DINO projection head (original defaults: 65536 / 2048 / 256, 3 layers, no BN)."""

    out_dim: int = Field(65536, ge=2)
    hidden_dim: int = Field(2048, ge=1)
    bottleneck_dim: int = Field(256, ge=1)
    nlayers: int = Field(3, ge=1)
    use_bn: bool = False
    norm_last_layer: bool = True


class AugmentConfig(StrictModel):
    """Multi-crop: random resized crops and horizontal flips only (SAR has no colour to jitter)."""

    global_crop_size: int = Field(64, ge=8)
    local_crop_size: int = Field(32, ge=8)
    n_local_crops: int = Field(6, ge=0)
    global_crop_scale: tuple[float, float] = (0.4, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    hflip_prob: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_scales(self) -> AugmentConfig:
        for name in ("global_crop_scale", "local_crop_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, found {(low, high)}")
        return self


class LossConfig(StrictModel):
    """DINO loss temperatures and centring."""

    student_temp: float = Field(0.1, gt=0.0)
    teacher_temp: float = Field(0.04, gt=0.0)
    warmup_teacher_temp: float = Field(0.04, gt=0.0)
    warmup_teacher_temp_epochs: int = Field(0, ge=0)
    center_momentum: float = Field(0.9, ge=0.0, lt=1.0)


class OptimConfig(StrictModel):
    """AdamW with DINO's schedules.

    ``lr`` follows the original DINO convention: the peak LR for a total batch of 256, scaled
    linearly to the real total batch (``batch_size x world_size``). ``min_lr`` is absolute.
    """

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1, description="per process")
    lr: float = Field(5e-4, gt=0.0)
    min_lr: float = Field(1e-6, ge=0.0)
    warmup_epochs: int = Field(10, ge=0)
    weight_decay: float = Field(0.04, ge=0.0)
    weight_decay_end: float = Field(0.4, ge=0.0)
    momentum_teacher: float = Field(0.996, ge=0.0, le=1.0)
    clip_grad: float = Field(3.0, ge=0.0, description="per-parameter norm; 0 disables")
    freeze_last_layer_epochs: int = Field(1, ge=0)


class PretrainConfig(StrictModel):
    """Everything a DINO pre-training run needs besides the data folder and the run folder."""

    modality: Literal["s1grd", "gssic"] = "s1grd"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    log_every: int = Field(1, ge=1, description="steps between log.jsonl lines")
    collapse_patience: int = Field(
        50, ge=1, description="steps a collapse symptom must persist before a warning"
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> PretrainConfig:
        patch = self.model.patch_size
        for name in ("global_crop_size", "local_crop_size"):
            size = getattr(self.augment, name)
            if patch is not None and size % patch:
                raise ValueError(f"augment.{name}={size} is not a multiple of patch_size={patch}")
        if self.augment.global_crop_size > self.data.input_size:
            raise ValueError(
                f"augment.global_crop_size={self.augment.global_crop_size} exceeds "
                f"data.input_size={self.data.input_size}"
            )
        return self


def list_presets() -> list[str]:
    """Return the names of the YAML presets shipped in ``training/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(preset_or_path: str | Path) -> Path:
    """Return the YAML file for a preset name or a path, or raise ``ConfigError``."""
    path = Path(preset_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise ConfigError(f"expected a YAML config file, found no file at {path}")
        return path
    preset = PRESET_DIR / f"{preset_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(
            f"expected a preset name in {list_presets()} or a YAML path, found {preset_or_path!r}"
        )
    return preset


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"optim.lr=1e-4"`` into ``(["optim", "lr"], 1e-4)``; values are parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected an override like section.key=value, found {text!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``key=value`` overrides written into it."""
    result: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {key!r} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return result


def validate_config(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate a plain dict as ``model``; errors name the offending keys."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"invalid {source}: {problems}") from None


def config_from_dict(data: dict[str, Any], source: str = "config") -> PretrainConfig:
    """Validate a plain dict as a ``PretrainConfig``; errors name the offending keys."""
    return validate_config(PretrainConfig, data, source)


def read_yaml_mapping(preset_or_path: str | Path | None) -> dict[str, Any]:
    """The mapping in a preset or YAML file (empty for None); anything else is a ``ConfigError``."""
    if preset_or_path is None:
        return {}
    path = resolve_config_path(preset_or_path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a YAML mapping in {path}, found {type(data).__name__}")
    return data


def load_typed_config(
    model: type[M], preset_or_path: str | Path | None, overrides: Sequence[str], source: str
) -> M:
    """Load a preset or YAML file (or the defaults), apply dotted overrides and validate."""
    data = apply_overrides(read_yaml_mapping(preset_or_path), list(overrides))
    return validate_config(model, data, source)


def load_config(preset_or_path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """Load a preset or YAML file, apply overrides and validate.

    Args:
        preset_or_path: a preset name (``cpu-s1grd``) or a path to a YAML file.
        overrides: dotted ``key=value`` strings, e.g. ``["optim.epochs=2", "head.out_dim=256"]``.

    Returns:
        The validated config.
    """
    path = resolve_config_path(preset_or_path)
    return load_typed_config(PretrainConfig, path, overrides or [], f"config {path}")


def dump_config(config: PretrainConfig) -> str:
    """Return the config as YAML text that ``load_config`` reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: PretrainConfig, path: str | Path) -> None:
    """Write the config as YAML."""
    Path(path).write_text(dump_config(config))
