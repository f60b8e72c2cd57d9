"""saliqa.corrupt.noise: bit-exact with imagecorruptions 1.1.5 when the reference is handed our random values.

The reference draws from numpy's global state (or, for impulse_noise, from the generator it is given), so a
test runs our draw from the image's own stream, feeds exactly those values to the reference in place of its
numpy call, and requires the same bytes. The replaced call's arguments are recorded and replayed on a fresh
copy of the stream: that proves our draw is what numpy's Generator gives for the reference's own request.
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

ic = pytest.importorskip("imagecorruptions", reason="parity tests need imagecorruptions-imaug 1.1.5")

SEVERITIES = corruption_helpers.SEVERITIES
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
NUMPY_CALL = {"gaussian_noise": "normal", "speckle_noise": "normal", "shot_noise": "poisson"}
DRAWN = {"gaussian_noise": "noise", "speckle_noise": "noise", "shot_noise": "counts"}
# (photo, crop height, crop width): every photo at an odd small size, grey 2-D and (H, W, 1) among them,
# then wide crops and the study's 224x224; the full-size china.jpg runs in its own test.
CROP_CASES = corruption_helpers.CROP_CASES
SEED, IMAGE_ID = 7, "img_001.jpg"


def _as_chw(image: np.ndarray) -> torch.Tensor:
    """The (3, H, W) float64 image a draw function sees on the exact path (grey stacked, as the registry)."""
    grey = image.ndim == 2 or image.shape[2] == 1
    rgb = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2) if grey else image
    return torch.tensor(rgb).permute(2, 0, 1).to(torch.float64)


def _stream(name: str, severity: int) -> np.random.Generator:
    return corruption_rng(SEED, IMAGE_ID, name, severity)


def _our_draws_hwc(name: str, image: np.ndarray, severity: int) -> dict[str, np.ndarray]:
    """Our draws for ``image``, from the stream ``corrupt`` uses, back in the reference's (H, W, 3) layout."""
    draw = CORRUPTIONS[name].draw
    assert draw is not None
    drawn = draw(_as_chw(image), severity, _stream(name, severity))
    return {key: np.moveaxis(np.asarray(value), 0, -1) for key, value in drawn.items()}


@contextmanager
def _numpy_returns(
    function: str, value: np.ndarray
) -> Iterator[list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Make ``np.random.<function>`` return ``value`` once; yields the list of calls it received."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append((args, kwargs))
        return value

    original = getattr(np.random, function)
    setattr(np.random, function, fake)
    try:
        yield calls
    finally:
        setattr(np.random, function, original)


def _reference_on_our_draws(name: str, image: np.ndarray, severity: int) -> np.ndarray:
    """The reference's output when its random call returns our values (checked to be the same request)."""
    if name == "impulse_noise":  # skimage draws from the generator it is given: hand it our stream
        return corruption_helpers.reference(image, name, severity, seed=_stream(name, severity))
    ours = _our_draws_hwc(name, image, severity)[DRAWN[name]]
    with _numpy_returns(NUMPY_CALL[name], ours) as calls:
        ref = corruption_helpers.reference(image, name, severity)
    [(args, kwargs)] = calls
    replayed = getattr(_stream(name, severity), NUMPY_CALL[name])(*args, **kwargs)
    np.testing.assert_array_equal(ours, replayed, err_msg=f"{name}: our draw is not the reference's request")
    return ref


def _assert_parity(image: np.ndarray, name: str, severity: int, what: str) -> None:
    ours = corrupt(image, name, severity, seed=SEED, image_id=IMAGE_ID)
    assert ours.dtype == np.uint8 and ours.shape == (*image.shape[:2], 3)
    ref = _reference_on_our_draws(name, image, severity)
    np.testing.assert_array_equal(ours, ref, err_msg=f"{name} severity {severity} on {what}")


# ---------------------------------------------------------------- parity with the reference


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", NOISES)
def test_bit_exact_on_photo_crops(photos: dict[str, np.ndarray], name: str, severity: int) -> None:
    for photo_name, height, width in CROP_CASES:
        image = corruption_helpers.crop(photos[photo_name], height, width)
        _assert_parity(image, name, severity, f"{photo_name} {height}x{width}")


@pytest.mark.parametrize("name", NOISES)
def test_bit_exact_on_a_full_size_photo(photos: dict[str, np.ndarray], name: str) -> None:
    for severity in SEVERITIES:
        _assert_parity(photos["china"], name, severity, "china 427x640")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOISES)
