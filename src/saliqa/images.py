"""Decode any image file to RGB uint8, or record why it cannot be used.

Every image enters saliqa through :func:`decode_image`, so that one rule decides what
pixels the quality models and the classifiers see, and every unusable file ends as an
:class:`~saliqa.errors.ImageRejected` whose short ``reason`` goes into the result tables.

The decoding rule
-----------------
1. The file must exist ("file not found") and be non-empty ("empty file"). Pillow must
   recognise it ("not an image").
2. The pixel count is read from the header, before any pixel is decoded. Pillow's own
   decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is replaced by
   ``DecodePolicy.max_pixels``: it is lifted, under a lock and restored at once, only while
   the header is read and, for images above Pillow's limit that saliqa accepts, while their
   pixels are decoded. It is never changed for the rest of the process.
3. More than ``max_pixels`` pixels: with ``oversize="reject"`` -> "too large (N MP > limit
   M MP)" without decoding anything; with ``oversize="downscale"`` the image is decoded at
   reduced scale where the format allows it (JPEG ``draft``), then resized with antialiased
   LANCZOS so that w*h <= max_pixels with the aspect ratio kept (each side rounded down);
   note "downscaled from WxH". Other formats are first decoded at full size.
4. Pixels are decoded (first frame of multi-frame files such as GIF or TIFF); a decoding
   failure (OSError, SyntaxError, ValueError, EOFError, ...) -> "truncated or corrupt". So is a PNG
   whose image data ends before its last row: Pillow reports a cut inside a row or inside the
   compressed stream, but when the stream ends cleanly after fewer rows than the header claims it
   fills the rest with black and reports nothing. A non-zero byte in the decoded last row proves the
   data reached it; otherwise (a black last row, an interlaced file) the image data is inflated again
   and its length compared with what the header needs (:func:`saliqa.pngdata.rows_missing`).
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` is neither relied on nor changed (if some other code
   sets it, Pillow will hand back partially decoded truncated files).
5. EXIF orientation is applied (``PIL.ImageOps.exif_transpose``); ``original_size`` is the
   (W, H) of the file after orientation. Unparseable EXIF counts as upright.
6. A side of the result shorter than ``min_side`` -> "too small (WxH, min side N)".
7. Modes are mapped to RGB uint8:

   - RGB: as is.
   - L, 1: grey replicated to the three channels (1-bit gives 0 or 255).
   - LA, RGBA, PA, RGBa, and P with a transparency entry: composited over white with
     uint8 arithmetic, ``out = round(rgb*a/255 + 255*(1 - a/255))`` (never a tie, so the
     rounding is exact); a fully opaque pixel is left unchanged bit for bit (the note
     "alpha composited on white" appears only when some pixel is not opaque).
   - P without transparency: palette lookup.
   - CMYK: Pillow's ``convert("RGB")``, which is a naive formula without ICC colour
     management.
   - I;16, I;16B, I;16L: ``round(v/257)``, grey replicated. I (32-bit) is treated as 16-bit
     data: clipped to 0..65535, then the same.
   - 16-bit RGB, RGBA and grey+alpha PNG (which Pillow reads as 8-bit by dropping each sample's low
     byte): the samples are read whole, as stored (Pillow's PNG decoder run once more per byte of a
     sample; an sBIT chunk does not rescale them, an RGB colour key is ignored as below), and scaled the
     same way, ``round(v/257)``; with alpha, composited on white at full precision,
     ``round((c*a + 65535*(65535 - a)) / (65535*257))`` in integers (never a tie), so an opaque pixel is
     exactly ``round(c/257)``. Note "16-bit scaled to 8-bit".
   - F: NaN -> 0, clipped to [0, 1], ``round(255*v)`` (round half to even), grey replicated.
   - YCbCr, LAB, HSV and any other mode: Pillow's ``convert("RGB")``.

   Colour-key transparency of L and RGB images (PNG tRNS) is ignored: such pixels keep
   their stored colour.
8. The result is a C-contiguous, writeable (H, W, 3) uint8 array; ``note`` says in a few
   words what was done beyond plain decoding (several notes are joined by "; ").

Reject reasons (stable, asserted in tests): "file not found", "empty file", "not an image",
"truncated or corrupt", "too small (WxH, min side N)", "too large (N MP > limit M MP)",
and as a last resort "unreadable: <ExceptionName>" (e.g. a directory, no permission, out
of memory, a mode Pillow cannot convert).
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from saliqa import pngdata
from saliqa.errors import ImageRejected

__all__ = [
    "DecodePolicy",
    "DecodedImage",
    "decode_image",
    "read_image",
    "reject_status",
    "to_batch",
    "to_tensor",
]

# Pillow's pixel limit is a module global; whenever saliqa lifts it, it holds this lock so that
# two saliqa threads never save/restore it out of order.
_PIL_LIMIT_LOCK = threading.Lock()

# Errors Pillow raises for a damaged file while reading its header or its pixels.
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
)

# EXIF orientations that swap width and height.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

_ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class DecodePolicy:
    """Limits applied to every decoded file, so that one policy governs a whole run.

    ``max_pixels`` guards memory and time (decompression bombs); ``oversize`` says whether
    a larger image is rejected or downscaled; ``min_side`` drops thumbnails and icons that
    no quality model can judge.
    """

    max_pixels: int = 150_000_000
    oversize: Literal["reject", "downscale"] = "reject"
    min_side: int = 32

    def __post_init__(self) -> None:
        for name in ("max_pixels", "min_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecodePolicy.{name} must be a positive integer, got {value!r}")
        if self.oversize not in ("reject", "downscale"):
            raise ValueError(f"DecodePolicy.oversize must be 'reject' or 'downscale', got {self.oversize!r}")
        if self.max_pixels < self.min_side * self.min_side:
            raise ValueError(
                f"DecodePolicy.max_pixels={self.max_pixels} is below min_side**2="
                f"{self.min_side * self.min_side}: no image could pass; raise max_pixels or lower min_side"
            )


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels plus what the tables need to know about how they were obtained."""

    array: np.ndarray  # (height, width, 3) uint8, C-contiguous
    width: int  # of ``array``
    height: int  # of ``array``
    original_size: tuple[int, int]  # (W, H) in the file, after EXIF orientation
    note: str | None = None  # what was done beyond plain decoding, or None

    def __post_init__(self) -> None:
        a = self.array
        if a.dtype != np.uint8 or a.shape != (self.height, self.width, 3):
            raise ValueError(
                f"DecodedImage.array must be ({self.height}, {self.width}, 3) uint8, got {a.shape} {a.dtype}"
            )


