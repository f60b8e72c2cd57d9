"""Quality models by name: the one place their names are declared. A plain mapping: adding a model is one
entry (and its parameter files, if any, in :data:`saliqa.iqa.weights.WEIGHTS`); an unknown name is an error."""

from __future__ import annotations

from collections.abc import Callable

import torch

from saliqa.device import resolve_device
from saliqa.errors import UnknownModelError
from saliqa.iqa.base import QualityModel


def _piqe(device: torch.device) -> QualityModel:
    from saliqa.iqa.piqe import PIQE

    return PIQE(device=device)


def _paq2piq(device: torch.device) -> QualityModel:
    from saliqa.iqa.paq2piq import PaQ2PiQ

    return PaQ2PiQ(device=device)


def _niqe(device: torch.device) -> QualityModel:
    from saliqa.iqa.niqe import NIQE

    return NIQE(device=device)


def _brisque(device: torch.device) -> QualityModel:
    from saliqa.iqa.brisque import BRISQUE

    return BRISQUE(device=device)


_FACTORIES: dict[str, Callable[[torch.device], QualityModel]] = {
    "piqe": _piqe,
    "paq2piq": _paq2piq,
    "niqe": _niqe,
    "brisque": _brisque,
}


def quality_model_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def _factory(name: str) -> Callable[[torch.device], QualityModel]:
    try:
        return _FACTORIES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown quality model {name!r}; available: {', '.join(_FACTORIES)}"
        ) from None


def load_quality_model(name: str, device: str | torch.device = "auto") -> QualityModel:
    """A ready quality model: ``load_quality_model("piqe")``. Never falls back to another model.

    PaQ-2-PiQ, NIQE and BRISQUE read parameter files found by :func:`saliqa.iqa.weights.find_weights`
    (``$SALIQA_WEIGHTS_DIR``, then the torch hub cache); a missing file is a ``WeightsNotFoundError`` that
    says where to put it and how to download it.
    """
    return _factory(name)(resolve_device(device))


def check_quality_model(name: str) -> None:
    """Fail now, before any work, when ``name`` is unknown or one of its parameter files is missing."""
    from saliqa.iqa.weights import find_weights, model_files

    _factory(name)
    for weights in model_files(name):
        find_weights(weights)
