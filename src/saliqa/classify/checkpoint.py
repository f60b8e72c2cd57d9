"""saliqa's own training checkpoints: written atomically, read back with ``weights_only=True`` only.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint is data, and a pickle that needs
arbitrary code to load is refused rather than run. Checkpoints are therefore written from plain Python values
and tensors only, and checked for that before they are written.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saliqa.classify.models import Classifier, build_classifier, read_weights_file
from saliqa.classify.models import short_list as _short
from saliqa.errors import CheckpointError
from saliqa.io.atomic import atomic_path

FORMAT = "saliqa-classifier"
VERSION = 1
_RESERVED = ("format", "version", "arch", "classes", "state_dict")


_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def check_plain(value: Any, where: str) -> None:
    """Refuse what ``weights_only`` loading could not read back (numpy scalars, paths, defaultdicts, objects).

    Exact types on purpose: ``numpy.float64`` is a ``float`` subclass yet pickles as a numpy object.
    """
    kind = type(value)
    if kind in _SCALARS or isinstance(value, (Tensor, torch.dtype, torch.Size, torch.device)):
        return
    if kind in (list, tuple, set):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            check_plain(key, f"{where} key {key!r}")
            check_plain(item, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}; checkpoints hold only tensors and plain Python "
        f"values (None, bool, int, float, str, list, tuple, dict) so they load with weights_only=True; "
        f"convert it first (e.g. float(x), x.item(), str(path))"
    )


def save_checkpoint(
    path: str | Path, classifier: Classifier, *, classes: list[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write a classifier checkpoint atomically: format tag, arch, classes, state dict and ``extra``."""
    extra = dict(extra or {})
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise CheckpointError(f"extra may not set the reserved keys {clash}")
    if len(classes) != classifier.n_classes:
        raise CheckpointError(f"{len(classes)} class names for a {classifier.n_classes}-class classifier")
    check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": classifier.arch,
        "classes": [str(c) for c in classes],
        "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        **extra,
    }
    path = Path(path)
    buffer = io.BytesIO()  # serialised in memory, so a failed write is a plain OSError, not torch's
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def _describe(obj: Any) -> str:
    """What a non-saliqa weights file most likely is, so the error can say so."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a dict"
    inner = obj.get("model") if isinstance(obj.get("model"), Mapping) else obj.get("state_dict", obj)
    keys = [str(k) for k in inner] if isinstance(inner, Mapping) else []
    if any(k.startswith("body.") for k in keys) and any(k.startswith("head.") for k in keys):
        wrapped = "a fastai-wrapped " if inner is not obj else "a "
        return f"{wrapped}PaQ-2-PiQ quality-model state dict (quality weights, not a trained classifier)"
    if "conv1.weight" in keys and any(k.startswith("fc.") for k in keys):
        return "a torchvision ResNet state dict (usable as initial weights, not as a trained classifier)"
    return f"a dict with keys {_short(keys or [str(k) for k in obj])}"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a saliqa classifier checkpoint (always ``weights_only=True``)."""
    obj = read_weights_file(path, map_location=device)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a saliqa classifier checkpoint: it is {_describe(obj)}")
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {obj.get('version')!r}; this saliqa reads up to {VERSION}, "
            f"upgrade saliqa"
        )
    classes = obj.get("classes")
    if not isinstance(obj.get("arch"), str) or not isinstance(classes, list) or not classes:
        raise CheckpointError(f"{path} lacks its architecture name or class list")
    if not isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} lacks its state dict")
    return dict(obj)


def classifier_from_checkpoint(
    checkpoint: str | Path | Mapping[str, Any], device: str | torch.device = "cpu"
) -> tuple[Classifier, dict[str, Any]]:
    """The trained classifier (eval mode, on ``device``) and the checkpoint's contents."""
    ckpt = dict(checkpoint) if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint, device)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"not a saliqa classifier checkpoint: it is {_describe(ckpt)}")
    classifier = build_classifier(ckpt["arch"], len(ckpt["classes"]))
    try:
        classifier.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint state dict does not fit {ckpt['arch']}: {err}") from err
    return classifier.to(device).eval(), ckpt
