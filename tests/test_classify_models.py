"""P2PNet against an independent forward; classifiers, initial weights and checkpoints."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import roi_pool

from saliqa.classify import (
    Classifier,
    P2PNet,
    build_classifier,
    check_pretrained,
    classifier_from_checkpoint,
    classifier_names,
    init_weights,
    load_checkpoint,
    load_initial_weights,
    save_checkpoint,
    target_layer,
    whole_image_boxes,
)
from saliqa.errors import CheckpointError, UnknownModelError

TV_TO_BODY = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in every float tensor (incl. BatchNorm running stats) so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                values = torch.rand(t.shape, generator=g) * 0.5 + 0.75 if "running_var" in name else None
                t.copy_(values if values is not None else torch.randn(t.shape, generator=g) * 0.1)
    return module


def _reference_head(net: P2PNet, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """PaQ-2-PiQ's head from torchvision.ops.roi_pool and plain tensor ops (eval mode)."""
    sd = net.state_dict()
    pooled = roi_pool(feats, boxes, output_size=(2, 2), spatial_scale=1 / 32)
    h = torch.cat([pooled.amax(dim=(2, 3)), pooled.mean(dim=(2, 3))], dim=1)

    def bn(x: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(
            x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"]
        )

    h = F.linear(bn(h, "head.2"), sd["head.4.weight"], sd["head.4.bias"]).relu()
    return F.linear(bn(h, "head.6"), sd["head.8.weight"], sd["head.8.bias"])


def _torchvision_features(resnet: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))


@pytest.fixture(scope="module")
def tv_resnet18() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    return _randomise(torchvision.models.resnet18(), 1).eval()


@pytest.fixture(scope="module")
def tv_file(tv_resnet18: torchvision.models.ResNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(tv_resnet18.state_dict(), path)
    return path


# -- P2PNet -------------------------------------------------------------------------------------------------


def test_p2pnet_layout_matches_paq2piq() -> None:
    net = P2PNet(1)
    sd = net.state_dict()
    assert len(sd) == 134
    assert sum(p.numel() for p in net.parameters()) == 11_704_897
    assert {k.rsplit(".", 1)[0] for k in sd if k.startswith("head.")} == {
        "head.2",
        "head.4",
        "head.6",
        "head.8",
    }
    assert sd["body.0.weight"].shape == (64, 3, 7, 7) and "body.1.running_var" in sd
    assert {k.split(".")[1] for k in sd if k.startswith("body.")} == {"0", "1", "4", "5", "6", "7"}
    assert sd["head.2.weight"].shape == (1024,) and sd["head.4.weight"].shape == (512, 1024)
    assert sd["head.8.weight"].shape == (1, 512) and P2PNet(7).state_dict()["head.8.weight"].shape == (7, 512)
    head_linear = sd["head.4.bias"], sd["head.8.bias"]
    assert all(torch.count_nonzero(b) == 0 for b in head_linear)
    assert 0.03 < sd["head.4.weight"].std() < 0.06  # kaiming normal: sqrt(2 / 1024) = 0.044


def test_p2pnet_forward_matches_independent_reference() -> None:
    torch.manual_seed(0)
    net = _randomise(P2PNet(3), 2).eval()
    x = torch.rand(3, 3, 64, 96)
    with torch.no_grad():
        feats = net.features(x)
        assert feats.shape == (3, 512, 2, 3)
        whole = whole_image_boxes(3, 64, 96)
        assert whole.tolist() == [[b, 0, 0, 96, 64] for b in range(3)]
        out = net(x)
        assert out.shape == (3, 3)
        torch.testing.assert_close(out, _reference_head(net, feats, whole))
        boxes = torch.tensor(
            [[0, 0, 0, 32, 32], [2, 16, 8, 96, 64], [1, 40, 20, 90, 60], [2, 0, 0, 48, 64.0]]
        )
        out = net(x, boxes)
        assert out.shape == (4, 3)
        torch.testing.assert_close(out, _reference_head(net, feats, boxes))
        torch.testing.assert_close(net.forward_rois(feats, boxes), out)
        torch.testing.assert_close(net(x[2:3]), net(x)[2:3])  # eval: images do not interact


def test_p2pnet_rejects_bad_boxes() -> None:
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        P2PNet(1).eval()(torch.rand(1, 3, 64, 64), torch.zeros(2, 4))


# -- classifiers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [*classifier_names(), "timm:test_resnet"])
def test_output_shapes_and_state_dict_prefix(arch: str) -> None:
    model = build_classifier(arch, 5).eval()
    assert model.arch == arch and model.n_classes == 5
    assert all(k.startswith("net.") for k in model.state_dict())
    if arch == "resnet50":
        return  # built only: too slow to run on a CPU test budget
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 80)).shape == (2, 5)


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = build_classifier("p2p-resnet18", 4, seed=3), build_classifier("p2p-resnet18", 4, seed=3)
    c = build_classifier("p2p-resnet18", 4, seed=4)
    r1, r2 = build_classifier("resnet18", 4, seed=3), build_classifier("resnet18", 4, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    for x, y in ((a, b), (r1, r2)):
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys() and all(torch.equal(sx[k], sy[k]) for k in sx)
    assert not torch.equal(a.state_dict()["net.head.8.weight"], c.state_dict()["net.head.8.weight"])
    assert not torch.equal(a.state_dict()["net.body.0.weight"], c.state_dict()["net.body.0.weight"])


def test_classifier_normalises_with_imagenet_stats() -> None:
    model = build_classifier("resnet18", 3).eval()
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - mean) / std))
    assert "mean" not in model.state_dict() and "net.mean" not in model.state_dict()


