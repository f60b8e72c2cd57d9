"""Datasets saliqa can fetch by name: where their files are published, how to check and unpack them.

An entry of :data:`CATALOG` is data, not code (URLs, checksums, which file is an archive, what the finished
folder must hold), so adding a dataset is adding an entry; tests swap in entries served from 127.0.0.1.
Everything goes into one data cache (:func:`data_dir`), laid out as::

    <cache>/<name>/                   the finished dataset; MARKER inside says what it was made from, and when
    <cache>/.downloads/<name>/        the fetched files (``.part`` while in flight), deleted after success
                                      unless kept; a kept archive is reused, verified, without the network
    <cache>/.<name>.unpack-<random>/  unpacking in progress; removed on failure and by the next download

A dataset is unpacked into a temporary folder inside the cache, checked, given its marker, then renamed into
place, so ``<cache>/<name>`` is either absent, complete, or (made by hand or by an older saliqa) without a
marker, which is never taken as complete. Files are verified before anything is unpacked, and archives are
unpacked with :func:`saliqa.io.archives.extract_archive` (nothing may land outside the folder).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from saliqa.errors import DatasetError
from saliqa.io.archives import extract_archive
from saliqa.io.download import ensure_file
from saliqa.io.hashing import sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "CATALOG",
    "DATA_DIR_ENV",
    "MANUAL",
    "MARKER",
    "CachedDataset",
    "DatasetEntry",
    "ManualDataset",
    "RemoteFile",
    "cached_datasets",
    "catalog_entry",
    "data_dir",
    "dataset_root",
    "download_dataset",
]

DATA_DIR_ENV = "SALIQA_DATA_DIR"
"""Environment variable naming the data cache, instead of the user's cache folder + ``saliqa/data``."""

MARKER = ".saliqa-dataset.json"
"""Written last into a finished dataset folder: the dataset, the files it was made from, and when."""

_DOWNLOADS = ".downloads"


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a dataset: where it is, how to recognise it, and what to do with it."""

    url: str
    name: str
    """File name in the downloads folder, and (when not unpacked) in the dataset folder."""
    sha256: str | None = None
    sha1: str | None = None
    """For a file whose only published checksum is a SHA-1."""
    size: int | None = None
    unpack: bool = False
    """An archive (tar or zip) unpacked into the dataset folder; otherwise the file is copied into it."""

    def identity(self) -> dict[str, object]:
        """What the marker records of this file (the URL may move; the checksums may not)."""
        return {"name": self.name, "sha256": self.sha256, "sha1": self.sha1, "size": self.size}


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset saliqa can download: its files, and what the finished folder must hold."""

    name: str
    title: str
    homepage: str
    files: tuple[RemoteFile, ...]
    expect: tuple[str, ...]
    """Paths (relative to the dataset folder) that a finished download must have."""
    approx_size: str = ""
    """For messages: about how much is downloaded."""
    counts: tuple[tuple[str, int], ...] = ()
    """``(glob pattern, files)`` a finished download must hold exactly: the content check of a dataset whose
    publisher gives no checksum (the fetched files' SHA-256 are then recorded in the marker)."""


@dataclass(frozen=True)
class ManualDataset:
    """A dataset whose licence forbids a scripted download: where to get it and how to point saliqa at it."""

    name: str
    title: str
    homepage: str
    how: str


