"""What made an artifact: the stage, its fingerprint, the settings, the package versions and the time."""

from __future__ import annotations

import contextlib
import platform
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any

_PACKAGES = ("saliqa", "torch", "torchvision", "numpy", "pillow", "pandas", "scikit-image")
"""The packages whose behaviour shapes the numbers."""


@cache
def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages whose behaviour shapes the numbers."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def provenance(stage: str, fp: str, config: Any, **extra: Any) -> dict[str, Any]:
    """What made an artifact: stage, fingerprint, config slice, versions, time and anything else."""
    return {
        "stage": stage,
        "fingerprint": fp,
        "config": config,
        "versions": dict(versions()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }
