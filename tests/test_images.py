"""Tests for saliqa.images: every file is made here in tmp_path, no network, no shared data."""

from __future__ import annotations

import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, JpegImagePlugin
from skimage import data as skdata

from saliqa import pngdata
from saliqa.errors import ImageRejected
from saliqa.images import DecodedImage, DecodePolicy, decode_image, read_image, to_batch, to_tensor

RNG_SEED = 1234


# ---------------------------------------------------------------- helpers


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def _stored_pixels(path: Path) -> np.ndarray:
    """Pixels exactly as stored in the file, with no orientation applied."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _composite_reference(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The documented formula in float64; 255 is odd, so np.round never meets a tie."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    out = rgb.astype(np.float64) * a + 255.0 * (1.0 - a)
    return np.round(out).astype(np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _crafted_png(width: int, height: int, idat: bytes) -> bytes:
    """A valid 8-bit greyscale PNG header claiming width x height, followed by a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _reason(path: Path, policy: DecodePolicy | None = None) -> str:
    with pytest.raises(ImageRejected) as info:
        decode_image(path, policy)
    assert info.value.path == str(path)
    return info.value.reason


@pytest.fixture(autouse=True)
def _pillow_globals_untouched():
    """decode_image must leave Pillow's process-wide settings as it found them."""
    max_pixels, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    yield
    assert Image.MAX_IMAGE_PIXELS == max_pixels
    assert ImageFile.LOAD_TRUNCATED_IMAGES == truncated


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return skdata.chelsea()  # 300 x 451, not square, so orientation errors show


# ---------------------------------------------------------------- plain photos


def test_png_roundtrip_is_exact(tmp_path, astronaut):
    path = _save(Image.fromarray(astronaut), tmp_path / "a.png")
    out = decode_image(path)
    assert isinstance(out, DecodedImage)
    np.testing.assert_array_equal(out.array, astronaut)
    assert out.array.dtype == np.uint8 and out.array.flags.c_contiguous and out.array.flags.writeable
    assert (out.width, out.height, out.original_size, out.note) == (512, 512, (512, 512), None)


def test_jpeg_photo(tmp_path, chelsea):
    path = _save(Image.fromarray(chelsea), tmp_path / "c.jpg", quality=95)
    out = decode_image(path)
    assert out.array.shape == (300, 451, 3)
    assert (out.width, out.height, out.original_size) == (451, 300, (451, 300))
    np.testing.assert_array_equal(out.array, _stored_pixels(path))
    assert np.abs(out.array.astype(int) - chelsea).mean() < 3


def test_read_image_returns_array_and_takes_policy_kwargs(tmp_path, chelsea):
    path = _save(Image.fromarray(chelsea), tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(path), chelsea)
    np.testing.assert_array_equal(read_image(str(path)), chelsea)
    assert read_image(path, max_pixels=10_000, oversize="downscale").size <= 3 * 10_000
    with pytest.raises(ImageRejected, match="too small"):
        read_image(path, min_side=301)


# ---------------------------------------------------------------- EXIF orientation

_ORIENTED = {
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # 6 = "rotate 90 degrees clockwise to display"
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(_ORIENTED))
def test_exif_orientation_jpeg(tmp_path, chelsea, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(Image.fromarray(chelsea), tmp_path / "o.jpg", exif=exif, quality=95)
    stored = _stored_pixels(path)
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, _ORIENTED[orientation](stored))
    swapped = orientation >= 5
    assert out.original_size == ((300, 451) if swapped else (451, 300))
    assert (out.width, out.height) == out.original_size


