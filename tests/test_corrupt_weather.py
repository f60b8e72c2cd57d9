"""frost and fog: parity with imagecorruptions 1.1.5 fed our random draws, the texture resize, the float path.

The reference draws from numpy's global ``np.random.uniform`` / ``randint``; the tests replace those with
functions that hand out our draws (checking the arguments on the way), so both sides compute from the same
random values. fog is then bit-exact. frost is bit-exact once the reference's ``cv2.resize`` hands out our
enlarged texture; with OpenCV's own resize (Intel IPP on x86) about one texture value in 1e5 (at most 3e-4)
differs by one level, at near-ties of a half level (see ``test_texture_resize_matches_cv2_up_to_near_ties``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import corruption_helpers
import numpy as np
import pytest
import torch

from saliqa.corrupt import CORRUPTIONS, corrupt, corrupt_batch, corruption_rng, weather
from saliqa.errors import CorruptionError

icc = pytest.importorskip("imagecorruptions.corruptions", reason="parity tests need imagecorruptions-imaug")
cv2 = pytest.importorskip("cv2")

SEVERITIES = corruption_helpers.SEVERITIES
SEED = 7
# (photo, height, width): odd small crops, a wide one, the study's 224x224, grey 2-D and (H, W, 1) among them.
CROP_CASES = (
    ("astronaut", 33, 47),
    ("camera_hw1", 33, 47),
    ("flower", 127, 255),
    ("camera", 127, 255),
    ("china", 224, 224),
)
# cv2.resize (IPP) vs ours on a texture: the share of values off by one level, all at near-ties of a half
# level. ~1e-5 in general; up to 3e-4 at simple scale ratios (5/3 for frost5 under an 700 x 1000 image),
# whose repeating sample positions make exact ties common, and IPP's float sums break ties either way.
RESIZE_TIE_SHARE = 5e-4
needs_ipp = pytest.mark.skipif(
    not cv2.ipp.useIPP(),
    reason="this OpenCV resizes without Intel IPP (fixed-point path), which saliqa does not follow",
)


def _upscaled(photo: np.ndarray, factor: int) -> np.ndarray:
    """A photo enlarged past every texture (the largest is 600 x 900), so frost must scale its texture."""
    return np.repeat(np.repeat(photo, factor, axis=0), factor, axis=1)


def _our_draws(image: np.ndarray, name: str, severity: int, image_id: object) -> dict[str, Any]:
    """The draws ``corrupt(image, name, severity, seed=SEED, image_id=image_id)`` makes."""
    chw = torch.zeros((3, *image.shape[:2]), dtype=torch.float64)
    return CORRUPTIONS[name].draw(chw, severity, corruption_rng(SEED, image_id, name, severity))


# ---------------------------------------------------------------- the reference, fed our draws


@contextmanager
def _feeding_fog(monkeypatch: pytest.MonkeyPatch, uniforms: np.ndarray) -> Iterator[None]:
    """The reference's ``np.random.uniform`` hands out ``uniforms`` in order; all must be used."""
    used = 0

    def uniform(low: float, high: float, size: tuple[int, int]) -> np.ndarray:
        nonlocal used
        values = uniforms[used : used + int(np.prod(size))].reshape(size)
        used += values.size
        assert low == -high and np.all((values >= low) & (values < high)), "draw with other bounds"
        return values

    with monkeypatch.context() as patch:
        patch.setattr(icc.np.random, "uniform", uniform)
        yield
    assert used == uniforms.size, "the reference used fewer uniforms than we drew"


