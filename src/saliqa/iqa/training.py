"""Training and fine-tuning PaQ-2-PiQ's RoIPool model in plain PyTorch.

**The official recipe** (read from baidut/PaQ-2-PiQ's ``fastiqa``, fastai 1.x: ``RoIPoolModel``, the ``Rois0123``
data bunch, ``IqaLearner``; the release ``RoIPoolModel-fit.10.bs.120.pth`` is the experiment
``CVPR2020/fit(10,bs=120)``, seed 0):

- the network of :class:`saliqa.classify.p2p.P2PNet`: torchvision's ResNet-18 body with ImageNet weights
  (fastai's ``create_body(resnet18, pretrained=True)``), ``RoIPool((2, 2), 1/32)``, fastai's head, one output per
  box; RGB in [0, 1] with no mean/std normalisation, pictures at their own resolution;
- per picture four boxes, ``[batch index, left, top, right, bottom]`` in pixels, image-major: the picture's own box
  and its three patches, each regressed to its MOS by one mean squared error over all boxes (fastai's
  ``MSELossFlat`` on the ``(B, 4)`` output);
- fastai 1.x's ``Learner.fit`` defaults: Adam with betas (0.9, 0.99) and decoupled weight decay 0.01 on every
  parameter, BatchNorm included (``true_wd``, ``bn_wd``: torch's ``AdamW``); the default ``slice(3e-3)`` over the
  model's two layer groups (body, head) gives the body 3e-4 and the head 3e-3; a constant rate (``fit``, not
  ``fit_one_cycle``); 10 epochs of batches of 120; no augmentation;
- FLIVE's own train/validation split (``is_valid``) and the best epoch by the validation SROCC of the picture
  score (fastai's ``SaveModelCallback`` on its first metric, SRCC).

**What saliqa changes, and why:**

- *Padding.* The official code trains on the pictures of at most 640 pixels a side, padded, centred, to
  640 x 640 (boxes shifted). saliqa pads each batch only to its largest picture, at the bottom and right, and
  pools each picture's boxes from its own feature cells (:func:`pool_boxes`): boxes keep the picture's
  coordinates, so RoIPool rounds and clips them exactly as when the judge rates the picture alone (only the
  features at its bottom and right edges see the padding), and pictures of any size train. Validation batches
  hold pictures of one size, unpadded, so validation scores are the judge's own.
- *Head initialisation.* :class:`P2PNet`'s (fastai's ``create_cnn_model`` init: Kaiming-normal weights, zero
  biases), with the last bias set to the training targets' mean, so the first steps learn ranking, not the
  ~70-point offset (fastai kept PyTorch's default init here, bias near 0).
- *Start.* ``imagenet`` (the recipe), ``random`` (seeded), ``official`` (the release's weights, fine-tuning), or a
  file: a PaQ-2-PiQ file (official, pyiqa's, or saliqa's ``best.pt``) continues with its head, a torchvision
  ResNet-18 file gives the body only.
- *Picture-only labels* (CLIVE, KonIQ: ``path,mos``): one box per picture, its whole area, and the picture loss
  alone. PaQ-2-PiQ has one head for every box, so the head that rates patches is the one trained on pictures: the
  local map then rests on what a 2 x 2 pooling of a picture-sized box taught it, with no patch supervision. Such
  sets on other scales are mapped linearly onto FLIVE's 0-100 (:mod:`saliqa.iqa.labels`).
- *Normalisation.* The release's 0-100 ``quality`` uses FLIVE's training MOS mean and one-sided deviations; a
  trained file stores those of its own training targets, so ``quality`` and the categories keep their meaning.
- *Options off the recipe*, all off by default: a one-cycle schedule (fastai's ``fit_one_cycle`` defaults, as
  torch's ``OneCycleLR``), horizontal flips (boxes mirrored), ``max_side`` (pictures downscaled, boxes scaled, to
  fit a CPU), other batch sizes, epochs, rates and the body's rate factor.
- *Split.* Labels without ``is_valid`` are split at random, seeded, ``val_fraction`` for validation.
- *Determinism.* Each epoch's order, each flip and each epoch's dropout come from streams derived from the seed
  (:mod:`saliqa.seeding`), so a run killed after epoch k and resumed from ``last.pt`` ends with the weights of
  one never interrupted (bit for bit on the CPU), whatever the number of loader workers.

**Output** in ``out_dir``: ``best.pt`` (weights-only loadable, format ``saliqa-paq2piq``: state dict, normalisation,
recipe, the label file's sha256; use it as ``iqa = "paq2piq:<out_dir>/best.pt"``), ``last.pt`` (plus optimiser,
schedule and log, for resuming), ``train_log.parquet`` and ``.csv`` (per epoch: losses, validation SROCC/PLCC),
``training_curves.png``/``.svg``, ``split.csv`` and, when rows were left out, ``labels_rejected.csv``.
"""

