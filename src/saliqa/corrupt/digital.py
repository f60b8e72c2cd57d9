"""Digital corruptions of ImageNet-C: brightness, contrast, saturate, jpeg_compression, pixelate, elastic.

ImageNet-C files brightness under *weather* (see the registry); it lives here with saturate because both
are the same HSV round trip.

Each follows imagecorruptions 1.1.x step by step (same constants, same operation order, float64 on the exact
path) so that the registry's final uint8 truncation gives the reference's pixels bit for bit. Functions take
and return (B, 3, H, W) floats in [0, 255] (see ``registry.ApplyFn``), except jpeg_compression and pixelate:
the reference runs them on the PIL image, so they read uint8 levels and write them into the caller's
``out`` (``registry.LevelsFn``, ``ON_LEVELS``). pixelate
repeats Pillow's fixed-point BOX and NEAREST resampling as batched tensor code for other devices than the
CPU, and elastic_transform scipy's linear ``map_coordinates``.
"""

from __future__ import annotations

import math
import warnings
from functools import cache
from io import BytesIO

import numpy as np
import torch
from PIL import Image

from saliqa.corrupt.filters import clip_to_255, gaussian_filter

__all__ = [
    "brightness",
    "contrast",
    "draw_elastic_transform",
    "elastic_transform",
    "hsv_to_rgb",
    "jpeg_compression",
    "pixelate",
    "rgb_to_hsv",
    "saturate",
]

IMAGE_BY_IMAGE = ("jpeg_compression",)
"""Corruptions that go through a CPU codec one image at a time (no batched form)."""
ON_LEVELS = ("jpeg_compression", "pixelate")
"""Corruptions that work on uint8 levels (B, 3, H, W) rather than floats, as the reference's PIL calls do."""
ANY_LAYOUT = ("contrast",)
"""Computed in the batch's own memory layout (see the registry); contrast's channel means are taken in a
fixed order whatever the layout."""

# Per-severity constants (severity 1..5), as in imagecorruptions.
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
SATURATE_SCALE_SHIFT = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
JPEG_QUALITY = (25, 18, 15, 10, 7)
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)
ELASTIC_ALPHA = tuple(250 * f for f in (0.05, 0.065, 0.085, 0.1, 0.12))  # the reference's float products
ELASTIC_MAX_SHIFT = 0.005  # uniform shifts of up to this share of the image height, before smoothing
ELASTIC_SIGMA = 0.01  # smoothing sigma as a share of each side
ELASTIC_TRUNCATE = 3.0
PILLOW_PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit resampling (32 - 8 - 2 bits)


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB (B, 3, H, W) in [0, 1] -> planes (h, s, v), bit-exact with ``skimage.color.rgb2hsv`` in float64.

    Same operations in the same order: V = max, S = ptp / V (0 where ptp = 0), hue from the channel that
    holds the max with blue overriding green overriding red on ties, ``(hue / 6) % 1``, 0 where ptp = 0.
    """
    r, g, b = rgb.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    flat = delta == 0.0
    safe_delta = torch.where(flat, 1.0, delta)  # only changes pixels whose h and s are zeroed below
    s = torch.where(flat, 0.0, delta / torch.where(v == 0.0, 1.0, v))
    h = torch.where(
        b == v,
        4.0 + (r - g) / safe_delta,
        torch.where(g == v, 2.0 + (b - r) / safe_delta, (g - b) / safe_delta),
    )
    h = torch.remainder(h / 6.0, 1.0)
    return h.masked_fill_(flat, 0.0), s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Planes (h, s, v) -> RGB (B, 3, H, W), bit-exact with ``skimage.color.hsv2rgb`` in float64."""
    h6 = h * 6.0
    hi = torch.floor(h6)
    f = h6 - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    sector = torch.remainder(hi.to(torch.uint8), 6).long().unsqueeze(0)
    choose = lambda *planes: torch.stack(planes).gather(0, sector).squeeze(0)
    return torch.stack((choose(v, q, p, p, t, v), choose(t, v, v, q, p, p), choose(p, p, t, v, v, q)), 1)


