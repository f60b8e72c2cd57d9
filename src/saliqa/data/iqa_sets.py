"""Image quality sets: pictures with human mean opinion scores (MOS), for validating a quality judge.

Three sources, one :class:`IqaSet`:

- ``clive``: the LIVE In the Wild Image Quality Challenge (Ghadiyaram & Bovik 2016), ``Images/`` and its MOS
  either as a CSV (``image,mos[,std]``, e.g. ``clive_mos.csv``) or as the release's own
  ``Data/AllImages_release.mat`` + ``Data/AllMOS_release.mat`` (+ ``AllStdDev_release.mat``); MOS 0-100. Its
  licence lets no one redistribute it, so saliqa never downloads it: it reads ``--root`` or the folder
  ``clive`` of the data cache, and says where to get it when neither is there.
- ``koniq10k``: KonIQ-10k (Hosu et al. 2020) as the catalog downloads it (``saliqa data download koniq10k``):
  ``1024x768/*.jpg`` and ``koniq10k_scores_and_distributions.csv`` (``image_name``, ``MOS`` on the 1-5 scale of
  its raters, ``SD``; ``MOS_zscore`` is used only when ``MOS`` is absent).
- a manifest: a CSV with ``path,mos[,std]``, paths relative to the CSV's folder.

Like the other readers it lists files and does not decode them: a listed picture that is absent is a row with
``present=False`` (recorded as missing later), never a crash. A set that cannot be read at all (no MOS file, a
MOS that is not a number, a picture listed twice) raises :class:`~saliqa.errors.DatasetError` saying what to fix.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from saliqa.data.readers import ImageTable, _absolute, _make_table, _normalise_relpath, _Row
from saliqa.errors import ConfigError, DatasetError

__all__ = [
    "CLIVE_HOMEPAGE",
    "IQA_SET_COLUMNS",
    "KONIQ_SCORES",
    "IqaSet",
    "open_iqa_set",
    "read_clive",
    "read_koniq10k",
    "read_mos_manifest",
]

CLIVE_HOMEPAGE = "https://live.ece.utexas.edu/research/ChallengeDB/index.html"
KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
KONIQ_PICTURES = "1024x768"
_CLIVE_MAT = ("AllImages_release.mat", "AllMOS_release.mat", "AllStdDev_release.mat")

IQA_SET_COLUMNS: tuple[str, ...] = ("image_id", "path", "present", "reason", "mos", "mos_std")
"""Columns of :attr:`IqaSet.frame`: the listing's (see :data:`saliqa.data.readers.COLUMNS`) and the human scores
(``mos_std`` NaN when the set gives none)."""


@dataclass(frozen=True, eq=False)
class IqaSet:
    """Pictures with their MOS: one row each, sorted by ``image_id``."""

    name: str
    """``clive``, ``koniq10k`` or the manifest's file stem: names the output folder and the plots."""
    source: str
    """What was read, e.g. ``clive:/data/clive (clive_mos.csv)``."""
    frame: pd.DataFrame
    mos_scale: str
    """The MOS's scale in words, for axis labels and the metrics table (e.g. ``0-100``)."""
    mos_files: tuple[Path, ...]
    """The files the MOS came from (their hashes go into the provenance)."""
    notes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.frame)

    def records(self) -> pd.DataFrame:
        """The listing as the per-image loop takes it (``image_id, path, label, present, reason``)."""
        frame = self.frame[["image_id", "path", "present", "reason"]].copy()
        frame.insert(2, "label", self.name)
        return frame

    def summary(self) -> str:
        missing = int((~self.frame["present"]).sum())
        text = f"{self.source}: {len(self)} pictures with MOS ({self.mos_scale})"
        return text + (f", {missing} listed but missing" if missing else "")


