"""Blur corruptions of ImageNet-C: defocus_blur, glass_blur, motion_blur, zoom_blur and (extra) gaussian_blur.

Each follows imagecorruptions 1.1.x step by step (same constants, same operation order, float64 on the exact
path) on batched (B, 3, H, W) tensors in [0, 255] (see ``registry.ApplyFn``). gaussian_blur, zoom_blur and
motion_blur (given the same angle) give the reference's pixels bit for bit; defocus_blur convolves through an
FFT as OpenCV does for big kernels, so a value exactly on a uint8 boundary can round the other way; glass_blur
replays the reference's pixel-copy sweep with its own random steps (see ``glass_blur``).

``clipped_zoom`` and ``motion_smear`` are shared with snow, which zooms and smears its flake layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache, lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from saliqa.corrupt.filters import clip_to_255, gaussian_filter

__all__ = [
    "clipped_zoom",
    "defocus_blur",
    "defocus_kernel",
    "draw_glass_blur",
    "draw_motion_blur",
    "gaussian_blur",
    "glass_blur",
    "glass_shuffle",
    "motion_shifts",
    "motion_smear",
    "zoom_blur",
]

# Per-severity constants (severity 1..5), as in imagecorruptions.
GAUSSIAN_SIGMA = (1.0, 2.0, 3.0, 4.0, 6.0)
DEFOCUS_RADIUS_ALIAS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
GLASS_SIGMA_STEP_PASSES = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
MOTION_RADIUS_SIGMA = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
MOTION_ANGLE = (-45.0, 45.0)
ZOOM_FACTORS = (
    np.arange(1, 1.11, 0.01),
    np.arange(1, 1.16, 0.01),
    np.arange(1, 1.21, 0.02),
    np.arange(1, 1.26, 0.02),
    np.arange(1, 1.31, 0.03),
)


# ---------------------------------------------------------------- gaussian_blur


def gaussian_blur(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """skimage's Gaussian (sigma 1 .. 6, mode nearest, truncate 4) of the image in [0, 1], per channel."""
    return clip_to_255(gaussian_filter(x.div_(255.0), GAUSSIAN_SIGMA[severity - 1]))


# ---------------------------------------------------------------- defocus_blur


