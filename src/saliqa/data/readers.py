"""Dataset readers: a class-folder tree, MIT Indoor 67 with its split lists, and a CSV manifest (ImageNet-val in
:mod:`saliqa.data.imagenet`).

Every reader returns the same :class:`ImageTable`, so later stages never care where images came from.
A reader lists files; it does not decode them. A file that is listed but absent (MIT Indoor 67's lists
name 6,700 files that a partial download lacks) becomes a row with ``present=False`` and a count in
``notes``: the run reports it instead of crashing. Only a dataset that cannot be read at all (no root,
no class folders, a malformed manifest) raises :class:`~saliqa.errors.DatasetError`.

Labels follow one rule: an image's label is the first folder below the root it was found under (so
``ROOT/<a>/<b>/x.jpg`` is class ``a``, whichever command lists it); a file directly inside a folder given to
:func:`read_paths` takes that folder's own name, and a file given by its path its parent folder's name.

A file whose name (or a folder's name on its way) is not valid UTF-8 is listed all the same, with the reason
"file name is not valid UTF-8" and its ``image_id``, ``path`` and ``label`` escaped reversibly
(:mod:`saliqa.io.names`; ``os_name(path, reason)`` gives the name back): one odd name never stops a dataset,
and the tables can always be written. In the rare case that the escaped id is also the id of a file whose
name is valid (``a\\xffb.jpg`` next to a file named ``a<byte ff>b.jpg``), the escaped row's id gets the
suffix " (not UTF-8)" so that ids stay unique; its ``path`` is still the escaped name.
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from saliqa.errors import ConfigError, DatasetError
from saliqa.io.names import NOT_UTF8, escape_name, has_undecodable_bytes

__all__ = [
    "COLUMNS",
    "IMAGE_EXTENSIONS",
    "DatasetKind",
    "ImageTable",
    "open_dataset",
    "read_folder",
    "read_manifest",
    "read_mit67",
    "read_paths",
]

#: Columns of :attr:`ImageTable.frame`, in order. ``present`` says whether the file is on disk (checked by
#: its real name); ``reason`` is None, or why a listed file cannot be used whatever its content (a name that
#: is not valid UTF-8: its ``path`` is then escaped text, to be opened as ``saliqa.io.names.os_name``).
COLUMNS: tuple[str, ...] = ("image_id", "path", "label", "source_split", "present", "reason")

#: File extensions (lower case, with the dot) treated as images when scanning folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".pbm"}
)

DatasetKind = Literal["folder", "mit67", "manifest", "imagenet-val"]

_MIT67_LISTS: tuple[tuple[str, str], ...] = (("TrainImages.txt", "train"), ("TestImages.txt", "test"))

# Appended to the id of a row whose escaped name equals a valid file's name (see the module docstring).
_NOT_UTF8_SUFFIX = " (not UTF-8)"


@dataclass(frozen=True, eq=False)
class ImageTable:
    """The images of one dataset: one row per file, sorted by ``image_id``.

    ``frame`` has exactly the columns in :data:`COLUMNS`; ``source`` says what was read
    (``"folder:/abs/root"``); ``notes`` are human-readable counts of what was skipped or missing.
    """

    frame: pd.DataFrame
    source: str
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if tuple(self.frame.columns) != COLUMNS:
            raise ValueError(f"ImageTable columns must be {list(COLUMNS)}, got {list(self.frame.columns)}")
        if not self.frame["image_id"].is_unique:
            raise ValueError("ImageTable image_id values must be unique")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_missing(self) -> int:
        """Rows whose file is not there (listed but absent, or a broken link)."""
        return int((~self.frame["present"]).sum())

    @property
    def labels(self) -> tuple[str, ...]:
        """Sorted unique class labels."""
        return tuple(sorted(set(self.frame["label"])))

    def summary(self) -> str:
        """One line for logs and the CLI: counts of images, classes, missing files and splits."""
        n = len(self.frame)
        text = f"{self.source}: {n} images in {len(self.labels)} classes"
        if self.n_missing:
            text += f" ({n - self.n_missing} present, {self.n_missing} missing)"
        unusable = int(self.frame["reason"].notna().sum())
        if unusable:
            text += f"; {unusable} unusable ({', '.join(sorted(set(self.frame['reason'].dropna())))})"
        splits = self.frame["source_split"]
        if splits.notna().any():
            counts = Counter("none" if s is None else str(s) for s in splits)
            text += "; splits " + ", ".join(f"{k} {counts[k]}" for k in sorted(counts))
        if self.notes:
            text += f"; {len(self.notes)} notes"
        return text


@dataclass
class _Row:
    image_id: str
    path: str
    label: str
    source_split: str | None = None
    present: bool = False
    reason: str | None = None

    def stored(self) -> _Row:
        """This row as the tables can hold it: checked on disk, names escaped when not valid UTF-8."""
        present = os.path.isfile(self.path)
        names = (self.image_id, self.path, self.label)
        if not any(has_undecodable_bytes(name) for name in names):
            return _Row(*names, self.source_split, present)
        return _Row(*(escape_name(name) for name in names), self.source_split, present, NOT_UTF8)


def _unique_escaped_ids(rows: list[_Row]) -> None:
    """Give an escaped row whose id is also a valid row's id (``a\\xffb.jpg``) a suffixed id, in place.

    Valid ids are unique among themselves, and so are escaped ones (escaping is one-to-one), so only such a
    pair can clash; the valid row keeps its id, as it had before names were escaped.
    """
    counts = Counter(r.image_id for r in rows)
    taken = set(counts)
    for row in rows:
        if row.reason == NOT_UTF8 and counts[row.image_id] > 1:
            candidate, k = row.image_id + _NOT_UTF8_SUFFIX, 1
            while candidate in taken:
                k += 1
                candidate = f"{row.image_id} (not UTF-8, {k})"
            row.image_id = candidate
            taken.add(candidate)


def _make_table(rows: Iterable[_Row], source: str, notes: Iterable[str]) -> ImageTable:
    """Check the files exist, escape names that are not text, sort by image_id and freeze an ImageTable."""
    stored = [r.stored() for r in rows]
    _unique_escaped_ids(stored)
    ordered = sorted(stored, key=lambda r: r.image_id)
    frame = pd.DataFrame(
        {
            "image_id": pd.Series([r.image_id for r in ordered], dtype=str),
            "path": pd.Series([r.path for r in ordered], dtype=str),
            "label": pd.Series([r.label for r in ordered], dtype=str),
            # object dtype keeps None (not NaN) for "the dataset has no split for this file".
            "source_split": pd.Series([r.source_split for r in ordered], dtype=object),
            "present": pd.Series([r.present for r in ordered], dtype=bool),
            "reason": pd.Series([r.reason for r in ordered], dtype=object),
        }
    )
    return ImageTable(frame=frame, source=source, notes=tuple(notes))


def _absolute(path: str | os.PathLike[str]) -> Path:
    """Absolute, normalised, user-expanded path; symlinks are kept (the user chose that name)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _existing_dir(root: str | os.PathLike[str], what: str) -> Path:
    path = _absolute(root)
    if not path.exists():
        raise DatasetError(f"{what} {path} does not exist; check the path (or download the dataset there).")
    if not path.is_dir():
        raise DatasetError(f"{what} {path} is not a directory; point it at the folder holding the classes.")
    return path


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


