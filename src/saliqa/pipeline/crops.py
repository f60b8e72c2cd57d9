"""The crops evaluate judges, made one way wherever they are made.

:func:`image_crops` is the public form: a file and a :class:`~saliqa.pipeline.plan.CropPlan` give the
(conditions, 3, crop, crop) uint8 crops that evaluate's classifier and quality model saw, so explain (or a
user) can look at exactly those pixels. Loader workers, the models' device and that function all call
:func:`condition_crops`, so the three agree bit for bit on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from saliqa.classify.transforms import center_offsets, upscale_short_side
from saliqa.corrupt import CLEAN, corrupt_batch
from saliqa.errors import ImageRejected
from saliqa.images import decode_image, reject_status
from saliqa.pipeline.plan import CropPlan
from saliqa.pipeline.shards import Item


def prepare_image(path: str, plan: CropPlan) -> tuple[torch.Tensor, bool]:
    """The decoded image (3, H, W) uint8, upscaled on its short side to the crop size when smaller, and
    whether it was; raises :class:`~saliqa.errors.ImageRejected` for a file that cannot be used."""
    image, upscaled = upscale_short_side(decode_image(path, plan.policy).array, plan.crop)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), upscaled


def condition_crops(image: torch.Tensor, plan: CropPlan, image_id: str) -> torch.Tensor:
    """Centre crops (n_conditions, 3, crop, crop) uint8 of ``image`` (3, H, W) uint8, on its own device.

    The whole image is distorted, then cropped, as the study did; every random draw comes from this image's
    own stream for each condition, so the crops do not depend on where or in which batch they are made.
    """
    crop = plan.crop
    full = image.unsqueeze(0)
    top, left = center_offsets(image.shape[-2], image.shape[-1], crop)
    crops = torch.empty((len(plan.conditions), 3, crop, crop), dtype=torch.uint8, device=image.device)
    for k, (name, severity) in enumerate(plan.conditions):
        distorted = (
            full
            if name == CLEAN
            else corrupt_batch(full, name, severity, seed=plan.seed, image_ids=[image_id])
        )
        crops[k] = distorted[0, :, top : top + crop, left : left + crop]
    return crops


@dataclass
class ImageCrops:
    """One image's crops under every condition of a plan, in the plan's order."""

    crops: torch.Tensor
    """(n_conditions, 3, crop, crop) uint8."""
    upscaled: bool
    """Whether the image was brought up to the crop size before it was distorted."""


def image_crops(path: str, plan: CropPlan, image_id: str) -> ImageCrops:
    """The crops evaluate judged for the file ``path`` (whose ``image_id`` keys its random streams).

    >>> plan = CropPlan(conditions(("fog",), (3,)), crop=224, seed=0)
    >>> image_crops("photos/a.jpg", plan, "a.jpg").crops.shape   # clean, then fog at severity 3
    torch.Size([2, 3, 224, 224])

    Raises :class:`~saliqa.errors.ImageRejected` for a file that cannot be used.
    """
    image, upscaled = prepare_image(path, plan)
    return ImageCrops(condition_crops(image, plan, image_id), upscaled)


@dataclass
class Prepared(Item):
    """One record on its way through evaluate: its crops, or the decoded image whose crops are still to be
    made on the models' device, or why there are none (``status`` other than ok); then its judged numbers."""

    crops: torch.Tensor | None = None
    upscaled: bool | None = None
    image: torch.Tensor | None = None
    result: dict[str, np.ndarray] | None = None

    def make_crops(self, plan: CropPlan, device: torch.device | None = None) -> Prepared:
        """Distort and crop ``image`` (on ``device`` when given); a failure marks this image failed, since one
        image that cannot be distorted must not end a run."""
        if self.image is None:
            return self
        image = self.image if device is None else self.image.to(device)
        try:
            self.crops = condition_crops(image, plan, self.record["image_id"])
        except Exception as error:  # noqa: BLE001
            self.error = f"{type(error).__name__}: {error}"
            self.status, self.reason = "failed", f"distortion failed: {self.error}"
        self.image = None
        return self


class CropsDataset(Dataset):
    """Decodes records and makes their crops in loader workers (or, with ``plan.distort_on = "device"``,
    stops after decoding and upscaling: the crops are then made on the models' device)."""

    def __init__(self, records: list[dict[str, Any]], plan: CropPlan) -> None:
        self.records, self.plan = records, plan

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, position: int) -> Prepared:
        record = self.records[position]
        prepared = Prepared(position, record)
        if record.get("reason"):  # unusable since it was listed (e.g. a name that is not valid UTF-8)
            prepared.status, prepared.reason = "rejected", record["reason"]
            return prepared
        if not record.get("present", True):
            prepared.status, prepared.reason = "missing", "file not found"
            return prepared
        try:
            prepared.image, prepared.upscaled = prepare_image(record["path"], self.plan)
        except ImageRejected as reject:
            prepared.status, prepared.reason = reject_status(reject.reason), reject.reason
            return prepared
        return prepared if self.plan.distort_on == "device" else prepared.make_crops(self.plan)