def test_exif_orientation_png(tmp_path, chelsea):
    """PNG keeps EXIF in an eXIf chunk, which Pillow reads on a different path than JPEG's."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.fromarray(chelsea), tmp_path / "o.png", exif=exif)
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, np.rot90(chelsea, -1))
    assert out.original_size == (300, 451)


# ---------------------------------------------------------------- modes


def test_mode_L_replicated(tmp_path, astronaut):
    grey = astronaut[..., 1]
    out = decode_image(_save(Image.fromarray(grey), tmp_path / "l.png"))
    np.testing.assert_array_equal(out.array, np.stack([grey] * 3, axis=-1))
    assert out.note == "greyscale replicated to RGB"


def test_mode_1_bit(tmp_path):
    bits = (np.indices((40, 48)).sum(axis=0) % 2).astype(bool)
    img = Image.fromarray(bits.astype(np.uint8) * 255).convert("1")
    path = _save(img, tmp_path / "b.png")
    with Image.open(path) as check:
        assert check.mode == "1"
    out = decode_image(path)
    expected = np.where(bits, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(out.array, np.stack([expected] * 3, axis=-1))


def test_rgba_opaque_is_bit_exact(tmp_path, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    out = decode_image(_save(Image.fromarray(rgba), tmp_path / "o.png"))
    np.testing.assert_array_equal(out.array, astronaut)
    assert out.note is None


def test_rgba_translucent_composited_on_white(tmp_path, astronaut):
    alpha = np.random.default_rng(RNG_SEED).integers(0, 256, astronaut.shape[:2], dtype=np.uint8)
    alpha[0, :4] = [0, 1, 128, 255]
    rgba = np.dstack([astronaut, alpha])
    out = decode_image(_save(Image.fromarray(rgba), tmp_path / "t.png"))
    np.testing.assert_array_equal(out.array, _composite_reference(astronaut, alpha))
    np.testing.assert_array_equal(out.array[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out.array[0, 3], astronaut[0, 3])
    assert out.note == "alpha composited on white"


def test_mode_LA(tmp_path, astronaut):
    grey = astronaut[..., 0]
    alpha = np.full(grey.shape, 128, np.uint8)
    img = Image.merge("LA", (Image.fromarray(grey), Image.fromarray(alpha)))
    out = decode_image(_save(img, tmp_path / "la.png"))
    np.testing.assert_array_equal(out.array, _composite_reference(np.stack([grey] * 3, -1), alpha))
    # the formula in numbers: 0 at half alpha -> round(127.5 * 255/255) = round(127.0)
    assert _composite_reference(np.zeros((1, 1, 3), np.uint8), np.full((1, 1), 128, np.uint8))[0, 0, 0] == 127


def _palette_image(shape=(40, 50), colours=16):
    rng = np.random.default_rng(RNG_SEED)
    indices = rng.integers(0, colours, shape, dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    img = Image.frombytes("P", (shape[1], shape[0]), indices.tobytes())
    img.putpalette(palette.tobytes())
    return img, indices, palette


def test_mode_P_palette_lookup(tmp_path):
    img, indices, palette = _palette_image()
    path = _save(img, tmp_path / "p.png")
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, palette[indices])
    assert out.note is None


def test_mode_P_with_transparent_index(tmp_path):
    img, indices, palette = _palette_image()
    path = _save(img, tmp_path / "pt.png", transparency=3)
    out = decode_image(path)
    expected = palette[indices].copy()
    expected[indices == 3] = 255
    np.testing.assert_array_equal(out.array, expected)
    assert out.note == "alpha composited on white"


def test_mode_P_with_per_index_alpha(tmp_path):
    img, indices, palette = _palette_image()
    alphas = np.random.default_rng(RNG_SEED + 1).integers(0, 256, 256, dtype=np.uint8)
    path = _save(img, tmp_path / "pa.png", transparency=alphas.tobytes())
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, _composite_reference(palette[indices], alphas[indices]))


def test_mode_PA_tiff(tmp_path):
    img, indices, palette = _palette_image()
    alpha = np.random.default_rng(RNG_SEED + 2).integers(0, 256, indices.shape, dtype=np.uint8)
    pa = img.convert("PA")
    pa.putalpha(Image.fromarray(alpha))
    path = _save(pa, tmp_path / "pa.tif")
    with Image.open(path) as check:
        assert check.mode == "PA"
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, _composite_reference(palette[indices], alpha))


def test_cmyk_jpeg(tmp_path, chelsea):
    path = _save(Image.fromarray(chelsea).convert("CMYK"), tmp_path / "c.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
        expected = np.asarray(check.convert("RGB"))
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, expected)
    assert out.note == "CMYK converted"
    assert np.abs(out.array.astype(int) - chelsea).mean() < 6


def test_cmyk_tiff(tmp_path, chelsea):
    cmyk = Image.fromarray(chelsea).convert("CMYK")
    path = _save(cmyk, tmp_path / "c.tif")
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, np.asarray(cmyk.convert("RGB")))
    assert out.note == "CMYK converted"


def _sixteen_bit_values() -> np.ndarray:
    edges = [0, 1, 128, 129, 257, 385, 386, 32767, 32768, 65406, 65407, 65534, 65535]
    ramp = np.linspace(0, 65535, 48 * 64 - len(edges)).astype(np.uint16)
    return np.concatenate([np.array(edges, np.uint16), ramp]).reshape(48, 64)


def test_i16_png_scaled_by_257(tmp_path):
    values = _sixteen_bit_values()
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = decode_image(_save(img, tmp_path / "i16.png"))
    expected = np.round(values / 257.0).astype(np.uint8)  # 257 is odd: no ties
    np.testing.assert_array_equal(out.array, np.stack([expected] * 3, axis=-1))
    assert list(out.array[0, :7, 0]) == [0, 0, 0, 1, 1, 1, 2]
    assert out.note == "16-bit scaled to 8-bit"


def test_i16_big_endian_tiff(tmp_path):
    values = _sixteen_bit_values()
    img = Image.frombytes("I;16B", (64, 48), values.astype(">u2").tobytes())
    path = _save(img, tmp_path / "i16b.tif")
    with Image.open(path) as check:
        assert check.mode == "I;16B"
    out = decode_image(path)
    np.testing.assert_array_equal(out.array[..., 0], np.round(values / 257.0).astype(np.uint8))


def test_mode_I_32bit_tiff_clipped_to_16bit(tmp_path):
    values = np.full((40, 40), 1000, np.int32)
    values[0, :5] = [-5, 0, 385, 65535, 1_000_000]
    path = _save(Image.fromarray(values), tmp_path / "i32.tif")
    with Image.open(path) as check:
        assert check.mode == "I"
    out = decode_image(path)
    assert list(out.array[0, :5, 0]) == [0, 0, 1, 255, 255]
    assert out.array[1, 1, 0] == 4  # round(1000 / 257) = round(3.89)
    assert np.all(out.array[..., 0] == out.array[..., 2])


def test_mode_F_float_tiff(tmp_path):
    values = np.full((40, 40), 0.25, np.float32)
    values[0, :8] = [-0.5, 0.0, 0.5, 1.0, 2.0, np.nan, np.inf, 1 / 255]
    path = _save(Image.fromarray(values), tmp_path / "f.tif")
    with Image.open(path) as check:
        assert check.mode == "F"
    out = decode_image(path)
    # 0.25 * 255 = 63.75 -> 64; 0.5 * 255 = 127.5 -> 128 (half to even); NaN -> 0
    assert list(out.array[0, :8, 0]) == [0, 0, 128, 255, 255, 0, 255, 1]
    assert out.array[5, 5, 1] == 64
    assert out.note == "float scaled to 8-bit"


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_other_colour_spaces_via_pillow(tmp_path, chelsea, mode):
    img = Image.fromarray(chelsea).convert(mode)
    path = _save(img, tmp_path / "x.tif")
    with Image.open(path) as check:
        assert check.mode == mode
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, np.asarray(img.convert("RGB")))
    assert out.note == f"{mode} converted"


def test_multiframe_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), colour) for colour in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = decode_image(path)
    assert out.array.shape == (40, 40, 3)
    np.testing.assert_array_equal(np.unique(out.array.reshape(-1, 3), axis=0), [[255, 0, 0]])


def test_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("L", (40, 40), v) for v in (10, 200)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert np.all(decode_image(path).array == 10)


# ---------------------------------------------------------------- rejects


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nowhere.jpg") == "file not found"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _reason(path) == "empty file"


def test_text_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    assert _reason(path) == "not an image"


def test_directory_is_unreadable(tmp_path):
    path = tmp_path / "folder.png"
    path.mkdir()
    assert _reason(path) == "unreadable: IsADirectoryError"


def test_truncated_jpeg(tmp_path, astronaut):
    full = _save(Image.fromarray(astronaut), tmp_path / "full.jpg").read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(full[: len(full) // 2])
    assert _reason(path) == "truncated or corrupt"


def test_truncated_png(tmp_path, astronaut):
    full = _save(Image.fromarray(astronaut), tmp_path / "full.png").read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(full[: len(full) // 2])
    assert _reason(path) == "truncated or corrupt"


def test_corrupt_png_idat(tmp_path, astronaut):
    raw = bytearray(_save(Image.fromarray(astronaut), tmp_path / "ok.png").read_bytes())
    start = raw.index(b"IDAT") + 4
    for offset in range(100, 140):  # flip bytes inside the compressed data; the CRC no longer matches
        raw[start + offset] ^= 0xFF
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(raw))
    assert _reason(path) == "truncated or corrupt"


def test_tiny_image(tmp_path):
    path = _save(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "tiny.png")
    assert _reason(path) == "too small (8x8, min side 32)"
    assert decode_image(path, DecodePolicy(min_side=8)).array.shape == (8, 8, 3)


def test_thin_image_reports_oriented_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.new("RGB", (100, 20)), tmp_path / "thin.jpg", exif=exif)
    assert _reason(path) == "too small (20x100, min side 32)"


def test_every_reject_is_image_rejected(tmp_path):
    """One exception type for every bad file, so dataset loops need a single except clause."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "header_only.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "jpeg_soi_only.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "bomb.png").write_bytes(_crafted_png(20000, 20000, zlib.compress(b"\x00" * 8)))
    for path in sorted(tmp_path.iterdir()) + [tmp_path / "missing.png"]:
        with pytest.raises(ImageRejected):
            decode_image(path)


