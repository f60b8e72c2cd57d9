from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saliqa.data.split import SplitError, n_validation, quality_split


def _ratings(counts: dict[str, int], category: str = "Good") -> pd.DataFrame:
    rows = []
    for label, n in counts.items():
        for k in range(n):
            rows.append(
                {"image_id": f"{label}/{k:03d}", "label": label, "status": "ok", "category": category}
            )
    return pd.DataFrame(rows)


def test_stratified_eighty_twenty() -> None:
    ratings = _ratings({"a": 50, "b": 10, "c": 7})
    split, messages = quality_split(ratings, seed=1)
    assert not messages
    val = split[split["split"] == "val"].merge(ratings, on="image_id")["label"].value_counts()
    assert val.to_dict() == {"a": 10, "b": 2, "c": 1}  # round-half-up of 20 %: 10, 2, 1.4 -> 1
    assert (split["split"] != "excluded").all()
    assert split["image_id"].is_unique and len(split) == len(ratings)


def test_seeded_and_independent_of_row_order_and_other_classes() -> None:
    ratings = _ratings({"a": 30, "b": 30})
    first, _ = quality_split(ratings, seed=3)
    shuffled, _ = quality_split(ratings.sample(frac=1.0, random_state=0), seed=3)
    pd.testing.assert_frame_equal(first, shuffled)
    alone, _ = quality_split(ratings[ratings["label"] == "a"], seed=3)
    a_rows = first[first["image_id"].str.startswith("a/")].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, a_rows)
    other, _ = quality_split(ratings, seed=4)
    assert not np.array_equal(first["split"], other["split"])


def test_categories_status_and_small_classes_are_excluded_with_reasons() -> None:
    ratings = pd.concat(
        [
            _ratings({"a": 10}),
            _ratings({"a": 3}, category="Fair").assign(image_id=lambda f: f["image_id"] + "f"),
            _ratings({"tiny": 1}),
        ],
        ignore_index=True,
    )
    ratings.loc[0, "status"] = "rejected"
    ratings.loc[0, "category"] = None
    split, messages = quality_split(ratings, seed=0)
    reasons = split.set_index("image_id")["reason"]
    assert reasons["a/000"] == "status rejected"
    assert reasons["a/000f"] == "category Fair not kept"
    assert "min_per_class" in reasons["tiny/000"]
    assert len(messages) == 1 and "'tiny'" in messages[0]
    _, messages = quality_split(pd.concat([ratings, _ratings({"faironly": 4}, category="Fair")]), seed=0)
    assert any("'faironly' has 0 image(s)" in m for m in messages)
    assert (split.set_index("image_id").loc[["a/001", "a/009"], "split"] != "excluded").all()


def test_nothing_to_split_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match="widen split.keep"):
        quality_split(_ratings({"a": 5}, category="Poor"))


@pytest.mark.parametrize(("n", "expected"), [(2, 1), (3, 1), (4, 1), (5, 1), (8, 2), (13, 3), (100, 20)])
def test_n_validation(n: int, expected: int) -> None:
    assert n_validation(n, 0.2) == expected
