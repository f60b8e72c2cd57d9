"""Similarity between two maps (quality map vs attribution map) and the resampling that puts both on one grid.

The metrics follow the conventions of the MIT saliency benchmark (Bylinskii et al., "What do different
evaluation metrics tell us about saliency models?", TPAMI 2019; its MATLAB code; pysaliency), so that the
numbers can be compared with the saliency literature: same normalisation of a map into a distribution, same
regularisation constant in KL, same min-max step in SIM. Degenerate maps (constant, all zero, containing NaN)
give NaN, never an exception and never a warning, so a batch can be scored in one call.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "DEFAULT_METRICS",
    "EMD_MAX_CELLS",
    "KLD_EPS",
    "METRICS",
    "grid_edges",
    "map_similarity",
    "overlap_resample",
    "similarity_metrics",
]

METRICS: tuple[str, ...] = ("cc", "spearman", "sim", "kld", "emd", "iou@K")
"""Metric names; ``iou@K`` stands for any K in (0, 100], e.g. ``iou@20`` (top 20 % of the cells)."""

DEFAULT_METRICS: tuple[str, ...] = ("cc", "spearman", "sim", "kld", "emd", "iou@20")

KLD_EPS = 2.2204e-16
"""The regularisation constant of the MIT benchmark's ``KLdiv.m`` (MATLAB ``eps``, rounded as they wrote it)."""

EMD_MAX_CELLS = 32
"""Largest grid side for ``emd``: the exact transport problem grows as (H*W)^2."""


def similarity_metrics() -> list[str]:
    """The metric names accepted by :func:`map_similarity` (``iou@K`` as the pattern)."""
    return list(METRICS)


def _metric_error(metric: object, why: str) -> ValueError:
    return ValueError(
        f"{why}: {metric!r}. Known metrics: {', '.join(METRICS)} (iou@K with K a percentage in (0, 100], "
        "e.g. 'iou@20')."
    )


def _parse_metric(metric: str) -> tuple[str, Fraction | None]:
    """Return (name, K) with K the iou percentage as an exact fraction (None for the other metrics)."""
    if not isinstance(metric, str):
        raise _metric_error(metric, "metric must be a string")
    if metric in METRICS and metric != "iou@K":
        return metric, None
    if metric.startswith("iou@"):
        text = metric[len("iou@") :].strip()
        try:
            k = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise _metric_error(metric, "K of iou@K must be a number in (0, 100]") from None
        if not 0 < k <= 100:
            raise _metric_error(metric, "K of iou@K must be in (0, 100]")
        return "iou", k
    raise _metric_error(metric, "unknown metric")


def _as_float64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array or tensor: {err}") from None


def _rows_cc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation row by row; the caller masks constant rows."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    num = (xc * yc).sum(axis=1)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def _distribution(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows as distributions (subtract the minimum only if negative, divide by the sum); (dist, sum > 0)."""
    x = x - np.minimum(x.min(axis=1, keepdims=True), 0.0)
    total = x.sum(axis=1, keepdims=True)
    ok = total[:, 0] > 0
    return x / np.where(total > 0, total, 1.0), ok


@functools.lru_cache(maxsize=8)
def _cell_distances(h: int, w: int) -> np.ndarray:
    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    pts = np.stack([rr.ravel(), cc.ravel()], axis=1)
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2))
    d.setflags(write=False)
    return d


def _emd_rows(p: np.ndarray, q: np.ndarray, h: int, w: int) -> np.ndarray:
    import ot  # POT; only this metric needs it

    dist = _cell_distances(h, w)
    out = np.empty(p.shape[0], dtype=np.float64)
    for i in range(p.shape[0]):
        # Cells without mass carry no flow: solving on the support only is exact and much faster.
        sp, sq = np.flatnonzero(p[i] > 0), np.flatnonzero(q[i] > 0)
        a, b = p[i, sp], q[i, sq]
        a, b = a / a.sum(), b / b.sum()  # re-close the masses so POT's marginal check never complains
        out[i] = float(ot.emd2(a, b, dist[np.ix_(sp, sq)], numItermax=10_000_000))
    return out


