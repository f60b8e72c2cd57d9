"""Every attribution map against every reference map, beside what chance and image structure give.

Inputs are maps on one comparison grid, stacked in the order of an index of (set, image_id, corruption,
severity) rows; the output is one long table, a row per map pair and metric. References: the quality
model's patch map (``quality``, higher is better), the damage map (``damage``: the image's best patch minus
the map, high where quality is low) and, when the judge has gradients, its own Grad-CAM
(``quality_gradcam``). Null baselines stand in for the attribution map: a centred Gaussian, Sobel edges of
the crop, a seeded random map, and the shuffled pairing (the same method's map of another image of the same
condition). ``quality_change`` rows hold the CC of the change of the attribution map (distorted minus clean
crop) with the change of the quality map.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from saliqa.explain.baselines import centre_gaussian, derangement, random_maps
from saliqa.explain.similarity import map_similarity
from saliqa.seeding import derive_seed, rng_for

KEY = ["set", "image_id", "corruption", "severity"]
COLUMNS = [*KEY[:2], "corruption", "severity", "method", "reference", "metric", "grid", "value"]
REVERSE_KLD = "kld_reverse"
"""KL of the attribution map from the reference (``kld`` is of the reference from the attribution map)."""
CLEAN = "none"


def damage_map(quality: np.ndarray) -> np.ndarray:
    """High where quality is low: each image's best patch minus its map (unrated cells stay NaN)."""
    with np.errstate(invalid="ignore"):
        best = np.nanmax(np.where(np.isnan(quality), -np.inf, quality), axis=(1, 2), keepdims=True)
    return best - quality


def baseline_maps(index: pd.DataFrame, sobel: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The image-independent and image-generic maps each attribution map is measured against."""
    m, rows, cols = sobel.shape
    seeds = [
        derive_seed(seed, "explain-random", s, i, c, v)
        for s, i, c, v in index[KEY].itertuples(index=False, name=None)
    ]
    return {
        "baseline:centre": np.broadcast_to(centre_gaussian(rows, cols), (m, rows, cols)),
        "baseline:sobel": sobel,
        "baseline:random": random_maps(rows, cols, seeds),
    }


def _similarity(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    if metric == REVERSE_KLD:
        return np.atleast_1d(map_similarity(b, a, "kld"))
    return np.atleast_1d(map_similarity(a, b, metric))


def pair_scores(a: np.ndarray, b: np.ndarray, metric: str, min_cells: int = 3) -> np.ndarray:
    """``metric`` for each pair of maps ``(M, g, g)``, on the cells both maps have.

    A quality model leaves some patches unrated (PIQE: flat blocks, NaN): such cells are left out of that
    pair's comparison, which is then made on the remaining cells as a flat map (pairs sharing a pattern of
    cells in one call). ``emd`` needs the whole grid, so it is NaN for such pairs, as is every pair with an
    all-NaN (degenerate) map or fewer than ``min_cells`` cells in common.
    """
    finite = np.isfinite(a) & np.isfinite(b)
    whole = finite.all(axis=(1, 2))
    out = np.full(len(a), np.nan)
    if whole.any():
        out[whole] = _similarity(a[whole], b[whole], metric)
    partial = np.flatnonzero(~whole & (finite.sum(axis=(1, 2)) >= min_cells))
    if metric == "emd" or not len(partial):
        return out
    masks = finite[partial].reshape(len(partial), -1)
    patterns, which = np.unique(masks, axis=0, return_inverse=True)
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    for k, cells in enumerate(patterns):
        rows = partial[which.ravel() == k]
        out[rows] = _similarity(flat_a[rows][:, None, cells], flat_b[rows][:, None, cells], metric)
    return out


def _groups(index: pd.DataFrame) -> Iterator[tuple[tuple, np.ndarray]]:
    for key, rows in index.groupby(["set", "corruption", "severity"], sort=False).indices.items():
        yield key, np.asarray(rows)


def _shuffled(index: pd.DataFrame, seed: int, method: str) -> np.ndarray:
    """For each row, the row whose map it is paired with: another image of the same set and condition
    (itself only where a condition has a single image, which then gets NaN)."""
    partner = np.arange(len(index))
    for key, rows in _groups(index):
        if len(rows) >= 2:
            partner[rows] = rows[derangement(len(rows), rng_for(seed, "explain-shuffle", method, *key))]
    return partner


def _clean_rows(index: pd.DataFrame) -> np.ndarray:
    """For each row, the row of the same image's clean crop (-1 where there is none)."""
    clean = index[index["corruption"] == CLEAN]
    where = {(s, i): r for r, s, i in zip(clean.index, clean["set"], clean["image_id"], strict=True)}
    positions = {label: p for p, label in enumerate(index.index)}
    return np.array(
        [positions.get(where.get((s, i)), -1) for s, i in zip(index["set"], index["image_id"], strict=True)]
    )


def compare_maps(
    index: pd.DataFrame,
    attributions: Mapping[str, np.ndarray],
    references: Mapping[str, np.ndarray],
    metrics: Sequence[str],
    *,
    grid: str,
    sobel: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The long table ``compare.parquet`` holds (see the module docstring); ``index`` rows match the maps'
    first axis. Metrics with ``kld`` get ``kld_reverse`` too. ``sobel`` given: the baselines are scored."""
    index = index.reset_index(drop=True)
    wanted = [*metrics, *([REVERSE_KLD] if "kld" in metrics else [])]
    sources: dict[str, np.ndarray] = dict(attributions)
    if sobel is not None:
        sources |= baseline_maps(index, sobel, seed)
    frames = []

    def emit(
        method: str, reference: str, metric: str, values: np.ndarray, rows: np.ndarray | None = None
    ) -> None:
        keys = index[KEY] if rows is None else index.loc[rows, KEY]
        frames.append(keys.assign(method=method, reference=reference, metric=metric, grid=grid, value=values))

    partners = (
        {method: _shuffled(index, seed, method) for method in attributions} if sobel is not None else {}
    )
    for reference, ref in references.items():
        for method, maps in sources.items():
            for metric in wanted:
                emit(method, reference, metric, pair_scores(maps, ref, metric))
        for method, partner in partners.items():
            maps = attributions[method]
            for metric in wanted:
                values = pair_scores(maps[partner], ref, metric)
                values[partner == np.arange(len(index))] = np.nan
                emit(f"baseline:shuffled:{method}", reference, metric, values)
    if "quality" in references:
        changing = {**attributions, **{k: v for k, v in sources.items() if k == "baseline:sobel"}}
        rows, deltas = quality_changes(index, changing, references["quality"])
        for method, values in deltas.items():
            emit(method, "quality_change", "cc", values, rows)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def quality_changes(
    index: pd.DataFrame, maps: Mapping[str, np.ndarray], quality: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The distorted rows that have a clean crop, and per map kind the CC of (map - clean map) with
    (quality - clean quality) on each of them."""
    clean = _clean_rows(index)
    rows = np.flatnonzero((index["corruption"] != CLEAN).to_numpy() & (clean >= 0))
    dq = quality[rows] - quality[clean[rows]]
    return rows, {
        method: pair_scores(m[rows] - m[clean[rows]], dq, "cc") if len(rows) else np.zeros(0)
        for method, m in maps.items()
    }
