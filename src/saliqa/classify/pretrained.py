"""Classifiers evaluated as they are: published weights by name, or a checkpoint made elsewhere.

A named model brings its weights, its class list and the transforms its published accuracy was measured
with. torchvision's ImageNet-1k weights are fetched once into torch's hub cache and checked against the hash
in their file name; timm's by timm (or read from a local file). ImageNet models' classes are the 1000 WNIDs
in torchvision's order (sorted), so that a dataset's WNID labels find their output; their human-readable
names come with them. A checkpoint is saliqa's own (architecture and classes inside) or a plain state dict
with its architecture and a class file. Every file is read weights-only unless the user opts in.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor

from saliqa.classify.checkpoint import FORMAT, classifier_from_checkpoint
from saliqa.classify.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_PREFIX,
    Classifier,
    build_classifier,
    import_timm,
    read_weights_file,
    state_dict_of,
    torchvision_file,
)
from saliqa.errors import CheckpointError, UnknownModelError
from saliqa.io.download import WeightsFile, ensure_weights
from saliqa.io.hashing import sha256_file

__all__ = [
    "EvalTransforms",
    "ModelSource",
    "ReadyModel",
    "concrete_name",
    "imagenet_wnids",
    "published_transforms",
    "torchvision_weights",
]

TRUST_MODEL = (
    "only for a file from a source you trust, allow the full unpickler with model.trust_checkpoint = true"
)


@dataclass(frozen=True)
class EvalTransforms:
    """How a model's published accuracy was measured: short side resized to ``resize``, centre crop ``crop``."""

    resize: int | None
    crop: int
    interpolation: str = "bilinear"

    def as_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": self.crop, "interpolation": self.interpolation}


@dataclass
class ReadyModel:
    """A classifier ready to evaluate, with what it predicts and where it came from."""

    classifier: Classifier
    classes: list[str]
    """The label each output stands for, matched by name against a dataset's labels."""
    source: str
    """What it is, for the run's messages and provenance."""
    weights_sha256: str
    """sha256 of the weights file (or, for weights timm fetched itself, of the tensors' bytes)."""
    names: list[str] = field(default_factory=list)
    """Human-readable class names where they differ from ``classes`` (ImageNet: WNID -> name)."""
    transforms: EvalTransforms | None = None


def imagenet_wnids() -> tuple[list[str], list[str]]:
    """The 1000 ImageNet-1k WNIDs in torchvision's output order, and their names."""
    from saliqa.reference_data import imagenet_classes

    classes = imagenet_classes()
    return list(classes["wnid"]), list(classes["name"])


def _split_name(name: str) -> tuple[str, str]:
    kind, _, rest = name.partition(":")
    if kind not in ("torchvision", "timm") or not rest:
        raise UnknownModelError(f"model {name!r}: write torchvision:<builder>.<WEIGHTS> or timm:<model>")
    return kind, rest


def torchvision_weights(rest: str) -> torchvision.models.WeightsEnum:
    """``resnet50.IMAGENET1K_V2`` (or ``resnet50.DEFAULT``) -> torchvision's weights entry."""
    builder, _, tag = rest.partition(".")
    try:
        entries = torchvision.models.get_model_weights(builder)
    except (ValueError, KeyError):
        known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
        raise UnknownModelError(
            f"torchvision has no classification model {builder!r} (e.g. {known}, ...)"
        ) from None
    names = [w.name for w in entries]
    if tag not in (*names, "DEFAULT"):
        raise UnknownModelError(
            f"torchvision:{builder} has no weights {tag!r}; choose one of {', '.join(names)}"
        )
    weights = (
        entries[tag] if tag != "DEFAULT" else entries.DEFAULT
    )  # DEFAULT: whichever this torchvision means
    if len(weights.meta.get("categories") or ()) != 1000:
        raise UnknownModelError(f"torchvision:{rest} is not an ImageNet-1k classifier")
    return weights


def concrete_name(name: str) -> str:
    """``torchvision:resnet50.DEFAULT`` -> ``torchvision:resnet50.IMAGENET1K_V2`` (what this torchvision means by
    it); other names as they are."""
    kind, rest = _split_name(name)
    if kind != "torchvision":
        return name
    return f"torchvision:{rest.partition('.')[0]}.{torchvision_weights(rest).name}"


def published_transforms(name: str) -> EvalTransforms:
    """The evaluation transforms published with a named model; no download."""
    kind, rest = _split_name(name)
    if kind == "torchvision":
        t = torchvision_weights(rest).transforms()
        return EvalTransforms(int(t.resize_size[0]), int(t.crop_size[0]), t.interpolation.value)
    cfg = import_timm().models.get_pretrained_cfg(rest)
    if cfg is None:
        raise UnknownModelError(f"timm has no pretrained model {rest!r}; see timm.list_pretrained()")
    crop = int(cfg.input_size[-1])
    return EvalTransforms(math.floor(crop / cfg.crop_pct), crop, str(cfg.interpolation or "bilinear"))


def named_weights_file(weights: torchvision.models.WeightsEnum) -> WeightsFile:
    """Where a torchvision weights entry's file comes from (tests point this at a local server)."""
    return torchvision_file(weights.url)


