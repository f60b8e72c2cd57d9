"""Where parameter files are looked for, what a missing one says, and downloads from a server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.request
from pathlib import Path

import pytest
import torch
from local_server import FileServer

from saliqa.cli import main
from saliqa.errors import DownloadError, UnknownModelError, WeightsNotFoundError
from saliqa.io.download import WeightsFile
from saliqa.io.hashing import sha256_file
from saliqa.io.weights import ENV_VAR
from saliqa.iqa.weights import (
    WEIGHTS,
    brisque_ranges_text,
    download_model,
    download_weights,
    find_weights,
    weights_status,
)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub under tmp_path (via TORCH_HOME) and no $SALIQA_WEIGHTS_DIR; both restored after."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # undo any set_dir; restored afterwards
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- where files are found --------------------------------------------------------------------------------------


def test_precedence_explicit_env_hub(hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _touch(tmp_path / "mine" / "p2p.pth")
    env_file = _touch(tmp_path / "env" / "RoIPoolModel-fit.10.bs.120.pth")
    saliqa_hub = _touch(hub / "saliqa" / "RoIPoolModel-fit.10.bs.120.pth")
    pyiqa_hub = _touch(hub / "pyiqa" / "P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))

    assert find_weights("paq2piq", explicit) == explicit
    assert find_weights("paq2piq", str(explicit)) == explicit
    assert find_weights("paq2piq") == env_file
    monkeypatch.delenv(ENV_VAR)
    assert find_weights("paq2piq") == saliqa_hub
    saliqa_hub.unlink()
    assert find_weights("paq2piq") == pyiqa_hub


def test_set_dir_moves_the_hub_cache(hub: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    torch.hub.set_dir(str(other))  # the hub fixture restores torch.hub's setting afterwards
    found = _touch(other / "pyiqa" / "niqe_modelparameters.mat")
    _touch(hub / "pyiqa" / "niqe_modelparameters.mat")
    assert find_weights("niqe") == found


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("paq2piq", "RoIPoolModel-fit.10.bs.120.pth"),
        ("paq2piq", "P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth"),
        ("paq2piq", "P2P_RoIPoolModel-fit.10.bs.120-5ece3dcd.pth"),
        ("niqe", "niqe_image_params.mat"),
        ("niqe", "niqe_modelparameters.mat"),
        ("brisque_model", "brisque_live_allmodel"),
        ("brisque_model", "brisque_svm_weights.pth"),
        ("brisque_ranges", "brisque_live_allrange.txt"),
    ],
)
def test_names_accepted_in_the_env_dir(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, file_name: str
) -> None:
    path = _touch(tmp_path / "env" / file_name)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert find_weights(name) == path


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("paq2piq", "P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth"),
        ("niqe", "niqe_modelparameters.mat"),
        ("brisque_model", "brisque_svm_weights.pth"),
    ],
)
def test_pyiqa_cache_names(hub: Path, name: str, file_name: str) -> None:
    path = _touch(hub / "pyiqa" / file_name)
    assert find_weights(name) == path


def test_other_models_files_are_never_used(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyiqa's MATLAB NIQE/BRISQUE models are different models; another model's file never stands in."""
    for file_name in ("niqe_matlab_params.mat", "brisque_matlab.mat", "RoIPoolModel-fit.10.bs.120.pth"):
        _touch(hub / "pyiqa" / file_name)
        _touch(tmp_path / "env" / file_name)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    for name in ("niqe", "brisque_model", "brisque_ranges"):
        with pytest.raises(WeightsNotFoundError):
            find_weights(name)


def test_explicit_path_never_falls_back(hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path / "env" / "niqe_image_params.mat")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    absent = tmp_path / "nowhere" / "niqe.mat"
    with pytest.raises(WeightsNotFoundError) as info:
        find_weights("niqe", absent)
    assert f"no NIQE pristine model (LIVE release) file at {absent}" in str(info.value)
    assert "saliqa weights download niqe" in str(info.value)


def test_explicit_folder(hub: Path, tmp_path: Path) -> None:
    path = _touch(tmp_path / "folder" / "brisque_live_allmodel")
    assert find_weights("brisque_model", tmp_path / "folder") == path
    with pytest.raises(WeightsNotFoundError, match="brisque_live_allrange.txt"):
        find_weights("brisque_ranges", tmp_path / "folder")


