"""Hostile inputs, tried as a user would: each ends in a recorded row or one clear line, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from saliqa.cli import main
from saliqa.data.readers import read_folder, read_paths


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("saliqa: error: "), err
    return err


def test_a_missing_dataset_root_names_its_config_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nsource = "folder"\nroot = "{tmp_path / "nowhere"}"\n')
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "data.root: Dataset folder" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()
    config.write_text(
        f'[[evaluate.extra_sets]]\nname = "test"\nsource = "folder"\nroot = "{tmp_path / "gone"}"\n'
    )
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "evaluate.extra_sets[0].root: Dataset folder" in _one_error_line(capsys)


def test_a_newline_in_a_file_name_keeps_rate_to_one_line_per_image(
    folder_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coffee = folder_dataset / "coffee"
    (coffee / "coffee_0.png").rename(coffee / "two\nlines.png")
    assert main(["rate", str(coffee), "--device", "cpu", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and any(line.startswith(f"{coffee}/two\\nlines.png\tok\t") for line in lines)


class _Payload:
    """Unpickling this would create a marker file: proof that code from the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_malicious_pickle_as_initial_weights_is_refused_in_one_line_naming_the_opt_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "hook": _Payload(marker)}, tmp_path / "evil.pth")
    config = tmp_path / "run.toml"
    config.write_text(f'[train]\npretrained = "{tmp_path / "evil.pth"}"\n')
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = _one_error_line(capsys)
    assert "saliqa refuses" in err and "would run code (getattr)" in err
    assert "--trust-checkpoint" in err and "weights_only` set to `False`" not in err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_plain_pickle_as_initial_weights_prints_no_torch_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"conv1.weight": torch.zeros(1)}, protocol=4))
    config = tmp_path / "run.toml"
    config.write_text(f'[train]\npretrained = "{tmp_path / "plain.pkl"}"\n')
    with _no_warnings():
        assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = _one_error_line(capsys)
    assert "cannot be read as a torch weights file" in err and "torch.save(model.state_dict(), path)" in err


