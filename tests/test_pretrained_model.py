"""Classifiers evaluated as they are: torchvision weights by name (served from 127.0.0.1), saliqa checkpoints
and plain state dicts reused on another dataset, classes matched by name, and CE/mCE in the field's convention
against hand-computed values."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from local_server import FileServer
from PIL import Image

from saliqa.classify import pretrained
from saliqa.classify.checkpoint import load_checkpoint, save_checkpoint
from saliqa.classify.models import build_classifier
from saliqa.classify.pretrained import ModelSource, published_transforms
from saliqa.classify.transforms import resize_short_side
from saliqa.config import config_from_dict
from saliqa.errors import CheckpointError, ConfigError
from saliqa.io.download import WeightsFile
from saliqa.pipeline.run import run_pipeline
from saliqa.reference_data import imagenet_classes
from saliqa.robustness import alexnet_errors

WNIDS = ("n01440764", "n01443537", "n01484850")  # tench, goldfish, great white shark: torchvision's 0, 1, 2
COMMON = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
]


def _photos() -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee()]


def fake_imagenet_val(root: Path, labels: tuple[str, ...] = WNIDS, per_class: int = 2) -> Path:
    """ROOT/<wnid>/ILSVRC2012_val_<n>.JPEG: real photos cut to 300x260 (short side above 256)."""
    n = 0
    for label, photo in zip(labels, _photos() * 2, strict=False):
        (root / label).mkdir(parents=True)
        for k in range(per_class):
            n += 1
            crop = photo[k * 40 : k * 40 + 260, k * 30 : k * 30 + 300, :3]
            Image.fromarray(crop).save(root / label / f"ILSVRC2012_val_{n:08d}.JPEG", quality=95)
    return root


@pytest.fixture
def served_resnet18(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A seeded random ResNet-18 (1000 classes) served as torchvision's IMAGENET1K_V1 file; returns its sha256."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18().state_dict(), buffer)
    body = buffer.getvalue()
    digest = hashlib.sha256(body).hexdigest()
    server.files["resnet18-test.pth"] = body
    monkeypatch.setattr(
        pretrained,
        "named_weights_file",
        lambda weights: WeightsFile(
            server.url("resnet18-test.pth"), f"resnet18-{digest[:8]}.pth", sha256=digest
        ),
    )
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return digest


def _config(root: Path, model: dict, source: str = "folder", **evaluate: object) -> dict:
    return {
        "data": {"source": source, "root": str(root)},
        "rate": {"iqa": "piqe", "workers": 0},
        "split": {"keep": ["Bad", "Poor", "Fair", "Good", "Excellent"]},
        "model": model,
        "evaluate": {"workers": 0, "bootstrap": 100, **evaluate},
    }


def test_published_transforms_are_torchvisions() -> None:
    v2 = published_transforms("torchvision:resnet50.IMAGENET1K_V2")
    assert (v2.resize, v2.crop, v2.interpolation) == (232, 224, "bilinear")
    v1 = published_transforms("torchvision:resnet18.IMAGENET1K_V1")
    assert (v1.resize, v1.crop) == (256, 224)


def test_resize_short_side_matches_torchvisions_resize(photos: dict[str, np.ndarray]) -> None:
    image = photos["astronaut"][:300, :410, :3] if "astronaut" in photos else next(iter(photos.values()))
    mine, enlarged = resize_short_side(image, 256)
    theirs = torchvision.transforms.v2.Resize(256, antialias=True)(torch.from_numpy(image).permute(2, 0, 1))
    assert not enlarged and mine.shape[:2] == tuple(theirs.shape[-2:])
    np.testing.assert_array_equal(mine, theirs.permute(1, 2, 0).numpy())


def test_unknown_names_fail_before_any_work() -> None:
    with pytest.raises(Exception, match="no weights 'IMAGENET9K'"):
        published_transforms("torchvision:resnet18.IMAGENET9K")
    with pytest.raises(Exception, match="no classification model"):
        published_transforms("torchvision:resnet999.IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="exactly one of name"):
        config_from_dict({"model": {}})
    with pytest.raises(ConfigError, match="torchvision:<builder>"):
        config_from_dict({"model": {"name": "resnet50"}})


def test_torchvision_model_by_name_with_ce_against_alexnet(
    served_resnet18: str, tmp_path: Path, one_torch_thread: None
) -> None:
    """A seeded random ResNet-18 named as torchvision's IMAGENET1K_V1, on a fake ImageNet-val in WNID folders,
    all 15 common corruptions at severities 1-5: the train stage is skipped, the model's file hash recorded,
    and CE, relative CE and mCE equal the hand computation from eval.parquet and AlexNet's published errors."""
    root = fake_imagenet_val(tmp_path / "val")
    model = {"name": "torchvision:resnet18.IMAGENET1K_V1"}
    config = config_from_dict(
        _config(
            root,
            model,
            "imagenet-val",
            corruptions="common",
            severities=[1, 2, 3, 4, 5],
            alexnet_reference=True,
        )
    )
    out = tmp_path / "run"
    results = {r.name: r for r in run_pipeline(config, out, until="evaluate", progress=False)}
    assert results["train"].messages[0].startswith("skipped: evaluating torchvision:resnet18.IMAGENET1K_V1")
    ckpt = load_checkpoint(out / "model" / "best.pt")
    assert ckpt["weights_sha256"] == served_resnet18
    assert ckpt["classes"][:3] == list(WNIDS) and ckpt["class_names"][:2] == ["tench", "goldfish"]
    assert ckpt["transforms"] == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    assert not (out / "model" / "last.pt").exists()

    split = pd.read_parquet(out / "split.parquet")
    assert (split["split"] == "val").all() and len(split) == 6  # nothing trains: every image is evaluated

    # the classifier's own top-1 on the clean crops: the published pipeline, by hand
    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load(tmp_path / "hub" / "checkpoints" / f"resnet18-{served_resnet18[:8]}.pth"))
    net.eval()
    eval_table = pd.read_parquet(out / "eval.parquet")
    clean = eval_table[eval_table["severity"] == 0].sort_values("image_id")
    preprocess = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    files = sorted(root.glob("*/*.JPEG"), key=lambda p: p.name)
    with torch.no_grad():
        batch = torch.stack([preprocess(torchvision.io.decode_image(str(f))) for f in files])
        predicted = net(batch).argmax(1).numpy()
    wnids = list(imagenet_classes()["wnid"])
    labels = [f.parent.name for f in files]
    expected_top1 = np.array([wnids[p] == label for p, label in zip(predicted, labels, strict=True)])
    np.testing.assert_array_equal(clean["top1"].to_numpy(), expected_top1)

    # CE in the field's convention, by hand
    error = 1.0 - eval_table.groupby(["corruption", "severity"])["top1"].mean()
    clean_name = clean["corruption"].iloc[0]
    alexnet = alexnet_errors().set_index(["corruption", "severity"])["top1_error"]
    scores = pd.read_parquet(out / "robustness.parquet")
    scores = scores[(scores["reference"] == "alexnet") & (scores["set"] == "val")].set_index("corruption")
    ces, relative = [], []
    for name in COMMON:
        ours = np.array([error[(name, s)] for s in range(1, 6)])
        theirs = np.array([alexnet[(name, s)] for s in range(1, 6)])
        ce = ours.sum() / theirs.sum()
        rel = (ours - error[(clean_name, 0)]).sum() / (theirs - alexnet[("none", 0)]).sum()
        assert scores.loc[name, "ce"] == pytest.approx(ce, rel=1e-12)
        assert scores.loc[name, "relative_ce"] == pytest.approx(rel, rel=1e-12, abs=1e-12)
        ces.append(ce)
        relative.append(rel)
    mean_row = scores.loc["mCE"]
    assert mean_row["ce"] == pytest.approx(np.mean(ces), rel=1e-12)
    assert mean_row["relative_ce"] == pytest.approx(np.mean(relative), rel=1e-12)


