"""Dataset readers: real layouts from ../shared/data and edge cases built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saliqa.data import ImageTable, open_dataset, read_folder, read_manifest, read_mit67
from saliqa.data.readers import COLUMNS, IMAGE_EXTENSIONS, read_paths
from saliqa.errors import ConfigError, DatasetError
from saliqa.io.names import NOT_UTF8, os_name

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIT67 = SHARED / "mit67"
SCENE15_TRAIN = SHARED / "scene15_indoor" / "train"

needs_mit67 = pytest.mark.skipif(not MIT67.is_dir(), reason=f"test data {MIT67} is absent")
needs_scene15 = pytest.mark.skipif(not SCENE15_TRAIN.is_dir(), reason=f"test data {SCENE15_TRAIN} is absent")


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def check_contract(table: ImageTable) -> None:
    """Invariants every reader must keep, whatever the dataset."""
    frame = table.frame
    assert tuple(frame.columns) == COLUMNS
    assert frame["image_id"].is_unique
    assert list(frame["image_id"]) == sorted(frame["image_id"])
    assert frame["present"].dtype == bool
    assert all(Path(p).is_absolute() for p in frame["path"])
    assert all(s is None or isinstance(s, str) for s in frame["source_split"])
    assert all(r is None or isinstance(r, str) for r in frame["reason"])
    for column in ("image_id", "path", "label"):  # every name can be written to parquet
        assert all(isinstance(v, str) and v.encode("utf-8") for v in frame[column])
    assert table.n_missing == int((~frame["present"]).sum())
    assert list(table.labels) == sorted(set(frame["label"]))
    assert "\n" not in table.summary()


# --- real data -------------------------------------------------------------------------------------


@needs_scene15
def test_scene15_train_counts() -> None:
    table = read_folder(SCENE15_TRAIN)
    check_contract(table)
    assert table.labels == ("bedroom", "industrial", "kitchen", "livingroom", "office", "store")
    assert len(table) == 600
    assert table.frame.groupby("label").size().tolist() == [100] * 6
    assert table.n_missing == 0
    assert table.frame["source_split"].isna().all()
    first = table.frame.iloc[0]
    assert first["image_id"] == f"{first['label']}/{Path(first['path']).name}"
    assert table.source == f"folder:{SCENE15_TRAIN}"


def _mit67_lists() -> dict[str, set[str]]:
    return {
        split: {line.strip() for line in (MIT67 / name).read_text().splitlines() if line.strip()}
        for name, split in (("TrainImages.txt", "train"), ("TestImages.txt", "test"))
    }


@needs_mit67
def test_mit67_counts_splits_and_missing_note() -> None:
    table = read_mit67(MIT67)
    check_contract(table)
    frame = table.frame
    lists = _mit67_lists()
    listed = lists["train"] | lists["test"]
    assert len(lists["train"]) == 5360 and len(lists["test"]) == 1340 and len(listed) == 6700

    present = set(frame.loc[frame["present"], "image_id"])
    assert len(present) == 20
    assert len(table.labels) == 67
    assert set(frame["image_id"]) == listed | present
    assert table.n_missing == len(listed) - len(present & listed)

    for split, names in lists.items():
        rows = frame[frame["source_split"] == split]
        assert set(rows["image_id"]) == names
        filename = "TrainImages.txt" if split == "train" else "TestImages.txt"
        n_missing = len(names - present)
        assert f"{n_missing} files listed in {filename} are missing" in table.notes
    unlisted = frame[frame["source_split"].isna()]
    assert set(unlisted["image_id"]) == present - listed
    assert unlisted["present"].all()
    # labels come from the folder part of the id
    assert (frame["label"] == frame["image_id"].str.split("/").str[0]).all()
    assert all(p.startswith(str(MIT67 / "Images")) for p in frame["path"])


@needs_mit67
def test_mit67_listed_only() -> None:
    table = read_mit67(MIT67, listed_only=True)
    check_contract(table)
    assert len(table) == 6700
    assert table.frame["source_split"].notna().all()
    assert table.n_missing == read_mit67(MIT67).n_missing
    assert open_dataset("mit67", MIT67, listed_only=True).frame.equals(table.frame)


# --- folder trees ---------------------------------------------------------------------------------


def test_folder_skips_hidden_non_images_and_root_files(tmp_path: Path) -> None:
    touch(tmp_path / "cats" / "a.jpg")
    touch(tmp_path / "cats" / "B.JPEG")
    touch(tmp_path / "cats" / "deep" / "er" / "c.png")
    touch(tmp_path / "cats" / ".hidden.jpg")
    touch(tmp_path / "cats" / ".cache" / "d.jpg")
    touch(tmp_path / "cats" / "notes.txt")
    touch(tmp_path / "dogs" / "x.WebP")
    touch(tmp_path / "dogs" / "Thumbs.db")
    touch(tmp_path / ".git" / "e.jpg")
    touch(tmp_path / "README.md")
    touch(tmp_path / "stray.jpg")
    (tmp_path / "empty_class").mkdir()

    table = read_folder(tmp_path)
    check_contract(table)
    assert list(table.frame["image_id"]) == ["cats/B.JPEG", "cats/a.jpg", "cats/deep/er/c.png", "dogs/x.WebP"]
    assert list(table.frame["label"]) == ["cats", "cats", "cats", "dogs"]
    assert table.frame["present"].all()
    assert table.frame["path"].iloc[2] == str(tmp_path / "cats" / "deep" / "er" / "c.png")
    assert "2 files directly in the dataset root ignored (not in a class folder)" in table.notes
    assert "2 non-image files ignored" in table.notes
    assert "3 hidden files or folders skipped" in table.notes
    assert "1 class folder without images" in table.notes
    assert table.summary().startswith(f"folder:{tmp_path}: 4 images in 2 classes")


def test_folder_broken_link_is_recorded_not_raised(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "ok.jpg")
    (tmp_path / "a" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    table = read_folder(tmp_path)
    assert dict(zip(table.frame["image_id"], table.frame["present"], strict=True)) == {
        "a/gone.jpg": False,
        "a/ok.jpg": True,
    }
    assert table.n_missing == 1


def test_folder_without_class_folders_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no class folders"):
        read_folder(tmp_path)
    touch(tmp_path / "loose.jpg")
    with pytest.raises(DatasetError, match="no class folders"):
        read_folder(tmp_path)


def test_missing_root_raises_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match=str(missing)):
        read_folder(missing)
    with pytest.raises(DatasetError, match=str(missing)):
        read_mit67(missing)
    file_root = touch(tmp_path / "file.jpg")
    with pytest.raises(DatasetError, match="not a directory"):
        read_folder(file_root)


# --- MIT67-shaped trees ----------------------------------------------------------------------------


def test_mit67_tolerates_crlf_blank_lines_and_spaces(tmp_path: Path) -> None:
    touch(tmp_path / "Images" / "kitchen" / "a.jpg")
    touch(tmp_path / "Images" / "kitchen" / "b.jpg")
    touch(tmp_path / "Images" / "bar" / "c.jpg")
    (tmp_path / "TrainImages.txt").write_bytes(b"kitchen/a.jpg\r\n\r\n  bar/c.jpg  \r\nbar/gone.jpg\r\n")
    (tmp_path / "TestImages.txt").write_bytes(b"\nkitchen/absent.jpg\n\n")

    table = read_mit67(tmp_path)
    check_contract(table)
    splits = dict(zip(table.frame["image_id"], table.frame["source_split"], strict=True))
    assert splits == {
        "bar/c.jpg": "train",
        "bar/gone.jpg": "train",
        "kitchen/a.jpg": "train",
        "kitchen/absent.jpg": "test",
        "kitchen/b.jpg": None,
    }
    assert "1 files listed in TrainImages.txt are missing" in table.notes
    assert "1 files listed in TestImages.txt are missing" in table.notes
    assert table.n_missing == 2
    assert table.source == f"mit67:{tmp_path}"

    listed = read_mit67(tmp_path, listed_only=True)
    assert "kitchen/b.jpg" not in set(listed.frame["image_id"])
    assert len(listed) == 4


def test_mit67_without_lists_and_without_images(tmp_path: Path) -> None:
    touch(tmp_path / "Images" / "bar" / "c.jpg")
    table = read_mit67(tmp_path)
    assert len(table) == 1 and table.frame["source_split"].iloc[0] is None
    assert any("TrainImages.txt not found" in note for note in table.notes)
    with pytest.raises(DatasetError, match="pass its parent"):
        read_mit67(tmp_path / "Images")
    (tmp_path / "Images" / "bar" / "c.jpg").unlink()
    (tmp_path / "Images" / "bar").rmdir()
    with pytest.raises(DatasetError, match="no class folders"):
        read_mit67(tmp_path)


# --- manifests -------------------------------------------------------------------------------------


def test_manifest_relative_absolute_missing_and_split(tmp_path: Path) -> None:
    data = tmp_path / "data"
    touch(data / "imgs" / "a.jpg")
    outside = touch(tmp_path / "elsewhere" / "b.png")
    manifest = data / "list.csv"
    manifest.write_text(
        f"path,label,split\nimgs/a.jpg,cat,train\n{outside},dog,\n./imgs\\missing.jpg,dog,test\n"
    )
    table = read_manifest(manifest)
    check_contract(table)
    rows = table.frame.set_index("image_id")
    assert set(rows.index) == {"imgs/a.jpg", str(outside), "imgs/missing.jpg"}
    assert rows.loc["imgs/a.jpg", "path"] == str(data / "imgs" / "a.jpg")
    assert rows.loc[str(outside), "path"] == str(outside)
    assert rows.loc["imgs/missing.jpg", "path"] == str(data / "imgs" / "missing.jpg")
    assert rows["present"].to_dict() == {"imgs/a.jpg": True, str(outside): True, "imgs/missing.jpg": False}
    assert rows["source_split"].to_dict() == {
        "imgs/a.jpg": "train",
        str(outside): None,
        "imgs/missing.jpg": "test",
    }
    assert "1 files listed in list.csv are missing" in table.notes
    assert table.source == f"manifest:{manifest}"
    assert open_dataset("manifest", manifest).frame.equals(table.frame)


def test_manifest_split_column_is_optional(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    (tmp_path / "m.csv").write_text("label,path\ncat,a.jpg\n\n")
    table = read_manifest(tmp_path / "m.csv")
    assert list(table.frame["label"]) == ["cat"]
    assert table.frame["source_split"].iloc[0] is None
    assert table.n_missing == 0


@pytest.mark.parametrize("header", ["file,label", "path,class", "", "a.jpg,cat"])
def test_manifest_bad_header_raises(tmp_path: Path, header: str) -> None:
    (tmp_path / "m.csv").write_text(f"{header}\na.jpg,cat\n" if header else "")
    with pytest.raises(DatasetError, match="header 'path,label'"):
        read_manifest(tmp_path / "m.csv")


def test_manifest_duplicates_raise_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\nx/a.jpg,cat\nx\\a.jpg,dog\n")
    with pytest.raises(DatasetError, match="duplicate path 'x/a.jpg'"):
        read_manifest(tmp_path / "m.csv")


def test_manifest_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=str(tmp_path / "none.csv")):
        read_manifest(tmp_path / "none.csv")


def test_open_dataset_dispatch_and_bad_options(tmp_path: Path) -> None:
    touch(tmp_path / "c" / "a.jpg")
    assert open_dataset("folder", tmp_path).frame.equals(read_folder(tmp_path).frame)
    with pytest.raises(ConfigError, match="Unknown dataset kind"):
        open_dataset("zip", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="listed_only"):
        open_dataset("folder", tmp_path, listed_only=True)


# --- read_paths (saliqa rate) ---------------------------------------------------------------------------


def test_paths_ids_labels_order_and_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "photos" / "top.jpg")
    touch(tmp_path / "photos" / "cats" / "a.PNG")
    touch(tmp_path / "photos" / "cats" / "deep" / "b.jpg")
    touch(tmp_path / "photos" / "cats" / ".hidden.jpg")
    touch(tmp_path / "photos" / ".cache" / "c.jpg")
    touch(tmp_path / "photos" / "notes.txt")
    touch(tmp_path / "one" / "z.jpg")

    table = read_paths(["photos/", "one/z.jpg", "./photos/cats/a.PNG", Path("photos")])
    check_contract(table)
    frame = table.frame.set_index("image_id")
    assert frame["label"].to_dict() == {
        "one/z.jpg": "one",  # a file given by path: its parent folder
        "photos/cats/a.PNG": "cats",  # below a given folder: the first folder below it
        "photos/cats/deep/b.jpg": "cats",
        "photos/top.jpg": "photos",  # directly in a given folder: that folder's own name
    }
    assert frame.loc["photos/cats/deep/b.jpg", "path"] == str(tmp_path / "photos" / "cats" / "deep" / "b.jpg")
    assert frame["present"].all() and frame["reason"].isna().all()
    assert table.source == "paths"
    assert "1 non-image file ignored" in table.notes
    assert "2 hidden files or folders skipped" in table.notes
    assert read_paths("photos").frame.equals(read_paths(["photos"]).frame)  # one path, not its letters
    assert read_paths(["."]).frame["label"].tolist() == ["one", "photos", "photos", "photos"]


def test_paths_labels_agree_with_read_folder(tmp_path: Path) -> None:
    root = tmp_path / "data"
    touch(root / "<script>alert(1)<" / "script>" / "x.png")  # a class folder "<script>alert(1)</script>"
    touch(root / "<script>alert(1)<" / "y.png")
    touch(root / "plain" / "z.jpg")
    by_folder = read_folder(root).frame
    check_contract(read_paths([root]))
    by_paths = read_paths([root]).frame
    assert list(by_paths["image_id"]) == [f"{root.as_posix()}/{i}" for i in by_folder["image_id"]]
    assert list(by_paths["label"]) == list(by_folder["label"]) == ["<script>alert(1)<"] * 2 + ["plain"]
    assert list(by_paths["path"]) == list(by_folder["path"])
    nested = root / "<script>alert(1)<" / "script>"
    assert read_paths([nested / "x.png"]).frame["label"].tolist() == ["script>"]
    assert read_paths([nested]).frame["label"].tolist() == ["script>"]


def test_paths_dangling_link_is_a_missing_row(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "ok.jpg")
    (tmp_path / "a" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "given.jpg").symlink_to(tmp_path / "nowhere.jpg")
    table = read_paths([tmp_path / "a", tmp_path / "given.jpg"])
    check_contract(table)
    present = {Path(i).name: p for i, p in zip(table.frame["image_id"], table.frame["present"], strict=True)}
    assert present == {"gone.jpg": False, "ok.jpg": True, "given.jpg": False}
    assert table.n_missing == 2
    assert table.frame["path"].tolist()[0] == str(tmp_path / "a" / "gone.jpg")  # the link, not its target


def test_paths_errors(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match="no such file or folder: .*nope"):
        read_paths([tmp_path / "a.jpg", tmp_path / "nope"])
    touch(tmp_path / "texts" / "a.txt")
    touch(tmp_path / "texts" / ".b.jpg")
    with pytest.raises(DatasetError, match="no image files in"):
        read_paths([tmp_path / "texts"])
    with pytest.raises(DatasetError, match="no files or folders given"):
        read_paths([])


# --- names that are not UTF-8 ------------------------------------------------------------------------------


def _raw_touch(folder: Path, name: bytes, content: bytes = b"x") -> bytes:
    raw = os.path.join(os.fsencode(folder), name)
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    with open(raw, "wb") as handle:
        handle.write(content)
    return raw


def test_a_name_that_is_not_utf8_is_listed_escaped_with_a_reason(tmp_path: Path) -> None:
    touch(tmp_path / "c" / "ok.jpg")
    raw = _raw_touch(tmp_path, b"c/bad\xffbytes.jpg")
    for table in (read_folder(tmp_path), read_paths([tmp_path / "c"])):
        check_contract(table)
        frame = table.frame
        bad = frame[frame["reason"].notna()]
        assert len(frame) == 2 and len(bad) == 1
        row = bad.iloc[0]
        assert row["reason"] == NOT_UTF8
        assert row["image_id"].endswith("c/bad\\xffbytes.jpg")
        assert row["path"] == str(tmp_path / "c" / "bad\\xffbytes.jpg")
        assert os.fsencode(os_name(row["path"], row["reason"])) == raw
        assert row["present"]  # the file is there: it cannot be used, which the reason says
        assert row["label"] == "c"
        assert "1 unusable (file name is not valid UTF-8)" in table.summary()


def test_a_class_folder_that_is_not_utf8_escapes_its_rows(tmp_path: Path) -> None:
    touch(tmp_path / "fine" / "a.jpg")
    raw = _raw_touch(tmp_path, b"caf\xe9/b.jpg")
    table = read_folder(tmp_path)
    check_contract(table)
    row = table.frame.set_index("image_id").loc["caf\\xe9/b.jpg"]
    assert row["label"] == "caf\\xe9" and row["reason"] == NOT_UTF8
    assert os.fsencode(os_name(row["path"], row["reason"])) == raw
    assert table.labels == ("caf\\xe9", "fine")


def test_an_escaped_name_equal_to_a_valid_name_keeps_ids_unique(tmp_path: Path) -> None:
    touch(tmp_path / "c" / "a\\xffb.jpg")  # a valid name that reads like an escape
    raw = _raw_touch(tmp_path, b"c/a\xffb.jpg")
    for table in (read_folder(tmp_path), read_paths([tmp_path / "c"])):
        check_contract(table)
        rows = table.frame.set_index("image_id")
        valid = rows.loc[[i for i in rows.index if i.endswith("c/a\\xffb.jpg")]]
        escaped = rows.loc[[i for i in rows.index if i.endswith("c/a\\xffb.jpg (not UTF-8)")]]
        assert len(valid) == len(escaped) == 1
        assert valid["reason"].iloc[0] is None and escaped["reason"].iloc[0] == NOT_UTF8
        assert valid["path"].iloc[0] == escaped["path"].iloc[0]  # the same text; the reason tells them apart
        assert os.fsencode(os_name(escaped["path"].iloc[0], NOT_UTF8)) == raw
        assert Path(os_name(valid["path"].iloc[0], None)).is_file()


def test_mit67_and_manifest_fill_the_reason(tmp_path: Path) -> None:
    touch(tmp_path / "m" / "Images" / "bar" / "c.jpg")
    (tmp_path / "m" / "TrainImages.txt").write_text("bar/c.jpg\nbar/gone.jpg\n")
    _raw_touch(tmp_path / "m" / "Images", b"bar/\xfe.jpg")
    table = read_mit67(tmp_path / "m")
    check_contract(table)
    assert table.frame.set_index("image_id")["reason"].to_dict() == {
        "bar/\\xfe.jpg": NOT_UTF8,
        "bar/c.jpg": None,
        "bar/gone.jpg": None,
    }

    touch(tmp_path / "csv" / "a.jpg")
    (tmp_path / "csv" / "m.csv").write_text("path,label\na.jpg,cat\n")
    assert read_manifest(tmp_path / "csv" / "m.csv").frame["reason"].tolist() == [None]
    odd = os.path.join(os.fsencode(tmp_path), b"odd\xff")  # a manifest in a folder that is not UTF-8
    os.makedirs(odd)
    _raw_touch(Path(os.fsdecode(odd)), b"a.jpg")
    with open(os.path.join(odd, b"m.csv"), "w") as handle:
        handle.write("path,label\na.jpg,cat\n")
    table = read_manifest(os.fsdecode(os.path.join(odd, b"m.csv")))
    check_contract(table)
    assert table.frame["reason"].tolist() == [NOT_UTF8]
    assert table.frame["image_id"].tolist() == ["a.jpg"]  # as written in the manifest


# --- a half-garbage folder ------------------------------------------------------------------------------


def _half_garbage(root: Path) -> int:
    """100 real images and 100 kinds of junk in two class folders; returns the number of files with an image
    extension (what both readers must list, one row each)."""
    rng = np.random.default_rng(3)
    real = 0
    for k in range(100):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40 + k % 7, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"real_{k:03d}.{('jpg', 'png', 'bmp')[k % 3]}")
        real += 1
    jpeg = (root / "b" / "real_000.jpg").read_bytes()
    junk_makers = [
        lambda p: p.write_bytes(b""),  # empty
        lambda p: p.write_text("not an image"),  # text renamed .jpg
        lambda p: p.write_bytes(jpeg[: len(jpeg) // 2]),  # truncated JPEG
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(40)),  # a PNG signature, then noise
        lambda p: p.mkdir(),  # a directory named x.jpg: not a file, not listed
    ]
    junk_files = 0
    for k in range(97):
        junk = root / ("a" if k % 2 else "b") / f"junk_{k:03d}.jpg"
        junk_makers[k % len(junk_makers)](junk)
        junk_files += not junk.is_dir()
    (root / "a" / "gone.jpg").symlink_to(root / "nowhere.jpg")  # dangling link
    _raw_touch(root, b"b/bad\xffbytes.jpg", jpeg)  # not UTF-8
    (root / "a" / "two\nlines.jpg").write_bytes(jpeg)  # a newline in the name
    listed = real + junk_files + 3
    assert len(os.listdir(root / "a")) + len(os.listdir(root / "b")) == 200
    return listed


def test_a_half_garbage_folder_lists_one_row_per_image_file(tmp_path: Path) -> None:
    root = tmp_path / "garbage"
    listed = _half_garbage(root)
    on_disk = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
    )
    assert len(on_disk) == listed
    for table in (read_folder(root), read_paths([root])):
        check_contract(table)
        assert len(table) == listed
        assert table.n_missing == 1  # the dangling link
        assert table.frame["reason"].tolist().count(NOT_UTF8) == 1
        assert set(table.frame["label"]) == {"a", "b"}
        assert "\n" not in table.summary()
    frame = read_folder(root).frame
    assert sorted(os_name(i, r) for i, r in zip(frame["image_id"], frame["reason"], strict=True)) == on_disk