# ---------------------------------------------------------------- size limits


def test_oversize_reject(tmp_path):
    path = _save(Image.new("RGB", (200, 120), (9, 9, 9)), tmp_path / "big.png")
    assert _reason(path, DecodePolicy(max_pixels=10_000)) == "too large (0.024 MP > limit 0.01 MP)"


def test_megapixel_digits_separate_close_counts(tmp_path):
    path = _save(Image.new("L", (1001, 1000)), tmp_path / "close.png")
    assert _reason(path, DecodePolicy(max_pixels=1_000_000)) == "too large (1.001 MP > limit 1 MP)"


def test_oversize_downscale_png(tmp_path, chelsea):
    path = _save(Image.fromarray(chelsea), tmp_path / "c.png")  # 451 x 300
    out = decode_image(path, DecodePolicy(max_pixels=10_000, oversize="downscale"))
    assert out.width * out.height <= 10_000
    assert abs(out.height - out.width * 300 / 451) <= 1
    assert out.array.shape == (out.height, out.width, 3)
    assert out.original_size == (451, 300)
    assert out.note == "downscaled from 451x300"
    reference = np.asarray(Image.fromarray(chelsea).resize((out.width, out.height), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(out.array, reference)


def test_oversize_downscale_jpeg_uses_draft(tmp_path, astronaut, monkeypatch):
    path = _save(Image.fromarray(astronaut), tmp_path / "a.jpg", quality=95)
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafts.append((size, result))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = decode_image(path, DecodePolicy(max_pixels=10_000, oversize="downscale"))
    assert (out.width, out.height) == (100, 100)
    assert out.note == "downscaled from 512x512"
    assert drafts == [((100, 100), ("RGB", (0, 0, 128.0, 128.0)))]  # decoded at 1/4 scale
    full = np.asarray(Image.fromarray(_stored_pixels(path)).resize((100, 100), Image.Resampling.LANCZOS))
    assert np.abs(out.array.astype(int) - full).mean() < 4


def test_oversize_downscale_with_orientation(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.fromarray(chelsea), tmp_path / "o.jpg", exif=exif)
    out = decode_image(path, DecodePolicy(max_pixels=10_000, oversize="downscale"))
    assert out.original_size == (300, 451)
    assert out.width < out.height and out.width * out.height <= 10_000
    assert abs(out.width - out.height * 300 / 451) <= 1
    assert out.note == "downscaled from 300x451"


def test_downscale_notes_are_joined(tmp_path, astronaut):
    alpha = np.full(astronaut.shape[:2], 100, np.uint8)
    path = _save(Image.fromarray(np.dstack([astronaut, alpha])), tmp_path / "t.png")
    out = decode_image(path, DecodePolicy(max_pixels=4_096, oversize="downscale"))
    assert (out.width, out.height) == (64, 64)
    assert out.note == "alpha composited on white; downscaled from 512x512"


def test_downscale_can_end_too_small(tmp_path):
    path = _save(Image.new("RGB", (400, 40)), tmp_path / "strip.png")
    reason = _reason(path, DecodePolicy(max_pixels=4_000, oversize="downscale"))
    assert reason == "too small (200x20, min side 32)"


def _spy_loads(monkeypatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_crafted_bomb_header_rejected_without_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_crafted_png(20000, 20000, zlib.compress(b"\x00" * 8)))
    assert 20000 * 20000 > 2 * Image.MAX_IMAGE_PIXELS  # Pillow alone would raise at open
    loads = _spy_loads(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert _reason(path) == "too large (400 MP > limit 150 MP)"
    assert loads == []  # the pixels were never decoded
    decode_image(_save(Image.new("L", (40, 40)), tmp_path / "ok.png"))
    assert set(loads) == {(40, 40)}  # ... and the spy does see a decode when one happens


def test_crafted_bomb_header_downscale_ends_as_corrupt(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_crafted_png(20000, 20000, zlib.compress(b"\x00" * 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert _reason(path, DecodePolicy(oversize="downscale")) == "truncated or corrupt"
        # saliqa's limit, not Pillow's, decides: a higher max_pixels lets the decode be tried
        assert _reason(path, DecodePolicy(max_pixels=500_000_000)) == "truncated or corrupt"


def test_header_between_pillow_limits_gives_no_warning(tmp_path):
    """10000 x 10000 is above Image.MAX_IMAGE_PIXELS (Pillow warns) but below saliqa's limit."""
    path = tmp_path / "big.png"
    path.write_bytes(_crafted_png(10000, 10000, zlib.compress(b"\x00" * 8)))
    assert Image.MAX_IMAGE_PIXELS < 10000 * 10000 < 2 * Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert _reason(path) == "truncated or corrupt"


def test_concurrent_decodes_restore_pillow_limit(tmp_path, chelsea):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_crafted_png(20000, 20000, zlib.compress(b"\x00" * 8)))
    good = _save(Image.fromarray(chelsea), tmp_path / "c.png")
    results: list[object] = []

    def work(i: int) -> None:
        for _ in range(5):
            try:
                results.append(decode_image(bomb if i % 2 else good).array.shape)
            except ImageRejected as exc:
                results.append(exc.reason)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, set(results))) == ["(300, 451, 3)", "too large (400 MP > limit 150 MP)"]
    assert len(results) == 30


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_pixels": 0}, "max_pixels"),
        ({"max_pixels": 1.5e6}, "max_pixels"),
        ({"min_side": 0}, "min_side"),
        ({"min_side": True}, "min_side"),
        ({"oversize": "shrink"}, "oversize"),
        ({"max_pixels": 1000, "min_side": 32}, "no image could pass"),
    ],
)
def test_policy_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodePolicy(**kwargs)


def test_policy_defaults():
    policy = DecodePolicy()
    assert (policy.max_pixels, policy.oversize, policy.min_side) == (150_000_000, "reject", 32)


# ---------------------------------------------------------------- tensors


def test_to_tensor():
    array = np.random.default_rng(RNG_SEED).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    array[0, 0] = [0, 128, 255]
    t = to_tensor(array)
    assert t.shape == (3, 33, 47) and t.dtype == torch.float32 and t.is_contiguous()
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.equal(t[:, 0, 0], torch.tensor([0.0, 128 / 255, 1.0]))
    np.testing.assert_array_equal((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), array)


def test_to_tensor_read_only_array():
    array = np.zeros((4, 5, 3), np.uint8)
    array.flags.writeable = False
    assert to_tensor(array).shape == (3, 4, 5)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 5), np.uint8), np.zeros((4, 5, 4), np.uint8), np.zeros((4, 5, 3), np.float32)]
)
def test_to_tensor_rejects_other_layouts(bad):
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(bad)