def _saliqa_checkpoint(path: Path, classes: list[str], arch: str = "resnet18") -> Path:
    classifier = build_classifier(arch, len(classes), seed=3)
    return save_checkpoint(path, classifier, classes=classes)


def test_a_saliqa_checkpoint_is_reused_on_another_dataset(tmp_path: Path) -> None:
    """Its classes are matched by name: a dataset with a subset of them evaluates; one with a class the
    checkpoint lacks is a clear error before any crop is judged."""
    from conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "data", per_class=2)
    ckpt = _saliqa_checkpoint(tmp_path / "best.pt", ["astronaut", "chelsea", "coffee", "rocket"])
    values = _config(root, {"checkpoint": str(ckpt)}, corruptions=["contrast"], severities=[1])
    values["explain"] = {"sample": 3, "methods": ["gradcam"], "workers": 0}
    out = tmp_path / "run"
    results = {r.name: r for r in run_pipeline(config_from_dict(values), out, progress=False)}
    assert results["train"].messages[0].startswith(f"skipped: evaluating checkpoint {ckpt}")
    assert len(pd.read_parquet(out / "compare.parquet")) > 0  # explain works on the reused model
    page = (out / "report.html").read_text(encoding="utf-8")
    assert (
        "Training (skipped)" in page
        and f"weights sha256 {hashlib.sha256(ckpt.read_bytes()).hexdigest()}" in page
    )
    assert (
        load_checkpoint(out / "model" / "best.pt")["weights_sha256"]
        == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    )
    eval_table = pd.read_parquet(out / "eval.parquet")
    assert len(eval_table) == 6 * 2 and (eval_table["status"] == "ok").all()

    narrow = _saliqa_checkpoint(tmp_path / "narrow.pt", ["astronaut", "rocket"])
    config = config_from_dict(_config(root, {"checkpoint": str(narrow)}))
    with pytest.raises(
        CheckpointError, match=r"2 label\(s\) of the dataset are not classes of .*chelsea, coffee"
    ):
        run_pipeline(config, tmp_path / "run2", until="evaluate", progress=False)