@dataclass
class _Scan:
    """What a class-folder scan found, and what it ignored (for the notes)."""

    rows: list[_Row] = field(default_factory=list)
    hidden: int = 0
    non_images: int = 0
    loose_files: int = 0
    empty_classes: int = 0
    unreadable: list[str] = field(default_factory=list)

    def notes(self, where: str) -> list[str]:
        out: list[str] = []
        if self.loose_files:
            loose = _plural(self.loose_files, "file")
            out.append(f"{loose} directly in {where} ignored (not in a class folder)")
        if self.non_images:
            out.append(f"{_plural(self.non_images, 'non-image file')} ignored")
        if self.hidden:
            out.append(f"{_plural(self.hidden, 'hidden file or folder', 'hidden files or folders')} skipped")
        if self.empty_classes:
            out.append(f"{_plural(self.empty_classes, 'class folder')} without images")
        if self.unreadable:
            folders = _plural(len(self.unreadable), "folder")
            out.append(f"{folders} could not be read: {', '.join(self.unreadable[:3])}")
        return out


def _scan_classes(root: Path, what: str) -> _Scan:
    """Walk ``root/<class>/...`` and collect image files; raise only if there is no class folder."""
    scan = _Scan()
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"{what} {root} cannot be listed ({exc}); check its permissions.") from exc
    class_dirs: list[Path] = []
    for entry in entries:
        if _is_hidden(entry.name):
            scan.hidden += 1
        elif entry.is_dir():
            class_dirs.append(Path(entry.path))
        else:
            scan.loose_files += 1
    if not class_dirs:
        raise DatasetError(
            f"{what} {root} has no class folders; expected {root}/<class>/<image files>, "
            "one folder per class."
        )
    for class_dir in class_dirs:
        before = len(scan.rows)
        scan.rows.extend(_scan_one_class(root, class_dir, scan))
        if len(scan.rows) == before:
            scan.empty_classes += 1
    return scan


