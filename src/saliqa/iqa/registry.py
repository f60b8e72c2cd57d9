"""Quality models by name. A plain mapping: adding a model is one entry, and an unknown name is an error."""

from __future__ import annotations

from collections.abc import Callable

import torch

from saliqa.device import resolve_device
from saliqa.errors import UnknownModelError
from saliqa.iqa.base import QualityModel


def _piqe(device: torch.device) -> QualityModel:
    from saliqa.iqa.piqe import PIQE

    return PIQE(device=device)


_FACTORIES: dict[str, Callable[[torch.device], QualityModel]] = {"piqe": _piqe}


def quality_model_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def load_quality_model(name: str, device: str | torch.device = "auto") -> QualityModel:
    """A ready quality model: ``load_quality_model("piqe")``. Never falls back to another model."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown quality model {name!r}; available: {', '.join(_FACTORIES)}"
        ) from None
    return factory(resolve_device(device))