@contextlib.contextmanager
def _pil_pixel_limit_lifted() -> Iterator[None]:
    """Switch Pillow's bomb check off for the enclosed block; saliqa's max_pixels applies instead."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _exceeds_pil_limit(size: tuple[int, int]) -> bool:
    """True when Pillow would warn or raise about this size while decoding."""
    with _PIL_LIMIT_LOCK:  # another saliqa thread may have lifted it for a moment
        limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and size[0] * size[1] > limit


def _megapixels(pixels: int, limit: int) -> tuple[str, str]:
    """Both counts in MP, with just enough digits to tell them apart."""
    for digits in range(3, 12):
        a, b = f"{pixels / 1e6:.{digits}g}", f"{limit / 1e6:.{digits}g}"
        if a != b:
            return a, b
    return str(pixels / 1e6), str(limit / 1e6)


def _too_small(width: int, height: int, min_side: int) -> str:
    return f"too small ({width}x{height}, min side {min_side})"


def _fit_within(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio (sides rounded down) and w*h <= max_pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w = max(1, int(width * scale))
    h = max(1, int(height * scale))
    while w * h > max_pixels:  # guard against floating-point rounding up
        if w * height >= h * width:
            w -= 1
        else:
            h -= 1
    return w, h


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8 of a loaded image; unparseable EXIF counts as upright (1)."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - metadata only: the pixels are already decoded and usable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """round(rgb*a/255 + 255*(1 - a/255)) in integers; ties cannot occur because 255 is odd."""
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    numerator = rgb * alpha + 255 * (255 - alpha)
    return ((numerator + 127) // 255).astype(np.uint8)


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """round(v/257) for v in 0..65535; ties cannot occur because 257 is odd."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v + 128) // 257).astype(np.uint8)


