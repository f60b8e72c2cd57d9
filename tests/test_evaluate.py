from __future__ import annotations

from pathlib import Path

import imagecorruptions
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from saliqa.classify.models import build_classifier
from saliqa.data.readers import read_folder
from saliqa.fullref import ms_ssim, psnr
from saliqa.images import DecodePolicy, read_image
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.crops import image_crops
from saliqa.pipeline.evaluation import evaluate_records, evaluate_to_dir
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.models import Judges
from saliqa.pipeline.plan import CropPlan, Runtime, conditions
from saliqa.pipeline.tables import EVAL

EVAL_COLUMNS = EVAL.columns

CONDITIONS = conditions(("brightness", "contrast", "saturate", "jpeg_compression"), (1, 2))
RANDOM_CONDITIONS = conditions(("gaussian_noise", "glass_blur", "fog", "spatter"), (2, 5))
"""Corruptions that draw: their streams must not depend on batches, workers or shards either."""


def test_conditions_start_clean_then_each_corruption_at_each_severity() -> None:
    assert conditions(("contrast", "brightness"), (1, 3)) == (
        ("none", 0),
        ("contrast", 1),
        ("contrast", 3),
        ("brightness", 1),
        ("brightness", 3),
    )


def _plan(conds: tuple, crop: int, **settings: object) -> CropPlan:
    return CropPlan(conds, crop=crop, seed=0, policy=DecodePolicy(), **settings)


def _crops(record: dict, conds: tuple, crop: int) -> object:
    """The public crop maker: exactly what evaluate judges for this record."""
    return image_crops(record["path"], _plan(conds, crop), record["image_id"])


def _records(root: Path, eval_set: str = "val") -> list[dict]:
    frame = read_folder(root).frame.assign(set=eval_set)
    return frame[["image_id", "path", "label", "set", "present"]].to_dict("records")


def test_crops_are_the_reference_corruption_of_the_full_image_then_centre_cropped(tmp_path: Path) -> None:
    from skimage import data

    photo = data.astronaut()[:301, :263]  # odd sizes: the centre offsets round like torchvision
    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(data.camera()[:180, :260]).save(tmp_path / "grey.png")  # short side 180 < 224
    records = [
        {"image_id": "a", "path": str(tmp_path / "a.png"), "label": "x", "set": "val"},
        {"image_id": "g", "path": str(tmp_path / "grey.png"), "label": "x", "set": "val"},
    ]
    first = _crops(records[0], CONDITIONS, 224)
    assert first.crops.shape == (9, 3, 224, 224) and first.crops.dtype == torch.uint8 and not first.upscaled
    for k, (name, severity) in enumerate(CONDITIONS):
        full = (
            photo
            if name == "none"
            else imagecorruptions.corrupt(photo, corruption_name=name, severity=severity)
        )
        expected = TF.center_crop(torch.from_numpy(np.array(full)).permute(2, 0, 1), [224, 224])
        assert torch.equal(first.crops[k], expected), (name, severity)

    grey = _crops(records[1], CONDITIONS, 224)
    assert grey.upscaled and grey.crops.shape == (9, 3, 224, 224)
    assert torch.equal(grey.crops[0, 0], grey.crops[0, 1])  # grey stays grey when clean


def _judges(classes: list[str], batch_size: int = 64) -> Judges:
    model = build_classifier("resnet18", len(classes), seed=0).eval()
    return Judges(model, classes, load_quality_model("piqe", device="cpu"), batch_size)


