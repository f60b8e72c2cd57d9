"""Weather corruptions of ImageNet-C: frost and fog.

Both follow imagecorruptions 1.1.x step by step (same constants, same operation order and dtypes, float64 on
the exact path), so that with the same random values the registry's uint8 truncation gives the reference's
pixels. The random values come from the image's own ``np.random.Generator``, drawn with the reference's
distributions, arguments and order, so a test can hand exactly these values to the reference.

fog draws the uniforms of a diamond-square plasma fractal; the fractal itself is built in ``fog``, batched
and level by level. frost draws a texture and a crop; the textures are the six images shipped with
imagecorruptions-imaug, read with Pillow from the installed distribution (importing the package would pull
in OpenCV and numba). OpenCV's ``INTER_CUBIC`` enlargement of a texture is reproduced by ``resize_cubic`` up
to rare near-ties of a half level (see there): the one step of frost that is not bit-exact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saliqa.errors import CorruptionError

__all__ = [
    "check_textures",
    "cubic_resample",
    "draw_fog",
    "draw_frost",
    "fog",
    "frost",
    "plasma_fractal",
    "resize_cubic",
    "texture_path",
]

# Per-severity constants (severity 1..5), as in imagecorruptions.
FOG_STRENGTH_DECAY = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
FROST_IMAGE_TEXTURE = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))

PLASMA_START_WIBBLE = 100.0
ANY_LAYOUT = ("fog",)  # pixel-wise, the haze shared by the channels (see the registry)
TEXTURE_DISTRIBUTION = "imagecorruptions-imaug"
TEXTURE_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
TEXTURE_MARGIN = 1.1  # the texture is enlarged to 1.1x the size it needs to cover the image
CUBIC_A = -0.75  # OpenCV's (and IPP's B=0, C=0.75) bicubic kernel parameter


# ---------------------------------------------------------------- fog


def _map_size(height: int, width: int) -> int:
    """The fractal's side: the next power of two of the image's larger side."""
    return 1 << (max(height, width) - 1).bit_length()


def _wibbles(map_size: int, decay: float) -> list[float]:
    """The noise amplitude of each level (step size map_size, map_size / 2, ..., 2), as Python floats."""
    wibbles, wibble = [], PLASMA_START_WIBBLE
    for _ in range(map_size.bit_length() - 1):
        wibbles.append(wibble)
        wibble /= decay
    return wibbles


def draw_fog(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All uniforms of the plasma fractal, in the reference's order, flattened into one float64 array.

    Per level, three (n, n) draws in [-wibble, wibble): the square centres, then the two diamond grids.
    """
    map_size = _map_size(*image.shape[-2:])
    draws = []
    for level, wibble in enumerate(_wibbles(map_size, FOG_STRENGTH_DECAY[severity - 1][1])):
        n = 1 << level
        draws.extend(rng.uniform(-wibble, wibble, (n, n)).ravel() for _ in range(3))
    return {"uniform": np.concatenate(draws)}


def plasma_fractal(uniform: torch.Tensor, map_size: int, decay: float) -> torch.Tensor:
    """Diamond-square height maps (B, map_size, map_size) in float32 [0, 1], one per row of ``uniform``.

    Each level fills the square centres, then the diamond points, from float32 sums of their neighbours
    (wrapping around) in the reference's order, so that the same uniforms give the same map bit for bit.
    """
    return _diamond_square()(uniform, map_size, _wibbles(map_size, decay))


