"""ImageNet-C's spatter: water drops (severities 1-3) or mud splashes (4-5) from one smoothed noise layer.

Follows imagecorruptions 1.1.x step by step. Mud is a Gaussian-softened mask blended towards brown. Water
runs the thresholded layer through an OpenCV chain (Canny, 5x5 chamfer distance, truncation, box blurs,
histogram equalisation, a 3x3 emboss) to shade the drops, then adds a pale colour scaled by the image's
own maximum. Each OpenCV step is ported to batched integer / float32 tensor arithmetic that gives the
numbers of opencv-python 5.0 (the reference's dependency here), so the whole chain runs on the batch's
device. OpenCV 5's distanceTransform adds float32 weights; older OpenCV sources add 16-bit fixed-point
ones, whose last bits differ and move some shading levels, so parity is with the OpenCV installed.
On the CPU the chain is OpenCV's own calls (see ``_shading``); the port serves the other devices.

The reference has grey-image branches, but ``imagecorruptions.corrupt`` (like ``registry.corrupt``) stacks
grey input to three channels first, so only its colour branches are reachable and ported. Its water branch
calls ``cvtColor(..., COLOR_BGR2BGRA)`` on an RGB image, so channel 0 (red) gets the colour's first entry
(175) and green and blue get 238: followed as it happens, not as the comment "pale turquoise" intends.
"""

from __future__ import annotations

import functools
from functools import cache
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from saliqa.corrupt.filters import BorderMode, border_index, gaussian_filter

__all__ = ["canny", "chamfer_distance", "draw_spatter", "equalize_hist", "spatter", "water_shading"]

# Per severity: (noise mean, noise std, layer sigma, layer threshold, water strength or mud sigma, is mud).
SPATTER = (
    (0.65, 0.3, 4, 0.69, 0.6, False),
    (0.65, 0.3, 3, 0.68, 0.6, False),
    (0.65, 0.3, 2, 0.68, 0.5, False),
    (0.65, 0.3, 1, 0.65, 1.5, True),
    (0.67, 0.4, 1, 0.65, 1.5, True),
)
WATER_RGB = (175, 238, 238)  # added to channels (0, 1, 2) as they come, see the module docstring
MUD_RGB = (63, 42, 20)
MUD_CUTOFF = np.float32(0.8)  # the reference compares a float32 mask with 0.8, i.e. with float32(0.8)
CANNY_LOW, CANNY_HIGH = 50, 150
DIST_TRUNC = 20  # cv2.threshold(dist, 20, 20, THRESH_TRUNC)
EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))

# OpenCV's Canny: tan(22.5 deg) in 15-bit fixed point, as cv::Canny sorts gradient directions.
_CANNY_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)

# OpenCV's distanceTransform(DIST_L2, 5): 5x5 chamfer weights (step, diagonal, knight move) as float32. The
# forward raster pass takes a pixel from its neighbours above and on its left, the backward pass from those
# below and on its right; each adds a weight in float32, so the path order matters in the last bits.
_FORWARD_MOVES = (
    (1.0, ((-1, 0), (0, -1))),
    (1.4, ((-1, -1), (-1, 1))),
    (2.1969, ((-2, -1), (-2, 1), (-1, -2), (-1, 2))),
)
_BACKWARD_MOVES = tuple((w, tuple((-di, -dj) for di, dj in offsets)) for w, offsets in _FORWARD_MOVES)


def draw_spatter(
    image: torch.Tensor, severity: int, rng: np.random.Generator
) -> dict[str, np.ndarray | float | int]:
    """The liquid layer: one normal draw per pixel, as the reference's ``np.random.normal(size=(H, W))``."""
    loc, scale = SPATTER[severity - 1][:2]
    return {"liquid": rng.normal(loc=loc, scale=scale, size=tuple(image.shape[-2:]))}


