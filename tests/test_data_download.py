"""`saliqa data download` end to end against an HTTP server on 127.0.0.1: a small fake MIT Indoor 67 (real
JPEGs), resumed transfers, bad checksums, hostile archives, the data cache, the CLI and configs without a root.

No test touches the internet or the user's real cache: every test runs with SALIQA_DATA_DIR in tmp_path and
the catalog's mit67 entry pointed at the local server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from local_server import FileServer
from PIL import Image

from saliqa.cli import main
from saliqa.config import config_from_dict
from saliqa.data import catalog
from saliqa.data.catalog import (
    CATALOG,
    MARKER,
    MIT67,
    DatasetEntry,
    RemoteFile,
    cached_datasets,
    data_dir,
    dataset_root,
    download_dataset,
)
from saliqa.data.readers import read_mit67
from saliqa.errors import ConfigError, DatasetError, DownloadError, UnsafeArchiveError
from saliqa.io.archives import extract_archive, safe_member_name
from saliqa.io.download import download, verify_file
from saliqa.pipeline.sources import Sources

CLASSES = ("bakery", "kitchen")
TRAIN = b"bakery/b0.jpg\nbakery/b1.jpg\nkitchen/k0.jpg\nkitchen/k1.jpg"
TEST = b"bakery/b2.jpg\nkitchen/k2.jpg"
TAR = "indoorCVPR_09.tar"


def _jpeg(seed: int) -> bytes:
    """A real, tiny JPEG (a smooth gradient with noise, like a photo as far as a decoder cares)."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, 24 * 32 * 3).reshape(24, 32, 3)
    pixels = np.clip(base + rng.integers(0, 50, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, **fields: object) -> None:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _mit67_tar(prefix: str = "", extra: list[tuple[str, dict]] | None = None) -> bytes:
    """The official archive's layout in miniature: ``Images/<class>/<file>.jpg`` (three per class)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        _add(tar, f"{prefix}Images", type=tarfile.DIRTYPE, mode=0o755)
        for c, label in enumerate(CLASSES):
            _add(tar, f"{prefix}Images/{label}", type=tarfile.DIRTYPE, mode=0o755)
            for i in range(3):
                _add(tar, f"{prefix}Images/{label}/{label[0]}{i}.jpg", _jpeg(10 * c + i), mode=0o644)
        for name, fields in extra or []:
            data = fields.pop("data", None)
            _add(tar, name, data, **fields)
    return out.getvalue()


def _entry(server: FileServer, tar_bytes: bytes, *, sha1: str | None = None) -> DatasetEntry:
    """The catalog's mit67 entry, its files served by ``server`` and pinned like the real ones."""
    server.files.update({TAR: tar_bytes, "TrainImages.txt": TRAIN, "TestImages.txt": TEST})
    return DatasetEntry(
        name="mit67",
        title="MIT Indoor 67",
        homepage="http://127.0.0.1/",
        files=(
            RemoteFile(
                server.url("TrainImages.txt"),
                "TrainImages.txt",
                sha256=hashlib.sha256(TRAIN).hexdigest(),
                size=len(TRAIN),
            ),
            RemoteFile(
                server.url("TestImages.txt"),
                "TestImages.txt",
                sha256=hashlib.sha256(TEST).hexdigest(),
                size=len(TEST),
            ),
            RemoteFile(server.url(TAR), TAR, sha1=sha1 or hashlib.sha1(tar_bytes).hexdigest(), unpack=True),
        ),
        expect=MIT67.expect,
        approx_size="a few kB",
    )


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's data cache is tmp_path/cache, never the user's."""
    monkeypatch.setenv("SALIQA_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def served(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> FileServer:
    """The fake MIT Indoor 67 on the local server, in the catalog as ``mit67``."""
    monkeypatch.setitem(CATALOG, "mit67", _entry(server, _mit67_tar()))
    return server


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("network used")


def _files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


# -- downloading and unpacking ---------------------------------------------------------------------------


def test_download_unpacks_what_read_mit67_reads(served: FileServer, cache: Path) -> None:
    root = download_dataset("mit67", progress=True)
    assert root == cache / "mit67" == dataset_root("mit67")
    table = read_mit67(root)
    assert len(table) == 6 and table.n_missing == 0 and table.labels == CLASSES
    assert sorted(table.frame["source_split"]) == ["test"] * 2 + ["train"] * 4
    assert (root / "TrainImages.txt").read_bytes() == TRAIN
    with Image.open(root / "Images" / "kitchen" / "k2.jpg") as image:
        assert image.format == "JPEG" and image.size == (32, 24)
    marker = json.loads((root / MARKER).read_text())
    assert marker["dataset"] == "mit67" and marker["completed"].startswith("20")
    assert marker["files"][2] == {
        "name": TAR,
        "sha256": None,
        "sha1": hashlib.sha1(served.files[TAR]).hexdigest(),
        "size": None,
    }
    assert [f["bytes"] for f in marker["fetched"]] == [len(TRAIN), len(TEST), len(served.files[TAR])]
    assert sorted(os.listdir(cache)) == ["mit67"]  # archive deleted, no temporary folder left
    before = list(served.requests)
    assert download_dataset("mit67", progress=False) == root  # complete: no network
    assert served.requests == before


def test_keep_archive_keeps_it_and_a_later_unpack_needs_no_network(
    served: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    download_dataset("mit67", keep_archive=True, progress=False)
    kept = cache / ".downloads" / "mit67"
    assert sorted(os.listdir(kept)) == sorted([TAR, "TrainImages.txt", "TestImages.txt"])
    shutil.rmtree(cache / "mit67")
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)
    root = download_dataset("mit67", progress=False)
    assert len(read_mit67(root)) == 6 and (root / MARKER).is_file()


def test_interrupted_transfer_resumes_with_a_range_request(served: FileServer, cache: Path) -> None:
    served.drop_after[TAR] = 3000
    root = download_dataset("mit67", progress=False)
    assert served.names_requested(TAR) == [None, "bytes=3000-"]
    assert len(read_mit67(root)) == 6


def test_interrupted_transfer_is_kept_for_the_next_run(served: FileServer, cache: Path) -> None:
    served.drop_after[TAR] = 3000
    with pytest.raises(DownloadError) as info:
        download_dataset("mit67", progress=False, retries=0)
    part = cache / ".downloads" / "mit67" / f"{TAR}.part"
    assert "connection closed after 3000 of" in str(info.value) and "run again to resume" in str(info.value)
    assert part.stat().st_size == 3000 and not (cache / "mit67").exists()
    download_dataset("mit67", progress=False, retries=0)
    assert served.names_requested(TAR) == [None, "bytes=3000-"]
    assert not part.exists() and dataset_root("mit67") == cache / "mit67"


def test_bad_checksum_unpacks_nothing(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CATALOG, "mit67", _entry(server, _mit67_tar(), sha1="0" * 40))
    with pytest.raises(DownloadError) as info:
        download_dataset("mit67", progress=False)
    message = str(info.value)
    assert "expected sha1 " + "0" * 40 in message and "partial file was deleted" in message
    assert _files_under(cache) <= {
        ".downloads",
        ".downloads/mit67",
        ".downloads/mit67/TrainImages.txt",
        ".downloads/mit67/TestImages.txt",
    }
    assert not (cache / "mit67").exists()


def test_an_archive_wrapped_in_one_folder_is_unwrapped(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CATALOG, "mit67", _entry(server, _mit67_tar(prefix="indoorCVPR_09/")))
    root = download_dataset("mit67", progress=False)
    assert (root / "Images" / "bakery" / "b0.jpg").is_file() and len(read_mit67(root)) == 6
    assert sorted(os.listdir(cache)) == ["mit67"]


def test_an_archive_without_the_expected_layout_is_not_taken(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        _add(tar, "photos/a.jpg", _jpeg(0))
        _add(tar, "other/b.jpg", _jpeg(1))
    monkeypatch.setitem(CATALOG, "mit67", _entry(server, out.getvalue()))
    with pytest.raises(DatasetError, match="lacks Images once unpacked"):
        download_dataset("mit67", progress=False)
    assert not (cache / "mit67").exists() and not list(cache.glob(".mit67.*"))


# -- hostile archives ------------------------------------------------------------------------------------


def _hostile_members(outside: Path) -> dict[str, list[tuple[str, dict]]]:
    return {
        "parent": [("../evil.txt", {"data": b"x"})],
        "deep parent": [("Images/bakery/../../../evil.txt", {"data": b"x"})],
        "absolute": [(str(outside / "evil.txt"), {"data": b"x"})],
        "symlink out": [("Images/link", {"type": tarfile.SYMTYPE, "linkname": str(outside)})],
        "symlink then write": [
            ("Images/link", {"type": tarfile.SYMTYPE, "linkname": "../../../outside"}),
            ("Images/link/evil.txt", {"data": b"x"}),
        ],
        "hardlink out": [("Images/hard", {"type": tarfile.LNKTYPE, "linkname": str(outside / "target.txt")})],
        "device": [("Images/null", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})],
        "fifo": [("Images/pipe", {"type": tarfile.FIFOTYPE})],
    }


@pytest.mark.parametrize(
    "kind",
    [
        "parent",
        "deep parent",
        "absolute",
        "symlink out",
        "symlink then write",
        "hardlink out",
        "device",
        "fifo",
    ],
)
def test_hostile_archive_is_refused_whole(
    server: FileServer, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("keep me")
    members = _hostile_members(outside)[kind]
    monkeypatch.setitem(CATALOG, "mit67", _entry(server, _mit67_tar(extra=members)))
    with pytest.raises(UnsafeArchiveError) as info:
        download_dataset("mit67", progress=False)
    assert f"its member {members[0][0]!r} is" in str(info.value) and "nothing of it was extracted" in str(
        info.value
    )
    assert sorted(os.listdir(outside)) == ["target.txt"] and (outside / "target.txt").read_text() == "keep me"
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()
    assert not (cache / "mit67").exists() and not list(cache.glob(".mit67.*"))


def test_unsafe_names_and_zip_members(tmp_path: Path) -> None:
    assert safe_member_name("C:\\Windows\\evil.dll") == "an absolute name"
    assert safe_member_name("./Images/a..b.jpg") is None and safe_member_name("Images/x.jpg") is None
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("Images/a/x.jpg", _jpeg(0))
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("..\\evil.txt", b"x")  # a Windows path that climbs out
    (tmp_path / "to").mkdir()
    assert extract_archive(good, tmp_path / "to", progress=False) == 1
    assert (tmp_path / "to" / "Images" / "a" / "x.jpg").read_bytes() == _jpeg(0)
    (tmp_path / "to2").mkdir()
    with pytest.raises(UnsafeArchiveError, match="climbs out"):
        extract_archive(bad, tmp_path / "to2", progress=False)
    assert list((tmp_path / "to2").iterdir()) == []
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("Images/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_archive(link, tmp_path / "to2", progress=False)


def test_without_the_data_filter_tar_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(_mit67_tar())
    monkeypatch.delattr(tarfile, "data_filter")
    (tmp_path / "to").mkdir()
    with pytest.raises(DownloadError, match="needs Python 3.11.4 or later"):
        extract_archive(archive, tmp_path / "to", progress=False)
    assert list((tmp_path / "to").iterdir()) == []


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive at all" * 100)
    with pytest.raises(DownloadError, match="neither a tar nor a zip"):
        extract_archive(junk, tmp_path, progress=False)


# -- the cache: where it is, what is complete -------------------------------------------------------------


def test_data_dir_env_then_platform_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_dir() == tmp_path / "cache"
    monkeypatch.delenv("SALIQA_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(catalog.sys, "platform", "linux")
    assert data_dir() == tmp_path / "xdg" / "saliqa" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert data_dir() == tmp_path / "home" / ".cache" / "saliqa" / "data"
    monkeypatch.setattr(catalog.sys, "platform", "darwin")
    assert data_dir() == tmp_path / "home" / "Library" / "Caches" / "saliqa" / "data"
    monkeypatch.setattr(catalog.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert data_dir() == tmp_path / "local" / "saliqa" / "data"


def test_absent_or_half_made_dataset_names_the_command(served: FileServer, cache: Path) -> None:
    with pytest.raises(DatasetError) as info:
        dataset_root("mit67")
    message = str(info.value)
    assert "MIT Indoor 67 is not downloaded" in message and "`saliqa data download mit67`" in message
    assert "$SALIQA_DATA_DIR" in message
    (cache / "mit67" / "Images" / "bakery").mkdir(parents=True)  # unpacked by hand, or killed half-way
    with pytest.raises(DatasetError, match="no completion marker"):
        dataset_root("mit67")
    with pytest.raises(DatasetError, match=r"--dir /elsewhere"):
        dataset_root("mit67", "/elsewhere")
    with pytest.raises(DatasetError, match="is in the way: it has no completion marker"):
        download_dataset("mit67", progress=False)  # saliqa did not make it: it is not deleted
    assert (cache / "mit67" / "Images" / "bakery").is_dir() and served.requests == []
    (cache / "mit67" / "Images" / "bakery").rmdir()
    (cache / "mit67" / "Images").rmdir()
    (cache / "mit67").rmdir()
    root = download_dataset("mit67", progress=False)
    assert dataset_root("mit67") == root and len(read_mit67(root)) == 6
    assert sorted(os.listdir(cache)) == ["mit67"]


def test_a_marker_of_other_files_is_not_complete(
    served: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = download_dataset("mit67", progress=False)
    newer = _entry(served, _mit67_tar(prefix="v2/"))
    monkeypatch.setitem(CATALOG, "mit67", newer)
    with pytest.raises(DatasetError, match="made from other files"):
        dataset_root("mit67")
    assert download_dataset("mit67", progress=False) == root and dataset_root("mit67") == root


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(
        DatasetError, match="no downloadable dataset is called 'koniq'; choose one of koniq10k, mit67"
    ):
        download_dataset("koniq")


def test_cached_datasets(served: FileServer, cache: Path) -> None:
    assert cached_datasets() == []
    served.drop_after[TAR] = 3000
    with pytest.raises(DownloadError):
        download_dataset("mit67", progress=False, retries=0)
    (pending,) = cached_datasets()
    assert not pending.complete and pending.downloaded == 3000 + len(TRAIN) + len(TEST) and pending.size == 0
    download_dataset("mit67", progress=False)
    (done,) = cached_datasets()
    assert done.complete and done.problem is None and done.downloaded == 0
    assert done.size == sum(p.stat().st_size for p in done.path.rglob("*") if p.is_file())


# -- the command line --------------------------------------------------------------------------------------


def test_cli_download_and_list(served: FileServer, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"data cache: {cache}" in out and "downloadable: mit67\tMIT Indoor 67" in out
    assert main(["data", "download", "mit67", "-q", "--keep-archive"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "mit67")
    assert (cache / ".downloads" / "mit67" / TAR).is_file()
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (line,) = [x for x in lines if x.startswith("mit67\t")]
    assert "\tcomplete\t" in line and "MB in downloads" in line and line.endswith(str(cache / "mit67"))


def test_cli_dir_option_and_errors(
    served: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    assert main(["data", "download", "mit67", "--dir", str(other), "-q"]) == 0
    assert (other / "mit67" / MARKER).is_file() and not (tmp_path / "cache" / "mit67").exists()
    capsys.readouterr()
    assert main(["data", "download", "nope", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("saliqa: error: no downloadable dataset is called 'nope'") and err.count("\n") == 1
    assert main(["data", "list", "--dir", str(other)]) == 0
    assert "mit67\tcomplete" in capsys.readouterr().out


# -- configs without a root ------------------------------------------------------------------------------


def test_config_without_root_reads_the_cache(served: FileServer, cache: Path) -> None:
    config = config_from_dict(
        {"data": {"source": "mit67"}, "evaluate": {"extra_sets": [{"name": "official", "source": "mit67"}]}}
    )
    assert config.data.root is None and config.evaluate.extra_sets[0].root is None
    with pytest.raises(ConfigError) as info:
        Sources.open(config)
    message = str(info.value)
    assert message.startswith("evaluate.extra_sets[0].root: not set, and MIT Indoor 67 is not downloaded")
    assert "`saliqa data download mit67`" in message and "or set evaluate.extra_sets[0].root" in message
    with pytest.raises(
        ConfigError, match=r"^data.root: not set, .*saliqa data download mit67.*or set data.root"
    ):
        Sources.open(config_from_dict({"data": {"source": "mit67"}}))
    download_dataset("mit67", progress=False)
    sources = Sources.open(config)
    assert sources.dataset is not None and len(sources.dataset) == 6
    assert sources.dataset.source == sources.extra_sets["official"].source
    assert str(cache / "mit67") in sources.dataset.source


def test_other_sources_still_need_a_root() -> None:
    for values, key in [
        ({"data": {"source": "folder"}}, "data:"),
        ({"evaluate": {"extra_sets": [{"name": "t"}]}}, "evaluate.extra_sets[0].root:"),
        ({"evaluate": {"extra_sets": [{"name": "t", "source": "manifest"}]}}, "evaluate.extra_sets[0].root:"),
    ]:
        with pytest.raises(ConfigError, match="root is required") as info:
            config_from_dict(values)
        assert key in str(info.value)


# -- the download layer's SHA-1 and cut-short bodies ----------------------------------------------------


def test_sha1_is_checked_alongside_sha256(server: FileServer, tmp_path: Path) -> None:
    data = os.urandom(5000)
    server.files["f.bin"] = data
    sha1, sha256 = hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest()
    dest = download(server.url("f.bin"), tmp_path / "f.bin", sha1=sha1, sha256=sha256, progress=False)
    assert (
        verify_file(dest, sha1=sha1) is None and verify_file(dest, sha1=sha1.upper(), sha256=sha256) is None
    )
    assert verify_file(dest, sha1="1" * 40) == f"expected sha1 {'1' * 40}, got {sha1}"
    with pytest.raises(DownloadError, match="sha1 " + "2" * 40):
        download(server.url("f.bin"), tmp_path / "g.bin", sha1="2" * 40, progress=False)


def test_a_body_cut_short_is_never_a_finished_file(server: FileServer, tmp_path: Path) -> None:
    server.files["f.bin"] = os.urandom(5000)
    server.drop_after["f.bin"] = 1234
    with pytest.raises(DownloadError, match="closed after 1234 of 5000 bytes"):
        download(server.url("f.bin"), tmp_path / "f.bin", progress=False)  # no checksum to catch it
    assert not (tmp_path / "f.bin").exists() and (tmp_path / "f.bin.part").stat().st_size == 1234
    assert (
        download(server.url("f.bin"), tmp_path / "f.bin", progress=False).read_bytes()
        == server.files["f.bin"]
    )


# -- KonIQ-10k (no published checksum) and datasets that may not be fetched ------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _koniq(server: FileServer, pictures: int) -> DatasetEntry:
    """The catalog's koniq10k entry in miniature: the same two zips and layout, ``pictures`` JPEGs expected."""
    scores = b"image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n" + b"".join(
        f"{i}.jpg,0,0,1,0,0,1,3.0,0.1,50.0\n".encode() for i in range(3)
    )
    server.files["scores.zip"] = _zip({"koniq10k_scores_and_distributions.csv": scores})
    server.files["pictures.zip"] = _zip({f"1024x768/{i}.jpg": _jpeg(i) for i in range(3)})
    scores_file, pictures_file = catalog.KONIQ10K.files
    return dataclasses.replace(
        catalog.KONIQ10K,
        files=(
            dataclasses.replace(scores_file, url=server.url("scores.zip")),
            dataclasses.replace(pictures_file, url=server.url("pictures.zip")),
        ),
        counts=(("1024x768/*.jpg", pictures),),
    )


def test_koniq10k_is_checked_by_its_content_and_its_hashes_recorded(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert catalog.KONIQ10K.counts == (("1024x768/*.jpg", 10_073),)
    monkeypatch.setitem(CATALOG, "koniq10k", _koniq(server, pictures=3))
    root = download_dataset("koniq10k", progress=False)
    assert root == cache / "koniq10k" and dataset_root("koniq10k") == root
    assert len(list((root / "1024x768").glob("*.jpg"))) == 3
    assert (root / "koniq10k_scores_and_distributions.csv").is_file()
    fetched = json.loads((root / MARKER).read_text(encoding="utf-8"))["fetched"]
    assert [f["sha256"] for f in fetched] == [
        hashlib.sha256(server.files[name]).hexdigest() for name in ("scores.zip", "pictures.zip")
    ]


def test_koniq10k_with_a_picture_missing_is_not_taken(
    server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(CATALOG, "koniq10k", _koniq(server, pictures=4))
    with pytest.raises(DatasetError, match=r"3 files 1024x768/\*\.jpg instead of 4"):
        download_dataset("koniq10k", progress=False)
    assert not (cache / "koniq10k").exists()


def test_a_dataset_saliqa_may_not_fetch_says_where_to_get_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "clive", "-q"]) == 1
    err = capsys.readouterr().err
    assert "https://live.ece.utexas.edu/research/ChallengeDB/index.html" in err and "--root" in err


def test_a_downloaded_dataset_is_readable_by_others_under_the_usual_umask(
    served: FileServer, cache: Path
) -> None:
    previous = os.umask(0o022)
    try:
        root = download_dataset("mit67", progress=False)
    finally:
        os.umask(previous)
    assert root.stat().st_mode & 0o777 == 0o755