from __future__ import annotations

import io
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import stats
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from saliqa.classify.checkpoint import check_plain
from saliqa.classify.models import (
    IMAGENET_WEIGHTS,
    Classifier,
    init_weights,
    read_weights_file,
    state_dict_of,
)
from saliqa.classify.p2p import STRIDE, P2PNet
from saliqa.classify.train import EpochBatches, epoch_batches, move_optimizer_state
from saliqa.device import resolve_device
from saliqa.errors import CheckpointError, ConfigError, ImageRejected
from saliqa.images import DecodePolicy, decode_image
from saliqa.io.atomic import atomic_path, write_text
from saliqa.io.hashing import fingerprint, sha256_file
from saliqa.io.progress import progress_bar
from saliqa.io.provenance import provenance, versions
from saliqa.io.tables import write_table
from saliqa.iqa.labels import FLIVE_SCALE, LabelledPicture, QualityLabels, read_quality_labels
from saliqa.iqa.paq2piq import TRAINED_FORMAT, TRAINED_VERSION, Normalisation, checked_paq2piq_state
from saliqa.iqa.weights import find_weights
from saliqa.loading import data_loader, to_unit_float
from saliqa.seeding import derive_seed, rng_for

log = logging.getLogger(__name__)

BEST, LAST, LOG_FILE, LOG_CSV, CURVES = (
    "best.pt",
    "last.pt",
    "train_log.parquet",
    "train_log.csv",
    "training_curves.png",
)
SPLIT_FILE, REJECTED_FILE = "split.csv", "labels_rejected.csv"
LOG_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_picture_loss",
    "val_loss",
    "val_picture_loss",
    "val_srocc",
    "val_plcc",
    "val_patch_srocc",
    "skipped",
    "seconds",
)
"""Per epoch: the head's rate at the epoch's start, mean squared errors (all boxes; picture boxes only), the
validation SROCC and PLCC of the picture score against MOS, SROCC of the patch scores (FLIVE labels), pictures
that could not be decoded, seconds."""

Schedule = Literal["constant", "onecycle"]