def test_timm_uses_its_pretrained_cfg_stats() -> None:
    pytest.importorskip("timm")
    model = build_classifier("timm:test_resnet", 2)
    cfg = model.net.pretrained_cfg
    assert cfg["mean"] != (0.485, 0.456, 0.406)
    assert model.mean.flatten().tolist() == pytest.approx(cfg["mean"])
    assert model.std.flatten().tolist() == pytest.approx(cfg["std"])


def test_unknown_architectures_name_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownModelError, match="p2p-resnet18, resnet18, resnet50 or timm:"):
        build_classifier("vgg16", 3)
    if importlib.util.find_spec("timm") is not None:
        with pytest.raises(UnknownModelError, match="unknown timm model 'no_such_net'"):
            build_classifier("timm:no_such_net", 3)
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(UnknownModelError, match=r"pip install timm.*saliqa\[timm\]"):
        build_classifier("timm:resnet18", 3)


def test_target_layer_is_the_last_conv_block() -> None:
    p2p, resnet = build_classifier("p2p-resnet18", 2), build_classifier("resnet18", 2)
    assert target_layer(p2p) is p2p.net.body[7]
    assert target_layer(resnet) is resnet.net.layer4
    pytest.importorskip("timm")
    timm_model = build_classifier("timm:test_resnet", 2)
    assert target_layer(timm_model) is timm_model.net.layer4


# -- initial weights ----------------------------------------------------------------------------------------


def _sd(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_init_p2p_from_torchvision_file(tv_file: Path, tv_resnet18: torchvision.models.ResNet) -> None:
    model = build_classifier("p2p-resnet18", 4).eval()
    before = _sd(model)
    desc = init_weights(model, tv_file)
    assert desc.startswith("file: ") and str(tv_file) in desc and "sha256 " in desc
    after, tv = model.state_dict(), tv_resnet18.state_dict()
    for key, value in tv.items():
        top, _, rest = key.partition(".")
        if top != "fc":
            assert torch.equal(after[f"net.body.{TV_TO_BODY[top]}.{rest}"], value), key
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("net.head."))
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.net.features(x), _torchvision_features(tv_resnet18, x))