def test_rows_hold_the_models_outputs_on_the_very_same_crop(folder_dataset: Path) -> None:
    records = _records(folder_dataset)[:2]
    classes = ["astronaut", "chelsea", "coffee"]
    judges = _judges(classes, batch_size=5)
    rows = pd.DataFrame(evaluate_records(records, judges, _plan(CONDITIONS, 224), Runtime(workers=0)))
    assert len(rows) == 2 * len(CONDITIONS)
    crops = _crops(records[1], CONDITIONS, 224).crops
    x = crops.float() / 255
    with torch.inference_mode():
        probs = torch.softmax(judges.classifier(x), dim=1)
        quality = judges.quality(x)
    mine = rows[rows["image_id"] == records[1]["image_id"]]
    true = classes.index(records[1]["label"])
    np.testing.assert_allclose(mine["prob_true"], probs[:, true].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mine["score"], quality.score.double().numpy(), rtol=1e-12)
    np.testing.assert_allclose(mine["quality"], quality.quality.double().numpy(), rtol=1e-12)
    clean = crops[:1].expand_as(crops)  # the full-reference columns compare each crop with the clean one
    np.testing.assert_array_equal(mine["psnr"], psnr(clean, crops).numpy())
    np.testing.assert_allclose(mine["ms_ssim"], ms_ssim(clean, crops).numpy(), rtol=1e-12)
    assert mine["psnr"].iloc[0] == np.inf and mine["ms_ssim"].iloc[0] == 1.0
    assert (mine["ms_ssim"].iloc[1:] < 1.0).all() and np.isfinite(mine["psnr"].iloc[1:]).all()
    assert mine["pred"].tolist() == [classes[int(i)] for i in probs.argmax(1)]
    assert (mine["top1"] == (mine["pred"] == mine["label"])).all()
    assert mine["top5"].all()  # three classes: the true one is always among the top five
    assert tuple(mine[["corruption", "severity"]].apply(tuple, axis=1)) == CONDITIONS


def test_bad_images_and_unknown_labels_are_recorded_for_every_condition(folder_dataset: Path) -> None:
    (folder_dataset / "chelsea" / "chelsea_0.png").write_bytes(b"broken")
    records = _records(folder_dataset)
    records.append({"image_id": "gone.png", "path": "/nowhere/gone.png", "label": "coffee", "set": "val"})
    judges = _judges(["astronaut", "coffee"])  # no chelsea class
    rows = pd.DataFrame(evaluate_records(records, judges, _plan(CONDITIONS, 224), Runtime(workers=0)))
    by_image = rows.groupby("image_id")
    assert (by_image.size() == len(CONDITIONS)).all()
    status = by_image["status"].first()
    assert status["gone.png"] == "missing"
    assert (status[[i for i in status.index if i.startswith("chelsea")]] == "skipped").all()
    assert (status[[i for i in status.index if i.startswith(("astronaut", "coffee"))]] == "ok").all()
    assert rows.loc[rows["status"] != "ok", "pred"].isna().all()


def test_results_do_not_depend_on_batch_size_workers_or_shards(folder_dataset: Path, tmp_path: Path) -> None:
    frame = read_folder(folder_dataset).frame.assign(set="val")
    classes = ["astronaut", "chelsea", "coffee"]
    tables = []
    for name, batch_size, workers, shard_size in (("a", 64, 0, 100), ("b", 7, 2, 5)):
        evaluate_to_dir(
            frame,
            _judges(classes, batch_size),
            _plan(RANDOM_CONDITIONS, 64),
            Runtime(workers=workers, shard_size=shard_size, progress=False),
            RunLayout(tmp_path / name),
            {"fingerprint": "x"},
        )
        table = EVAL.read(tmp_path / name / "eval.parquet")
        assert tuple(table.columns) == EVAL_COLUMNS
        tables.append(table)
    a, b = tables
    exact = [c for c in EVAL_COLUMNS if c != "prob_true"]
    pd.testing.assert_frame_equal(a[exact], b[exact], check_exact=True)
    np.testing.assert_allclose(a["prob_true"], b["prob_true"], rtol=1e-5, atol=1e-6)


