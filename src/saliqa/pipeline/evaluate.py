"""Stage evaluate: every evaluation image x condition, distorted at full size, centre-cropped, then judged twice.

A condition is the clean image (corruption ``none``, severity 0) or one corruption at one severity. Each image
is decoded once in a loader worker, brought up to the crop size on its short side when smaller (recorded in
``upscaled``), distorted at that full size for every condition, and centre-cropped, so the classifier and the
quality model see the very same crop. Workers prepare the next images while the models run. Work is cut into
shards of images: each finished shard is on disk, memory holds one shard's rows and the crops of the batches
in flight, and a killed run resumes at the first unfinished shard. The parts are streamed into
``eval.parquet``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from saliqa.classify.models import Classifier
from saliqa.classify.transforms import center_offsets, upscale_short_side
from saliqa.corrupt import CLEAN, corrupt_batch
from saliqa.errors import ImageRejected
from saliqa.fullref import MS_SSIM_MIN_SIDE, ms_ssim, psnr
from saliqa.images import DecodePolicy, decode_image, reject_status
from saliqa.io.progress import progress_bar
from saliqa.io.tables import write_parts
from saliqa.iqa.base import QualityModel
from saliqa.loading import data_loader, to_unit_float
from saliqa.pipeline.shards import Shards

EVAL_COLUMNS: tuple[str, ...] = (
    "image_id",
    "label",
    "corruption",
    "severity",
    "pred",
    "top1",
    "top5",
    "prob_true",
    "score",
    "quality",
    "psnr",
    "ms_ssim",
    "set",
    "upscaled",
    "status",
    "reason",
)
"""Columns of ``eval.parquet``: the contract's ten; PSNR (dB, +inf when unchanged) and MS-SSIM of the crop
against the same image's clean crop (NaN for crops under 161 pixels, too small for five scales); the
evaluation set (``val`` or an extra set's name); whether the image was upscaled to reach the crop size; and
``status``/``reason`` (ok, missing, rejected, skipped, failed) so that no image is silently left out."""

EVAL_FILE = "eval.parquet"
PARTS_DIR = "eval.parts"
CLEAN_CONDITION = (CLEAN, 0)

EVAL_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("label", pa.string()),
        ("corruption", pa.string()),
        ("severity", pa.int64()),
        ("pred", pa.string()),
        ("top1", pa.bool_()),
        ("top5", pa.bool_()),
        ("prob_true", pa.float64()),
        ("score", pa.float64()),
        ("quality", pa.float64()),
        ("psnr", pa.float64()),
        ("ms_ssim", pa.float64()),
        ("set", pa.string()),
        ("upscaled", pa.bool_()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)
"""One schema for every part, so the parts stream into one file whatever values a shard happens to hold."""


def conditions(corruptions: tuple[str, ...], severities: tuple[int, ...]) -> list[tuple[str, int]]:
    """The clean condition first, then each corruption at each severity."""
    return [CLEAN_CONDITION, *((c, s) for c in corruptions for s in severities)]


@dataclass
class Prepared:
    """One image's crops under every condition (``status`` ok), or why there are none.

    When the distortions run on the models' device, a worker hands over the decoded, upscaled ``image``
    instead and the main process makes the crops.
    """

    index: int
    crops: torch.Tensor | None  # (n_conditions, 3, crop, crop) uint8
    upscaled: bool = False
    status: str = "ok"
    reason: str | None = None
    image: torch.Tensor | None = None  # (3, H, W) uint8, only while the crops are still to be made


def condition_crops(
    image: torch.Tensor, conditions: list[tuple[str, int]], crop: int, seed: int, image_id: str
) -> torch.Tensor:
    """Centre crops (n_conditions, 3, crop, crop) uint8 of ``image`` (3, H, W) uint8, on its own device.

    The whole image is distorted, then cropped, as the study did; every random draw comes from this image's
    own stream for each condition, so the crops do not depend on where or in which batch they are made.
    """
    full = image.unsqueeze(0)
    top, left = center_offsets(image.shape[-2], image.shape[-1], crop)
    crops = torch.empty((len(conditions), 3, crop, crop), dtype=torch.uint8, device=image.device)
    for k, (name, severity) in enumerate(conditions):
        distorted = (
            full if name == CLEAN else corrupt_batch(full, name, severity, seed=seed, image_ids=[image_id])
        )
        crops[k] = distorted[0, :, top : top + crop, left : left + crop]
    return crops


class ConditionCrops(Dataset):
    """Decodes an image and returns its centre crop under every condition (runs in loader workers).

    With ``distort=False`` it stops after decoding and upscaling, for distortion on the models' device.
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        conditions: list[tuple[str, int]],
        crop: int,
        seed: int,
        policy: DecodePolicy,
        distort: bool = True,
    ) -> None:
        self.records, self.conditions, self.crop, self.seed, self.policy = (
            records,
            conditions,
            crop,
            seed,
            policy,
        )
        self.distort = distort

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Prepared:
        record = self.records[i]
        if not record.get("present", True):
            return Prepared(i, None, status="missing", reason="file not found")
        try:
            image = decode_image(record["path"], self.policy).array
        except ImageRejected as reject:
            return Prepared(i, None, status=reject_status(reject.reason), reason=reject.reason)
        image, upscaled = upscale_short_side(image, self.crop)
        full = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if not self.distort:
            return Prepared(i, None, upscaled, image=full)
        prepared = Prepared(i, None, upscaled)
        return _make_crops(prepared, full, self.conditions, self.crop, self.seed, record["image_id"])