def _sixteen_bit_to_rgb(samples: np.ndarray) -> tuple[np.ndarray, str]:
    """16-bit (H, W, planes) samples of grey+alpha, RGB or RGBA to RGB uint8 (the decoding rule, item 7)."""
    planes = samples.shape[2]
    if planes == 3:
        return _sixteen_to_eight(samples), "16-bit scaled to 8-bit"
    colour = samples[:, :, :-1].astype(np.int64)
    colour = np.repeat(colour, 3, axis=2) if planes == 2 else colour
    alpha = samples[:, :, -1:].astype(np.int64)
    numerator = colour * alpha + 65535 * (65535 - alpha)
    denominator = 65535 * 257  # odd, so the rounding below never meets a tie
    rgb = ((2 * numerator + denominator) // (2 * denominator)).astype(np.uint8)
    composited = "; alpha composited on white" if (alpha < 65535).any() else ""
    return rgb, "16-bit scaled to 8-bit" + composited


_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
"""EXIF orientation on an (H, W, C) array, as ``PIL.ImageOps.exif_transpose`` does it on an image."""


def _to_rgb(img: Image.Image) -> tuple[np.ndarray, str | None]:
    """Map a loaded image of any mode to (H, W, 3) uint8 following the decoding rule."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img), None
    if mode == "L":
        return _grey_to_rgb(np.asarray(img)), "greyscale replicated to RGB"
    if mode == "1":
        return _grey_to_rgb(np.asarray(img.convert("L"))), "1-bit replicated to RGB"
    if mode in _ALPHA_MODES or (mode == "P" and img.has_transparency_data):
        rgba = np.asarray(img.convert("RGBA"))
        note = "alpha composited on white" if (rgba[:, :, 3] < 255).any() else None
        return _composite_on_white(rgba), note
    if mode == "P":
        return np.asarray(img.convert("RGB")), None
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_sixteen_to_eight(np.asarray(img))), "16-bit scaled to 8-bit"
    if mode == "I":
        return _grey_to_rgb(_sixteen_to_eight(np.asarray(img))), "32-bit clipped to 16-bit, scaled to 8-bit"
    if mode == "F":
        v = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        grey = np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)
        return _grey_to_rgb(grey), "float scaled to 8-bit"
    return np.asarray(img.convert("RGB")), f"{mode} converted"


def decode_image(path: str | os.PathLike[str], policy: DecodePolicy | None = None) -> DecodedImage:
    """Decode ``path`` to RGB uint8 following the decoding rule (module docstring).

    Raises :class:`ImageRejected` (and nothing else) for any file that cannot be used, so a
    dataset loop can record ``exc.reason`` and go on.
    """
    policy = policy if policy is not None else DecodePolicy()
    name = os.fspath(path)
    shown = str(name)

    try:
        if os.stat(name).st_size == 0:
            raise ImageRejected("empty file", shown)
    except FileNotFoundError:
        raise ImageRejected("file not found", shown) from None
    except OSError as exc:
        raise ImageRejected(f"unreadable: {type(exc).__name__}", shown) from exc

    try:
        with _pil_pixel_limit_lifted():
            img = Image.open(name)
    except FileNotFoundError:
        raise ImageRejected("file not found", shown) from None
    except (PermissionError, IsADirectoryError) as exc:
        raise ImageRejected(f"unreadable: {type(exc).__name__}", shown) from exc
    except UnidentifiedImageError:
        raise ImageRejected("not an image", shown) from None
    except _CORRUPT_ERRORS as exc:
        raise ImageRejected("truncated or corrupt", shown) from exc
    except Exception as exc:
        raise ImageRejected(f"unreadable: {type(exc).__name__}", shown) from exc

    with img:
        return _decode_opened(img, policy, shown)


def _decode_opened(img: Image.Image, policy: DecodePolicy, shown: str) -> DecodedImage:
    """Size checks, decoding and mode mapping for an image whose header has been read."""
    stored_w, stored_h = img.size
    pixels = stored_w * stored_h  # orientation does not change it, so no EXIF is read yet
    oversize = pixels > policy.max_pixels
    if oversize and policy.oversize == "reject":
        n, m = _megapixels(pixels, policy.max_pixels)
        raise ImageRejected(f"too large ({n} MP > limit {m} MP)", shown)

    # saliqa accepts this many pixels: keep Pillow's own bomb check out of the way while decoding.
    guard = _pil_pixel_limit_lifted() if _exceeds_pil_limit(img.size) else contextlib.nullcontext()
    target = _fit_within(stored_w, stored_h, policy.max_pixels)
    png = pngdata.read_header(img.filename) if img.format == "PNG" and img.filename else None
    try:
        with guard:
            if oversize:
                # Formats that decode at reduced scale (JPEG) do so; draft is a no-op elsewhere.
                img.draft("RGB", target)
            img.load()
        if (
            png is not None
            and not pngdata.last_row_decoded(img, png)
            and pngdata.rows_missing(img.filename, png)
        ):
            raise ValueError("the image data ends before the last row")
        # Read only after load: PNG's getexif() would otherwise decode the pixels itself.
        orientation = _orientation(img)
        sixteen = (
            pngdata.read_sixteen_bit(img.filename, png)
            if png is not None and png.sixteen_bit_colour
            else None
        )
        if orientation != 1 and sixteen is None:
            img = ImageOps.exif_transpose(img)
    except _CORRUPT_ERRORS as exc:
        raise ImageRejected("truncated or corrupt", shown) from exc
    except Exception as exc:
        raise ImageRejected(f"unreadable: {type(exc).__name__}", shown) from exc
    width, height = stored_w, stored_h
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height, target = stored_h, stored_w, (target[1], target[0])

    notes: list[str] = []
    try:
        if sixteen is not None:
            array, note = _sixteen_bit_to_rgb(sixteen)
            array = _ORIENT[orientation](array) if orientation != 1 else array
        else:
            array, note = _to_rgb(img)
        if note:
            notes.append(note)
        if oversize:
            if (array.shape[1], array.shape[0]) != target:
                resized = Image.fromarray(array).resize(target, Image.Resampling.LANCZOS)
                array = np.asarray(resized)
            notes.append(f"downscaled from {width}x{height}")
    except Exception as exc:
        raise ImageRejected(f"unreadable: {type(exc).__name__}", shown) from exc

    if not (array.flags.c_contiguous and array.flags.writeable):
        array = np.array(array, order="C")
    out_h, out_w = array.shape[:2]
    if min(out_w, out_h) < policy.min_side:
        raise ImageRejected(_too_small(out_w, out_h, policy.min_side), shown)
    return DecodedImage(
        array=array,
        width=out_w,
        height=out_h,
        original_size=(width, height),
        note="; ".join(notes) if notes else None,
    )


def reject_status(reason: str) -> str:
    """The table status of a reject: ``missing`` for an absent file, ``rejected`` for every other reason."""
    return "missing" if reason == "file not found" else "rejected"


def read_image(path: str | os.PathLike[str], **policy_kwargs: object) -> np.ndarray:
    """Decode ``path`` to an (H, W, 3) uint8 array; keyword arguments build the DecodePolicy."""
    return decode_image(path, DecodePolicy(**policy_kwargs)).array  # type: ignore[arg-type]


def _check_hwc_uint8(array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        shape = getattr(array, "shape", None)
        dtype = getattr(array, "dtype", type(array).__name__)
        raise ValueError(f"expected an (H, W, 3) uint8 array as returned by read_image, got {shape} {dtype}")


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1], the layout used inside the library."""
    _check_hwc_uint8(array)
    t = torch.from_numpy(np.ascontiguousarray(array) if array.flags.writeable else array.copy())
    return t.permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)


def to_batch(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack equal-size (H, W, 3) uint8 arrays to a (B, 3, H, W) float32 batch in [0, 1]."""
    if len(arrays) == 0:
        raise ValueError("to_batch needs at least one array")
    for a in arrays:
        _check_hwc_uint8(a)
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise ValueError(f"to_batch needs arrays of one size, got (H, W) sizes {sizes}; resize or crop first")
    t = torch.from_numpy(np.stack(arrays))
    return t.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)
