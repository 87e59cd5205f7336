"""The model bundle contract: the only thing that passes from training to serving.

A bundle is a directory ``models/<name>/`` holding exactly the files listed in its manifest:

- ``model.onnx``: input ``tiles`` float32 ``(batch, C, H, W)`` in physical units at the bundle's
  input size; outputs ``vegetation_pct`` ``(batch,)`` and ``embedding`` ``(batch, D)``, optionally
  ``attention``. Here it is only bytes with a checksum; nothing in this module runs it.
- ``reference.npz``: reference embeddings and conformal calibration arrays (layout below).
- ``bundle.json``: the manifest, validated by :class:`BundleManifest`; lists the sha256 of every
  other file in the directory.
- optional ``weights.safetensors`` + ``weights.json``: the fine-tuned PyTorch weights and what
  rebuilds the module (``training.bundle_weights``); serving ignores them.

``reference.npz`` layout (``numpy.savez``, no pickles). ``D`` is ``embedding_size``; for every
region ``r`` in ``ood.reference_regions`` (held-out tiles of that region, fitted on nothing, from
every split; ~1,000):

- ``{r}/embedding`` float32 ``(n_r, D)``: fine-tuned CLS embeddings.
- ``{r}/vegetation_pct`` float32 ``(n_r,)``: labels (percent); NaN for a tile without a label
  (only adapted bundles: the new region's reference is a sample of its unlabelled tiles).
- ``{r}/predicted_pct`` float32 ``(n_r,)``: the model's predictions for those tiles.

and, for ``m = ood.calibration_size`` held-out tiles of the fine-tuning region that are in no
reference set and were used to fit nothing:

- ``calibration/embedding`` float32 ``(m, D)``, ``calibration/vegetation_pct`` float32 ``(m,)``,
  ``calibration/predicted_pct`` float32 ``(m,)``;
- ``calibration/score`` float64 ``(m,)``: their OOD nonconformity scores (``ood.score_name``);
- ``calibration/abs_error_norm`` float64 ``(m,)``: ``|y - yhat| / (difficulty + eps)``, the
  residuals the conformal interval is calibrated on.

In an adapted bundle (``ood.in_distribution_regions``) the calibration rows are one block per
in-distribution region, and a calibration tile may be unlabelled (``vegetation_pct`` and
``abs_error_norm`` NaN): the OOD p-value needs no label, only the interval's residuals do.

Projection directions are not stored: they are drawn at load time from ``ood.projection_seed``
(``sarveg.swd.draw_projections``), which keeps bundles small (limit: 30 MB in total).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sarveg.bands import CHANNELS, UNITS, Modality
from sarveg.errors import BundleError
from sarveg.reference import (
    CALIBRATION_GROUP,
    ReferenceArrays,
    read_reference,
)
from sarveg.resample import RESAMPLING_RULE
from sarveg.tiles import MIN_SIDE_PX

SCHEMA_VERSION = 1
MANIFEST_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"
# Optional: the trainable weights (``training.bundle_weights``), for fine-tuning a bundle further.
# Serving never opens them; ``load_bundle`` checks their checksums like every listed file.
WEIGHTS_FILE = "weights.safetensors"
WEIGHTS_META_FILE = "weights.json"
MAX_BUNDLE_BYTES = 30 * 1024 * 1024
# A training tile can be no larger than ``read_tile`` decodes: 16 bands of 4096 x 4096.
MAX_SOURCE_TILE_PX = 4096
REQUIRED_OUTPUTS: tuple[str, ...] = ("vegetation_pct", "embedding")
OPTIONAL_OUTPUTS: tuple[str, ...] = ("attention",)
REGION_PATTERN = r"^[a-z][a-z0-9_]*$"
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalisation(_Strict):
    """Per-channel statistics in physical units (dB or coherence).

    The ONNX graph normalises internally; these are recorded for provenance and model cards.
    """

    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _check(self) -> Normalisation:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"expected as many std as mean values, found {len(self.std)} and {len(self.mean)}"
            )
        if any(not s > 0 for s in self.std):
            raise ValueError(f"expected every std > 0, found {self.std}")
        return self


class Architecture(_Strict):
    """The backbone and decoder the ONNX graph was exported from."""

    name: str = Field(min_length=1)  # timm name, e.g. "vit_small_patch16_224"
    patch_size: int = Field(gt=0)
    embed_dim: int = Field(gt=0)
    depth: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    input_size: int = Field(gt=0)
    in_chans: int = Field(gt=0)
    decoder_input: Literal["cls", "attention"] = "cls"


class Provenance(_Strict):
    """Where the model came from."""

    data: str = Field(min_length=1)  # e.g. "synthetic benchmark (sarveg simulator), seed 0"
    synthetic: bool
    fine_tuning_regions: list[str] = Field(min_length=1)
    pretraining_regions: list[str] = []
    label_fraction: float = Field(gt=0.0, le=1.0)
    config: dict[str, Any]  # the resolved training configuration
    code_version: str = Field(min_length=1)
    created: datetime


class RegionMetrics(_Strict):
    """Test-split metrics of the model on one region, in percentage points."""

    rmse: float = Field(ge=0.0)
    mae: float = Field(ge=0.0)
    bias: float  # mean(prediction - label)
    n_tiles: int = Field(ge=1)
    label_std: float = Field(ge=0.0)


class OODMeasured(_Strict):
    """OOD and interval figures measured on held-out data at export time."""

    synthetic: bool
    n_in_distribution: int = Field(ge=1)
    false_flag_rate: float = Field(ge=0.0, le=1.0)
    interval_coverage: float = Field(ge=0.0, le=1.0)
    interval_width_mean: float = Field(ge=0.0)
    unseen_region: str | None = None
    n_unseen: int = Field(default=0, ge=0)
    auroc: float | None = Field(default=None, ge=0.0, le=1.0)
    spearman_abs_error: float | None = Field(default=None, ge=-1.0, le=1.0)
    # Where the evaluation tiles came from (bundles written before this field: the held-out
    # half of the fine-tuning region's test split and the unseen region's val split).
    evaluation_tiles: str | None = None


class RegionMembershipMeasured(_Strict):
    """Region membership (``nearest_region``, ``plausible_regions``) measured on unseen tiles.

    One group of tiles per reference region, none of them reference or calibration tiles.
    """

    synthetic: bool
    evaluation_tiles: str = Field(min_length=1)
    regions: list[str] = Field(min_length=1)
    n_tiles: dict[str, int]
    # confusion[i][j]: tiles of regions[i] whose nearest_region is regions[j].
    confusion: list[list[int]]
    nearest_accuracy: dict[str, float]
    plausible_coverage: dict[str, float]  # share of a region's tiles with it among plausible
    mean_plausible_size: dict[str, float]
    swd_nearest_accuracy: dict[str, float]  # the per-tile SWD argmin, for comparison


class OODCalibration(_Strict):
    """How the OOD block scores tiles and sets, and what it was calibrated on."""

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    score_name: Literal["knn_distance", "mahalanobis", "swd_exact"] = "knn_distance"
    method: str = Field(min_length=1)
    fine_tuning_region: str
    reference_regions: list[str] = Field(min_length=1)
    knn_k: int = Field(default=10, ge=1)
    difficulty: Literal["knn_distance", "knn_residual"] = "knn_distance"
    difficulty_eps: float = Field(default=1e-6, gt=0.0)
    interval_alpha: float = Field(default=0.10, gt=0.0, lt=1.0)
    calibration_size: int = Field(ge=1)
    n_projections: int = Field(default=10_000, ge=1)
    projection_seed: int = 0
    # Unused since the set verdict combines the tiles' p-values; kept so older bundles load.
    set_verdict_projections: int = Field(default=256, ge=1)
    set_bootstrap_sets: int = Field(default=199, ge=19)
    measured: OODMeasured | None = None
    region_membership: RegionMembershipMeasured | None = None
    # Regions whose tiles count as in distribution (None: the fine-tuning region alone, as in
    # every exported bundle). An adapted bundle (``sarveg adapt``) lists the old and the new
    # region: each scores tiles against its own reference, its calibration tiles are the
    # ``calibration_counts[i]`` consecutive calibration rows of region ``i`` (in this order), and
    # a tile's p-value is the largest of its per-region conformal p-values, so the tiles of each
    # listed region are mis-flagged at most ``alpha`` of the time.
    in_distribution_regions: list[str] | None = None
    calibration_counts: list[int] | None = None

    @field_validator("reference_regions")
    @classmethod
    def _check_regions(cls, regions: list[str]) -> list[str]:
        bad = [r for r in regions if not re.match(REGION_PATTERN, r) or r == CALIBRATION_GROUP]
        if bad:
            raise ValueError(f"expected region names matching {REGION_PATTERN}, found {bad}")
        if len(set(regions)) != len(regions):
            raise ValueError(f"expected unique region names, found {regions}")
        return regions

    @model_validator(mode="after")
    def _check(self) -> OODCalibration:
        if self.fine_tuning_region not in self.reference_regions:
            raise ValueError(
                f"expected fine_tuning_region among reference_regions {self.reference_regions}, "
                f"found {self.fine_tuning_region!r}"
            )
        regions, counts = self.in_distribution_regions, self.calibration_counts
        if (regions is None) != (counts is None):
            raise ValueError(
                "expected in_distribution_regions and calibration_counts together, found only "
                + ("in_distribution_regions" if counts is None else "calibration_counts")
            )
        if regions is not None and counts is not None:
            unknown = [r for r in regions if r not in self.reference_regions]
            if unknown or len(set(regions)) != len(regions) or not regions:
                raise ValueError(
                    f"expected distinct in_distribution_regions among reference_regions "
                    f"{self.reference_regions}, found {regions}"
                )
            if self.fine_tuning_region not in regions:
                raise ValueError(
                    f"expected fine_tuning_region {self.fine_tuning_region!r} among "
                    f"in_distribution_regions {regions}"
                )
            if len(counts) != len(regions) or any(c < 1 for c in counts):
                raise ValueError(
                    f"expected one calibration count >= 1 per in-distribution region {regions}, "
                    f"found {counts}"
                )
            if sum(counts) != self.calibration_size:
                raise ValueError(
                    f"expected calibration_counts {counts} to sum to calibration_size "
                    f"{self.calibration_size}"
                )
        return self

    @property
    def in_distribution(self) -> list[str]:
        """The in-distribution regions (the fine-tuning region alone unless listed)."""
        return list(self.in_distribution_regions or [self.fine_tuning_region])

    @property
    def calibration_blocks(self) -> list[int]:
        """Calibration rows per in-distribution region, in :attr:`in_distribution` order."""
        return list(self.calibration_counts or [self.calibration_size])


class BundleManifest(_Strict):
    """``bundle.json``; fields are validated in order, so later checks can use earlier ones."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    modality: Modality
    band_names: list[str]
    units: str
    input_name: Literal["tiles"] = "tiles"
    input_size: int = Field(gt=0)
    # Native side of the training tiles in their own pixels; scenes are cut into windows of
    # this many scene pixels, then resampled to ``input_size`` like any tile.
    source_tile_px: int = Field(ge=MIN_SIDE_PX, le=MAX_SOURCE_TILE_PX)
    # Ground side of the training chips and of their pixels, metres (bundles written before
    # these fields: unknown). Tiles of another footprint get a warning in their input block.
    footprint_m: float | None = Field(default=None, gt=0.0)
    pixel_size_m: float | None = Field(default=None, gt=0.0)
    resampling: str = RESAMPLING_RULE
    normalisation: Normalisation
    architecture: Architecture
    embedding_size: int = Field(gt=0)
    outputs: list[str] = list(REQUIRED_OUTPUTS)
    provenance: Provenance
    metrics: dict[str, RegionMetrics]
    ood: OODCalibration
    files: dict[str, str] = {}

    @field_validator("band_names")
    @classmethod
    def _check_band_names(cls, names: list[str], info: ValidationInfo) -> list[str]:
        modality = info.data.get("modality")
        if modality is not None and tuple(names) != CHANNELS[modality]:
            raise ValueError(
                f"expected the {len(CHANNELS[modality])} {modality} channels "
                f"{list(CHANNELS[modality])} in this order, found {names}"
            )
        return names

    @field_validator("units")
    @classmethod
    def _check_units(cls, units: str, info: ValidationInfo) -> str:
        modality = info.data.get("modality")
        if modality is not None and units != UNITS[modality]:
            raise ValueError(f"expected {UNITS[modality]!r} for {modality}, found {units!r}")
        return units

    @field_validator("resampling")
    @classmethod
    def _check_resampling(cls, rule: str) -> str:
        if rule != RESAMPLING_RULE:
            raise ValueError(f"expected the shared rule {RESAMPLING_RULE!r}, found {rule!r}")
        return rule

    @field_validator("normalisation")
    @classmethod
    def _check_normalisation(cls, value: Normalisation, info: ValidationInfo) -> Normalisation:
        names = info.data.get("band_names")
        if names is not None and len(value.mean) != len(names):
            raise ValueError(f"expected {len(names)} channel statistics, found {len(value.mean)}")
        return value

    @field_validator("architecture")
    @classmethod
    def _check_architecture(cls, value: Architecture, info: ValidationInfo) -> Architecture:
        names = info.data.get("band_names")
        if names is not None and value.in_chans != len(names):
            raise ValueError(f"expected in_chans == {len(names)} bands, found {value.in_chans}")
        size = info.data.get("input_size")
        if size is not None and value.input_size != size:
            raise ValueError(f"expected input_size == {size}, found {value.input_size}")
        return value

    @field_validator("embedding_size")
    @classmethod
    def _check_embedding_size(cls, size: int, info: ValidationInfo) -> int:
        architecture = info.data.get("architecture")
        if architecture is not None and size != architecture.embed_dim:
            raise ValueError(
                f"expected architecture.embed_dim ({architecture.embed_dim}), found {size}"
            )
        return size

    @field_validator("outputs")
    @classmethod
    def _check_outputs(cls, outputs: list[str]) -> list[str]:
        missing = [o for o in REQUIRED_OUTPUTS if o not in outputs]
        unknown = [o for o in outputs if o not in REQUIRED_OUTPUTS + OPTIONAL_OUTPUTS]
        if missing or unknown:
            raise ValueError(
                f"expected outputs {list(REQUIRED_OUTPUTS)} plus optionally "
                f"{list(OPTIONAL_OUTPUTS)}, found {outputs}"
            )
        return outputs

    @field_validator("files")
    @classmethod
    def _check_files(cls, files: dict[str, str]) -> dict[str, str]:
        for name, digest in files.items():
            parts = Path(name).parts
            if Path(name).is_absolute() or ".." in parts or "\\" in name or name == MANIFEST_FILE:
                raise ValueError(f"expected relative file names inside the bundle, found {name!r}")
            if not _SHA256_PATTERN.match(digest):
                raise ValueError(
                    f"expected a lowercase sha256 hex digest for {name}, found {digest!r}"
                )
        return files


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded, verified bundle."""

    directory: Path
    manifest: BundleManifest
    reference: ReferenceArrays
    model_path: Path


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _describe_validation_error(source: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(manifest)"
        message = (
            "unknown key (not in the schema)" if item["type"] == "extra_forbidden" else item["msg"]
        )
        problems.append(f"field '{field}': {message}")
    return f"{source}: invalid bundle manifest: " + "; ".join(problems)


def parse_manifest(text: str, source: str = MANIFEST_FILE) -> BundleManifest:
    """Parse and validate ``bundle.json`` text.

    Args:
        text: the JSON text.
        source: the file name to put in error messages.

    Raises:
        BundleError: on invalid JSON, another schema version, or any schema violation; the
            message names ``source`` and the field.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise BundleError(f"{source}: expected JSON, found a syntax error ({error})") from error
    if not isinstance(raw, dict):
        raise BundleError(f"{source}: expected a JSON object, found {type(raw).__name__}")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{source}: field 'schema_version': expected {SCHEMA_VERSION}, "
            f"found {raw.get('schema_version')!r}"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as error:
        raise BundleError(_describe_validation_error(source, error)) from None