def test_to_batch():
    rng = np.random.default_rng(RNG_SEED)
    arrays = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(4)]
    batch = to_batch(arrays)
    assert batch.shape == (4, 3, 20, 30) and batch.dtype == torch.float32
    for i, a in enumerate(arrays):
        assert torch.equal(batch[i], to_tensor(a))


def test_to_batch_errors():
    with pytest.raises(ValueError, match="at least one"):
        to_batch([])
    with pytest.raises(ValueError, match="one size"):
        to_batch([np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])


def test_decoded_image_checks_its_array():
    with pytest.raises(ValueError):
        DecodedImage(array=np.zeros((4, 5, 3), np.uint8), width=4, height=5, original_size=(4, 5), note=None)


# -- PNG data that ends early, 16-bit colour, and reduced JPEG decoding -----------------------------------------
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""Adam7 interlace passes: first column, first row, column step, row step (PNG specification)."""


def _filtered_rows(body: np.ndarray, bpp: int, filter_type: int) -> bytes:
    """PNG filter ``filter_type`` on every row of ``body`` (rows, bytes), each row led by its filter byte.

    Every filter predicts from the original bytes, so encoding needs no loop (decoding would)."""
    x = body.astype(np.int16)
    left, up, corner = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    left[:, bpp:], up[1:], corner[1:, bpp:] = x[:, :-bpp], x[:-1], x[:-1, :-bpp]
    if filter_type == 4:  # Paeth
        p = left + up - corner
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - corner)
        predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    else:  # None, Sub, Up, Average
        predicted = (np.zeros_like(x), left, up, (left + up) // 2)[filter_type]
    rows = ((x - predicted) % 256).astype(np.uint8)
    return np.hstack([np.full((len(rows), 1), filter_type, np.uint8), rows]).tobytes()


def _png_file(
    samples: np.ndarray,
    color_type: int,
    dropped_rows: int = 0,
    exif: bytes | None = None,
    *,
    filter_type: int = 0,
    interlace: bool = False,
    chunks: bytes = b"",
) -> bytes:
    """A PNG written by hand from (H, W, planes) samples (uint8, or uint16 stored big-endian), one filter type
    on every row, optionally Adam7-interlaced. ``dropped_rows`` full-width rows are cut from the end of the
    image data (the last rows, or the last rows of the last pass; the header still claims them all); ``chunks``
    go between IHDR and IDAT."""
    height, width, planes = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    bpp = planes * depth // 8
    raw = b""
    for x0, y0, dx, dy in _ADAM7 if interlace else ((0, 0, 1, 1),):
        part = samples[y0::dy, x0::dx]
        if part.size:
            body = part.astype(">u2" if depth == 16 else np.uint8).reshape(len(part), -1).view(np.uint8)
            raw += _filtered_rows(body, bpp, filter_type)
    raw = raw[: len(raw) - dropped_rows * (1 + width * bpp)]
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, int(interlace))
    head = _png_chunk(b"IHDR", ihdr) + (_png_chunk(b"eXIf", exif) if exif else b"") + chunks
    return b"\x89PNG\r\n\x1a\n" + head + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize("color_type", [0, 2, 6])
def test_png_whose_data_ends_before_its_last_row_is_rejected(tmp_path, color_type):
    planes = {0: 1, 2: 3, 6: 4}[color_type]
    samples = np.full((40, 50, planes), 200, np.uint8)
    whole = tmp_path / "whole.png"
    whole.write_bytes(_png_file(samples, color_type))
    assert decode_image(whole).array.min() > 0
    short = tmp_path / "short.png"
    short.write_bytes(_png_file(samples, color_type, dropped_rows=20))
    no_end = tmp_path / "no_end.png"
    no_end.write_bytes(short.read_bytes()[:-12])  # without IEND either
    for path in (short, no_end):
        with Image.open(path) as img:  # Pillow's own behaviour, with or without IEND: black rows, no error
            img.load()
            assert np.asarray(img)[19].min() == 200 and np.asarray(img)[20:].max() == 0
        assert _reason(path) == "truncated or corrupt"


def test_png_whose_data_stops_inside_a_row_is_rejected_by_pillow_itself(tmp_path):
    samples = np.full((40, 50, 3), 200, np.uint8)
    path = tmp_path / "mid_row.png"
    raw = b"".join(b"\x00" + samples[r].tobytes() for r in range(40))[:-75]  # half of the last row
    ihdr = struct.pack(">IIBBBBB", 50, 40, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )
    with Image.open(path) as img, pytest.raises(OSError, match="truncated"):
        img.load()
    assert _reason(path) == "truncated or corrupt"


@pytest.mark.parametrize("filter_type", [0, 4])
def test_an_interlaced_png_still_decodes_as_pillow_does(tmp_path, chelsea, filter_type):
    path = tmp_path / "adam7.png"
    path.write_bytes(_png_file(chelsea, 2, filter_type=filter_type, interlace=True))
    with Image.open(path) as img:
        assert img.info.get("interlace") == 1
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), chelsea)
    np.testing.assert_array_equal(decode_image(path).array, chelsea)
    short = tmp_path / "short.png"  # the last row of the last pass missing
    short.write_bytes(_png_file(chelsea, 2, dropped_rows=1, filter_type=filter_type, interlace=True))
    with Image.open(short) as img:  # Pillow: black odd pixels on the last odd row, no error
        img.load()
        assert np.asarray(img)[299].max() == 0
    assert _reason(short) == "truncated or corrupt"


def test_plain_png_data_is_inflated_once(tmp_path, monkeypatch, chelsea):
    """A plain PNG is inflated once (by Pillow): a non-zero byte in its last row shows the data reached it."""
    recounted: list[str] = []
    real_rows_missing = pngdata.rows_missing

    def spy(path, header):
        recounted.append(Path(path).name)
        return real_rows_missing(path, header)

    monkeypatch.setattr(pngdata, "rows_missing", spy)
    plain = _save(Image.fromarray(chelsea), tmp_path / "plain.png")
    np.testing.assert_array_equal(decode_image(plain).array, chelsea)
    black = chelsea.copy()
    black[-1] = 0
    bottom = tmp_path / "black_bottom.png"
    bottom.write_bytes(_png_file(black, 2, filter_type=4))
    np.testing.assert_array_equal(decode_image(bottom).array, black)
    adam7 = tmp_path / "adam7.png"
    adam7.write_bytes(_png_file(chelsea, 2, interlace=True))
    np.testing.assert_array_equal(decode_image(adam7).array, chelsea)
    short = tmp_path / "short.png"
    short.write_bytes(_png_file(chelsea, 2, dropped_rows=1))
    assert _reason(short) == "truncated or corrupt"
    assert recounted == ["black_bottom.png", "adam7.png", "short.png"]


def _sixteen_bit_photo(planes: int) -> np.ndarray:
    """16-bit samples that differ from their high byte times 257 (so truncation would show)."""
    rng = np.random.default_rng(RNG_SEED)
    samples = rng.integers(0, 65536, (36, 48, planes), dtype=np.int64)
    samples[0, :4, :] = [[1257], [257], [65535], [0]]  # high byte 4, but round(1257 / 257) = 5
    if planes in (2, 4):
        samples[1, :, -1] = 65535  # one opaque row
    return samples.astype(np.uint16)


def _eight_bit_reference(samples: np.ndarray) -> np.ndarray:
    """The documented rule in floats: round(v / 257); with alpha a, round(255 * (c/65535 * a/65535 + 1 - a/65535)),
    which is the module's integer round((c*a + 65535*(65535 - a)) / (65535*257))."""
    v = samples.astype(np.int64)
    colour = v[:, :, :3] if v.shape[2] >= 3 else np.repeat(v[:, :, :1], 3, axis=2)
    if v.shape[2] in (2, 4):
        a = v[:, :, -1:] / 65535
        return np.rint((colour / 65535 * a + (1 - a)) * 255).astype(np.uint8)
    return np.rint(colour / 257).astype(np.uint8)


