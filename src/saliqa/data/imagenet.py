"""ImageNet-val: the 50,000 ILSVRC2012 validation images of the 1000 ImageNet-1k classes, as an ImageTable.

Three layouts are read, whichever a download left:

- class folders named by WNID, ``ROOT/n01440764/ILSVRC2012_val_00000293.JPEG`` (what torchvision's
  ``ImageNet(split="val")`` and most preparation scripts make);
- the flat folder of ``ILSVRC2012_val_XXXXXXXX.JPEG`` with Kaggle's ``LOC_val_solution.csv``;
- the flat folder with the official devkit ``ILSVRC2012_devkit_t12`` (its validation ground truth and
  ``meta.mat``), extracted or as the ``.tar.gz`` itself, read in memory.

Ground truth is looked for in ROOT, then in its parent (and, for Kaggle's CSV, in the competition folder
above ``ILSVRC/Data/CLS-LOC/val``). Labels are WNIDs; every one must be one of the 1000 classes of
:func:`saliqa.reference_data.imagenet_classes`, whose order pretrained models' outputs follow. An image
the ground truth lists but the folder lacks is a row with ``present=False`` (counted in ``notes``), as for
MIT Indoor 67. Nothing is downloaded: ImageNet's licence needs a login, so the errors say where to get it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saliqa.data.readers import (
    IMAGE_EXTENSIONS,
    ImageTable,
    _absolute,
    _make_table,
    _plural,
    _Row,
    _Scan,
    _scan_one_class,
)
from saliqa.errors import DatasetError

__all__ = ["DEVKIT", "DEVKIT_ARCHIVE", "KAGGLE_SOLUTION", "SOURCE_SPLIT", "read_imagenet_val"]

#: The official development kit's folder (inside its archive, or extracted) and archive names.
DEVKIT = "ILSVRC2012_devkit_t12"
DEVKIT_ARCHIVE = f"{DEVKIT}.tar.gz"
#: Kaggle's ground truth (imagenet-object-localization-challenge): ``ImageId,PredictionString``.
KAGGLE_SOLUTION = "LOC_val_solution.csv"
#: ``source_split`` of every row: ILSVRC2012's own name for this set.
SOURCE_SPLIT = "val"

_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"  # one ILSVRC2012_ID per line, image 1 first
_META = "data/meta.mat"  # the synsets struct: ILSVRC2012_ID, WNID, words, ..., num_children
_KAGGLE_TAIL = ("ILSVRC", "Data", "CLS-LOC", "val")  # where Kaggle's zip puts the images, below its CSV
_VAL_STEM = re.compile(r"ILSVRC2012_val_(\d{8})")
_SOURCE = 'set [data] source = "imagenet-val" and root = "<the folder of the validation images>"'
_GET_IT = (
    "saliqa does not download ImageNet (its licence needs a login): get the ILSVRC2012 validation images "
    "(ILSVRC2012_img_val.tar) and the development kit t12 (ILSVRC2012_devkit_t12.tar.gz) from "
    "https://image-net.org/download-images.php, or Kaggle's imagenet-object-localization-challenge "
    f"(ILSVRC/Data/CLS-LOC/val/ and {KAGGLE_SOLUTION}); then {_SOURCE}."
)


@dataclass
class _RootListing:
    """What lies directly in ROOT: flat validation images by stem, sub-folders, and what was skipped."""

    flat: dict[str, str] = field(default_factory=dict)  # "ILSVRC2012_val_00000001" -> its file name
    folders: list[str] = field(default_factory=list)
    hidden: int = 0
    other_files: int = 0
    repeated_stems: int = 0


def _list_root(root: Path) -> _RootListing:
    listing = _RootListing()
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(
            f"ImageNet-val root {root} cannot be listed ({exc}); check its permissions."
        ) from exc
    for entry in entries:
        stem, ext = os.path.splitext(entry.name)
        if entry.name.startswith("."):
            listing.hidden += 1
        elif entry.is_dir():
            if entry.name != DEVKIT:
                listing.folders.append(entry.name)
        elif _VAL_STEM.fullmatch(stem) and ext.lower() in IMAGE_EXTENSIONS:  # dangling links included
            if stem in listing.flat:
                listing.repeated_stems += 1  # a.JPEG and a.png: the first name in sorted order is used
            else:
                listing.flat[stem] = entry.name
        elif entry.name not in (DEVKIT_ARCHIVE, KAGGLE_SOLUTION):
            listing.other_files += 1
    return listing


def _known_wnids() -> frozenset[str]:
    from saliqa.reference_data import imagenet_classes

    return frozenset(imagenet_classes()["wnid"])


def _check_label(wnid: str, known: frozenset[str], where: str) -> str:
    if wnid not in known:
        raise DatasetError(
            f"{where}: label {wnid!r} is not one of the 1000 ImageNet-1k classes "
            "(saliqa.reference_data.imagenet_classes() lists their WNIDs); the file is damaged or not "
            'ImageNet-1k\'s: get it again, or use source = "folder" / "manifest" for other classes.'
        )
    return wnid


def read_imagenet_val(root: str | os.PathLike[str]) -> ImageTable:
    """Read ImageNet-val from its class folders or its flat folder plus ground truth (see the module).

    ``image_id`` is the path below ROOT (``n01440764/ILSVRC2012_val_00000293.JPEG``, or the file name in a
    flat folder), ``label`` the WNID, ``source_split`` "val". Raises :class:`DatasetError` when ROOT holds
    neither layout, when a flat folder has no ground truth, or when a label is not an ImageNet-1k WNID.
    """
    path = _absolute(root)
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise DatasetError(f"ImageNet-val root {path} {state}. {_GET_IT}")
    listing = _list_root(path)
    known = _known_wnids()
    wnid_folders = [name for name in listing.folders if name in known]
    if listing.flat and wnid_folders:
        raise DatasetError(
            f"ImageNet-val root {path} holds both ILSVRC2012_val_* images and WNID class folders "
            f"({', '.join(wnid_folders[:3])}...): a half-sorted folder; keep one layout, either all images in "
            "ROOT/<wnid>/ or all directly in ROOT with the ground truth."
        )
    if listing.flat:
        return _read_flat(path, listing, known)
    if listing.folders:
        return _read_class_folders(path, listing, known)
    raise DatasetError(
        f"ImageNet-val root {path} has no ILSVRC2012_val_XXXXXXXX.JPEG images and no class folders; expected "
        f"ROOT/<wnid>/<image> or the flat folder of validation images with its ground truth. {_GET_IT}"
    )


def _read_class_folders(root: Path, listing: _RootListing, known: frozenset[str]) -> ImageTable:
    """Layout (a): ROOT/<wnid>/<image>; every folder must be an ImageNet-1k WNID."""
    unknown = [name for name in listing.folders if name not in known]
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        hint = f" (if {root / 'val'} holds the class folders, point root at it)" if "val" in unknown else ""
        raise DatasetError(
            f"ImageNet-val root {root} has {_plural(len(unknown), 'folder')} not named by an ImageNet-1k WNID: "
            f"{shown}{hint}; class folders must be the 1000 WNIDs (n01440764 ... n15075141, listed by "
            'saliqa.reference_data.imagenet_classes()). Move the others out, or use source = "folder".'
        )
    scan = _Scan(hidden=listing.hidden, loose_files=listing.other_files + len(listing.flat))
    rows: list[_Row] = []
    for name in listing.folders:
        before = len(rows)
        rows.extend(_scan_one_class(root, root / name, scan))
        if len(rows) == before:
            scan.empty_classes += 1
    for row in rows:
        row.source_split = SOURCE_SPLIT
    notes = [f"labels from the class folders ({_plural(len(listing.folders), 'WNID')})"]
    if len(listing.folders) < len(known):
        notes.append(
            f"{len(known) - len(listing.folders)} of the {len(known)} ImageNet-1k classes have no folder"
        )
    notes.extend(scan.notes("the ImageNet-val root"))
    return _make_table(rows, f"imagenet-val:{root}", notes)


def _read_flat(root: Path, listing: _RootListing, known: frozenset[str]) -> ImageTable:
    """Layouts (b) and (c): ROOT/ILSVRC2012_val_XXXXXXXX.JPEG labelled by the first ground truth found."""
    labels, where = _find_ground_truth(root, len(listing.flat), known)
    rows = []
    for stem, wnid in labels.items():
        name = listing.flat.get(stem, f"{stem}.JPEG")
        rows.append(_Row(image_id=name, path=str(root / name), label=wnid, source_split=SOURCE_SPLIT))
    notes = [f"labels from {where}", f"{len(labels)} images listed in the ground truth"]
    missing = sum(not os.path.isfile(row.path) for row in rows)
    if missing:
        notes.append(f"{missing} of the {len(labels)} listed images are missing from {root}")
    unlabelled = sum(stem not in labels for stem in listing.flat)
    if unlabelled:
        notes.append(f"{_plural(unlabelled, 'image')} in {root} not in the ground truth left out (no label)")
    if listing.repeated_stems:
        notes.append(f"{_plural(listing.repeated_stems, 'image')} with the same number as another ignored")
    if listing.folders:
        notes.append(f"{_plural(len(listing.folders), 'folder')} in the ImageNet-val root ignored")
    if listing.other_files:
        notes.append(f"{_plural(listing.other_files, 'other file')} in the ImageNet-val root ignored")
    if listing.hidden:
        notes.append(f"{_plural(listing.hidden, 'hidden file or folder', 'hidden files or folders')} skipped")
    return _make_table(rows, f"imagenet-val:{root}", notes)


def _search_folders(root: Path) -> list[Path]:
    """ROOT and its parent; Kaggle's competition folder too when ROOT is its ILSVRC/Data/CLS-LOC/val."""
    folders = [root, root.parent]
    if root.parts[-len(_KAGGLE_TAIL) :] == _KAGGLE_TAIL:
        folders.append(root.parents[len(_KAGGLE_TAIL) - 1])
    return list(dict.fromkeys(folders))


