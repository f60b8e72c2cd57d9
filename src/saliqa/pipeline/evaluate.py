"""Stage evaluate: every evaluation image x condition, distorted at full size, centre-cropped, then judged twice.

A condition is the clean image (corruption ``none``, severity 0) or one corruption at one severity. Each image
is decoded once in a loader worker, brought up to the crop size on its short side when smaller (recorded in
``upscaled``), distorted at that full size for every condition, and centre-cropped, so the classifier and the
quality model see the very same crop. Workers prepare the next images while the models run. Work is cut into
shards of images: each finished shard is on disk, memory holds one shard's rows and a few images, and a killed
run resumes at the first unfinished shard.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from saliqa.classify.models import Classifier
from saliqa.classify.transforms import center_crop, upscale_short_side
from saliqa.corrupt import corrupt
from saliqa.errors import ImageRejected
from saliqa.images import DecodePolicy, decode_image
from saliqa.iqa.base import QualityModel
from saliqa.pipeline.artifacts import write_table, write_text
from saliqa.progress import progress_bar
from saliqa.seeding import rng_for

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
    "set",
    "upscaled",
    "status",
    "reason",
)
"""Columns of ``eval.parquet``: the contract's ten, then the evaluation set (``val`` or an extra set's name),
whether the image was upscaled to reach the crop size, and ``status``/``reason`` (ok, missing, rejected,
skipped, failed) so that no image is silently left out."""

EVAL_FILE = "eval.parquet"
_PARTS_DIR = "eval.parts"
CLEAN = ("none", 0)


def conditions(corruptions: tuple[str, ...], severities: tuple[int, ...]) -> list[tuple[str, int]]:
    """The clean condition first, then each corruption at each severity."""
    return [CLEAN, *((c, s) for c in corruptions for s in severities)]


@dataclass
class Prepared:
    """One image's crops under every condition, or why there are none."""

    index: int
    crops: torch.Tensor | None  # (n_conditions, 3, crop, crop) uint8
    upscaled: bool = False
    status: str = "ok"
    reason: str | None = None


class ConditionCrops(Dataset):
    """Decodes an image and returns its centre crop under every condition (runs in loader workers)."""

    def __init__(
        self,
        records: list[dict[str, Any]],
        conditions: list[tuple[str, int]],
        crop: int,
        seed: int,
        policy: DecodePolicy,
    ) -> None:
        self.records, self.conditions, self.crop, self.seed, self.policy = (
            records,
            conditions,
            crop,
            seed,
            policy,
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Prepared:
        record = self.records[i]
        if not record.get("present", True):
            return Prepared(i, None, status="missing", reason="file not found")
        try:
            image = decode_image(record["path"], self.policy).array
        except ImageRejected as reject:
            status = "missing" if reject.reason == "file not found" else "rejected"
            return Prepared(i, None, status=status, reason=reject.reason)
        image, upscaled = upscale_short_side(image, self.crop)
        crops = np.empty((len(self.conditions), self.crop, self.crop, 3), dtype=np.uint8)
        for k, (name, severity) in enumerate(self.conditions):
            if name == CLEAN[0]:
                distorted = image
            else:  # every random draw comes from this image's own stream for this condition
                distorted = corrupt(
                    image, name, severity, rng=rng_for(self.seed, record["image_id"], name, severity)
                )
            crops[k] = center_crop(distorted, self.crop)
        return Prepared(i, torch.from_numpy(crops).permute(0, 3, 1, 2), upscaled)


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
    frame = pd.DataFrame(rows, columns=list(EVAL_COLUMNS))
    frame["severity"] = frame["severity"].astype("int64")
    for column in ("top1", "top5", "upscaled"):
        frame[column] = frame[column].astype("boolean")
    for column in ("prob_true", "score", "quality"):
        frame[column] = frame[column].astype("float64")
    for column in ("image_id", "label", "corruption", "pred", "set", "status", "reason"):
        frame[column] = frame[column].astype("object")
    return frame


class Judges:
    """The classifier and the quality model, run on the same crops."""

    def __init__(
        self, classifier: Classifier, classes: list[str], quality: QualityModel, batch_size: int
    ) -> None:
        self.classifier, self.classes, self.quality, self.batch_size = (
            classifier,
            classes,
            quality,
            batch_size,
        )
        self.index = {c: i for i, c in enumerate(classes)}
        self.device = next(classifier.parameters()).device

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor) -> dict[str, np.ndarray]:
        """Top-5 class indices, softmax probabilities, and quality score/value for uint8 crops (N, 3, S, S)."""
        k = min(5, len(self.classes))
        parts: dict[str, list[np.ndarray]] = {"topk": [], "probs": [], "score": [], "quality": []}
        for start in range(0, len(crops), self.batch_size):
            x = crops[start : start + self.batch_size].to(self.device, non_blocking=True).float().div_(255.0)
            probs = torch.softmax(self.classifier(x).float(), dim=1)
            parts["topk"].append(probs.topk(k, dim=1).indices.cpu().numpy())
            parts["probs"].append(probs.cpu().numpy())
            out = self.quality(x.to(self.quality.device))
            parts["score"].append(out.score.double().cpu().numpy())
            parts["quality"].append(out.quality.double().cpu().numpy())
        return {key: np.concatenate(value) for key, value in parts.items()}