def _make_crops(
    prepared: Prepared,
    image: torch.Tensor,
    conditions: list[tuple[str, int]],
    crop: int,
    seed: int,
    image_id: str,
) -> Prepared:
    """``prepared`` with its crops, or marked failed: one image that cannot be distorted must not end a run."""
    try:
        prepared.crops = condition_crops(image, conditions, crop, seed, image_id)
    except Exception as error:  # noqa: BLE001
        prepared.status, prepared.reason = "failed", f"distortion failed: {type(error).__name__}: {error}"
    prepared.image = None
    return prepared


def _base_row(record: dict[str, Any], condition: tuple[str, int]) -> dict[str, Any]:
    return {
        "image_id": record["image_id"],
        "label": record["label"],
        "corruption": condition[0],
        "severity": condition[1],
        "pred": None,
        "top1": None,
        "top5": None,
        "prob_true": float("nan"),
        "score": float("nan"),
        "quality": float("nan"),
        "set": record["set"],
        "upscaled": None,
        "status": "ok",
        "reason": None,
    }


def eval_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a table with the contract's columns and dtypes (nullable where a skipped image has no value)."""
    return pa.Table.from_pylist(rows, schema=EVAL_SCHEMA).to_pandas(types_mapper=_NULLABLE.get)


_NULLABLE = {pa.bool_(): pd.BooleanDtype(), pa.int64(): pd.Int64Dtype()}


