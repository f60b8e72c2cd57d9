"""saliqa.fullref: PSNR against skimage, MS-SSIM against pytorch-msssim, piqa and a numpy port of msssim.m.

Real photos (scikit-image) corrupted by saliqa.corrupt. Tolerances are relative, in float64. Measured maxima:
PSNR vs skimage 2e-16; MS-SSIM vs pytorch-msssim and piqa 8e-15 (224x224), vs piqa and the msssim.m port
2e-14 (odd sides); uint8 vs float64 input 2e-14, vs float32 input 5e-8; batch vs single image 4e-15.
REFERENCE_RTOL bounds agreement with other implementations, EXACT_RTOL the same computation in another form.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from corruption_helpers import crop

from saliqa.corrupt import corrupt
from saliqa.fullref import MS_SSIM_MIN_SIDE, MS_SSIM_WEIGHTS, ms_ssim, psnr

REFERENCE_RTOL = 1e-10
EXACT_RTOL = 1e-12
# float32 input holds the pixels /255 to 6e-8 relative, the whole difference to uint8 input.
FLOAT32_RTOL = 1e-6

PHOTOS = ("astronaut", "chelsea", "coffee")
CORRUPTIONS = (("brightness", 3), ("contrast", 2), ("contrast", 5), ("saturate", 5), ("jpeg_compression", 5))
EVEN_SIZE = (224, 224)  # halves to 14 without an odd side: every downsampling convention agrees
ODD_SIZES = ((181, 203), (MS_SSIM_MIN_SIDE, MS_SSIM_MIN_SIDE))


@cache
def pair(height: int, width: int, name: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean crops of the three photos and their corrupted versions, uint8 (3, 3, H, W)."""
    from skimage import data

    clean = [np.ascontiguousarray(crop(getattr(data, p)(), height, width)) for p in PHOTOS]
    dirty = [corrupt(c, name, severity) for c in clean]
    as_batch = [torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).contiguous() for x in (clean, dirty)]
    return as_batch[0], as_batch[1]