def _walk_images(folder: Path, scan: _Scan) -> Iterator[str]:
    """Every image file below ``folder`` (by extension; dangling links included, hidden entries skipped),
    in sorted order, counting what was skipped in ``scan``."""

    def on_error(exc: OSError) -> None:
        scan.unreadable.append(str(exc.filename))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        hidden_dirs = [d for d in dirnames if _is_hidden(d)]
        scan.hidden += len(hidden_dirs)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name):
                scan.hidden += 1
            elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                scan.non_images += 1
            else:
                yield os.path.join(dirpath, name)


def _scan_one_class(root: Path, class_dir: Path, scan: _Scan) -> Iterator[_Row]:
    for full in _walk_images(class_dir, scan):
        image_id = Path(os.path.relpath(full, root)).as_posix()
        yield _Row(image_id=image_id, path=full, label=class_dir.name)


def read_folder(root: str | os.PathLike[str]) -> ImageTable:
    """Read ``ROOT/<class>/<image>``: the class is the top folder, image_id the path relative to ROOT.

    Images are picked by extension (case-insensitive); nested folders inside a class are kept in the
    image_id; hidden entries, non-image files and files directly in ROOT are skipped and counted.
    """
    path = _existing_dir(root, "Dataset folder")
    scan = _scan_classes(path, "Dataset folder")
    return _make_table(scan.rows, f"folder:{path}", scan.notes("the dataset root"))


def _normalise_relpath(text: str) -> str:
    """POSIX form of a path as written in a list or manifest (backslashes, ./ and // removed)."""
    norm = posixpath.normpath(text.strip().replace("\\", "/"))
    return "" if norm == "." else norm


