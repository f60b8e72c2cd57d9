"""PaQ-2-PiQ training: labels, box batching, the loop, resume, and the result as a quality model by path."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from local_server import FileServer
from PIL import Image

from saliqa.classify.models import IMAGENET_WEIGHTS
from saliqa.classify.p2p import P2PNet
from saliqa.cli import main
from saliqa.config import config_from_dict, load_config
from saliqa.errors import CheckpointError, ConfigError, DatasetError, UnknownModelError, WeightsNotFoundError
from saliqa.io.download import WeightsFile
from saliqa.io.hashing import sha256_file
from saliqa.io.tables import read_provenance
from saliqa.iqa import training
from saliqa.iqa.labels import FLIVE_COLUMNS, read_quality_labels
from saliqa.iqa.paq2piq import RELEASE_NORMALISATION, PaQ2PiQ, normalise_score
from saliqa.iqa.registry import check_quality_model, find_model_files, load_quality_model
from saliqa.iqa.training import (
    BEST,
    CURVES,
    LAST,
    LOG_COLUMNS,
    LOG_CSV,
    LOG_FILE,
    PictureBatch,
    Recipe,
    _Pictures,
    batch_pictures,
    initial_model,
    normalisation_of,
    pool_boxes,
    train_paq2piq,
)
from saliqa.pipeline.models import QualitySpec

pytestmark = pytest.mark.usefixtures(
    "one_torch_thread"
)  # small convolutions: OpenMP hand-offs dominate on a busy CPU

PATCH_SHARES = (0.4, 0.3, 0.2)  # FLIVE's patches: 40 %, 30 % and 20 % of the picture's sides


def make_flive_set(
    root: Path, n: int, *, sizes: tuple[tuple[int, int], ...] = ((96, 64), (64, 96)), seed: int = 0
) -> Path:
    """``n`` noisy pictures with FLIVE-format labels: the picture's MOS falls with its noise, each patch's with the
    extra noise put inside it. Columns in the official files' order; images under ``root/images``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([128 + 60 * np.sin(xx / 7.0), 128 + 60 * np.cos(yy / 5.0), 90 + 0 * xx], axis=-1)
        noise = float(rng.uniform(0, 50))
        pixels = base + rng.normal(0, noise, base.shape)
        row: dict[str, object] = {}
        for k, share in enumerate(PATCH_SHARES, start=1):
            w, h = round(width * share), round(height * share)
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            extra = float(rng.uniform(0, 60))
            pixels[top : top + h, left : left + w] += rng.normal(0, extra, (h, w, 3))
            suffix = f"_patch_{k}"
            row |= {
                f"mos{suffix}": 90 - 0.5 * (noise + extra),
                f"width{suffix}": w,
                f"height{suffix}": h,
                f"top{suffix}": top,
                f"left{suffix}": left,
                f"bottom{suffix}": top + h,
                f"right{suffix}": left + w,
            }
        name = f"set/pic{i:02d}.png"
        (root / "images" / "set").mkdir(exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "images" / name)
        row |= {
            "name_patch": f"patches/pic{i:02d}.png",
            "mos_image": 85 - 0.6 * noise,
            "name_image": name,
            "width_image": width,
            "height_image": height,
            "top_image": 0,
            "left_image": 0,
            "bottom_image": height,
            "right_image": width,
        }
        rows.append(row)
    path = root / "labels.csv"
    pd.DataFrame(rows)[_OFFICIAL_HEADER].to_csv(path, index=False)
    return path


_SIDES = ("width", "height", "top", "left", "bottom", "right")
_OFFICIAL_HEADER = [
    *(
        c
        for k in (1, 2, 3)
        for c in (f"mos_patch_{k}", *(["name_patch"] if k == 1 else []), *(f"{s}_patch_{k}" for s in _SIDES))
    ),
    "mos_image",
    "name_image",
    *(f"{s}_image" for s in _SIDES),
]
"""The header of the official labels640.csv, in its order."""

FAST = {"batch_size": 4, "device": "cpu", "workers": 0, "progress": False}


@pytest.fixture(scope="module")
def flive_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_flive_set(tmp_path_factory.mktemp("flive"), 10)


