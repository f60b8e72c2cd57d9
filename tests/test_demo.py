"""The embedded demo: offline, deterministic, atomic, and usable by the folder reader."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saliqa.data import DEMO_PHOTOS, build_demo, read_folder
from saliqa.data import demo as demo_module
from saliqa.data.demo import DemoPhoto, load_demo_photos
from saliqa.errors import ConfigError, DatasetError

VIEWS = 3


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jpg"))


def file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in image_files(root)}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo(tmp_path_factory.mktemp("demo") / "demo", seed=0, views_per_class=VIEWS)


def test_every_bundled_photo_loads_offline() -> None:
    photos = load_demo_photos()
    assert list(photos) == [p.name for p in DEMO_PHOTOS]
    assert all(image.mode == "RGB" and min(image.size) >= 256 for image in photos.values())


def test_layout_classes_and_image_sizes(demo_dir: Path) -> None:
    classes = sorted(d.name for d in demo_dir.iterdir() if d.is_dir())
    assert len(classes) >= 8
    assert set(classes) <= {p.name for p in DEMO_PHOTOS}
    for name in classes:
        expected = [f"{name}_{k:03d}.jpg" for k in range(VIEWS)]
        assert sorted(p.name for p in (demo_dir / name).iterdir()) == expected
    for path in image_files(demo_dir):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert 256 <= min(image.size) <= 384
    table = read_folder(demo_dir)
    assert len(table) == len(classes) * VIEWS and table.n_missing == 0
    assert table.labels == tuple(classes)
    # the build record is a hidden file: skipped like any other, never taken for an image
    assert table.notes == ("1 hidden file or folder skipped",)


def test_demo_json_records_seed_parameters_photos_and_hash(demo_dir: Path) -> None:
    record = json.loads((demo_dir / ".demo.json").read_text())
    assert record["seed"] == 0
    assert record["parameters"]["views_per_class"] == VIEWS
    assert record["parameters"]["min_short_side"] == 256 and record["parameters"]["max_short_side"] == 384
    assert [p["name"] for p in record["photos"]] == sorted(
        (d.name for d in demo_dir.iterdir() if d.is_dir()), key=[p.name for p in DEMO_PHOTOS].index
    )
    assert record["files"] == len(image_files(demo_dir))
    assert len(record["sha256"]) == 64


def test_same_seed_gives_byte_identical_files(demo_dir: Path, tmp_path: Path) -> None:
    again = build_demo(tmp_path / "again", seed=0, views_per_class=VIEWS)
    assert file_bytes(again) == file_bytes(demo_dir)
    assert (
        json.loads((again / ".demo.json").read_text())["sha256"]
        == json.loads((demo_dir / ".demo.json").read_text())["sha256"]
    )


def test_views_do_not_depend_on_how_many_are_made(demo_dir: Path, tmp_path: Path) -> None:
    """View k comes from its own stream, so a shorter build is a prefix of a longer one."""
    one = file_bytes(build_demo(tmp_path / "one", seed=0, views_per_class=1))
    full = file_bytes(demo_dir)
    assert one == {k: v for k, v in full.items() if k.endswith("_000.jpg")}


def test_different_seed_gives_different_files(demo_dir: Path, tmp_path: Path) -> None:
    other = file_bytes(build_demo(tmp_path / "other", seed=1, views_per_class=VIEWS))
    reference = file_bytes(demo_dir)
    assert other.keys() == reference.keys()
    assert all(other[k] != reference[k] for k in reference)


def test_views_of_one_class_differ(demo_dir: Path) -> None:
    for class_dir in (d for d in demo_dir.iterdir() if d.is_dir()):
        arrays = []
        for path in sorted(class_dir.iterdir()):
            with Image.open(path) as image:
                arrays.append(np.asarray(image))
        for i in range(len(arrays)):
            for j in range(i + 1, len(arrays)):
                assert arrays[i].shape != arrays[j].shape or not np.array_equal(arrays[i], arrays[j])


def test_rebuild_with_same_parameters_is_a_no_op(demo_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in [demo_dir / ".demo.json", *image_files(demo_dir)]}
    start = time.perf_counter()
    assert build_demo(demo_dir, seed=0, views_per_class=VIEWS) == demo_dir
    assert time.perf_counter() - start < 1.0
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_changed_parameters_or_damaged_files_rebuild(tmp_path: Path) -> None:
    out = build_demo(tmp_path / "d", seed=0, views_per_class=1)
    out = build_demo(out, seed=0, views_per_class=2)
    assert len(image_files(out)) == 2 * len([p for p in out.iterdir() if p.is_dir()])
    victim = image_files(out)[0]
    good = victim.read_bytes()
    victim.write_bytes(b"broken")
    build_demo(out, seed=0, views_per_class=2)
    assert victim.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp folders left behind


def test_refuses_to_overwrite_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a saliqa demo folder"):
        build_demo(tmp_path / "mine", views_per_class=1)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"


def test_bad_parameters_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        build_demo(tmp_path / "x", views_per_class=0)
    with pytest.raises(ConfigError):
        build_demo(tmp_path / "x", min_short_side=400, max_short_side=300)
    assert not (tmp_path / "x").exists()


def _broken() -> np.ndarray:
    raise OSError("photo missing from this wheel")


def test_unloadable_photo_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    photos = (*DEMO_PHOTOS[:8], DemoPhoto("ghost", "nowhere", _broken))
    monkeypatch.setattr(demo_module, "DEMO_PHOTOS", photos)
    with caplog.at_level(logging.WARNING, logger="saliqa.data.demo"):
        out = build_demo(tmp_path / "d", views_per_class=1)
    assert "ghost" in caplog.text
    assert sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(p.name for p in DEMO_PHOTOS[:8])
    assert json.loads((out / ".demo.json").read_text())["skipped_photos"] == ["ghost"]


def test_too_few_photos_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = (*DEMO_PHOTOS[:7], DemoPhoto("ghost", "nowhere", _broken))
    monkeypatch.setattr(demo_module, "DEMO_PHOTOS", photos)
    with pytest.raises(DatasetError, match="Only 7 of 8"):
        build_demo(tmp_path / "d", views_per_class=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_full_build_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    out = build_demo(tmp_path / "full")
    assert time.perf_counter() - start < 20
    assert len(image_files(out)) == len(DEMO_PHOTOS) * 24