@dataclass(frozen=True)
class Recipe:
    """The settings that shape the weights (loader workers and progress do not; the device only by float
    rounding)."""

    epochs: int = 10
    batch_size: int = 120
    lr: float = 3e-3
    """The head's rate (the peak rate for ``onecycle``)."""
    body_lr_factor: float = 0.1
    """The body's rate as a fraction of the head's (fastai's ``slice(3e-3)`` on two layer groups: 0.1)."""
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: Schedule = "constant"
    val_fraction: float = 0.1
    """For labels without ``is_valid``: the share of pictures held out (seeded) for validation."""
    max_side: int | None = None
    """Downscale pictures whose longer side exceeds this (boxes scaled with them); None: native size."""
    hflip: bool = False
    seed: int = 0

    def check(self) -> Recipe:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if not self.body_lr_factor >= 0:
            problems.append(f"body_lr_factor must be >= 0, got {self.body_lr_factor}")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas must lie in [0, 1), got {self.betas}")
        if self.schedule not in ("constant", "onecycle"):
            problems.append(f"schedule must be constant or onecycle, got {self.schedule!r}")
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.max_side is not None and self.max_side < 32:
            problems.append(f"max_side must be >= 32 (one feature cell), got {self.max_side}")
        if problems:
            raise ConfigError("PaQ-2-PiQ training: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["betas"] = list(self.betas)
        return values


@dataclass
class TrainedPaQ2PiQ:
    """What a training produced."""

    out_dir: Path
    best: Path
    last: Path
    log: pd.DataFrame
    best_epoch: int
    resumed_epochs: int
    """Epochs taken over from an interrupted run (0: started afresh)."""
    init: str
    labels: QualityLabels
    n_train: int
    n_val: int

    @property
    def quality_model(self) -> str:
        """The name that rates with these weights: ``paq2piq:<best.pt>``."""
        return f"paq2piq:{self.best}"

    @property
    def best_metrics(self) -> dict[str, float]:
        row = self.log[self.log["epoch"] == self.best_epoch].iloc[0]
        return {k: float(row[k]) for k in ("val_srocc", "val_plcc", "val_loss")}


# -- pictures, boxes and batches -----------------------------------------------------------------------------------
def view_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(width, height) a picture is trained at: its own, or downscaled so its longer side is ``max_side``."""
    width, height = size
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class _Pictures(Dataset):
    """Decoded pictures with their boxes and targets, asked for as ``(split, index, epoch)`` (one dataset, and so
    one set of loader workers, serves every epoch and validation pass)."""

    def __init__(
        self,
        splits: dict[str, list[LabelledPicture]],
        recipe: Recipe,
        policy: DecodePolicy,
    ) -> None:
        self.splits, self.recipe, self.policy = splits, recipe, policy

    def __len__(self) -> int:
        return sum(len(p) for p in self.splits.values())

    def __getitem__(self, key: tuple[str, int, int]) -> tuple[int, Tensor | None, Tensor, Tensor]:
        split, i, epoch = key
        picture = self.splits[split][i]
        targets = torch.tensor(picture.box_mos or (picture.mos,), dtype=torch.float32)
        try:
            pixels = decode_image(picture.path, self.policy).array
        except ImageRejected as reject:  # changed since the labels were read: skipped, counted in the log
            log.warning("skipping %s: %s", picture.image_id, reject.reason)
            return i, None, torch.empty(0, 4), targets
        height, width = pixels.shape[:2]
        boxes = np.array(picture.boxes or [(0.0, 0.0, *picture.size)], dtype=np.float64)
        boxes[:, 0::2] *= width / picture.size[0]  # the decoder may have downscaled an oversize file
        boxes[:, 1::2] *= height / picture.size[1]
        out_w, out_h = view_size((width, height), self.recipe.max_side)
        if (out_w, out_h) != (width, height):
            pixels = np.array(Image.fromarray(pixels).resize((out_w, out_h), Image.Resampling.BILINEAR))
            boxes[:, 0::2] *= out_w / width
            boxes[:, 1::2] *= out_h / height
        flip = split == "train" and self.recipe.hflip
        if flip and rng_for(self.recipe.seed, "flip", epoch, picture.image_id).random() < 0.5:
            pixels = pixels[:, ::-1]
            boxes[:, [0, 2]] = out_w - boxes[:, [2, 0]]
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        return i, image, torch.from_numpy(boxes).to(torch.float32), targets


@dataclass
class PictureBatch:
    """Pictures padded (bottom, right) to the batch's largest, and their boxes as RoIPool takes them."""

    images: Tensor
    """uint8 ``(B, 3, H, W)``."""
    rois: Tensor
    """``(K, 5)`` float32 rows ``[batch index, left, top, right, bottom]``, image-major."""
    targets: Tensor
    """``(K,)`` MOS of each box."""
    box: Tensor
    """``(K,)`` position of each box in its picture's list: 0 the picture box, 1.. its patches."""
    index: Tensor
    """``(B,)`` index of each picture in its split."""
    sizes: Tensor
    """``(B, 2)`` each picture's own (height, width) inside the padded batch."""
    skipped: int


def batch_pictures(items: list[tuple[int, Tensor | None, Tensor, Tensor]]) -> PictureBatch:
    """Collate ``(index, image or None, boxes (k, 4), targets (k,))`` items into one :class:`PictureBatch`;
    undecodable pictures (``None``) are left out and counted."""
    kept = [item for item in items if item[1] is not None]
    if not kept:
        empty = torch.empty(0)
        return PictureBatch(torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, 5), empty, empty.long(),
                            empty.long(), torch.empty(0, 2, dtype=torch.long), len(items))  # fmt: skip
    height = max(int(x.shape[1]) for _, x, _, _ in kept)  # type: ignore[union-attr]
    width = max(int(x.shape[2]) for _, x, _, _ in kept)  # type: ignore[union-attr]
    images = torch.zeros(len(kept), 3, height, width, dtype=torch.uint8)
    rois, targets, box = [], [], []
    for b, (_, image, boxes, target) in enumerate(kept):
        assert image is not None
        images[b, :, : image.shape[1], : image.shape[2]] = image
        rois.append(torch.cat([torch.full((len(boxes), 1), float(b)), boxes], dim=1))
        targets.append(target)
        box.append(torch.arange(len(boxes)))
    return PictureBatch(
        images,
        torch.cat(rois),
        torch.cat(targets),
        torch.cat(box),
        torch.tensor([i for i, _, _, _ in kept]),
        torch.tensor([tuple(x.shape[1:]) for _, x, _, _ in kept]),  # type: ignore[union-attr]
        len(items) - len(kept),
    )