def gaussian_1d() -> torch.Tensor:
    """fspecial('gaussian', 11, 1.5)'s 1-D factor in float64, to hand to the references (their own is float32)."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    return g / g.sum()


def msssim_m(reference: np.ndarray, distorted: np.ndarray, data_range: float) -> float:
    """A direct numpy port of msssim.m / ssim_index_new.m for one channel (2-D float64 arrays)."""
    from scipy.signal import correlate2d

    window = np.outer(gaussian_1d().numpy(), gaussian_1d().numpy())
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mcs, mssim = [], 0.0
    for _ in MS_SSIM_WEIGHTS:
        mu1, mu2 = (correlate2d(im, window, mode="valid") for im in (reference, distorted))
        s11 = correlate2d(reference * reference, window, mode="valid") - mu1 * mu1
        s22 = correlate2d(distorted * distorted, window, mode="valid") - mu2 * mu2
        s12 = correlate2d(reference * distorted, window, mode="valid") - mu1 * mu2
        cs_map = (2 * s12 + c2) / (s11 + s22 + c2)
        mcs.append(cs_map.mean())
        mssim = ((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map).mean()
        # imfilter(im, ones(2)/4, 'symmetric', 'same') then im(1:2:end, 1:2:end)
        padded = [np.pad(im, ((0, 1), (0, 1)), mode="symmetric") for im in (reference, distorted)]
        reference, distorted = (
            (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:])[::2, ::2] / 4 for p in padded
        )
    terms = np.array(mcs[:-1] + [mssim])
    assert (terms > 0).all()  # msssim.m has no clamp; keep to cases where none is needed
    return float(np.prod(terms ** np.array(MS_SSIM_WEIGHTS)))


def rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=0)


@pytest.mark.parametrize("size", [EVEN_SIZE, ODD_SIZES[0]])
@pytest.mark.parametrize(("name", "severity"), CORRUPTIONS)
def test_psnr_matches_skimage_for_uint8_and_float(size: tuple[int, int], name: str, severity: int) -> None:
    from skimage.metrics import peak_signal_noise_ratio

    clean, dirty = pair(*size, name, severity)
    for x, y, data_range in ((clean, dirty, 255), (clean.double() / 255, dirty.double() / 255, 1)):
        expected = [
            peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=data_range)
            for a, b in zip(x, y, strict=True)
        ]
        rel_close(psnr(x, y), torch.tensor(expected), REFERENCE_RTOL)


# The references run float64 through a slow depthwise convolution: each case checks one photo against them.
@pytest.mark.parametrize(
    ("name", "severity", "photo"), [(n, s, i % len(PHOTOS)) for i, (n, s) in enumerate(CORRUPTIONS)]
)
def test_ms_ssim_matches_pytorch_msssim_and_piqa_on_even_sides(name: str, severity: int, photo: int) -> None:
    pytorch_msssim = pytest.importorskip("pytorch_msssim", reason="parity tests need pytorch-msssim")
    piqa_ssim = pytest.importorskip("piqa.ssim", reason="parity tests need piqa")
    clean, dirty = pair(*EVEN_SIZE, name, severity)
    ours = ms_ssim(clean, dirty)
    assert ((ours > 0.1) & (ours < 1)).all()  # real damage, far from both ends
    ours, x, y = ours[photo : photo + 1], clean[photo : photo + 1].double(), dirty[photo : photo + 1].double()
    g = gaussian_1d()
    win = g.view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    rel_close(ours, pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False, win=win), REFERENCE_RTOL)
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
    piqa_value = piqa_ssim.ms_ssim(x, y, kernel=g.repeat(3, 1, 1), weights=weights, value_range=255)
    rel_close(ours, piqa_value, REFERENCE_RTOL)


@pytest.mark.parametrize(
    ("size", "name", "severity", "photo"),
    [
        (ODD_SIZES[0], "contrast", 2, 0),
        (ODD_SIZES[0], "jpeg_compression", 5, 1),
        (ODD_SIZES[1], "contrast", 2, 2),
        (ODD_SIZES[1], "jpeg_compression", 5, 0),
    ],
)
def test_ms_ssim_on_odd_sides_matches_msssim_m_and_piqa(
    size: tuple[int, int], name: str, severity: int, photo: int
) -> None:
    """Odd sides downsample as msssim.m does; piqa agrees, pytorch-msssim and piq do not (they pad)."""
    clean, dirty = pair(*size, name, severity)
    ours = ms_ssim(clean, dirty)[photo : photo + 1]
    x, y = clean[photo : photo + 1].double(), dirty[photo : photo + 1].double()
    expected = np.mean([msssim_m(x[0, c].numpy(), y[0, c].numpy(), 255.0) for c in range(3)])
    rel_close(ours, torch.tensor([expected]), REFERENCE_RTOL)
    piqa_ssim = pytest.importorskip("piqa.ssim", reason="parity tests need piqa")
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
    kernel = gaussian_1d().repeat(3, 1, 1)
    rel_close(ours, piqa_ssim.ms_ssim(x, y, kernel=kernel, weights=weights, value_range=255), REFERENCE_RTOL)


@pytest.mark.parametrize("size", [EVEN_SIZE, ODD_SIZES[0]])
def test_uint8_and_float_inputs_agree(size: tuple[int, int]) -> None:
    clean, dirty = pair(*size, "jpeg_compression", 5)
    for metric in (psnr, ms_ssim):
        from_uint8 = metric(clean, dirty)
        rel_close(metric(clean.double() / 255, dirty.double() / 255), from_uint8, EXACT_RTOL)
        rel_close(metric(clean.float() / 255, dirty.float() / 255), from_uint8, FLOAT32_RTOL)
        assert from_uint8.dtype == torch.float64 and from_uint8.shape == (3,)


def test_one_reference_for_a_batch_equals_the_repeated_reference() -> None:
    clean = pair(224, 224, "contrast", 3)[0][:1]
    distorted = torch.cat([pair(224, 224, name, s)[1][:1] for name, s in CORRUPTIONS])
    repeated = clean.expand_as(distorted)
    torch.testing.assert_close(ms_ssim(clean, distorted), ms_ssim(repeated, distorted), rtol=1e-14, atol=0)
    torch.testing.assert_close(psnr(clean, distorted), psnr(repeated, distorted), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="one reference image for the batch"):
        ms_ssim(repeated[:2], distorted)


def test_a_batch_scores_each_image_as_alone() -> None:
    clean, dirty = pair(*ODD_SIZES[0], "saturate", 5)
    for metric in (psnr, ms_ssim):
        batch = metric(clean, dirty)
        single = torch.cat([metric(clean[i : i + 1], dirty[i : i + 1]) for i in range(len(clean))])
        rel_close(batch, single, EXACT_RTOL)


def test_identical_images_score_one_and_infinite_psnr() -> None:
    clean, _ = pair(*EVEN_SIZE, "brightness", 3)
    for x in (clean, clean / 255.0):
        assert torch.equal(ms_ssim(x, x.clone()), torch.ones(3, dtype=torch.float64))
        assert torch.isinf(psnr(x, x.clone())).all() and (psnr(x, x.clone()) > 0).all()
    # one row identical, one not: only that row is infinite
    _, dirty = pair(*EVEN_SIZE, "contrast", 2)
    mixed = torch.stack([clean[0], dirty[1]])
    assert torch.isinf(psnr(clean[:2], mixed)).tolist() == [True, False]


def test_negative_contrast_structure_is_clamped_to_zero_like_the_references() -> None:
    """An inverted image is anti-correlated at every scale: msssim.m would go complex, the ports give 0."""
    clean, _ = pair(*EVEN_SIZE, "brightness", 3)
    inverted = 255 - clean
    ours = ms_ssim(clean, inverted)
    assert torch.equal(ours, torch.zeros(3, dtype=torch.float64))
    pytorch_msssim = pytest.importorskip("pytorch_msssim", reason="parity tests need pytorch-msssim")
    x, y = clean[:1].double(), inverted[:1].double()
    assert torch.equal(pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False), ours[:1])


def test_no_gradient_is_tracked() -> None:
    clean, dirty = pair(*EVEN_SIZE, "contrast", 2)
    x = (clean / 255.0).requires_grad_()
    assert not psnr(x, dirty / 255.0).requires_grad
    assert not ms_ssim(x, dirty / 255.0).requires_grad


@pytest.mark.parametrize(
    ("reference", "distorted", "message"),
    [
        (torch.zeros(1, 3, 200, 200), torch.zeros(1, 3, 200, 201), "same shape"),
        (torch.zeros(1, 3, 200, 200, dtype=torch.uint8), torch.zeros(1, 3, 200, 200), "same dtype"),
        (torch.zeros(3, 200, 200), torch.zeros(3, 200, 200), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 4, 200, 200), torch.zeros(1, 4, 200, 200), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 3, 200, 200, dtype=torch.int16),) * 2 + ("uint8 in",),
        (torch.full((1, 3, 200, 200), 255.0), torch.zeros(1, 3, 200, 200), r"\[0, 1\]"),
        (torch.full((1, 3, 200, 200), float("nan")), torch.zeros(1, 3, 200, 200), r"\[0, 1\]"),
    ],
)
def test_bad_inputs_are_refused(reference: torch.Tensor, distorted: torch.Tensor, message: str) -> None:
    for metric in (psnr, ms_ssim):
        with pytest.raises(ValueError, match=message):
            metric(reference, distorted)


def test_non_tensors_are_refused() -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        psnr(np.zeros((1, 3, 200, 200)), torch.zeros(1, 3, 200, 200))  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(160, 224), (224, 160), (32, 32)])
def test_ms_ssim_refuses_images_below_the_five_scale_minimum(size: tuple[int, int]) -> None:
    x = torch.zeros(1, 3, *size)
    with pytest.raises(ValueError, match=f"height and width >= {MS_SSIM_MIN_SIDE}"):
        ms_ssim(x, x)
    assert torch.isinf(psnr(x, x)).all()  # PSNR has no minimum size


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_the_cpu() -> None:
    clean, dirty = pair(*ODD_SIZES[0], "jpeg_compression", 5)
    for metric in (psnr, ms_ssim):
        on_cuda = metric(clean.cuda(), dirty.cuda())
        assert on_cuda.device.type == "cuda"
        rel_close(on_cuda.cpu(), metric(clean, dirty), REFERENCE_RTOL)


def test_an_empty_batch_gives_an_empty_result() -> None:
    x = torch.zeros(0, 3, 224, 224, dtype=torch.uint8)
    for metric in (psnr, ms_ssim):
        assert metric(x, x).shape == (0,)


def test_the_ms_ssim_window_is_fspecials_as_the_nss_models_compute_it() -> None:
    """One Gaussian tap formula serves MS-SSIM and NIQE/BRISQUE; it equals, bit for bit, the torch formula
    MS-SSIM used before they were shared (so no MS-SSIM value moved)."""
    from saliqa.iqa.matlab import gaussian_taps

    k = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(k**2) / (2 * 1.5**2))
    assert torch.equal(gaussian_taps(11, 1.5), g / g.sum())
