"""saliqa.corrupt.snow: bit-exact parity with imagecorruptions 1.1.5 when the reference is fed our draws.

The reference draws its flake layer with ``np.random.normal`` and the fall angle with ``np.random.uniform``;
both are replaced by functions that hand out our draws (checking the reference asks for what we drew).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import corruption_helpers
import numpy as np
import pytest
import torch

from saliqa.corrupt import CORRUPTIONS, corrupt, corrupt_batch, corruption_rng, snow

icc = pytest.importorskip("imagecorruptions.corruptions", reason="parity tests need imagecorruptions-imaug")
cv2 = pytest.importorskip("cv2")

SEVERITIES = corruption_helpers.SEVERITIES
SEED = 0
CROP_CASES = corruption_helpers.CROP_CASES


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _draws(image: np.ndarray, severity: int, image_id: object) -> dict[str, Any]:
    """The draws ``corrupt(image, "snow", severity, seed=SEED, image_id=image_id)`` makes."""
    chw = torch.zeros((3, *image.shape[:2]), dtype=torch.float64)
    return CORRUPTIONS["snow"].draw(chw, severity, corruption_rng(SEED, image_id, "snow", severity))


@contextmanager
def _feeding_snow(monkeypatch: pytest.MonkeyPatch, draws: dict[str, Any], severity: int) -> Iterator[None]:
    """The reference's normal layer and uniform angle are ours; the arguments must be the ones we drew with."""
    mean, sd = snow.SNOW[severity - 1][:2]

    def normal(size: tuple[int, int], loc: float, scale: float) -> np.ndarray:
        assert (tuple(size), loc, scale) == (draws["flakes"].shape, mean, sd)
        return draws["flakes"].copy()

    def uniform(low: float, high: float) -> float:
        assert (low, high) == snow.SNOW_ANGLE
        return draws["angle"]

    with monkeypatch.context() as patch:
        patch.setattr(icc.np.random, "normal", normal)
        patch.setattr(icc.np.random, "uniform", uniform)
        yield


def _assert_parity(
    monkeypatch: pytest.MonkeyPatch, image: np.ndarray, severity: int, image_id: object
) -> None:
    with _feeding_snow(monkeypatch, _draws(image, severity, image_id), severity):
        ref = corruption_helpers.reference(image, "snow", severity)
    ours = corrupt(image, "snow", severity, seed=SEED, image_id=image_id)
    assert ours.dtype == np.uint8 and ours.shape == (*image.shape[:2], 3)
    np.testing.assert_array_equal(ours, ref, err_msg=f"severity {severity}, {image.shape}, id {image_id}")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_snow_is_bit_exact_given_our_draws(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray], severity: int
) -> None:
    for i, (photo, height, width) in enumerate(CROP_CASES):
        _assert_parity(monkeypatch, corruption_helpers.crop(photos[photo], height, width), severity, i)


def test_snow_is_bit_exact_on_a_full_size_photo(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray]
) -> None:
    for severity in SEVERITIES:
        _assert_parity(monkeypatch, photos["china"], severity, "china.jpg")


@pytest.mark.slow
def test_snow_on_every_full_size_photo(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray]
) -> None:
    for photo, image in photos.items():
        for severity in SEVERITIES:
            _assert_parity(monkeypatch, image, severity, photo)


def test_grey_is_opencvs_float32_rgb2gray_to_an_ulp() -> None:
    """OpenCV's vector loop is repeated exactly; its scalar tail (the last W mod 8 pixels of a row on AVX2)
    rounds some sums one float32 ulp apart."""
    rng = np.random.default_rng(0)
    rgb = (rng.integers(0, 256, (40, 47, 3)).astype(np.float32) / 255.0).astype(np.float32)
    ref = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ours = snow._rgb_to_grey(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=2.0**-23, atol=0)
    assert np.mean(ours != ref) < 0.02


def _batch(photos: dict[str, np.ndarray]) -> torch.Tensor:
    crops = [corruption_helpers.crop(photos[n], 64, 96) for n in ("astronaut", "coffee", "chelsea")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)


def test_an_image_gets_the_same_snow_alone_or_in_a_batch(photos: dict[str, np.ndarray]) -> None:
    batch = _batch(photos)
    before = batch.clone()
    ids = ["a.jpg", "b.jpg", "c.jpg"]
    together = corrupt_batch(batch, "snow", 4, seed=SEED, image_ids=ids)
    for i, image_id in enumerate(ids):
        alone = corrupt_batch(batch[i : i + 1], "snow", 4, seed=SEED, image_ids=[image_id])
        assert torch.equal(alone[0], together[i]), image_id
    assert torch.equal(batch, before)
    assert not torch.equal(together[0], together[1])


@pytest.mark.parametrize("severity", SEVERITIES)
def test_float32_batch_is_within_one_level_of_the_exact_path(
    photos: dict[str, np.ndarray], severity: int
) -> None:
    """float32 can flip a flake across the threshold or a rounding level; allow one level on 1% of values."""
    batch = _batch(photos)
    ids = ["a", "b", "c"]
    exact = corrupt_batch(batch, "snow", severity, seed=SEED, image_ids=ids)
    fast = corrupt_batch(batch.float() / 255, "snow", severity, seed=SEED, image_ids=ids)
    assert fast.dtype == torch.float32
    diff = (torch.round(fast * 255) - exact.float()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.01
