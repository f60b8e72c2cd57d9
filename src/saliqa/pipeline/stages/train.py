"""Stage train: the classifier of the study, trained on the train split and validated on the val split; or,
with a ``[model]`` section, no training: the model evaluated as it is is fetched, its classes matched to the
dataset's labels, and written as the run's checkpoint with its source and weight hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saliqa.classify.checkpoint import save_checkpoint
from saliqa.classify.models import check_pretrained
from saliqa.classify.pretrained import ModelSource, ReadyModel, concrete_name
from saliqa.classify.train import Trainer
from saliqa.config import ModelConfig, RunConfig, TrainConfig, config_to_dict, result_settings
from saliqa.device import resolve_device
from saliqa.errors import CheckpointError
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


def _model_source(m: ModelConfig) -> ModelSource:
    return ModelSource(m.name, m.checkpoint, m.arch, m.classes, m.weights, m.trust_checkpoint)


def _check(config: RunConfig) -> None:
    if config.model is not None:
        _model_source(config.model).check()
        return
    resolve_device(config.train.device)
    check_pretrained(config.train.arch, config.train.pretrained, trust=config.train.trust_checkpoint)


def _settings(config: RunConfig) -> dict[str, Any]:
    if config.model is not None:  # nothing trains: only what the model is counts
        settings = result_settings(config.model)
        if config.model.name is not None:  # an alias (DEFAULT) by the weights it stands for here
            settings["name"] = concrete_name(config.model.name)
        return {"model": settings}
    device = resolve_device(config.train.device)
    return {
        "train": training_settings(config.train, device.type),
        "seed": config.seed,
        "images": config_to_dict(config.images),
    }


def _inputs(ctx: StageContext) -> dict[str, Any]:
    """The initial weights (by name, or a file by its content) and the kind of device; for a model evaluated
    as it is, its files by their content (a name stands for fixed published weights)."""
    m = ctx.config.model
    if m is not None:
        files = {k: getattr(m, k) for k in ("checkpoint", "classes", "weights") if getattr(m, k) is not None}
        return {k: ctx.run.hashes.sha256(Path(v).expanduser()) for k, v in files.items()}
    pretrained = ctx.config.train.pretrained
    if pretrained not in ("random", "imagenet"):
        pretrained = ctx.run.hashes.sha256(Path(pretrained).expanduser())
    return {"pretrained": pretrained, "device": resolve_device(ctx.config.train.device).type}


def match_classes(labels: list[str], classes: list[str], source: str) -> None:
    """Every label of the images to evaluate must be one of the model's classes, matched by name."""
    known = set(classes)
    unknown = sorted({label for label in labels if label not in known})
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" ... (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
        examples = ", ".join(classes[:5])
        raise CheckpointError(
            f"{len(unknown)} label(s) of the dataset are not classes of {source}: {shown}. The model's "
            f"{len(classes)} classes are named like {examples}; labels are matched by name (ImageNet's are "
            f"WNIDs such as n01440764): use a dataset with the model's class names, or a model trained on them"
        )


def _evaluate_as_is(ctx: StageContext, m: ModelConfig) -> StageReport:
    """Fetch the model, check its classes against the labels, and write it as the run's checkpoint."""
    ready: ReadyModel = _model_source(m).load(progress=ctx.progress)
    _, val = split_records(ctx.layout)
    match_classes(sorted(val["label"].unique()), ready.classes, ready.source)
    extra: dict[str, Any] = {
        "fingerprint": ctx.fingerprint,
        "source": ready.source,
        "weights_sha256": ready.weights_sha256,
        "class_names": ready.names,
        "transforms": ready.transforms.as_dict() if ready.transforms else None,
    }
    save_checkpoint(ctx.layout.path(RunLayout.BEST), ready.classifier, classes=ready.classes, extra=extra)
    how = (
        f"resize {ready.transforms.resize}, crop {ready.transforms.crop}, {ready.transforms.interpolation}"
        if ready.transforms and m.transforms == "published"
        else f"crop {ctx.config.evaluate.crop} as the study"
    )
    return StageReport(
        [
            f"skipped: evaluating {ready.source} as it is (weights sha256 {ready.weights_sha256[:16]}...)",
            f"{len(ready.classes)} classes, {len(val)} images to evaluate; transforms: {how}",
        ],
        {"skipped": f"evaluating {ready.source}", "weights_sha256": ready.weights_sha256},
    )


def _train(ctx: StageContext) -> StageReport:
    if ctx.config.model is not None:
        return _evaluate_as_is(ctx, ctx.config.model)
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
    writes=lambda config: (
        (RunLayout.BEST,)
        if config.model is not None
        else (RunLayout.BEST, RunLayout.LAST, RunLayout.TRAIN_LOG, RunLayout.TRAINING_CURVES)
    ),
    settings=_settings,
    inputs=_inputs,
    body=_train,
    check=_check,
)