@pytest.mark.parametrize(
    ("name", "model"), [("paq2piq", "paq2piq"), ("niqe", "niqe"), ("brisque_ranges", "brisque")]
)
def test_missing_file_says_what_where_and_how(hub: Path, name: str, model: str) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        find_weights(name)
    message = str(info.value)
    spec = WEIGHTS[name]
    assert spec.file_name in message and f"${ENV_VAR} (not set)" in message
    for file_name in spec.release_names:
        assert str(hub / "saliqa" / file_name) in message
    for file_name in spec.pyiqa_names:
        assert str(hub / "pyiqa" / file_name) in message
    assert f"`saliqa weights download {model}`" in message
    assert str(hub / "saliqa" / spec.file_name) in message  # where the download (or a copy by hand) goes
    if spec.source is not None:
        assert spec.source.url in message


def test_missing_file_names_the_env_dir(hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(WeightsNotFoundError) as info:
        find_weights("paq2piq")
    assert str(tmp_path / "env" / "RoIPoolModel-fit.10.bs.120.pth") in str(info.value)
    assert f"put it at {tmp_path / 'env' / 'RoIPoolModel-fit.10.bs.120.pth'}" in str(info.value)


def test_unknown_names() -> None:
    with pytest.raises(UnknownModelError, match="brisque_model"):
        find_weights("brisque")
    with pytest.raises(UnknownModelError, match="paq2piq, niqe, brisque"):
        download_model("musiq")


def test_status_lists_every_file(hub: Path) -> None:
    _touch(hub / "pyiqa" / "niqe_modelparameters.mat")
    status = {s.name: s for s in weights_status()}
    assert list(status) == ["paq2piq", "niqe", "brisque_ranges", "brisque_model"]  # download order
    assert status["niqe"].path == hub / "pyiqa" / "niqe_modelparameters.mat"
    assert status["paq2piq"].path is None and len(status["paq2piq"].looked) == 4


# -- the table of sources ---------------------------------------------------------------------------------------


def test_official_sources() -> None:
    p2p = WEIGHTS["paq2piq"].source
    assert p2p is not None and p2p.size == 140_552_190 and p2p.sha256 is None
    assert (
        p2p.url == "https://github.com/baidut/PaQ-2-PiQ/releases/download/v1.0/RoIPoolModel-fit.10.bs.120.pth"
    )
    niqe = WEIGHTS["niqe"].source
    assert niqe is not None and niqe.url.endswith("/v0.1-weights/niqe_modelparameters.mat")
    assert (
        "niqe_release.zip" in WEIGHTS["niqe"].origin
        and "BRISQUE_release.zip" in WEIGHTS["brisque_model"].origin
    )
    for spec in WEIGHTS.values():
        assert spec.source is None or spec.source.url.startswith("https://")


def test_sources_match_the_shared_copies(shared_data: Path) -> None:
    """The release copies in ../shared/data are what the table says the downloads are."""
    params = shared_data / "iqa_params"
    model = WEIGHTS["brisque_model"]
    assert model.source is not None
    assert (params / "brisque_live_allmodel").stat().st_size == model.source.size
    assert sha256_file(params / "brisque_live_allmodel") == model.source.sha256
    assert (params / "brisque_live_allmodel").read_bytes().startswith(model.magic[0])
    assert (params / "brisque_live_allrange.txt").read_text() == brisque_ranges_text()
    assert (params / "niqe_image_params.mat").read_bytes().startswith(WEIGHTS["niqe"].magic[0])


# -- downloads --------------------------------------------------------------------------------------------------

PAYLOAD = b"PK\x03\x04" + bytes(range(256)) * 2000  # zip-like start, ~0.5 MB: several reads
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _serve(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, name: str = "paq2piq", data: bytes = PAYLOAD, **check
) -> WeightsFile:
    """Point ``WEIGHTS[name]`` at the local server, serving ``data``; ``check`` overrides size/sha256."""
    spec = WEIGHTS[name]
    assert spec.source is not None
    server.files[spec.file_name] = data
    source = WeightsFile(
        url=server.url(spec.file_name),
        file_name=spec.file_name,
        size=check.get("size", len(data)),
        sha256=check.get("sha256", hashlib.sha256(data).hexdigest()),
    )
    monkeypatch.setitem(WEIGHTS, name, dataclasses.replace(spec, source=source))
    return source


def test_download_verifies_and_is_found_afterwards(
    server: FileServer, hub: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve(server, monkeypatch)
    path = download_weights("paq2piq", progress=True)
    assert "download RoIPoolModel-fit.10.bs.120.pth" in capsys.readouterr().err  # the progress bar
    assert path == hub / "saliqa" / "RoIPoolModel-fit.10.bs.120.pth" and path.read_bytes() == PAYLOAD
    assert find_weights("paq2piq") == path
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .part left


def test_download_goes_to_the_env_dir(
    server: FileServer, hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(server, monkeypatch)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert download_weights("paq2piq", progress=False) == tmp_path / "env" / "RoIPoolModel-fit.10.bs.120.pth"
    explicit = download_weights("paq2piq", tmp_path / "explicit", progress=False)
    assert explicit == tmp_path / "explicit" / "RoIPoolModel-fit.10.bs.120.pth"


def test_download_resumes_a_partial_file(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _serve(server, monkeypatch)
    half = len(PAYLOAD) // 2
    _touch(tmp_path / f"{source.file_name}.part", PAYLOAD[:half])
    path = download_weights("paq2piq", tmp_path, progress=True)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [(source.file_name, f"bytes={half}-")]


def test_verified_copy_is_reused_offline(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(server, monkeypatch)
    path = download_weights("paq2piq", tmp_path, progress=False)
    server.stop()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert download_weights("paq2piq", tmp_path, progress=False) == path


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"size": len(PAYLOAD) + 1}, f"expected {len(PAYLOAD) + 1} bytes, got {len(PAYLOAD)}"),
        ({"sha256": "0" * 64}, f"expected sha256 {'0' * 64}, got {PAYLOAD_SHA}"),
    ],
)
def test_failed_check_leaves_no_file(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: dict, message: str
) -> None:
    _serve(server, monkeypatch, **check)
    with pytest.raises(DownloadError, match=message) as info:
        download_weights("paq2piq", tmp_path, progress=False)
    assert str(info.value).startswith("PaQ-2-PiQ RoIPool model weights: ")
    assert list(tmp_path.iterdir()) == []


def test_wrong_format_is_deleted(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(server, monkeypatch, name="niqe", data=b"<!DOCTYPE html><html>rate limited</html>")
    with pytest.raises(DownloadError, match="is not a NIQE pristine model") as info:
        download_weights("niqe", tmp_path, progress=False)
    assert str(tmp_path / "niqe_modelparameters.mat") in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_offline_says_which_file_to_put_where(
    server: FileServer, hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _serve(server, monkeypatch)
    server.stop()
    with pytest.raises(DownloadError) as info:
        download_weights("paq2piq", progress=False)
    message = str(info.value)
    dest = hub / "saliqa" / "RoIPoolModel-fit.10.bs.120.pth"
    assert (
        source.url in message and f"put it at {dest}" in message and f"size {len(PAYLOAD)} bytes" in message
    )


def test_brisque_downloads_both_files(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_text = b"svm_type epsilon_svr\nkernel_type rbf\n"
    _serve(server, monkeypatch, name="brisque_model", data=model_text)
    ranges, model = download_model("brisque", tmp_path, progress=False)
    assert ranges == tmp_path / "brisque_live_allrange.txt" and model == tmp_path / "brisque_live_allmodel"
    assert sha256_file(ranges) == WEIGHTS["brisque_ranges"].sha256 and model.read_bytes() == model_text
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "brisque_live_allmodel",
        "brisque_live_allrange.txt",
    ]


def test_brisque_ranges_offline_and_tamper_proof(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = download_weights("brisque_ranges", tmp_path)
    assert (
        path.read_text().splitlines()[1:3] == ["-1 1", "0.338 10.0"]
        and len(path.read_text().splitlines()) == 38
    )
    spec = WEIGHTS["brisque_ranges"]
    monkeypatch.setitem(
        WEIGHTS, "brisque_ranges", dataclasses.replace(spec, text=spec.text.replace("10.0", "11.0"))
    )
    with pytest.raises(DownloadError, match="damaged"):
        download_weights("brisque_ranges", tmp_path / "other")
    assert not (tmp_path / "other" / "brisque_live_allrange.txt").exists()


# -- the command line -------------------------------------------------------------------------------------------


def test_cli_download_and_where(
    server: FileServer,
    hub: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _serve(server, monkeypatch)
    target = tmp_path / "w"
    assert main(["weights", "download", "paq2piq", "--dir", str(target)]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == str(target / "RoIPoolModel-fit.10.bs.120.pth")
    assert (target / "RoIPoolModel-fit.10.bs.120.pth").read_bytes() == PAYLOAD

    monkeypatch.setenv(ENV_VAR, str(target))
    assert main(["weights", "where"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"paq2piq\t{target / 'RoIPoolModel-fit.10.bs.120.pth'}"
    assert lines[1].startswith("niqe\tnot found (saliqa weights download niqe); looked in: ")
    assert str(hub / "pyiqa" / "niqe_modelparameters.mat") in lines[1]
    assert [line.split("\t")[0] for line in lines] == ["paq2piq", "niqe", "brisque_ranges", "brisque_model"]


def test_cli_errors_are_one_line(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "download", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("saliqa: error: no downloadable weights for 'nope'")

    source = _serve(server, monkeypatch, name="niqe")
    server.stop()
    assert main(["weights", "download", "niqe", "--dir", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and source.url in err and str(tmp_path / "niqe_modelparameters.mat") in err
