"""The geometric transforms of training and evaluation, on uint8 images, driven by explicit random streams.

Training draws each crop from a numpy Generator keyed by (seed, epoch, image id), never from torch's global
RNG, so an epoch's images do not depend on worker count, batch order or the point a run resumed from.
Evaluation crops the centre of an image whose short side is at least the crop size; a smaller image is first
upscaled on its short side (recorded by the caller), so the quality model sees original pixels otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def _resize(chw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear with antialiasing on a uint8 (3, H, W) tensor: deterministic on CPU."""
    return TF.resize(chw, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def upscale_short_side(image: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
    """``image`` (H, W, 3) uint8 with its short side brought up to ``size`` if it was shorter.

    Returns the image and whether it was upscaled. Larger images are returned unchanged (never downscaled).
    """
    h, w = image.shape[:2]
    if min(h, w) >= size:
        return image, False
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return _resize(chw, new_h, new_w).permute(1, 2, 0).contiguous().numpy(), True


def resize_short_side(
    image: np.ndarray, size: int, interpolation: str = "bilinear"
) -> tuple[np.ndarray, bool]:
    """``image`` (H, W, 3) uint8 with its short side resized to ``size`` (down or up), antialiased, as a
    published model's ``Resize(size)`` does (the long side ``int(size * long / short)``, torchvision's rule).

    Returns the image and whether it was enlarged.
    """
    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    if short == size:
        return image, False
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    mode = TF.InterpolationMode(interpolation)
    resized = TF.resize(chw, [new_h, new_w], interpolation=mode, antialias=True)
    return resized.permute(1, 2, 0).contiguous().numpy(), short < size


def center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the central ``size`` x ``size`` window, as torchvision's ``center_crop``:
    ``round((H - size) / 2)``, half to even."""
    if height < size or width < size:
        raise ValueError(f"center_crop needs both sides >= {size}, got {width}x{height}")
    return round((height - size) / 2.0), round((width - size) / 2.0)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of an (H, W, C) image with both sides >= size (a view)."""
    top, left = center_offsets(*image.shape[:2], size)
    return image[top : top + size, left : left + size]


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator, scale: tuple[float, float] = SCALE, ratio=RATIO
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of an Inception-style crop: torchvision's RandomResizedCrop rule, numpy draws.

    Ten tries at a random area share and log-uniform aspect ratio; if none fits, the central crop clamped to
    the ratio range.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_view(image: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random-resized crop of ``size`` and a horizontal flip with probability 1/2: (3, size, size) uint8."""
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng)
    chw = torch.from_numpy(np.ascontiguousarray(image[top : top + h, left : left + w])).permute(2, 0, 1)
    view = _resize(chw, size, size)
    if rng.random() < 0.5:
        view = view.flip(-1)
    return view.contiguous()


def eval_view(image: np.ndarray, size: int) -> tuple[torch.Tensor, bool]:
    """The evaluation crop of a clean image: (3, size, size) uint8, and whether it had to be upscaled."""
    image, upscaled = upscale_short_side(image, size)
    crop = center_crop(image, size)
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).contiguous(), upscaled
