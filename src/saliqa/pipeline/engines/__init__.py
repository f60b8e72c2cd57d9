"""Engines past one process. The local loop lives in :mod:`saliqa.pipeline.shards`; :mod:`.ray_data` runs the
same work on Ray Data, on this machine or a cluster."""

from __future__ import annotations

from saliqa.config import EngineConfig
from saliqa.errors import ConfigError

RAY_INSTALL = "pip install 'saliqa[ray]'"


def check_engine(engine: EngineConfig) -> None:
    """Fail before any work when the configured engine cannot run here."""
    if engine.kind != "ray":
        return
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"engine.kind = 'ray' needs Ray Data, which is not installed ({error}); install it with: {RAY_INSTALL}"
        ) from None
