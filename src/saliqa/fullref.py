"""Full-reference quality of a distorted crop against its clean crop: PSNR and MS-SSIM, batched.

The evaluation's third axis: how far a corruption moved the pixels, independent of any model (robust
training is often tied to about 0.8 MS-SSIM between clean and corrupted images).

    from saliqa.fullref import ms_ssim, psnr
    psnr(clean, corrupted)      # (B,) in dB; +inf where the images are identical
    ms_ssim(clean, corrupted)   # (B,) in [0, 1]

Both take two batches (B, 3, H, W) of the same shape and dtype: uint8 in [0, 255] (data range 255) or float
in [0, 1] (data range 1), and return float64 on the inputs' device. Everything is computed in float64 on CPU
and CUDA alike, one code path: SSIM's variances are differences of large, nearly equal moments, and float32
moments (or pytorch-msssim's float32 window) move MS-SSIM by up to 1e-5 relative on real photos, while the
metric costs little next to a classifier. No gradients are tracked. MS-SSIM holds about 20 MB of float64
maps per 224x224 image at once: score large sets in batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saliqa.iqa.matlab import gaussian_taps

# Wang, Simoncelli & Bovik 2003 and the original msssim.m / ssim_index_new.m.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
# Each 2x2 downsampling maps a side n to ceil(n / 2); the last scale must still hold one 11x11 window.
MS_SSIM_MIN_SIDE = (WINDOW_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1  # 161


def _as_pair(reference: torch.Tensor, distorted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both batches in float64, in their own units, and the data range their dtype implies.

    ``reference`` may hold one image that every distorted image is compared with (broadcast).
    """
    for name, t in (("reference", reference), ("distorted", distorted)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (B, 3, H, W), got {type(t).__name__}")
    if reference.shape[1:] != distorted.shape[1:] or len(reference) not in (1, len(distorted)):
        raise ValueError(
            f"reference and distorted must have the same shape (or one reference image for the batch), "
            f"got {tuple(reference.shape)} and {tuple(distorted.shape)}"
        )
    if reference.ndim != 4 or reference.shape[1] != 3:
        raise ValueError(f"images must be a batch (B, 3, H, W), got shape {tuple(reference.shape)}")
    if reference.dtype != distorted.dtype:
        raise ValueError(
            f"reference and distorted must have the same dtype (uint8 in [0, 255] or float in [0, 1]), "
            f"got {reference.dtype} and {distorted.dtype}"
        )
    if reference.device != distorted.device:
        raise ValueError(
            f"reference and distorted are on different devices: {reference.device}, {distorted.device}"
        )
    if reference.dtype == torch.uint8:
        data_range = 255.0
    elif reference.dtype.is_floating_point:
        data_range = 1.0
        for name, t in (("reference", reference), ("distorted", distorted)):
            if not ((t >= 0) & (t <= 1)).all():  # also catches NaN
                raise ValueError(
                    f"float {name} must lie in [0, 1] (got values in [{t.min().item()}, {t.max().item()}]); "
                    "pass uint8 for images in [0, 255]"
                )
    else:
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got {reference.dtype}")
    return reference.to(torch.float64), distorted.to(torch.float64), data_range


@torch.no_grad()
def psnr(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: 10 log10(L^2 / MSE) over all pixels and channels.

    L is 255 for uint8 and 1 for float input, so the same image in either form gets the same value.
    Identical images have MSE 0 and PSNR +inf (as in skimage), not an error: a clean row compared with
    itself is a valid row.
    """
    x, y, data_range = _as_pair(reference, distorted)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(data_range**2 / mse)


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """(n - 10, n) matrix whose row i holds the window at columns i..i+10: the 'valid' 1-D filter as a GEMM."""
    band = torch.zeros(n - len(g) + 1, n, dtype=g.dtype, device=g.device)
    for k, weight in enumerate(g):
        band.diagonal(k).fill_(weight)
    return band


def _blur(maps: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gaussian mean over each 'valid' 11x11 window (MATLAB filter2(window, x, 'valid')), map by map.

    The taps are :func:`saliqa.iqa.matlab.gaussian_taps`' (fspecial's normalised 1-D factor); the filter is not
    :func:`saliqa.iqa.matlab.gaussian_filter` ('same' size from padding, summed tap by tap for NIQE/BRISQUE's
    flat regions): MS-SSIM keeps only the 'valid' region and is pinned by msssim.m, pytorch-msssim and piqa
    to 1e-14, not bit for bit, so the separable window runs as two band-matrix products, in float64 on CPU
    about 4x faster than a depthwise convolution, which has no optimised float64 kernel.
    """
    height, width = maps.shape[-2:]
    return _band(height, g) @ maps @ _band(width, g).T


def _ssim_and_cs(
    x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image and channel, (B, C) each (ssim_index_new.m).

    A single reference image ``x`` has its two moments blurred once for the whole batch ``y``.
    """
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, xx = _blur(torch.cat([x, x * x], dim=1), g).chunk(2, dim=1)
    mu_y, yy, xy = _blur(torch.cat([y, y * y, x * y], dim=1), g).chunk(3, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim.mean(dim=(2, 3)), cs.mean(dim=(2, 3))


@torch.no_grad()
def ms_ssim(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM per image (Wang, Simoncelli & Bovik 2003; msssim.m), in [0, 1]; 1 for identical images.

    Five scales: the contrast-structure term at scales 1-4 and full SSIM (luminance * cs) at scale 5,
    raised to MS_SSIM_WEIGHTS and multiplied. Statistics use an 11x11 Gaussian window (sigma 1.5, 'valid'
    region only), C1 = (0.01 L)^2, C2 = (0.03 L)^2. Between scales each image is averaged over 2x2 blocks
    as msssim.m does (imfilter(ones(2)/4, 'symmetric') then every other pixel), so an odd side n becomes
    ceil(n / 2) with the last row/column kept as is; pytorch-msssim (zero padding) and piq (replicate
    padding at the top/left) pair pixels differently on odd sides, piqa matches msssim.m.

    Colour: MS-SSIM of each RGB channel, then the mean over the three, as pytorch-msssim, piq and piqa do.
    It keeps chroma-only damage (saturate) visible, which a luma-only score would miss.

    Negative terms: a scale whose mean cs (or last-scale SSIM) is negative is clamped to 0 before the
    power, as pytorch-msssim, piq and piqa do (ReLU); msssim.m would return a complex number there. So a
    channel anti-correlated with its reference at any scale scores 0.

    ``reference`` may be one image (1, 3, H, W) for the whole batch: its statistics are then computed once,
    which is how the evaluation compares every condition of an image with its clean crop.

    Raises ValueError when a side is below MS_SSIM_MIN_SIDE (161): the fifth scale would be smaller than the
    window. (msssim.m's own check is stricter, min side / 16 >= 11, i.e. 176.)
    """
    x, y, data_range = _as_pair(reference, distorted)
    height, width = x.shape[-2:]
    if min(height, width) < MS_SSIM_MIN_SIDE:
        raise ValueError(
            f"MS-SSIM needs height and width >= {MS_SSIM_MIN_SIDE} ({len(MS_SSIM_WEIGHTS)} scales with an "
            f"{WINDOW_SIZE}x{WINDOW_SIZE} window), got {height}x{width}"
        )
    g = gaussian_taps(WINDOW_SIZE, WINDOW_SIGMA).to(x.device)
    terms = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        if scale > 0:
            x = F.avg_pool2d(x, kernel_size=2, ceil_mode=True)
            y = F.avg_pool2d(y, kernel_size=2, ceil_mode=True)
        ssim, cs = _ssim_and_cs(x, y, g, data_range)
        terms.append(cs if scale < len(MS_SSIM_WEIGHTS) - 1 else ssim)
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64, device=x.device).view(-1, 1, 1)
    per_channel = torch.stack(terms).clamp(min=0).pow(weights).prod(dim=0)  # (B, C)
    return per_channel.mean(dim=1)
