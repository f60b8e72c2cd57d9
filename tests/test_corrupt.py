"""saliqa.corrupt: the 19-name registry, its errors, and bit-exact parity with imagecorruptions 1.1.5."""

from __future__ import annotations

import corruption_helpers
import numpy as np
import pytest
import torch

from saliqa.corrupt import (
    CORRUPTIONS,
    Corruption,
    check_corruption,
    corrupt,
    corrupt_batch,
    corruption_names,
    corruption_rng,
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
CROP_CASES = corruption_helpers.CROP_CASES
COMMON = [
    *("gaussian_noise", "shot_noise", "impulse_noise"),
    *("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    *("snow", "frost", "fog", "brightness"),
    *("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
]
EXTRA = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]


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


def test_contrast_means_are_summed_as_the_reference_sums_them() -> None:
    """On a large image torch's reduction and numpy's pairwise sum differ in the last bit of a mean, which
    moves whole channels by one level; the CPU path sums as numpy does."""
    big = _colour_grid(1).reshape(4096, 4096, 3)[:512]
    for severity in (1, 3):
        _assert_parity(big, "contrast", severity, "512x4096 colours")


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


def test_random_ones_draw_and_deterministic_ones_do_not() -> None:
    for name, entry in CORRUPTIONS.items():
        assert callable(entry.apply) and entry.random == (name not in DETERMINISTIC), name


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


# ---------------------------------------------------------------- seeding and the batched form, all 19

ALL = tuple(CORRUPTIONS)
RANDOM = tuple(n for n in ALL if n not in DETERMINISTIC)


@pytest.fixture(scope="module")
def trio(photos: dict[str, np.ndarray]) -> torch.Tensor:
    """Three different real photos of one odd size, as a uint8 batch (3, 3, 41, 57)."""
    crops = [_crop(photos[name], 41, 57) for name in ("astronaut", "coffee", "flower")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("name", ALL)
def test_an_images_result_depends_only_on_its_id_not_its_batch(trio: torch.Tensor, name: str) -> None:
    """Same (seed, id) -> same pixels whatever the batch size or order; corrupt() is the batch of one."""
    ids = ["a.jpg", "b.jpg", "c.jpg"]
    whole = corrupt_batch(trio, name, 3, seed=7, image_ids=ids)
    assert whole.dtype == torch.uint8 and whole.shape == trio.shape
    reordered = corrupt_batch(trio[[2, 0, 1]], name, 3, seed=7, image_ids=[ids[2], ids[0], ids[1]])
    assert torch.equal(reordered, whole[[2, 0, 1]])
    for i in range(3):
        alone = corrupt(trio[i].permute(1, 2, 0).numpy(), name, 3, seed=7, image_id=ids[i])
        np.testing.assert_array_equal(alone, whole[i].permute(1, 2, 0).numpy(), err_msg=f"{name} image {i}")


@pytest.mark.parametrize("name", RANDOM)
def test_random_draws_change_with_seed_and_id_only(trio: torch.Tensor, name: str) -> None:
    image = trio[0].permute(1, 2, 0).numpy()
    base = corrupt(image, name, 4, seed=1, image_id="x")
    np.testing.assert_array_equal(base, corrupt(image, name, 4, seed=1, image_id="x"))
    assert not np.array_equal(base, corrupt(image, name, 4, seed=2, image_id="x"))
    assert not np.array_equal(base, corrupt(image, name, 4, seed=1, image_id="y"))


def test_streams_differ_between_corruptions_and_severities() -> None:
    draws = {
        (name, severity): corruption_rng(0, "img", name, severity).random()
        for name in RANDOM
        for severity in SEVERITIES
    }
    assert len(set(draws.values())) == len(draws)


@pytest.mark.parametrize("name", ALL)
def test_float_batches_stay_on_the_uint8_levels_within_one(trio: torch.Tensor, name: str) -> None:
    """The float path returns [0, 1] values on the 256 levels, at most one level off the exact path."""
    exact = corrupt_batch(trio, name, 2, seed=3).to(torch.int16)
    fast = corrupt_batch(trio.float() / 255, name, 2, seed=3)
    assert fast.dtype == torch.float32 and fast.min() >= 0 and fast.max() <= 1
    levels = fast * 255
    assert torch.equal(levels, levels.round())
    assert (levels.round().to(torch.int16) - exact).abs().max() <= 1, name


def test_grey_batches_are_repeated_to_three_channels(trio: torch.Tensor) -> None:
    grey = trio[:, :1]
    np.testing.assert_array_equal(
        corrupt_batch(grey, "fog", 2, seed=1), corrupt_batch(grey.expand(-1, 3, -1, -1), "fog", 2, seed=1)
    )


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 3, 40, 40), np.uint8), "torch.Tensor"),
        (torch.zeros(3, 40, 40, dtype=torch.uint8), r"\(B, 3, H, W\)"),
        (torch.zeros(2, 4, 40, 40, dtype=torch.uint8), r"\(B, 3, H, W\)"),
        (torch.zeros(2, 3, 40, 40, dtype=torch.int32), "uint8 in \\[0, 255\\] or float"),
        (torch.zeros(2, 3, 31, 40, dtype=torch.uint8), "31x40.*>= 32"),
    ],
)
def test_bad_batches(images: object, message: str) -> None:
    with pytest.raises(CorruptionError, match=message):
        corrupt_batch(images, "contrast", 1)  # type: ignore[arg-type]


def test_image_ids_must_match_the_batch(trio: torch.Tensor) -> None:
    with pytest.raises(CorruptionError, match="2 image ids for a batch of 3"):
        corrupt_batch(trio, "fog", 1, image_ids=["a", "b"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_cuda_gives_the_cpus_pixels_within_one_level(trio: torch.Tensor, name: str) -> None:
    for severity in SEVERITIES:
        cpu = corrupt_batch(trio, name, severity, seed=5).to(torch.int16)
        gpu = corrupt_batch(trio.cuda(), name, severity, seed=5).cpu().to(torch.int16)
        diff = (gpu - cpu).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01, (name, severity)


def test_an_empty_batch_gives_an_empty_batch() -> None:
    for dtype in (torch.uint8, torch.float32):
        empty = torch.zeros(0, 3, 40, 40, dtype=dtype)
        out = corrupt_batch(empty, "fog", 2)
        assert out.shape == empty.shape and out.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_batches_run_in_float32(trio: torch.Tensor, dtype: torch.dtype) -> None:
    """Some ops (the FFT of defocus_blur) have no half kernel: such batches are computed in float32."""
    for name in ("defocus_blur", "contrast"):
        half = corrupt_batch(trio.to(dtype) / 255, name, 3, seed=1)
        single = corrupt_batch(trio.float() / 255, name, 3, seed=1)
        assert half.dtype == dtype
        torch.testing.assert_close(half.float(), single, atol=1 / 255 + 4e-3, rtol=0)
