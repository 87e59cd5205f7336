"""``sarveg adapt``: fine-tune a bundle on a few labels of a new region and ship a new bundle.

    sarveg adapt --model models/NAME --data NEW_REGION_DIR --labels LABELS --out models/NEW_NAME
        [--old-data OLD_TRAINING_DIR] [--ood-data INDEPENDENT_DIR] [--config YAML] [key=value ...]

``LABELS`` is a CSV with ``identifier,vegetation_pct`` (the file ``sarveg select`` writes, with
the ``vegetation_pct`` column filled in; rows left empty are ignored) or a folder of MODIS VCF
GeoTIFFs named ``{identifier}.tif`` (the geetiles ``modis*`` layout, searched recursively).

What goes where (``N`` = the new region, ``O`` = the region(s) the bundle was fine-tuned on):

- **labelled tiles of N**, split reproducibly by identifier (``seed``): ``calibration_fraction``
  (35 %) calibrates the interval and is never fitted, the rest is fine-tuned on (with
  ``average_last_epochs=0``, ``early_stopping_fraction`` (15 %) joins the early-stopping set
  instead of being fitted). At least ``minimum_labels()`` (25 with the
  defaults: 35 % of them must be the 9 calibration tiles, the fewest for which a 90 %
  split-conformal interval is finite) or the command refuses. With ``refit_all_labels`` (the
  default) the fine-tune runs twice: first as above, then on every label (the model shipped);
  the interval is calibrated on the first fit's errors on the calibration tiles, which it never
  fitted (``refit_all_labels=false``: one fine-tune, the calibration tiles never fitted).
- **fine-tuning** starts from the bundle's own weights (``weights.safetensors``). With
  ``--old-data`` (the folder the bundle was fine-tuned on) up to ``rehearsal_tiles`` of O's
  labelled train tiles, recorded in the weights, are mixed in (rehearsal, against forgetting),
  and the new tiles are repeated so they make ``new_share`` of every epoch. The fine-tune runs
  ``optim.max_epochs`` (12) epochs and keeps the average of the weights at the end of the last
  ``average_last_epochs`` (6): with a handful of labels, an early-stopping set of a few tiles
  picks its epoch mostly by noise. ``average_last_epochs=0`` stops early instead, on the
  pooled RMSE of N's early-stopping tiles and as many of O's recorded early-stopping tiles.
  The finished fine-tune is kept in the work folder and reused by a rerun with the same inputs
  (settings of the export alone, such as ``route_old_regions`` or ``variant``, may differ).
- **OOD block**, re-calibrated with the new graph. In distribution: N and, with ``--old-data``,
  O (``ood.in_distribution_regions``), each scored against its own reference and calibrated on
  its own tiles; a tile's p-value is the largest of its per-region p-values, so tiles of either
  region are mis-flagged at most ``alpha`` of the time. N's reference and OOD calibration tiles
  are random samples of its *unlabelled* tiles (``reference_tiles``, ``calibration_tiles``; the
  p-value needs no label), plus the labelled calibration tiles; O's are, as in ``sarveg export``,
  tiles from all its splits that the parent's fine-tune did not use (outside the test half that
  measures forgetting) and the calibration tiles recorded in the weights, re-embedded. The
  interval is calibrated on every labelled calibration tile of both regions.
- **references** of every other region with labelled test tiles in ``--old-data``: tiles of all
  its splits, re-embedded.
- **before / after** (``provenance.config.adapt.evaluation``, in the model card): RMSE and
  unreliable share of the parent and the adapted bundle on O's other test half, on N's labelled
  calibration tiles and on N's unlabelled tiles in neither reference nor calibration; with
  ``--ood-data`` also on every labelled tile of O and N there (and ``ood.measured`` from them).

Without ``--old-data`` the old region's tiles cannot be re-embedded: the adapted bundle has N
as its only in-distribution region (O's tiles will often be flagged), no rehearsal, and
forgetting is not measured. The interval calibration tiles of N are the labelled ones, chosen by
``sarveg select`` rather than at random, so their coverage is a guide, not a guarantee, for
random tiles of N (selection favours unusual tiles, which tends to widen the intervals).

Modules, one concept each: ``config`` (``AdaptConfig`` and the label minimum), ``labels``
(reading the labels CSV or MODIS rasters), ``tiles`` (which tiles of the new and the old region
go where), ``finetune`` (the resumable fine-tune), ``routing`` (with ``route_old_regions=true``,
the graph gives old-region tiles the parent's estimate through a gate on the embedding), ``bundle``
(export, re-calibration, before / after, the new bundle's files) and ``cli`` (``adapt()`` and the
command).
"""

from training.adapt.cli import adapt, build_parser, main
from training.adapt.config import AdaptConfig, load_adapt_config, minimum_labels
from training.adapt.labels import read_labels

__all__ = [
    "AdaptConfig",
    "adapt",
    "build_parser",
    "load_adapt_config",
    "main",
    "minimum_labels",
    "read_labels",
]
