"""PIQE against MATLAB's published scores, the pypiqe port where both follow MATLAB, and its properties."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from saliqa.iqa.base import PatchGrid
from saliqa.iqa.categories import CATEGORIES
from saliqa.iqa.matlab import RGB2GRAY_WEIGHTS, gaussian_filter, gaussian_taps, mscn, rgb_to_gray
from saliqa.iqa.piqe import PIQE, PiqeResult, block_criteria, piqe, piqe_category

DATA = Path(__file__).parents[1].parent / "shared" / "data"
CALIBRATION = DATA / "iqa_calibration"
OFFICIAL_IMAGES = ("I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
    ),
]


def to_tensor(pixels: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """uint8 HxWx3 (or HxW grey, replicated to 3 channels) -> (1, 3, H, W) in [0, 1]."""
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].to(dtype) / 255


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 RGB."""
    import skimage.data

    pixels = getattr(skimage.data, name)()
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels[:, :, :3]


def matlab_gray_photo(name: str) -> np.ndarray:
    """Grey uint8 with max 255 and sides multiples of 16: inputs on which pypiqe follows MATLAB."""
    gray = photo(name).astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    gray = np.round(255 * (gray - gray.min()) / (gray.max() - gray.min())).astype(np.uint8)
    h, w = gray.shape
    return np.ascontiguousarray(gray[: h // 16 * 16, : w // 16 * 16])


def assert_same_result(a: PiqeResult, b: PiqeResult) -> None:
    assert torch.equal(a.score.cpu(), b.score.cpu())
    for name in ("activity", "noticeable", "noise", "block_distortion"):
        assert torch.equal(getattr(a, name).cpu(), getattr(b, name).cpu()), name
    assert a.grid == b.grid


# --- MATLAB helpers -------------------------------------------------------------------------------------


def test_gray_matches_matlab_rgb2gray_and_is_robust_to_float32() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 3, 17, 23), dtype=np.uint8)
    w = np.array(RGB2GRAY_WEIGHTS)
    expected = np.round(np.einsum("c,bchw->bhw", w, pixels.astype(np.float64)))[:, None]
    for dtype in (torch.float32, torch.float64):
        gray = rgb_to_gray(torch.from_numpy(pixels).to(dtype) / 255)
        assert gray.dtype == torch.float64 and gray.shape == (2, 1, 17, 23)
        np.testing.assert_array_equal(gray.numpy(), expected)


def test_gray_of_replicated_grey_is_the_grey_itself() -> None:
    # The weights sum to 1 - 1e-15, so a grey replicated to RGB comes back unchanged after rounding.
    assert abs(sum(RGB2GRAY_WEIGHTS) - 1) < 1e-14
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(rgb_to_gray(to_tensor(levels))[0, 0].numpy(), levels)


def test_gaussian_taps_are_the_normalised_gaussian() -> None:
    taps = gaussian_taps(7, 7 / 6).numpy()
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    np.testing.assert_allclose(taps, g / g.sum(), rtol=1e-15, atol=0)
    np.testing.assert_array_equal(taps, taps[::-1])
    with pytest.raises(ValueError):
        gaussian_taps(6, 1.0)


@pytest.mark.parametrize(("padding", "mode"), [("replicate", "nearest"), ("zero", "constant")])
def test_gaussian_filter_matches_2d_correlation(padding: str, mode: str) -> None:
    from scipy.ndimage import correlate

    rng = np.random.default_rng(1)
    image = np.round(rng.uniform(0, 255, size=(19, 26)))
    g = np.exp(-(np.arange(-3, 4) ** 2) / (2 * (7 / 6) ** 2))
    kernel = np.outer(g, g) / np.outer(g, g).sum()  # MATLAB fspecial('gaussian', 7, 7/6)
    expected = correlate(image, kernel, mode=mode, cval=0.0)
    ours = gaussian_filter(torch.from_numpy(image)[None, None], padding=padding)[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10)


