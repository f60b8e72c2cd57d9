"""Labels for training PaQ-2-PiQ: pictures with their MOS, and, in FLIVE's format, three patch boxes with theirs.

Two formats, told apart by their columns (names are matched case-insensitively):

- **FLIVE** (the official ``labels<=640_padded.csv``, ``labels640.csv``...): ``name_image``, ``mos_image`` and, for
  each of ``_image``, ``_patch_1``, ``_patch_2``, ``_patch_3``, the box ``left_``, ``top_``, ``right_``,
  ``bottom_`` in pixels of the picture file (``right = left + width``: the right and bottom edges are exclusive,
  as ``width_patch_k = right - left`` in every row of the official files), with ``mos_patch_1..3``. Optional:
  ``width_image``, ``height_image`` (checked against the file) and ``is_valid`` (the official train/validation
  split). The ``_image`` box is the picture's own box: ``0, 0, W, H`` for a plain picture; a file may be larger
  than it (the official ``<=640_padded`` files: pictures padded to 640 x 640, boxes shifted), never smaller.
- **picture-only** (CLIVE's ``image,mos[,std]``, KonIQ's ``image_name,MOS``, a manifest ``path,mos``): a name
  column (``path``, ``name_image``, ``image``, ``image_name`` or ``name``) and a MOS column (``mos`` or
  ``mos_image``), optional ``is_valid``. Only the picture score is trained.

MOS scale: the official model predicts on FLIVE's scale, which is its raters' 0-100 slider (CLIVE's too). A set
rated on another scale declares its ends, ``scale=(lo, hi)`` (KonIQ: ``(1, 5)``), and its MOS is mapped linearly
onto 0-100: ``100 (mos - lo) / (hi - lo)``. A set whose MOS all lie in 0-10 under the default 0-100 scale is
refused, since it is almost surely on a 1-5 (or 0-10) scale that was not declared.

Bad rows do not stop a training: each is left out with its line number and reason (no such file, a MOS or box
that is not a number, an empty box, a box outside the picture file, an image box whose size is not the labelled
``width_image x height_image``, a duplicate), and the caller writes them out. A file that cannot be read as labels at all (missing
columns, nothing usable) raises :class:`~saliqa.errors.DatasetError` saying what to fix.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
from PIL import Image, UnidentifiedImageError

from saliqa.errors import DatasetError
from saliqa.io.hashing import sha256_file

BOXES = ("image", "patch_1", "patch_2", "patch_3")
"""FLIVE's boxes in the order the model's outputs are trained: the picture, then its three patches."""
EDGES = ("left", "top", "right", "bottom")
FLIVE_COLUMNS: tuple[str, ...] = (
    "name_image",
    "mos_image",
    *(f"mos_{box}" for box in BOXES[1:]),
    *(f"{edge}_{box}" for box in BOXES for edge in EDGES),
)
"""The columns a FLIVE-format label file must have."""
NAME_COLUMNS = ("path", "name_image", "image", "image_name", "name")
MOS_COLUMNS = ("mos", "mos_image")
FLIVE_SCALE = (0.0, 100.0)
"""FLIVE's rating scale (a 0-100 slider): every MOS is mapped onto it."""
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LabelledPicture:
    """One usable picture: its file, MOS (on 0-100) and, for FLIVE labels, its boxes with their MOS."""

    image_id: str
    """The name as the label file writes it (unique)."""
    path: str
    mos: float
    size: tuple[int, int]
    """(width, height) of the picture as decoded (EXIF orientation applied)."""
    boxes: tuple[Box, ...] = ()
    """``(left, top, right, bottom)`` in pixels: the picture box, then the patches (empty: picture-only)."""
    box_mos: tuple[float, ...] = ()
    is_valid: bool | None = None
    """The label file's own split (``is_valid``), when it has one."""