def _diamond_square_levels(uniform: torch.Tensor, map_size: int, wibbles: list[float]) -> torch.Tensor:
    """The fractal, level by level (``wibbles``: each level's noise amplitude); see :func:`plasma_fractal`.

    The reference's ``total / 4 + wibble * u`` is one float64 add here: the quarter is exact, so rounding
    once gives its value.
    """
    batch = uniform.shape[0]
    maps = torch.empty((batch, map_size, map_size), dtype=torch.float32, device=uniform.device)
    maps[:, 0, 0] = 0.0
    start = 0
    for level in range(len(wibbles)):
        n, step = 1 << level, map_size >> level
        half = step // 2
        noise = (uniform[:, start : start + 3 * n * n] * wibbles[level]).view(batch, 3, n, n)
        start += 3 * n * n
        corners = maps[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        squares += squares.roll(-1, 2)
        maps[:, half::step, half::step] = torch.add(noise[:, 0], squares, alpha=0.25)
        centres = maps[:, half::step, half::step]
        rows = (centres + centres.roll(1, 1)) + (corners + corners.roll(-1, 2))
        maps[:, ::step, half::step] = torch.add(noise[:, 1], rows, alpha=0.25)
        columns = (centres + centres.roll(1, 2)) + (corners + corners.roll(-1, 1))
        maps[:, half::step, ::step] = torch.add(noise[:, 2], columns, alpha=0.25)
    maps -= maps.amin(dim=(1, 2), keepdim=True)
    return maps.div_(maps.amax(dim=(1, 2), keepdim=True))


@lru_cache(maxsize=1)
def _diamond_square() -> Callable[[torch.Tensor, int, list[float]], torch.Tensor]:
    """The fractal's levels as TorchScript, run without the interpreter: its ~200 small ops would otherwise
    hand the GIL over at every op between the threads that corrupt images side by side (3.0 ms per image
    on two threads, against 1.6 scripted; the values are the same). TorchScript is deprecated; where it
    is gone, or fails, the plain function serves."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning
            )
            return torch.jit.script(_diamond_square_levels)
    except Exception:  # noqa: BLE001 - whatever stops scripting, the plain function gives the same values
        return _diamond_square_levels


def fog(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Add a plasma-fractal haze (strength 1.5 .. 3, rougher at higher severity), then rescale by the max.

    The image's own maximum (over all channels) before the haze sets the output scale, as in the reference.
    """
    strength, decay = FOG_STRENGTH_DECAY[severity - 1]
    height, width = x.shape[-2:]
    haze = plasma_fractal(params["uniform"], _map_size(height, width), decay)[:, :height, :width]
    x = x.div_(255.0)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    x += haze.mul_(strength).unsqueeze(1)  # scaled in float32 as the reference does, added in x's dtype
    return x.mul_(max_val).div_(max_val + strength).clamp_(0.0, 1.0).mul_(255.0)


# ---------------------------------------------------------------- frost textures


def texture_path(index: int) -> Path:
    """The file of frost texture ``index`` (0..5) inside the installed imagecorruptions-imaug.

    Found through the distribution's file list, so the package (and its OpenCV and numba) is never imported.
    """
    name = TEXTURE_FILES[index]
    install = f"pip install {TEXTURE_DISTRIBUTION}"
    try:
        files = metadata.distribution(TEXTURE_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        raise CorruptionError(
            f"frost needs the frost textures shipped with {TEXTURE_DISTRIBUTION}, which is not installed; "
            f"run: {install}"
        ) from None
    for file in files:
        if file.parts[-2:] == ("frost", name):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise CorruptionError(
        f"frost texture {name} is missing from the installed {TEXTURE_DISTRIBUTION}; reinstall it: "
        f"{install} --force-reinstall"
    )


def check_textures() -> None:
    """Fail now, with what to install, unless all six frost textures can be found."""
    for index in range(len(TEXTURE_FILES)):
        texture_path(index)


@lru_cache(maxsize=len(TEXTURE_FILES))
def _texture(index: int) -> torch.Tensor:
    """Frost texture ``index`` as RGB uint8 (3, h, w); Pillow decodes these files to cv2.imread's pixels.

    The reference flips its BGR texture to RGB after resizing and cropping; both act per channel, so
    flipping first gives the same layer.
    """
    with Image.open(texture_path(index)) as image:
        rgb = np.array(image.convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _enlarged_size(index: int, height: int, width: int) -> tuple[int, int]:
    """The reference's size for the texture: scaled (never shrunk) to cover the image, then 1.1x.

    The scale is max(1, height / texture height, width / texture width), the reference's four cases in one.
    """
    texture_height, texture_width = _texture(index).shape[-2:]
    scale = max(1.0, height / texture_height, width / texture_width) * TEXTURE_MARGIN
    return math.ceil(texture_height * scale), math.ceil(texture_width * scale)


def _cubic_weights(distance: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.75 at the (non-negative) tap distances."""
    a = CUBIC_A
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    return torch.where(distance < 1, near, torch.where(distance < 2, far, 0.0))


def _cubic_taps(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices (size_out, 4) and float64 weights of each output sample along one axis.

    Pixel centres are aligned ((i + 0.5) * scale - 0.5, in float64) and samples past the edge repeat it.
    """
    position = (torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5
    base = torch.floor(position)
    offsets = torch.arange(-1, 3, dtype=torch.float64)
    weights = _cubic_weights(((position - base).unsqueeze(1) - offsets).abs())
    index = (base.long().unsqueeze(1) + offsets.long()).clamp_(0, size_in - 1)
    return index, weights


def _resample_rows(source: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sums of whole rows (dim 1) of float64 (C, n, m): contiguous copies, the fast direction."""
    out = source.index_select(1, index[:, 0]) * weights[:, 0, None]
    for k in range(1, index.shape[1]):
        out.addcmul_(source.index_select(1, index[:, k]), weights[:, k, None])
    return out


def cubic_resample(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic (Keys, a = -0.75) resampling of (C, h, w) to float64 (C, height, width), before rounding.

    Columns first, then rows, each as four weighted whole-row copies (the fast direction in memory).
    """
    source = image.to(torch.float64).transpose(1, 2).contiguous()
    columns = _resample_rows(source, *_cubic_taps(image.shape[-1], width)).transpose(1, 2).contiguous()
    return _resample_rows(columns, *_cubic_taps(image.shape[-2], height))


def resize_cubic(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of uint8 (C, h, w) to (C, height, width), as ``cv2.resize(..., INTER_CUBIC)`` on x86.

    There OpenCV hands 8-bit cubic resizing to Intel IPP, whose result, measured on the frost textures, is
    the exact bicubic value rounded to nearest up to single-precision error: this float64 computation
    differs from it by one level on ~1e-5 of the values, all within 4e-5 of a half level, which IPP rounds
    either way. OpenCV's own 11-bit fixed-point path (IPP off or absent, e.g. on ARM) differs from both on a
    few percent of values, by one level; saliqa follows IPP because the reference on x86 does.
    """
    return cubic_resample(image, height, width).round_().clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=12)
def _enlarged_texture(index: int, height: int, width: int) -> torch.Tensor:
    """Texture ``index`` resized for a height x width image; independent of the image's content, so cached."""
    return resize_cubic(_texture(index), *_enlarged_size(index, height, width))


# ---------------------------------------------------------------- frost


def draw_frost(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, int]:
    """The texture (0..5), then the crop's top and left offsets, drawn as the reference draws them."""
    height, width = image.shape[-2:]
    index = int(rng.integers(len(TEXTURE_FILES)))
    texture_height, texture_width = _enlarged_size(index, height, width)
    top = int(rng.integers(0, texture_height - height))
    left = int(rng.integers(0, texture_width - width))
    return {"texture": index, "top": top, "left": left}


def _frost_layers(
    params: dict[str, torch.Tensor], height: int, width: int, like: torch.Tensor
) -> torch.Tensor:
    """Each image's crop of its texture, (B, 3, H, W) in ``like``'s dtype and device.

    One strided copy per image: several times faster than a batched gather, as the crops are plain slices.
    """
    draws = zip(*(params[key].tolist() for key in ("texture", "top", "left")), strict=True)
    layers = torch.empty((len(params["texture"]), 3, height, width), dtype=like.dtype, device=like.device)
    textures: dict[int, torch.Tensor] = {}
    for layer, (index, top, left) in zip(layers, draws, strict=True):
        if index not in textures:
            textures[index] = _enlarged_texture(index, height, width).to(like.device)
        layer.copy_(textures[index][:, top : top + height, left : left + width])
    return layers


def frost(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Blend the image (weight 1 .. 0.6) with a crop of an ice texture (weight 0.4 .. 0.75), clipped."""
    image_weight, texture_weight = FROST_IMAGE_TEXTURE[severity - 1]
    layers = _frost_layers(params, *x.shape[-2:], like=x)
    return (image_weight * x + texture_weight * layers).clamp_(0.0, 255.0)
