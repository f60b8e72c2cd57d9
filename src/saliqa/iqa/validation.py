"""How far a quality judge agrees with human opinion: correlation metrics, the VQEG logistic mapping, bootstrap
intervals. Pure functions over arrays (scores and MOS), usable on any judge and any set.

Conventions (those of the IQA literature: VQEG's FR-TV Phase II report, and the benchmarks that follow it):

- ``SROCC`` is Spearman's rank correlation (average ranks for ties), ``KROCC`` Kendall's tau-b, ``PLCC`` Pearson's
  correlation of the scores as they are. Every correlation is computed on ``sign * score`` with ``sign = -1`` for a
  lower-is-better judge (NIQE, BRISQUE, PIQE), so a positive value always means agreement with humans.
- ``RMSE`` is in MOS units, of the least-squares *line* from score to MOS: a judge's raw scale is not MOS's (NIQE
  ~2-20 against CLIVE's 0-100), so a raw difference would measure scales, not agreement.
- ``PLCC`` and ``RMSE`` after the VQEG 4-parameter logistic: ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``
  fitted to (score, MOS) by least squares (:func:`fit_logistic`); ``b1`` is MOS at high scores, ``b2`` at low
  ones, so a lower-is-better judge gets ``b1 < b2``. This is what published PLCCs of NR models are (pyiqa's
  benchmark table included).
- Intervals: percentile bootstrap over pictures (the same resamples for every metric, the logistic refitted on
  each), from a stream seeded by ``seed`` alone, on pictures put in a canonical order first, so the numbers do not
  depend on the order the pictures came in.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from saliqa.seeding import rng_for

METRICS: tuple[str, ...] = ("srocc", "krocc", "plcc", "rmse", "plcc_logistic", "rmse_logistic")
"""The agreement metrics, in report order."""

METRIC_DESCRIPTIONS: dict[str, str] = {
    "srocc": "Spearman rank correlation with MOS (positive = agrees)",
    "krocc": "Kendall tau-b with MOS (positive = agrees)",
    "plcc": "Pearson correlation of the raw score with MOS (positive = agrees)",
    "rmse": "RMSE of the least-squares line from score to MOS, in MOS units",
    "plcc_logistic": "Pearson correlation with MOS after the VQEG 4-parameter logistic",
    "rmse_logistic": "RMSE after the VQEG 4-parameter logistic, in MOS units",
}

LOGISTIC_FORMULA = "f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2"
"""The mapping fitted from a judge's score x to MOS (VQEG FR-TV Phase II, 4 parameters)."""

_MAX_INDICES = 2_000_000
"""Resampled indices held at once (16 MB); the chunk size never changes a result (rows drawn in order)."""


