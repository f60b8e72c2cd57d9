"""The crops evaluate judges, made one way wherever they are made.

:func:`image_crops` is the public form: a file and a :class:`~saliqa.pipeline.plan.CropPlan` give the
(conditions, 3, crop, crop) uint8 crops that evaluate's classifier and quality model saw, so explain (or a
user) can look at exactly those pixels. Loader workers, the models' device and that function all call
:func:`condition_crops`, so the three agree bit for bit on the CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from saliqa.classify.transforms import center_offsets, resize_short_side, upscale_short_side
from saliqa.corrupt import CLEAN, corrupt_batch
from saliqa.errors import ImageRejected
from saliqa.images import decode_image, reject_status
from saliqa.pipeline.plan import CropPlan
from saliqa.pipeline.shards import Item, unusable


def prepare_image(path: str, plan: CropPlan) -> tuple[torch.Tensor, bool]:
    """The decoded image (3, H, W) uint8, resized on its short side to ``plan.resize`` when set, upscaled to
    the crop size when still smaller, and whether it was enlarged; raises :class:`~saliqa.errors.ImageRejected` for a file that cannot be used."""
    image = decode_image(path, plan.policy).array
    enlarged = False
    if plan.resize is not None:
        image, enlarged = resize_short_side(image, plan.resize, plan.interpolation)
    image, upscaled = upscale_short_side(image, plan.crop)
    upscaled = upscaled or enlarged
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


class PackedRecords:
    """Records as one pickled buffer and an offsets array, each record unpickled when it is asked for.

    A list of dicts in a dataset is copied page by page into every forked loader worker as soon as the worker
    reads it (reading an object writes its reference count), so each worker ends up holding its own copy of
    every record: per-worker memory that grows with the dataset. Two numpy buffers are never written after
    the fork, so the workers share them with the main process.
    """

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        blobs = [pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL) for record in records]
        self.offsets = np.cumsum([0, *(len(b) for b in blobs)], dtype=np.int64)
        self.data = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, position: int) -> dict[str, Any]:
        if not 0 <= position < len(self):
            raise IndexError(f"record {position} of {len(self)}")
        start, stop = self.offsets[position], self.offsets[position + 1]
        return pickle.loads(self.data[start:stop].tobytes())


class HeapTrim:
    """Hands freed heap memory back to the system once the process has grown ``slack`` bytes since last time.

    A loader worker distorts full images in float64: temporaries of several MB each. glibc raises its mmap
    threshold after the first one is freed, so the next ones come from the heap, which fragments and keeps
    the freed pages: a worker grew by about 1 MB per image it prepared until it levelled off near 1.1 GB
    (520 MB at the start; 600 images of 375x500, three conditions). Trimmed past 256 MB it stays under
    about 850 MB whatever the number of images. The slack is a speed trade: trimmed pages are faulted in
    again, and trimming after every image cost 40 % of a worker's time, past 256 MB about 10 %.
    A no-op where the C library has no ``malloc_trim`` (not glibc).
    """

    def __init__(self, slack: int = 256 * 2**20) -> None:
        self.slack, self.floor, self.pid = slack, 0, 0

    def __call__(self) -> None:
        trim = _malloc_trim()
        if trim is None:
            return
        if self.pid != os.getpid():  # a fresh worker (or a copy unpickled elsewhere): start from its size
            self.pid, self.floor = os.getpid(), _resident_bytes()
        if _resident_bytes() > self.floor + self.slack:
            trim(0)
            self.floor = _resident_bytes()


@cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (looked up once per process; nothing unpicklable is kept on objects)."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def _resident_bytes() -> int:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def prepare_record(position: int, record: dict[str, Any], plan: CropPlan) -> Prepared:
    """One record decoded, upscaled and distorted into its crops (only decoded and upscaled for ``distort_on =
    "device"``), or why it cannot be: what a loader worker or a CPU task of any engine makes of it."""
    prepared = Prepared(position, record)
    why = unusable(record)
    if why is not None:
        prepared.status, prepared.reason = why
        return prepared
    try:
        prepared.image, prepared.upscaled = prepare_image(record["path"], plan)
    except ImageRejected as reject:
        prepared.status, prepared.reason = reject_status(reject.reason), reject.reason
        return prepared
    return prepared if plan.distort_on == "device" else prepared.make_crops(plan)


class CropsDataset(Dataset):
    """Decodes records and makes their crops in loader workers (or, with ``plan.distort_on = "device"``,
    stops after decoding and upscaling: the crops are then made on the models' device).

    Records are kept packed (:class:`PackedRecords`) and each worker trims its heap (:class:`HeapTrim`), so a
    worker's memory does not grow with the number of records or of images it prepared."""

    def __init__(self, records: Sequence[dict[str, Any]], plan: CropPlan) -> None:
        self.records, self.plan = PackedRecords(records), plan
        self._trim = HeapTrim()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, position: int) -> Prepared:
        prepared = prepare_record(position, self.records[position], self.plan)
        self._trim()
        return prepared
