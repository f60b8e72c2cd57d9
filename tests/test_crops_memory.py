"""What a loader worker keeps: records packed into two shared buffers, and a heap trimmed past a slack."""

from __future__ import annotations

import math
import pickle

import pytest

from saliqa.images import DecodePolicy
from saliqa.pipeline import crops
from saliqa.pipeline.crops import CropsDataset, HeapTrim, PackedRecords
from saliqa.pipeline.plan import CropPlan, conditions

RECORDS = [
    {"image_id": "a.jpg", "path": "/x/a.jpg", "label": "cat", "set": "val", "present": True, "reason": None},
    {"image_id": "ü 名.png", "path": "/x/ü 名.png", "label": "dog", "set": "extra", "present": False,
     "reason": "name is not valid UTF-8", "score": math.nan, "n": 3},
    {},
]  # fmt: skip


def test_packed_records_give_back_equal_dicts_of_the_same_types() -> None:
    packed = PackedRecords(RECORDS)
    assert len(packed) == len(RECORDS)
    for original, back in zip(RECORDS, (packed[i] for i in range(len(packed))), strict=True):
        assert back.keys() == original.keys()
        for key, value in original.items():
            assert type(back[key]) is type(value)
            assert back[key] == value or (isinstance(value, float) and math.isnan(back[key]))
    with pytest.raises(IndexError):
        packed[len(RECORDS)]
    assert len(PackedRecords([])) == 0


def test_packed_records_hold_no_python_object_per_record() -> None:
    packed = PackedRecords(RECORDS * 1000)
    assert set(vars(packed)) == {"offsets", "data"}
    assert packed.data.dtype.kind == "u" and packed.offsets.shape == (3001,)


def test_the_dataset_pickles_and_serves_the_records_it_was_given() -> None:
    plan = CropPlan(conditions(("contrast",), (1,)), crop=32, seed=0, policy=DecodePolicy())
    dataset = pickle.loads(pickle.dumps(CropsDataset(RECORDS[:2], plan)))
    assert len(dataset) == 2
    missing = dataset[1]
    assert missing.record["image_id"] == RECORDS[1]["image_id"]
    assert (missing.status, missing.reason) == ("rejected", "name is not valid UTF-8")


def test_heap_is_trimmed_only_past_the_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = iter([100, 150, 199, 250, 120, 200, 330, 90])
    calls: list[int] = []
    monkeypatch.setattr(crops, "_resident_bytes", lambda: next(sizes))
    monkeypatch.setattr(crops, "_malloc_trim", lambda: calls.append)
    trim = HeapTrim(slack=100)
    trim()  # floor 100, then 150: under 200
    trim()  # 199: under
    trim()  # 250: over, trimmed to 120 (the new floor)
    assert calls == [0]
    trim()  # 200: under 220
    trim()  # 330: over, trimmed to 90
    assert calls == [0, 0]
    assert trim.floor == 90
