from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

import saliqa
from saliqa.cli import main
from saliqa.pipeline.tables import RATINGS


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("run", "rate", "config"):
        assert command in text


def test_rate_json_prints_one_object_per_image(
    folder_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder_dataset / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert (
        main(
            [
                "rate",
                str(folder_dataset / "coffee"),
                str(folder_dataset / "chelsea" / "chelsea_1.png"),
                "--iqa",
                "piqe",
                "--json",
                "--device",
                "cpu",
                "-q",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 6
    assert all(tuple(row) == RATINGS.columns for row in rows)
    broken = next(r for r in rows if r["image_id"].endswith("broken.jpg"))
    assert broken["status"] == "rejected" and broken["score"] is None
    one = next(r for r in rows if r["image_id"].endswith("chelsea_1.png"))
    api = saliqa.rate([folder_dataset / "chelsea" / "chelsea_1.png"], device="cpu")
    assert one["score"] == pytest.approx(api["score"].iloc[0], abs=1e-12)
    assert one["label"] == "chelsea" and one["width"] == 256


def test_rate_out_writes_ratings_and_maps(folder_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "rated"
    assert main(["rate", str(folder_dataset), "--out", str(out), "--device", "cpu", "-q"]) == 0
    ratings = pd.read_parquet(out / "ratings.parquet")
    assert len(ratings) == 12 and (ratings["status"] == "ok").all()
    store = saliqa.MapStore(out / "quality_maps")
    values, grid = store.get(ratings["image_id"].iloc[0])
    assert values.shape == grid.shape == (16, 16)
    assert np.nanmax(values) <= 100


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["rate", "/no/such/file.jpg"], "no such file or folder"),
        (["rate", ".", "--iqa", "nope"], "unknown quality model"),
        (["rate"], "Missing argument"),
        (["run", "--bogus"], "No such option"),
        (["rate", ".", "--batch-size", "0"], "batch-size"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("saliqa: error:")
    assert fragment in err


def test_bad_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[rate]\nbatchsize = 4\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "rate.batchsize: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # config errors come before any work


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "saliqa", "config"], capture_output=True, text=True, check=True
    )
    assert 'iqa = "piqe"' in done.stdout


def test_public_api() -> None:
    for name in ("read_image", "load_quality_model", "rate", "run_pipeline", "load_config", "MapStore"):
        assert hasattr(saliqa, name)
    model = saliqa.load_quality_model("piqe", device="cpu")
    assert model.name == "piqe" and not model.higher_is_better
    with pytest.raises(saliqa.UnknownModelError, match="available: piqe"):
        saliqa.load_quality_model("paq3piq")


def test_paths_and_values_that_cannot_work_end_in_one_line_before_any_work(
    tmp_path: Path, folder_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "empty").mkdir()
    small = tmp_path / "small.toml"
    small.write_text("[images]\nmax_pixels = 100\n")
    no_root = tmp_path / "no_root.toml"
    no_root.write_text(f'[data]\nsource = "folder"\nroot = "{tmp_path / "nowhere"}"\n')
    resnet50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), resnet50)  # not a ResNet-18 body
    cases = [
        (["rate", str(folder_dataset / "coffee"), "--out", str(a_file)], "is a file"),
        (["run", "--config", str(tmp_path), "--out", str(tmp_path / "r1")], "cannot read config"),
        (["run", "--config", str(small), "--out", str(tmp_path / "r2")], "images: max_pixels=100"),
        (["run", "--config", str(no_root), "--out", str(tmp_path / "r3")], "nowhere"),
        (["rate", str(tmp_path / "empty")], "no image files"),
        (
            ["run", "--pretrained", str(tmp_path / "r18.pth"), "--out", str(tmp_path / "r4")],
            "no weights file",
        ),
        (["run", "--pretrained", str(a_file), "--out", str(tmp_path / "r5")], "cannot be read"),
        (["run", "--pretrained", str(resnet50), "--out", str(tmp_path / "r6")], "unexpected keys"),
        (["run", "--until", "publish", "--out", str(tmp_path / "r7")], "unknown stage 'publish'"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, (argv, err)
    assert not any((tmp_path / f"r{k}").exists() for k in range(1, 8))


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_cuda_without_a_gpu_fails_before_the_run_directory_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cuda.toml"
    config.write_text('[rate]\ndevice = "cuda"\n')
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_artifacts_are_readable_like_ordinary_files(folder_dataset: Path, tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    saliqa.rate([folder_dataset / "coffee"], out=tmp_path / "rated", device="cpu")
    for path in (tmp_path / "rated").rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_quality_model_without_its_weights_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    config = tmp_path / "p2p.toml"
    config.write_text('[rate]\niqa = "paq2piq"\n')
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "saliqa weights download paq2piq" in err
    assert not (tmp_path / "run").exists()


def test_rate_with_paq2piq_weights_from_the_weights_dir(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from saliqa.classify.p2p import P2PNet

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save({"model": P2PNet(1).state_dict()}, weights / "RoIPoolModel-fit.10.bs.120.pth")  # random values
    monkeypatch.setenv("SALIQA_WEIGHTS_DIR", str(weights))
    assert (
        main(["rate", str(folder_dataset / "coffee"), "--iqa", "paq2piq", "--json", "-q", "--device", "cpu"])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and all(r["iqa"] == "paq2piq" and 0 <= r["quality"] <= 100 for r in rows)