def _fma32(a: np.ndarray, b: float, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once, as a fused multiply-add (the product is exact in float64)."""
    return (a.astype(np.float64) * np.float64(np.float32(b)) + c.astype(np.float64)).astype(np.float32)


def _cv_symmetric_pass(a: np.ndarray, taps: np.ndarray, axis: int, centre_last: bool) -> np.ndarray:
    """One pass of OpenCV's float32 separable filter (its AVX2 loop), border reflect-101, along ``axis``.

    OpenCV sums the centre product and the tap pairs ``(left + right) * tap`` as a chain of fused
    multiply-adds, starting from the centre (its 3-tap row filter ends with the centre instead).
    """
    radius = len(taps) // 2
    padding = [(radius, radius) if ax == axis else (0, 0) for ax in range(a.ndim)]
    padded = np.pad(a, padding, mode="reflect")  # numpy's reflect is OpenCV's reflect-101
    tap = lambda offset: np.take(padded, np.arange(offset, offset + a.shape[axis]), axis=axis)
    terms = [(tap(radius), taps[radius])]
    terms += [(tap(radius - j) + tap(radius + j), taps[radius + j]) for j in range(1, radius + 1)]
    if centre_last:
        terms = [*terms[1:], terms[0]]
    (values, weight), rest = terms[0], terms[1:]
    total = values * weight
    for values, weight in rest:
        total = _fma32(values, weight, total)
    return total


@cache
def defocus_kernel(radius: int, alias_sigma: float) -> np.ndarray:
    """imagecorruptions' ``disk``: a normalised float32 disk, anti-aliased by OpenCV's 3- or 5-tap Gaussian.

    The disk lives on a 17x17 grid up to radius 8 and on (2r+1)^2 beyond. OpenCV's Gaussian taps are
    ``exp(-x^2 / 2 sigma^2)`` normalised in float64 and rounded to float32; its filtering is emulated by
    ``_cv_symmetric_pass``. Against cv2 5.0 on an AVX2 CPU this is bit-exact for severities 1-4 and
    off by one float32 ulp in 12 of the 441 taps at severity 5 (OpenCV's scalar loop tail).
    """
    half = max(radius, 8)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    size = 3 if radius <= 8 else 5
    offsets = np.arange(size) - (size - 1) / 2
    gauss = np.exp(-0.5 / (alias_sigma * alias_sigma) * offsets * offsets)
    taps = (gauss / gauss.sum()).astype(np.float32)
    rows = _cv_symmetric_pass(disk, taps, axis=1, centre_last=size == 3)
    kernel = _cv_symmetric_pass(rows, taps, axis=0, centre_last=False)
    kernel.setflags(write=False)
    return kernel


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n, a length the FFT handles fast."""
    while True:
        rest = n
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1


@lru_cache(maxsize=8)  # complex128 spectra of whole images: a few MB each
def _defocus_spectrum(
    severity: int, size: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The conjugate spectrum of the severity's defocus kernel at FFT ``size``: the same for every image of
    that size, so computed once (it cost a third of each image's transforms)."""
    kernel = torch.tensor(defocus_kernel(*DEFOCUS_RADIUS_ALIAS[severity - 1]), dtype=dtype, device=device)
    return torch.fft.rfft2(kernel, s=size).conj_physical()


def defocus_blur(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """A lens out of focus: each channel in [0, 1] convolved with an anti-aliased disk of radius 3 .. 10.

    As ``cv2.filter2D`` on float64 with its default border, reflect-101 (torch's "reflect"), and as OpenCV
    does for kernels of 11x11 and more: through a real FFT over the padded image, zero-padded to a fast size
    (the wrap-around never reaches the kept H x W window). Buffers are reused in place where the values
    allow it: fresh image-sized memory costs more than the arithmetic on it.
    """
    radius = defocus_kernel(*DEFOCUS_RADIUS_ALIAS[severity - 1]).shape[-1] // 2
    height, width = x.shape[-2:]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect").div_(255.0)  # = x / 255, padded
    size = (_fft_size(padded.shape[-2]), _fft_size(padded.shape[-1]))
    spectrum = torch.fft.rfft2(padded, s=size).mul_(_defocus_spectrum(severity, size, x.dtype, x.device))
    return clip_to_255(torch.fft.irfft2(spectrum, s=size)[..., :height, :width])


# ---------------------------------------------------------------- motion_blur


@cache
def _motion_kernel(radius: int, sigma: float) -> tuple[float, ...]:
    """The reference's one-sided Gaussian weights of the 2r + 1 taps (tap 0 is the unshifted image)."""
    offsets = np.arange(2 * radius + 1)
    weights = np.exp(-(offsets**2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    return tuple((weights / np.sum(weights)).tolist())


def motion_shifts(
    angles: Sequence[float], taps: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and tap: the (dy, dx) pixel shift and whether the reference still adds that tap.

    Computed with the reference's scalar float64 arithmetic (so ``ceil`` lands where its does); the reference
    stops at the first shift as long as the image, so that tap and all later ones are dropped.
    """
    dy = np.zeros((len(angles), taps), dtype=np.int64)
    dx = np.zeros_like(dy)
    for b, angle in enumerate(angles):
        sin_part = taps * np.sin(np.deg2rad(angle))
        cos_part = taps * np.cos(np.deg2rad(angle))
        hypot = math.hypot(sin_part, cos_part)
        for i in range(taps):
            dy[b, i] = -math.ceil(((i * sin_part) / hypot) - 0.5)
            dx[b, i] = -math.ceil(((i * cos_part) / hypot) - 0.5)
    inside = (np.abs(dy) < height) & (np.abs(dx) < width)
    return dy, dx, np.logical_and.accumulate(inside, axis=1)


def motion_smear(x: torch.Tensor, angles: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """The reference's ``_motion_blur`` of each image along its own angle, unclipped.

    Tap i adds ``weight_i * x`` shifted by (dy_i, dx_i) with edge replication, in tap order, in ``x``'s
    dtype (float64 on the exact path, as the reference after its first tap). Every image gets its own
    shifts, read from the batch padded by edge replication once.
    """
    taps = 2 * radius + 1
    dy, dx, kept = motion_shifts(angles.tolist(), taps, *x.shape[-2:])
    weights = np.where(kept, _motion_kernel(radius, sigma), 0.0)
    padded = F.pad(x, (taps - 1,) * 4, mode="replicate").contiguous()  # no shift is longer than taps - 1
    smear = _smear_by_windows if x.device.type == "cpu" else _smear_by_gathers
    return smear(padded, x.shape, -dy, -dx, weights)


def _smear_by_windows(
    padded: torch.Tensor, shape: torch.Size, down: np.ndarray, right: np.ndarray, weights: np.ndarray
) -> torch.Tensor:
    """The sum of weighted windows of ``padded``, image by image: a shifted image is a window of its padded
    image, scaled straight into one reused buffer (a fresh image-sized tensor per tap costs more than the
    arithmetic). Best on the CPU; ``down``/``right``/``weights`` are (B, taps)."""
    batch, _, height, width = shape
    pad = (padded.shape[-1] - width) // 2
    out = torch.zeros(shape, dtype=padded.dtype, device=padded.device)
    scaled = torch.empty(shape[1:], dtype=padded.dtype, device=padded.device)
    for b in range(batch):
        for i in range(weights.shape[1]):
            top, left = pad + int(down[b, i]), pad + int(right[b, i])
            window = padded[b, :, top : top + height, left : left + width]
            out[b] += torch.mul(window, float(weights[b, i]), out=scaled)
    return out


def _smear_by_gathers(
    padded: torch.Tensor, shape: torch.Size, down: np.ndarray, right: np.ndarray, weights: np.ndarray
) -> torch.Tensor:
    """The same sum, one gather per tap for the whole batch: a shifted image is a set of W-long runs of the
    padded memory, one per row, at per-image row starts. Few kernels, as a GPU wants."""
    batch, channels, height, width = shape
    pad = (padded.shape[-1] - width) // 2
    padded_height, padded_width = height + 2 * pad, width + 2 * pad
    device = padded.device
    runs = padded.view(-1).unfold(0, width, 1)  # runs[s] = the W values from flat position s
    planes = torch.arange(batch * channels, device=device).view(batch, channels, 1)
    row_starts = (planes * padded_height + torch.arange(height, device=device) + pad) * padded_width + pad
    offsets = torch.from_numpy(down * padded_width + right).to(device)
    scale = torch.from_numpy(weights).to(device, padded.dtype)
    out = torch.zeros(shape, dtype=padded.dtype, device=device)
    gathered = torch.empty(batch * channels * height, width, dtype=padded.dtype, device=device)
    for i in range(weights.shape[1]):
        torch.index_select(runs, 0, (row_starts + offsets[:, i].view(batch, 1, 1)).view(-1), out=gathered)
        out += gathered.view(shape).mul_(scale[:, i].view(batch, 1, 1, 1))
    return out


def draw_motion_blur(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, float]:
    """The direction of motion, uniform in [-45, 45) degrees."""
    return {"angle": rng.uniform(*MOTION_ANGLE)}


def motion_blur(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Camera shake: a one-sided Gaussian smear (radius 10 .. 20 px) along each image's drawn angle."""
    radius, sigma = MOTION_RADIUS_SIGMA[severity - 1]
    return motion_smear(x, params["angle"], radius, sigma).clamp_(0.0, 255.0)


# ---------------------------------------------------------------- zoom_blur


@cache
def _zoom_axis(size: int, factor: float) -> tuple[torch.Tensor, ...]:
    """scipy.ndimage.zoom (order 1, grid_mode False, mode constant) of the centre crop along one axis.

    Returns the output's two source indices (into the uncropped axis), their weights and a 0/1 mask: output
    sample k reads the crop at ``k * (crop - 1) / (out - 1)`` with weights ``1 - frac`` and ``1 - (1 - frac)``
    as scipy computes them; a position that rounding pushes past the crop's last sample becomes 0 (cval).
    """
    crop = int(np.ceil(size / float(factor)))
    top = (size - crop) // 2
    out = round(crop * factor)
    step = np.divide(crop - 1, out - 1) if out > 1 else 1.0
    position = np.arange(out, dtype=np.float64) * step
    inside = position <= crop - 1
    floor = np.floor(position)
    near = 1.0 - (position - floor)
    first = np.minimum(floor, crop - 1)  # only positions zeroed by ``inside`` are clipped
    second = np.minimum(floor + 1, crop - 1)  # past the edge its weight is 0 (scipy reads a mirror sample)
    arrays = (first + top, second + top, near, 1.0 - near, inside.astype(np.float64))
    return tuple(torch.from_numpy(np.asarray(a)) for a in arrays)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """imagecorruptions' ``clipped_zoom`` of the last two dims: the centre ceil(n / factor) zoomed by factor.

    Bit-exact with scipy's order-1 zoom in x's dtype (pass float64 to get scipy's double arithmetic): each
    output is ``((v00 * wy0) * wx0 + (v01 * wy0) * wx1) + (v10 * wy1) * wx0 + (v11 * wy1) * wx1``, summed in
    scipy's order. The output is round(crop * factor) per axis, at least the input's size.
    """
    if factor == 1.0:  # scipy returns the input unchanged
        return x
    row0, row1, wy0, wy1, row_in = (a.to(x.device) for a in _zoom_axis(x.shape[-2], factor))
    col0, col1, wx0, wx1, col_in = (a.to(x.device) for a in _zoom_axis(x.shape[-1], factor))
    wy0, wy1, row_in = (w.to(x.dtype).view(-1, 1) for w in (wy0, wy1, row_in))
    wx0, wx1, col_in = (w.to(x.dtype) for w in (wx0, wx1, col_in))
    row0, row1, col0, col1 = row0.long(), row1.long(), col0.long(), col1.long()
    # Three buffers, reused in place: image-sized temporaries cost more than the arithmetic.
    rows = x.index_select(-2, row0).mul_(wy0)
    out = rows.index_select(-1, col0).mul_(wx0)
    term = rows.index_select(-1, col1).mul_(wx1)
    out += term
    torch.index_select(x, -2, row1, out=rows).mul_(wy1)
    out += torch.index_select(rows, -1, col0, out=term).mul_(wx0)
    out += torch.index_select(rows, -1, col1, out=term).mul_(wx1)
    return out.mul_(row_in).mul_(col_in)


def zoom_blur(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """A zoom during exposure: the mean of the image and its centre zoomed by 1.01 .. 1.30, in float32.

    As the reference, the image is float32 in [0, 1], each zoom is computed in float64 (scipy's arithmetic)
    on the exact path and stored as float32, and the layers are summed in float32.
    """
    height, width = x.shape[-2:]
    image = (x / 255.0).to(torch.float32)
    source = image.to(x.dtype)
    factors = ZOOM_FACTORS[severity - 1]
    total = torch.zeros_like(image)
    for factor in factors:
        total += clipped_zoom(source, float(factor))[..., :height, :width].to(torch.float32)
    return clip_to_255((image + total) / (len(factors) + 1)).to(x.dtype)


# ---------------------------------------------------------------- glass_blur


def draw_glass_blur(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every pass's random step (dx, dy), each uniform in [-step, step), for each swept pixel (int8).

    Shape (passes, H - 2 step, W - 2 step, 2): the sweep covers rows step + 1 .. H - step and the same
    columns, as the reference's does.
    """
    _, step, passes = GLASS_SIGMA_STEP_PASSES[severity - 1]
    height, width = image.shape[-2:]
    size = (passes, height - 2 * step, width - 2 * step, 2)
    return {"steps": rng.integers(-step, step, size=size, dtype=np.int8)}


def _copy_sources(steps: torch.Tensor, height: int, width: int, step: int) -> torch.Tensor:
    """For one pass of the sweep, the flat index (per image, (B, H * W)) of the pixel each pixel ends up holding.

    The reference visits pixels bottom-up, right to left, and its "swap" ``x[p], x[q] = x[q], x[p]`` of
    two (3,) views only copies: p takes q's value, q keeps its own. If q = p + (dy, dx) was visited earlier
    in this pass (dy > 0, or dy == 0 and dx > 0, and q inside the swept region) it already holds what it
    copied, so p's value comes from the end of a chain p -> q -> ...; the chains are followed by pointer
    jumping (about log2 of the longest chain rounds of gathers) instead of visiting pixels one by one.
    """
    around = (step + 1, step - 1, step + 1, step - 1)  # left, right, top, bottom margins of the sweep
    dx, dy = (F.pad(steps[..., k].long(), around) for k in (0, 1))  # no step outside the sweep
    rows = torch.arange(height, device=steps.device).view(-1, 1)
    cols = torch.arange(width, device=steps.device)
    source_row, source_col = rows + dy, cols + dx
    swept = (
        (source_row > step)
        & (source_row <= height - step)
        & (source_col > step)
        & (source_col <= width - step)
    )
    earlier = swept & ((dy > 0) | ((dy == 0) & (dx > 0)))
    source = (source_row * width + source_col).flatten(1)
    follow = torch.where(earlier.flatten(1), source, torch.arange(height * width, device=steps.device))
    for _ in range(math.ceil(math.log2(height * width))):
        jumped = follow.gather(1, follow)
        if torch.equal(jumped, follow):
            break
        follow = jumped
    return source.gather(1, follow)


def glass_shuffle(x: torch.Tensor, steps: torch.Tensor, step: int) -> torch.Tensor:
    """The reference's local pixel sweep, pass after pass, with the drawn ``steps`` (B, passes, h, w, 2).

    The passes' source maps are composed first, so the image itself is gathered once.
    """
    batch, channels, height, width = x.shape
    first, *later = steps.unbind(1)
    sources = _copy_sources(first, height, width, step)
    for one_pass in later:
        sources = sources.gather(1, _copy_sources(one_pass, height, width, step))
    flat = x.reshape(batch, channels, height * width)
    return flat.gather(2, sources.unsqueeze(1).expand(-1, channels, -1)).view(batch, channels, height, width)


def glass_blur(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Frosted glass: Gaussian blur, a local random pixel sweep (1 .. 3 passes, steps up to 4 px), blur again.

    The reference runs its sweep in numba with its own random stream (seeded by an unseeded numpy Generator,
    so it is not reproducible and cannot be matched value for value). Here the same sweep runs vectorised
    (``_copy_sources``) on this image's drawn steps: same step distribution, same visiting order, same
    copy-not-swap effect, so the result has the reference's distribution exactly; with the reference's
    steps it would give its pixels bit for bit (the tests replay ours through the reference to check).
    The blurred image is truncated to uint8 levels before the sweep, as the reference does.
    """
    sigma, step, _ = GLASS_SIGMA_STEP_PASSES[severity - 1]
    levels = gaussian_filter(x / 255.0, sigma).mul_(255.0).trunc_()
    shuffled = glass_shuffle(levels, params["steps"], step)
    return clip_to_255(gaussian_filter(shuffled / 255.0, sigma))