@pytest.mark.parametrize(("planes", "color_type"), [(3, 2), (4, 6), (2, 4)])
def test_sixteen_bit_colour_png_is_read_at_full_precision(tmp_path, planes, color_type):
    samples = _sixteen_bit_photo(planes)
    path = tmp_path / "deep.png"
    path.write_bytes(_png_file(samples, color_type))
    out = decode_image(path)
    np.testing.assert_array_equal(out.array, _eight_bit_reference(samples))
    if planes in (2, 4):
        colour = samples[1, :, :3] if planes == 4 else np.repeat(samples[1, :, :1], 3, axis=1)
        np.testing.assert_array_equal(out.array[1], np.rint(colour / 257))  # opaque: exactly round(v / 257)
        assert out.note == "16-bit scaled to 8-bit; alpha composited on white"
    else:
        assert out.note == "16-bit scaled to 8-bit"
    if planes == 3:
        assert out.array[0, 0, 0] == 5  # Pillow alone gives 4
        with Image.open(path) as img:
            assert (img.mode, img.tile[0].args) == ("RGB", "RGB;16B")
            assert np.asarray(img.convert("RGB"))[0, 0, 0] == 4


@pytest.mark.parametrize(("planes", "color_type"), [(3, 2), (4, 6), (2, 4)])
@pytest.mark.parametrize(
    ("filter_type", "interlace"), [(1, False), (2, False), (3, False), (4, False), (0, True), (4, True)]
)
def test_sixteen_bit_colour_png_with_every_filter_and_interlacing(
    tmp_path, planes, color_type, filter_type, interlace
):
    samples = _sixteen_bit_photo(planes)[:35, :45]  # odd sides leave the Adam7 passes uneven
    path = tmp_path / "deep.png"
    path.write_bytes(_png_file(samples, color_type, filter_type=filter_type, interlace=interlace))
    np.testing.assert_array_equal(decode_image(path).array, _eight_bit_reference(samples))
    short = tmp_path / "short.png"
    short.write_bytes(_png_file(samples, color_type, 1, filter_type=filter_type, interlace=interlace))
    assert _reason(short) == "truncated or corrupt"


