from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_run
from PIL import Image

from saliqa.config import config_from_dict
from saliqa.images import read_image, to_batch
from saliqa.iqa.base import QualityOutput
from saliqa.iqa.piqe import PIQE, piqe
from saliqa.pipeline.mapstore import MapStore
from saliqa.pipeline.run import run_pipeline
from saliqa.pipeline.stages.rate import rate_records


class _Interrupted(BaseException):
    """Stands in for SIGKILL inside the process: not an Exception, so nothing may catch it."""


class _FlakyPIQE(PIQE):
    """PIQE that fails on images of one width, and can stop the process after some calls."""

    def __init__(self, fail_width: int | None = None, stop_after: int | None = None) -> None:
        super().__init__("cpu")
        self.fail_width, self.stop_after, self.calls = fail_width, stop_after, 0

    def rate(self, images: torch.Tensor) -> QualityOutput:
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise _Interrupted
        if images.shape[-1] == self.fail_width:
            raise RuntimeError("boom")
        return super().rate(images)


def _records(folder: Path) -> pd.DataFrame:
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    frame = pd.DataFrame(
        {
            "image_id": [p.relative_to(folder).as_posix() for p in paths],
            "path": [str(p) for p in paths],
            "label": [p.parent.name for p in paths],
            "present": True,
        }
    )
    missing = {
        "image_id": "x/missing.png",
        "path": str(folder / "x" / "missing.png"),
        "label": "x",
        "present": False,
    }
    return pd.concat([frame, pd.DataFrame([missing])], ignore_index=True)


def test_order_batching_rejects_and_model_failures(folder_dataset: Path) -> None:
    from skimage import data

    Image.fromarray(data.rocket()[:200, :300]).save(folder_dataset / "coffee" / "wide.png")
    Image.fromarray(data.rocket()[:200, :250]).save(folder_dataset / "coffee" / "fails.png")
    (folder_dataset / "chelsea" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    records = _records(folder_dataset).sample(frac=1.0, random_state=1)  # order in = order out
    model = _FlakyPIQE(fail_width=250)
    rated = list(rate_records(records, model, batch_size=3, workers=2))
    assert [r.row["image_id"] for r in rated] == records["image_id"].tolist()
    by_id = {r.row["image_id"]: r for r in rated}
    assert by_id["x/missing.png"].row["status"] == "missing"
    assert by_id["chelsea/broken.png"].row["status"] == "rejected"
    failed = by_id["coffee/fails.png"].row
    assert failed["status"] == "failed" and failed["reason"] == "quality model failed: RuntimeError: boom"
    assert (
        failed["width"] == 250 and np.isnan(failed["score"]) and by_id["coffee/fails.png"].patch_map is None
    )
    for image_id, item in by_id.items():
        if item.row["status"] != "ok":
            continue
        direct = piqe(to_batch([read_image(item.row["path"])]))
        assert item.row["score"] == float(direct.score[0]), image_id
        assert item.patch_map.shape == item.grid.shape == tuple(direct.activity.shape[1:])
    assert by_id["coffee/wide.png"].row["width"] == 300


def _config(root: Path, **rate: object) -> object:
    return config_from_dict(
        {
            "data": {"source": "folder", "root": str(root)},
            "rate": {"device": "cpu", "workers": 0, **rate},
            "split": {"keep": ["Excellent", "Good", "Fair", "Poor", "Bad"]},
        }
    )


def _interrupt(monkeypatch: pytest.MonkeyPatch, config: object, out: Path, stop_after: int) -> None:
    """Run the pipeline with a model that dies after ``stop_after`` batches, like a killed process."""
    monkeypatch.setattr(
        "saliqa.pipeline.models.load_quality_model",
        lambda name, device, files: _FlakyPIQE(stop_after=stop_after),
    )
    with pytest.raises(_Interrupted):
        run_pipeline(config, out, until="split", progress=False)
    monkeypatch.undo()


def test_resume_with_another_shard_size_rates_every_image(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference"
    run_pipeline(_config(folder_dataset, batch_size=1), reference, until="split", progress=False)
    out = tmp_path / "run"
    _interrupt(monkeypatch, _config(folder_dataset, batch_size=1, shard_size=1), out, stop_after=6)
    assert len(list((out / "ratings.parts").glob("part-*.parquet"))) == 6
    run_pipeline(_config(folder_dataset, batch_size=1, shard_size=4), out, until="split", progress=False)
    assert_same_run(out, reference)


def test_an_interrupted_other_config_never_leaves_stale_outputs_marked_done(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference"
    run_pipeline(_config(folder_dataset, batch_size=1), reference, until="split", progress=False)
    out = tmp_path / "run"
    run_pipeline(_config(folder_dataset, batch_size=1), out, until="split", progress=False)
    other = config_from_dict(
        {
            "data": {"source": "folder", "root": str(folder_dataset)},
            "images": {"max_pixels": 40_000, "oversize": "downscale"},
            "rate": {"device": "cpu", "workers": 0, "batch_size": 1, "shard_size": 1},
        }
    )
    _interrupt(monkeypatch, other, out, stop_after=3)
    assert len(MapStore(out / "quality_maps")) == 3  # the other config's maps, 200x200
    results = run_pipeline(_config(folder_dataset, batch_size=1), out, until="split", progress=False)
    assert results[0].ran  # the first config's maps were touched, so rate runs again
    assert_same_run(out, reference)
