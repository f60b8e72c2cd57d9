"""CE, relative CE and mCE (Hendrycks & Dietterich 2019) against a baseline run and against AlexNet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saliqa.corrupt import CLEAN, corruption_names
from saliqa.robustness import ROBUSTNESS_COLUMNS, alexnet_errors, corruption_errors, top1_errors


def _eval_table(errors: dict[tuple[str, int], float], n: int = 20, set_name: str = "val") -> pd.DataFrame:
    """An eval table whose top-1 error per condition is exactly ``errors`` (multiples of 1/n)."""
    rows = []
    for (corruption, severity), error in errors.items():
        wrong = round(error * n)
        for i in range(n):
            rows.append(
                {
                    "image_id": f"im{i}",
                    "set": set_name,
                    "corruption": corruption,
                    "severity": severity,
                    "status": "ok",
                    "top1": i >= wrong,
                }
            )
    # a failed image must not count
    rows.append(
        {
            "image_id": "bad",
            "set": set_name,
            "corruption": CLEAN,
            "severity": 0,
            "status": "failed",
            "top1": None,
        }
    )
    return pd.DataFrame(rows)


def test_top1_errors_count_ok_rows_only() -> None:
    errors = top1_errors(_eval_table({(CLEAN, 0): 0.25, ("fog", 1): 0.5}))
    assert errors.set_index(["corruption", "severity"])["top1_error"].to_dict() == {
        (CLEAN, 0): 0.25,
        ("fog", 1): 0.5,
    }


def test_ce_and_relative_ce_by_hand() -> None:
    model = _eval_table({(CLEAN, 0): 0.2, ("fog", 1): 0.3, ("fog", 2): 0.5, ("contrast", 1): 0.4})
    base = _eval_table({(CLEAN, 0): 0.1, ("fog", 1): 0.4, ("fog", 2): 0.6, ("contrast", 1): 0.2})
    table = corruption_errors(model, base).set_index("corruption")
    assert tuple(corruption_errors(model, base).columns) == ROBUSTNESS_COLUMNS
    fog = table.loc["fog"]
    assert fog["ce"] == pytest.approx((0.3 + 0.5) / (0.4 + 0.6))
    assert fog["relative_ce"] == pytest.approx((0.3 + 0.5 - 2 * 0.2) / (0.4 + 0.6 - 2 * 0.1))
    assert fog["severities"] == "1,2" and not fog["complete"] and not fog["approximate"]
    assert table.loc["contrast", "ce"] == pytest.approx(2.0)
    mean = table.loc["mCE"]
    assert mean["ce"] == pytest.approx(np.mean([fog["ce"], 2.0])) and mean["n_corruptions"] == 2
    assert mean["relative_ce"] == pytest.approx(np.mean([fog["relative_ce"], (0.4 - 0.2) / (0.2 - 0.1)]))


def test_a_model_against_itself_scores_one_everywhere() -> None:
    errors = {(CLEAN, 0): 0.1, **{(c, s): 0.2 + 0.1 * s for c in corruption_names() for s in range(1, 6)}}
    table = corruption_errors(_eval_table(errors), _eval_table(errors))
    assert np.allclose(table["ce"], 1.0) and np.allclose(table["relative_ce"], 1.0)
    assert table["complete"].all() and len(table) == 19 + 1
    assert table.set_index("corruption").loc["mCE", "n_corruptions"] == 15  # extras are not in mCE


def test_severities_missing_on_one_side_are_left_out() -> None:
    model = _eval_table({(CLEAN, 0): 0.1, ("fog", 1): 0.2, ("fog", 3): 0.9})
    base = _eval_table({(CLEAN, 0): 0.1, ("fog", 1): 0.4, ("fog", 2): 0.6})
    fog = corruption_errors(model, base).set_index("corruption").loc["fog"]
    assert fog["severities"] == "1" and fog["ce"] == pytest.approx(0.5)


def test_sets_are_matched_by_name() -> None:
    model = pd.concat(
        [
            _eval_table({(CLEAN, 0): 0.1, ("fog", 1): 0.2}),
            _eval_table({(CLEAN, 0): 0.1, ("fog", 1): 0.3}, set_name="test"),
        ]
    )
    base = _eval_table({(CLEAN, 0): 0.1, ("fog", 1): 0.4}, set_name="test")
    table = corruption_errors(model, base)
    assert set(table["set"]) == {"test"}
    assert table.set_index("corruption").loc["fog", "ce"] == pytest.approx(0.75)


def test_alexnet_errors_agree_with_the_papers_means() -> None:
    """The per-severity table averages to the published per-corruption AlexNet errors (ImageNet-C paper)."""
    published = {
        "gaussian_noise": 0.886428,
        "shot_noise": 0.894468,
        "impulse_noise": 0.922640,
        "defocus_blur": 0.819880,
        "glass_blur": 0.826268,
        "motion_blur": 0.785948,
    }
    table = alexnet_errors()
    means = table[table["corruption"] != CLEAN].groupby("corruption")["top1_error"].mean()
    for name, value in published.items():
        assert means[name] == pytest.approx(value, abs=1e-9)
    assert sorted(means.index) == sorted(corruption_names("common"))
    assert (table.groupby("corruption").size().drop(CLEAN) == 5).all()


def test_against_alexnet_is_flagged_approximate_and_skips_extras() -> None:
    errors = {(CLEAN, 0): 0.2, **{(c, s): 0.5 for c in corruption_names() for s in range(1, 6)}}
    table = corruption_errors(_eval_table(errors)).set_index("corruption")
    assert table["approximate"].all() and set(table["reference"]) == {"alexnet"}
    assert "saturate" not in table.index and len(table) == 16
    assert table.loc["fog", "ce"] == pytest.approx(0.5 / 0.819324, rel=1e-6)
    assert table.loc["fog", "relative_ce"] == pytest.approx((0.5 - 0.2) / (0.819324 - 0.43478), rel=1e-6)
    assert table.loc["mCE", "complete"]