def brightness(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Raise HSV value by 0.1 .. 0.5 (clipped to 1): a brighter picture with hue and saturation kept."""
    h, s, v = rgb_to_hsv(x.div_(255.0))
    v = torch.clamp(v + BRIGHTNESS_SHIFT[severity - 1], 0.0, 1.0)
    return clip_to_255(hsv_to_rgb(h, s, v))


def _channel_means(x: torch.Tensor) -> torch.Tensor:
    """Per-image channel means (B, 3, 1, 1); on the CPU summed as the reference sums them.

    numpy's pairwise sum over an (H, W, 3) image and torch's reduction differ in the last bits on large
    images, and a mean one ulp off moves whole channels by one level (about 7% of the values of a
    512x4096 image). Other devices use torch's reduction and may do so.
    """
    if x.device.type != "cpu":  # channels-first, so a channels-last batch sums in the same order
        return x.contiguous().mean(dim=(2, 3), keepdim=True)
    hwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # the reference's memory order
    return torch.from_numpy(hwc.mean(axis=(1, 2))).to(x.dtype).view(-1, 3, 1, 1)


def contrast(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pull every channel towards its own image mean by a factor 0.4 .. 0.05."""
    x = x.div_(255.0)
    means = _channel_means(x)
    return clip_to_255((x - means).mul_(CONTRAST_FACTOR[severity - 1]).add_(means))


def saturate(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scale and shift HSV saturation (x0.3, x0.1 desaturate; x2, x5+0.1, x20+0.2 oversaturate)."""
    scale, shift = SATURATE_SCALE_SHIFT[severity - 1]
    h, s, v = rgb_to_hsv(x.div_(255.0))
    s = torch.clamp(s * scale + shift, 0.0, 1.0)
    return clip_to_255(hsv_to_rgb(h, s, v))


def _hwc_images(levels: torch.Tensor) -> np.ndarray:
    """uint8 (B, 3, H, W) -> C-contiguous uint8 (B, H, W, 3) on the CPU, as Pillow wants them."""
    return np.ascontiguousarray(levels.permute(0, 2, 3, 1).cpu().numpy())


def _chw_levels(images: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) images -> uint8 (B, 3, H, W) on ``like``'s device."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(like.device)


def _jpeg_with_pillow(image: torch.Tensor, quality: int) -> torch.Tensor:
    """One (3, H, W) uint8 image round-tripped through Pillow's JPEG codec, as the reference does it."""
    buffer = BytesIO()
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(
        buffer, "JPEG", quality=quality
    )
    buffer.seek(0)
    with Image.open(buffer) as reopened:
        return torch.from_numpy(np.array(reopened, dtype=np.uint8)).permute(2, 0, 1)


def _jpeg_with_torchvision(image: torch.Tensor, quality: int) -> torch.Tensor:
    """The same round trip through torchvision's libjpeg: byte for byte Pillow's file and pixels (baseline,
    4:2:0, islow DCT; the tests hold it to the reference), on the (3, H, W) tensor as it is, the GIL released
    while it codes: 1.8x Pillow's time per image on one core. torchvision deprecates its image codecs from
    0.29 on (TorchCodec takes over); Pillow's path serves when they are gone."""
    return _decode_jpeg(_encode_jpeg(image, quality=quality))


try:
    from torchvision.io import decode_jpeg as _decode_jpeg
    from torchvision.io import encode_jpeg as _encode_jpeg

    _jpeg_round_trip = _jpeg_with_torchvision
    # Its deprecation notice comes with every call; silenced once, for that message only (a filter changed
    # around each call would race between the threads the corruptions run on).
    warnings.filterwarnings(
        "ignore",
        message="The image decoding and encoding capabilities of TorchVision",
        category=DeprecationWarning,
    )
except ImportError:  # pragma: no cover - a torchvision without its image codecs
    _jpeg_round_trip = _jpeg_with_pillow


def jpeg_compression(
    levels: torch.Tensor, severity: int, params: dict[str, torch.Tensor], out: torch.Tensor
) -> torch.Tensor:
    """Round-trip each image through libjpeg at quality 25 .. 7, in memory, as the reference does with Pillow."""
    quality = JPEG_QUALITY[severity - 1]
    for image, place in zip(levels.cpu(), out, strict=True):
        place.copy_(_jpeg_round_trip(image, quality))
    return out


@cache
def _box_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's BOX reduction of a line, as (out_size, taps) source indices and fixed-point weights.

    Repeats ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of Pillow's Resample.c: a box of width
    ``scale`` centred on each output sample, its taps' weights normalised in double, then rounded to
    integers with 22 fractional bits. Taps past a window's end get weight 0 (and a valid index).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    taps = np.arange(math.ceil(support) * 2 + 1)
    center = (np.arange(out_size) + 0.5) * scale
    first = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int) of a positive value
    count = np.minimum((center + support + 0.5).astype(np.int64), in_size) - first
    position = ((taps + first[:, None]) - center[:, None] + 0.5) * (1.0 / filterscale)
    inside = (position > -0.5) & (position <= 0.5) & (taps < count[:, None])
    weight = inside / np.maximum(inside.sum(axis=1, keepdims=True), 1)
    fixed = (0.5 + weight * (1 << PILLOW_PRECISION_BITS)).astype(np.int32)
    index = np.minimum(first[:, None] + taps, in_size - 1)
    return torch.from_numpy(index), torch.from_numpy(fixed)


def _box_reduce(levels: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One pass of Pillow's BOX resize along ``dim`` (-1 or -2) of int32 levels, rounded to levels.

    Sums in int32 as Pillow does (its weights add up to about 2^22, so 255 times that still fits).
    """
    index, fixed = (t.to(levels.device) for t in _box_taps(levels.shape[dim], out_size))
    if dim == -2:
        fixed = fixed.unsqueeze(-1)
    total = torch.full((), 1 << (PILLOW_PRECISION_BITS - 1), dtype=torch.int32, device=levels.device)
    for tap in range(index.shape[1]):
        total = total + levels.index_select(dim, index[:, tap]) * fixed[:, tap]
    return (total >> PILLOW_PRECISION_BITS).clamp_(0, 255)


def _box_resize(levels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's two-pass BOX resize of int32 levels to (height, width), each pass rounding to uint8 levels.

    Pillow 13's ``ImagingResample`` runs the vertical pass first when it removes more than twice as many
    rows as the horizontal pass removes columns (tall images), else the horizontal pass first; the order
    changes the rounding, so it is repeated here. (Earlier Pillow always went horizontal first.)
    """
    if levels.shape[-2] - height > 2 * (levels.shape[-1] - width):
        return _box_reduce(_box_reduce(levels, height, -2), width, -1)
    return _box_reduce(_box_reduce(levels, width, -1), height, -2)


@cache
def _nearest_index(in_size: int, out_size: int) -> torch.Tensor:
    """Source index of each output sample in Pillow's NEAREST resize (``ImagingScaleAffine``).

    Pillow starts at half a step and adds the step once per sample, so the positions are a running sum in
    double, not ``(i + 0.5) * step``; the two pick different samples for about a fifth of the sizes.
    """
    step = in_size / out_size
    positions = np.add.accumulate(np.r_[step * 0.5, np.full(out_size - 1, step)])
    return torch.from_numpy(positions.astype(np.int64))


def pixelate_levels(levels: torch.Tensor, severity: int) -> torch.Tensor:
    """The batched port of Pillow's BOX-down, NEAREST-up resize on int32 levels (B, 3, H, W), any device."""
    height, width = levels.shape[-2:]
    factor = PIXELATE_FACTOR[severity - 1]
    small = _box_resize(levels, int(height * factor), int(width * factor))
    rows = _nearest_index(small.shape[-2], height).to(levels.device)
    cols = _nearest_index(small.shape[-1], width).to(levels.device)
    return small.index_select(-2, rows).index_select(-1, cols)


def _pixelate_with_pillow(levels: torch.Tensor, severity: int, out: torch.Tensor) -> torch.Tensor:
    """Pillow's BOX down per image, then its NEAREST up as two gathers straight into ``out`` (columns first,
    on the small image): Pillow's own upscale and the array copies out of it held the GIL; the gathers pick
    the very samples (``_nearest_index``)."""
    height, width = levels.shape[-2:]
    factor = PIXELATE_FACTOR[severity - 1]
    small_width, small_height = int(width * factor), int(height * factor)
    rows, cols = _nearest_index(small_height, height), _nearest_index(small_width, width)
    for image, target in zip(_hwc_images(levels), out.permute(0, 2, 3, 1), strict=True):
        small = Image.fromarray(image).resize((small_width, small_height), Image.BOX)
        small_hwc = torch.from_numpy(np.array(small))
        torch.index_select(small_hwc.index_select(1, cols), 0, rows, out=target)
    return out


def pixelate(
    levels: torch.Tensor, severity: int, params: dict[str, torch.Tensor], out: torch.Tensor
) -> torch.Tensor:
    """Shrink by 0.6 .. 0.25 with Pillow's BOX filter, then blow back up with NEAREST: big square pixels.

    On the CPU Pillow itself is fastest (about 1 ms per 375x500 image against 8 for the port); on other
    devices the port keeps the batch where it is. Tests hold both to the reference's bytes.
    """
    if levels.device.type == "cpu":
        return _pixelate_with_pillow(levels, severity, out)
    return out.copy_(pixelate_levels(levels.to(torch.int32), severity))


def draw_elastic_transform(
    image: torch.Tensor, severity: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Raw column and row shifts (dx, then dy, as the reference draws them), uniform within +-0.5 % of H."""
    height, width = image.shape[-2:]
    bound = height * ELASTIC_MAX_SHIFT  # the reference bounds both directions by the height
    return {
        "dx": rng.uniform(-bound, bound, size=(height, width)),
        "dy": rng.uniform(-bound, bound, size=(height, width)),
    }


def _displacement(raw: torch.Tensor, alpha: float) -> torch.Tensor:
    """Raw shifts smoothed as skimage's reflect-mode Gaussian (sigma 1 % of each side, truncate 3), times alpha.

    The reference filters in float64 and stores the scaled field in float32, as here.
    """
    height, width = raw.shape[-2:]
    sigma = (height * ELASTIC_SIGMA, width * ELASTIC_SIGMA)
    smooth = gaussian_filter(raw.to(torch.float64), sigma, mode="reflect", truncate=ELASTIC_TRUNCATE)
    return (smooth * alpha).to(torch.float32)


def _reflect_coordinate(c: torch.Tensor, size: int) -> torch.Tensor:
    """scipy's ``map_coordinate`` for mode 'reflect': fold a float64 coordinate into (-1, size).

    Same branches and operation order as ni_interpolation.c; a coordinate just below 0 folds to just below
    0 again (-c - 1 > -1), which the linear taps then clamp to the edge sample.
    """
    period = 2 * size
    low = torch.where(c < -period, period * torch.trunc(-c / period) + c, c)
    low = torch.where(low < -size, low + period, torch.where(low > -1e-15, 1e-15, -low) - 1)
    high = c - period * torch.trunc(c / period)
    high = torch.where(high >= size, period - high - 1, high)
    return torch.where(c < 0, low, torch.where(c > size - 1, high, c))


def _linear_taps(c: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first index, second index, first weight, second weight) of scipy's order-1 spline at ``c``.

    The weights are ``1 - frac`` and ``1 - (1 - frac)`` as scipy computes them; a tap outside the line is
    folded by 'reflect' again, which for the only reachable ones (-1 and ``size``) is the edge sample.
    """
    folded = _reflect_coordinate(c, size)
    start = torch.floor(folded)
    first_weight = 1.0 - (folded - start)
    first = start.to(torch.int64)
    return first.clamp(0, size - 1), (first + 1).clamp(0, size - 1), first_weight, 1.0 - first_weight


def _map_linear_reflect(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """scipy's ``map_coordinates(order=1, mode='reflect')`` of float32 (B, C, H, W), bit-exact.

    ``rows`` and ``cols`` are float64 (B, H, W) coordinates, the same for every channel. scipy sums the 2 x 2 taps in double, row tap outer and column tap inner, each as
    ``(value * row_weight) * column_weight``, and stores the sum in the input's float32.
    """
    batch, channels, height, width = image.shape
    r0, r1, wr0, wr1 = _linear_taps(rows, height)
    c0, c1, wc0, wc1 = _linear_taps(cols, width)
    flat = image.to(torch.float64).flatten(-2)

    def tap(r: torch.Tensor, c: torch.Tensor, wr: torch.Tensor, wc: torch.Tensor) -> torch.Tensor:
        index = (r * width + c).flatten(-2).unsqueeze(1).expand(-1, channels, -1)
        values = flat.gather(-1, index).view(batch, channels, height, width)
        return values * wr.unsqueeze(1) * wc.unsqueeze(1)

    total = tap(r0, c0, wr0, wc0) + tap(r0, c1, wr0, wc1)
    total = total + tap(r1, c0, wr1, wc0)
    return (total + tap(r1, c1, wr1, wc1)).to(torch.float32)


def elastic_transform(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Move every pixel by a smooth random field (12.5 .. 30 times the smoothed shifts): a wobbly image.

    Sampled bilinearly with reflected borders, in float32 as the reference.
    """
    height, width = x.shape[-2:]
    alpha = ELASTIC_ALPHA[severity - 1]
    dx, dy = _displacement(params["dx"], alpha), _displacement(params["dy"], alpha)
    grid = {"dtype": torch.float64, "device": x.device}
    rows = torch.arange(height, **grid).unsqueeze(-1) + dy.to(torch.float64)
    cols = torch.arange(width, **grid) + dx.to(torch.float64)
    out = _map_linear_reflect(x.to(torch.float32) / 255.0, rows, cols)
    return out.clamp_(0.0, 1.0).mul_(255.0).to(x.dtype)