def _read_split_list(path: Path) -> tuple[list[str], list[str]]:
    """Entries of one MIT67 split list (relative to Images/) and the notes about odd lines."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DatasetError(f"Split list {path} cannot be read ({exc}); check its permissions.") from exc
    entries: list[str] = []
    seen: set[str] = set()
    duplicates = bad = 0
    for line in text.splitlines():  # splitlines handles \n, \r\n and \r
        if not line.strip():
            continue
        entry = _normalise_relpath(line)
        if "/" not in entry or entry.startswith(("/", "../")):
            bad += 1
        elif entry in seen:
            duplicates += 1
        else:
            seen.add(entry)
            entries.append(entry)
    notes: list[str] = []
    if bad:
        notes.append(f"{_plural(bad, 'line')} in {path.name} ignored (not of the form <class>/<file>)")
    if duplicates:
        notes.append(f"{_plural(duplicates, 'duplicate line')} in {path.name} ignored")
    return entries, notes


def read_mit67(root: str | os.PathLike[str], *, listed_only: bool = False) -> ImageTable:
    """Read MIT Indoor 67: ``ROOT/Images/<class>/<file>`` plus optional Train/TestImages.txt.

    Rows are every image under Images/ and every listed file; ``source_split`` comes from the lists
    (None for unlisted files). Listed files that are absent are kept with ``present=False`` and counted
    per list in ``notes``. ``listed_only=True`` drops images that no list names.
    """
    path = _existing_dir(root, "MIT Indoor 67 root")
    images = path / "Images"
    if not images.is_dir():
        hint = " (it looks like the Images folder itself: pass its parent)" if path.name == "Images" else ""
        raise DatasetError(
            f"MIT Indoor 67 root {path} has no Images/ folder{hint}; expected "
            f"{path}/Images/<class>/<file>.jpg with TrainImages.txt and TestImages.txt next to Images/."
        )
    scan = _scan_classes(images, "MIT Indoor 67 Images folder")
    rows: dict[str, _Row] = {r.image_id: r for r in scan.rows}
    notes: list[str] = []
    listed: set[str] = set()
    for filename, split in _MIT67_LISTS:
        list_path = path / filename
        if not list_path.is_file():
            notes.append(f"{filename} not found: no {split} split")
            continue
        entries, list_notes = _read_split_list(list_path)
        notes.extend(list_notes)
        missing = conflicts = 0
        for entry in entries:
            row = rows.get(entry)
            if row is None:
                full = str(images.joinpath(*entry.split("/")))
                row = rows[entry] = _Row(image_id=entry, path=full, label=entry.split("/", 1)[0])
            if row.source_split is not None and row.source_split != split:
                conflicts += 1  # listed in both lists: the first list wins
            else:
                row.source_split = split
            if not os.path.isfile(row.path):
                missing += 1
            listed.add(entry)
        notes.append(f"{len(entries)} files listed in {filename}")
        if missing:
            notes.append(f"{missing} files listed in {filename} are missing")
        if conflicts:
            notes.append(f"{_plural(conflicts, 'file')} in {filename} also in an earlier list; kept there")
    unlisted = [image_id for image_id in rows if image_id not in listed]
    if listed_only:
        for image_id in unlisted:
            del rows[image_id]
        if unlisted:
            notes.append(f"{len(unlisted)} images under Images/ in no split list left out (listed_only)")
    elif unlisted and listed:
        notes.append(f"{len(unlisted)} images under Images/ are in no split list")
    notes.extend(scan.notes("Images/"))
    return _make_table(rows.values(), f"mit67:{path}", notes)


def read_manifest(csv_path: str | os.PathLike[str]) -> ImageTable:
    """Read a CSV with header ``path,label[,split]``; relative paths are relative to the CSV's folder.

    image_id is the path as written, in POSIX form; two rows with the same image_id are an error,
    because ids key every later table. Files that are absent are kept with ``present=False``.
    """
    path = _absolute(csv_path)
    if not path.is_file():
        raise DatasetError(f"Manifest {path} does not exist or is not a file; check the path.")
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            body = list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"Manifest {path} cannot be read as UTF-8 CSV ({exc}).") from exc
    columns = [c.strip().lower() for c in header] if header else []
    missing_cols = [c for c in ("path", "label") if c not in columns]
    if missing_cols:
        raise DatasetError(
            f"Manifest {path} lacks the column(s) {', '.join(missing_cols)}: its first line must be a "
            f"header 'path,label' or 'path,label,split' (got {','.join(columns) or 'nothing'})."
        )
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1 and c)
    if repeated:
        raise DatasetError(f"Manifest {path} repeats the column(s) {', '.join(repeated)} in its header.")
    i_path, i_label = columns.index("path"), columns.index("label")
    i_split = columns.index("split") if "split" in columns else None
    rows: dict[str, _Row] = {}
    for line_no, record in body:
        if not any(cell.strip() for cell in record):
            continue
        cells = [c.strip() for c in record] + [""] * (len(columns) - len(record))
        image_id, label = _normalise_relpath(cells[i_path]), cells[i_label]
        if not image_id or not label:
            raise DatasetError(
                f"Manifest {path} line {line_no}: empty path or label; fill it in or drop the line."
            )
        if image_id in rows:
            raise DatasetError(
                f"Manifest {path} line {line_no}: duplicate path {image_id!r}; each image must appear once."
            )
        split = (cells[i_split] or None) if i_split is not None else None
        full = os.path.normpath(os.path.join(base, os.path.expanduser(image_id)))
        rows[image_id] = _Row(image_id=image_id, path=full, label=label, source_split=split)
    notes: list[str] = []
    ignored = [c for c in columns if c not in ("path", "label", "split")]
    if ignored:
        notes.append(f"manifest column(s) {', '.join(ignored)} ignored")
    missing = sum(not os.path.isfile(row.path) for row in rows.values())
    if missing:
        notes.append(f"{missing} files listed in {path.name} are missing")
    return _make_table(rows.values(), f"manifest:{path}", notes)


def read_paths(paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> ImageTable:
    """The image files named by ``paths`` (files, or folders searched recursively), for ``saliqa rate``.

    ``image_id`` is the path as given (POSIX form), joined with the path below a given folder; rows are
    sorted by it and a file reached twice is listed once (the first path that reaches it gives its label).
    Labels follow the module's rule. Below a folder, files are picked by extension exactly as
    :func:`read_folder` picks them (the same walk): a dangling link with an image extension is listed
    (``present=False``, so it is recorded as missing), hidden entries and other files are skipped. A file
    given by its path is listed whatever its extension. A path that does not exist (not even as a dangling
    link), or no image at all, raises :class:`DatasetError`. A single path may be passed instead of a list.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows: dict[str, _Row] = {}
    scan = _Scan()
    given = list(dict.fromkeys(Path(p) for p in paths))  # "photos/" twice is walked (and counted) once
    if not given:
        raise DatasetError("no files or folders given")
    for path in given:
        if path.is_dir():
            for full in _walk_images(path, scan):
                below = Path(full).relative_to(path)
                label = below.parts[0] if len(below.parts) > 1 else (_absolute(path).name or ".")
                image_id = (path / below).as_posix()
                rows.setdefault(image_id, _Row(image_id, str(_absolute(full)), label))
        elif os.path.lexists(path):
            image_id = path.as_posix()
            rows.setdefault(
                image_id, _Row(image_id, str(_absolute(path)), _absolute(path).parent.name or ".")
            )
        else:
            raise DatasetError(f"no such file or folder: {os.fsdecode(path)!r}")
    if not rows:
        raise DatasetError(f"no image files in {', '.join(repr(os.fsdecode(p)) for p in given)}")
    return _make_table(rows.values(), "paths", scan.notes("the given folders"))


def open_dataset(kind: DatasetKind, root: str | os.PathLike[str], *, listed_only: bool = False) -> ImageTable:
    """Read a dataset of the given kind: ``folder`` tree, ``mit67`` root, ``manifest`` CSV file, or ``imagenet-val``
    (the ILSVRC2012 validation folder, :func:`saliqa.data.imagenet.read_imagenet_val`)."""
    if kind == "mit67":
        return read_mit67(root, listed_only=listed_only)
    if listed_only:
        raise ConfigError(f"listed_only applies to MIT Indoor 67 only, not to kind {kind!r}.")
    if kind == "folder":
        return read_folder(root)
    if kind == "manifest":
        return read_manifest(root)
    if kind == "imagenet-val":
        from saliqa.data.imagenet import read_imagenet_val  # it builds on this module's helpers

        return read_imagenet_val(root)
    raise ConfigError(
        f"Unknown dataset kind {kind!r}; use one of 'folder', 'mit67', 'manifest', 'imagenet-val'."
    )
