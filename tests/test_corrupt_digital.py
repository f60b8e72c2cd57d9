"""saliqa.corrupt.digital's pixelate and elastic_transform: bit-exact with imagecorruptions 1.1.5.

pixelate is deterministic and compared as is. elastic_transform's reference draws its two uniform fields
from numpy's global state, so a test runs our draw from the image's own stream, hands exactly those values to
the reference in place of ``np.random.uniform``, and requires the same bytes; the replaced calls' arguments
are replayed on a fresh copy of the stream, which proves our draws are what numpy's Generator gives for the
reference's own requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import corruption_helpers
import numpy as np
import pytest
import torch

from saliqa.corrupt import CORRUPTIONS, corrupt, corrupt_batch, corruption_rng
from saliqa.corrupt.digital import _map_linear_reflect, pixelate_levels

ic = pytest.importorskip("imagecorruptions", reason="parity tests need imagecorruptions-imaug 1.1.5")

SEVERITIES = corruption_helpers.SEVERITIES
NAMES = ("pixelate", "elastic_transform")
# (photo, crop height, crop width): every photo at an odd small size, grey 2-D and (H, W, 1) among them,
# wide crops, the study's 224x224, and two tall crops (Pillow resizes those rows first, see _box_resize);
# the full-size china.jpg runs in its own test.
CROP_CASES = (
    *corruption_helpers.CROP_CASES,
    *[("flower", 401, 150), ("camera", 300, 97)],
)
SEED, IMAGE_ID = 7, "img_001.jpg"


def _as_chw(image: np.ndarray) -> torch.Tensor:
    """The (3, H, W) float64 image a draw function sees on the exact path (grey stacked, as the registry)."""
    grey = image.ndim == 2 or image.shape[2] == 1
    rgb = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2) if grey else image
    return torch.tensor(rgb).permute(2, 0, 1).to(torch.float64)


def _stream(severity: int) -> np.random.Generator:
    return corruption_rng(SEED, IMAGE_ID, "elastic_transform", severity)


@contextmanager
def _uniform_returns(values: list[np.ndarray]) -> Iterator[list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Make ``np.random.uniform`` return ``values`` in turn; yields the list of calls it received."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    queue = list(values)

    def fake(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append((args, kwargs))
        return queue.pop(0)

    original = np.random.uniform
    np.random.uniform = fake
    try:
        yield calls
    finally:
        np.random.uniform = original


def _reference(image: np.ndarray, name: str, severity: int) -> np.ndarray:
    """The reference's output; elastic_transform's uniform fields are ours (checked to be its requests)."""
    if name == "pixelate":
        return corruption_helpers.reference(image, name, severity)
    draw = CORRUPTIONS[name].draw
    assert draw is not None
    drawn = draw(_as_chw(image), severity, _stream(severity))
    ours = [drawn["dx"], drawn["dy"]]
    with _uniform_returns(ours) as calls:
        ref = corruption_helpers.reference(image, name, severity)
    replay = _stream(severity)
    assert len(calls) == 2
    for (args, kwargs), values in zip(calls, ours, strict=True):
        np.testing.assert_array_equal(values, replay.uniform(*args, **kwargs))
    return ref


def _assert_parity(image: np.ndarray, name: str, severity: int, what: str) -> None:
    ours = corrupt(image, name, severity, seed=SEED, image_id=IMAGE_ID)
    assert ours.dtype == np.uint8 and ours.shape == (*image.shape[:2], 3)
    ref = _reference(image, name, severity)
    np.testing.assert_array_equal(ours, ref, err_msg=f"{name} {severity} {what}")
    if name == "pixelate":  # on the CPU corrupt() runs Pillow; the batched port serves other devices
        levels = _as_chw(image).unsqueeze(0).to(torch.int32)
        port = pixelate_levels(levels, severity)[0].permute(1, 2, 0).to(torch.uint8).numpy()
        np.testing.assert_array_equal(port, ref, err_msg=f"pixelate port {severity} {what}")


# ---------------------------------------------------------------- parity with the reference


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", NAMES)
def test_bit_exact_on_photo_crops(photos: dict[str, np.ndarray], name: str, severity: int) -> None:
    for photo_name, height, width in CROP_CASES:
        image = corruption_helpers.crop(photos[photo_name], height, width)
        _assert_parity(image, name, severity, f"{photo_name} {height}x{width}")


@pytest.mark.parametrize("name", NAMES)
def test_bit_exact_on_a_full_size_photo(photos: dict[str, np.ndarray], name: str) -> None:
    for severity in SEVERITIES:
        _assert_parity(photos["china"], name, severity, "china 427x640")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_bit_exact_on_every_full_size_photo(photos: dict[str, np.ndarray], name: str) -> None:
    for photo_name, photo in photos.items():
        for severity in SEVERITIES:
            _assert_parity(photo, name, severity, f"{photo_name} {photo.shape}")


def _pixelate_sizes(widths: range) -> Iterator[tuple[int, int]]:
    """Near-square, wide and tall sizes for each width, tall ones around Pillow's rows-first threshold."""
    for width in widths:
        yield 32 + (width * 7) % 40, width
        yield 2 * width + width % 5 - 2, width
        yield width // 2 + 30, width


def _assert_pixelate_sizes(widths: range) -> None:
    rng = np.random.default_rng(0)
    for height, width in _pixelate_sizes(widths):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for severity in SEVERITIES:
            _assert_parity(image, "pixelate", severity, f"noise {height}x{width}")


