"""spatter: bit-exact with imagecorruptions 1.1.5 given the same liquid layer, and its OpenCV steps vs cv2.

The reference draws its layer from numpy's global ``np.random.normal``; the parity tests hand it ours
instead (monkeypatched), so every remaining difference would be in the arithmetic. There is none: all five
severities match to the byte on real photos, odd sizes included.
"""

from __future__ import annotations

import corruption_helpers
import numpy as np
import pytest
import torch

from saliqa.corrupt import corrupt, corrupt_batch, corruption_rng
from saliqa.corrupt.spatter import (
    SPATTER,
    canny,
    chamfer_distance,
    draw_spatter,
    equalize_hist,
    spatter,
    water_shading,
)

ic = corruption_helpers.reference_module()
cv2 = pytest.importorskip("cv2", reason="the OpenCV ports are checked against cv2 (a reference dependency)")

SEVERITIES = corruption_helpers.SEVERITIES
WATER = (1, 2, 3)
# (photo, crop height, crop width): odd small crops of every photo (grey 2-D and (H, W, 1) among them),
# wide and square crops of a few; the full-size photo runs in its own test.
CROP_CASES = corruption_helpers.CROP_CASES


def _layer(image: np.ndarray, severity: int, seed: int, image_id: object) -> np.ndarray:
    """Our liquid layer for ``image``: the draw ``corrupt`` makes from its stream (it needs only the size)."""
    chw = torch.zeros(3, *image.shape[:2])
    draw = draw_spatter(chw, severity, corruption_rng(seed, image_id, "spatter", severity))
    return np.asarray(draw["liquid"])


def _reference(image: np.ndarray, severity: int, layer: np.ndarray) -> np.ndarray:
    """imagecorruptions' spatter with ``layer`` in place of its ``np.random.normal`` draw."""
    expected = (*SPATTER[severity - 1][:2], layer.shape)

    def normal(loc: float = 0.0, scale: float = 1.0, size: tuple[int, ...] | None = None) -> np.ndarray:
        assert (loc, scale, tuple(size or ())) == expected  # our table and draw size are the reference's
        return layer.copy()

    with pytest.MonkeyPatch.context() as patch, np.errstate(invalid="ignore"):
        patch.setattr(ic.corruptions.np.random, "normal", normal)
        return ic.corrupt(image, corruption_name="spatter", severity=severity)


def _assert_parity(image: np.ndarray, severity: int, what: str, seed: int = 0) -> None:
    ours = corrupt(image, "spatter", severity, seed=seed, image_id=what)
    ref = _reference(image, severity, _layer(image, severity, seed, what))
    assert ours.dtype == np.uint8 and ours.shape == (*image.shape[:2], 3)
    np.testing.assert_array_equal(ours, ref, err_msg=f"spatter severity {severity} on {what}")


# ---------------------------------------------------------------- parity with the reference


@pytest.mark.parametrize("severity", SEVERITIES)
def test_bit_exact_on_photo_crops(photos: dict[str, np.ndarray], severity: int) -> None:
    for name, height, width in CROP_CASES:
        image = corruption_helpers.crop(photos[name], height, width)
        _assert_parity(image, severity, f"{name} {height}x{width}")


def test_bit_exact_on_a_full_size_photo(photos: dict[str, np.ndarray]) -> None:
    for severity in SEVERITIES:
        _assert_parity(photos["china"], severity, "china 427x640")


@pytest.mark.slow
@pytest.mark.parametrize("severity", SEVERITIES)
def test_bit_exact_over_many_draws(photos: dict[str, np.ndarray], severity: int) -> None:
    """Twenty streams per size, every photo at full size: a few minutes."""
    for seed in range(20):
        for name, height, width in CROP_CASES:
            _assert_parity(corruption_helpers.crop(photos[name], height, width), severity, name, seed)
    for name, photo in photos.items():
        _assert_parity(photo, severity, f"{name} full size")