MIT67 = DatasetEntry(
    name="mit67",
    title="MIT Indoor 67",
    homepage="https://web.mit.edu/torralba/www/indoor.html",
    files=(
        # The official split lists (5,360 train and 1,340 test lines; 77-83 and 17-23 per class), fetched
        # first: they are small, so a dead link shows before 2.4 GB are spent. The authors publish no checksum.
        # These SHA-256 values are those of the copies in the project's shared data (which came from
        # github.com/cdoersch/elementdiscovery), and the same values are pinned for these two URLs, as
        # retrieved from web.mit.edu, by the stable-datasets library (github.com/Ryth0312/stable-datasets,
        # stable_datasets/images/indoor67.py, commit 185006f8418b49b9206045b0df071cd2ed1d518f): two
        # independent copies, one content.
        RemoteFile(
            url="http://web.mit.edu/torralba/www/TrainImages.txt",
            name="TrainImages.txt",
            sha256="7ec85f88735739d8159061e4bcf6a9765aab8606ab444605b3f8e0641be0260e",
            size=172_080,
        ),
        RemoteFile(
            url="http://web.mit.edu/torralba/www/TestImages.txt",
            name="TestImages.txt",
            sha256="906c529a5a0918feec371de5b07a465ddb1f15ebaebc90a33cc321c371133bf1",
            size=43_475,
        ),
        RemoteFile(
            url="http://groups.csail.mit.edu/vision/LabelMe/NewImages/indoorCVPR_09.tar",
            name="indoorCVPR_09.tar",
            # The authors publish no checksum. This SHA-1 of the archive at this URL is the one pinned by the
            # independent dataset library vipy (https://github.com/visym/vipy, vipy/data/mit67.py, commit
            # 099cf51cc952bbb170525827eeeac8ffa0c81de1: URL + SHA1 = '0b252516...'). No size is pinned: none is
            # published, and a guessed one would only refuse a good file.
            sha1="0b252516e746ba428b96af408d2e8162d9b08ac5",
            unpack=True,
        ),
    ),
    expect=("Images", "TrainImages.txt", "TestImages.txt"),
    approx_size="about 2.4 GB",
)

KONIQ10K = DatasetEntry(
    name="koniq10k",
    title="KonIQ-10k",
    homepage="https://database.mmsp-kn.de/koniq-10k-database.html",
    files=(
        # The authors publish no checksum and no independent library pins one, so nothing is pinned here: the
        # finished folder must hold exactly the 10,073 pictures, and the marker records the SHA-256 of what was
        # fetched. The scores first: small, so a dead link shows before the pictures' 1.2 GB.
        RemoteFile(
            url="http://datasets.vqa.mmsp-kn.de/archives/koniq10k_scores_and_distributions.zip",
            name="koniq10k_scores_and_distributions.zip",
            unpack=True,
        ),
        RemoteFile(
            url="http://datasets.vqa.mmsp-kn.de/archives/koniq10k_1024x768.zip",
            name="koniq10k_1024x768.zip",
            unpack=True,
        ),
    ),
    expect=("1024x768", "koniq10k_scores_and_distributions.csv"),
    approx_size="about 1.2 GB",
    counts=(("1024x768/*.jpg", 10_073),),
)

CATALOG: dict[str, DatasetEntry] = {MIT67.name: MIT67, KONIQ10K.name: KONIQ10K}
"""Downloadable datasets by name (what ``saliqa data download NAME`` takes)."""

MANUAL: dict[str, ManualDataset] = {
    "clive": ManualDataset(
        name="clive",
        title="LIVE In the Wild Image Quality Challenge (CLIVE)",
        homepage="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
        how=(
            "its licence asks each user to request it from the LIVE lab (the form on its page), so saliqa does "
            "not download it. Unpack it anywhere and point saliqa at that folder (Images/ and the MOS file): "
            "`saliqa iqa validate --data clive --root <folder>`"
        ),
    ),
}
"""Datasets saliqa reads but may not fetch: ``saliqa data download NAME`` says where to get them."""


@dataclass(frozen=True)
class CachedDataset:
    """What ``saliqa data list`` shows of one folder of the data cache."""

    name: str
    path: Path
    size: int
    """Bytes under ``path`` (0 when absent)."""
    complete: bool
    problem: str | None
    """Why it is not complete (``None`` when it is)."""
    downloaded: int
    """Bytes in its downloads folder: fetched files kept, or a transfer to resume."""