def test_init_resnet_from_torchvision_file_keeps_fc(
    tv_file: Path, tv_resnet18: torchvision.models.ResNet
) -> None:
    model = build_classifier("resnet18", 4)
    fc = _sd(model.net.fc)
    init_weights(model, str(tv_file))
    after = model.net.state_dict()
    assert all(
        torch.equal(after[k], v) for k, v in tv_resnet18.state_dict().items() if not k.startswith("fc.")
    )
    assert all(torch.equal(model.net.fc.state_dict()[k], v) for k, v in fc.items())
    assert init_weights(model, "random") == "random"


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module", "no_step_counters"])
def test_init_accepts_wrapped_and_prefixed_files(
    wrap: str, tv_resnet18: torchvision.models.ResNet, tmp_path: Path
) -> None:
    sd = tv_resnet18.state_dict()
    content = {
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "opt": {"lr": 0.1}},
        "module": {f"module.{k}": v for k, v in sd.items()},
        "no_step_counters": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
    }[wrap]
    torch.save(content, tmp_path / "w.pth")
    model = build_classifier("p2p-resnet18", 2)
    init_weights(model, tmp_path / "w.pth")
    assert torch.equal(model.net.body[7][1].conv2.weight, sd["layer4.1.conv2.weight"])


def test_mismatching_weights_name_missing_unexpected_and_shapes(
    tv_resnet18: torchvision.models.ResNet, tmp_path: Path
) -> None:
    sd = tv_resnet18.state_dict()
    truncated = {k: v for k, v in sd.items() if not k.startswith("layer4.")}
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): body\.7\.0\.bn1\.bias"):
        init_weights(build_classifier("p2p-resnet18", 2), tmp_path / "truncated.pth")
    r50 = torchvision.models.resnet50().state_dict()
    with pytest.raises(CheckpointError) as info:
        load_initial_weights(build_classifier("p2p-resnet18", 2), r50, "resnet50.pth")
    message = str(info.value)
    assert "unexpected keys" in message and "body.4.0.conv3.weight" in message
    assert "shape mismatches" in message and "file (64, 64, 1, 1) vs model (64, 64, 3, 3)" in message
    with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
        torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
        init_weights(build_classifier("resnet18", 2), tmp_path / "extra.pth")


