"""Feeding models: loader processes ahead of the model, and uint8 crops to float images on a device."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from saliqa.threads import init_loader_worker


def data_loader(
    dataset: Dataset,
    *,
    workers: int,
    collate_fn: Callable[[list[Any]], Any],
    worker_init_fn: Callable[[int], None] | None = None,
    **batching: Any,
) -> DataLoader:
    """A DataLoader with ``workers`` processes (none when 0), each keeping two batches ready.

    Each worker runs single-threaded (torch, OpenMP and BLAS; see :func:`saliqa.threads.init_loader_worker`)
    before ``worker_init_fn``: ``workers`` processes with a thread per core each would oversubscribe the
    cores, and OpenMP teams stall at their barriers when that happens.
    """
    return DataLoader(
        dataset,
        num_workers=workers,
        collate_fn=collate_fn,
        prefetch_factor=2 if workers else None,
        worker_init_fn=partial(_init_worker, worker_init_fn) if workers else None,
        **batching,
    )


def _init_worker(then: Callable[[int], None] | None, worker_id: int) -> None:
    """One thread per worker, then the caller's own initialiser (module level, so workers can unpickle it)."""
    init_loader_worker(worker_id)
    if then is not None:
        then(worker_id)


def to_unit_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 in [0, 1] on ``device`` (converted there, so less is copied)."""
    return images.to(device, non_blocking=True).float().div_(255.0)
