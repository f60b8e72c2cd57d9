from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_folder_dataset
from torchvision.transforms.v2 import functional as TF

from saliqa.classify import train as train_module
from saliqa.classify.checkpoint import classifier_from_checkpoint, load_checkpoint
from saliqa.classify.train import BEST, LAST, LOG, LOG_COLUMNS, Trainer, epoch_batches, lr_factor
from saliqa.classify.transforms import (
    center_crop,
    eval_view,
    random_resized_crop_box,
    train_view,
    upscale_short_side,
)
from saliqa.config import TrainConfig
from saliqa.data.readers import read_folder


@pytest.mark.parametrize(
    ("h", "w", "size"), [(256, 256, 224), (301, 257, 224), (225, 400, 224), (64, 97, 32)]
)
def test_center_crop_matches_torchvision(h: int, w: int, size: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = TF.center_crop(torch.from_numpy(image).permute(2, 0, 1), [size, size])
    np.testing.assert_array_equal(center_crop(image, size), expected.permute(1, 2, 0).numpy())


def test_small_images_are_upscaled_on_their_short_side_and_recorded() -> None:
    image = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    up, upscaled = upscale_short_side(image, 224)
    assert upscaled and up.shape == (224, 336, 3) and up.dtype == np.uint8
    same, upscaled = upscale_short_side(image, 200)
    assert not upscaled and same is image
    crop, upscaled = eval_view(image, 224)
    assert upscaled and crop.shape == (3, 224, 224)


def test_random_resized_crop_boxes_follow_the_inception_rule() -> None:
    rng = np.random.default_rng(2)
    shares, ratios = [], []
    for _ in range(2000):
        top, left, h, w = random_resized_crop_box(300, 400, rng)
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        shares.append(h * w / (300 * 400))
        ratios.append(w / h)
    # Rounding to whole pixels moves the share and ratio slightly past the drawn ranges.
    assert 0.07 <= min(shares) and max(shares) <= 1.0
    assert 3 / 4 * 0.9 <= min(ratios) and max(ratios) <= 4 / 3 * 1.1
    # Same rule as torchvision's RandomResizedCrop (torch draws there): the share and ratio distributions
    # agree within sampling error (standard error of each mean ~0.006 and ~0.004 with 2000 draws).
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    boxes = [
        RandomResizedCrop.get_params(torch.empty(3, 300, 400), [0.08, 1.0], [3 / 4, 4 / 3])
        for _ in range(2000)
    ]
    ref_shares = [h * w / (300 * 400) for _, _, h, w in boxes]
    ref_ratios = [w / h for _, _, h, w in boxes]
    assert abs(np.mean(shares) - np.mean(ref_shares)) < 0.03
    assert abs(np.mean(ratios) - np.mean(ref_ratios)) < 0.02
    assert abs(np.quantile(shares, 0.9) - np.quantile(ref_shares, 0.9)) < 0.04


def test_train_view_is_a_function_of_its_stream() -> None:
    image = np.random.default_rng(3).integers(0, 256, (180, 240, 3), dtype=np.uint8)
    a = train_view(image, 64, np.random.default_rng(7))
    b = train_view(image, 64, np.random.default_rng(7))
    c = train_view(image, 64, np.random.default_rng(8))
    assert a.shape == (3, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_epoch_batches_cover_every_image_once_and_never_leave_one_alone() -> None:
    for n in (1, 2, 9, 17, 33):
        batches = epoch_batches(n, 8, seed=0, epoch=1)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert n == 1 or all(len(b) >= 2 for b in batches)
    assert epoch_batches(33, 8, 0, 1) == epoch_batches(33, 8, 0, 1) != epoch_batches(33, 8, 0, 2)


def test_learning_rate_schedules() -> None:
    cosine = TrainConfig(epochs=4, warmup_epochs=1, schedule="cosine")
    factors = [lr_factor(cosine, s, 10) for s in range(40)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 29 / 30))
    )
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    step = TrainConfig(epochs=6, warmup_epochs=0, schedule="step", step_epochs=2, step_gamma=0.5)
    assert [lr_factor(step, e * 5, 5) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert lr_factor(TrainConfig(schedule="constant", warmup_epochs=0), 17, 5) == 1.0


def _records(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = read_folder(root).frame
    val = frame.groupby("label").head(1)
    return frame.drop(val.index), val


def _trainer(root: Path, out: Path, **overrides: object) -> Trainer:
    values = {"epochs": 2, "batch_size": 4, "image_size": 64, "workers": 0, "lr": 0.01, "device": "cpu"}
    config = TrainConfig(**{**values, **overrides})
    train, val = _records(root)
    return Trainer(
        train, val, config, out, seed=3, fingerprint="test", device=torch.device("cpu"), progress=False
    )


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_training_writes_checkpoints_log_and_is_bit_reproducible(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4, side=96)
    result = _trainer(root, tmp_path / "a").run()
    assert result.classes == ["astronaut", "chelsea", "coffee"] and result.resumed_epochs == 0
    log = pd.read_parquet(tmp_path / "a" / LOG)
    assert tuple(log.columns) == LOG_COLUMNS and log["epoch"].tolist() == [1, 2]
    assert log["train_loss"].notna().all() and log["val_top1"].between(0, 1).all()

    best = load_checkpoint(tmp_path / "a" / BEST)
    assert best["classes"] == result.classes and best["arch"] == "p2p-resnet18"
    assert best["config"]["image_size"] == 64 and best["fingerprint"] == "test"
    assert best["epoch"] == result.best_epoch
    model, _ = classifier_from_checkpoint(tmp_path / "a" / BEST, "cpu")
    assert not model.training

    _trainer(root, tmp_path / "b", workers=2).run()  # worker processes change nothing
    for name in (BEST, LAST):
        a, b = _state(tmp_path / "a" / name), _state(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "b" / LOG).drop(columns="seconds"), log.drop(columns="seconds")
    )


def test_training_killed_after_an_epoch_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4, side=96)
    _trainer(root, tmp_path / "whole", epochs=2, schedule="onecycle").run()

    original = Trainer._validate
    calls = {"n": 0}

    def dies_in_epoch_two(self: Trainer, model: torch.nn.Module) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands for a kill: nothing of epoch 2 reaches the disk
        return original(self, model)

    monkeypatch.setattr(Trainer, "_validate", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _trainer(root, tmp_path / "killed", epochs=2, schedule="onecycle").run()
    assert load_checkpoint(tmp_path / "killed" / LAST)["epoch"] == 1
    monkeypatch.setattr(Trainer, "_validate", original)

    result = _trainer(root, tmp_path / "killed", epochs=2, schedule="onecycle").run()
    assert result.resumed_epochs == 1
    for name in (BEST, LAST):
        a, b = _state(tmp_path / "whole" / name), _state(tmp_path / "killed" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "killed" / LOG).drop(columns="seconds"),
        pd.read_parquet(tmp_path / "whole" / LOG).drop(columns="seconds"),
    )