class _no_warnings:
    """Fails when a warning is issued inside the block."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)
        assert not self._seen, [str(w.message) for w in self._seen]


def _rate_and_split(root: Path, tmp_path: Path) -> pd.DataFrame:
    """``saliqa run --until split`` on the folder dataset ``root``, every category kept; its ratings."""
    config = tmp_path / "run.toml"
    config.write_text(
        f'[data]\nsource = "folder"\nroot = "{root}"\n[rate]\ndevice = "cpu"\nworkers = 0\n'
        '[split]\nkeep = ["Bad", "Poor", "Fair", "Good", "Excellent"]\n'
    )
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out), "--until", "split", "-q"]) == 0
    return pd.read_parquet(out / "ratings.parquet")


def _bad_name(folder: Path, photo: Path) -> bytes:
    """A copy of ``photo`` in ``folder`` under a name that is not valid UTF-8."""
    raw = os.fsencode(folder) + b"/bad\xffbytes.png"
    with open(raw, "wb") as f:
        f.write(photo.read_bytes())
    return raw


def test_a_file_name_that_is_not_utf8_is_recorded_with_a_reason_in_run_and_rate(
    folder_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saliqa.io.names import NOT_UTF8, unescape_name

    raw = _bad_name(folder_dataset / "coffee", folder_dataset / "coffee" / "coffee_0.png")
    ratings = _rate_and_split(folder_dataset, tmp_path).set_index("image_id")
    row = ratings.loc["coffee/bad\\xffbytes.png"]
    assert row["status"] == "rejected" and row["reason"] == NOT_UTF8
    assert os.fsencode(unescape_name(row["path"])) == raw  # the name maps back to the file
    assert (ratings.drop(index="coffee/bad\\xffbytes.png")["status"] == "ok").all()

    capsys.readouterr()
    assert main(["rate", str(folder_dataset / "coffee"), "--device", "cpu", "--json", "-q"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    bad = [r for r in rows if r["image_id"].endswith("bad\\xffbytes.png")]
    assert len(rows) == 5 and len(bad) == 1 and bad[0]["reason"] == NOT_UTF8


def test_rate_records_a_dangling_link_as_missing_like_run(
    folder_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder_dataset / "coffee" / "gone.png").symlink_to(folder_dataset / "nowhere.png")
    assert main(["rate", str(folder_dataset / "coffee"), "--device", "cpu", "--json", "-q"]) == 0
    rows = {r["image_id"].rsplit("/", 1)[1]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["gone.png"]["status"] == "missing" and rows["gone.png"]["reason"] == "file not found"
    table = read_folder(folder_dataset).frame.set_index("image_id")
    assert not table.loc["coffee/gone.png", "present"]  # the same file, the same verdict under run


def test_rate_and_run_give_nested_class_folders_one_label(tmp_path: Path) -> None:
    root = tmp_path / "data"
    nested = root / "<script>alert(1)<" / "script>"  # what a class folder "<script>alert(1)</script>" becomes
    nested.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(nested / "x.png")
    Image.new("RGB", (64, 64)).save(root / "<script>alert(1)<" / "y.png")
    by_run = read_folder(root).frame.set_index("image_id")["label"]
    by_rate = read_paths([root]).frame
    by_rate = by_rate.set_index(by_rate["image_id"].str.removeprefix(f"{root.as_posix()}/"))["label"]
    assert (
        by_run.to_dict()
        == by_rate.to_dict()
        == {
            "<script>alert(1)</script>/x.png": "<script>alert(1)<",
            "<script>alert(1)</y.png": "<script>alert(1)<",
        }
    )
    assert read_paths([nested / "x.png"]).frame["label"].tolist() == ["script>"]  # a file: its folder
    assert set(read_paths([nested]).frame["label"]) == {"script>"}  # a folder's own files: its name


def _half_garbage(root: Path) -> int:
    """200 files in two class folders: 100 real photos cut from scikit-image's, 100 kinds of junk."""
    from skimage import data

    photo = data.astronaut()
    junk_makers = [
        lambda p: p.write_bytes(b""),
        lambda p: p.write_text("not an image"),
        lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(64)),
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40)),
        lambda p: p.mkdir(),
        lambda p: p.symlink_to(root / "nowhere.jpg"),
    ]
    listed = 0
    for k in range(100):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[k : k + 64, k : k + 96]).save(folder / f"real_{k:03d}.jpg", quality=80)
        junk = folder / f"junk_{k:03d}.jpg"
        junk_makers[k % len(junk_makers)](junk)
        listed += 2 - (k % len(junk_makers) == 4)  # a folder named x.jpg is not a file to list
    (root / "a" / "two\nlines.jpg").write_bytes(b"junk")
    _bad_name(root / "b", root / "b" / "real_000.jpg")
    return listed + 2


def test_a_200_file_half_garbage_folder_runs_and_rates_every_file_it_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "garbage"
    listed = _half_garbage(root)
    ratings = _rate_and_split(root, tmp_path)
    assert len(ratings) == listed and (ratings["status"] == "ok").sum() == 100
    assert ratings.loc[ratings["status"] != "ok", "reason"].notna().all()
    capsys.readouterr()
    assert main(["rate", str(root), "--device", "cpu", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == listed and sum("\tok\t" in line for line in lines) == 100


def test_escaped_names_map_back_to_the_exact_bytes() -> None:
    import numpy as np

    from saliqa.io.names import escape_name, has_undecodable_bytes, unescape_name

    rng = np.random.default_rng(0)
    escaped = 0
    for _ in range(5000):
        raw = bytes(b for b in rng.integers(1, 256, int(rng.integers(1, 24))) if b != ord("/"))
        name = os.fsdecode(raw)
        stored = escape_name(name)
        stored.encode("utf-8")  # always storable
        if has_undecodable_bytes(name):
            escaped += 1
            assert os.fsencode(unescape_name(stored)) == raw
        else:
            assert stored == name  # valid names are stored as they are
    assert escaped > 4000
    assert escape_name(os.fsdecode(b"a\\b\xff")) == "a\\\\b\\xff"
