"""The 19 ImageNet-C corruptions behind one registry, faithful to imagecorruptions, seeded, batched.

from saliqa.corrupt import corrupt, corrupt_batch, corruption_names
out = corrupt(image_uint8, "fog", 3, seed=0, image_id="img_001.jpg")         # uint8 (H, W, 3)
outs = corrupt_batch(batch, "fog", 3, seed=0, image_ids=ids)                   # (B, 3, H, W), any device
"""

from __future__ import annotations

from saliqa.corrupt.registry import (
    CLEAN,
    CORRUPTIONS,
    SELECTIONS,
    SEVERITIES,
    Corruption,
    check_corruption,
    corrupt,
    corrupt_batch,
    corruption_names,
    corruption_rng,
)

__all__ = [
    "CLEAN",
    "CORRUPTIONS",
    "SELECTIONS",
    "SEVERITIES",
    "Corruption",
    "check_corruption",
    "corrupt",
    "corrupt_batch",
    "corruption_names",
    "corruption_rng",
]