def test_a_last_checkpoint_of_other_work_is_not_resumed(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4, side=96)
    _trainer(root, tmp_path / "run", epochs=1).run()
    other = _trainer(root, tmp_path / "run", epochs=1, lr=0.02)
    other.fp = "other"
    assert other.run().resumed_epochs == 0


def test_an_image_that_became_unreadable_is_skipped_and_counted(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4, side=96)
    trainer = _trainer(root, tmp_path / "run", epochs=1)
    Path(trainer.train_records[0]["path"]).write_bytes(b"")
    log = trainer.run().log
    assert log["skipped"].tolist() == [1]


def test_every_architecture_trains_a_step(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=2, side=64)
    for arch in ("resnet18", "timm:resnet10t"):
        trainer = _trainer(root, tmp_path / arch.replace(":", "_"), epochs=1, arch=arch, batch_size=3)
        assert trainer.run().log["train_loss"].notna().all()


def test_adamw_and_label_smoothing(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=2, side=64)
    result = _trainer(root, tmp_path / "run", epochs=1, optimizer="adamw", label_smoothing=0.1, lr=1e-3).run()
    assert np.isfinite(result.log["train_loss"]).all()


def test_training_uses_no_global_numpy_or_torch_state(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=2, side=64)
    torch.manual_seed(123)
    np.random.seed(123)
    _trainer(root, tmp_path / "a", epochs=1).run()
    torch.manual_seed(999)
    np.random.seed(999)
    _trainer(root, tmp_path / "b", epochs=1).run()
    a, b = _state(tmp_path / "a" / LAST), _state(tmp_path / "b" / LAST)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train_module.derive_seed(3, "dropout", 1) != train_module.derive_seed(3, "dropout", 2)


def test_without_validation_images_the_latest_epoch_is_best(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4, side=96)
    trainer = _trainer(root, tmp_path / "run", epochs=2)
    trainer.val_records = []  # e.g. every validation label unknown to the classifier
    result = trainer.run()
    assert result.log["val_top1"].isna().all() and result.best_epoch == 2
    assert load_checkpoint(tmp_path / "run" / BEST)["epoch"] == 2


def test_a_kill_between_last_and_best_is_repaired_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder_dataset(tmp_path / "data", per_class=4, side=96)
    _trainer(root, tmp_path / "whole", epochs=1).run()
    saved = train_module.save_checkpoint

    def dies_before_best(path: Path, *args: object, **kwargs: object) -> object:
        if Path(path).name == BEST:
            raise KeyboardInterrupt
        return saved(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", dies_before_best)
    with pytest.raises(KeyboardInterrupt):
        _trainer(root, tmp_path / "killed", epochs=1).run()
    monkeypatch.setattr(train_module, "save_checkpoint", saved)
    assert not (tmp_path / "killed" / BEST).exists()
    assert _trainer(root, tmp_path / "killed", epochs=1).run().resumed_epochs == 1
    a, b = _state(tmp_path / "whole" / BEST), _state(tmp_path / "killed" / BEST)
    assert all(torch.equal(a[k], b[k]) for k in a)
