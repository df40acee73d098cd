"""Statistics for the leaderboard: a paired bootstrap over images, and mean ± std over seeds.

The paired bootstrap (Koehn 2004; Berg-Kirkpatrick et al. 2012) asks how much the difference between two
systems' mean per-image scores would move if the test images had been drawn again: resample the images
with replacement (the *same* images for both systems, hence "paired"), recompute the mean difference, and
take the 2.5th and 97.5th percentiles of those differences as the 95% interval. An interval that excludes
0 means the difference is unlikely to be an accident of which images happen to be in the test set.

It says nothing about training noise: two seeds of one recipe differ too. The leaderboard therefore shows
seed spread separately (mean ± std) and, for a system with several seeds, bootstraps the per-image scores
averaged over its seeds.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from zoo.errors import ZooError

# Cap on resample-index entries held at once (int32: 4 bytes each), so 10,000 resamples of 5,000 images
# do not need 200 MB; below the cap the whole index matrix is drawn in one go.
_MAX_INDEX_ENTRIES = 8_000_000


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its ``1 - alpha`` percentile-bootstrap interval ``(mean_diff, lo, hi)``.

    ``a`` and ``b`` are per-image scores of two systems on the same images, aligned by position (see
    ``align``). Deterministic for a given ``seed``. The difference is significant at level ``alpha`` when
    the interval excludes 0 (``is_significant``)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ZooError(f"paired bootstrap needs two 1-D arrays of equal length, got shapes {a.shape} and {b.shape}")
    n = a.shape[0]
    if n < 2:
        raise ZooError(f"paired bootstrap needs at least 2 images, got {n}")
    if resamples < 1:
        raise ZooError(f"paired bootstrap needs at least 1 resample, got {resamples}")
    if not 0 < alpha < 1:
        raise ZooError(f"alpha must be between 0 and 1, got {alpha}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, _MAX_INDEX_ENTRIES // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)
        means[start:stop] = diff[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(lo), float(hi)


def is_significant(lo: float, hi: float) -> bool:
    """True when the interval ``[lo, hi]`` excludes 0."""
    return lo > 0 or hi < 0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; std is 0.0 for a single value, since one
    seed says nothing about spread (the table then shows no ±)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ZooError("mean_std needs at least one value")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def average_per_image(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-image scores averaged over several runs (seeds) of one system, on the images all runs scored."""
    if not scores:
        return {}
    common = set(scores[0])
    for s in scores[1:]:
        common &= set(s)
    return {k: float(np.mean([s[k] for s in scores])) for k in sorted(common)}


def align(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The scores of ``a`` and ``b`` on their common image ids, as two aligned arrays (and the ids)."""
    ids = sorted(set(a) & set(b))
    return (
        np.fromiter((a[i] for i in ids), dtype=np.float64, count=len(ids)),
        np.fromiter((b[i] for i in ids), dtype=np.float64, count=len(ids)),
        ids,
    )