@contextmanager
def _feeding_frost(
    monkeypatch: pytest.MonkeyPatch, draws: dict[str, Any], image_shape: tuple[int, int], our_resize: bool
) -> Iterator[None]:
    """The reference's ``randint`` hands out our texture and offsets, checking its bounds against ours.

    With ``our_resize`` its ``cv2.resize`` returns our enlarged texture (checking the decoded source and
    the size it asks for), isolating everything but OpenCV's rounding.
    """
    height, width = image_shape
    texture_height, texture_width = weather._enlarged_size(draws["texture"], height, width)
    expected = [((6,), draws["texture"]), ((0, texture_height - height), draws["top"])]
    expected.append(((0, texture_width - width), draws["left"]))
    calls = iter(expected)

    def randint(*args: int) -> int:
        bounds, value = next(calls)
        assert args == bounds, f"reference drew randint{args}, we drew from {bounds}"
        return value

    def resize(source: np.ndarray, dsize: tuple[int, int], interpolation: int) -> np.ndarray:
        assert interpolation == cv2.INTER_CUBIC and dsize == (texture_width, texture_height)
        texture = weather._texture(draws["texture"]).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(source, texture[..., ::-1], err_msg="cv2.imread and Pillow disagree")
        enlarged = weather._enlarged_texture(draws["texture"], height, width)
        return np.ascontiguousarray(enlarged.permute(1, 2, 0).numpy()[..., ::-1])

    with monkeypatch.context() as patch:
        patch.setattr(icc.np.random, "randint", randint)
        if our_resize:
            patch.setattr(icc.cv2, "resize", resize)
        yield
    assert next(calls, None) is None, "the reference drew fewer integers than we did"


