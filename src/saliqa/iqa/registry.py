"""Quality models by name: the one place their names are declared. A plain mapping: adding a model is one
entry (and its parameter files, if any, in :data:`saliqa.iqa.weights.WEIGHTS`); an unknown name is an error."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from saliqa.device import resolve_device
from saliqa.errors import UnknownModelError
from saliqa.iqa.base import QualityModel

Files = Mapping[str, Path]
"""Parameter files by :data:`saliqa.iqa.weights.WEIGHTS` name; a missing one is searched for."""


def _piqe(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.piqe import PIQE

    return PIQE(device=device)


def _paq2piq(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.paq2piq import PaQ2PiQ

    return PaQ2PiQ(files.get("paq2piq"), device=device)


def _niqe(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.niqe import NIQE

    return NIQE(files.get("niqe"), device=device)


def _brisque(device: torch.device, files: Files) -> QualityModel:
    from saliqa.iqa.brisque import BRISQUE

    return BRISQUE(files.get("brisque_model"), files.get("brisque_ranges"), device=device)


_FACTORIES: dict[str, Callable[[torch.device, Files], QualityModel]] = {
    "piqe": _piqe,
    "paq2piq": _paq2piq,
    "niqe": _niqe,
    "brisque": _brisque,
}


def quality_model_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def _factory(name: str) -> Callable[[torch.device, Files], QualityModel]:
    try:
        return _FACTORIES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown quality model {name!r}; available: {', '.join(_FACTORIES)}"
        ) from None


def load_quality_model(
    name: str, device: str | torch.device = "auto", files: Files | None = None
) -> QualityModel:
    """A ready quality model: ``load_quality_model("piqe")``. Never falls back to another model.

    PaQ-2-PiQ, NIQE and BRISQUE read the parameter files given in ``files`` or, for those not given, found by
    :func:`saliqa.iqa.weights.find_weights` (``$SALIQA_WEIGHTS_DIR``, then the torch hub cache); a missing file
    is a ``WeightsNotFoundError`` that says where to put it and how to download it.
    """
    return _factory(name)(resolve_device(device), files or {})


def find_model_files(name: str) -> dict[str, Path]:
    """The parameter files quality model ``name`` needs, found now (fails when one is missing)."""
    from saliqa.iqa.weights import find_weights, model_files

    _factory(name)
    return {weights: find_weights(weights) for weights in model_files(name)}


def check_quality_model(name: str) -> None:
    """Fail now, before any work, when ``name`` is unknown or one of its parameter files is missing."""
    find_model_files(name)