def read_eval(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """``eval.parquet`` with the same dtypes as :func:`eval_frame` (nullable booleans for skipped rows)."""
    return pq.read_table(path, columns=columns).to_pandas(types_mapper=_NULLABLE.get)


class Judges:
    """The classifier and the quality model, run on the same crops."""

    def __init__(
        self, classifier: Classifier, classes: list[str], quality: QualityModel, batch_size: int
    ) -> None:
        self.classifier, self.classes, self.quality, self.batch_size = (
            classifier.eval(),
            classes,
            quality,
            batch_size,
        )
        self.index = {c: i for i, c in enumerate(classes)}
        self.device = next(classifier.parameters()).device

    @torch.inference_mode()
    def __call__(
        self, crops: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor
    ) -> dict[str, np.ndarray]:
        """Top-k class indices, true-class probability, quality score and value, PSNR and MS-SSIM.

        ``crops`` are uint8 (N, 3, S, S); ``labels`` holds each crop's true class index and ``clean`` the
        index (into ``crops``) of the same image's clean crop, the reference of PSNR and MS-SSIM.
        """
        k = min(5, len(self.classes))
        crops = crops.to(self.device, non_blocking=True)  # once, for the models and the full-reference pass
        parts: dict[str, list[np.ndarray]] = {key: [] for key in ("topk", "prob_true", "score", "quality")}
        for start in range(0, len(crops), self.batch_size):
            x = to_unit_float(crops[start : start + self.batch_size], self.device)
            y = labels[start : start + self.batch_size].to(self.device)
            probs = torch.softmax(self.classifier(x).float(), dim=1)
            parts["topk"].append(probs.topk(k, dim=1).indices.cpu().numpy())
            parts["prob_true"].append(probs.gather(1, y[:, None])[:, 0].double().cpu().numpy())
            out = self.quality(x.to(self.quality.device))
            parts["score"].append(out.score.double().cpu().numpy())
            parts["quality"].append(out.quality.double().cpu().numpy())
        judged = {key: np.concatenate(value) for key, value in parts.items()}
        judged["psnr"], judged["ms_ssim"] = self._full_reference(crops, clean)
        return judged

    def _full_reference(self, crops: torch.Tensor, clean: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """PSNR and MS-SSIM of every crop against its image's clean crop, one image at a time, so the clean
        crop's statistics are computed once per image. MS-SSIM is NaN for crops under 161 pixels."""
        values = np.full((2, len(crops)), np.nan)
        five_scales = min(crops.shape[-2:]) >= MS_SSIM_MIN_SIDE
        for reference in torch.unique(clean).tolist():
            original = crops[reference : reference + 1]
            members = (clean == reference).nonzero()[:, 0]
            for start in range(0, len(members), self.batch_size):  # memory bounded like the models'
                rows = members[start : start + self.batch_size]
                distorted = crops[rows.to(crops.device)]
                values[0, rows.numpy()] = psnr(original, distorted).cpu().numpy()
                if five_scales:
                    values[1, rows.numpy()] = ms_ssim(original, distorted).cpu().numpy()
        return values[0], values[1]


def evaluate_records(
    records: list[dict[str, Any]],
    judges: Judges,
    conditions: list[tuple[str, int]],
    *,
    crop: int,
    seed: int,
    policy: DecodePolicy,
    workers: int,
    distort_on_device: bool = False,
    on_image: Any = None,
) -> Iterator[dict[str, Any]]:
    """Rows of ``eval.parquet`` for ``records`` (``image_id, path, label, set``), in record order.

    The distortions run in the loader workers on the CPU, or with ``distort_on_device`` in the main
    process on the models' device (the batched GPU path; on CUDA a few values may land one level apart).
    """
    positions = [i for i, r in enumerate(records) if r["label"] in judges.index]
    n = len(conditions)
    workers = min(workers, len(positions))
    loader = data_loader(
        ConditionCrops(
            [records[i] for i in positions], conditions, crop, seed, policy, not distort_on_device
        ),
        workers=workers,
        collate_fn=list,
        batch_size=max(1, judges.batch_size // n),
    )
    results: dict[int, dict[str, Any]] = {}  # by position in ``records``: ids may repeat across sets
    for batch in loader:
        for prepared in batch:
            if prepared.image is not None:
                image_id = records[positions[prepared.index]]["image_id"]
                _make_crops(prepared, prepared.image.to(judges.device), conditions, crop, seed, image_id)
        for prepared, judged in _judge(judges, batch, [records[positions[p.index]] for p in batch], n):
            results[positions[prepared.index]] = {"prepared": prepared, **judged}
            prepared.crops = None  # only the numbers are kept until the shard is written
        if on_image is not None:
            on_image(len(batch) * n)
    if on_image is not None:
        on_image((len(records) - len(positions)) * n)
    for i, record in enumerate(records):
        yield from _rows(record, results.pop(i, None), conditions, judges)


def _judge(
    judges: Judges, batch: list[Prepared], records: list[dict[str, Any]], n: int
) -> Iterator[tuple[Prepared, dict[str, Any]]]:
    """Each prepared image with its judged numbers; a batch the models fail on is retried image by image."""
    ready = [(p, r) for p, r in zip(batch, records, strict=True) if p.status == "ok"]
    yield from ((p, {}) for p in batch if p.status != "ok")
    if not ready:
        return
    crops = torch.cat([p.crops for p, _ in ready])
    labels = torch.tensor([judges.index[r["label"]] for _, r in ready]).repeat_interleave(n)
    clean = torch.arange(len(crops)) // n * n  # every image's crops start with its clean one
    try:
        out = judges(crops, labels, clean)
    except Exception as error:  # noqa: BLE001 - a model failure on one image must not end the run
        if len(ready) > 1:
            for p, r in ready:
                yield from _judge(judges, [p], [r], n)
            return
        prepared = ready[0][0]
        prepared.status, prepared.reason = "failed", f"model failed: {type(error).__name__}: {error}"
        yield prepared, {}
        return
    for j, (prepared, _) in enumerate(ready):
        yield prepared, {key: value[j * n : (j + 1) * n] for key, value in out.items()}


def _rows(
    record: dict[str, Any], result: dict[str, Any] | None, conditions: list[tuple[str, int]], judges: Judges
) -> Iterator[dict[str, Any]]:
    for k, condition in enumerate(conditions):
        row = _base_row(record, condition)
        if result is None:
            row.update(
                status="skipped", reason=f"label {record['label']!r} is not one of the classifier's classes"
            )
        elif result["prepared"].status != "ok":
            row.update(status=result["prepared"].status, reason=result["prepared"].reason)
        else:
            true = judges.index[record["label"]]
            topk = result["topk"][k]
            row.update(
                pred=judges.classes[int(topk[0])],
                top1=bool(topk[0] == true),
                top5=bool((topk == true).any()),
                prob_true=float(result["prob_true"][k]),
                score=float(result["score"][k]),
                quality=float(result["quality"][k]),
                psnr=float(result["psnr"][k]),
                ms_ssim=float(result["ms_ssim"][k]),
                upscaled=result["prepared"].upscaled,
            )
        yield row


def evaluate_to_dir(
    records: pd.DataFrame,
    judges: Judges,
    conditions: list[tuple[str, int]],
    out: Path,
    *,
    fp: str,
    meta: dict[str, Any],
    crop: int,
    seed: int,
    policy: DecodePolicy,
    shard_size: int,
    workers: int,
    distort_on_device: bool = False,
    progress: bool = True,
) -> int:
    """Evaluate into ``out/eval.parquet``, resuming finished shards; returns how many shards were reused."""
    shards = Shards(out / PARTS_DIR, f"{fp} shard_size={shard_size} device={judges.device.type}")
    ordered = records.sort_values(["set", "image_id"], kind="stable").to_dict("records")
    pieces = [ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)]
    reused = 0
    with progress_bar("evaluate", total=len(ordered) * len(conditions), enabled=progress) as bar:
        for index, shard in enumerate(pieces):
            keys = [[r["set"], r["image_id"]] for r in shard]
            if shards.done(index, keys, ["set", "image_id"], step=len(conditions)) is not None:
                reused += 1
                bar.advance(len(shard) * len(conditions))
                continue
            rows = evaluate_records(
                shard,
                judges,
                conditions,
                crop=crop,
                seed=seed,
                policy=policy,
                workers=workers,
                distort_on_device=distort_on_device,
                on_image=bar.advance,
            )
            shards.commit(index, eval_frame(list(rows)), EVAL_SCHEMA)
    write_parts(out / EVAL_FILE, shards.paths(len(pieces)), EVAL_SCHEMA, meta)
    return reused