@pytest.fixture(scope="module")
def trained(flive_set: Path, tmp_path_factory: pytest.TempPathFactory) -> training.TrainedPaQ2PiQ:
    """Two epochs from a seeded random start, 7 training and 3 validation pictures."""
    out = tmp_path_factory.mktemp("trained")
    return train_paq2piq(
        flive_set, flive_set.parent / "images", out, init="random", epochs=2, val_fraction=0.3, **FAST
    )


def _killed_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, train: Callable[[], object]) -> None:
    """Run ``train`` with the process "killed" (KeyboardInterrupt) as epoch ``epoch`` starts, then undo the kill."""
    original = training._Training._train_epoch

    def killed(self, net, optimizer, scheduler, at, bar):
        if at == epoch:
            raise KeyboardInterrupt
        return original(self, net, optimizer, scheduler, at, bar)

    monkeypatch.setattr(training._Training, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(training._Training, "_train_epoch", original)


# -- labels ----------------------------------------------------------------------------------------------------------


def test_the_official_flive_label_file_is_read_with_its_boxes(shared_data: Path, tmp_path: Path) -> None:
    labels = shared_data / "paq2piq" / "labels640.csv"
    frame = pd.read_csv(labels)
    assert set(FLIVE_COLUMNS) <= set(frame.columns) and len(frame) == 1827
    # right = left + width and bottom = top + height in every row: edges are exclusive, boxes in file pixels
    for box in ("image", "patch_1", "patch_2", "patch_3"):
        assert (frame[f"right_{box}"] - frame[f"left_{box}"] == frame[f"width_{box}"]).all()
        assert (frame[f"bottom_{box}"] - frame[f"top_{box}"] == frame[f"height_{box}"]).all()
    # FLIVE's pictures are not shared: blank stand-ins of the labelled sizes for the first three, one wrong size
    for i, row in frame.head(4).iterrows():
        size = (int(row.width_image), int(row.height_image)) if i < 3 else (10, 10)
        (tmp_path / row.name_image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(tmp_path / row.name_image, format="JPEG")
    read = read_quality_labels(labels, tmp_path)
    assert read.kind == "flive" and read.n_boxes == 4 and len(read.pictures) == 3
    first = read.pictures[0]
    assert first.image_id == "voc_emotic_ava/EMOTIC__cwpvmtkuw83q2or3za.jpg" and first.size == (1200, 660)
    assert first.boxes == (
        (0, 0, 1200, 660),
        (564, 206, 1044, 470),
        (15, 302, 375, 500),
        (377, 458, 617, 590),
    )
    assert first.box_mos == pytest.approx((59.64871868, 79.47386983, 70.63982665, 58.62773644))
    assert first.mos == pytest.approx(59.64871868) and first.is_valid is None
    reasons = read.rejected.set_index("line")["reason"]
    assert reasons[5].startswith("box image (0, 0, ") and reasons[5].endswith(
        "lies outside the 10x10 picture"
    )
    assert (reasons.drop(5) == "file not found").all() and len(reasons) == 1824
    assert read.sha256 == sha256_file(labels)


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def test_bad_rows_are_left_out_with_their_reason(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    header = ",".join(FLIVE_COLUMNS)

    def row(name: str, mos: str = "70", box: str = "0,0,40,30", patch: str = "1,1,20,15") -> str:
        return f"{name},{mos},60,61,62,{box},{patch},{patch},{patch}"

    # FLIVE_COLUMNS order: name, mos_image, mos_patch_1..3, then left/top/right/bottom of image, patch_1..3
    labels = _write_csv(
        tmp_path / "labels.csv",
        "\n".join(
            [
                header,
                row("a.png"),
                row("b.png", mos="high"),
                row("c.png", patch="30,20,50,29"),
                row("d.png", patch="5,5,5,9"),
                row("a.png"),
                row("missing.png"),
                row("broken.png"),
                row("e.png", box="0,0,40,30", mos="nan"),
            ]
        ),
    )
    read = read_quality_labels(labels)
    assert [p.image_id for p in read.pictures] == ["a.png"]
    assert read.pictures[0].boxes[1] == (1, 1, 20, 15)
    reasons = dict(zip(read.rejected["image_id"], read.rejected["reason"], strict=True))
    assert reasons["b.png"] == "mos_image 'high' is not a number"
    assert reasons["c.png"] == "box patch_1 (30, 20, 50, 29) lies outside the 40x30 picture"
    assert reasons["d.png"] == "empty box patch_1 (5, 5, 5, 9)"
    assert reasons["a.png"] == "listed again (first on line 2)"
    assert reasons["missing.png"] == "file not found" and reasons["broken.png"] == "not an image"
    assert reasons["e.png"] == "mos_image 'nan' is not a finite number"
    assert "7 rows left out" in read.summary()


def test_label_files_that_cannot_work_say_what_to_fix(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="lacks the column.*left_patch_2"):
        read_quality_labels(_write_csv(tmp_path / "part.csv", "name_image,mos_image,mos_patch_1\na.png,1,2"))
    with pytest.raises(DatasetError, match="picture name column"):
        read_quality_labels(_write_csv(tmp_path / "odd.csv", "file,score\na.png,3"))
    with pytest.raises(DatasetError, match="no usable picture.*line 2: file not found"):
        read_quality_labels(_write_csv(tmp_path / "none.csv", "path,mos\nb.png,50"))
    with pytest.raises(DatasetError, match="image folder .* does not exist"):
        read_quality_labels(tmp_path / "none.csv", tmp_path / "nowhere")
    # KonIQ's MOS lie on 1-5: without a declared scale they would train a model on the wrong scale
    koniq = _write_csv(tmp_path / "koniq.csv", "image_name,MOS,SD\na.png,3.0,0.5")
    with pytest.raises(DatasetError, match="scale=\\(1, 5\\)"):
        read_quality_labels(koniq)
    read = read_quality_labels(koniq, scale=(1, 5))
    assert read.kind == "picture" and read.pictures[0].mos == 50.0 and read.n_boxes == 1
    assert read.pictures[0].boxes == () and read.pictures[0].size == (40, 30)
    Image.new("RGB", (40, 30)).save(tmp_path / "b.png")
    out_of_scale = _write_csv(tmp_path / "over.csv", "image,mos\na.png,3\nb.png,7")
    rejected = read_quality_labels(out_of_scale, scale=(1, 5)).rejected
    assert rejected["reason"].tolist() == ["mos 7 outside the declared scale 1-5"]


def test_clive_labels_read_as_picture_only(shared_data: Path) -> None:
    clive = shared_data / "clive"
    read = read_quality_labels(clive / "clive_mos.csv", clive / "Images")
    assert read.kind == "picture" and len(read.pictures) == 627 and len(read.rejected) == 0
    sizes = {p.image_id: p.size for p in read.pictures}
    assert sum(size == (500, 500) for size in sizes.values()) == 625  # and two larger ones
    assert (sizes["1024.JPG"], sizes["1113.JPG"]) == ((640, 960), (608, 608))


# -- boxes and batches -----------------------------------------------------------------------------------------------
def _hand_roi_pool(features: torch.Tensor, roi: list[float], scale: float, out: int = 2) -> torch.Tensor:
    """RoIPool as torchvision's kernel computes it (C rounding of the box, floor/ceil bins, empty bins 0)."""
    b, x1, y1, x2, y2 = roi
    start_w, start_h, end_w, end_h = (
        math.floor(v * scale + 0.5) for v in (x1, y1, x2, y2)
    )  # C round, v >= 0
    roi_w, roi_h = max(end_w - start_w + 1, 1), max(end_h - start_h + 1, 1)
    height, width = features.shape[-2:]
    pooled = torch.zeros(features.shape[1], out, out)
    for ph in range(out):
        for pw in range(out):
            h0 = min(max(math.floor(ph * roi_h / out) + start_h, 0), height)
            h1 = min(max(math.ceil((ph + 1) * roi_h / out) + start_h, 0), height)
            w0 = min(max(math.floor(pw * roi_w / out) + start_w, 0), width)
            w1 = min(max(math.ceil((pw + 1) * roi_w / out) + start_w, 0), width)
            if h1 > h0 and w1 > w0:
                pooled[:, ph, pw] = features[int(b), :, h0:h1, w0:w1].amax(dim=(-2, -1))
    return pooled


def test_boxes_are_batched_image_major_and_pool_as_roipool_by_hand() -> None:
    rng = torch.Generator().manual_seed(0)
    wide = torch.randint(0, 256, (3, 64, 128), generator=rng, dtype=torch.uint8)
    tall = torch.randint(0, 256, (3, 160, 96), generator=rng, dtype=torch.uint8)
    wide_boxes = torch.tensor(
        [[0, 0, 128, 64], [10, 5, 61, 30], [70, 20, 120, 64], [0, 40, 25, 64]], dtype=torch.float32
    )
    tall_boxes = torch.tensor(
        [[0, 0, 96, 160], [40, 90, 96, 150], [3, 3, 33, 63], [50, 0, 70, 40]], dtype=torch.float32
    )
    items = [
        (4, wide, wide_boxes, torch.arange(4.0)),
        (1, None, torch.empty(0, 4), torch.zeros(4)),
        (7, tall, tall_boxes, 10 + torch.arange(4.0)),
    ]
    batch = batch_pictures(items)
    assert isinstance(batch, PictureBatch) and batch.skipped == 1
    assert batch.images.shape == (2, 3, 160, 128) and batch.index.tolist() == [4, 7]
    # padded at the bottom and right only: each picture keeps its own pixel coordinates
    assert torch.equal(batch.images[0, :, :64, :128], wide) and not batch.images[0, :, 64:].any()
    assert torch.equal(batch.images[1, :, :160, :96], tall) and not batch.images[1, :, :, 96:].any()
    assert batch.rois[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(batch.rois[:, 1:], torch.cat([wide_boxes, tall_boxes]))
    assert batch.targets.tolist() == [0, 1, 2, 3, 10, 11, 12, 13] and batch.box.tolist() == [0, 1, 2, 3] * 2
    assert batch.sizes.tolist() == [[64, 128], [160, 96]]
    net = P2PNet(1).eval()
    features = torch.randn(2, 5, 5, 4, generator=rng)  # (B, C, H/32, W/32) of the padded 160 x 128 batch
    pooled = pool_boxes(features, batch, net.roi_pool)
    assert pooled.shape == (8, 5, 2, 2)
    # by hand, each picture on its own cells (wide: 2 x 4, tall: 5 x 3), as if it were rated alone
    own = [features[:1, :, :2, :4], features[1:, :, :5, :3]]
    for k, roi in enumerate(batch.rois.tolist()):
        picture = int(roi[0])
        expected = _hand_roi_pool(own[picture], [0, *roi[1:]], 1 / 32)
        torch.testing.assert_close(pooled[k], expected, rtol=0, atol=0)
    # padding cells never reach a box: a box to the picture's edge has an inclusive end cell, clipped as alone
    features[0, :, 2:, :] = features[1, :, :, 3:] = 1e6
    assert torch.equal(pool_boxes(features, batch, net.roi_pool), pooled)
    assert net.roi_pool(features, batch.rois)[0].max() == 1e6, "RoIPool on the padded map would pool padding"
    # a batch of one size is pooled in one call, the same as box by box
    same = batch_pictures(
        [(0, wide, wide_boxes, torch.arange(4.0)), (1, wide.flip(-1), wide_boxes, torch.arange(4.0))]
    )
    cells = torch.randn(2, 5, 2, 4, generator=rng)
    torch.testing.assert_close(
        pool_boxes(cells, same, net.roi_pool),
        torch.stack([_hand_roi_pool(cells, roi, 1 / 32) for roi in same.rois.tolist()]),
        rtol=0,
        atol=0,
    )


def test_pictures_are_downscaled_and_flipped_with_their_boxes(tmp_path: Path) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    labels = _write_csv(
        tmp_path / "l.csv",
        ",".join(FLIVE_COLUMNS) + "\np.png,50,40,60,70,0,0,80,40,8,4,40,24,40,20,80,40,0,0,20,10",
    )
    picture = read_quality_labels(labels).pictures[0]
    plain = _Pictures({"train": [picture]}, Recipe(max_side=40), training.DecodePolicy())
    _, image, boxes, targets = plain[("train", 0, 1)]
    assert image is not None and image.shape == (3, 20, 40)
    assert boxes.tolist() == [[0, 0, 40, 20], [4, 2, 20, 12], [20, 10, 40, 20], [0, 0, 10, 5]]
    assert targets.tolist() == [50, 40, 60, 70]
    flipping = _Pictures(
        {"train": [picture], "val": [picture]}, Recipe(max_side=40, hflip=True), training.DecodePolicy()
    )
    seen = {bool(torch.equal(flipping[("train", 0, e)][1], image)) for e in range(1, 9)}
    assert seen == {True, False}, "some epochs flip the picture, others not"
    epoch = next(e for e in range(1, 9) if not torch.equal(flipping[("train", 0, e)][1], image))
    _, flipped, flipped_boxes, _ = flipping[("train", 0, epoch)]
    assert torch.equal(flipped, image.flip(-1))
    assert flipped_boxes.tolist() == [[0, 0, 40, 20], [20, 2, 36, 12], [0, 10, 20, 20], [30, 0, 40, 5]]
    assert torch.equal(flipping[("val", 0, epoch)][1], image), "validation pictures are never flipped"


# -- training --------------------------------------------------------------------------------------------------------
def test_losses_are_finite_and_fall_on_a_tiny_set(flive_set: Path, tmp_path: Path) -> None:
    result = train_paq2piq(
        flive_set, flive_set.parent / "images", tmp_path, init="random", epochs=6, val_fraction=0, **FAST
    )
    losses = result.log["train_loss"].to_numpy()
    assert np.isfinite(losses).all() and np.isfinite(result.log["train_picture_loss"]).all()
    assert losses[-2:].mean() < 0.6 * losses[0], losses  # from ~95 to ~30 (MOS units squared)
    assert result.n_val == 0 and result.log["val_srocc"].isna().all()
    assert result.best_epoch == 6, "without validation the last epoch is the best there is"


def test_training_writes_its_log_curves_and_weights(
    trained: training.TrainedPaQ2PiQ, flive_set: Path
) -> None:
    out = trained.out_dir
    assert tuple(trained.log.columns) == LOG_COLUMNS and trained.log["epoch"].tolist() == [1, 2]
    assert (trained.n_train, trained.n_val, trained.resumed_epochs, trained.init) == (7, 3, 0, "random")
    pd.testing.assert_frame_equal(pd.read_parquet(out / LOG_FILE), trained.log, check_dtype=False)
    assert pd.read_csv(out / LOG_CSV)["val_srocc"].notna().all()
    assert (out / CURVES).stat().st_size > 0 and (out / CURVES).with_suffix(".svg").is_file()
    split = pd.read_csv(out / "split.csv")
    assert split["split"].value_counts().to_dict() == {"train": 7, "val": 3}
    provenance = read_provenance(out / LOG_FILE)
    assert provenance["labels_sha256"] == sha256_file(flive_set)
    saved = torch.load(out / BEST, weights_only=True)
    assert saved["format"] == "saliqa-paq2piq" and saved["version"] == 1
    assert saved["labels"]["sha256"] == sha256_file(flive_set) and saved["labels"]["kind"] == "flive"
    assert saved["recipe"] == Recipe(epochs=2, batch_size=4, val_fraction=0.3).as_dict() | {"seed": 0}
    assert saved["epoch"] == trained.best_epoch and saved["init"] == "random"
    assert set(saved["state_dict"]) == set(P2PNet(1).state_dict())
    assert math.isfinite(trained.best_metrics["val_srocc"])


def test_resuming_a_killed_training_gives_the_uninterrupted_weights(
    flive_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {
        "init": "random",
        "epochs": 3,
        "val_fraction": 0.3,
        "hflip": True,
        "schedule": "onecycle",
    } | FAST
    images = flive_set.parent / "images"
    whole = train_paq2piq(flive_set, images, tmp_path / "whole", **options)
    _killed_in_epoch(
        monkeypatch,
        3,
        lambda: train_paq2piq(flive_set, images, tmp_path / "killed", **(options | {"workers": 1})),
    )
    resumed = train_paq2piq(flive_set, images, tmp_path / "killed", **options)
    assert resumed.resumed_epochs == 2 and resumed.best_epoch == whole.best_epoch
    for name in (LAST, BEST):
        a, b = (torch.load(d / name, weights_only=True) for d in (tmp_path / "whole", tmp_path / "killed"))
        assert a["epoch"] == b["epoch"]
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), (name, key)
    columns = [c for c in LOG_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(whole.log[columns], resumed.log[columns])
    # another recipe in the same folder is not resumed from it
    other = train_paq2piq(flive_set, images, tmp_path / "killed", **(options | {"epochs": 1}))
    assert other.resumed_epochs == 0


def test_the_trained_model_rates_by_path_with_its_hash_in_provenance(
    trained: training.TrainedPaQ2PiQ, flive_set: Path, tmp_path: Path
) -> None:
    name = trained.quality_model
    assert name == f"paq2piq:{trained.best}"
    digest = sha256_file(trained.best)
    model = load_quality_model(name, "cpu")
    assert isinstance(model, PaQ2PiQ) and model.name == name
    assert model.fingerprint() == {"name": name, "weights_sha256": digest, "grid": "20x20"}
    saved = torch.load(trained.best, weights_only=True)
    assert model.normalisation.mean == saved["normalisation"]["mean"] != RELEASE_NORMALISATION.mean
    image = torch.from_numpy(np.array(Image.open(flive_set.parent / "images" / "set" / "pic00.png")))
    out = model(image.permute(2, 0, 1)[None].float() / 255)
    assert out.score.shape == (1,) and torch.isfinite(out.score).all() and out.patch_map.shape == (1, 20, 20)
    torch.testing.assert_close(out.quality, normalise_score(out.score, model.normalisation))
    # the pipeline's spec carries the file and its hash, and so every table's provenance
    spec = QualitySpec.find(name, "cpu")
    assert spec.files == (("paq2piq", str(trained.best.resolve()), digest),)
    assert spec.build().fingerprint()["weights_sha256"] == digest
    import saliqa

    ratings = saliqa.rate(
        [flive_set.parent / "images"], iqa=name, out=tmp_path / "rated", device="cpu", workers=0
    )
    assert (ratings["status"] == "ok").all() and set(ratings["iqa"]) == {name}
    provenance = read_provenance(tmp_path / "rated" / "ratings.parquet")
    assert provenance["model"]["weights_sha256"] == digest


def test_trained_names_in_configs_and_the_registry(trained: training.TrainedPaQ2PiQ, tmp_path: Path) -> None:
    assert config_from_dict({"rate": {"iqa": trained.quality_model}}).rate.iqa == trained.quality_model
    for bad in ("paq2piq:", "paq2piq: ", "nope:/x"):
        with pytest.raises(ConfigError, match="paq2piq:<path"):
            config_from_dict({"rate": {"iqa": bad}})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.pt").write_bytes(trained.best.read_bytes())
    (tmp_path / "run.toml").write_text('[rate]\niqa = "paq2piq:models/mine.pt"\n', encoding="utf-8")
    assert (
        load_config(tmp_path / "run.toml").rate.iqa
        == f"paq2piq:{(tmp_path / 'models' / 'mine.pt').resolve()}"
    )
    with pytest.raises(WeightsNotFoundError, match="no weights file at .*saliqa iqa train"):
        check_quality_model(f"paq2piq:{tmp_path / 'absent.pt'}")
    with pytest.raises(UnknownModelError, match="names no file"):
        find_model_files("paq2piq:")
    not_paq2piq = tmp_path / "resnet.pt"
    torch.save(torchvision.models.resnet18().state_dict(), not_paq2piq)
    with pytest.raises(CheckpointError, match="not a PaQ-2-PiQ RoIPool model state dict"):
        load_quality_model(f"paq2piq:{not_paq2piq}", "cpu")


def test_plain_paq2piq_still_means_the_official_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError, match="RoIPoolModel-fit.10.bs.120.pth"):
        find_model_files("paq2piq")
    official = tmp_path / "empty" / "RoIPoolModel-fit.10.bs.120.pth"
    official.parent.mkdir()
    torch.save({"model": P2PNet(1).state_dict(), "opt": {}}, official)
    assert find_model_files("paq2piq") == {"paq2piq": official}
    assert load_quality_model("paq2piq", "cpu").normalisation == RELEASE_NORMALISATION


# -- starts ----------------------------------------------------------------------------------------------------------
def test_starts_from_imagenet_official_or_a_file(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18().state_dict()
    buffer = io.BytesIO()
    torch.save(resnet, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    server.files["r18.pth"] = buffer.getvalue()
    name = f"resnet18-{digest[:8]}.pth"
    monkeypatch.setitem(
        IMAGENET_WEIGHTS, "p2p-resnet18", WeightsFile(server.url("r18.pth"), name, digest[:8])
    )
    net, described, fresh = initial_model("imagenet", 0, progress=False, weights_dir=tmp_path / "hub")
    assert fresh and described.startswith("imagenet: ") and digest in described
    assert torch.equal(net.body[0].weight, resnet["conv1.weight"]) and torch.equal(
        net.body[7][1].bn2.bias, resnet["layer4.1.bn2.bias"]
    )
    assert (tmp_path / "hub" / name).is_file()
    again, _, _ = initial_model("imagenet", 0, progress=False, weights_dir=tmp_path / "hub")  # offline now
    assert len(server.requests) == 1 and torch.equal(again.head[8].weight, net.head[8].weight)
    # an official-format file (fastai's {'model': ...}) gives body and head
    donor = P2PNet(1)
    official = tmp_path / "RoIPoolModel-fit.10.bs.120.pth"
    torch.save({"model": donor.state_dict(), "opt": {"state": {}}}, official)
    net, described, fresh = initial_model(official, 0)
    assert (
        not fresh
        and described.startswith("paq2piq file:")
        and torch.equal(net.head[8].weight, donor.head[8].weight)
    )
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(tmp_path))
    assert torch.equal(initial_model("official", 0)[0].head[4].bias, donor.head[4].bias)
    # a torchvision ResNet-18 file gives the body only; the head keeps its seeded start
    plain = tmp_path / "resnet18.pth"
    torch.save(resnet, plain)
    net, described, fresh = initial_model(plain, 0)
    assert (
        fresh
        and described.startswith("resnet18 body:")
        and torch.equal(net.body[0].weight, resnet["conv1.weight"])
    )
    assert torch.equal(net.head[8].weight, initial_model("random", 0)[0].head[8].weight)
    assert not torch.equal(net.head[8].weight, initial_model("random", 1)[0].head[8].weight)
    with pytest.raises(CheckpointError, match="no weights file at .*init is random, imagenet, official"):
        initial_model(tmp_path / "absent.pt", 0)


def test_bad_settings_fail_before_any_work(flive_set: Path, tmp_path: Path) -> None:
    images = flive_set.parent / "images"
    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        train_paq2piq(flive_set, images, tmp_path, batch_size=1)
    with pytest.raises(ConfigError, match="schedule must be constant or onecycle"):
        train_paq2piq(flive_set, images, tmp_path, schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="no weights file"):
        train_paq2piq(flive_set, images, tmp_path, init=str(tmp_path / "absent.pt"), **FAST)
    assert not (tmp_path / LAST).exists()


def test_normalisation_follows_the_training_targets() -> None:
    from saliqa.iqa.labels import LabelledPicture

    pictures = [LabelledPicture(str(i), "", m, (1, 1)) for i, m in enumerate((40.0, 60.0, 70.0, 90.0))]
    norm = normalisation_of(pictures)
    assert norm.mean == 65.0
    assert norm.std_left == pytest.approx(math.sqrt((25**2 + 5**2) / 2))
    assert norm.std_right == pytest.approx(math.sqrt((5**2 + 25**2) / 2))


def test_cli_trains_and_names_the_result(
    flive_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "iqa",
            "train",
            "--labels",
            str(flive_set),
            "--images",
            str(flive_set.parent / "images"),
            "--out",
            str(tmp_path),
            "--init",
            "random",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f'iqa = "paq2piq:{tmp_path / BEST}"' in printed and (tmp_path / BEST).is_file()
    assert (
        main(
            [
                "iqa",
                "train",
                "--labels",
                str(tmp_path / "absent.csv"),
                "--images",
                str(tmp_path),
                "--out",
                str(tmp_path),
            ]
        )
        == 1
    )


def test_real_photos_of_two_sizes_resume_the_same_with_any_worker_count(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLIVE JPEGs, 500 x 500 and two larger ones, so batches are padded and pooled per picture: a run killed
    after epoch 1 and resumed with another number of loader workers ends with the uninterrupted weights."""
    clive = shared_data / "clive"
    mos = pd.read_csv(clive / "clive_mos.csv")
    chosen = pd.concat([mos[mos["image"].isin(["1024.JPG", "1113.JPG"])], mos.head(22)])
    labels = tmp_path / "labels.csv"
    chosen.to_csv(labels, index=False)
    options = {"init": "random", "epochs": 2, "batch_size": 6, "max_side": 128, "hflip": True, "device": "cpu",
               "val_fraction": 0.25, "progress": False}  # fmt: skip
    whole = train_paq2piq(labels, clive / "Images", tmp_path / "whole", workers=2, **options)
    assert np.isfinite(whole.log["train_loss"]).all() and whole.log["skipped"].eq(0).all()
    _killed_in_epoch(
        monkeypatch,
        2,
        lambda: train_paq2piq(labels, clive / "Images", tmp_path / "killed", workers=0, **options),
    )
    resumed = train_paq2piq(labels, clive / "Images", tmp_path / "killed", workers=1, **options)
    assert resumed.resumed_epochs == 1
    a, b = (
        torch.load(d / LAST, weights_only=True)["state_dict"]
        for d in (tmp_path / "whole", tmp_path / "killed")
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_curves_show_patch_losses_only_when_there_are_patches() -> None:
    from saliqa.report.paq2piq_training import _training_figure

    rows = [{"epoch": e, "lr": 1e-3, "train_loss": 90.0 / e, "train_picture_loss": 80.0 / e, "val_loss": 95.0 / e,
             "val_picture_loss": 85.0 / e, "val_srocc": 0.2 * e, "val_plcc": 0.25 * e, "val_patch_srocc": 0.1 * e,
             "skipped": 0, "seconds": 1.0} for e in (1, 2, 3)]  # fmt: skip
    flive = _training_figure(training.log_frame(rows), best_epoch=3)
    loss_ax, corr_ax = flive.axes
    assert [line.get_gid() for line in loss_ax.lines if line.get_gid()] == [
        "train_loss", "train_picture_loss", "val_loss", "val_picture_loss"
    ]  # fmt: skip
    assert [line.get_gid() for line in corr_ax.lines if line.get_gid()] == [
        "val_srocc",
        "val_plcc",
        "val_patch_srocc",
    ]
    assert "higher is better" in corr_ax.get_ylabel() and "lower is better" in loss_ax.get_ylabel()
    pictures = [r | {"train_picture_loss": r["train_loss"], "val_picture_loss": r["val_loss"],
                     "val_patch_srocc": math.nan} for r in rows]  # fmt: skip
    loss_ax, corr_ax = _training_figure(training.log_frame(pictures)).axes
    assert [line.get_gid() for line in loss_ax.lines if line.get_gid()] == ["train_loss", "val_loss"]
    assert [line.get_gid() for line in corr_ax.lines if line.get_gid()] == ["val_srocc", "val_plcc"]


def test_a_trained_judge_is_named_by_its_file_in_figures_and_folders() -> None:
    from saliqa.iqa.registry import judge_label, judge_slug

    assert judge_label("niqe") == "NIQE" and judge_slug("niqe") == "niqe"
    assert judge_label("paq2piq:/runs/clive/best.pt") == "PAQ2PIQ (best.pt)"
    assert judge_slug("paq2piq:/runs/clive/best.pt").startswith("paq2piq-best-")
    assert judge_slug("paq2piq:/runs/clive/best.pt") != judge_slug("paq2piq:/runs/koniq/best.pt")


def test_an_epoch_without_a_validation_score_never_displaces_a_validated_best() -> None:
    from saliqa.iqa.training import _better, _rank

    best: dict = {"rank": None}
    history = [(0.45, 1.0), (0.52, 0.9), (float("nan"), float("nan")), (0.30, 1.2)]
    chosen = None
    for epoch, (srocc, loss) in enumerate(history, start=1):
        row = {"val_srocc": srocc, "val_loss": loss}
        if _better(row, best):
            best, chosen = {"rank": list(_rank(row))}, epoch
    assert chosen == 2
    nan = {"val_srocc": float("nan"), "val_loss": float("nan")}
    assert _better(nan, {"rank": None}) and _better(nan, {"rank": list(_rank(nan))})