def _fog_pair(
    monkeypatch: pytest.MonkeyPatch, image: np.ndarray, severity: int, image_id: object = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(ours, the reference's) fog of ``image`` from the same uniforms."""
    ours = corrupt(image, "fog", severity, seed=SEED, image_id=image_id)
    with _feeding_fog(monkeypatch, _our_draws(image, "fog", severity, image_id)["uniform"]):
        return ours, corruption_helpers.reference(image, "fog", severity)


def _frost_pair(
    monkeypatch: pytest.MonkeyPatch, image: np.ndarray, severity: int, image_id: object, our_resize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(ours, the reference's) frost of ``image`` from the same texture and crop."""
    ours = corrupt(image, "frost", severity, seed=SEED, image_id=image_id)
    draws = _our_draws(image, "frost", severity, image_id)
    with _feeding_frost(monkeypatch, draws, image.shape[:2], our_resize):
        return ours, corruption_helpers.reference(image, "frost", severity)


def _id_for_texture(image: np.ndarray, severity: int, texture: int) -> int:
    """An image id whose frost draw picks ``texture``, so that a test can cover all six."""
    return next(i for i in range(1000) if _our_draws(image, "frost", severity, i)["texture"] == texture)


# ---------------------------------------------------------------- fog


def test_fog_plasma_fractal_is_bit_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    for map_size, severity in ((32, 1), (256, 3), (512, 5)):
        decay = weather.FOG_STRENGTH_DECAY[severity - 1][1]
        image = torch.zeros(3, map_size, map_size // 2 + 1)  # the larger side sets the map size
        uniforms = weather.draw_fog(image, severity, np.random.default_rng(map_size))["uniform"]
        assert uniforms.shape == (map_size * map_size - 1,)
        ours = weather.plasma_fractal(torch.from_numpy(uniforms)[None], map_size, decay)[0]
        assert ours.dtype == torch.float32
        plain = weather._diamond_square_levels(  # what serves where TorchScript does not
            torch.from_numpy(uniforms)[None], map_size, weather._wibbles(map_size, decay)
        )[0]
        torch.testing.assert_close(plain, ours, rtol=0, atol=0)
        with _feeding_fog(monkeypatch, uniforms):
            np.testing.assert_array_equal(ours.numpy(), icc.plasma_fractal(map_size, decay))


def test_the_fractal_runs_as_torchscript() -> None:
    """Scripted, the fractal's small ops do not hand the GIL between threads (see ``_diamond_square``)."""
    assert isinstance(weather._diamond_square(), torch.jit.ScriptFunction)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_fog_is_bit_exact_on_photo_crops(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray], severity: int
) -> None:
    for photo_name, height, width in CROP_CASES:
        image = corruption_helpers.crop(photos[photo_name], height, width)
        ours, ref = _fog_pair(monkeypatch, image, severity)
        np.testing.assert_array_equal(ours, ref, err_msg=f"fog {severity} on {photo_name} {height}x{width}")


def test_fog_is_bit_exact_on_a_full_size_photo(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray]
) -> None:
    for severity in SEVERITIES:  # 427 x 640: a 1024 x 1024 fractal
        ours, ref = _fog_pair(monkeypatch, photos["china"], severity, image_id="china.jpg")
        np.testing.assert_array_equal(ours, ref, err_msg=f"fog {severity} on china")


# ---------------------------------------------------------------- frost


def test_textures_decode_to_cv2_imread_pixels() -> None:
    """Pillow's PNG and JPEG decoding of the six textures gives exactly cv2.imread's pixels (BGR flipped)."""
    for index in range(len(weather.TEXTURE_FILES)):
        bgr = cv2.imread(str(weather.texture_path(index)))
        np.testing.assert_array_equal(weather._texture(index).permute(1, 2, 0).numpy(), bgr[..., ::-1])


@needs_ipp
def test_texture_resize_matches_cv2_up_to_near_ties() -> None:
    """Our resize vs cv2.resize INTER_CUBIC on the real textures, as frost enlarges them.

    With IPP (OpenCV's default on x86) at most RESIZE_TIE_SHARE of the values differ, by one level, and only
    where the exact bicubic value lies within 1e-4 of a half level. OpenCV's own fixed-point path (IPP off) rounds
    differently on a few percent of values; the reference does not use it here.
    """
    for index in range(len(weather.TEXTURE_FILES)):
        texture = weather._texture(index)
        for image_size in ((224, 224), (700, 1000)):
            height, width = weather._enlarged_size(index, *image_size)
            exact = weather.cubic_resample(texture, height, width).permute(1, 2, 0).numpy()[..., ::-1]
            ours = weather.resize_cubic(texture, height, width).permute(1, 2, 0).numpy()[..., ::-1]
            bgr = np.ascontiguousarray(texture.permute(1, 2, 0).numpy()[..., ::-1])
            ref = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_CUBIC)
            share, largest = corruption_helpers.mismatch(ours, ref)
            assert share <= RESIZE_TIE_SHARE and largest <= 1, (index, image_size, share, largest)
            near_tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-4
            assert np.all(near_tie[ours != ref]), (index, image_size)
    cv2.ipp.setUseIPP(False)  # the last texture and size again, through OpenCV's own code
    try:
        fixed_point = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_CUBIC)
    finally:
        cv2.ipp.setUseIPP(True)
    share, largest = corruption_helpers.mismatch(ours, fixed_point)
    assert 1e-3 < share < 0.1 and largest == 1


# (photo, height, width, upscale): crops, the full-size photo, a 2x photo larger than every texture, and a
# wide one whose width alone exceeds the textures'.
FROST_CASES = (
    ("astronaut", 33, 47, 1),
    ("camera_hw1", 127, 255, 1),
    ("china", 224, 224, 1),
    ("china", 427, 640, 1),
    ("coffee", 400, 600, 2),
    ("china", 300, 1000, 2),
)


@pytest.mark.parametrize("case", FROST_CASES, ids=lambda case: f"{case[0]}-{case[1]}x{case[2]}")
def test_frost_is_bit_exact_given_the_texture_resize(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray], case: tuple[str, int, int, int]
) -> None:
    """Every severity, and all six textures across the cases (each severity picks another)."""
    photo_name, height, width, factor = case
    image = corruption_helpers.crop(_upscaled(photos[photo_name], factor), height, width)
    first = FROST_CASES.index(case)
    for severity in SEVERITIES:
        texture = (first + severity) % len(weather.TEXTURE_FILES)
        image_id = _id_for_texture(image, severity, texture)
        ours, ref = _frost_pair(monkeypatch, image, severity, image_id, our_resize=True)
        np.testing.assert_array_equal(ours, ref, err_msg=f"frost {severity}, texture {texture}, {case}")


