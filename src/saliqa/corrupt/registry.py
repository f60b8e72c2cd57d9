"""One registry of the 19 ImageNet-C corruptions (Hendrycks & Dietterich, 2019) and the entry point ``corrupt``.

All 19, in the canonical imagecorruptions order. Each is split in two: ``draw_<name>`` makes one image's
random draws from that image's own stream, and ``<name>`` applies the corruption to a batch on any device,
so an image's result never depends on its batch, its position or the device count, and the random part can
be handed to the reference implementation in tests.

Families follow ImageNet-C: brightness is a *weather* corruption and contrast, elastic_transform, pixelate
and jpeg_compression are *digital*; of the four extra (validation) corruptions, speckle_noise is noise,
gaussian_blur blur, spatter weather and saturate digital.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Literal

import numpy as np
import torch

from saliqa.corrupt import blur, digital, noise, snow, spatter, weather
from saliqa.corrupt.filters import CPU_CHUNK
from saliqa.errors import CorruptionError
from saliqa.seeding import rng_for
from saliqa.threads import parallel_map

__all__ = [
    "CLEAN",
    "CORRUPTIONS",
    "SELECTIONS",
    "SEVERITIES",
    "ApplyFn",
    "Corruption",
    "DrawFn",
    "LevelsFn",
    "Params",
    "check_corruption",
    "corrupt",
    "corrupt_batch",
    "corruption_names",
    "corruption_rng",
]

Family = Literal["noise", "blur", "weather", "digital"]
Group = Literal["common", "extra"]
Params = dict[str, torch.Tensor]
"""A batch's random draws: each value has the batch as its first dimension."""
ApplyFn = Callable[[torch.Tensor, int, Params], torch.Tensor]
"""``(x (B, 3, H, W) float in [0, 255], severity 1..5, params) -> (B, 3, H, W) float in [0, 255]``.

``x`` is float64 on the exact path (uint8 input) and the caller's float dtype otherwise, a fresh buffer the
function owns: it may work in it in place (fresh image-sized memory costs more than the arithmetic on it).
The result is clipped as the reference clips it; the caller truncates to uint8 levels.
Corruptions marked ``on_levels`` (the PIL codecs) are a ``LevelsFn`` instead.
"""
LevelsFn = Callable[[torch.Tensor, int, Params, torch.Tensor], torch.Tensor]
"""``(levels (B, 3, H, W) uint8, severity, params, out) -> out``: the reference runs these on the PIL image,
so they read uint8 levels and write uint8 levels straight into ``out`` (same shape and device, possibly
the caller's own output), which they return."""
DrawFn = Callable[[torch.Tensor, int, np.random.Generator], "Mapping[str, np.ndarray | float | int]"]
"""``(one image (3, H, W) in [0, 255], severity, its own rng) -> that image's random draws``.

Called once per image with the stream of (seed, image id, corruption, severity), so a draw never depends on
the batch it travels in. Most draws use only the image's size; equal-size images give equal-shape arrays.
A draw may be a whole random layer (fog's plasma map: up to 8 MB per 1024-pixel image), which travels to the
batch's device with the batch.
"""

SEVERITIES = (1, 2, 3, 4, 5)
CLEAN = "none"
"""The corruption name of the undistorted condition in result tables (its severity is 0)."""
MIN_SIDE = 32  # imagecorruptions refuses smaller images (several kernels need the room)


@dataclass(frozen=True)
class Corruption:
    """One ImageNet-C corruption: name, family, benchmark group, and how it is computed.

    ``apply`` is the deterministic, batched part; ``draw`` (None for deterministic corruptions) makes one
    image's random draws. ``batched`` is False for the few that go through a CPU codec image by image;
    ``on_levels`` is True for those whose ``apply`` takes and returns uint8 levels instead of floats.
    ``any_layout`` is True for those computed in the batch's own memory layout (pixel-wise ones, and contrast
    with its layout-proof means): a channels-last batch (decoded images) is then never transposed, nor are
    their (H, W, 3) draws.
    """

    name: str
    family: Family
    group: Group
    apply: ApplyFn | LevelsFn
    draw: DrawFn | None = None
    batched: bool = True
    on_levels: bool = False
    any_layout: bool = False

    @property
    def random(self) -> bool:
        return self.draw is not None