def _bundle_files(directory: Path) -> list[str]:
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.relative_to(directory).as_posix() != MANIFEST_FILE
    )


def finalise_bundle(directory: str | Path, manifest: BundleManifest) -> BundleManifest:
    """Checksum every file of a bundle directory and write its ``bundle.json``.

    Args:
        directory: holds ``model.onnx``, ``reference.npz`` and any other bundle files.
        manifest: the manifest; its ``files`` are replaced by the computed checksums.

    Returns:
        The manifest as written.

    Raises:
        BundleError: if a required file is missing, the bundle is over 30 MB, or the reference
            arrays do not match the manifest.
    """
    directory = Path(directory)
    names = _bundle_files(directory)
    for required in (MODEL_FILE, REFERENCE_FILE):
        if required not in names:
            raise BundleError(
                f"{directory / required}: expected a required bundle file, found none"
            )
    total = sum((directory / name).stat().st_size for name in names)
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(
            f"{directory}: expected at most {MAX_BUNDLE_BYTES} bytes of files, found {total}"
        )
    files = {name: sha256_file(directory / name) for name in names}
    try:
        final = BundleManifest.model_validate(manifest.model_dump() | {"files": files})
    except ValidationError as error:
        raise BundleError(
            _describe_validation_error(str(directory / MANIFEST_FILE), error)
        ) from None
    read_reference(
        directory / REFERENCE_FILE,
        final.ood.reference_regions,
        final.ood.calibration_size,
        final.embedding_size,
    )
    (directory / MANIFEST_FILE).write_text(final.model_dump_json(indent=2) + "\n")
    return final


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle, verifying its schema, file list, checksums and reference arrays.

    Args:
        path: the bundle directory or its ``bundle.json``.

    Returns:
        The verified :class:`Bundle`.

    Raises:
        BundleError: naming the file and the mismatch (schema field, missing or unlisted file,
            sha256 mismatch, reference key or shape).
    """
    path = Path(path)
    directory = path.parent if path.name == MANIFEST_FILE else path
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: expected a bundle manifest, found no such file")
    manifest = parse_manifest(manifest_path.read_text(), str(manifest_path))
    for required in (MODEL_FILE, REFERENCE_FILE):
        if required not in manifest.files:
            raise BundleError(
                f"{manifest_path}: field 'files': expected an entry for {required}, found none"
            )
    present = set(_bundle_files(directory))
    unlisted = sorted(present - manifest.files.keys())
    if unlisted:
        raise BundleError(
            f"{directory / unlisted[0]}: file not listed in {MANIFEST_FILE} (unlisted: {unlisted})"
        )
    for name, expected in manifest.files.items():
        if name not in present:
            raise BundleError(f"{directory / name}: listed in {MANIFEST_FILE} but missing")
        found = sha256_file(directory / name)
        if found != expected:
            raise BundleError(
                f"{directory / name}: sha256 mismatch, expected {expected}, found {found}"
            )
    reference = read_reference(
        directory / REFERENCE_FILE,
        manifest.ood.reference_regions,
        manifest.ood.calibration_size,
        manifest.embedding_size,
    )
    return Bundle(
        directory=directory,
        manifest=manifest,
        reference=reference,
        model_path=directory / MODEL_FILE,
    )