def test_pixelate_bit_exact_on_many_sizes() -> None:
    """Box windows, rounding and NEAREST's running-sum positions depend on the exact sizes: sweep some."""
    _assert_pixelate_sizes(range(32, 72))


@pytest.mark.slow
def test_pixelate_bit_exact_on_all_sizes_up_to_700() -> None:
    _assert_pixelate_sizes(range(72, 701))


def _bits_of_scipy(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """scipy's map_coordinates as the reference calls it: (H, W, 3) float32 at (row, col, channel)."""
    from scipy.ndimage import map_coordinates

    channel = np.broadcast_to(np.arange(3), (*rows.shape, 3))
    coords = [np.broadcast_to(c[..., None], channel.shape).reshape(-1) for c in (rows, cols)]
    out = map_coordinates(image, [*coords, channel.reshape(-1)], order=1, mode="reflect")
    return out.reshape(*rows.shape, 3)


def test_linear_reflect_sampling_is_bit_exact_far_outside_and_on_edges() -> None:
    """Real displacements stay within a few pixels; this covers every branch of scipy's 'reflect' fold."""
    rng = np.random.default_rng(3)
    height, width = 37, 53
    image = rng.random((height, width, 3), dtype=np.float32)
    special = [-1e-300, -1e-15, -1e-16, 0.0, -0.0, -0.5, -1.0, -1.5, 0.5]
    special += [
        n + d for n in (height, -height, 2 * height, -2 * height, 5 * height) for d in (-1, -0.5, 0, 1e-9)
    ]
    rows = np.concatenate(
        [np.array(special), rng.uniform(-6 * height, 6 * height, height * width - len(special))]
    )
    cols = np.concatenate(
        [rng.uniform(-6 * width, 6 * width, height * width - len(special)), np.array(special)]
    )
    rows, cols = rows.reshape(height, width), cols.reshape(height, width)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]
    ours = _map_linear_reflect(batch, torch.from_numpy(rows)[None], torch.from_numpy(cols)[None])
    np.testing.assert_array_equal(ours[0].permute(1, 2, 0).numpy(), _bits_of_scipy(image, rows, cols))


# ---------------------------------------------------------------- seeding, batches, float input


def test_elastic_seed_and_image_id_choose_the_stream(photos: dict[str, np.ndarray]) -> None:
    image = corruption_helpers.crop(photos["chelsea"], 48, 48)
    out = corrupt(image, "elastic_transform", 5, seed=1, image_id="a")
    np.testing.assert_array_equal(out, corrupt(image, "elastic_transform", 5, seed=1, image_id="a"))
    assert not np.array_equal(out, corrupt(image, "elastic_transform", 5, seed=2, image_id="a"))
    assert not np.array_equal(out, corrupt(image, "elastic_transform", 5, seed=1, image_id="b"))


def _batch(photos: dict[str, np.ndarray]) -> torch.Tensor:
    """Three photos cropped to 96x128 as a uint8 (3, 3, H, W) batch."""
    crops = [corruption_helpers.crop(photos[p], 96, 128) for p in ("astronaut", "coffee", "china")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("name", NAMES)
def test_an_image_gets_the_same_result_in_any_batch(photos: dict[str, np.ndarray], name: str) -> None:
    batch, ids = _batch(photos), ["a", "b", "c"]
    together = corrupt_batch(batch, name, 4, seed=SEED, image_ids=ids)
    for i, image_id in enumerate(ids):
        alone = corrupt_batch(batch[i : i + 1], name, 4, seed=SEED, image_ids=[image_id])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=0)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", NAMES)
def test_float32_batch_agrees_with_uint8_within_one_level(
    photos: dict[str, np.ndarray], name: str, severity: int
) -> None:
    """pixelate rounds float input to its levels first, so it is exact; elastic_transform computes in
    float32 either way, from inputs that differ by float32's rounding of ``level / 255 * 255``."""
    batch, ids = _batch(photos), ["a", "b", "c"]
    exact = corrupt_batch(batch, name, severity, seed=SEED, image_ids=ids)
    fast = corrupt_batch(batch.to(torch.float32) / 255.0, name, severity, seed=SEED, image_ids=ids)
    assert fast.dtype == torch.float32
    share, largest = corruption_helpers.mismatch(
        (fast * 255.0).round().to(torch.uint8).numpy(), exact.numpy()
    )
    assert largest <= 1 and share < 1e-3, (share, largest)
    if name == "pixelate":
        assert share == 0.0


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_codecs_agree_with_pillow_byte_for_byte(photos: dict[str, np.ndarray], severity: int) -> None:
    """torchvision's libjpeg round trip (the one used) and Pillow's (its fallback, the reference's own) give
    the same pixels, on photos of odd and even sizes."""
    from saliqa.corrupt.digital import JPEG_QUALITY, _jpeg_with_pillow, _jpeg_with_torchvision

    quality = JPEG_QUALITY[severity - 1]
    for name, photo in photos.items():
        if photo.ndim != 3 or photo.shape[2] != 3:
            continue  # grey photos reach the codec as three equal channels, tested with the rest
        for crop in (photo[:375, :500], photo[:101, :77]):
            image = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)
            ours, pillows = _jpeg_with_torchvision(image, quality), _jpeg_with_pillow(image, quality)
            assert ours.shape == pillows.shape == image.shape
            assert torch.equal(ours, pillows), f"{name} {tuple(crop.shape)} quality {quality}"
