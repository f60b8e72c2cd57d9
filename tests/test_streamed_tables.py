"""Tables read from disk in pieces give exactly what the whole table read into pandas gave.

Each streamed reader (summary, robustness, statistics across conditions, the report's CSV twins, the explain
stage's row selections) is checked against the old computation on ``EVAL.read(path)`` -- the whole table in
pandas -- on a file of several row groups whose rows are shuffled, with failed rows, missing values, a second
set and ties.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saliqa.explain.statistics import eval_statistics, eval_statistics_file
from saliqa.io.tables import read_frame
from saliqa.pipeline.stages.evaluate import image_pairs, status_counts
from saliqa.pipeline.stages.explain import change_rows
from saliqa.pipeline.stages.report import write_csv_twin
from saliqa.pipeline.tables import EVAL
from saliqa.robustness import corruption_errors, top1_errors
from saliqa.stats import summarize_eval, summarize_eval_file

CONDITIONS = [("none", 0), ("fog", 1), ("fog", 3), ("contrast", 2), ("gaussian_noise", 1)]


def _frame(seed: int = 0, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for eval_set, images in (("val", n), ("extra", n // 3)):
        for i in range(images):
            ok = i % 7 != 4
            for k, (corruption, severity) in enumerate(CONDITIONS):
                top1 = bool(rng.random() < 0.9 - 0.15 * k)
                rows.append(EVAL.row(
                    image_id=f"{eval_set}_{i:03d}.jpg", label=f"c{i % 3}", corruption=corruption,
                    severity=severity, pred="c0", top1=top1 if ok else None, top5=True if ok else None,
                    prob_true=float(rng.random()) if ok else np.nan,
                    score=float(np.round(rng.normal(40, 10), 1)) if ok else np.nan,
                    quality=float(np.round(rng.uniform(20, 90), 0)) if ok else np.nan,  # ties on purpose
                    psnr=(np.inf if severity == 0 else float(rng.uniform(15, 40))) if ok else np.nan,
                    ms_ssim=(np.nan if k == 3 else float(rng.uniform(0.3, 1))) if ok else np.nan,
                    set=eval_set, upscaled=False if ok else None, status="ok" if ok else "failed",
                    reason=None if ok else "decode error",
                ))  # fmt: skip
    return EVAL.frame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _write(path: Path, frame: pd.DataFrame, row_group: int = 37) -> Path:
    """``frame`` as an eval table of several row groups (the way evaluate's shards make one)."""
    table = pa.Table.from_pandas(frame, schema=EVAL.arrow, preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group)
    assert pq.ParquetFile(path).num_row_groups > 3
    return path


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("streamed") / "eval.parquet", _frame())


@pytest.mark.parametrize("budget", [1, 50, 10**6])
def test_summary_from_the_file_equals_the_whole_frame_summary(eval_file: Path, budget: int) -> None:
    whole = summarize_eval(EVAL.read(eval_file), seed=5, n_boot=300)
    streamed = summarize_eval_file(eval_file, seed=5, n_boot=300, budget=budget)
    pd.testing.assert_frame_equal(streamed, whole, check_exact=True)
    assert list(streamed["set"].unique()) == ["val", "extra"] and len(streamed) == 2 * len(CONDITIONS)


def test_summary_file_checks_like_the_frame(tmp_path: Path) -> None:
    frame = _frame(n=6)
    with pytest.raises(ValueError, match="lacks columns"):
        pq.write_table(pa.Table.from_pandas(frame.drop(columns="status")), tmp_path / "a.parquet")
        summarize_eval_file(tmp_path / "a.parquet", seed=0)
    frame.loc[3, "corruption"] = None
    with pytest.raises(ValueError, match="empty"):
        summarize_eval_file(_write(tmp_path / "b.parquet", frame, row_group=5), seed=0)


def test_an_empty_file_gives_the_empty_summary(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(EVAL.arrow.empty_table(), path)
    pd.testing.assert_frame_equal(
        summarize_eval_file(path, seed=0), summarize_eval(EVAL.read(path), seed=0), check_exact=True
    )


def test_robustness_from_files_equals_the_frames(eval_file: Path, tmp_path: Path) -> None:
    other = _write(tmp_path / "other.parquet", _frame(seed=1))
    ours, theirs = EVAL.read(eval_file), EVAL.read(other)
    pd.testing.assert_frame_equal(top1_errors(eval_file), top1_errors(ours), check_exact=True)
    pd.testing.assert_frame_equal(
        corruption_errors(eval_file, other), corruption_errors(ours, theirs), check_exact=True
    )
    pd.testing.assert_frame_equal(corruption_errors(eval_file), corruption_errors(ours), check_exact=True)


def test_statistics_from_the_file_equal_the_whole_frame(eval_file: Path) -> None:
    whole = eval_statistics(EVAL.read(eval_file), n_boot=200, seed=2)
    streamed = eval_statistics_file(eval_file, n_boot=200, seed=2)
    pd.testing.assert_frame_equal(streamed, whole, check_exact=True)
    assert set(streamed["set"]) == {"val", "extra"}


def test_row_selections_keep_file_order_and_dtypes(eval_file: Path) -> None:
    whole = EVAL.read(eval_file)
    rows = change_rows(eval_file)
    expected = whole[(whole["status"] == "ok") & (whole["set"] == "val")][list(rows.columns)]
    pd.testing.assert_frame_equal(rows, expected.reset_index(drop=True), check_exact=True)
    clean = read_frame(eval_file, ["image_id"], where={"corruption": "none", "severity": 0})
    assert clean["image_id"].tolist() == whole.loc[whole["corruption"] == "none", "image_id"].tolist()
    nothing = read_frame(eval_file, ["image_id", "top1"], where={"set": "nowhere"})
    assert nothing.empty and str(nothing["top1"].dtype) == "boolean"


def test_status_counts_and_image_pairs(eval_file: Path) -> None:
    whole = EVAL.read(eval_file)
    assert status_counts(eval_file) == whole["status"].value_counts().to_dict()
    pairs = image_pairs(eval_file)
    expected = whole[["set", "image_id"]].drop_duplicates()
    assert sorted(map(tuple, pairs.to_numpy())) == sorted(map(tuple, expected.to_numpy()))


@pytest.mark.parametrize("name", ["eval", "empty"])
def test_csv_twin_is_the_whole_table_s_csv(eval_file: Path, tmp_path: Path, name: str) -> None:
    path = eval_file
    if name == "empty":
        path = tmp_path / "empty.parquet"
        EVAL.write(path, EVAL.empty())
    twin = write_csv_twin(path)
    assert twin.read_text(encoding="utf-8") == pd.read_parquet(path).to_csv(index=False)