def _entry(name: str, family: Family, group: Group, module: ModuleType) -> Corruption:
    """A registry entry from the module that computes ``name``: ``name`` applies, ``draw_<name>`` draws."""
    return Corruption(
        name,
        family,
        group,
        apply=getattr(module, name),
        draw=getattr(module, f"draw_{name}", None),
        batched=name not in getattr(module, "IMAGE_BY_IMAGE", ()),
        on_levels=name in getattr(module, "ON_LEVELS", ()),
        any_layout=name in getattr(module, "ANY_LAYOUT", ()),
    )


def _entries() -> tuple[Corruption, ...]:
    """The 19 corruptions in imagecorruptions' canonical order: the 15 common ones, then the 4 extra."""
    return (
        _entry("gaussian_noise", "noise", "common", noise),
        _entry("shot_noise", "noise", "common", noise),
        _entry("impulse_noise", "noise", "common", noise),
        _entry("defocus_blur", "blur", "common", blur),
        _entry("glass_blur", "blur", "common", blur),
        _entry("motion_blur", "blur", "common", blur),
        _entry("zoom_blur", "blur", "common", blur),
        _entry("snow", "weather", "common", snow),
        _entry("frost", "weather", "common", weather),
        _entry("fog", "weather", "common", weather),
        _entry("brightness", "weather", "common", digital),
        _entry("contrast", "digital", "common", digital),
        _entry("elastic_transform", "digital", "common", digital),
        _entry("pixelate", "digital", "common", digital),
        _entry("jpeg_compression", "digital", "common", digital),
        _entry("speckle_noise", "noise", "extra", noise),
        _entry("gaussian_blur", "blur", "extra", blur),
        _entry("spatter", "weather", "extra", spatter),
        _entry("saturate", "digital", "extra", digital),
    )


CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType({c.name: c for c in _entries()})
"""Name -> Corruption for all 19, in canonical order (read-only)."""

SELECTIONS = ("all", "common", "extra", "noise", "blur", "weather", "digital")
"""The names ``corruption_names`` accepts: everything, a benchmark group, or a family."""


def corruption_names(which: str = "all") -> tuple[str, ...]:
    """Names in canonical order: all 19, a group (common / extra) or a family (noise / blur / ...).

    A family includes its extra member (e.g. "noise" ends with speckle_noise), unlike imagecorruptions'
    ``get_corruption_names``, whose family subsets cover the common 15 only.
    """
    if which not in SELECTIONS:
        raise CorruptionError(
            f"unknown corruption selection {which!r}; choose one of {', '.join(SELECTIONS)}"
        )
    return tuple(c.name for c in CORRUPTIONS.values() if which in ("all", c.group, c.family))


