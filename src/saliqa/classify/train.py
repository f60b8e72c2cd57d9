"""Training the classifier on the train split, validated on clean centre crops after every epoch.

Reproducible by construction: the initial weights, each epoch's image order, each image's crop and flip, and
the dropout masks of each epoch come from streams derived from the run's seed, so a run killed after epoch k
and resumed from ``last.pt`` ends bit-identical (on CPU) to one that was never interrupted. Every epoch ends
with ``last.pt`` (weights, optimiser, schedule, log) and, when validation top-1 improves, ``best.pt``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from saliqa.classify.checkpoint import load_checkpoint, save_checkpoint
from saliqa.classify.models import build_classifier, init_weights
from saliqa.classify.transforms import eval_view, train_view
from saliqa.config import TrainConfig, config_to_dict
from saliqa.errors import ImageRejected
from saliqa.images import DecodePolicy, decode_image
from saliqa.io.progress import progress_bar
from saliqa.io.tables import write_table
from saliqa.loading import data_loader, to_unit_float
from saliqa.seeding import derive_seed, rng_for

log = logging.getLogger(__name__)

LAST, BEST, LOG = "last.pt", "best.pt", "train_log.parquet"
LOG_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_top1",
    "val_top5",
    "skipped",
    "seconds",
)


class _Images(Dataset):
    """Decoded, transformed images of a split as (index, uint8 crop or None, class index).

    An item is asked for as ``(split, index, epoch)``: one dataset (and so one set of loader workers, kept
    for the whole training) serves every epoch's training views and every validation pass.
    """

    def __init__(
        self,
        splits: dict[str, list[dict[str, Any]]],
        classes: list[str],
        size: int,
        seed: int,
        policy: DecodePolicy,
    ) -> None:
        self.splits, self.size, self.seed, self.policy = splits, size, seed, policy
        self.index = {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return sum(len(records) for records in self.splits.values())

    def __getitem__(self, key: tuple[str, int, int]) -> tuple[int, torch.Tensor | None, int]:
        split, i, epoch = key
        record = self.splits[split][i]
        try:
            image = decode_image(record["path"], self.policy).array
        except ImageRejected as reject:  # changed since it was rated: skip it, counted in the log
            log.warning("skipping %s: %s", record["image_id"], reject.reason)
            return i, None, -1
        if split == "train":  # the epoch's random crop of this image, from its own stream
            view = train_view(image, self.size, rng_for(self.seed, "augment", epoch, record["image_id"]))
        else:
            view = eval_view(image, self.size)[0]
        return i, view, self.index[record["label"]]


class EpochBatches(Sampler[list[tuple[str, int, int]]]):
    """The batches of the pass at hand (an epoch's training batches, or a validation pass)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[str, int, int]]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def _collate(items: list[tuple[int, torch.Tensor | None, int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    kept = [(x, y) for _, x, y in items if x is not None]
    if not kept:
        return torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.long), len(items)
    return torch.stack([x for x, _ in kept]), torch.tensor([y for _, y in kept]), len(items) - len(kept)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of one epoch; a last batch of one image joins the previous one (BatchNorm)."""
    order = rng_for(seed, "shuffle", epoch).permutation(n).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based) for cosine, step and constant schedules."""
    total = config.epochs * steps_per_epoch
    warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    if config.schedule == "step":
        return config.step_gamma ** ((step // steps_per_epoch) // config.step_epochs)
    return 1.0


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=False
        )
    return torch.optim.AdamW(
        params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
    )


def _scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=config.epochs * steps_per_epoch,
            cycle_momentum=config.momentum > 0,
            base_momentum=0.85 * config.momentum,
            max_momentum=config.momentum,
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, steps_per_epoch))


@dataclass
class TrainResult:
    """What training produced: the per-epoch log, the best epoch and how many epochs a resume reused."""

    log: pd.DataFrame
    classes: list[str]
    best_epoch: int
    resumed_epochs: int
    init: str