def pool_boxes(features: Tensor, batch: PictureBatch, roi_pool: torch.nn.Module) -> Tensor:
    """RoIPool of every box from its own picture's feature cells: the padded batch's map cropped, per picture, to
    ``ceil(h / 32) x ceil(w / 32)``, so RoIPool clips its bins exactly as on the picture alone (its end edge is
    inclusive: a box to the picture's edge would otherwise pool a cell of padding). A batch of one size is pooled
    in one call."""
    if len(batch.sizes) == 0 or bool((batch.sizes == batch.sizes[0]).all()):
        return roi_pool(features, batch.rois.to(features.device))
    pooled = []
    rois = batch.rois.to(features.device)
    for b, (height, width) in enumerate(batch.sizes.tolist()):
        mine = rois[rois[:, 0] == b].clone()
        mine[:, 0] = 0
        cells = features[b : b + 1, :, : math.ceil(height / STRIDE), : math.ceil(width / STRIDE)]
        pooled.append(roi_pool(cells, mine))
    return torch.cat(pooled)


# -- labels, split, start ------------------------------------------------------------------------------------------
def split_pictures(
    labels: QualityLabels, val_fraction: float, seed: int
) -> tuple[list[LabelledPicture], list[LabelledPicture]]:
    """Train and validation pictures: the label file's ``is_valid``, else a seeded random share (chosen among the
    pictures sorted by name, so the row order of the file does not matter)."""
    pictures = sorted(labels.pictures, key=lambda p: p.image_id)
    if pictures[0].is_valid is not None:
        train = [p for p in pictures if not p.is_valid]
        val = [p for p in pictures if p.is_valid]
    else:
        n_val = round(len(pictures) * val_fraction)
        held = set(rng_for(seed, "paq2piq-split").permutation(len(pictures))[:n_val].tolist())
        train = [p for i, p in enumerate(pictures) if i not in held]
        val = [p for i, p in enumerate(pictures) if i in held]
    if len(train) < 2:
        raise ConfigError(
            f"{labels.path}: {len(train)} training picture(s) after the split; PaQ-2-PiQ needs at least 2 "
            f"(BatchNorm) and many more to learn anything"
        )
    return train, val


def normalisation_of(pictures: list[LabelledPicture]) -> Normalisation:
    """The release's normalisation, from these pictures' MOS: mean and one-sided root mean squared deviations."""
    mos = np.array([p.mos for p in pictures], dtype=np.float64)
    mean = float(mos.mean())
    below, above = mos[mos < mean] - mean, mos[mos > mean] - mean
    spread = float(mos.std()) or 1.0
    left = float(np.sqrt(np.mean(below**2))) if below.size else spread
    right = float(np.sqrt(np.mean(above**2))) if above.size else spread
    return Normalisation(mean, left or spread, right or spread)


def _described(path: Path) -> str:
    return f"{path} (sha256 {sha256_file(path)})"


def _init_file(init: str | Path) -> Path:
    """The weights file ``init`` names (``official``: the release's, wherever it was put), checked to exist."""
    official = isinstance(init, str) and init == "official"
    path = find_weights("paq2piq") if official else Path(init).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"no weights file at {path}; init is random, imagenet, official or the path of a PaQ-2-PiQ or "
            f"torchvision ResNet-18 weights file"
        )
    return path