def _top_k_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest cells per row; ties go to the lower flattened index."""
    order = np.argsort(-x, axis=1, kind="stable")[:, :k]
    mask = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def map_similarity(a: Any, b: Any, metric: str) -> float | np.ndarray:
    """Similarity of map ``a`` (e.g. an attribution map) and map ``b`` (e.g. the quality map it is held to).

    ``a`` and ``b``: same shape, (H, W) or (B, H, W), numpy or torch. Returns a float for (H, W), a float64
    array (B,) for (B, H, W). ``kld`` is KL(b || a) as in the MIT benchmark with ``a`` the prediction and
    ``b`` the reference; the other metrics are symmetric. See the module docstring for NaN rules.
    """
    name, k_percent = _parse_metric(metric)
    x, y = _as_float64(a, "a"), _as_float64(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"maps must have the same shape, got {x.shape} and {y.shape} (metric {metric!r})")
    if x.ndim not in (2, 3):
        raise ValueError(f"maps must be (H, W) or (B, H, W), got shape {x.shape}")
    single = x.ndim == 2
    if single:
        x, y = x[None], y[None]
    bsz, h, w = x.shape
    n = h * w
    if n == 0:
        raise ValueError(f"maps must have at least one cell, got shape {x.shape[1:]}")
    if name == "emd" and max(h, w) > EMD_MAX_CELLS:
        raise ValueError(
            f"emd is limited to grids of at most {EMD_MAX_CELLS} x {EMD_MAX_CELLS} cells, got {h} x {w}: "
            "pool both maps to a coarser grid first (overlap_resample)"
        )
    x, y = x.reshape(bsz, n), y.reshape(bsz, n)
    # Any non-finite cell makes the pair NaN; zero those rows so the arithmetic below stays quiet.
    valid = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    x = np.where(valid[:, None], x, 0.0)
    y = np.where(valid[:, None], y, 0.0)

    with np.errstate(all="ignore"):
        if name in ("cc", "spearman", "sim"):
            # Constant maps (exactly max == min) are undefined for all three.
            valid &= (x.max(axis=1) > x.min(axis=1)) & (y.max(axis=1) > y.min(axis=1))
        if name == "cc":
            res = _rows_cc(x, y)
        elif name == "spearman":
            res = _rows_cc(
                rankdata(x, method="average", axis=1).astype(np.float64),
                rankdata(y, method="average", axis=1).astype(np.float64),
            )
        elif name == "sim":

            def minmax_dist(z: np.ndarray) -> np.ndarray:
                lo, hi = z.min(axis=1, keepdims=True), z.max(axis=1, keepdims=True)
                z = (z - lo) / np.where(hi > lo, hi - lo, 1.0)
                return z / np.where(hi > lo, z.sum(axis=1, keepdims=True), 1.0)

            res = np.minimum(minmax_dist(x), minmax_dist(y)).sum(axis=1)
        elif name in ("kld", "emd"):
            p, ok_p = _distribution(x)
            q, ok_q = _distribution(y)
            valid &= ok_p & ok_q
            if name == "kld":
                res = (q * np.log(KLD_EPS + q / (p + KLD_EPS))).sum(axis=1)
            else:
                res = np.full(bsz, np.nan)
                if valid.any():
                    res[valid] = _emd_rows(p[valid], q[valid], h, w)
        else:  # iou
            assert k_percent is not None
            k = math.ceil(k_percent * n / 100)
            ma, mb = _top_k_mask(x, k), _top_k_mask(y, k)
            inter = (ma & mb).sum(axis=1)
            res = inter / (2 * k - inter)
    res = np.where(valid, res, np.nan).astype(np.float64)
    return float(res[0]) if single else res


def grid_edges(
    height: float, width: float, rows: int, cols: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Edges of a regular ``rows`` x ``cols`` grid over a ``height`` x ``width`` image (``np.linspace``)."""
    if int(rows) != rows or int(cols) != cols or rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be positive integers, got {rows} and {cols}")
    if not (math.isfinite(height) and math.isfinite(width) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive, got {height} and {width}")
    r = tuple(float(v) for v in np.linspace(0.0, float(height), int(rows) + 1))
    c = tuple(float(v) for v in np.linspace(0.0, float(width), int(cols) + 1))
    return r, c


def _edges(edges: Any, name: str) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all() or not (np.diff(e) > 0).all():
        raise ValueError(f"{name} must be at least two finite, strictly increasing edges, got {edges!r}")
    return e


def _overlap_matrix(to: np.ndarray, frm: np.ndarray, axis: str) -> np.ndarray:
    """Lengths of overlap (n_to, n_from) of target intervals with source intervals."""
    extent = frm[-1] - frm[0]
    tol = 1e-6 * max(extent, abs(frm[0]), abs(frm[-1]))
    if abs(to[0] - frm[0]) > tol or abs(to[-1] - frm[-1]) > tol:
        raise ValueError(
            f"{axis} target edges span [{to[0]}, {to[-1]}] but source edges span [{frm[0]}, {frm[-1]}]: "
            "both must cover the same extent"
        )
    lo = np.maximum(to[:-1, None], frm[None, :-1])
    hi = np.minimum(to[1:, None], frm[None, 1:])
    ov = np.clip(hi - lo, 0.0, None)
    # Edges that coincide up to rounding must not leave slivers that count as overlap.
    ov[ov <= 1e-9 * extent] = 0.0
    return ov


def overlap_resample(
    values: Any, rows_from: Any, cols_from: Any, rows_to: Any, cols_to: Any
) -> np.ndarray | torch.Tensor:
    """Area-weighted average of block values onto target cells.

    ``values`` (B, r, c) or (r, c), numpy or torch: block (i, j) covers rows ``rows_from[i]..rows_from[i+1]``
    and columns ``cols_from[j]..cols_from[j+1]`` (pixel units). Target cell (k, l) gets the mean of the
    blocks it overlaps, weighted by overlap area; NaN blocks (not rated) are left out and the weights
    renormalised, and a cell with no rated overlap is NaN. Numpy computes in float64; torch stays on its
    device in its float dtype (at least float32).
    """
    is_torch = isinstance(values, torch.Tensor)
    shape = tuple(values.shape) if is_torch else np.shape(values)
    if len(shape) not in (2, 3):
        raise ValueError(f"values must be (r, c) or (B, r, c), got shape {shape}")
    rf, cf = _edges(rows_from, "rows_from"), _edges(cols_from, "cols_from")
    rt, ct = _edges(rows_to, "rows_to"), _edges(cols_to, "cols_to")
    if shape[-2:] != (rf.size - 1, cf.size - 1):
        raise ValueError(
            f"values have {shape[-2]} x {shape[-1]} blocks but the source edges describe "
            f"{rf.size - 1} x {cf.size - 1}"
        )
    wr = _overlap_matrix(rt, rf, "row")
    wc = _overlap_matrix(ct, cf, "column")

    if is_torch:
        dtype = values.dtype if values.is_floating_point() and values.element_size() >= 4 else torch.float32
        v = values.to(dtype)
        wr_t = torch.as_tensor(wr, dtype=dtype, device=v.device)
        wc_t = torch.as_tensor(wc, dtype=dtype, device=v.device)
        rated = ~torch.isnan(v)
        num = wr_t @ torch.where(rated, v, torch.zeros((), dtype=dtype, device=v.device)) @ wc_t.T
        den = wr_t @ rated.to(dtype) @ wc_t.T
        pos = den > 0
        return torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)), torch.nan)

    v = np.asarray(values, dtype=np.float64)
    rated = ~np.isnan(v)
    num = wr @ np.where(rated, v, 0.0) @ wc.T
    den = wr @ rated.astype(np.float64) @ wc.T
    pos = den > 0
    with np.errstate(all="ignore"):
        return np.where(pos, num / np.where(pos, den, 1.0), np.nan)
