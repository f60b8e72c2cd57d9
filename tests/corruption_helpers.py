"""Shared pieces of the corruption tests: the real photos, crops, and the reference under control."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
import pytest

SEVERITIES = (1, 2, 3, 4, 5)
CROP_CASES = (
    *[(name, 33, 47) for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "camera_hw1")],
    *[(name, 33, 47) for name in ("china", "flower")],
    *[(name, 127, 255) for name in ("astronaut", "camera", "flower")],
    *[(name, 224, 224) for name in ("china", "camera_hw1")],
)
"""(photo, height, width): every photo at an odd small size, grey in both layouts, then wide and 224x224."""


@cache
def photos() -> dict[str, np.ndarray]:
    """Real photos bundled with scikit-image and scikit-learn, colour and grey (2-D and (H, W, 1))."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    camera = data.camera()
    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "camera": camera,
        "camera_hw1": camera[:, :, None],
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
    }


def crop(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """An off-centre crop, left as a (non-contiguous) view as a caller would pass it."""
    top = (photo.shape[0] - height) // 3
    left = (photo.shape[1] - width) // 2
    return photo[top : top + height, left : left + width]


def reference_module() -> Any:
    """imagecorruptions-imaug 1.1.5, or a skip when the test extra is not installed."""
    return pytest.importorskip("imagecorruptions", reason="parity tests need imagecorruptions-imaug 1.1.5")


def reference(image: np.ndarray, name: str, severity: int, **kwargs: Any) -> np.ndarray:
    return reference_module().corrupt(image, corruption_name=name, severity=severity, **kwargs)


@contextmanager
def seeded_reference(seed: int) -> Iterator[None]:
    """Run the reference with numpy's global RNG seeded, restoring the caller's state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def mismatch(ours: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """(share of differing uint8 values, largest absolute difference)."""
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    return float(np.mean(diff > 0)), int(diff.max())