def _user_cache_dir() -> Path:
    """The platform's per-user cache folder (what platformdirs would say, without the dependency)."""
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    if sys.platform == "darwin":
        return home / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache"


def data_dir() -> Path:
    """The data cache: ``$SALIQA_DATA_DIR`` if set, else the user's cache folder + ``saliqa/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else _user_cache_dir() / "saliqa" / "data"


def catalog_entry(name: str) -> DatasetEntry:
    """The catalog's entry for ``name``; an unknown name names the known ones."""
    if name in MANUAL:
        manual = MANUAL[name]
        raise DatasetError(f"{manual.title} ({manual.homepage}): {manual.how}")
    try:
        return CATALOG[name]
    except KeyError:
        raise DatasetError(
            f"no downloadable dataset is called {name!r}; choose one of {', '.join(sorted(CATALOG))}"
        ) from None


def _download_command(name: str, directory: Path | None) -> str:
    return f"saliqa data download {name}" + (f" --dir {directory}" if directory is not None else "")


def _problem(root: Path, entry: DatasetEntry) -> str | None:
    """Why ``root`` is not a complete download of ``entry``, or ``None`` when it is."""
    if not root.is_dir():
        return "is not there"
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"has no completion marker ({MARKER}): an unfinished download, or a folder made by hand"
    except (OSError, ValueError) as err:
        return f"has an unreadable completion marker ({err})"
    files = [f.identity() for f in entry.files]
    if not isinstance(marker, dict) or marker.get("dataset") != entry.name or marker.get("files") != files:
        return "was made from other files than this saliqa's catalog lists"
    return None


def dataset_root(name: str, directory: str | Path | None = None) -> Path:
    """The folder of a completely downloaded dataset in the data cache (``directory``, else :func:`data_dir`).

    Raises :class:`DatasetError` saying why it is not there and the exact command that fetches it.
    """
    entry = catalog_entry(name)
    base = Path(directory) if directory is not None else data_dir()
    root = base / entry.name
    problem = _problem(root, entry)
    if problem is None:
        return root
    env = directory is None and DATA_DIR_ENV in os.environ
    where = f" (the data cache is ${DATA_DIR_ENV})" if env else ""
    size = f" ({entry.approx_size})" if entry.approx_size else ""
    command = _download_command(name, Path(directory) if directory is not None else None)
    raise DatasetError(
        f"{entry.title} is not downloaded: {root} {problem}{where}; fetch it with `{command}`{size}"
    )


def _clear_leftovers(base: Path, name: str) -> None:
    """Remove folders that killed downloads of ``name`` left behind (unpacking, or a replaced old copy)."""
    for pattern in (f".{name}.unpack-*", f".{name}.old-*"):
        for path in base.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def _content_folder(staging: Path, entry: DatasetEntry) -> Path:
    """The folder holding the dataset: ``staging``, or the one folder an archive wrapped everything in."""
    if all((staging / p).exists() for p in entry.expect if not _is_plain(entry, p)):
        return staging
    children = list(staging.iterdir())
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return staging


def _is_plain(entry: DatasetEntry, path: str) -> bool:
    return any(f.name == path and not f.unpack for f in entry.files)


def _replace(new: Path, root: Path, name: str) -> None:
    """Rename ``new`` onto ``root``; an existing ``root`` (a stale download) is moved aside, then deleted."""
    if not root.exists():
        os.replace(new, root)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=root.parent))
    os.replace(root, old / "old")
    os.replace(new, root)
    shutil.rmtree(old, ignore_errors=True)