def test_a_plain_state_dict_needs_arch_and_classes(tmp_path: Path) -> None:
    state = build_classifier("resnet18", 2, seed=1).net.state_dict()
    path = tmp_path / "plain.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="give model.arch and model.classes"):
        ModelSource(checkpoint=path).load()
    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\n")
    ready = ModelSource(checkpoint=path, arch="resnet18", classes=names).load()
    assert ready.classes == ["cat", "dog"]
    x = torch.rand(1, 3, 64, 64)
    reference = build_classifier("resnet18", 2, seed=1).eval()
    torch.testing.assert_close(ready.classifier(x), reference(x), rtol=0, atol=0)
    names.write_text("cat\ncat\n")
    with pytest.raises(CheckpointError, match="repeated: cat"):
        ModelSource(checkpoint=path, arch="resnet18", classes=names).load()
    names.write_text("a\nb\nc\n")
    with pytest.raises(CheckpointError, match="does not fit resnet18 with 3 classes"):
        ModelSource(checkpoint=path, arch="resnet18", classes=names).load()


def test_a_full_pickle_needs_the_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(build_classifier("resnet18", 2, seed=1).net, path)  # a whole module: needs the unpickler
    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\n")
    with pytest.raises(CheckpointError, match="model.trust_checkpoint = true"):
        ModelSource(checkpoint=path, arch="resnet18", classes=names).load()
    ready = ModelSource(checkpoint=path, arch="resnet18", classes=names, trust=True).load()
    assert ready.classes == ["cat", "dog"]


