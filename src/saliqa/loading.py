"""Feeding models: loader processes ahead of the model, and uint8 crops to float images on a device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


def data_loader(
    dataset: Dataset, *, workers: int, collate_fn: Callable[[list[Any]], Any], **batching: Any
) -> DataLoader:
    """A DataLoader with ``workers`` processes (none when 0), each keeping two batches ready."""
    return DataLoader(
        dataset,
        num_workers=workers,
        collate_fn=collate_fn,
        prefetch_factor=2 if workers else None,
        **batching,
    )


def to_unit_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 in [0, 1] on ``device`` (converted there, so less is copied)."""
    return images.to(device, non_blocking=True).float().div_(255.0)