def test_sixteen_bit_samples_are_used_as_stored_whatever_sbit_and_trns_say(tmp_path):
    """sBIT only records the source precision (the samples are already full-range 16-bit), and an RGB colour key
    (tRNS) is ignored as for 8-bit files (rule 7): neither may rescale or whiten anything."""
    twelve = _sixteen_bit_photo(3) >> 4  # 12-bit data, stored the way the PNG specification scales it up
    samples = (twelve << 4) | (twelve >> 8)
    key = _png_chunk(b"tRNS", struct.pack(">3H", *(int(v) for v in samples[0, 0])))
    for name, chunk in [("sbit", _png_chunk(b"sBIT", bytes([12, 12, 12]))), ("trns", key)]:
        path = tmp_path / f"{name}.png"
        path.write_bytes(_png_file(samples, 2, chunks=chunk))
        out = decode_image(path)
        np.testing.assert_array_equal(out.array, _eight_bit_reference(samples))
        assert out.note == "16-bit scaled to 8-bit"


def test_sixteen_bit_png_follows_orientation_and_size_limits(tmp_path):
    samples = _sixteen_bit_photo(3)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    path = tmp_path / "rotated.png"
    path.write_bytes(_png_file(samples, 2, exif=exif.tobytes().removeprefix(b"Exif\x00\x00")))
    out = decode_image(path)
    expected = np.rot90(np.rint(samples / 257).astype(np.uint8), -1)
    np.testing.assert_array_equal(out.array, expected)
    assert out.original_size == (36, 48)
    small = decode_image(path, DecodePolicy(max_pixels=432, oversize="downscale", min_side=8))
    assert (small.width, small.height) == (18, 24)
    assert small.note == "16-bit scaled to 8-bit; downscaled from 36x48"
    reference = Image.fromarray(expected).resize((18, 24), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(small.array, np.asarray(reference))
    assert _reason(path, DecodePolicy(max_pixels=432, min_side=8)).startswith("too large")
    assert _reason(path, DecodePolicy(min_side=40)) == "too small (36x48, min side 40)"
    short = tmp_path / "short16.png"
    short.write_bytes(_png_file(samples, 2, dropped_rows=26))
    assert _reason(short) == "truncated or corrupt"


@pytest.mark.parametrize("kind", ["RGB", "L", "CMYK", "progressive", "rotated"])
def test_oversize_jpeg_is_decoded_reduced_before_the_final_resize(tmp_path, monkeypatch, kind):
    rng = np.random.default_rng(RNG_SEED)
    photo = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    options: dict = {"quality": 90}
    if kind in ("L", "CMYK"):
        photo = photo.convert(kind)
    if kind == "progressive":
        options["progressive"] = True
    if kind == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        options["exif"] = exif
    path = _save(photo, tmp_path / "big.jpg", **options)
    decoded_at = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        result = real_load(self)
        decoded_at.append(self.size)
        return result

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    out = decode_image(path, DecodePolicy(max_pixels=700_000, oversize="downscale"))
    assert decoded_at[0] == (1000, 750)  # 1/4 of each side: 16x fewer pixels decoded than stored
    # sqrt(700_000 / 12e6) = 0.2415: 966 x 724 stored, turned to 724 x 966 by the EXIF orientation
    assert (out.width, out.height) == ((724, 966) if kind == "rotated" else (966, 724))
    assert out.note.endswith(
        "downscaled from 3000x4000" if kind == "rotated" else "downscaled from 4000x3000"
    )
    if kind == "RGB":  # exactly Pillow's reduced decode, then one LANCZOS resize
        monkeypatch.undo()
        with Image.open(path) as img:
            img.draft("RGB", (966, 724))
            reference = img.convert("RGB").resize((966, 724), Image.Resampling.LANCZOS)
        np.testing.assert_array_equal(out.array, np.asarray(reference))