def test_gaussian_filter_is_summed_tap_by_tap_rows_then_columns() -> None:
    """Pins the arithmetic: separate multiply and add per tap, along H then W (bit-exact)."""
    rng = np.random.default_rng(2)
    image = np.round(rng.uniform(0, 255, size=(21, 18)))
    taps = gaussian_taps(7, 7 / 6).tolist()
    padded = np.pad(image, 3, mode="edge")
    rows = taps[0] * padded[0:21]
    for k in range(1, 7):
        rows = rows + taps[k] * padded[k : k + 21]
    expected = taps[0] * rows[:, 0:18]
    for k in range(1, 7):
        expected = expected + taps[k] * rows[:, k : k + 18]
    ours = gaussian_filter(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(ours, expected)


def test_mscn_definition() -> None:
    rng = np.random.default_rng(3)
    image = torch.from_numpy(np.round(rng.uniform(0, 255, size=(1, 1, 24, 20))))
    coeffs, mu, sigma = mscn(image)
    mu_ref = gaussian_filter(image)
    sigma_ref = torch.sqrt(torch.abs(gaussian_filter(image * image) - mu_ref * mu_ref))
    assert torch.equal(mu, mu_ref) and torch.equal(sigma, sigma_ref)
    assert torch.equal(coeffs, (image - mu_ref) / (sigma_ref + 1))


# --- Official MATLAB scores -----------------------------------------------------------------------------


@pytest.mark.skipif(not CALIBRATION.is_dir(), reason=f"calibration data not found at {CALIBRATION}")
def test_official_matlab_scores() -> None:
    from PIL import Image

    with open(CALIBRATION / "results_official.csv", newline="") as handle:
        rows = {row["Method"]: row for row in csv.DictReader(handle)}
    official = [float(rows["piqe"][name]) for name in OFFICIAL_IMAGES]
    files = [CALIBRATION / "dist_dir" / name for name in OFFICIAL_IMAGES]
    batch = torch.cat([to_tensor(np.asarray(Image.open(f).convert("RGB"))) for f in files])
    ours = piqe(batch).score.tolist()
    for name, got, want in zip(OFFICIAL_IMAGES, ours, official, strict=True):
        assert abs(got - want) <= 0.01, f"{name}: ours {got:.4f}, MATLAB {want}"


# --- Parity with pypiqe where it follows MATLAB ---------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera", "rocket"])
def test_parity_with_pypiqe(name: str) -> None:
    pypiqe = pytest.importorskip("pypiqe")
    gray = matlab_gray_photo(name)
    assert gray.max() == 255 and gray.shape[0] % 16 == 0 and gray.shape[1] % 16 == 0
    # pypiqe's order (its source): Score, NoticeableArtifactsMask, NoiseMask, ActivityMask.
    score, noticeable, noise, activity = pypiqe.piqe(gray)
    rgb = to_tensor(gray)
    np.testing.assert_array_equal(rgb_to_gray(rgb)[0, 0].numpy(), gray)  # same grey as pypiqe's input
    result = piqe(rgb)
    assert result.score.item() == pytest.approx(score, rel=1e-9, abs=0)
    masks = result.pixel_masks()
    np.testing.assert_array_equal(masks["activity"][0].numpy(), activity)
    np.testing.assert_array_equal(masks["noticeable"][0].numpy(), noticeable)
    np.testing.assert_array_equal(masks["noise"][0].numpy(), noise)
    assert activity.any() and noticeable.any() and noise.any()  # the masks are informative


def synthetic_blocks() -> np.ndarray:
    """MSCN-like 16x16 blocks, including the degenerate cases of the noise criterion."""
    rng = np.random.default_rng(4)
    blocks = [rng.normal(0, s, size=(16, 16)) for s in (0.05, 0.3, 0.5, 1.0, 2.0, 3.0) for _ in range(20)]
    smooth = rng.normal(0, 1, size=(16, 16))
    smooth[0, 3:9] = 0.7  # one flat 6-pixel segment on the top edge
    blocks.append(smooth)
    alternating = 17.0 * (-1.0) ** np.arange(16)
    only_col_9 = np.zeros((16, 16))
    only_col_9[:, 9] = alternating  # centre and surround both constant: 0/0 -> ratio 0 -> noisy
    only_col_7 = np.zeros((16, 16))
    only_col_7[:, 7] = alternating  # surround constant, centre not: ratio inf -> beta NaN -> not noisy
    blocks += [only_col_9, only_col_7, np.zeros((16, 16))]
    return np.stack(blocks)


def test_block_criteria_match_pypiqe_per_block_functions() -> None:
    pytest.importorskip("pypiqe")
    from pypiqe.piqe import noiseCriterion, noticeDistCriterion

    blocks = synthetic_blocks()
    variance, activity, noticeable, noise = block_criteria(torch.from_numpy(blocks))
    for i, block in enumerate(blocks):
        var = np.var(block, ddof=1)
        assert variance[i].item() == pytest.approx(var, rel=1e-12, abs=1e-300)
        assert activity[i].item() == (var > 0.1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma, beta = noiseCriterion(block, 15, var)
        assert noticeable[i].item() == bool(var > 0.1 and noticeDistCriterion(block, 11, 15, 6, 0.1, 16)), i
        assert noise[i].item() == bool(var > 0.1 and sigma > 2 * beta), i
    assert noise[-3].item() and not noise[-2].item() and activity[-2].item() and not activity[-1].item()
    assert noticeable[-4].item() and 0 < noise.sum() < len(blocks) and 0 < noticeable.sum() < len(blocks)


# --- Properties ---------------------------------------------------------------------------------------


def test_uniform_image_scores_100_with_no_active_block() -> None:
    images = torch.full((2, 3, 48, 40), 0.5)
    result = piqe(images)
    assert result.score.tolist() == [100.0, 100.0]
    assert not result.activity.any() and not result.noticeable.any() and not result.noise.any()
    out = PIQE()(images)
    assert out.category == ["Bad", "Bad"]
    assert torch.isnan(out.patch_map).all()


def test_non_multiple_of_16_equals_replicate_padded_by_hand() -> None:
    pixels = photo("astronaut")[37:137, 201:331]  # 100 x 130
    padded = np.pad(pixels, ((0, 12), (0, 14), (0, 0)), mode="edge")  # 112 x 144
    small, large = piqe(to_tensor(pixels)), piqe(to_tensor(padded))
    assert torch.equal(small.score, large.score)
    for name in ("activity", "noticeable", "noise", "block_distortion"):
        assert torch.equal(getattr(small, name), getattr(large, name))
    assert small.activity.shape == (1, 7, 9)
    assert small.grid == PatchGrid.regular(100, 130, 16) and small.grid.shape == (7, 9)
    small_masks, large_masks = small.pixel_masks(), large.pixel_masks()
    for name, mask in small_masks.items():
        assert mask.shape == (1, 100, 130)
        assert torch.equal(mask, large_masks[name][:, :100, :130])


def test_pixel_masks_are_blocks_upsampled() -> None:
    result = piqe(to_tensor(photo("coffee")[:64, :80]))
    activity = result.pixel_masks()["activity"]
    assert activity.shape == (1, 64, 80)
    assert torch.equal(activity[:, ::16, ::16], result.activity)
    assert torch.equal(activity, result.activity.repeat_interleave(16, 1).repeat_interleave(16, 2))


def test_batch_equals_each_image_alone() -> None:
    crops = [photo(n)[:96, :128] for n in ("astronaut", "coffee", "rocket")]
    images = torch.cat([to_tensor(c) for c in crops])
    batch = piqe(images, max_pixels=2**30)  # one chunk
    assert_same_result(piqe(images, max_pixels=2 * 96 * 128), batch)  # chunks of 2 and 1
    for i, crop in enumerate(crops):
        alone = piqe(to_tensor(crop))
        assert torch.equal(batch.score[i : i + 1], alone.score)
        for name in ("activity", "noticeable", "noise", "block_distortion"):
            assert torch.equal(getattr(batch, name)[i : i + 1], getattr(alone, name))


def test_float32_and_float64_inputs_agree() -> None:
    pixels = photo("chelsea")[:120, :150]
    assert_same_result(piqe(to_tensor(pixels, torch.float32)), piqe(to_tensor(pixels, torch.float64)))


def test_grey_input_equals_replicated_rgb() -> None:
    gray = matlab_gray_photo("camera")[:128, :160]
    rgb = to_tensor(gray)
    assert_same_result(piqe(rgb[:, :1]), piqe(rgb))


def test_band_rule_including_matlab_gaps() -> None:
    scores = torch.tensor([0.0, 20.0, 20.5, 35.0, 35.01, 50.0, 50.5, 80.0, 80.5, 100.0, float("nan")])
    assert piqe_category(scores) == [
        "Excellent",
        "Excellent",
        "Good",
        "Good",
        "Fair",
        "Fair",
        "Poor",
        "Poor",
        "Bad",
        "Bad",
        None,
    ]


def test_quality_model_output() -> None:
    model = PIQE()
    assert model.name == "piqe" and model.higher_is_better is False and model.score_range == (0.0, 100.0)
    images = torch.cat([to_tensor(photo(n)[:100, :130]) for n in ("astronaut", "rocket")])
    images = torch.cat([images, torch.full_like(images[:1], 0.25)])  # third image uniform
    out = model(images)
    result = piqe(images)

    assert out.score.dtype == torch.float64 and out.score.shape == (3,)
    assert torch.equal(out.score, result.score)
    assert torch.equal(out.quality, 100 - out.score)
    assert out.category == piqe_category(out.score)
    assert all(c in CATEGORIES for c in out.category)

    assert out.patch_map.dtype == torch.float32 and out.patch_map.shape == (3, 7, 9)
    assert out.grid.shape == (7, 9) and out.grid == PatchGrid.regular(100, 130, 16)
    active = result.activity
    assert torch.isnan(out.patch_map[~active]).all() and not torch.isnan(out.patch_map[active]).any()
    assert torch.isnan(out.patch_map[2]).all()
    expected = np.clip(100 * (1 - result.block_distortion.numpy()), 0, 100).astype(np.float32)
    np.testing.assert_array_equal(out.patch_map.numpy()[active.numpy()], expected[active.numpy()])
    assert ((out.patch_map[active] >= 0) & (out.patch_map[active] <= 100)).all()
    assert (out.patch_map[active & ~result.noticeable & ~result.noise] == 100).all()

    assert set(out.extras) == {"activity", "noticeable", "noise"}
    for name, mask in out.extras.items():
        assert mask.dtype == torch.bool and mask.shape == (3, 7, 9)
        assert torch.equal(mask, getattr(result, name))
    assert not (out.extras["noticeable"] & ~out.extras["activity"]).any()
    assert not (out.extras["noise"] & ~out.extras["activity"]).any()

    # Score from the block distortions, independently of the implementation's reduction.
    for b in range(3):
        d = result.block_distortion[b][active[b]].tolist()
        assert out.score[b].item() == pytest.approx(100 * (math.fsum(d) + 1) / (len(d) + 1), rel=1e-12)


def test_quality_model_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        PIQE()(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError):
        piqe(torch.zeros(3, 32, 32))


@pytest.mark.parametrize("device", DEVICES)
def test_device_equals_cpu(device: str) -> None:
    images = torch.cat([to_tensor(photo(n)[:100, :130]) for n in ("astronaut", "coffee")])
    cpu = piqe(images)
    other = piqe(images.to(device))
    assert other.score.device.type == torch.device(device).type
    for name in ("activity", "noticeable", "noise"):
        assert torch.equal(getattr(other, name).cpu(), getattr(cpu, name)), name
    torch.testing.assert_close(other.score.cpu(), cpu.score, rtol=1e-12, atol=0)
    torch.testing.assert_close(other.block_distortion.cpu(), cpu.block_distortion, rtol=0, atol=1e-12)
    out = PIQE(device)(images)
    assert out.patch_map.device.type == torch.device(device).type