def initial_model(
    init: str | Path, seed: int, *, progress: bool = True, weights_dir: str | Path | None = None
) -> tuple[P2PNet, str, bool]:
    """The network to start from, a description of where it came from, and whether its head is new.

    ``random``: seeded; ``imagenet``: torchvision's ResNet-18 body (fetched once); ``official``: the release's
    weights (:func:`saliqa.iqa.weights.find_weights`); a path: a PaQ-2-PiQ file (body and head) or a
    torchvision ResNet-18 state dict (body only). Files are read weights-only.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", "paq2piq"))
        net = P2PNet(1)
    if isinstance(init, str) and init == "random":
        return net, "random", True
    if isinstance(init, str) and init == "imagenet":
        described = init_weights(Classifier("p2p-resnet18", net, 1), "imagenet", progress=progress,
                                 weights_dir=weights_dir)  # fmt: skip
        return net, described, True
    path = _init_file(init)
    tensors = state_dict_of(read_weights_file(path), path)
    if any(k.startswith("head.") for k in tensors):
        net.load_state_dict(checked_paq2piq_state(tensors, net.state_dict(), path), strict=True)
        return net, f"paq2piq file: {_described(path)}", False
    init_weights(Classifier("p2p-resnet18", net, 1), path)  # a torchvision ResNet: the body only
    return net, f"resnet18 body: {_described(path)}", True


def _init_identity(init: str | Path) -> str:
    """What the fingerprint knows of the start before fetching anything."""
    if isinstance(init, str) and init in ("random", "imagenet"):
        return init if init == "random" else f"imagenet:{IMAGENET_WEIGHTS['p2p-resnet18'].file_name}"
    return f"file:{sha256_file(_init_file(init))}"


# -- the training --------------------------------------------------------------------------------------------------
def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y)[0])


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.pearsonr(x, y)[0])


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    """Higher validation SROCC first, then lower validation loss; NaN ranks lowest."""
    srocc = -2.0 if math.isnan(row["val_srocc"]) else float(row["val_srocc"])
    loss = math.inf if math.isnan(row["val_loss"]) else float(row["val_loss"])
    return srocc, -loss


def _better(row: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether this epoch beats the best so far; ties keep the earlier one; without any validation the latest
    epoch is the best there is."""
    if best["rank"] is None:
        return True
    if math.isnan(row["val_srocc"]):  # no validation this epoch (or a diverged one): only over another such
        return best["rank"][0] == -2.0
    return _rank(row) > tuple(best["rank"])


def save_trained(path: Path, payload: dict[str, Any]) -> Path:
    """Write a ``saliqa-paq2piq`` file atomically, after checking it loads back with ``weights_only=True``."""
    check_plain(payload, "checkpoint")
    buffer = io.BytesIO()  # serialised in memory, so a failed write is a plain OSError
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def _read_own(path: Path) -> dict[str, Any] | None:
    """A ``saliqa-paq2piq`` file's contents, or None when it is absent or unreadable (then replaced)."""
    if not path.exists():
        return None
    try:
        obj = read_weights_file(path)
    except CheckpointError as error:
        log.warning("ignoring %s: %s", path, error)
        return None
    return obj if isinstance(obj, dict) and obj.get("format") == TRAINED_FORMAT else None