def _ours_with_layer(image: np.ndarray, severity: int, layer: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Our spatter applied to ``image`` with a given layer, on the exact (float64) or float32 path."""
    x = torch.tensor(image).permute(2, 0, 1)[None].to(dtype)
    out = spatter(x, severity, {"liquid": torch.tensor(layer)[None]})
    assert not out.isnan().any()
    return out.to(torch.uint8)[0].permute(1, 2, 0).numpy()


def test_a_layer_without_drops_gives_the_reference_black_image(photos: dict[str, np.ndarray]) -> None:
    """No drop at all (tiny images at severity 1, now and then): the reference divides 0 by 0 and its
    uint8 cast turns the NaNs into 0. We return that black image explicitly, on both paths."""
    image = corruption_helpers.crop(photos["coffee"], 40, 56)
    dry = np.full(image.shape[:2], 0.5)
    ref = _reference(image, 1, dry)
    assert not ref.any()
    for dtype in (torch.float64, torch.float32):
        np.testing.assert_array_equal(_ours_with_layer(image, 1, dry, dtype), ref)


@pytest.mark.parametrize("severity", WATER)
def test_layer_values_above_one_wrap_around_as_in_the_reference(
    photos: dict[str, np.ndarray], severity: int
) -> None:
    """ "Nearest" padding weighs a corner draw heavily, so the smoothed layer can pass 1 there; the
    reference's uint8 cast then keeps the low byte (found by the slow sweep, at 224x224 and 127x255)."""
    image = corruption_helpers.crop(photos["astronaut"], 48, 64)
    layer = np.full(image.shape[:2], 0.65)
    layer[:3, :3] = 4.0
    layer[-2:, 20:24] = 3.0
    layer[10:30:4, 30:50:3] = 1.0  # some ordinary drops elsewhere
    ref = _reference(image, severity, layer)
    np.testing.assert_array_equal(_ours_with_layer(image, severity, layer, torch.float64), ref)


# ---------------------------------------------------------------- the OpenCV steps


def _levels(severity: int, height: int, width: int, seed: int) -> np.ndarray:
    """The reference's uint8 liquid layer before Canny, from a seeded draw."""
    from skimage.filters import gaussian

    loc, scale, sigma, threshold = SPATTER[severity - 1][:4]
    layer = gaussian(np.random.default_rng(seed).normal(loc, scale, (height, width)), sigma=sigma)
    layer[layer < threshold] = 0
    return (layer * 255).astype(np.uint8)


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).to(torch.int32)


@pytest.mark.parametrize("severity", WATER)
def test_canny_matches_opencv_on_liquid_layers(severity: int) -> None:
    for height, width in ((33, 47), (127, 255), (224, 224)):
        levels = [_levels(severity, height, width, seed) for seed in range(3)]
        ours = canny(_batch(levels), 50, 150).numpy()
        for i, level in enumerate(levels):
            np.testing.assert_array_equal(ours[i], cv2.Canny(level, 50, 150) > 0, err_msg=f"{height}x{width}")


def test_canny_matches_opencv_on_photos_and_noise(photos: dict[str, np.ndarray]) -> None:
    """Every gradient direction, ties and long weak chains: grey photos, and noise, at several thresholds."""
    grey = [corruption_helpers.crop(photos["camera"], 200, 240), photos["coffee"][:200, :240].mean(2)]
    noise = np.random.default_rng(0).integers(0, 256, (200, 240))
    images = [np.ascontiguousarray(g, dtype=np.uint8) for g in (*grey, noise)]
    for low, high in ((50, 150), (10, 40), (100, 101)):
        ours = canny(_batch(images), low, high).numpy()
        for i, image in enumerate(images):
            np.testing.assert_array_equal(ours[i], cv2.Canny(image, low, high) > 0, err_msg=f"{low} {high}")


