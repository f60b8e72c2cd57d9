"""saliqa.corrupt: the 19-name registry, its errors, and bit-exact parity with imagecorruptions 1.1.5."""

from __future__ import annotations

import corruption_helpers
import numpy as np
import pytest
import torch

from saliqa.corrupt import (
    CORRUPTIONS,
    Corruption,
    available_corruptions,
    check_corruption,
    corrupt,
    corruption_names,
)
from saliqa.corrupt.digital import hsv_to_rgb, rgb_to_hsv
from saliqa.errors import CorruptionError

ic = pytest.importorskip("imagecorruptions", reason="parity tests need imagecorruptions-imaug 1.1.5")

IMPLEMENTED = ("brightness", "contrast", "jpeg_compression", "saturate")
DETERMINISTIC = (
    *("defocus_blur", "zoom_blur", "gaussian_blur", "brightness"),
    *("contrast", "saturate", "jpeg_compression", "pixelate"),
)
SEVERITIES = (1, 2, 3, 4, 5)
# (photo, crop height, crop width): every photo at an odd small size, then wide and the study's 224x224 crop
# on a few each, grey 2-D and (H, W, 1) among them; the full-size china.jpg runs in its own test.
CROP_CASES = (
    *[(name, 33, 47) for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "camera_hw1")],
    *[(name, 33, 47) for name in ("china", "flower")],
    *[(name, 127, 255) for name in ("astronaut", "camera", "flower")],
    *[(name, 224, 224) for name in ("china", "camera_hw1")],
)
COMMON = [
    *("gaussian_noise", "shot_noise", "impulse_noise"),
    *("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    *("snow", "frost", "fog", "brightness"),
    *("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
]
EXTRA = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return corruption_helpers.photos()


_crop = corruption_helpers.crop


def _reference(image: np.ndarray, name: str, severity: int) -> np.ndarray:
    return ic.corrupt(image, corruption_name=name, severity=severity)


def _assert_parity(image: np.ndarray, name: str, severity: int, what: str) -> None:
    ours = corrupt(image, name, severity)
    ref = _reference(image, name, severity)
    assert ours.dtype == np.uint8 and ours.shape == (*image.shape[:2], 3)
    np.testing.assert_array_equal(ours, ref, err_msg=f"{name} severity {severity} on {what}")


# ---------------------------------------------------------------- parity with the reference


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", IMPLEMENTED)
def test_bit_exact_on_photo_crops(photos: dict[str, np.ndarray], name: str, severity: int) -> None:
    for photo_name, height, width in CROP_CASES:
        image = _crop(photos[photo_name], height, width)
        _assert_parity(image, name, severity, f"{photo_name} {height}x{width}")


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_bit_exact_on_full_size_photos(photos: dict[str, np.ndarray], name: str) -> None:
    for severity in SEVERITIES:
        _assert_parity(photos["china"], name, severity, "china 427x640")


def _colour_grid(step: int) -> np.ndarray:
    """Every ``step``-th level of R, G and B as one image: greys, ties for the max, black and white."""
    levels = np.arange(0, 256, step, dtype=np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1)
    return grid.reshape(-1, 4 * len(levels), 3)


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_bit_exact_on_a_colour_grid_with_all_hue_ties(name: str) -> None:
    grid = _colour_grid(15)  # 18^3 colours, every 15th level
    for severity in SEVERITIES:
        _assert_parity(grid, name, severity, "colour grid")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["brightness", "saturate", "contrast"])
def test_bit_exact_on_all_16m_colours(name: str) -> None:
    """Exhaustive: all 2^24 RGB colours, every severity (about a minute per corruption)."""
    everything = _colour_grid(1).reshape(4096, 4096, 3)
    for severity in SEVERITIES:
        for top in range(0, 4096, 512):
            _assert_parity(everything[top : top + 512], name, severity, f"all colours, rows {top}+")


def test_hsv_conversion_is_bit_exact_with_skimage() -> None:
    from skimage.color import hsv2rgb, rgb2hsv

    def planes(hwc: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).unsqueeze(0)

    def hwc(bchw: torch.Tensor) -> np.ndarray:
        return bchw[0].permute(1, 2, 0).numpy()

    rgb = _colour_grid(5) / 255.0
    h, s, v = rgb_to_hsv(planes(rgb))
    ref_hsv = rgb2hsv(rgb)
    np.testing.assert_array_equal(torch.stack([h, s, v], dim=-1)[0].numpy(), ref_hsv)
    np.testing.assert_array_equal(hwc(hsv_to_rgb(h, s, v)), hsv2rgb(ref_hsv))
    # off-grid HSV values, as brightness and saturate produce them
    hsv = np.random.default_rng(0).random((200, 300, 3))
    off = planes(hsv)
    np.testing.assert_array_equal(hwc(hsv_to_rgb(off[:, 0], off[:, 1], off[:, 2])), hsv2rgb(hsv))


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_output_is_new_uint8_rgb_and_input_untouched(photos: dict[str, np.ndarray], name: str) -> None:
    for image in (_crop(photos["coffee"], 40, 64), _crop(photos["camera"], 40, 64)):
        before = image.copy()
        out = corrupt(image, name, 2)
        assert out.dtype == np.uint8 and out.shape == (40, 64, 3)
        assert not np.shares_memory(out, image)
        np.testing.assert_array_equal(image, before)


def test_grey_inputs_agree_in_all_three_layouts(photos: dict[str, np.ndarray]) -> None:
    grey = _crop(photos["camera"], 64, 80)
    for name in IMPLEMENTED:
        out = corrupt(grey, name, 4)
        np.testing.assert_array_equal(out, corrupt(grey[:, :, None], name, 4))
        np.testing.assert_array_equal(out, corrupt(np.repeat(grey[:, :, None], 3, axis=2), name, 4))


def test_grey_stays_grey_except_under_saturate_shift(photos: dict[str, np.ndarray]) -> None:
    """Grey has hue 0 (red) and saturation 0; saturate 4-5 add 0.1-0.2 to S, so grey turns reddish.

    That is the reference's behaviour (ImageNet-C's too); the test pins it so nobody "fixes" it by accident.
    """
    grey = _crop(photos["camera"], 64, 80)
    for name, severity in [(n, s) for n in IMPLEMENTED for s in SEVERITIES]:
        out = corrupt(grey, name, severity).astype(int)
        tinted = name == "saturate" and severity >= 4
        assert (out[..., 0] >= out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        assert (out[..., 0] > out[..., 1]).any() == tinted, (name, severity)


def test_memory_layout_does_not_change_pixels(photos: dict[str, np.ndarray]) -> None:
    """contrast's per-channel mean is a float sum: a transposed or flipped view must give the same bytes."""
    base = _crop(photos["astronaut"], 96, 128)
    view = np.ascontiguousarray(base.transpose(1, 0, 2)).transpose(1, 0, 2)  # column-major copy
    assert not view.flags.c_contiguous
    for name in IMPLEMENTED:
        np.testing.assert_array_equal(corrupt(view, name, 3), corrupt(np.ascontiguousarray(base), name, 3))


def test_seed_is_accepted_and_ignored_by_deterministic_corruptions(photos: dict[str, np.ndarray]) -> None:
    image = _crop(photos["chelsea"], 48, 48)
    for name in DETERMINISTIC:
        out = corrupt(image, name, 5, seed=1, image_id="a")
        np.testing.assert_array_equal(out, corrupt(image, name, 5, seed=2, image_id="b"))
        np.testing.assert_array_equal(out, corrupt(image, name, 5))


def test_severity_accepts_numpy_integers(photos: dict[str, np.ndarray]) -> None:
    image = _crop(photos["chelsea"], 48, 48)
    np.testing.assert_array_equal(corrupt(image, "contrast", np.int64(2)), corrupt(image, "contrast", 2))


# ---------------------------------------------------------------- registry


def test_registry_has_the_19_in_canonical_order() -> None:
    assert corruption_names() == tuple(COMMON + EXTRA) == tuple(CORRUPTIONS)
    assert corruption_names("all") == corruption_names()
    assert corruption_names("common") == tuple(COMMON)
    assert corruption_names("extra") == tuple(EXTRA)
    assert len(CORRUPTIONS) == 19
    assert all(isinstance(c, Corruption) and c.name == n for n, c in CORRUPTIONS.items())


def test_families_follow_imagenet_c() -> None:
    assert corruption_names("noise") == ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
    assert corruption_names("blur") == (
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "gaussian_blur",
    )
    assert corruption_names("weather") == ("snow", "frost", "fog", "brightness", "spatter")
    assert corruption_names("digital") == (
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
        "saturate",
    )
    # the common subsets agree with the reference's own family lists
    for family in ("noise", "blur", "weather", "digital"):
        ours = [n for n in corruption_names(family) if CORRUPTIONS[n].group == "common"]
        assert ours == ic.get_corruption_names(family)
    assert list(corruption_names()) == ic.get_corruption_names("all")


def test_all_19_are_implemented_and_random_ones_draw() -> None:
    assert available_corruptions() == corruption_names()
    for name, entry in CORRUPTIONS.items():
        assert entry.implemented and entry.random == (name not in DETERMINISTIC), name


def test_entries_are_frozen() -> None:
    with pytest.raises(AttributeError):
        CORRUPTIONS["contrast"].apply = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        CORRUPTIONS["new"] = CORRUPTIONS["contrast"]  # type: ignore[index]


def test_unknown_selection_lists_choices() -> None:
    with pytest.raises(CorruptionError, match="common, extra, noise"):
        corruption_names("validation")


# ---------------------------------------------------------------- errors


def test_unknown_name_suggests_a_close_match() -> None:
    with pytest.raises(CorruptionError, match="did you mean 'brightness'") as info:
        check_corruption("brightnes")
    assert "jpeg_compression" in str(info.value) and "spatter" in str(info.value)
    with pytest.raises(CorruptionError, match="unknown corruption 'xyz'"):
        check_corruption("xyz", 1)
    with pytest.raises(CorruptionError, match="must be a string"):
        check_corruption(3)  # type: ignore[arg-type]


def test_known_but_not_implemented_name() -> None:
    with pytest.raises(
        CorruptionError, match="one of the 19 ImageNet-C corruptions but is not implemented"
    ) as info:
        check_corruption("gaussian_noise", 1)
    assert "available: brightness, contrast, jpeg_compression, saturate" in str(info.value)
    with pytest.raises(CorruptionError, match="not implemented"):
        corrupt(np.zeros((32, 32, 3), np.uint8), "fog", 1)


@pytest.mark.parametrize("severity", [0, 6, 1.5, 1.0, True, "2", -1])
def test_bad_severity(severity: object) -> None:
    with pytest.raises(CorruptionError, match="severity must be an int in 1..5"):
        check_corruption("contrast", severity)  # type: ignore[arg-type]
    with pytest.raises(CorruptionError, match="severity"):
        corrupt(np.zeros((32, 32, 3), np.uint8), "contrast", severity)  # type: ignore[arg-type]


def test_check_corruption_returns_the_entry_and_is_a_value_error() -> None:
    assert check_corruption("saturate", 5) is CORRUPTIONS["saturate"]
    assert check_corruption("saturate") is CORRUPTIONS["saturate"]
    assert issubclass(CorruptionError, ValueError)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((31, 64, 3), np.uint8), "31x64.*>= 32"),
        (np.zeros((64, 31), np.uint8), "64x31.*>= 32"),
        (np.zeros((64, 64, 3), np.float32), "float32.*Convert"),
        (np.zeros((64, 64, 3), np.float64), "uint8"),
        (np.zeros((64, 64, 3), np.uint16), "uint16"),
        (np.zeros((64, 64, 4), np.uint8), r"shape \(64, 64, 4\)"),
        (np.zeros((2, 64, 64, 3), np.uint8), "shape"),
        (np.zeros(64, np.uint8), "shape"),
        ([[0] * 64] * 64, "numpy array"),
    ],
)
def test_bad_images(image: object, message: str) -> None:
    with pytest.raises(CorruptionError, match=message):
        corrupt(image, "contrast", 1)  # type: ignore[arg-type]