def _check_name(name: object) -> Corruption:
    if not isinstance(name, str):
        raise CorruptionError(f"a corruption name must be a string, got {type(name).__name__}")
    entry = CORRUPTIONS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(CORRUPTIONS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CorruptionError(
            f"unknown corruption {name!r}{hint}. Known (the 19 of ImageNet-C): {', '.join(CORRUPTIONS)}; "
            f"a config also takes the selections {', '.join(SELECTIONS)}"
        )
    return entry


def _check_severity(severity: object) -> int:
    valid = isinstance(severity, int | np.integer) and not isinstance(severity, bool | np.bool_)
    if not valid or int(severity) not in SEVERITIES:
        raise CorruptionError(
            f"severity must be an int in 1..5 (as in ImageNet-C), got {severity!r} ({type(severity).__name__})"
        )
    return int(severity)


def check_corruption(name: str, severity: int | None = None) -> Corruption:
    """Fail early, with a message saying what to change, unless ``name`` (and ``severity``) can be run.

    Returns the registry entry so callers need not look it up again.
    """
    entry = _check_name(name)
    if severity is not None:
        _check_severity(severity)
    return entry


def _as_rgb_uint8(image: object) -> np.ndarray:
    """Validate like imagecorruptions.corrupt and return a C-contiguous uint8 (H, W, 3) array.

    Grey input (H, W) or (H, W, 1) is stacked to three equal channels, as the reference does.
    """
    if not isinstance(image, np.ndarray):
        raise CorruptionError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise CorruptionError(
            f"image dtype is {image.dtype}; corruptions take uint8 in [0, 255] (as imagecorruptions does). "
            "Convert first, e.g. (np.clip(x, 0, 1) * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise CorruptionError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {image.shape}")
    _check_size(*image.shape[:2])
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    return np.ascontiguousarray(image)


def _check_size(height: int, width: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise CorruptionError(f"image is {height}x{width}; corruptions need height and width >= {MIN_SIDE}")


def _check_batch(images: object) -> torch.Tensor:
    """A (B, 3, H, W) uint8 or float tensor; (B, 1, H, W) grey is repeated to three channels."""
    if not isinstance(images, torch.Tensor):
        raise CorruptionError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise CorruptionError(f"images must be (B, 3, H, W) or (B, 1, H, W), got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise CorruptionError(f"images must be uint8 in [0, 255] or float in [0, 1], got {images.dtype}")
    _check_size(*images.shape[-2:])
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def corruption_rng(seed: int, image_id: object, name: str, severity: int) -> np.random.Generator:
    """The random stream of one image under one corruption and severity, derived from the run's seed."""
    return rng_for(seed, image_id, name, severity)


def _draws(
    entry: Corruption, x: torch.Tensor, severity: int, seed: int, image_ids: Sequence[object]
) -> Params:
    """Each image's draws from its own stream, stacked along the batch on the batch's device."""
    if entry.draw is None:
        return {}
    per_image = [
        entry.draw(image, severity, corruption_rng(seed, image_id, entry.name, severity))
        for image, image_id in zip(x, image_ids, strict=True)
    ]
    return {key: _stacked([np.asarray(d[key]) for d in per_image]).to(x.device) for key in per_image[0]}


def _stacked(arrays: list[np.ndarray]) -> torch.Tensor:
    """Per-image draws stacked along a new first dimension; one image's draws are used where they are.

    (3, H, W) views of (H, W, 3) draws stay channels-last in memory: stacking them as (B, 3, H, W) would
    transpose every value. Fresh memory is dear (page faults cost about a fifth of a millisecond per MB
    here), and the CPU path works one image at a time, so the copy is skipped altogether then.
    """
    first = arrays[0]
    if len(arrays) == 1 and first.flags.writeable:
        return torch.from_numpy(first)[None]
    if first.ndim == 3 and first.strides[0] < first.strides[-1]:
        return torch.from_numpy(np.stack([np.moveaxis(a, 0, -1) for a in arrays])).permute(0, 3, 1, 2)
    return torch.as_tensor(np.stack(arrays))


def corrupt_batch(
    images: torch.Tensor,
    name: str,
    severity: int,
    *,
    seed: int = 0,
    image_ids: Sequence[object] | None = None,
) -> torch.Tensor:
    """Corrupt a batch (B, 3, H, W) of equal-size images on its own device; returns a new tensor.

    uint8 input is computed in float64 and gives ``corrupt``'s pixels; float input in [0, 1] is computed in
    its own dtype (float32 is the fast GPU path) and returned in [0, 1] on the same 256 levels, since the
    reference's output is uint8. Random draws for image ``i`` come from the stream of (seed,
    ``image_ids[i]``, name, severity); pass stable ids (file names, dataset indices) so that an image gets the
    same corruption whatever batch it is in. The default ids are the positions 0..B-1.
    """
    entry = check_corruption(name, severity)
    images = _check_batch(images)
    ids = list(range(len(images))) if image_ids is None else list(image_ids)
    if len(ids) != len(images):
        raise CorruptionError(f"{len(ids)} image ids for a batch of {len(images)} images")
    if len(images) == 0:
        return torch.empty(images.shape, dtype=images.dtype, device=images.device)
    if images.dtype in (torch.float16, torch.bfloat16):  # not every op (FFT, ...) has a half kernel
        return corrupt_batch(images.float(), name, severity, seed=seed, image_ids=ids).to(images.dtype)
    out = torch.empty_like(images)  # the input's memory format: no transposing copies on the way out
    if images.device.type != "cpu":
        _corrupt_chunk(entry, images, int(severity), seed, ids, out)
    else:
        _corrupt_on_cpu(entry, images, int(severity), seed, ids, out)
    return out


def _corrupt_on_cpu(
    entry: Corruption, images: torch.Tensor, severity: int, seed: int, ids: list[object], out: torch.Tensor
) -> None:
    """The batch in image-sized pieces spread over the cores, each piece's ops on one thread.

    Pieces keep float64 temporaries inside the caches, and whole pieces per core need no barrier between
    threads, which a loaded machine would make wait at every op (see :mod:`saliqa.threads`). No value
    changes: each image has its own draws and is computed alike in any piece.
    """
    per_piece = max(1, CPU_CHUNK // images[0].numel())

    def piece(start: int) -> None:
        stop = start + per_piece
        _corrupt_chunk(entry, images[start:stop], severity, seed, ids[start:stop], out[start:stop])

    parallel_map(piece, range(0, len(images), per_piece))


def _corrupt_chunk(
    entry: Corruption, images: torch.Tensor, severity: int, seed: int, ids: list[object], dest: torch.Tensor
) -> None:
    """Corrupt ``images`` into ``dest`` (same shape and dtype), converting to and from levels on the way."""
    exact = images.dtype == torch.uint8
    with torch.no_grad():
        if entry.on_levels:  # the reference runs these on the PIL image: uint8 in, uint8 out
            levels = images if exact else _to_levels(images, scratch=dest)
            params = _draws(entry, levels, severity, seed, ids)
            if exact:
                entry.apply(levels, severity, params, dest)  # type: ignore[call-arg]
            else:
                out = entry.apply(levels, severity, params, torch.empty_like(levels))  # type: ignore[call-arg]
                dest.copy_(out).div_(255.0)
            return
        layout = torch.preserve_format if entry.any_layout else torch.contiguous_format
        x = images.to(torch.float64, memory_format=layout) if exact else _scaled_copy(images, layout)
        out = entry.apply(x, severity, _draws(entry, x, severity, seed, ids))
        if not exact:  # the levels, in the corruption's own layout: writing through ``out=`` into a
            out = out.floor_().div_(255.0)  # channels-last ``dest`` would cost 4x a plain copy
        dest.copy_(out)  # the exact path truncates values in [0, 255] to uint8, as np.uint8 does


def _scaled_copy(images: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``images * 255`` as a new tensor in ``layout``: a channels-last batch is transposed first, then scaled
    in place, a third of the time of scaling it and transposing the result."""
    if layout == torch.preserve_format or images.is_contiguous():
        return images * 255.0
    return images.contiguous().mul_(255.0)


def _to_levels(images: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> the nearest uint8 levels (ties to even), clipped to [0, 255].

    The float steps run in ``scratch`` (the output, overwritten later): a fresh image-sized buffer each time
    would cost more than the arithmetic, its pages faulted in anew on every call.
    """
    return torch.mul(images, 255.0, out=scratch).round_().clamp_(0, 255).to(torch.uint8)


def corrupt(
    image: np.ndarray, name: str, severity: int, *, seed: int = 0, image_id: object = 0
) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) to one uint8 image; returns a new uint8 (H, W, 3).

    Follows ``imagecorruptions.corrupt(image, corruption_name=name, severity=severity)`` step by step, in
    float64, with the final uint8 truncation; random draws come from the stream of (seed, image_id, name,
    severity) instead of numpy's global state, so a call is reproducible. The input is never modified.
    """
    check_corruption(name, severity)
    rgb = _as_rgb_uint8(image)
    batch = torch.tensor(rgb).permute(2, 0, 1).unsqueeze(0)  # a copy: the input stays untouched
    out = corrupt_batch(batch, name, severity, seed=seed, image_ids=[image_id])
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())