@needs_ipp
@pytest.mark.parametrize("case", [FROST_CASES[2], FROST_CASES[4]], ids=["224x224", "800x1200"])
def test_frost_matches_the_unpatched_reference_up_to_resize_ties(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray], case: tuple[str, int, int, int]
) -> None:
    photo_name, height, width, factor = case
    image = corruption_helpers.crop(_upscaled(photos[photo_name], factor), height, width)
    for severity in SEVERITIES:
        ours, ref = _frost_pair(monkeypatch, image, severity, "img", our_resize=False)
        share, largest = corruption_helpers.mismatch(ours, ref)
        assert share <= RESIZE_TIE_SHARE and largest <= 1, (severity, share, largest)


def test_missing_texture_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray]
) -> None:
    image = corruption_helpers.crop(photos["coffee"], 64, 64)
    for attribute, value, message in (
        ("TEXTURE_DISTRIBUTION", "imagecorruptions-imaug-not-here", "pip install imagecorruptions-imaug"),
        ("TEXTURE_FILES", ("frost9.png",) * 6, "frost9.png is missing"),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(weather, attribute, value)
            weather._texture.cache_clear()
            with pytest.raises(CorruptionError, match=message):
                corrupt(image, "frost", 1)
        weather._texture.cache_clear()


# ---------------------------------------------------------------- batches and the float path


@pytest.mark.parametrize("name", ["fog", "frost"])
def test_an_image_gets_the_same_output_alone_or_in_a_batch(photos: dict[str, np.ndarray], name: str) -> None:
    images = [corruption_helpers.crop(photos[p], 96, 128) for p in ("astronaut", "chelsea", "flower")]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    before = batch.clone()
    ids = ["a.jpg", "b.jpg", "c.jpg"]
    together = corrupt_batch(batch, name, 4, seed=SEED, image_ids=ids)
    torch.testing.assert_close(batch, before, rtol=0, atol=0)
    for i, image_id in enumerate(ids):
        alone = corrupt_batch(batch[i : i + 1], name, 4, seed=SEED, image_ids=[image_id])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=0)
        np.testing.assert_array_equal(
            alone[0].permute(1, 2, 0).numpy(), corrupt(images[i], name, 4, seed=SEED, image_id=image_id)
        )
    if name == "frost":  # the batch must exercise the per-texture gather with more than one texture
        textures = {_our_draws(images[i], name, 4, image_id)["texture"] for i, image_id in enumerate(ids)}
        assert len(textures) > 1


@pytest.mark.parametrize("name", ["fog", "frost"])
def test_float32_batch_is_within_one_level_of_the_uint8_path(
    photos: dict[str, np.ndarray], name: str
) -> None:
    images = [corruption_helpers.crop(photos[p], 127, 255) for p in ("china", "coffee")]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    for severity in SEVERITIES:
        exact = corrupt_batch(batch, name, severity, seed=SEED).to(torch.int16)
        fast = corrupt_batch(batch.float() / 255.0, name, severity, seed=SEED)
        assert fast.dtype == torch.float32
        levels = (fast * 255.0).round().to(torch.int16)
        diff = (levels - exact).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.05, (severity, diff.float().mean())


# ---------------------------------------------------------------- big sweep


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fog", "frost"])
def test_sweep_over_all_photos_sizes_and_severities(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray], name: str
) -> None:
    for photo_name, photo in photos.items():
        for height, width in ((32, 32), (33, 47), (127, 255), (224, 224), photo.shape[:2]):
            image = corruption_helpers.crop(photo, height, width)
            for severity in SEVERITIES:
                for image_id in range(3):
                    if name == "fog":
                        ours, ref = _fog_pair(monkeypatch, image, severity, image_id)
                    else:
                        ours, ref = _frost_pair(monkeypatch, image, severity, image_id, our_resize=True)
                    np.testing.assert_array_equal(ours, ref, err_msg=f"{name} {severity} {photo_name}")
