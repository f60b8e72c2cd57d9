"""The 19 ImageNet-C corruptions behind one registry, pixel-exact with imagecorruptions where implemented.

from saliqa.corrupt import corrupt, available_corruptions
out = corrupt(image_uint8, "contrast", 2)               # uint8 (H, W, 3)
"""

from __future__ import annotations

from saliqa.corrupt.registry import (
    CLEAN,
    CORRUPTIONS,
    Corruption,
    available_corruptions,
    check_corruption,
    corrupt,
    corruption_names,
)

__all__ = [
    "CLEAN",
    "CORRUPTIONS",
    "Corruption",
    "available_corruptions",
    "check_corruption",
    "corrupt",
    "corruption_names",
]