def _find_ground_truth(root: Path, n_images: int, known: frozenset[str]) -> tuple[dict[str, str], str]:
    """WNID by image stem from the first ground truth found near ROOT, and the file it came from."""
    folders = _search_folders(root)
    for folder in folders:
        devkit = folder / DEVKIT
        gt, meta = devkit / _GROUND_TRUTH, devkit / _META
        if gt.is_file() or meta.is_file():
            if not (gt.is_file() and meta.is_file()):
                raise DatasetError(
                    f"{devkit} lacks {meta if gt.is_file() else gt}: the devkit was extracted in part; extract "
                    f"{DEVKIT_ARCHIVE} again (or delete the folder and put the archive itself there)."
                )
            return _devkit_labels(gt.read_bytes(), str(gt), meta.read_bytes(), str(meta), known), str(gt)
        archive = folder / DEVKIT_ARCHIVE
        if archive.is_file():
            return _archive_labels(archive, known), str(archive)
        solution = folder / KAGGLE_SOLUTION
        if solution.is_file():
            return _kaggle_labels(solution, known), str(solution)
    places = " and ".join(str(f) for f in folders)
    raise DatasetError(
        f"ImageNet-val root {root} holds {_plural(n_images, 'ILSVRC2012_val image')} but no ground truth: "
        f"saliqa looked for {DEVKIT}/{_GROUND_TRUTH} with {DEVKIT}/{_META} (the extracted devkit), "
        f"{DEVKIT_ARCHIVE} (the devkit archive, read without extracting it) and {KAGGLE_SOLUTION} (Kaggle's) "
        f"in {places}. Put one of them there, or sort the images into WNID class folders ROOT/<wnid>/. "
        f"{_GET_IT}"
    )