def test_bit_exact_on_every_full_size_photo(photos: dict[str, np.ndarray], name: str) -> None:
    for photo_name, photo in photos.items():
        for severity in SEVERITIES:
            _assert_parity(photo, name, severity, f"{photo_name} {photo.shape}")


def test_impulse_draws_are_skimages_own(photos: dict[str, np.ndarray]) -> None:
    """skimage.util.random_noise on the same stream flips and salts exactly the values we do."""
    from skimage.util import random_noise

    image = corruption_helpers.crop(photos["coffee"], 40, 64)
    for severity in SEVERITIES:
        draws = _our_draws_hwc("impulse_noise", image, severity)
        amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
        noisy = random_noise(image / 255.0, "s&p", _stream("impulse_noise", severity), amount=amount)
        flipped, salted = draws["flipped"], draws["salted"]
        np.testing.assert_array_equal(noisy == 1.0, np.where(flipped, salted, image == 255))
        np.testing.assert_array_equal(noisy == 0.0, np.where(flipped, ~salted, image == 0))


# ---------------------------------------------------------------- seeding, batches, float input


@pytest.mark.parametrize("name", NOISES)
def test_seed_and_image_id_choose_the_stream(photos: dict[str, np.ndarray], name: str) -> None:
    image = corruption_helpers.crop(photos["chelsea"], 48, 48)
    out = corrupt(image, name, 3, seed=1, image_id="a")
    np.testing.assert_array_equal(out, corrupt(image, name, 3, seed=1, image_id="a"))
    assert not np.array_equal(out, corrupt(image, name, 3, seed=2, image_id="a"))
    assert not np.array_equal(out, corrupt(image, name, 3, seed=1, image_id="b"))


def _batch(photos: dict[str, np.ndarray]) -> torch.Tensor:
    """Three photos cropped to 96x128 as a uint8 (3, 3, H, W) batch."""
    crops = [corruption_helpers.crop(photos[p], 96, 128) for p in ("astronaut", "coffee", "china")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("name", NOISES)
def test_an_image_gets_the_same_noise_in_any_batch(photos: dict[str, np.ndarray], name: str) -> None:
    batch, ids = _batch(photos), ["a", "b", "c"]
    together = corrupt_batch(batch, name, 4, seed=SEED, image_ids=ids)
    for i, image_id in enumerate(ids):
        alone = corrupt_batch(batch[i : i + 1], name, 4, seed=SEED, image_ids=[image_id])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=0)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", NOISES)
def test_float32_batch_agrees_with_uint8_within_one_level(
    photos: dict[str, np.ndarray], name: str, severity: int
) -> None:
    """Float32 arithmetic can land a value on the other side of a level boundary; the draws are the same.

    shot_noise draws from the uint8 level of each value (see ``draw_shot_noise``), so its draws agree too.
    """
    batch, ids = _batch(photos), ["a", "b", "c"]
    exact = corrupt_batch(batch, name, severity, seed=SEED, image_ids=ids)
    fast = corrupt_batch(batch.to(torch.float32) / 255.0, name, severity, seed=SEED, image_ids=ids)
    assert fast.dtype == torch.float32
    share, largest = corruption_helpers.mismatch(
        (fast * 255.0).round().to(torch.uint8).numpy(), exact.numpy()
    )
    assert largest <= 1 and share < 1e-3, (share, largest)