class Trainer:
    """One training run in ``out`` (``last.pt``, ``best.pt``, ``train_log.parquet``)."""

    def __init__(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        config: TrainConfig,
        out: Path,
        *,
        seed: int,
        fingerprint: str,
        device: torch.device,
        policy: DecodePolicy | None = None,
        meta: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.out, self.seed, self.fp, self.device = config, Path(out), seed, fingerprint, device
        self.policy, self.meta, self.progress = policy or DecodePolicy(), meta or {}, progress
        self.classes = sorted(train["label"].unique().tolist())
        self.train_records = train[["image_id", "path", "label"]].to_dict("records")
        known = set(self.classes)
        self.val_records = [
            r for r in val[["image_id", "path", "label"]].to_dict("records") if r["label"] in known
        ]
        self.amp = config.amp and device.type == "cuda"
        self.steps_per_epoch = len(epoch_batches(len(self.train_records), config.batch_size, seed, 1))
        self._batches = EpochBatches()
        self._loader = self._open_loader()

    # -- data ---------------------------------------------------------------------------------------------------
    def _open_loader(self) -> DataLoader:
        """One loader for the whole training: its workers persist across epochs and validation passes."""
        dataset = _Images(
            {"train": self.train_records, "val": self.val_records},
            self.classes,
            self.config.image_size,
            self.seed,
            self.policy,
        )
        workers = min(self.config.workers, len(self.train_records))
        return data_loader(
            dataset,
            workers=workers,
            collate_fn=_collate,
            batch_sampler=self._batches,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            generator=torch.Generator(),  # worker seeds never touch the global stream that dropout uses
        )

    def _train_data(self, epoch: int) -> DataLoader:
        batches = epoch_batches(len(self.train_records), self.config.batch_size, self.seed, epoch)
        self._batches.batches = [[("train", i, epoch) for i in batch] for batch in batches]
        return self._loader

    def _val_data(self) -> DataLoader:
        n, bs = len(self.val_records), 2 * self.config.batch_size
        self._batches.batches = [[("val", i, 0) for i in range(s, min(n, s + bs))] for s in range(0, n, bs)]
        return self._loader

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_unit_float(x, self.device), y.to(self.device, non_blocking=True)

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    # -- one epoch ---------------------------------------------------------------------------------------------
    def _train_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        epoch: int,
        bar: Any,
    ) -> dict[str, float]:
        model.train()
        torch.manual_seed(derive_seed(self.seed, "dropout", epoch))  # dropout masks: a function of the epoch
        # saliqa 0.1's loaders drew one number from this stream to start each epoch; the loader now has its own
        # generator (its workers persist), so that draw is made here, keeping trained weights identical.
        torch.empty((), dtype=torch.int64).random_()
        loss_sum, correct, seen, skipped = 0.0, 0, 0, 0
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch starts with
        for x, y, n_skipped in self._train_data(epoch):
            skipped += n_skipped
            if len(y) < 2:  # BatchNorm cannot train on one image; keep the schedule in step regardless
                scheduler.step()
                bar.advance()
                continue
            x, y = self._to_device(x, y)
            with self._autocast():
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
            bar.advance()
        nothing = float("nan")
        return {
            "lr": lr,
            "train_loss": loss_sum / seen if seen else nothing,
            "train_acc": correct / seen if seen else nothing,
            "skipped": skipped,
        }

    @torch.inference_mode()
    def _validate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        loss_sum, top1, top5, seen = 0.0, 0, 0, 0
        k = min(5, len(self.classes))
        for x, y, _ in self._val_data():
            if len(y) == 0:
                continue
            x, y = self._to_device(x, y)
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            best = logits.topk(k, dim=1).indices
            top1 += int((best[:, 0] == y).sum())
            top5 += int((best == y[:, None]).any(1).sum())
            seen += len(y)
        if seen == 0:
            return {"val_loss": float("nan"), "val_top1": float("nan"), "val_top5": float("nan")}
        return {"val_loss": loss_sum / seen, "val_top1": top1 / seen, "val_top5": top5 / seen}

    # -- the run ------------------------------------------------------------------------------------------------
    def _checkpoint_extra(self, epoch: int, row: dict[str, Any], init: str) -> dict[str, Any]:
        return {
            "fingerprint": self.fp,
            "epoch": epoch,
            "metrics": row,
            "config": config_to_dict(self.config),
            "seed": self.seed,
            "init": init,
            "provenance": self.meta,
        }

    def _resume_state(self) -> dict[str, Any] | None:
        """``last.pt`` when it belongs to this very training (same fingerprint), else None."""
        path = self.out / LAST
        if not path.exists():
            return None
        try:
            state = load_checkpoint(path)
        except Exception as error:  # noqa: BLE001 - an unreadable leftover is replaced, never trusted
            log.warning("ignoring %s: %s", path, error)
            return None
        return state if state.get("fingerprint") == self.fp else None

    def run(self) -> TrainResult:
        config = self.config
        model = build_classifier(config.arch, len(self.classes), seed=self.seed)
        optimizer = _optimizer(config, model)
        scheduler = _scheduler(config, optimizer, self.steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        rows: list[dict[str, Any]] = []
        best: dict[str, Any] = {"epoch": 0, "rank": None}
        start = 0
        if (state := self._resume_state()) is not None:
            model.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            rows, best, start, init = (
                list(state["log"]),
                dict(state["best"]),
                int(state["epoch"]),
                state["init"],
            )
            self._repair_best(model, state)
            log.info("resuming training after epoch %d of %d", start, config.epochs)
        else:
            init = init_weights(
                model, config.pretrained, progress=self.progress, trust=config.trust_checkpoint
            )
        model.to(self.device)
        move_optimizer_state(optimizer, self.device)
        self.out.mkdir(parents=True, exist_ok=True)
        total = config.epochs * self.steps_per_epoch
        devices = [self.device] if self.device.type == "cuda" else []
        # Dropout draws from torch's global RNG, seeded per epoch; the caller's RNG state is restored after.
        with (
            torch.random.fork_rng(devices=devices, device_type="cuda"),
            progress_bar(f"train ({config.arch})", total=total, enabled=self.progress, tenths=False) as bar,
        ):
            bar.advance(start * self.steps_per_epoch)
            for epoch in range(start + 1, config.epochs + 1):
                began = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch}
                row.update(self._train_epoch(model, optimizer, scheduler, scaler, epoch, bar))
                row.update(self._validate(model))
                row["seconds"] = time.perf_counter() - began
                rows.append(row)
                extra = self._checkpoint_extra(epoch, row, init)
                improved = _better(row, best)
                if improved:
                    best = {"epoch": epoch, "rank": _rank(row)}
                # last.pt first: it records which epoch is best, so a kill before best.pt is written is
                # repaired on resume (see _repair_best).
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                state |= {"scaler": scaler.state_dict(), "log": rows, "best": best}
                save_checkpoint(self.out / LAST, model, classes=self.classes, extra={**extra, **state})
                if improved:
                    save_checkpoint(self.out / BEST, model, classes=self.classes, extra=extra)
                bar.note(
                    f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.3f}, "
                    f"val top-1 {row['val_top1']:.3f} ({row['seconds']:.0f} s)"
                )
        frame = log_frame(rows)
        write_table(self.out / LOG, frame, self.meta)
        return TrainResult(frame, self.classes, int(best["epoch"]), start, init)

    def _repair_best(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Rewrite ``best.pt`` from ``last.pt`` if a kill came between writing the two."""
        best_epoch, path = int(state["best"]["epoch"]), self.out / BEST
        if best_epoch != int(state["epoch"]):
            return
        try:
            if int(load_checkpoint(path)["epoch"]) == best_epoch:
                return
        except Exception:  # noqa: BLE001,S110 - missing or unreadable: rewritten below
            pass
        extra = {
            k: state[k] for k in ("fingerprint", "epoch", "metrics", "config", "seed", "init", "provenance")
        }
        save_checkpoint(path, model, classes=self.classes, extra=extra)


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Optimiser buffers loaded on the CPU follow the model to its device."""
    for param_state in optimizer.state.values():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                param_state[key] = value.to(device)


def _rank(row: dict[str, Any]) -> list[float]:
    """Higher validation top-1 first, then lower validation loss; NaN (nothing validated) ranks lowest."""
    top1 = -1.0 if math.isnan(row["val_top1"]) else float(row["val_top1"])
    loss = math.inf if math.isnan(row["val_loss"]) else float(row["val_loss"])
    return [top1, -loss]


def _better(row: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether this epoch beats the best so far; ties keep the earlier epoch, except when nothing could be
    validated, where the latest epoch is the best there is."""
    if best["rank"] is None or math.isnan(row["val_top1"]):
        return True
    return _rank(row) > best["rank"]


def log_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    frame["epoch"] = frame["epoch"].astype("int64")
    frame["skipped"] = frame["skipped"].astype("int64")
    return frame