def _archive_labels(archive: Path, known: frozenset[str]) -> dict[str, str]:
    """Layout (c) from the devkit archive itself: its two files read in memory, nothing written to disk."""
    wanted = {_GROUND_TRUTH: b"", _META: b""}
    names: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                key = next((k for k in wanted if member.name == k or member.name.endswith("/" + k)), None)
                if key is None or key in names or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    wanted[key], names[key] = handle.read(), f"{archive}:{member.name}"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{archive} cannot be read as a .tar.gz ({exc}); it is damaged or incomplete: download it again."
        ) from exc
    absent = [f"{DEVKIT}/{k}" for k in wanted if k not in names]
    if absent:
        raise DatasetError(
            f"{archive} has no {' nor '.join(absent)}: it is not the ILSVRC2012 devkit t12; download "
            f"{DEVKIT_ARCHIVE} again from https://image-net.org/download-images.php."
        )
    return _devkit_labels(wanted[_GROUND_TRUTH], names[_GROUND_TRUTH], wanted[_META], names[_META], known)


def _leaf_wnids(meta: bytes, where: str) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of meta.mat's leaf synsets (num_children == 0): the 1000 classes."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True).get("synsets")
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, ... on a damaged file
        raise DatasetError(f"{where} cannot be read as a MATLAB file ({exc}); get the devkit again.") from exc
    fields = ("ILSVRC2012_ID", "WNID", "num_children")
    names = getattr(getattr(synsets, "dtype", None), "names", None) or ()
    if any(f not in names for f in fields):
        raise DatasetError(
            f"{where} has no 'synsets' struct with the fields {', '.join(fields)}: it is not the ILSVRC2012 "
            "devkit's meta.mat; get the devkit t12 again."
        )
    synsets = np.atleast_1d(synsets)
    try:
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"{where}: a synset has a malformed ILSVRC2012_ID or num_children ({exc})."
        ) from exc