def _table(name: str, source: str, rows: dict[str, tuple[_Row, float, float]], **kw: object) -> IqaSet:
    """An :class:`IqaSet` from rows keyed by image id: files checked on disk, sorted, MOS joined."""
    if not rows:
        raise DatasetError(f"{source} lists no pictures; check the MOS file.")
    listing: ImageTable = _make_table((row for row, _, _ in rows.values()), source, ())
    frame = listing.frame[["image_id", "path", "present", "reason"]].copy()
    frame["mos"] = [rows[i][1] for i in frame["image_id"]]
    frame["mos_std"] = [rows[i][2] for i in frame["image_id"]]
    return IqaSet(name=name, source=source, frame=frame, **kw)  # type: ignore[arg-type]


def _number(text: str, where: str, what: str, *, required: bool) -> float:
    cell = text.strip()
    if not cell and not required:
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {what} {cell!r} is not a finite number; fix or drop the line.")
    return value


def _read_csv(path: Path, what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (lower-cased, stripped) and the non-blank lines (with their line numbers) of a UTF-8 CSV."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [c.strip().lower() for c in next(reader, [])]
            body = [
                (n, dict(zip(header, (c.strip() for c in cells), strict=False)))
                for n, cells in enumerate(reader, start=2)
                if any(c.strip() for c in cells)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{what} {path} cannot be read as a UTF-8 CSV ({exc}).") from exc
    return header, body


def _require(header: Sequence[str], needed: Sequence[str], path: Path, expected: str) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        raise DatasetError(
            f"{path} lacks the column(s) {', '.join(missing)}: its first line must be a header {expected} "
            f"(got {','.join(header) or 'nothing'})."
        )


# -- a manifest --------------------------------------------------------------------------------------------------
def read_mos_manifest(csv_path: str | os.PathLike[str]) -> IqaSet:
    """A CSV with the header ``path,mos[,std]``; relative paths are relative to the CSV's folder.

    ``image_id`` is the path as written, in POSIX form; a path listed twice is an error (ids key the tables).
    """
    path = _absolute(csv_path)
    if not path.is_file():
        raise DatasetError(
            f"MOS manifest {path} does not exist or is not a file; --data takes clive, koniq10k or the path of "
            "a CSV with the header path,mos[,std]."
        )
    header, body = _read_csv(path, "MOS manifest")
    _require(header, ("path", "mos"), path, "'path,mos' or 'path,mos,std'")
    rows: dict[str, tuple[_Row, float, float]] = {}
    for line, cells in body:
        where = f"{path} line {line}"
        image_id = _normalise_relpath(cells.get("path", ""))
        if not image_id:
            raise DatasetError(f"{where}: empty path; fill it in or drop the line.")
        if image_id in rows:
            raise DatasetError(f"{where}: duplicate path {image_id!r}; each picture must appear once.")
        mos = _number(cells.get("mos", ""), where, "MOS", required=True)
        std = _number(cells.get("std", ""), where, "std", required=False)
        full = os.path.normpath(os.path.join(path.parent, os.path.expanduser(image_id)))
        rows[image_id] = (_Row(image_id, full, path.stem), mos, std)
    return _table(path.stem, f"manifest:{path}", rows, mos_scale="as given", mos_files=(path,))


# -- CLIVE -------------------------------------------------------------------------------------------------------
def clive_missing(where: Path, problem: str) -> DatasetError:
    """The error for a CLIVE folder that is not there or not usable: where to get it, how to point saliqa at it."""
    return DatasetError(
        f"LIVE In the Wild Image Quality Challenge (CLIVE) not found: {where} {problem}. Its licence forbids "
        f"redistribution, so saliqa does not download it: request it from {CLIVE_HOMEPAGE}, unpack it, and pass "
        "its folder with --root (expected layout: Images/*.JPG and a MOS file, either a CSV with image,mos[,std] "
        "or the release's Data/AllImages_release.mat + Data/AllMOS_release.mat), or put it at "
        f"<data cache>/clive ($SALIQA_DATA_DIR, see `saliqa data list`)."
    )


def _clive_csv(root: Path) -> Path | None:
    """The MOS CSV of a CLIVE folder: ``clive_mos.csv``, else the only CSV with columns image and mos."""
    preferred = root / "clive_mos.csv"
    if preferred.is_file():
        return preferred
    found = []
    for candidate in sorted(root.glob("*.csv")):
        header, _ = _read_csv(candidate, "CLIVE MOS file")
        if "image" in header and "mos" in header:
            found.append(candidate)
    if len(found) > 1:
        raise DatasetError(
            f"{root} holds several MOS CSVs ({', '.join(p.name for p in found)}); keep one, or name it "
            "clive_mos.csv."
        )
    return found[0] if found else None


def _mat_vector(path: Path) -> list[object]:
    """The one variable of a release .mat file, flattened (cell arrays of names become strings)."""
    from scipy.io import loadmat

    try:
        data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    except Exception as exc:  # any unreadable file: one clear message
        raise DatasetError(
            f"cannot read {path} as a MATLAB file ({exc}); download the release again."
        ) from exc
    if len(data) != 1:
        raise DatasetError(f"{path} should hold one variable, holds {sorted(data)}")
    out: list[object] = []
    for value in next(iter(data.values())).ravel():
        while isinstance(value, np.ndarray):  # a cell of a cell array: a 1-element array (or an empty one)
            value = value.ravel()[0] if value.size else ""
        out.append(value)
    return out


def _clive_rows_from_mat(root: Path) -> tuple[dict[str, tuple[_Row, float, float]], list[str], list[Path]]:
    data = root / "Data"
    names_file, mos_file, std_file = (data / n for n in _CLIVE_MAT)
    names = [str(n).strip() for n in _mat_vector(names_file)]
    mos = [float(v) for v in _mat_vector(mos_file)]
    std = [float(v) for v in _mat_vector(std_file)] if std_file.is_file() else [math.nan] * len(names)
    if not (len(names) == len(mos) == len(std)):
        raise DatasetError(
            f"{data}: {len(names)} names, {len(mos)} MOS and {len(std)} std values; they must match one to one."
        )
    rows: dict[str, tuple[_Row, float, float]] = {}
    training = 0
    for name, m, s in zip(names, mos, std, strict=True):
        if not (root / "Images" / name).exists() and (root / "Images" / "trainingImages" / name).exists():
            training += 1  # the 7 pictures that trained the raters: not part of the 1,162 rated ones
            continue
        rows[name] = (_Row(name, str(root / "Images" / name), "clive"), m, s)
    notes = [f"{training} training pictures (Images/trainingImages) left out, as in published results"]
    files = [names_file, mos_file, *([std_file] if std_file.is_file() else [])]
    return rows, notes if training else [], files


def read_clive(root: str | os.PathLike[str]) -> IqaSet:
    """CLIVE from its folder: ``Images/`` and a MOS CSV or the release's ``Data/*.mat`` (module docstring)."""
    path = _absolute(root)
    if not path.is_dir():
        raise clive_missing(path, "is not a folder")
    if not (path / "Images").is_dir():
        raise clive_missing(path, "has no Images/ folder")
    mos_csv = _clive_csv(path)
    if mos_csv is not None:
        header, body = _read_csv(mos_csv, "CLIVE MOS file")
        _require(header, ("image", "mos"), mos_csv, "'image,mos' or 'image,mos,std'")
        rows = _mos_rows(body, mos_csv, ("image", "mos", "std"), path / "Images", "clive")
        notes: list[str] = []
        files = [mos_csv]
    elif all((path / "Data" / n).is_file() for n in _CLIVE_MAT[:2]):
        rows, notes, files = _clive_rows_from_mat(path)
    else:
        raise clive_missing(
            path, "has no MOS file (clive_mos.csv, or Data/AllImages_release.mat + AllMOS_release.mat)"
        )
    source = f"clive:{path} ({', '.join(f.name for f in files)})"
    return _table("clive", source, rows, mos_scale="0-100", mos_files=tuple(files), notes=tuple(notes))


def _mos_rows(
    body: list[tuple[int, dict[str, str]]],
    csv_path: Path,
    columns: tuple[str, str, str | None],
    pictures: Path,
    source: str,
) -> dict[str, tuple[_Row, float, float]]:
    """Picture name -> (row, MOS, std) from a MOS file's lines; ``columns``: name, MOS and std (None: no std).
    An empty or repeated name is an error naming the line."""
    name_column, mos_column, std_column = columns
    rows: dict[str, tuple[_Row, float, float]] = {}
    for line, cells in body:
        where = f"{csv_path} line {line}"
        name = cells.get(name_column, "")
        if not name:
            raise DatasetError(f"{where}: empty {name_column}; fill it in or drop the line.")
        if name in rows:
            raise DatasetError(f"{where}: duplicate image {name!r}; each picture must appear once.")
        mos = _number(cells.get(mos_column, ""), where, mos_column.upper(), required=True)
        std = math.nan
        if std_column is not None:
            std = _number(cells.get(std_column, ""), where, std_column.upper(), required=False)
        rows[name] = (_Row(name, str(pictures / name), source), mos, std)
    return rows


# -- KonIQ-10k ---------------------------------------------------------------------------------------------------
def read_koniq10k(root: str | os.PathLike[str]) -> IqaSet:
    """KonIQ-10k from its folder: ``1024x768/`` and ``koniq10k_scores_and_distributions.csv`` (MOS 1-5)."""
    path = _absolute(root)
    scores = path / KONIQ_SCORES
    if not scores.is_file():
        raise DatasetError(
            f"KonIQ-10k: {scores} not found; fetch the set with `saliqa data download koniq10k`, or pass --root "
            f"with the folder holding {KONIQ_SCORES} and {KONIQ_PICTURES}/."
        )
    if not (path / KONIQ_PICTURES).is_dir():
        raise DatasetError(
            f"KonIQ-10k: {path / KONIQ_PICTURES} is not a folder; the pictures (koniq10k_1024x768.zip) unpack "
            f"there: `saliqa data download koniq10k` does it."
        )
    header, body = _read_csv(scores, "KonIQ-10k scores")
    column = "mos" if "mos" in header else "mos_zscore" if "mos_zscore" in header else "mos"
    _require(header, ("image_name", column), scores, "with image_name and MOS (or MOS_zscore)")
    columns = ("image_name", column, "sd" if column == "mos" else None)
    rows = _mos_rows(body, scores, columns, path / KONIQ_PICTURES, "koniq10k")
    scale = "1-5" if column == "mos" else "MOS_zscore, ~0-100"
    return _table(
        "koniq10k", f"koniq10k:{path} ({column.upper()})", rows, mos_scale=scale, mos_files=(scores,)
    )


# -- by name -----------------------------------------------------------------------------------------------------
def open_iqa_set(data: str, root: str | os.PathLike[str] | None = None) -> IqaSet:
    """``clive``, ``koniq10k`` (from ``root``, else the data cache) or the path of a ``path,mos[,std]`` CSV."""
    if data == "clive":
        if root is not None:
            return read_clive(root)
        from saliqa.data.catalog import data_dir

        cached = data_dir() / "clive"
        if not cached.is_dir():
            raise clive_missing(cached, "does not exist (no --root was given)")
        return read_clive(cached)
    if data == "koniq10k":
        if root is not None:
            return read_koniq10k(root)
        from saliqa.data.catalog import dataset_root

        return read_koniq10k(dataset_root("koniq10k"))
    if root is not None:
        raise ConfigError(
            "--root applies to --data clive or koniq10k; a manifest's paths are relative to its own folder."
        )
    if not data.lower().endswith(".csv") and not Path(data).is_file():
        raise ConfigError(
            f"--data {data!r} is neither clive, koniq10k nor a CSV file; give one of them "
            "(a manifest has the header path,mos[,std])."
        )
    return read_mos_manifest(data)