def test_a_killed_evaluation_resumes_from_its_finished_shards(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = read_folder(folder_dataset).frame.assign(set="val")
    classes = ["astronaut", "chelsea", "coffee"]
    plan, runtime = _plan(RANDOM_CONDITIONS, 64), Runtime(shard_size=4, workers=0, progress=False)

    def evaluate(judges: Judges, name: str) -> int:
        return evaluate_to_dir(frame, judges, plan, runtime, RunLayout(tmp_path / name), {"fingerprint": "x"})

    evaluate(_judges(classes), "whole")

    judges = _judges(classes)
    calls = {"n": 0}
    real = Judges.__call__

    def dies_on_third_shard(
        self: Judges, crops: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor
    ) -> dict:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, crops, labels, clean)

    monkeypatch.setattr(Judges, "__call__", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        evaluate(judges, "killed")
    monkeypatch.setattr(Judges, "__call__", real)
    assert evaluate(judges, "killed") == 2
    pd.testing.assert_frame_equal(
        EVAL.read(tmp_path / "killed" / "eval.parquet"),
        EVAL.read(tmp_path / "whole" / "eval.parquet"),
        check_exact=True,
    )


def test_distorting_on_the_models_device_gives_the_workers_rows(folder_dataset: Path) -> None:
    """The same function makes the crops in a worker or in the main process: on the CPU the rows are equal."""
    records = _records(folder_dataset)[:3]
    judges = _judges(["astronaut", "chelsea", "coffee"])
    runtime = Runtime(workers=0)
    in_workers = pd.DataFrame(evaluate_records(records, judges, _plan(RANDOM_CONDITIONS, 64), runtime))
    on_device = pd.DataFrame(
        evaluate_records(records, judges, _plan(RANDOM_CONDITIONS, 64, distort_on="device"), runtime)
    )
    pd.testing.assert_frame_equal(on_device, in_workers, check_exact=True)


def test_eval_reads_the_same_pixels_as_rate(folder_dataset: Path) -> None:
    path = next((folder_dataset / "coffee").iterdir())
    records = [{"image_id": "c", "path": str(path), "label": "coffee", "set": "val"}]
    crop = _crops(records[0], (("none", 0),), 224).crops[0]
    expected = TF.center_crop(torch.from_numpy(read_image(path)).permute(2, 0, 1), [224, 224])
    assert torch.equal(crop, expected)


def test_an_image_the_models_or_a_corruption_fail_on_is_recorded_not_fatal(
    folder_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    records = _records(folder_dataset)[:4]
    n = len(CONDITIONS)
    bad = _crops(records[1], CONDITIONS, 64).crops[0]
    real = Judges.__call__

    def fails_on_one_image(
        self: Judges, crops: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor
    ) -> dict:
        if any(torch.equal(crops[j], bad) for j in range(0, len(crops), n)):
            raise RuntimeError("out of memory")
        return real(self, crops, labels, clean)

    def fails_on_short_images(
        images: torch.Tensor, name: str, severity: int, **seeding: object
    ) -> torch.Tensor:
        if images.shape[-2] == 96:
            raise ValueError("bad")
        return images

    monkeypatch.setattr(Judges, "__call__", fails_on_one_image)
    monkeypatch.setattr("saliqa.pipeline.crops.corrupt_batch", fails_on_short_images)
    Image.new("RGB", (120, 96)).save(folder_dataset / "coffee" / "short.png")
    records.append(
        {
            "image_id": "short",
            "path": str(folder_dataset / "coffee" / "short.png"),
            "label": "coffee",
            "set": "val",
        }
    )
    judges = _judges(["astronaut", "chelsea", "coffee"])
    rows = pd.DataFrame(evaluate_records(records, judges, _plan(CONDITIONS, 64), Runtime(workers=0)))
    status = rows.groupby("image_id", sort=False)["status"].agg(lambda s: sorted(set(s)))
    assert status.tolist() == [["ok"], ["failed"], ["ok"], ["ok"], ["failed"]]
    reasons = rows.groupby("image_id", sort=False)["reason"].first()
    assert reasons.iloc[1] == "model failed: RuntimeError: out of memory"
    assert reasons.iloc[4] == "distortion failed: ValueError: bad"


def test_all_19_corruptions_at_5_severities_make_96_conditions_and_a_full_heatmap(
    folder_dataset: Path,
) -> None:
    from saliqa.corrupt import SEVERITIES, corruption_names
    from saliqa.report.eval_figures import heatmap_grid
    from saliqa.stats import summarize_eval

    everything = conditions(corruption_names("all"), SEVERITIES)
    assert len(everything) == 1 + 19 * 5
    records = _records(folder_dataset)[:2]
    judges = _judges(["astronaut", "chelsea", "coffee"])
    rows = pd.DataFrame(evaluate_records(records, judges, _plan(everything, 64), Runtime(workers=0)))
    assert len(rows) == 2 * 96 and (rows["status"] == "ok").all()
    assert rows["ms_ssim"].isna().all()  # a 64-pixel crop is too small for five MS-SSIM scales
    distorted = rows[rows["corruption"] != "none"]
    assert np.isfinite(distorted["psnr"]).mean() > 0.95  # nearly every condition changes the crop
    summary = summarize_eval(rows, seed=0, n_boot=100)
    names, severities, grid = heatmap_grid(summary)
    assert names == list(corruption_names("all")) and severities == [0, 1, 2, 3, 4, 5]
    assert np.isfinite(grid).all()