def test_chamfer_distance_matches_opencv_truncated() -> None:
    """Sparse and dense zero pixels, and none at all (OpenCV's huge value, truncated like ours)."""
    rng = np.random.default_rng(1)
    for density in (0.0, 0.0005, 0.003, 0.02, 0.2):
        sources = rng.random((3, 121, 167)) < density
        ours = chamfer_distance(torch.from_numpy(sources), 20).numpy()
        for i, src in enumerate(sources):
            ref = cv2.distanceTransform(np.where(src, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
            np.testing.assert_array_equal(ours[i], np.minimum(ref, 20), err_msg=f"density {density}")


def test_equalize_hist_matches_opencv() -> None:
    """Full and narrow ranges, a level count that rounds halfway, and an image of one level."""
    rng = np.random.default_rng(2)
    images = [
        rng.integers(0, 256, (64, 80)),
        rng.integers(3, 21, (64, 80)),
        rng.binomial(20, 0.3, (64, 80)),
        np.where(rng.random((64, 80)) < 0.5, 7, 9),
        np.full((64, 80), 12),
    ]
    images = [image.astype(np.uint8) for image in images]
    ours = equalize_hist(_batch(images)).numpy()
    for i, image in enumerate(images):
        np.testing.assert_array_equal(ours[i], cv2.equalizeHist(image), err_msg=f"image {i}")


def _opencv_shading(level: np.ndarray) -> np.ndarray:
    """The reference's chain from the uint8 layer to ``dist``, with cv2."""
    dist = cv2.distanceTransform(255 - cv2.Canny(level, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    return cv2.blur(dist, (3, 3))


@pytest.mark.parametrize("severity", WATER)
def test_water_shading_matches_the_opencv_chain(severity: int) -> None:
    for height, width in ((33, 47), (160, 199)):
        levels = [_levels(severity, height, width, seed) for seed in range(4)]
        ours = water_shading(_batch(levels)).numpy()
        for i, level in enumerate(levels):
            np.testing.assert_array_equal(ours[i], _opencv_shading(level), err_msg=f"{height}x{width}")


# ---------------------------------------------------------------- batches, dtypes and draws


def _photo_batch(photos: dict[str, np.ndarray], height: int = 96, width: int = 128) -> torch.Tensor:
    crops = [
        corruption_helpers.crop(photos[name], height, width) for name in ("astronaut", "chelsea", "coffee")
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_float32_batch_is_within_one_level_of_the_exact_path(
    photos: dict[str, np.ndarray], severity: int
) -> None:
    """Water is float32 in the reference, so equal; mud's last blend is float64 there and float32 here."""
    batch = _photo_batch(photos)
    ids = ["a", "b", "c"]
    exact = corrupt_batch(batch, "spatter", severity, image_ids=ids).to(torch.int32)
    fast = corrupt_batch(batch.to(torch.float32) / 255, "spatter", severity, image_ids=ids)
    assert fast.dtype == torch.float32
    diff = (exact - (fast * 255).round().to(torch.int32)).abs()
    assert diff.max() <= 1
    assert diff.to(torch.float32).mean() < 1e-3


@pytest.mark.parametrize("severity", [2, 5])
def test_an_image_alone_or_in_a_batch_is_the_same(photos: dict[str, np.ndarray], severity: int) -> None:
    batch = _photo_batch(photos)
    before = batch.clone()
    together = corrupt_batch(batch, "spatter", severity, seed=3, image_ids=["x", "y", "z"])
    np.testing.assert_array_equal(batch.numpy(), before.numpy())
    for i, image_id in enumerate(["x", "y", "z"]):
        alone = corrupt(batch[i].permute(1, 2, 0).numpy(), "spatter", severity, seed=3, image_id=image_id)
        np.testing.assert_array_equal(together[i].permute(1, 2, 0).numpy(), alone)


def test_the_draw_is_the_image_sized_layer_from_its_own_stream() -> None:
    image = torch.zeros(3, 40, 52)
    for severity in SEVERITIES:
        a = draw_spatter(image, severity, np.random.default_rng(5))["liquid"]
        b = draw_spatter(image, severity, np.random.default_rng(5))["liquid"]
        loc, scale = SPATTER[severity - 1][:2]
        assert isinstance(a, np.ndarray) and a.shape == (40, 52) and a.dtype == np.float64
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, np.random.default_rng(5).normal(loc, scale, (40, 52)))


@pytest.mark.parametrize("severity", [1, 3])
def test_the_cpu_opencv_chain_and_the_tensor_port_give_the_same_batch(
    photos: dict[str, np.ndarray], severity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU shades through cv2 itself; with cv2 hidden, the port (what other devices run) gives the
    same pixels on both paths."""
    from saliqa.corrupt import spatter as spatter_module

    batch = _photo_batch(photos)
    ids = ["x", "y", "z"]
    with_cv2 = [corrupt_batch(b, "spatter", severity, seed=4, image_ids=ids) for b in (batch, batch / 255.0)]
    monkeypatch.setattr(spatter_module, "_opencv", lambda: None)
    ported = [corrupt_batch(b, "spatter", severity, seed=4, image_ids=ids) for b in (batch, batch / 255.0)]
    for ours, port in zip(with_cv2, ported, strict=True):
        assert torch.equal(ours, port)