class _Training:
    """One training in ``out_dir``: the loop, validation, checkpoints and resume."""

    def __init__(
        self,
        labels: QualityLabels,
        train: list[LabelledPicture],
        val: list[LabelledPicture],
        recipe: Recipe,
        out_dir: Path,
        *,
        init: str | Path,
        device: torch.device,
        workers: int,
        progress: bool,
        weights_dir: str | Path | None,
    ) -> None:
        self.labels, self.train, self.val, self.recipe, self.out = labels, train, val, recipe, out_dir
        self.init, self.device, self.progress, self.weights_dir = init, device, progress, weights_dir
        self.norm = normalisation_of(train)
        self.fp = fingerprint(
            "paq2piq-train", recipe.as_dict(), labels.sha256, list(labels.scale), str(labels.images_root),
            _init_identity(init), [p.image_id for p in train], [p.image_id for p in val],
        )  # fmt: skip
        self.steps_per_epoch = len(epoch_batches(len(train), recipe.batch_size, recipe.seed, 1))
        self.batches = EpochBatches()
        dataset = _Pictures({"train": train, "val": val}, recipe, DecodePolicy())
        workers = min(workers, len(train))
        self.loader: DataLoader = data_loader(
            dataset,
            workers=workers,
            collate_fn=batch_pictures,
            batch_sampler=self.batches,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            generator=torch.Generator(),  # worker seeds never touch the global stream dropout uses
        )
        self.val_batches = self._val_batches()

    def _val_batches(self) -> list[list[int]]:
        """Validation pictures in batches of one size (no padding: the judge's own scores)."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, picture in enumerate(self.val):
            by_size.setdefault(view_size(picture.size, self.recipe.max_side), []).append(i)
        bs = self.recipe.batch_size
        return [group[s : s + bs] for _, group in sorted(by_size.items()) for s in range(0, len(group), bs)]

    # -- optimiser ------------------------------------------------------------------------------------------------
    def _optimizer(self, net: P2PNet) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        r = self.recipe
        groups = [
            {"params": list(net.body.parameters()), "lr": r.lr * r.body_lr_factor},
            {"params": list(net.head.parameters()), "lr": r.lr},
        ]
        optimizer = torch.optim.AdamW(groups, betas=r.betas, weight_decay=r.weight_decay)
        if r.schedule == "onecycle":
            scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[g["lr"] for g in groups],
                total_steps=r.epochs * self.steps_per_epoch,
                base_momentum=0.85,
                max_momentum=0.95,
            )
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return optimizer, scheduler

    # -- one epoch ------------------------------------------------------------------------------------------------
    def _predict(self, net: P2PNet, batch: PictureBatch) -> Tensor:
        x = to_unit_float(batch.images, self.device)
        return net.head(pool_boxes(net.features(x), batch, net.roi_pool)).squeeze(1)

    def _train_epoch(
        self,
        net: P2PNet,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epoch: int,
        bar: Any,
    ) -> dict[str, Any]:
        net.train()
        torch.manual_seed(derive_seed(self.recipe.seed, "dropout", epoch))  # dropout: a function of the epoch
        order = epoch_batches(len(self.train), self.recipe.batch_size, self.recipe.seed, epoch)
        self.batches.batches = [[("train", i, epoch) for i in batch] for batch in order]
        lr = optimizer.param_groups[1]["lr"]
        squared, boxes, picture_squared, pictures, skipped = 0.0, 0, 0.0, 0, 0
        for batch in self.loader:
            skipped += batch.skipped
            if len(batch.targets) < 2:  # BatchNorm cannot train on one box; the schedule stays in step
                scheduler.step()
                bar.advance()
                continue
            targets = batch.targets.to(self.device)
            errors = (self._predict(net, batch) - targets) ** 2
            loss = errors.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            errors = errors.detach().cpu().double()
            squared += float(errors.sum())
            boxes += len(errors)
            picture_squared += float(errors[batch.box == 0].sum())
            pictures += int((batch.box == 0).sum())
            bar.advance()
        return {
            "lr": lr,
            "train_loss": squared / boxes if boxes else math.nan,
            "train_picture_loss": picture_squared / pictures if pictures else math.nan,
            "skipped": skipped,
        }

    @torch.inference_mode()
    def _validate(self, net: P2PNet) -> dict[str, Any]:
        net.eval()
        self.batches.batches = [[("val", i, 0) for i in batch] for batch in self.val_batches]
        predicted, target, box, skipped = [], [], [], 0
        for batch in self.loader:
            skipped += batch.skipped
            if len(batch.targets) == 0:
                continue
            predicted.append(self._predict(net, batch).double().cpu())
            target.append(batch.targets.double())
            box.append(batch.box)
        if not predicted:
            nan = math.nan
            return {"val_loss": nan, "val_picture_loss": nan, "val_srocc": nan, "val_plcc": nan,
                    "val_patch_srocc": nan, "val_skipped": skipped}  # fmt: skip
        p, t, k = torch.cat(predicted).numpy(), torch.cat(target).numpy(), torch.cat(box).numpy()
        picture, patch = k == 0, k > 0
        return {
            "val_loss": float(np.mean((p - t) ** 2)),
            "val_picture_loss": float(np.mean((p[picture] - t[picture]) ** 2)),
            "val_srocc": _spearman(p[picture], t[picture]),
            "val_plcc": _pearson(p[picture], t[picture]),
            "val_patch_srocc": _spearman(p[patch], t[patch]) if patch.any() else math.nan,
            "val_skipped": skipped,
        }

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _payload(self, net: P2PNet, epoch: int, row: dict[str, Any], init: str) -> dict[str, Any]:
        n = self.norm
        return {
            "format": TRAINED_FORMAT,
            "version": TRAINED_VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "normalisation": {"mean": n.mean, "std_left": n.std_left, "std_right": n.std_right},
            "recipe": self.recipe.as_dict(),
            "labels": {
                "file": str(self.labels.path),
                "sha256": self.labels.sha256,
                "kind": self.labels.kind,
                "scale": list(self.labels.scale),
                "images": str(self.labels.images_root),
                "train": len(self.train),
                "val": len(self.val),
                "left_out": len(self.labels.rejected),
            },
            "init": init,
            "epoch": epoch,
            "metrics": dict(row),
            "fingerprint": self.fp,
            "versions": dict(versions()),
        }

    def _resume_state(self) -> dict[str, Any] | None:
        state = _read_own(self.out / LAST)
        if state is None:
            return None
        if state.get("fingerprint") != self.fp:
            log.warning(
                "%s belongs to another training (other labels or settings): starting afresh", self.out / LAST
            )
            return None
        return state

    def _repair_best(self, net: P2PNet, state: dict[str, Any]) -> None:
        """Rewrite ``best.pt`` from ``last.pt`` if a kill came between writing the two."""
        best_epoch = int(state["best"]["epoch"])
        if best_epoch != int(state["epoch"]):
            return
        found = _read_own(self.out / BEST)
        if found is not None and found.get("fingerprint") == self.fp and int(found["epoch"]) == best_epoch:
            return
        save_trained(self.out / BEST, self._payload(net, best_epoch, state["metrics"], state["init"]))

    def _write_log(self, rows: list[dict[str, Any]], init: str) -> pd.DataFrame:
        frame = log_frame(rows)
        meta = provenance(
            "paq2piq-train", self.fp, self.recipe.as_dict(), labels=str(self.labels.path),
            labels_sha256=self.labels.sha256, init=init,
        )  # fmt: skip
        write_table(self.out / LOG_FILE, frame, meta)
        write_text(self.out / LOG_CSV, frame.to_csv(index=False))
        return frame

    # -- the run --------------------------------------------------------------------------------------------------
    def run(self) -> tuple[pd.DataFrame, int, int, str]:
        r = self.recipe
        rows: list[dict[str, Any]] = []
        best: dict[str, Any] = {"epoch": 0, "rank": None}
        start = 0
        if (state := self._resume_state()) is not None:
            with torch.device("meta"):  # no random initialisation: the global RNG is left alone
                net = P2PNet(1)
            net.load_state_dict(state["state_dict"], assign=True)
            optimizer, scheduler = self._optimizer(net)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            rows, best, start, init = (
                list(state["log"]),
                dict(state["best"]),
                int(state["epoch"]),
                state["init"],
            )
            self._repair_best(net, state)
            log.info("resuming PaQ-2-PiQ training after epoch %d of %d", start, r.epochs)
        else:
            net, init, fresh_head = initial_model(
                self.init, r.seed, progress=self.progress, weights_dir=self.weights_dir
            )
            if fresh_head:  # start at the targets' mean: the first steps learn ranking, not the offset
                targets = [t for p in self.train for t in p.box_mos or (p.mos,)]
                with torch.no_grad():
                    net.head[-1].bias.fill_(float(np.mean(targets)))
            optimizer, scheduler = self._optimizer(net)
        net.to(self.device)
        move_optimizer_state(optimizer, self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        total = r.epochs * self.steps_per_epoch
        with (
            torch.random.fork_rng(devices=devices, device_type="cuda"),
            progress_bar("train (paq2piq)", total=total, enabled=self.progress, tenths=False) as bar,
        ):
            bar.advance(start * self.steps_per_epoch)
            for epoch in range(start + 1, r.epochs + 1):
                began = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch}
                row.update(self._train_epoch(net, optimizer, scheduler, epoch, bar))
                checked = self._validate(net)
                row["skipped"] += checked.pop("val_skipped")
                row.update(checked)
                row["seconds"] = time.perf_counter() - began
                rows.append(row)
                improved = _better(row, best)
                if improved:
                    best = {"epoch": epoch, "rank": list(_rank(row))}
                payload = self._payload(net, epoch, row, init)
                # last.pt first: it records which epoch is best, so a kill before best.pt is repaired on resume.
                last = payload | {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                  "log": rows, "best": best}  # fmt: skip
                save_trained(self.out / LAST, last)
                if improved:
                    save_trained(self.out / BEST, payload)
                self._write_log(rows, init)
                bar.note(
                    f"epoch {epoch}/{r.epochs}: train loss {row['train_loss']:.2f}, val SROCC "
                    f"{row['val_srocc']:.3f}, PLCC {row['val_plcc']:.3f} ({row['seconds']:.0f} s)"
                )
        frame = self._write_log(rows, init)
        return frame, int(best["epoch"]), start, init


def log_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The training log as a table of :data:`LOG_COLUMNS`."""
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    frame["epoch"] = frame["epoch"].astype("int64")
    frame["skipped"] = frame["skipped"].astype("int64")
    return frame