def evaluate_records(
    records: list[dict[str, Any]],
    judges: Judges,
    conditions: list[tuple[str, int]],
    *,
    crop: int,
    seed: int,
    policy: DecodePolicy,
    workers: int,
    on_image: Any = None,
) -> Iterator[dict[str, Any]]:
    """Rows of ``eval.parquet`` for ``records`` (``image_id, path, label, set``), in record order."""
    positions = [i for i, r in enumerate(records) if r["label"] in judges.index]
    per_batch = max(1, judges.batch_size // len(conditions))
    dataset = ConditionCrops([records[i] for i in positions], conditions, crop, seed, policy)
    workers = min(workers, len(positions))
    loader = DataLoader(
        dataset,
        batch_size=per_batch,
        num_workers=workers,
        collate_fn=list,
        pin_memory=judges.device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )
    n = len(conditions)
    results: dict[int, dict[str, Any]] = {}  # by position in ``records``: ids may repeat across sets
    for batch in loader:
        ready = [p for p in batch if p.crops is not None]
        out = judges(torch.cat([p.crops for p in ready])) if ready else {}
        for j, prepared in enumerate(ready):
            results[positions[prepared.index]] = {
                "prepared": prepared,
                **{key: value[j * n : (j + 1) * n] for key, value in out.items()},
            }
        for prepared in batch:
            if prepared.crops is None:
                results[positions[prepared.index]] = {"prepared": prepared}
        if on_image is not None:
            on_image(len(batch) * n)
    if on_image is not None:
        on_image((len(records) - len(positions)) * n)
    for i, record in enumerate(records):
        yield from _rows(record, results.pop(i, None), conditions, judges)


def _rows(
    record: dict[str, Any], result: dict[str, Any] | None, conditions: list[tuple[str, int]], judges: Judges
) -> Iterator[dict[str, Any]]:
    for k, condition in enumerate(conditions):
        row = _base_row(record, condition)
        if result is None:
            row.update(
                status="skipped", reason=f"label {record['label']!r} is not one of the classifier's classes"
            )
        elif result["prepared"].crops is None:
            row.update(status=result["prepared"].status, reason=result["prepared"].reason)
        else:
            true = judges.index[record["label"]]
            topk = result["topk"][k]
            row.update(
                pred=judges.classes[int(topk[0])],
                top1=bool(topk[0] == true),
                top5=bool((topk == true).any()),
                prob_true=float(result["probs"][k][true]),
                score=float(result["score"][k]),
                quality=float(result["quality"][k]),
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
    progress: bool = True,
) -> tuple[pd.DataFrame, int]:
    """Evaluate into ``out/eval.parquet``, resuming finished shards; returns the table and shards reused."""
    parts = out / _PARTS_DIR
    stamp, identity = parts / "WORK", f"{fp} shard_size={shard_size} device={judges.device.type}"
    if not stamp.exists() or stamp.read_text().strip() != identity:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        write_text(stamp, identity)
    ordered = records.sort_values(["set", "image_id"], kind="stable").to_dict("records")
    shards = [ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)]
    frames, reused = [], 0
    with progress_bar("evaluate", total=len(ordered) * len(conditions), enabled=progress) as bar:
        for index, shard in enumerate(shards):
            part = parts / f"part-{index:05d}.parquet"
            if part.exists():
                done = pd.read_parquet(part)
                done_keys = done[["set", "image_id"]].iloc[:: len(conditions)].values.tolist()
                if done_keys == [[r["set"], r["image_id"]] for r in shard]:
                    frames.append(done)
                    reused += 1
                    bar.advance(len(shard) * len(conditions))
                    continue
            rows = list(
                evaluate_records(
                    shard,
                    judges,
                    conditions,
                    crop=crop,
                    seed=seed,
                    policy=policy,
                    workers=workers,
                    on_image=bar.advance,
                )
            )
            frame = eval_frame(rows)
            write_table(part, frame)  # the shard's commit mark
            frames.append(frame)
    table = eval_frame(pd.concat(frames, ignore_index=True).to_dict("records") if frames else [])
    write_table(out / EVAL_FILE, table, meta)
    return table, reused


def discard_parts(out: Path) -> None:
    shutil.rmtree(out / _PARTS_DIR, ignore_errors=True)
