"""Settings as two named objects: what to make (:class:`CropPlan`) and how to run it (:class:`Runtime`).

A plan's every field can change a number, so it enters fingerprints whole; a runtime's fields change only
speed, memory and what is shown, never a result (``saliqa.config`` declares which config settings are such).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from saliqa.config import EngineConfig, EvaluateConfig, RunConfig
from saliqa.corrupt import CLEAN
from saliqa.device import resolve_device
from saliqa.images import DecodePolicy

Condition = tuple[str, int]
"""A corruption name and severity; ``("none", 0)`` is the clean image."""

CLEAN_CONDITION: Condition = (CLEAN, 0)


def conditions(corruptions: tuple[str, ...], severities: tuple[int, ...]) -> tuple[Condition, ...]:
    """The clean condition first, then each corruption at each severity."""
    return (CLEAN_CONDITION, *((c, s) for c in corruptions for s in severities))


def decode_policy(config: RunConfig) -> DecodePolicy:
    """The run's one decoding rule (``[images]``)."""
    c = config.images
    return DecodePolicy(max_pixels=c.max_pixels, oversize=c.oversize, min_side=c.min_side)


@dataclass(frozen=True)
class CropPlan:
    """What evaluate judges: every image under every condition, distorted whole, then centre-cropped.

    Images whose short side is under ``crop`` are first upscaled to it (bilinear, antialiased); for a published
    model evaluated as it is, every image's short side is first resized to its ``resize``. Every random
    draw of a corruption comes from a stream keyed by (``seed``, image id, corruption, severity), so a crop
    does not depend on the batch, worker or device that makes it. ``distort_on`` says where the corruptions
    run: in the loader workers on the CPU, or batched on the models' device.
    """

    conditions: tuple[Condition, ...]
    crop: int = 224
    seed: int = 0
    policy: DecodePolicy = field(default_factory=DecodePolicy)
    distort_on: Literal["workers", "device"] = "workers"
    resize: int | None = None
    """A published model's evaluation resize: the short side brought to it (down or up) before distortion."""
    interpolation: str = "bilinear"
    """How ``resize`` resamples (torchvision's mode names)."""

    @classmethod
    def from_config(cls, config: RunConfig) -> CropPlan:
        e: EvaluateConfig = config.evaluate
        crop, resize, interpolation = e.crop, None, "bilinear"
        m = config.model
        if m is not None and m.name is not None and m.transforms == "published":
            from saliqa.classify.pretrained import published_transforms

            published = published_transforms(m.name)
            crop, resize, interpolation = published.crop, published.resize, published.interpolation
        return cls(
            conditions=conditions(e.corruptions, e.severities),
            crop=crop,
            seed=config.seed,
            policy=decode_policy(config),
            distort_on=e.distort_on,
            resize=resize,
            interpolation=interpolation,
        )


@dataclass(frozen=True)
class Runtime:
    """How a per-image stage runs: where, in batches of how many, with how many helpers, cut how finely."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 16
    """Images (rate) or crops (evaluate) per forward pass."""
    workers: int = 2
    """Decoding threads (rate) or loader processes (evaluate); 0 = in the main thread."""
    shard_size: int = 256
    """Images per resumable unit of work."""
    progress: bool = True
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Where the shards run: this process (``local``) or Ray Data (``ray``)."""

    @classmethod
    def for_rate(cls, config: RunConfig, progress: bool = True) -> Runtime:
        r = config.rate
        return cls(resolve_device(r.device), r.batch_size, r.workers, r.shard_size, progress, config.engine)

    @classmethod
    def for_evaluate(cls, config: RunConfig, progress: bool = True) -> Runtime:
        e = config.evaluate
        return cls(resolve_device(e.device), e.batch_size, e.workers, e.shard_size, progress, config.engine)