def _tensor_sha256(tensors: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load_torchvision(rest: str, weights_dir: Path | None, progress: bool) -> ReadyModel:
    weights = torchvision_weights(rest)
    builder = rest.partition(".")[0]
    classifier = build_classifier(f"{TORCHVISION_PREFIX}{builder}", 1000)  # before any download
    t = weights.transforms()
    if tuple(t.mean) != IMAGENET_MEAN or tuple(t.std) != IMAGENET_STD:
        raise UnknownModelError(f"torchvision:{rest} normalises with other statistics than ImageNet's")
    directory = weights_dir or Path(torch.hub.get_dir()) / "checkpoints"
    path = ensure_weights(named_weights_file(weights), directory, progress=progress)
    tensors = state_dict_of(read_weights_file(path), path)
    try:
        classifier.net.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit torchvision:{builder}: {err}") from err
    wnids, names = imagenet_wnids()
    rest = f"{builder}.{weights.name}"  # DEFAULT named by the weights it stands for
    return ReadyModel(
        classifier,
        wnids,
        f"torchvision:{rest}",
        sha256_file(path),
        names,
        published_transforms(f"torchvision:{rest}"),
    )


def _load_timm(rest: str, weights: Path | None, trust: bool) -> ReadyModel:
    timm = import_timm()
    try:
        if weights is None:  # timm fetches the published file (or reads its offline cache)
            net = timm.create_model(rest, pretrained=True)
        else:  # a local file is read by saliqa, weights-only unless the user opts in
            net = timm.create_model(rest, pretrained=False)
            tensors = state_dict_of(read_weights_file(weights, trust=trust, opt_in=TRUST_MODEL), weights)
            net.load_state_dict(tensors, strict=True)
    except (RuntimeError, OSError) as err:
        where = f"the file {weights}" if weights else "the Hugging Face hub (or its offline cache)"
        raise CheckpointError(f"timm:{rest}: could not load its weights from {where}: {err}") from err
    n_classes = int(net.num_classes)
    if n_classes != 1000:
        raise UnknownModelError(
            f"timm:{rest} has {n_classes} outputs: saliqa names ImageNet-1k's 1000; save its state dict and "
            f"give it as model.checkpoint with model.arch and model.classes"
        )
    arch = f"timm:{rest}"
    classifier = build_classifier(arch, n_classes)
    tensors = {k: v.detach().clone() for k, v in net.state_dict().items()}
    classifier.net.load_state_dict(tensors, strict=True)
    digest = sha256_file(weights) if weights is not None else _tensor_sha256(tensors)
    wnids, names = imagenet_wnids()
    return ReadyModel(classifier, wnids, arch, digest, names, published_transforms(arch))


def _class_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"model.classes: cannot read {path}: {err}") from err
    classes = [line.strip() for line in lines if line.strip()]
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if not classes or repeated:
        detail = f"repeated: {', '.join(repeated)}" if repeated else "it is empty"
        raise CheckpointError(f"model.classes: {path} must list one distinct class per line ({detail})")
    return classes


def _load_checkpoint(path: Path, arch: str | None, classes: Path | None, trust: bool) -> ReadyModel:
    obj = read_weights_file(path, trust=trust, opt_in=TRUST_MODEL)
    digest = sha256_file(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if arch is not None:
            raise CheckpointError(f"{path} is a saliqa checkpoint: it names its own arch and classes")
        classifier, state = classifier_from_checkpoint(obj)
        return ReadyModel(classifier, list(state["classes"]), f"checkpoint {path}", digest)
    if arch is None or classes is None:
        raise CheckpointError(
            f"{path} is not a saliqa checkpoint: give model.arch and model.classes (a file of class names, one "
            f"per line in output order) to evaluate a plain state dict"
        )
    names = _class_file(classes)
    classifier = build_classifier(arch, len(names))
    tensors = state_dict_of(obj, path)
    try:
        classifier.net.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit {arch} with {len(names)} classes: {err}") from err
    return ReadyModel(classifier, names, f"{arch} from {path}", digest)


@dataclass(frozen=True)
class ModelSource:
    """What a ``[model]`` section names: published weights (``name``, a timm ``weights`` file), or a
    ``checkpoint`` (with ``arch`` and ``classes`` for a plain state dict); ``trust`` opts into full pickles."""

    name: str | None = None
    checkpoint: Path | None = None
    arch: str | None = None
    classes: Path | None = None
    weights: Path | None = None
    trust: bool = False

    def check(self) -> None:
        """Fail now, before any work and without the network, when the model cannot be loaded: the name is
        known, its architecture builds, a local weights file is there and readable."""
        if self.name is not None:
            published_transforms(self.name)  # knows the name (and that timm is there, for timm:)
            kind, rest = _split_name(self.name)
            builder = rest.partition(".")[0]
            build_classifier(f"{TORCHVISION_PREFIX}{builder}" if kind == "torchvision" else self.name, 1000)
            if self.weights is not None:
                read = read_weights_file(self.weights, trust=self.trust, opt_in=TRUST_MODEL)
                state_dict_of(read, self.weights)
        elif self.checkpoint is not None:
            _load_checkpoint(Path(self.checkpoint), self.arch, self.classes, self.trust)

    def load(self, *, weights_dir: Path | None = None, progress: bool = True) -> ReadyModel:
        """The classifier, in eval mode on the CPU."""
        if self.name is not None:
            kind, rest = _split_name(self.name)
            ready = (
                _load_timm(rest, self.weights, self.trust)
                if kind == "timm"
                else _load_torchvision(rest, weights_dir, progress)
            )
        elif self.checkpoint is not None:
            ready = _load_checkpoint(Path(self.checkpoint), self.arch, self.classes, self.trust)
        else:
            raise CheckpointError("a model needs a name or a checkpoint")
        ready.classifier.eval()
        return ready