def _devkit_labels(
    ground_truth: bytes, gt_where: str, meta: bytes, meta_where: str, known: frozenset[str]
) -> dict[str, str]:
    """Line n of the ground truth is image n's ILSVRC2012_ID, mapped to its WNID by meta.mat."""
    leaves = _leaf_wnids(meta, meta_where)
    lines = ground_truth.decode("ascii", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    labels: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        where = f"{gt_where} line {number}"
        try:
            class_id = int(line.strip())
        except ValueError:
            raise DatasetError(
                f"{where}: {line.strip()!r} is not an ILSVRC2012_ID (one integer per line, line n for image "
                "n); the file is damaged: get the devkit again."
            ) from None
        if class_id not in leaves:
            raise DatasetError(
                f"{where}: ILSVRC2012_ID {class_id} is not a leaf class (num_children == 0) of {meta_where}; "
                "the devkit is damaged or mixed with another year's: get the devkit t12 again."
            )
        labels[f"ILSVRC2012_val_{number:08d}"] = _check_label(leaves[class_id], known, where)
    return labels


def _kaggle_labels(solution: Path, known: frozenset[str]) -> dict[str, str]:
    """Kaggle's LOC_val_solution.csv: ImageId, and the WNID as the first token of PredictionString."""
    try:
        with solution.open(newline="", encoding="utf-8-sig") as handle:
            records = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{solution} cannot be read as UTF-8 CSV ({exc}); download it again.") from exc
    header = [cell.strip() for cell in records[0]] if records else []
    if "ImageId" not in header or "PredictionString" not in header:
        raise DatasetError(
            f"{solution} lacks the columns ImageId and PredictionString (header {','.join(header) or 'empty'}); "
            "it is not Kaggle's LOC_val_solution.csv: download it again."
        )
    i_id, i_pred = header.index("ImageId"), header.index("PredictionString")
    labels: dict[str, str] = {}
    for number, record in _numbered(records[1:], start=2):
        where = f"{solution} line {number}"
        cells = [c.strip() for c in record] + [""] * (len(header) - len(record))
        stem, tokens = os.path.splitext(cells[i_id])[0], cells[i_pred].split()
        if not _VAL_STEM.fullmatch(stem) or not tokens:
            raise DatasetError(
                f"{where}: expected an ImageId ILSVRC2012_val_XXXXXXXX and a PredictionString starting with "
                f"its WNID, got {cells[i_id]!r} and {cells[i_pred]!r}; the file is damaged: download it again."
            )
        if stem in labels:
            raise DatasetError(f"{where}: {stem} is listed twice; the file is damaged: download it again.")
        labels[stem] = _check_label(tokens[0], known, where)
    return labels


def _numbered(records: Iterable[list[str]], start: int) -> Iterable[tuple[int, list[str]]]:
    """Non-blank CSV records with their line numbers."""
    return ((n, r) for n, r in enumerate(records, start=start) if any(c.strip() for c in r))