def test_timm_model_by_name_from_a_local_file(tmp_path: Path) -> None:
    """timm's published eval transforms (crop_pct 0.95, bicubic: resize floor(224 / 0.95) = 235), ImageNet's
    WNIDs, the file's hash, and the same logits as timm's own model on normalised input."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    ready = ModelSource(name="timm:resnet18.a1_in1k", weights=path).load()
    assert (ready.transforms.resize, ready.transforms.crop, ready.transforms.interpolation) == (
        235,
        224,
        "bicubic",
    )
    assert ready.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ready.classes == list(imagenet_classes()["wnid"])
    x = torch.rand(2, 3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = net((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
        torch.testing.assert_close(ready.classifier(x), expected, rtol=0, atol=0)


def test_explain_crops_what_evaluate_judged_with_the_published_resize(tmp_path: Path) -> None:
    from saliqa.pipeline.plan import CropPlan
    from saliqa.pipeline.stages.explain import explain_plan

    values = _config(tmp_path, {"name": "torchvision:resnet50.IMAGENET1K_V2"}, corruptions=["fog", "snow"])
    values["explain"] = {"corruptions": ["fog"]}
    config = config_from_dict(values)
    evaluated, explained = CropPlan.from_config(config), explain_plan(config)
    assert (evaluated.resize, evaluated.crop, evaluated.interpolation) == (232, 224, "bilinear")
    assert (explained.resize, explained.crop, explained.interpolation) == (232, 224, "bilinear")
    assert {name for name, _ in explained.conditions} == {"none", "fog"}
    study = config_from_dict(
        {**values, "model": {"name": "torchvision:resnet50.IMAGENET1K_V2", "transforms": "study"}}
    )
    assert CropPlan.from_config(study).resize is None and CropPlan.from_config(study).crop == 224


def test_checks_before_any_work_and_names_that_resolve() -> None:
    from saliqa.classify.pretrained import concrete_name

    assert concrete_name("torchvision:resnet50.DEFAULT") == "torchvision:resnet50.IMAGENET1K_V2"
    with pytest.raises(
        Exception, match="no classification model"
    ):  # quantized builders: refused, not fetched
        ModelSource(name="torchvision:quantized_resnet50.IMAGENET1K_FBGEMM_V2").check()
    with pytest.raises(CheckpointError, match="no weights file"):
        ModelSource(name="timm:resnet18.a1_in1k", weights=Path("/nonexistent/weights.pth")).check()
    # the two builders whose published weights expect torchvision's own input transform
    assert build_classifier("torchvision:inception_v3", 10).net.transform_input
    assert build_classifier("torchvision:googlenet", 10).net.transform_input


def test_a_timm_weights_file_is_read_weights_only(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    path = tmp_path / "whole.pth"
    torch.save(timm.create_model("resnet18", pretrained=False), path)  # a whole module: needs the unpickler
    with pytest.raises(CheckpointError, match="model.trust_checkpoint = true"):
        ModelSource(name="timm:resnet18.a1_in1k", weights=path).load()
    assert (
        ModelSource(name="timm:resnet18.a1_in1k", weights=path, trust=True).load().classes[0] == "n01440764"
    )


def test_grad_cams_layer_of_torchvision_models_is_channels_first() -> None:
    from saliqa.classify.models import target_layer

    seen: dict[str, torch.Size] = {}
    for builder in ("vgg11", "swin_t", "resnet18"):
        classifier = build_classifier(f"torchvision:{builder}", 4).eval()
        hook = target_layer(classifier).register_forward_hook(
            lambda module, inputs, output, name=builder: seen.update({name: output.shape})
        )  # returns None: the output stays as it is
        with torch.no_grad():
            classifier(torch.rand(1, 3, 224, 224))
        hook.remove()
        shape = seen[builder]
        assert shape[1] > shape[2] == shape[3], (builder, shape)  # (1, C, h, w) with C > h = w