class _Payload:
    """Unpickling this would create a marker file: proof that code from the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickles_needing_code_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "hook": _Payload(marker)}, tmp_path / "evil.pth")
    assert not marker.exists()
    refused = (
        r"saliqa refuses .*evil.pth: unpickling it would run code \(getattr\)"  # Path.touch, via getattr
    )
    with pytest.raises(
        CheckpointError, match=refused + r".*weights-only files.*train.trust_checkpoint = true"
    ):
        init_weights(build_classifier("resnet18", 2), tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=refused) as info:
        load_checkpoint(tmp_path / "evil.pth")
    assert "trust_checkpoint" not in str(info.value)  # no opt-in for a trained classifier's checkpoint
    assert "weights_only` set to `False`" not in str(info.value)  # not torch's advice to run the code
    assert not marker.exists()


def test_a_trusted_full_pickle_loads_as_initial_weights_only_when_asked(tmp_path: Path) -> None:
    import torchvision

    full = torchvision.models.resnet18(num_classes=7)
    torch.save(full, tmp_path / "full.pth")  # a whole module: needs its class to unpickle
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        init_weights(build_classifier("resnet18", 2), tmp_path / "full.pth")
    model = build_classifier("resnet18", 2)
    assert init_weights(model, tmp_path / "full.pth", trust=True).startswith("file: ")
    assert torch.equal(model.net.conv1.weight, full.conv1.weight)


def test_missing_and_non_state_dict_files(tmp_path: Path) -> None:
    model = build_classifier("resnet18", 2)
    with pytest.raises(CheckpointError, match="no weights file at"):
        init_weights(model, tmp_path / "absent.pth")
    torch.save({"conv1.weight": torch.zeros(1), "note": "hello"}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="non-tensor entries note"):
        init_weights(model, tmp_path / "mixed.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(
        CheckpointError, match="cannot be read as a torch weights file \\(Unsupported operand"
    ):
        init_weights(model, tmp_path / "text.pth")


def test_imagenet_for_timm_says_what_to_do() -> None:
    pytest.importorskip("timm")
    with pytest.raises(CheckpointError, match=r"pretrained=True\).state_dict\(\)"):
        init_weights(build_classifier("timm:test_resnet", 2), "imagenet")


def test_check_pretrained_fails_early(tv_file: Path, tmp_path: Path) -> None:
    check_pretrained("p2p-resnet18", "random")
    check_pretrained("resnet50", "imagenet")  # no download: only that the weights are known
    check_pretrained("p2p-resnet18", str(tv_file))
    with pytest.raises(UnknownModelError):
        check_pretrained("vgg16", "random")
    with pytest.raises(CheckpointError, match="no weights file"):
        check_pretrained("resnet18", str(tmp_path / "absent.pth"))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        check_pretrained("resnet50", str(tv_file))


# -- training checkpoints -----------------------------------------------------------------------------------


def _trained_state(model: Classifier) -> dict:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    model.train()
    loss = F.cross_entropy(model(torch.rand(2, 3, 64, 64)), torch.tensor([0, 2]))
    loss.backward()
    optimizer.step()
    scheduler.step()
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    model = build_classifier("p2p-resnet18", 3, seed=5)
    extra = {
        "config": {"arch": "p2p-resnet18", "lr": 0.1, "sizes": [1, 2], "nested": {"a": None}},
        "fingerprint": "abc123",
        "epoch": 2,
        "metrics": {"val_top1": 0.5},
        **_trained_state(model),
    }
    model.eval()
    path = save_checkpoint(tmp_path / "model" / "best.pt", model, classes=["a", "b", "c"], extra=extra)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["best.pt"]
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "saliqa-classifier" and ckpt["version"] == 1 and ckpt["arch"] == "p2p-resnet18"
    assert ckpt["classes"] == ["a", "b", "c"] and ckpt["config"] == extra["config"] and ckpt["epoch"] == 2
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.004)
    restored, state = classifier_from_checkpoint(path)
    assert not restored.training and state["fingerprint"] == "abc123"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
    again, _ = classifier_from_checkpoint(ckpt)
    assert again.state_dict().keys() == model.state_dict().keys()


def test_checkpoint_refuses_values_weights_only_cannot_read(tmp_path: Path) -> None:
    model = build_classifier("resnet18", 2)
    with pytest.raises(CheckpointError, match=r"extra\['metrics'\]\['loss'\] is a numpy.float64"):
        save_checkpoint(
            tmp_path / "c.pt", model, classes=["a", "b"], extra={"metrics": {"loss": np.float64(1)}}
        )
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "c.pt", model, classes=["a", "b"], extra={"arch": "x"})
    with pytest.raises(CheckpointError, match="3 class names for a 2-class"):
        save_checkpoint(tmp_path / "c.pt", model, classes=["a", "b", "c"], extra={})
    assert not (tmp_path / "c.pt").exists()


def test_load_checkpoint_says_what_a_foreign_file_is(tv_file: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="torchvision ResNet state dict"):
        load_checkpoint(tv_file)
    torch.save({"model": P2PNet(1).state_dict(), "opt": {}}, tmp_path / "p2p.pth")
    with pytest.raises(CheckpointError, match="fastai-wrapped PaQ-2-PiQ"):
        load_checkpoint(tmp_path / "p2p.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a saliqa classifier checkpoint"):
        load_checkpoint(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no weights file"):
        load_checkpoint(tmp_path / "absent.pt")
    bad = {"format": "saliqa-classifier", "version": 1, "arch": "resnet18", "classes": ["a", "b"]}
    with pytest.raises(CheckpointError, match="does not fit resnet18"):
        classifier_from_checkpoint({**bad, "state_dict": P2PNet(2).state_dict()})
    torch.save({**bad, "version": 9, "state_dict": {}}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="upgrade saliqa"):
        load_checkpoint(tmp_path / "new.pt")
