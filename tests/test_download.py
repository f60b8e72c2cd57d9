"""Downloads against a real HTTP server on 127.0.0.1: verify, resume, offline reuse, ImageNet weights."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from local_server import FileServer

from saliqa.classify import IMAGENET_WEIGHTS, build_classifier, init_weights
from saliqa.errors import DownloadError
from saliqa.io.download import WeightsFile, download, ensure_file, ensure_weights

DATA = bytes(range(256)) * 4099  # ~1 MiB: several chunks
SHA = hashlib.sha256(DATA).hexdigest()


def _refuse(*args: object, **kwargs: object) -> None:
    """Stands in for urlopen where any network use is a failure."""
    raise AssertionError("network used")


def test_download_verifies_and_moves_into_place(server: FileServer, tmp_path: Path) -> None:
    server.files["w.bin"] = DATA
    dest = tmp_path / "cache" / "w.bin"
    assert download(server.url("w.bin"), dest, sha256=SHA, size=len(DATA), progress=True) == dest
    assert dest.read_bytes() == DATA
    assert list(dest.parent.iterdir()) == [dest]
    assert server.requests == [("w.bin", None)]


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"sha256_prefix": "deadbeef"}, "expected sha256 starting deadbeef, got " + SHA),
        ({"sha256": "0" * 64}, "expected sha256 " + "0" * 64),
        ({"size": 10}, f"expected 10 bytes, got {len(DATA)}"),
    ],
)
def test_failed_check_leaves_nothing(server: FileServer, tmp_path: Path, check: dict, message: str) -> None:
    server.files["w.bin"] = DATA
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError, match=message) as info:
        download(server.url("w.bin"), dest, progress=False, **check)
    assert "partial file was deleted" in str(info.value) and str(dest) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("honour_range", [True, False])
def test_resume_from_partial_file(server: FileServer, tmp_path: Path, honour_range: bool) -> None:
    server.files["w.bin"], server.honour_range = DATA, honour_range
    dest = tmp_path / "w.bin"
    half = len(DATA) // 2
    (tmp_path / "w.bin.part").write_bytes(DATA[:half])
    download(server.url("w.bin"), dest, sha256_prefix=SHA[:8], progress=True)
    assert dest.read_bytes() == DATA and not (tmp_path / "w.bin.part").exists()
    assert server.requests == [("w.bin", f"bytes={half}-")]


def test_wrong_partial_file_fails_then_recovers(server: FileServer, tmp_path: Path) -> None:
    server.files["w.bin"] = DATA
    dest = tmp_path / "w.bin"
    (tmp_path / "w.bin.part").write_bytes(b"x" * 1000)
    with pytest.raises(DownloadError, match="expected sha256"):
        download(server.url("w.bin"), dest, sha256=SHA, progress=False)
    assert list(tmp_path.iterdir()) == []
    download(server.url("w.bin"), dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA


def test_complete_partial_file_needs_no_body(server: FileServer, tmp_path: Path) -> None:
    server.files["w.bin"] = DATA
    (tmp_path / "w.bin.part").write_bytes(DATA)
    download(server.url("w.bin"), tmp_path / "w.bin", sha256=SHA, progress=False)  # server answers 416
    assert (tmp_path / "w.bin").read_bytes() == DATA
    assert server.requests == [("w.bin", f"bytes={len(DATA)}-")]


def test_ensure_file_reuses_a_verified_file_offline(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["w.bin"] = DATA
    dest = tmp_path / "w.bin"
    ensure_file(server.url("w.bin"), dest, sha256=SHA, progress=False)
    server.stop()
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)
    assert ensure_file(server.url("w.bin"), dest, sha256=SHA, progress=False) == dest


def test_ensure_file_replaces_a_corrupt_file(server: FileServer, tmp_path: Path) -> None:
    server.files["w.bin"] = DATA
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"damaged")
    ensure_file(server.url("w.bin"), dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA


def test_offline_without_file_says_where_to_put_it(server: FileServer, tmp_path: Path) -> None:
    url, dest = server.url("w.bin"), tmp_path / "sub" / "w.bin"
    server.stop()
    with pytest.raises(DownloadError) as info:
        ensure_file(url, dest, sha256_prefix="abcd1234", progress=False, timeout=5)
    message = str(info.value)
    assert url in message and f"put it at {dest}" in message and "sha256 starting abcd1234" in message


def test_http_error_is_a_download_error(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        download(server.url("absent.bin"), tmp_path / "absent.bin", progress=False)


# -- ImageNet weights through the torch hub cache ----------------------------------------------------------


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under tmp_path (TORCH_HOME), whatever set_dir did before."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_imagenet_weights_download_once_then_offline(
    server: FileServer, torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        reference.layer4[1].conv2.weight.normal_()
    source = tmp_path / "served.pth"
    torch.save(reference.state_dict(), source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    server.files[name] = source.read_bytes()
    monkeypatch.setitem(IMAGENET_WEIGHTS, "p2p-resnet18", WeightsFile(server.url(name), name, digest[:8]))

    model = build_classifier("p2p-resnet18", 3)
    description = init_weights(model, "imagenet", progress=True)
    cached = torch_home / name
    assert description == f"imagenet: {cached} (sha256 {digest})"
    assert cached.read_bytes() == source.read_bytes()
    assert torch.equal(model.net.body[7][1].conv2.weight, reference.layer4[1].conv2.weight)

    server.stop()
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)
    again = build_classifier("p2p-resnet18", 3)
    assert init_weights(again, "imagenet", progress=False) == description
    assert torch.equal(again.net.body[0].weight, reference.conv1.weight)


def test_imagenet_weights_offline_and_absent(
    server: FileServer, torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "resnet18-0123abcd.pth"
    url = server.url(name)
    server.stop()
    monkeypatch.setitem(IMAGENET_WEIGHTS, "resnet18", WeightsFile(url, name, "0123abcd"))
    with pytest.raises(DownloadError) as info:
        init_weights(build_classifier("resnet18", 2), "imagenet", progress=False)
    message = str(info.value)
    assert "ImageNet weights for resnet18" in message and url in message and str(torch_home / name) in message


def test_imagenet_table_comes_from_torchvision() -> None:
    r18 = IMAGENET_WEIGHTS["resnet18"]
    assert r18.url == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert (r18.file_name, r18.sha256_prefix) == ("resnet18-f37072fd.pth", "f37072fd")
    assert IMAGENET_WEIGHTS["p2p-resnet18"] == r18
    assert IMAGENET_WEIGHTS["resnet50"].file_name == "resnet50-11ad3fa6.pth"


def test_ensure_weights_uses_the_file_name(server: FileServer, tmp_path: Path) -> None:
    server.files["w.bin"] = DATA
    path = ensure_weights(
        WeightsFile(server.url("w.bin"), "local.bin", SHA[:8], len(DATA)), tmp_path, progress=False
    )
    assert path == tmp_path / "local.bin" and path.read_bytes() == DATA