# -- point metrics -----------------------------------------------------------------------------------------------
def _pair(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"scores and MOS must have the same length, got {a.size} and {b.size}")
    return a, b


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of two (k, n) arrays; NaN for a constant row."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    num = (xc * yc).sum(axis=-1)
    den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def plcc(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Pearson's linear correlation; NaN when either side is constant or there are fewer than 2 values."""
    a, b = _pair(x, y)
    return float(_rowwise_pearson(a, b)) if a.size >= 2 else math.nan


def srocc(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks (ties share their mean rank)."""
    a, b = _pair(x, y)
    return plcc(stats.rankdata(a), stats.rankdata(b)) if a.size >= 2 else math.nan


def krocc(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected), O(n log n); NaN when undefined."""
    a, b = _pair(x, y)
    if a.size < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: scipy warns and returns NaN, which is the answer
        return float(stats.kendalltau(a, b, variant="b").statistic)


def rmse(predicted: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Root mean squared difference, in the units of ``y``."""
    a, b = _pair(predicted, y)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else math.nan


# -- the logistic mapping ----------------------------------------------------------------------------------------
def vqeg_logistic(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG's 4-parameter logistic, ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``, overflow-safe."""
    z = -(np.asarray(x, dtype=np.float64) - b3) / max(abs(b4), 1e-300)
    return (b1 - b2) * _expit_neg(z) + b2


def _expit_neg(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(z))`` without overflow warnings for large |z|."""
    out = np.empty_like(z)
    pos = z > 0
    e = np.exp(-z[pos])
    out[pos] = e / (1.0 + e)
    out[~pos] = 1.0 / (1.0 + np.exp(z[~pos]))
    return out


@dataclass(frozen=True)
class LogisticFit:
    """A fitted mapping from score to MOS: the VQEG logistic, or the least-squares line when it failed."""

    kind: str
    """``logistic``, or ``linear`` when the logistic did not converge (see ``note``)."""
    params: tuple[float, ...]
    """(b1, b2, b3, b4) of :data:`LOGISTIC_FORMULA`; (slope, intercept) for ``linear``."""
    note: str = ""
    """Why the line was used, when it was."""

    def __call__(self, x: np.ndarray | Sequence[float]) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "logistic":
            return vqeg_logistic(x, *self.params)
        slope, intercept = self.params
        return slope * x + intercept

    @property
    def converged(self) -> bool:
        return self.kind == "logistic"


def fit_line(x: np.ndarray, y: np.ndarray) -> LogisticFit:
    """Least-squares line ``y = slope x + intercept`` (a flat line at mean(y) when x is constant)."""
    x, y = _pair(x, y)
    xc = x - x.mean()
    var = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / var if var > 0 else 0.0
    return LogisticFit("linear", (slope, float(y.mean() - slope * x.mean())))


def logistic_starts(
    x: np.ndarray, y: np.ndarray, increasing: bool
) -> list[tuple[float, float, float, float]]:
    """Starting points: VQEG's usual ``(max MOS, min MOS, mean score, std(score) / 4)`` (pyiqa's too), its
    asymptotes swapped for a judge whose MOS falls as its score rises, then wider and narrower slopes."""
    hi, lo = float(np.max(y)), float(np.min(y))
    b1, b2 = (hi, lo) if increasing else (lo, hi)
    spread = float(np.std(x)) or 1.0
    centre = float(np.mean(x))
    return [
        (b1, b2, centre, spread / 4),
        (b1, b2, float(np.median(x)), spread),
        (b1, b2, centre, spread / 16),
    ]


def _try_fit(
    x: np.ndarray, y: np.ndarray, start: Sequence[float], maxfev: int
) -> tuple[tuple[float, ...], float] | None:
    """(params, SSE) of one curve_fit from ``start``, or None when it did not converge to finite numbers."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # no covariance: irrelevant to the fit itself
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = curve_fit(vqeg_logistic, x, y, p0=list(start), maxfev=maxfev)
    except (RuntimeError, ValueError, FloatingPointError):
        return None
    if not np.all(np.isfinite(params)):
        return None
    residual = vqeg_logistic(x, *params) - y
    sse = float(residual @ residual)
    return (tuple(float(p) for p in params), sse) if math.isfinite(sse) else None


def fit_logistic(
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    *,
    increasing: bool | None = None,
    starts: Sequence[Sequence[float]] | None = None,
    maxfev: int = 10_000,
    first_acceptable: bool = False,
) -> LogisticFit:
    """The VQEG 4-parameter logistic from score ``x`` to MOS ``y``, by ``scipy.optimize.curve_fit``.

    ``increasing`` says whether MOS rises with the score (default: the sign of Spearman's rho); it only orients
    the starting asymptotes. Each start (:func:`logistic_starts` unless ``starts``) is tried and the lowest sum of
    squares kept. When none converges to finite parameters, or the best is worse than a straight line (a local
    minimum), the least-squares line is returned with ``kind="linear"`` and a ``note`` saying so: PLCC after it
    equals |PLCC| and its RMSE is the linear one, never a made-up curve. ``first_acceptable`` stops at the first
    start that converges no worse than the line (the bootstrap, whose first start is the fit on all pictures).
    ``b4`` is returned as ``|b4|`` (the function only uses its magnitude).
    """
    x, y = _pair(x, y)
    line = fit_line(x, y)
    if x.size < 5 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return LogisticFit("linear", line.params, f"too few distinct values to fit 4 parameters (n={x.size})")
    if increasing is None:
        rho = srocc(x, y)
        increasing = not (rho < 0)
    residual = line(x) - y
    line_sse = float(residual @ residual) * (1 + 1e-9)
    best: tuple[tuple[float, ...], float] | None = None
    for start in starts if starts is not None else logistic_starts(x, y, increasing):
        found = _try_fit(x, y, start, maxfev)
        if found is not None and (best is None or found[1] < best[1]):
            best = found
            if first_acceptable and best[1] <= line_sse:
                break
    if best is None:
        return LogisticFit("linear", line.params, "the logistic fit did not converge from any start")
    if best[1] > line_sse:
        return LogisticFit("linear", line.params, "the logistic fit ended worse than a straight line")
    b1, b2, b3, b4 = best[0]
    return LogisticFit("logistic", (b1, b2, b3, abs(b4)))


# -- all metrics at once -----------------------------------------------------------------------------------------
def oriented(score: np.ndarray | Sequence[float], higher_is_better: bool) -> np.ndarray:
    """The score with the sign that makes agreement with MOS positive (``-score`` for lower-is-better)."""
    s = np.asarray(score, dtype=np.float64)
    return s if higher_is_better else -s


def agreement(
    score: np.ndarray | Sequence[float],
    mos: np.ndarray | Sequence[float],
    *,
    higher_is_better: bool,
    fit: LogisticFit | None = None,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one set of pictures (``fit``: the logistic to use, else fitted here)."""
    s, y = _pair(score, mos)
    o = oriented(s, higher_is_better)
    fit = fit if fit is not None else fit_logistic(s, y, increasing=higher_is_better)
    mapped = fit(s)
    line = fit_line(s, y)
    return {
        "srocc": srocc(o, y),
        "krocc": krocc(o, y),
        "plcc": plcc(o, y),
        "rmse": rmse(line(s), y),
        "plcc_logistic": plcc(mapped, y),
        "rmse_logistic": rmse(mapped, y),
    }


@dataclass(frozen=True)
class Interval:
    """A metric with its percentile-bootstrap interval."""

    value: float
    lo: float
    hi: float
    n_boot: int
    """Resamples with a finite value (a resample of constant values has no correlation)."""


@dataclass(frozen=True)
class Agreement:
    """Every metric with its interval, and the logistic fitted on all pictures."""

    metrics: dict[str, Interval]
    fit: LogisticFit
    n: int
    boot_fits_linear: int
    """Resamples whose logistic fell back to a line (counted, not hidden)."""


def _interval(values: np.ndarray, level: float) -> tuple[float, float, int]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan, 0
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha], method="linear")
    return float(lo), float(hi), int(finite.size)


def canonical_order(ids: Sequence[str]) -> np.ndarray:
    """Positions that sort pictures by id: resampling in this order makes intervals independent of input order."""
    return np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable")


def bootstrap_agreement(
    score: np.ndarray | Sequence[float],
    mos: np.ndarray | Sequence[float],
    *,
    higher_is_better: bool,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    key: Sequence[object] = (),
) -> Agreement:
    """Every metric on all pictures with its percentile-bootstrap interval at ``level``.

    Pictures are resampled with replacement ``n_boot`` times from the stream ``rng_for(seed, "iqa-agreement",
    *key)``; every metric is computed on the same resamples and the logistic is refitted on each (starting from
    the fit on all pictures, then the usual starts). Pass the pictures in a canonical order
    (:func:`canonical_order`) for numbers that do not depend on input order. ``n_boot = 0`` gives no interval.
    """
    s, y = _pair(score, mos)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be 0 or more, got {n_boot}")
    fit = fit_logistic(s, y, increasing=higher_is_better)
    point = agreement(s, y, higher_is_better=higher_is_better, fit=fit)
    n = s.size
    if n_boot == 0 or n < 2:
        metrics = {m: Interval(v, math.nan, math.nan, 0) for m, v in point.items()}
        return Agreement(metrics, fit, n, 0)
    rng = rng_for(seed, "iqa-agreement", *key)
    draws = {m: np.empty(n_boot) for m in METRICS}
    linear = 0
    starts = logistic_starts(s, y, higher_is_better)
    if fit.converged:
        starts = [fit.params, *starts]
    rows = max(1, _MAX_INDICES // n)
    for first in range(0, n_boot, rows):
        last = min(n_boot, first + rows)
        idx = rng.integers(0, n, size=(last - first, n))
        xs, ys = s[idx], y[idx]
        os_ = oriented(xs, higher_is_better)
        draws["srocc"][first:last] = _rowwise_pearson(stats.rankdata(os_, axis=1), stats.rankdata(ys, axis=1))
        draws["plcc"][first:last] = _rowwise_pearson(os_, ys)
        for k in range(last - first):
            draws["krocc"][first + k] = krocc(os_[k], ys[k])
            line = fit_line(xs[k], ys[k])
            draws["rmse"][first + k] = rmse(line(xs[k]), ys[k])
            boot_fit = fit_logistic(
                xs[k], ys[k], increasing=higher_is_better, starts=starts, first_acceptable=True
            )
            linear += not boot_fit.converged
            mapped = boot_fit(xs[k])
            draws["plcc_logistic"][first + k] = plcc(mapped, ys[k])
            draws["rmse_logistic"][first + k] = rmse(mapped, ys[k])
    metrics = {}
    for m in METRICS:
        lo, hi, used = _interval(draws[m], level)
        metrics[m] = Interval(point[m], lo, hi, used)
    return Agreement(metrics, fit, n, linear)


# -- per category ------------------------------------------------------------------------------------------------
def mean_interval(
    values: np.ndarray, *, n_boot: int, level: float, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(mean, lo, hi) by :func:`saliqa.stats.bootstrap_mean_ci` (the summaries' helper); NaNs for no values."""
    from saliqa.stats import bootstrap_mean_ci

    if n_boot == 0 or values.size < 2:
        return (float(values.mean()) if values.size else math.nan, math.nan, math.nan)
    return bootstrap_mean_ci(values, n_boot=n_boot, level=level, rng=rng)


def category_table(
    categories: Sequence[str | None],
    score: np.ndarray | Sequence[float],
    mos: np.ndarray | Sequence[float],
    *,
    order: Sequence[str],
    higher_is_better: bool,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    key: Sequence[object] = (),
) -> list[dict[str, object]]:
    """One row per category of ``order`` (every one, even when empty): how many pictures the judge put there,
    their MOS (mean with a bootstrap interval, sd, median), the judge's scores, and SROCC within the category
    with its interval. Resampling streams are keyed by category, so categories do not disturb each other."""
    s, y = _pair(score, mos)
    cats = np.asarray([c if c is not None else "" for c in categories], dtype=object)
    if cats.size != s.size:
        raise ValueError("categories, scores and MOS must have the same length")
    total = s.size
    out: list[dict[str, object]] = []
    for category in order:
        keep = cats == category
        cs, cy = s[keep], y[keep]
        mean, lo, hi = mean_interval(
            cy, n_boot=n_boot, level=level, rng=rng_for(seed, "iqa-category-mos", *key, category)
        )
        r_lo, r_hi = _srocc_interval(cs, cy, higher_is_better, n_boot, level, seed, (*key, category))
        out.append(
            {
                "category": category,
                "n": int(cs.size),
                "share": cs.size / total if total else math.nan,
                "mos_mean": mean,
                "mos_lo": lo,
                "mos_hi": hi,
                "mos_sd": float(cy.std(ddof=1)) if cy.size >= 2 else math.nan,
                "mos_median": float(np.median(cy)) if cy.size else math.nan,
                "score_mean": float(cs.mean()) if cs.size else math.nan,
                "score_min": float(cs.min()) if cs.size else math.nan,
                "score_max": float(cs.max()) if cs.size else math.nan,
                "srocc": srocc(oriented(cs, higher_is_better), cy),
                "srocc_lo": r_lo,
                "srocc_hi": r_hi,
            }
        )
    return out


def _srocc_interval(
    s: np.ndarray, y: np.ndarray, higher_is_better: bool, n_boot: int, level: float, seed: int, key: tuple
) -> tuple[float, float]:
    """Bootstrap interval of SROCC alone (cheap: no logistic), vectorised over resamples."""
    n = s.size
    if n_boot == 0 or n < 3:
        return math.nan, math.nan
    rng = rng_for(seed, "iqa-category-srocc", *key)
    values = np.empty(n_boot)
    rows = max(1, _MAX_INDICES // n)
    for first in range(0, n_boot, rows):
        last = min(n_boot, first + rows)
        idx = rng.integers(0, n, size=(last - first, n))
        values[first:last] = _rowwise_pearson(
            stats.rankdata(oriented(s[idx], higher_is_better), axis=1), stats.rankdata(y[idx], axis=1)
        )
    lo, hi, _ = _interval(values, level)
    return lo, hi
