"""Quality models (PaQ-2-PiQ, NIQE, BRISQUE, PIQE), their registry, and PaQ-2-PiQ's training."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``saliqa.iqa.train_paq2piq``, imported on first use: training pulls in the classifier's loop and torch's
    optimisers, which rating never needs (and :mod:`saliqa.config` imports this package early)."""
    if name == "train_paq2piq":
        from saliqa.iqa.training import train_paq2piq

        return train_paq2piq
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