@dataclass(frozen=True)
class QualityLabels:
    """A label file read: the usable pictures, the left-out rows and what identifies the file."""

    path: Path
    sha256: str
    images_root: Path
    kind: Literal["flive", "picture"]
    pictures: tuple[LabelledPicture, ...]
    rejected: pd.DataFrame = field(repr=False)
    """``line``, ``image_id``, ``reason`` of every row left out."""
    scale: tuple[float, float] = FLIVE_SCALE

    @property
    def n_boxes(self) -> int:
        """Boxes per picture the model is trained on (4 for FLIVE, 1 for picture-only)."""
        return len(BOXES) if self.kind == "flive" else 1

    def summary(self) -> str:
        text = f"{self.path}: {len(self.pictures)} pictures ({self.kind} labels"
        text += (
            f", MOS scale {self.scale[0]:g}-{self.scale[1]:g} mapped to 0-100)"
            if self.scale != FLIVE_SCALE
            else ")"
        )
        return text + (f", {len(self.rejected)} rows left out" if len(self.rejected) else "")


class _Row(Exception):
    """A row that cannot be used; the message is its recorded reason."""


def _number(cells: dict[str, str], column: str) -> float:
    text = cells.get(column, "").strip()
    try:
        value = float(text)
    except ValueError:
        raise _Row(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _Row(f"{column} {text!r} is not a finite number")
    return value


def _flag(cells: dict[str, str], column: str) -> bool | None:
    if column not in cells:
        return None
    text = cells[column].strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise _Row(f"{column} {cells[column]!r} is neither true nor false")


def picture_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file as decoded, from its header only (EXIF orientation applied)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            try:
                orientation = img.getexif().get(0x0112)
            except Exception:  # noqa: BLE001 - unparseable EXIF counts as upright, as saliqa.images does
                orientation = None
    except FileNotFoundError:
        raise _Row("file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise _Row("not an image") from None
    return (height, width) if orientation in _ROTATED else (width, height)


def _check_box(name: str, box: Box, size: tuple[int, int]) -> None:
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        raise _Row(f"empty box {name} ({left:g}, {top:g}, {right:g}, {bottom:g})")
    width, height = size
    if left < 0 or top < 0 or right > width or bottom > height:
        raise _Row(
            f"box {name} ({left:g}, {top:g}, {right:g}, {bottom:g}) lies outside the {width}x{height} picture"
        )


def _columns(frame: pd.DataFrame, path: Path) -> tuple[Literal["flive", "picture"], str, str]:
    """The format and the name and MOS columns, or a DatasetError saying which columns are wanted."""
    header = list(frame.columns)
    if any(c.startswith(("mos_patch_", "left_patch_")) for c in header):
        missing = [c for c in FLIVE_COLUMNS if c not in header]
        if missing:
            raise DatasetError(
                f"{path} looks like FLIVE patch labels but lacks the column(s) {', '.join(missing)}; a FLIVE "
                f"label file has name_image, mos_image, mos_patch_1..3 and left/top/right/bottom for _image and "
                f"_patch_1..3 (as the official labels<=640_padded.csv)"
            )
        return "flive", "name_image", "mos_image"
    name = next((c for c in NAME_COLUMNS if c in header), None)
    mos = next((c for c in MOS_COLUMNS if c in header), None)
    if name is None or mos is None:
        raise DatasetError(
            f"{path} has the columns {', '.join(header) or 'none'}; a label file needs a picture name column "
            f"({' or '.join(NAME_COLUMNS)}) and a MOS column ({' or '.join(MOS_COLUMNS)}), or FLIVE's patch "
            f"columns ({', '.join(FLIVE_COLUMNS[:4])}, ...)"
        )
    return "picture", name, mos


def _check_scale(scale: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in scale)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise DatasetError(f"scale must be two finite numbers lo < hi (the MOS scale's ends), got {scale!r}")
    return lo, hi


def read_quality_labels(
    labels: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    *,
    scale: tuple[float, float] = FLIVE_SCALE,
) -> QualityLabels:
    """Read a FLIVE-format or picture-only label file (module docstring); pictures live under ``images_root``
    (default: the label file's folder). Each listed file's header is read to check its size and boxes."""
    path = Path(labels).expanduser().resolve()
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist or is not a file")
    lo, hi = _check_scale(scale)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DatasetError(f"{path} cannot be read as a UTF-8 CSV label file ({error})") from error
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    kind, name_column, mos_column = _columns(frame, path)
    root = Path(images_root).expanduser().resolve() if images_root is not None else path.parent
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist; --images must be the folder the names are under"
        )
    pictures: list[LabelledPicture] = []
    rejected: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    for line, cells in enumerate(frame.to_dict("records"), start=2):
        image_id = str(cells.get(name_column, "")).strip()
        try:
            pictures.append(_picture(cells, image_id, root, kind, mos_column, (lo, hi), seen.get(image_id)))
            seen[image_id] = line
        except _Row as reason:
            rejected.append({"line": line, "image_id": image_id, "reason": str(reason)})
    if not pictures:
        first = f"; first problem: line {rejected[0]['line']}: {rejected[0]['reason']}" if rejected else ""
        raise DatasetError(f"{path} lists no usable picture under {root}{first}")
    mos = [p.mos for p in pictures]
    if (lo, hi) == FLIVE_SCALE and max(mos) <= 10.0:
        raise DatasetError(
            f"every MOS in {path} lies in [{min(mos):g}, {max(mos):g}], which looks like a 1-5 (or 0-10) rating "
            f"scale, not FLIVE's 0-100; declare the scale's ends (KonIQ-10k: scale=(1, 5), --scale 1 5) so it is "
            f"mapped onto 0-100"
        )
    table = pd.DataFrame(rejected, columns=["line", "image_id", "reason"])
    return QualityLabels(path, sha256_file(path), root, kind, tuple(pictures), table, (lo, hi))


def _picture(
    cells: dict[str, str],
    image_id: str,
    root: Path,
    kind: str,
    mos_column: str,
    scale: tuple[float, float],
    duplicate_of: int | None,
) -> LabelledPicture:
    if not image_id:
        raise _Row("empty picture name")
    if duplicate_of is not None:
        raise _Row(f"listed again (first on line {duplicate_of})")
    lo, hi = scale
    raw = _number(cells, mos_column)
    if not lo <= raw <= hi:
        raise _Row(f"{mos_column} {raw:g} outside the declared scale {lo:g}-{hi:g}")
    is_valid = _flag(cells, "is_valid")
    file = root / image_id
    size = picture_size(str(file))
    labelled = [cells.get(c, "").strip() for c in ("width_image", "height_image")]
    want = (_number(cells, "width_image"), _number(cells, "height_image")) if all(labelled) else None
    to_scale = 100.0 / (hi - lo)
    mos = (raw - lo) * to_scale
    if kind != "flive":
        if want is not None and want != size:
            raise _Row(f"the file is {size[0]}x{size[1]}, the labels say {want[0]:g}x{want[1]:g}")
        return LabelledPicture(image_id, str(file), mos, size, is_valid=is_valid)
    boxes: list[Box] = []
    for box in BOXES:
        edges = tuple(_number(cells, f"{edge}_{box}") for edge in EDGES)
        _check_box(box, edges, size)  # type: ignore[arg-type]
        boxes.append(edges)  # type: ignore[arg-type]
    left, top, right, bottom = boxes[0]
    if want is not None and (right - left, bottom - top) != want:
        raise _Row(
            f"the image box is {right - left:g}x{bottom - top:g}, width_image and height_image say "
            f"{want[0]:g}x{want[1]:g}"
        )
    patch_mos = []
    for box in BOXES[1:]:
        value = _number(cells, f"mos_{box}")
        if not lo <= value <= hi:
            raise _Row(f"mos_{box} {value:g} outside the declared scale {lo:g}-{hi:g}")
        patch_mos.append((value - lo) * to_scale)
    return LabelledPicture(image_id, str(file), mos, size, tuple(boxes), (mos, *patch_mos), is_valid)
