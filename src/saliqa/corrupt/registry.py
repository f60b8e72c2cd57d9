"""One registry of the 19 ImageNet-C corruptions (Hendrycks & Dietterich, 2019) and the entry point ``corrupt``.

All 19 names are known, in the canonical imagecorruptions order, so a config can be checked against the
full benchmark; an entry whose ``fn`` is None is known but not implemented in this version, and asking for
it fails with a message saying so instead of pretending to work.

Families follow ImageNet-C: brightness is a *weather* corruption and contrast, elastic_transform, pixelate
and jpeg_compression are *digital*; of the four extra (validation) corruptions, speckle_noise is noise,
gaussian_blur blur, spatter weather and saturate digital.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np

from saliqa.corrupt import digital
from saliqa.errors import CorruptionError

__all__ = [
    "CLEAN",
    "CORRUPTIONS",
    "Corruption",
    "CorruptionFn",
    "available_corruptions",
    "check_corruption",
    "corrupt",
    "corruption_names",
]

Family = Literal["noise", "blur", "weather", "digital"]
Group = Literal["common", "extra"]
CorruptionFn = Callable[[np.ndarray, int, "np.random.Generator | None"], np.ndarray]
"""``(image uint8 (H, W, 3) C-contiguous, severity 1..5, rng) -> float64 in [0, 255] or uint8 (H, W, 3)``."""

SEVERITIES = (1, 2, 3, 4, 5)
CLEAN = "none"
"""The corruption name of the undistorted condition in result tables (its severity is 0)."""
MIN_SIDE = 32  # imagecorruptions refuses smaller images (several kernels need the room)


@dataclass(frozen=True)
class Corruption:
    """One ImageNet-C corruption: its name, family, benchmark group and function (None: not yet here)."""

    name: str
    family: Family
    group: Group
    fn: CorruptionFn | None = None

    @property
    def implemented(self) -> bool:
        return self.fn is not None


def _entries() -> tuple[Corruption, ...]:
    """The 19 corruptions in imagecorruptions' canonical order: the 15 common ones, then the 4 extra."""
    return (
        Corruption("gaussian_noise", "noise", "common"),
        Corruption("shot_noise", "noise", "common"),
        Corruption("impulse_noise", "noise", "common"),
        Corruption("defocus_blur", "blur", "common"),
        Corruption("glass_blur", "blur", "common"),
        Corruption("motion_blur", "blur", "common"),
        Corruption("zoom_blur", "blur", "common"),
        Corruption("snow", "weather", "common"),
        Corruption("frost", "weather", "common"),
        Corruption("fog", "weather", "common"),
        Corruption("brightness", "weather", "common", digital.brightness),
        Corruption("contrast", "digital", "common", digital.contrast),
        Corruption("elastic_transform", "digital", "common"),
        Corruption("pixelate", "digital", "common"),
        Corruption("jpeg_compression", "digital", "common", digital.jpeg_compression),
        Corruption("speckle_noise", "noise", "extra"),
        Corruption("gaussian_blur", "blur", "extra"),
        Corruption("spatter", "weather", "extra"),
        Corruption("saturate", "digital", "extra", digital.saturate),
    )


CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType({c.name: c for c in _entries()})
"""Name -> Corruption for all 19, in canonical order (read-only)."""

_SELECTIONS = ("all", "common", "extra", "noise", "blur", "weather", "digital")


def corruption_names(which: str = "all") -> tuple[str, ...]:
    """Names in canonical order: all 19, a group (common / extra) or a family (noise / blur / ...).

    A family includes its extra member (e.g. "noise" ends with speckle_noise), unlike imagecorruptions'
    ``get_corruption_names``, whose family subsets cover the common 15 only.
    """
    if which not in _SELECTIONS:
        raise CorruptionError(
            f"unknown corruption selection {which!r}; choose one of {', '.join(_SELECTIONS)}"
        )
    return tuple(c.name for c in CORRUPTIONS.values() if which in ("all", c.group, c.family))


def available_corruptions() -> tuple[str, ...]:
    """The corruptions implemented in this version, in canonical order."""
    return tuple(c.name for c in CORRUPTIONS.values() if c.implemented)


def _check_name(name: object) -> Corruption:
    if not isinstance(name, str):
        raise CorruptionError(f"a corruption name must be a string, got {type(name).__name__}")
    entry = CORRUPTIONS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(CORRUPTIONS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CorruptionError(
            f"unknown corruption {name!r}{hint} Known (the 19 of ImageNet-C): {', '.join(CORRUPTIONS)}"
        )
    if not entry.implemented:
        raise CorruptionError(
            f"{name!r} is one of the 19 ImageNet-C corruptions but is not implemented in this version; "
            f"available: {', '.join(available_corruptions())}"
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
    height, width = image.shape[:2]
    if height < MIN_SIDE or width < MIN_SIDE:
        raise CorruptionError(f"image is {height}x{width}; corruptions need height and width >= {MIN_SIDE}")
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(height, width, 1), 3, axis=2)
    return np.ascontiguousarray(image)


def corrupt(
    image: np.ndarray, name: str, severity: int, *, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5); returns a new uint8 (H, W, 3) array.

    Same pixels as ``imagecorruptions.corrupt(image, corruption_name=name, severity=severity)``: the
    corruption works in float64 and the result is truncated by ``np.uint8`` after the reference's clip.
    ``rng`` feeds the random corruptions; deterministic ones ignore it. The input is never modified.
    """
    entry = check_corruption(name, severity)
    rgb = _as_rgb_uint8(image)
    assert entry.fn is not None  # check_corruption refuses unimplemented names
    out = entry.fn(rgb, int(severity), rng)
    return out if out.dtype == np.uint8 else out.astype(np.uint8)