def download_dataset(
    name: str,
    *,
    directory: str | Path | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    retries: int = 5,
    timeout: float = 60,
) -> Path:
    """Download, verify and unpack a catalog dataset into the data cache; its folder.

    A complete copy is returned at once, without the network. Otherwise each file is fetched (resuming a
    partial one, ``retries`` times within this call) and verified before anything is unpacked; the dataset
    is unpacked into a temporary folder, checked for ``entry.expect``, given its marker and renamed into
    place. The fetched files are deleted afterwards unless ``keep_archive``.
    """
    entry = catalog_entry(name)
    base = Path(directory) if directory is not None else data_dir()
    root = base / entry.name
    problem = _problem(root, entry)
    if problem is None:
        log.info("%s is already complete in %s", entry.title, root)
        return root
    if root.exists() and not (root / MARKER).exists():  # not made by saliqa: never delete someone's files
        raise DatasetError(
            f"{root} is in the way: it {problem}. saliqa unpacks elsewhere and renames a finished download "
            f"into place, so it did not make this folder; move it away (or delete it) and run again, or use it "
            f"as it is by setting the config's root to it"
        )
    if root.exists():
        log.warning("%s %s; it will be replaced", root, problem)
    downloads = base / _DOWNLOADS / entry.name
    fetched = [
        ensure_file(
            f.url,
            downloads / f.name,
            sha256=f.sha256,
            sha1=f.sha1,
            size=f.size,
            progress=progress,
            timeout=timeout,
            retries=retries,
        )
        for f in entry.files
    ]
    _clear_leftovers(base, entry.name)
    # made under the user's umask, not mkdtemp's private 0700: it becomes the dataset folder of a shared cache
    staging = base / f".{entry.name}.unpack-{secrets.token_hex(6)}"
    staging.mkdir(parents=True)
    try:
        for remote, path in zip(entry.files, fetched, strict=True):
            if remote.unpack:
                extract_archive(path, staging, progress=progress)
        content = _content_folder(staging, entry)
        for remote, path in zip(entry.files, fetched, strict=True):
            if not remote.unpack:
                shutil.copyfile(path, content / remote.name)
        missing = [p for p in entry.expect if not (content / p).exists()]
        miscounted = [
            f"{found} files {pattern} instead of {count}"
            for pattern, count in entry.counts
            if (found := len(list(content.glob(pattern)))) != count
        ]
        if missing or miscounted:
            lacks = [f"lacks {', '.join(missing)}"] if missing else []
            raise DatasetError(
                f"the downloaded {entry.title} {'; '.join(lacks + miscounted)} once unpacked; the files were "
                f"fetched whole, so they changed at the source or the catalog's description is out of date: "
                f"please report this"
            )
        marker = {
            "dataset": entry.name,
            "title": entry.title,
            "files": [f.identity() for f in entry.files],
            "fetched": [
                {"url": f.url, "name": f.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                for f, p in zip(entry.files, fetched, strict=True)
            ],
            "completed": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (content / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _replace(content, root, entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        for path in fetched:
            path.unlink(missing_ok=True)
        for folder in (downloads, downloads.parent):
            try:
                folder.rmdir()
            except OSError:  # not empty: other datasets' downloads, or files put there by hand
                pass
    return root


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for file in files:
            try:
                total += os.lstat(os.path.join(folder, file)).st_size
            except OSError:
                pass
    return total


def cached_datasets(directory: str | Path | None = None) -> list[CachedDataset]:
    """Every dataset folder in the data cache (and any download in progress), sorted by name."""
    base = Path(directory) if directory is not None else data_dir()
    names = (
        {p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if base.is_dir()
        else set()
    )
    downloads = base / _DOWNLOADS
    if downloads.is_dir():
        names |= {p.name for p in downloads.iterdir() if p.is_dir()}
    found = []
    for name in sorted(names):
        root = base / name
        entry = CATALOG.get(name)
        problem = _problem(root, entry) if entry else "is not a dataset saliqa's catalog knows"
        found.append(
            CachedDataset(
                name=name,
                path=root,
                size=_tree_size(root) if root.is_dir() else 0,
                complete=problem is None,
                problem=problem,
                downloaded=_tree_size(downloads / name),
            )
        )
    return found
