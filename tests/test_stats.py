"""Bootstrap intervals and the evaluation summary, checked against scipy and normal theory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from saliqa import stats
from saliqa.seeding import rng_for
from saliqa.stats import SUMMARY_COLUMNS, bootstrap_mean_ci, summarize_eval

Z975 = sps.norm.ppf(0.975)


def _mc_tolerance(se: float, n_boot: int, level: float = 0.95, n_sd: float = 5.0) -> float:
    """Allowed gap between two independent bootstrap endpoints of a near-normal mean.

    A quantile q_p estimated from B draws has sd sqrt(p(1-p)/B) / f(q_p), with f the bootstrap density
    N(mean, se^2) at q_p; two independent estimates differ by sqrt(2) times that. n_sd = 5 makes a false
    failure practically impossible (and the seeds are fixed anyway).
    """
    p = (1 - level) / 2
    density = sps.norm.pdf(sps.norm.ppf(p)) / se
    return n_sd * np.sqrt(2) * np.sqrt(p * (1 - p) / n_boot) / density


# ---------------------------------------------------------------- bootstrap_mean_ci


def test_agrees_with_scipy_percentile_bootstrap() -> None:
    x = np.random.default_rng(1).normal(3.0, 2.0, size=2000)
    n_boot = 4000
    mean, lo, hi = bootstrap_mean_ci(x, n_boot=n_boot, rng=np.random.default_rng(2))
    ref = sps.bootstrap(
        (x,),
        np.mean,
        method="percentile",
        n_resamples=n_boot,
        confidence_level=0.95,
        random_state=np.random.default_rng(3),
    )
    tol = _mc_tolerance(x.std(ddof=1) / np.sqrt(x.size), n_boot)
    assert mean == pytest.approx(x.mean())
    assert lo == pytest.approx(ref.confidence_interval.low, abs=tol)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=tol)
    # the tolerance is a fraction of the interval, so the check has teeth
    assert tol < 0.2 * (hi - lo)


def test_bernoulli_matches_normal_approximation() -> None:
    # n = 5000, p = 0.3: skewness ~1/sqrt(n p (1-p)) is negligible, so the Wald interval is the limit.
    x = (np.random.default_rng(4).random(5000) < 0.3).astype(float)
    n_boot = 4000
    mean, lo, hi = bootstrap_mean_ci(x, n_boot=n_boot, rng=np.random.default_rng(5))
    se = np.sqrt(mean * (1 - mean) / x.size)
    # Monte Carlo error plus the 1/n lattice of resampled Bernoulli means
    tol = _mc_tolerance(se, n_boot) + 1 / x.size
    assert lo == pytest.approx(mean - Z975 * se, abs=tol)
    assert hi == pytest.approx(mean + Z975 * se, abs=tol)


@pytest.mark.parametrize(
    "x",
    [
        np.random.default_rng(0).normal(size=50),
        np.random.default_rng(0).exponential(size=30),
        np.array([0.0] * 99 + [1.0]),
        np.array([0.0, 1.0]),
    ],
    ids=["normal", "skewed", "rare-event", "two-points"],
)
def test_interval_contains_mean(x: np.ndarray) -> None:
    mean, lo, hi = bootstrap_mean_ci(x, rng=np.random.default_rng(0))
    assert lo <= mean <= hi
    assert x.min() <= lo and hi <= x.max()


def test_constant_data_has_zero_width() -> None:
    assert bootstrap_mean_ci(np.full(40, 7.5), rng=np.random.default_rng(0)) == (7.5, 7.5, 7.5)


def test_empty_and_single() -> None:
    assert all(np.isnan(v) for v in bootstrap_mean_ci(np.array([]), rng=np.random.default_rng(0)))
    assert bootstrap_mean_ci(np.array([4.25]), rng=np.random.default_rng(0)) == (4.25, 4.25, 4.25)


def test_wider_level_gives_wider_interval() -> None:
    x = np.random.default_rng(0).normal(size=200)
    _, lo90, hi90 = bootstrap_mean_ci(x, level=0.90, rng=np.random.default_rng(1))
    _, lo99, hi99 = bootstrap_mean_ci(x, level=0.99, rng=np.random.default_rng(1))
    assert lo99 < lo90 and hi90 < hi99


@pytest.mark.parametrize("kwargs", [{"level": 1.0}, {"level": 0.0}, {"n_boot": 0}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        bootstrap_mean_ci(np.arange(3.0), rng=np.random.default_rng(0), **kwargs)


def test_same_seed_same_numbers() -> None:
    x = np.random.default_rng(0).normal(size=100)
    first = bootstrap_mean_ci(x, rng=np.random.default_rng(9))
    assert bootstrap_mean_ci(x, rng=np.random.default_rng(9)) == first
    assert bootstrap_mean_ci(x, rng=np.random.default_rng(10)) != first


def test_resampling_is_one_index_matrix() -> None:
    # The documented scheme: means of x[rng.integers(0, n, (n_boot, n))], row by row.
    x = np.random.default_rng(0).normal(size=37)
    idx = np.random.default_rng(3).integers(0, x.size, size=(101, x.size))
    expected = x[idx].mean(axis=1)
    np.testing.assert_array_equal(stats._resampled_means(x, 101, np.random.default_rng(3)), expected)


@pytest.mark.parametrize("max_indices", [1, 37, 100, 37 * 7, 10**9])
def test_chunking_does_not_change_result(max_indices: int) -> None:
    x = np.random.default_rng(0).normal(size=37)
    whole = stats._resampled_means(x, 101, np.random.default_rng(3), max_indices=10**9)
    chunked = stats._resampled_means(x, 101, np.random.default_rng(3), max_indices=max_indices)
    np.testing.assert_array_equal(chunked, whole)


class _CountingRng:
    """A Generator stand-in that counts draws, to prove the chunked path really ran."""

    def __init__(self, seed: int) -> None:
        self.rng, self.calls = np.random.default_rng(seed), 0

    def integers(self, *args, **kwargs):
        self.calls += 1
        return self.rng.integers(*args, **kwargs)


def test_public_function_chunks_by_module_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).normal(size=50)
    whole_rng, chunked_rng = _CountingRng(3), _CountingRng(3)
    whole = bootstrap_mean_ci(x, n_boot=333, rng=whole_rng)
    monkeypatch.setattr(stats, "_MAX_INDICES", 120)  # 2 rows per chunk, odd last chunk
    assert bootstrap_mean_ci(x, n_boot=333, rng=chunked_rng) == whole
    assert (whole_rng.calls, chunked_rng.calls) == (1, 167)


# ---------------------------------------------------------------- summarize_eval


def _eval_frame(seed: int = 0, n: int = 40, sets: tuple[str, ...] = ("val",)) -> pd.DataFrame:
    """A synthetic eval table: clean + two corruptions at severities 1-2, a few failed rows."""
    rng = np.random.default_rng(seed)
    rows = []
    conditions = [("none", 0), ("contrast", 1), ("contrast", 2), ("brightness", 1), ("brightness", 2)]
    for set_name in sets:
        for corruption, severity in conditions:
            for i in range(n):
                ok = i % 10 != 3
                top1 = bool(rng.random() < 0.7 - 0.1 * severity)
                rows.append(
                    {
                        "image_id": f"{set_name}_{i:03d}",
                        "label": f"class{i % 5}",
                        "corruption": corruption,
                        "severity": severity,
                        "pred": f"class{i % 5}" if top1 else "other",
                        "top1": top1 if ok else None,
                        "top5": (top1 or bool(rng.random() < 0.5)) if ok else None,
                        "prob_true": rng.random() if ok else np.nan,
                        "score": rng.normal(40, 10) if ok else np.nan,
                        "quality": rng.uniform(20, 90) if ok else np.nan,
                        "psnr": (np.inf if severity == 0 else rng.uniform(15, 40)) if ok else np.nan,
                        "ms_ssim": (1.0 if severity == 0 else rng.uniform(0.3, 1.0)) if ok else np.nan,
                        "set": set_name,
                        "upscaled": False,
                        "status": "ok" if ok else "failed",
                        "reason": None if ok else "decode error",
                    }
                )
    return pd.DataFrame(rows)


def test_columns_and_dtypes_exact() -> None:
    out = summarize_eval(_eval_frame(), seed=0, n_boot=200)
    assert tuple(out.columns) == SUMMARY_COLUMNS
    assert out["severity"].dtype == np.int64
    assert out["n"].dtype == np.int64 and out["n_skipped"].dtype == np.int64
    for column in SUMMARY_COLUMNS[5:]:
        assert out[column].dtype == np.float64, column
    assert pd.api.types.is_string_dtype(out["set"]) and pd.api.types.is_string_dtype(out["corruption"])


def test_empty_frame_gives_empty_summary_with_same_dtypes() -> None:
    full = summarize_eval(_eval_frame(n=3), seed=0, n_boot=10)
    empty = summarize_eval(_eval_frame(n=3).iloc[0:0], seed=0, n_boot=10)
    assert empty.empty
    assert tuple(empty.columns) == SUMMARY_COLUMNS
    pd.testing.assert_series_equal(empty.dtypes, full.dtypes)


def test_missing_column_is_reported() -> None:
    with pytest.raises(ValueError, match="status"):
        summarize_eval(_eval_frame(n=3).drop(columns="status"), seed=0)


def test_row_without_condition_is_reported() -> None:
    frame = _eval_frame(n=3)
    frame.loc[0, "set"] = None
    with pytest.raises(ValueError, match="set"):
        summarize_eval(frame, seed=0)


def test_order_of_conditions() -> None:
    frame = _eval_frame(n=4, sets=("test", "val", "extra")).iloc[::-1]  # severities arrive descending
    # first seen: brightness, then contrast; the clean rows come last in the input
    frame = pd.concat(
        [frame[frame["corruption"] == "brightness"], frame[frame["corruption"] != "brightness"]]
    )
    out = summarize_eval(frame, seed=0, n_boot=10)
    keys = list(out[["set", "corruption", "severity"]].itertuples(index=False, name=None))
    per_set = [("none", 0), ("brightness", 1), ("brightness", 2), ("contrast", 1), ("contrast", 2)]
    assert keys == [(s, c, v) for s in ("val", "extra", "test") for c, v in per_set]


def test_skipped_rows_are_counted_and_excluded() -> None:
    frame = _eval_frame(n=40)
    out = summarize_eval(frame, seed=0, n_boot=100)
    assert (out["n"] == 36).all() and (out["n_skipped"] == 4).all()
    clean = frame[(frame["corruption"] == "none") & (frame["status"] == "ok")]
    row = out.iloc[0]
    assert row["top1_acc"] == pytest.approx(clean["top1"].astype(float).mean())
    assert row["top5_acc"] == pytest.approx(clean["top5"].astype(float).mean())
    assert row["mean_quality"] == pytest.approx(clean["quality"].mean())
    assert row["mean_score"] == pytest.approx(clean["score"].mean())
    assert row["mean_ms_ssim"] == 1.0 and np.isnan(row["mean_psnr"])  # clean: +inf PSNR is no number
    hit = frame[(frame["corruption"] == "contrast") & (frame["severity"] == 2) & (frame["status"] == "ok")]
    row = out[(out["corruption"] == "contrast") & (out["severity"] == 2)].iloc[0]
    assert row["mean_psnr"] == pytest.approx(hit["psnr"].mean())
    assert row["mean_ms_ssim"] == pytest.approx(hit["ms_ssim"].mean())


def test_interval_uses_the_condition_stream_on_rows_sorted_by_id() -> None:
    frame = _eval_frame(n=30).sample(frac=1.0, random_state=1)
    out = summarize_eval(frame, seed=11, n_boot=300)
    cond = frame[(frame["corruption"] == "contrast") & (frame["severity"] == 2) & (frame["status"] == "ok")]
    values = cond.sort_values("image_id")["quality"].to_numpy(dtype=float)
    expected = bootstrap_mean_ci(
        values, n_boot=300, rng=rng_for(11, "bootstrap", "val", "contrast", 2, "quality")
    )
    row = out[(out["corruption"] == "contrast") & (out["severity"] == 2)].iloc[0]
    assert (row["mean_quality"], row["quality_lo"], row["quality_hi"]) == pytest.approx(expected, rel=1e-12)


def test_same_seed_same_summary_and_seed_matters() -> None:
    frame = _eval_frame()
    a = summarize_eval(frame, seed=3, n_boot=200)
    pd.testing.assert_frame_equal(a, summarize_eval(frame, seed=3, n_boot=200))
    b = summarize_eval(frame, seed=4, n_boot=200)
    assert not a["quality_lo"].equals(b["quality_lo"])


def test_independent_of_row_order() -> None:
    frame = _eval_frame()
    a = summarize_eval(frame, seed=3, n_boot=200)
    b = summarize_eval(frame.sample(frac=1.0, random_state=7), seed=3, n_boot=200)
    key = ["set", "corruption", "severity"]
    pd.testing.assert_frame_equal(
        a.sort_values(key, ignore_index=True), b.sort_values(key, ignore_index=True)
    )


def test_independent_of_other_conditions() -> None:
    frame = _eval_frame(sets=("val", "test"))
    full = summarize_eval(frame, seed=3, n_boot=200)
    alone = frame[(frame["set"] == "val") & (frame["corruption"] == "brightness") & (frame["severity"] == 2)]
    one = summarize_eval(alone, seed=3, n_boot=200)
    match = full[(full["set"] == "val") & (full["corruption"] == "brightness") & (full["severity"] == 2)]
    pd.testing.assert_frame_equal(one, match.reset_index(drop=True))


def test_nonfinite_quality_ignored_but_row_counted() -> None:
    frame = _eval_frame(n=20)
    ok_clean = frame.index[(frame["corruption"] == "none") & (frame["status"] == "ok")]
    frame.loc[ok_clean[:2], "quality"] = [np.nan, np.inf]
    row = summarize_eval(frame, seed=0, n_boot=50).iloc[0]
    assert row["n"] == 18
    finite = frame.loc[ok_clean[2:], "quality"]
    assert row["mean_quality"] == pytest.approx(finite.mean())


def test_condition_with_only_failed_rows_gives_nan() -> None:
    frame = _eval_frame(n=10)
    frame.loc[frame["corruption"] == "contrast", "status"] = "rejected"
    out = summarize_eval(frame, seed=0, n_boot=50)
    contrast = out[out["corruption"] == "contrast"]
    assert (contrast["n"] == 0).all() and (contrast["n_skipped"] == 10).all()
    assert contrast[list(SUMMARY_COLUMNS[5:])].isna().all().all()
