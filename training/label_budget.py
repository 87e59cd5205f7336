"""Reproducible choice of labelled tiles (label budgets) and of held-out parts of a split.

Every choice is a function of the seed, the region names and the chip identifiers only: not of
the order tiles were listed in, nor of the machine. Per region, tiles are ordered by identifier
and shuffled by a generator seeded from ``(seed, region, purpose)``; a budget takes the first
ones, so for one seed the 1 % sample sits inside the 10 % sample.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np


def region_rng(seed: int, region: str, purpose: str) -> np.random.Generator:
    """A generator that depends on the seed, the region name and the purpose only."""
    return np.random.default_rng([seed, zlib.crc32(region.encode()), zlib.crc32(purpose.encode())])


def budget_per_region(counts: dict[str, int], labels: float) -> dict[str, int]:
    """Split a label budget over regions: a fraction applies per region, a count proportionally.

    Args:
        counts: available labelled train tiles per region.
        labels: fraction in (0, 1] or a whole count > 1.

    Returns:
        Tiles to sample per region (at least one per region with tiles, at most all of them).
    """
    total = sum(counts.values())
    if labels <= 1.0:
        wanted = {r: max(1, round(labels * n)) if n else 0 for r, n in counts.items()}
        return {r: min(wanted[r], n) for r, n in counts.items()}
    budget = int(labels)
    if budget > total:
        raise ValueError(f"expected a label budget of at most {total} tiles, found {budget}")
    share = {r: budget * n / total for r, n in counts.items()}
    chosen = {r: math.floor(s) for r, s in share.items()}
    # Largest remainders get the tiles left after flooring, ties broken by region name.
    order = sorted(counts, key=lambda r: (-(share[r] - chosen[r]), r))
    for region in order[: budget - sum(chosen.values())]:
        chosen[region] += 1
    return chosen


def sample_label_budget(
    identifiers: Sequence[str], regions: Sequence[str], labels: float, seed: int
) -> np.ndarray:
    """Return the positions of the labelled tiles to fine-tune on, sorted.

    Per region, tiles are ordered by identifier and shuffled by a generator that depends only on
    ``seed`` and the region, and the first ones are taken: the result does not depend on the
    order of the input, and smaller budgets are subsets of larger ones.

    Args:
        identifiers: chip identifier per candidate tile.
        regions: region per candidate tile.
        labels: fraction in (0, 1] or a whole count > 1.
        seed: sampling seed.
    """
    by_region: dict[str, list[int]] = {}
    for position, region in enumerate(regions):
        by_region.setdefault(region, []).append(position)
    take = budget_per_region({r: len(p) for r, p in by_region.items()}, labels)
    chosen: list[int] = []
    for region, positions in sorted(by_region.items()):
        ordered = sorted(positions, key=lambda p: identifiers[p])
        shuffled = region_rng(seed, region, "labels").permutation(len(ordered))
        chosen.extend(ordered[i] for i in shuffled[: take[region]])
    return np.sort(np.asarray(chosen, dtype=np.int64))


def split_holdout(
    identifiers: Sequence[str], regions: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut tiles reproducibly into ``(first, rest)`` positions, ``fraction`` of each region first.

    Used on the val split: the first part stops training early, the rest calibrates OOD scores.
    """
    first = sample_label_budget(identifiers, regions, fraction, seed + 7919)
    rest = np.setdiff1d(np.arange(len(identifiers)), first)
    return first, rest