def spatter(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Smooth and threshold the liquid layer, then add water drops (severities 1-3) or mud (4-5)."""
    _, _, sigma, threshold, strength, mud = SPATTER[severity - 1]
    layer = gaussian_filter(params["liquid"].to(torch.float64), sigma)  # skimage's default mode "nearest"
    layer = layer.masked_fill(layer < threshold, 0.0)
    return _mud(x, layer > threshold, strength) if mud else _water(x, layer, strength)


def _mud(x: torch.Tensor, wet: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soften the wet mask (float32, as the reference) and pull the image towards brown where it is >= 0.8."""
    m = gaussian_filter(wet.to(torch.float32), sigma)
    m = m.masked_fill(m < MUD_CUTOFF, 0.0).unsqueeze(1)
    kept = x.to(torch.float32) / 255.0 * (1.0 - m)  # float32, as the reference's in-place product
    # The reference adds a float64 colour (a Python float times the mask); the float path stays in its dtype.
    brown = torch.tensor(MUD_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0
    return (kept.to(x.dtype) + brown * m.to(x.dtype)).clamp_(0.0, 1.0).mul_(255.0)


def _water(x: torch.Tensor, layer: torch.Tensor, strength: float) -> torch.Tensor:
    """Add pale colour where the shaded layer is bright, scaled by each image's maximum (all float32)."""
    # (layer * 255).astype(np.uint8) keeps the low byte: a corner pixel, whose draw "nearest" padding
    # weighs heavily, can exceed 1 now and then and wraps around to a dark level there.
    level = torch.floor(layer * 255.0).to(torch.int32).bitwise_and_(255)
    m = level.to(torch.float32) * _shading(level).to(torch.float32)
    peak = m.amax(dim=(-2, -1), keepdim=True)
    m = (m / peak * strength).unsqueeze(1)
    colour = torch.tensor(WATER_RGB, dtype=torch.float64).div(255.0).to(torch.float32)
    out = (x.to(torch.float32) / 255.0 + m * colour.to(x.device).view(1, 3, 1, 1)).clamp_(0.0, 1.0)
    # With no drop at all (tiny images at severity 1), the reference divides 0 by 0 and its uint8 cast
    # turns the NaNs into 0: a black image, made explicit here so every dtype and device gives it.
    return out.mul_(255.0).masked_fill_((peak == 0.0).unsqueeze(1), 0.0).to(x.dtype)


@cache
def _opencv() -> ModuleType | None:
    """cv2 when it can be imported (opencv-python comes with imagecorruptions-imaug), else None."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - installed with the frost textures' distribution
        return None
    return cv2


def _shading(level: torch.Tensor) -> torch.Tensor:
    """``water_shading`` of (B, H, W) int32 levels: through OpenCV itself on the CPU, the port elsewhere.

    On the CPU the reference's own OpenCV calls are exact by definition and about 15x faster than the
    port on one core (its chamfer distance relaxes the whole image some 20 times), and they release the
    GIL, so images shade in parallel threads. The port keeps a GPU batch on its device; the tests hold it
    to the same OpenCV chain.
    """
    cv2 = _opencv() if level.device.type == "cpu" else None
    if cv2 is None:
        return water_shading(level)
    shaded = [_opencv_shading(cv2, one.numpy().astype(np.uint8)) for one in level]
    return torch.from_numpy(np.stack(shaded)).to(torch.int32)


def _opencv_shading(cv2: ModuleType, level: np.ndarray) -> np.ndarray:
    """The reference's chain, call for call, on one uint8 (H, W) layer: uint8 (H, W) shading levels."""
    dist = cv2.distanceTransform(255 - cv2.Canny(level, CANNY_LOW, CANNY_HIGH), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, DIST_TRUNC, DIST_TRUNC, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array(EMBOSS))
    return cv2.blur(dist, (3, 3))


def water_shading(level: torch.Tensor) -> torch.Tensor:
    """The reference's ``dist``: the OpenCV chain from the uint8 layer (B, H, W) to the final ``blur``.

    Distance to the drop outlines (Canny), truncated at 20 and box-blurred to uint8, equalised over the
    image, embossed, and box-blurred again: levels (B, H, W) in 0..255 as int32.
    """
    edges = canny(level, CANNY_LOW, CANNY_HIGH)
    dist = chamfer_distance(edges, DIST_TRUNC)
    dist = _box3_float32(dist).to(torch.int32)  # .astype(np.uint8) truncates values in [0, 20]
    dist = equalize_hist(dist)
    dist = _correlate3(dist, EMBOSS).clamp_(0, 255)  # filter2D to CV_8U: an integer sum, saturated
    return _box3_uint8(dist)


# ---------------------------------------------------------------- OpenCV ports


def _padded(x: torch.Tensor, mode: BorderMode) -> torch.Tensor:
    """(B, H, W) with one sample of border each side: scipy ``mode`` names (OpenCV's REFLECT_101 = mirror)."""
    rows = border_index(x.shape[-2], 1, mode, x.device)
    cols = border_index(x.shape[-1], 1, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _correlate3(x: torch.Tensor, kernel: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """3x3 correlation of integer (B, H, W) under OpenCV's default border (REFLECT_101), exact."""
    p = _padded(x, "mirror")
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    for i, row in enumerate(kernel):
        for j, k in enumerate(row):
            if k:
                out += k * p[:, i : i + height, j : j + width]
    return out


def _box3_sum(x: torch.Tensor) -> torch.Tensor:
    """Sums over 3x3 windows under REFLECT_101, by rows then columns.

    Exact for what is summed here, so the order does not matter: integers, or float32 distances (0 or in
    [1, 20], hence multiples of 2^-23 below 2^5) summed in float64.
    """
    p = _padded(x, "mirror")
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _box3_float32(x: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))`` on float32: the window sum in float64 times 1/9, rounded to float32."""
    return (_box3_sum(x.to(torch.float64)) * (1.0 / 9.0)).to(torch.float32)


def _box3_uint8(x: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))`` on uint8 levels: the nearest integer to the mean (9 is odd, so no ties)."""
    return torch.div(_box3_sum(x) + 4, 9, rounding_mode="floor")


def canny(image: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """``cv2.Canny(image, low, high)`` (3x3 Sobel, L1 gradient) on uint8 levels (B, H, W): edge mask (bool).

    Sobel with replicated borders, OpenCV's fixed-point direction sectors and its tie rules for non-maximum
    suppression (magnitudes outside the image are 0), then hysteresis: an edge is any candidate (magnitude
    > low, a local maximum) 8-connected through candidates to a strong one (magnitude > high).
    """
    dx, dy = _sobel(image.to(torch.int32))
    mag = dx.abs() + dy.abs()
    candidate = (mag > low) & _local_maximum(mag, dx, dy)
    return _hysteresis(candidate & (mag > high), candidate)


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 Sobel derivatives (d/dcolumn, d/drow) of integer (B, H, W) with replicated borders."""
    p = _padded(x, "nearest")
    across = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]  # smoothed down the rows: (B, H, W + 2)
    down = p[..., :-2] + 2 * p[..., 1:-1] + p[..., 2:]  # smoothed along the rows: (B, H + 2, W)
    return across[..., 2:] - across[..., :-2], down[:, 2:] - down[:, :-2]


def _local_maximum(mag: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """OpenCV's non-maximum suppression: compare with the two neighbours across the gradient's sector.

    Horizontal and vertical sectors need ``>`` on the left / upper side and ``>=`` on the other; diagonal
    sectors need ``>`` on both. Sectors are split at tan(22.5 deg) and tan(67.5 deg) in 15-bit fixed point.
    """
    height, width = mag.shape[-2:]
    p = F.pad(mag, (1, 1, 1, 1))

    def at(di: int, dj: int) -> torch.Tensor:
        return p[:, 1 + di : 1 + di + height, 1 + dj : 1 + dj + width]

    ax, ay = dx.abs(), dy.abs() << _CANNY_SHIFT
    tg22 = ax * _TG22
    tg67 = tg22 + (ax << (_CANNY_SHIFT + 1))
    across_rows = (mag > at(0, -1)) & (mag >= at(0, 1))
    across_cols = (mag > at(-1, 0)) & (mag >= at(1, 0))
    signs_differ = (dx < 0) != (dy < 0)
    diagonal = torch.where(
        signs_differ, (mag > at(-1, 1)) & (mag > at(1, -1)), (mag > at(-1, -1)) & (mag > at(1, 1))
    )
    return torch.where(ay < tg22, across_rows, torch.where(ay > tg67, across_cols, diagonal))


def _hysteresis(strong: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Grow ``strong`` through 8-connected ``candidate`` pixels until nothing changes (OpenCV's edge stack)."""
    edges = strong
    while True:
        grown = _dilate3(edges) & candidate
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _dilate3(mask: torch.Tensor) -> torch.Tensor:
    """A (B, H, W) bool mask grown by its 8 neighbours (3x3 maximum, nothing beyond the borders)."""
    p = F.pad(mask, (1, 1, 1, 1))
    rows = p[:, :-2] | p[:, 1:-1] | p[:, 2:]
    return rows[..., :-2] | rows[..., 1:-1] | rows[..., 2:]


def chamfer_distance(sources: torch.Tensor, cap: float) -> torch.Tensor:
    """``cv2.distanceTransform(~sources, DIST_L2, 5)`` truncated at ``cap``: (B, H, W) bool -> float32.

    OpenCV's forward raster pass gives each pixel the cheapest float32 path from a source through forward
    moves only; its backward pass then extends those values through backward moves only. Relaxing each
    move set on the whole image until nothing changes gives the same minima (each pass is a recurrence
    over an acyclic order, with one solution). Relaxing all 16 moves together would not: it also finds
    paths in other orders, whose float32 sums can be lower in the last bit. A path cheaper than ``cap``
    has fewer than ``cap`` moves, which bounds the rounds; dearer pixels stay at ``cap``.
    """
    height, width = sources.shape[-2:]
    padded = torch.full(
        (sources.shape[0], height + 4, width + 4), float(cap), dtype=torch.float32, device=sources.device
    )
    dist = padded[:, 2:-2, 2:-2]
    dist.masked_fill_(sources, 0.0)

    def shifted(di: int, dj: int) -> torch.Tensor:
        return padded[:, 2 + di : 2 + di + height, 2 + dj : 2 + dj + width]

    for moves in (_FORWARD_MOVES, _BACKWARD_MOVES):
        for _ in range(int(cap) + 1):
            relaxed = dist
            for weight, offsets in moves:
                # adding in float32 is monotone, so the least neighbour plus the weight is the least sum
                nearest = functools.reduce(torch.minimum, (shifted(di, dj) for di, dj in offsets))
                relaxed = torch.minimum(relaxed, nearest + weight)
            if torch.equal(relaxed, dist):
                break
            dist.copy_(relaxed)
    return dist.contiguous()


def equalize_hist(levels: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image on integer levels (B, H, W) in 0..255.

    OpenCV's table: ``lut[v] = round((cdf[v] - count[lowest]) * (255 / (n - count[lowest])))`` in float32
    (round half to even), and an image of one level keeps that level.
    """
    flat = levels.flatten(1).to(torch.int64)
    counts = torch.zeros(flat.shape[0], 256, dtype=torch.int64, device=flat.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    lowest = (counts > 0).to(torch.int8).argmax(dim=1, keepdim=True)
    base = counts.gather(1, lowest)
    scale = torch.tensor(255.0, dtype=torch.float32, device=flat.device) / (flat.shape[1] - base).float()
    lut = torch.round((counts.cumsum(1) - base).to(torch.float32) * scale).clamp_(0, 255).to(levels.dtype)
    out = lut.gather(1, flat).view_as(levels)
    return torch.where((base == flat.shape[1]).view(-1, 1, 1), levels, out)
