"""Stage train: the classifier of the study, trained on the train split and validated on the val split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saliqa.classify.models import check_pretrained
from saliqa.classify.train import Trainer
from saliqa.config import RunConfig, TrainConfig, config_to_dict, result_settings
from saliqa.device import resolve_device
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.plan import decode_policy
from saliqa.pipeline.runner import Stage, StageContext, StageReport
from saliqa.pipeline.stages.split import split_records
from saliqa.report.eval_figures import plot_training_curves


def training_settings(t: TrainConfig, device_type: str) -> dict[str, Any]:
    """The train settings that can change a weight: ``amp`` only on CUDA, the step settings only for the step
    schedule, warm-up not under onecycle (which has its own)."""
    unused = {"amp"} if device_type != "cuda" else set()
    unused |= {"step_epochs", "step_gamma"} if t.schedule != "step" else set()
    unused |= {"warmup_epochs"} if t.schedule == "onecycle" else set()
    return {k: v for k, v in result_settings(t).items() if k not in unused}


def _check(config: RunConfig) -> None:
    resolve_device(config.train.device)
    check_pretrained(config.train.arch, config.train.pretrained, trust=config.train.trust_checkpoint)


def _settings(config: RunConfig) -> dict[str, Any]:
    device = resolve_device(config.train.device)
    return {
        "train": training_settings(config.train, device.type),
        "seed": config.seed,
        "images": config_to_dict(config.images),
    }


def _inputs(ctx: StageContext) -> dict[str, Any]:
    """The initial weights (by name, or a file by its content) and the kind of device."""
    pretrained = ctx.config.train.pretrained
    if pretrained not in ("random", "imagenet"):
        pretrained = ctx.run.hashes.sha256(Path(pretrained).expanduser())
    return {"pretrained": pretrained, "device": resolve_device(ctx.config.train.device).type}


def _train(ctx: StageContext) -> StageReport:
    config, layout, t = ctx.config, ctx.layout, ctx.config.train
    device = resolve_device(t.device)
    train, val = split_records(layout)
    result = Trainer(
        train,
        val,
        t,
        layout.model,
        seed=config.seed,
        fingerprint=ctx.fingerprint,
        device=device,
        policy=decode_policy(config),
        meta=ctx.meta("train", device=str(device)),
        progress=ctx.progress,
    ).run()
    plot_training_curves(result.log, layout.path(RunLayout.TRAINING_CURVES))
    best = result.log[result.log["epoch"] == result.best_epoch].iloc[0]
    messages = [
        f"train: {len(train)} images, {len(result.classes)} classes, {t.arch} from {result.init}",
        f"best epoch {result.best_epoch}/{t.epochs}: val top-1 {best.val_top1:.3f}, top-5 {best.val_top5:.3f}",
    ]
    if result.resumed_epochs:
        messages.append(f"resumed: {result.resumed_epochs} epoch(s) reused from an interrupted run")
    return StageReport(messages, {"best_epoch": result.best_epoch})


TRAIN = Stage(
    name="train",
    does="trains the classifier on the train split, validating on clean val crops each epoch",
    version=1,
    reads=(RunLayout.SPLIT, RunLayout.RATINGS),
    writes=lambda config: (RunLayout.BEST, RunLayout.LAST, RunLayout.TRAIN_LOG, RunLayout.TRAINING_CURVES),
    settings=_settings,
    inputs=_inputs,
    body=_train,
    check=_check,
)