def train_paq2piq(
    labels: str | Path,
    images_root: str | Path | None = None,
    out_dir: str | Path = "paq2piq-training",
    *,
    init: str | Path = "imagenet",
    epochs: int = 10,
    batch_size: int = 120,
    lr: float = 3e-3,
    body_lr_factor: float = 0.1,
    weight_decay: float = 1e-2,
    schedule: Schedule = "constant",
    val_fraction: float = 0.1,
    max_side: int | None = None,
    hflip: bool = False,
    scale: tuple[float, float] = FLIVE_SCALE,
    seed: int = 0,
    device: str | torch.device = "auto",
    workers: int = 2,
    progress: bool = True,
    weights_dir: str | Path | None = None,
) -> TrainedPaQ2PiQ:
    """Train or fine-tune PaQ-2-PiQ on ``labels`` (FLIVE format or picture-only, :mod:`saliqa.iqa.labels`) with
    pictures under ``images_root``; the defaults are the official recipe (module docstring). A killed run, started
    again with the same arguments, resumes after its last finished epoch; ``best.pt`` then rates as
    ``load_quality_model(f"paq2piq:{result.best}")``.

    ``init``: ``imagenet``, ``random``, ``official`` or a weights file; ``scale``: the ends of the labels' MOS
    scale, mapped onto 0-100 (KonIQ: ``(1, 5)``); ``workers``: loader processes; ``weights_dir``: where ImageNet
    weights are kept (default: the torch hub cache). On CUDA, TF32 follows PyTorch's settings.
    """
    recipe = Recipe(epochs, batch_size, lr, body_lr_factor, weight_decay, (0.9, 0.99), schedule, val_fraction,
                    max_side, hflip, seed).check()  # fmt: skip
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    torch_device = resolve_device(device)
    read = read_quality_labels(labels, images_root, scale=scale)
    if len(read.rejected):
        log.warning("%s: %d rows left out (see %s)", read.path, len(read.rejected), REJECTED_FILE)
    train, val = split_pictures(read, recipe.val_fraction, recipe.seed)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if len(read.rejected):
        write_text(out / REJECTED_FILE, read.rejected.to_csv(index=False))
    split = pd.DataFrame(
        {"image_id": [p.image_id for p in train + val], "split": ["train"] * len(train) + ["val"] * len(val)}
    )
    write_text(out / SPLIT_FILE, split.to_csv(index=False))
    training = _Training(read, train, val, recipe, out, init=init, device=torch_device, workers=workers,
                         progress=progress, weights_dir=weights_dir)  # fmt: skip
    frame, best_epoch, resumed, described = training.run()
    from saliqa.report.paq2piq_training import plot_paq2piq_training

    plot_paq2piq_training(frame, out / CURVES, best_epoch=best_epoch)
    return TrainedPaQ2PiQ(out, out / BEST, out / LAST, frame, best_epoch, resumed, described, read, len(train),
                          len(val))  # fmt: skip
