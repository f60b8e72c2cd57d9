"""Classifiers by name (PaQ-2-PiQ-style ResNet-18, torchvision ResNets, optionally timm) and their initial weights.

Every classifier takes the library's image convention, float ``(B, 3, H, W)`` RGB in [0, 1], and normalises
inside, so callers never need to know which mean/std a network was trained with. Random initialisation is
derived from the run seed and the architecture name, and leaves the global RNG untouched, so building a model
never shifts any other random stream. Weight files are read with ``weights_only=True`` only: a pickle that
needs arbitrary code to load is refused, never run.
"""

from __future__ import annotations

import importlib
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from saliqa.classify.p2p import P2PNet
from saliqa.errors import CheckpointError, DownloadError, UnknownModelError
from saliqa.io.download import WeightsFile, ensure_weights
from saliqa.io.hashing import sha256_file
from saliqa.seeding import derive_seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
_BUILTIN = ("p2p-resnet18", "resnet18", "resnet50")
_SHOW = 8


def _channels(values: tuple[float, ...]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


class Classifier(nn.Module):
    """A network behind mean/std normalisation; ``state_dict`` holds only the network (``net.*``)."""

    def __init__(
        self,
        arch: str,
        net: nn.Module,
        n_classes: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.net = net
        self.n_classes = n_classes
        # Non-persistent: the state dict holds only ``net.*``, so checkpoints stay plain network weights.
        self.register_buffer("mean", _channels(mean), persistent=False)
        self.register_buffer("std", _channels(std), persistent=False)

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, n_classes)`` for images in [0, 1]."""
        return self.net(self.normalise(x))


def classifier_names() -> list[str]:
    """The built-in architectures; any ``timm:<name>`` works too when timm is installed."""
    return list(_BUILTIN)


def import_timm():
    """The optional timm package, or an error saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError as err:
        raise UnknownModelError(
            "timm classifiers need the optional package timm: pip install timm (or pip install 'saliqa[timm]')"
        ) from err


def _torchvision_resnet(name: str, n_classes: int) -> nn.Module:
    net = getattr(torchvision.models, name)()
    net.fc = nn.Linear(net.fc.in_features, n_classes)
    return net


def _build(arch: str, n_classes: int) -> Classifier:
    if arch == "p2p-resnet18":
        return Classifier(arch, P2PNet(n_classes), n_classes)
    if arch in ("resnet18", "resnet50"):
        return Classifier(arch, _torchvision_resnet(arch, n_classes), n_classes)
    if arch.startswith(TORCHVISION_PREFIX):
        builder = arch[len(TORCHVISION_PREFIX) :]
        if builder not in torchvision.models.list_models(module=torchvision.models):
            raise UnknownModelError(f"torchvision has no classification model {builder!r}")
        # torchvision's builders turn these two's input transform on for their published weights
        extra = {"transform_input": True} if builder in ("inception_v3", "googlenet") else {}
        net = torchvision.models.get_model(builder, weights=None, num_classes=n_classes, **extra)
        return Classifier(arch, net, n_classes)
    if arch.startswith(TIMM_PREFIX):
        name = arch[len(TIMM_PREFIX) :]
        timm = import_timm()
        if not name or not timm.is_model(name):
            raise UnknownModelError(f"unknown timm model {name!r}; list them with timm.list_models()")
        net = timm.create_model(name, pretrained=False, num_classes=n_classes)
        cfg = dict(getattr(net, "pretrained_cfg", None) or {})
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        return Classifier(arch, net, n_classes, tuple(mean), tuple(std))
    raise UnknownModelError(
        f"unknown classifier {arch!r}; choose one of {', '.join(_BUILTIN)} or timm:<model name>"
    )


def build_classifier(arch: str, n_classes: int, *, seed: int = 0) -> Classifier:
    """A randomly initialised classifier, identical for the same ``(arch, n_classes, seed)``."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", arch))
        return _build(arch, n_classes)


def target_layer(classifier: Classifier) -> nn.Module:
    """The last convolutional block, where Grad-CAM reads activations and gradients."""
    net = classifier.net
    if isinstance(net, P2PNet):
        return net.body[7]
    if isinstance(net, torchvision.models.ResNet):
        return net.layer4
    if isinstance(net, torchvision.models.SwinTransformer):  # its blocks are channels-last: after the permute
        return net.permute
    if isinstance(getattr(net, "features", None), nn.Sequential):  # VGG, AlexNet, DenseNet, EfficientNet, ...
        return net.features[-1]
    feature_info = getattr(net, "feature_info", None)
    if feature_info:
        last = feature_info[-1]
        name = last.get("module") if isinstance(last, dict) else None
        if name:
            return net.get_submodule(name)
    raise UnknownModelError(f"no Grad-CAM target layer known for {classifier.arch!r}")


# -- initial weights ----------------------------------------------------------------------------------------


def torchvision_file(url: str) -> WeightsFile:
    """torchvision's file names carry the first hex digits of the file's sha256 (``name-<hash>.pth``)."""
    name = url.rsplit("/", 1)[-1]
    match = re.search(r"-([0-9a-f]{8,})\.", name)
    return WeightsFile(url=url, file_name=name, sha256_prefix=match.group(1) if match else None)


_RESNET18 = torchvision_file(ResNet18_Weights.IMAGENET1K_V1.url)
IMAGENET_WEIGHTS: dict[str, WeightsFile] = {
    "p2p-resnet18": _RESNET18,
    "resnet18": _RESNET18,
    "resnet50": torchvision_file(ResNet50_Weights.IMAGENET1K_V2.url),
}
"""ImageNet weights per architecture (torchvision's); tests point these at a local server."""


def short_list(keys: list[str] | set[str]) -> str:
    """Sorted keys for an error message, the first few only."""
    keys = sorted(keys)
    more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _last_words(detail: str) -> str:
    """The useful part of torch's long refusal message (``Unsupported global: GLOBAL x.y``)."""
    found = re.search(r"Unsupported (?:global: GLOBAL|operand) \S+", detail)
    return found.group(0) if found else detail[:200]


def _code_needed(detail: str) -> str | None:
    """The global a pickle would import and run, as torch's weights-only loader names it (None: no such)."""
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", detail) or re.search(
        r"reduce for unrecognized function (.+?)(?:\s+which|$)", detail
    )
    return found.group(1) if found else None


TRUST_PRETRAINED = (
    "only for a file from a source you trust, allow the full unpickler with train.trust_checkpoint = true "
    "(saliqa run --trust-checkpoint)"
)
"""How to opt in, for initial weights (the one place where saliqa offers the full unpickler)."""


def read_weights_file(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    trust: bool = False,
    opt_in: str | None = None,
) -> Any:
    """Read a torch weights file with ``weights_only=True``; anything else becomes :class:`CheckpointError`.

    ``trust=True`` is the user's explicit opt-in for a full pickle they trust: unpickling it runs whatever
    code it names, so saliqa never does so by default. ``opt_in`` says how to give it, where there is a way.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the error below says it better
            warnings.simplefilter("ignore")
            if trust:  # the user's explicit opt-in, for a file they trust (train.trust_checkpoint)
                return torch.load(path, map_location=map_location, weights_only=False)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = " ".join(str(err).split())
        needed = _code_needed(detail)
        if needed is not None:
            alternative = f", or, {opt_in}" if opt_in else ""
            raise CheckpointError(
                f"saliqa refuses {path}: unpickling it would run code ({needed}), and a file from an untrusted "
                f"source can do anything that code can. saliqa loads weights-only files (tensors and plain "
                f"values): re-save the state dict with torch.save(model.state_dict(), path){alternative}"
            ) from err
        raise CheckpointError(
            f"{path} cannot be read as a torch weights file ({_last_words(detail)}: a plain pickle.dump, or a "
            f"damaged file?); re-save the state dict with torch.save(model.state_dict(), path)"
        ) from err
    except Exception as err:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(f"{path} cannot be read as a torch weights file: {err}") from err


def state_dict_of(obj: Any, source: str | Path = "weights") -> dict[str, Tensor]:
    """The tensors of a plain state dict, a ``{"state_dict": ...}``/``{"model": ...}`` wrapper, a
    DataParallel (``module.``-prefixed) dict, or (from a trusted full pickle) a whole module."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source} does not hold a state dict (got {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if len(tensors) != len(obj):
        other = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
        raise CheckpointError(f"{source} is not a state dict: non-tensor entries {short_list(other)}")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


_P2P_BODY = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def _map_for_p2p(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """torchvision ResNet keys -> P2PNet body keys; a PaQ-2-PiQ file's ``body.*`` is taken as is.

    Classifier heads (``fc.*``, ``head.*``) are dropped: the new head keeps its initialisation.
    """
    mapped, unexpected = {}, set()
    for key, value in tensors.items():
        top, _, rest = key.partition(".")
        if top in ("fc", "head"):
            continue
        if top == "body":
            mapped[key] = value
        elif top in _P2P_BODY:
            mapped[f"body.{_P2P_BODY[top]}.{rest}"] = value
        else:
            unexpected.add(key)
    return mapped, unexpected


def _head_prefixes(classifier: Classifier) -> tuple[str, ...]:
    """State-dict prefixes of the classification layer, which initial weights never touch."""
    if isinstance(classifier.net, P2PNet):
        return ("head.",)
    if classifier.arch.startswith(TIMM_PREFIX):
        names = (getattr(classifier.net, "pretrained_cfg", None) or {}).get("classifier") or ()
        names = (names,) if isinstance(names, str) else tuple(names)
        return tuple(f"{name}." for name in names)
    return ("fc.",)


def load_initial_weights(classifier: Classifier, tensors: dict[str, Tensor], source: str) -> None:
    """Copy every non-head tensor into ``classifier.net``, or raise listing what does not fit."""
    heads = _head_prefixes(classifier)
    if isinstance(classifier.net, P2PNet):
        given, unexpected = _map_for_p2p(tensors)
    else:
        given = {k: v for k, v in tensors.items() if not k.startswith(heads)}
        unexpected = set()
    target = {k: v for k, v in classifier.net.state_dict().items() if not k.startswith(heads)}
    unexpected |= set(given) - set(target)
    # BatchNorm step counters are absent from older files and carry no weights.
    missing = {k for k in set(target) - set(given) if not k.endswith("num_batches_tracked")}
    shapes = [
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(target[k].shape)}"
        for k in sorted(set(given) & set(target))
        if given[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        lines = [f"{source} does not fit {classifier.arch}:"]
        if missing:
            lines.append(f"missing keys ({len(missing)}): {short_list(missing)}")
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}): {short_list(unexpected)}")
        if shapes:
            more = f" ... (+{len(shapes) - _SHOW} more)" if len(shapes) > _SHOW else ""
            lines.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:_SHOW])}{more}")
        raise CheckpointError("\n  ".join(lines))
    with torch.no_grad():
        for key, value in given.items():
            target[key].copy_(value)


def _imagenet_file(arch: str, weights_dir: str | Path | None, progress: bool) -> Path:
    if arch.startswith(TIMM_PREFIX):
        raise CheckpointError(
            f"saliqa does not fetch ImageNet weights for {arch}: save "
            f"timm.create_model({arch[len(TIMM_PREFIX) :]!r}, pretrained=True).state_dict() with torch.save "
            f"and give that file as the initial weights"
        )
    weights = IMAGENET_WEIGHTS.get(arch)
    if weights is None:
        raise CheckpointError(f"no ImageNet weights known for {arch!r}")
    directory = Path(weights_dir) if weights_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    return ensure_weights(weights, directory, progress=progress)


def init_weights(
    classifier: Classifier,
    source: str | Path,
    *,
    progress: bool = True,
    weights_dir: str | Path | None = None,
    trust: bool = False,
) -> str:
    """Start ``classifier`` from ``"random"`` (as built), ``"imagenet"`` or a weights file; say which.

    ``"imagenet"`` fetches torchvision's file into ``torch.hub.get_dir()/checkpoints`` (or ``weights_dir``)
    once and reuses it offline. A file is in torchvision's ResNet state-dict format (PaQ-2-PiQ's ``body.*``
    layout also fits p2p-resnet18); the classification head always keeps its initialisation. Returns a
    description for provenance, naming the file and its sha256.
    """
    if isinstance(source, str) and source == "random":
        return "random"
    if isinstance(source, str) and source == "imagenet":
        try:
            path = _imagenet_file(classifier.arch, weights_dir, progress)
        except DownloadError as err:
            raise DownloadError(f"ImageNet weights for {classifier.arch}: {err}") from err
        label = "imagenet"
    else:
        path, label = Path(source).expanduser(), "file"
        if not path.is_file():
            raise CheckpointError(
                f"no weights file at {path}; initial weights are 'random', 'imagenet' or a path to a "
                f"torchvision-format state dict"
            )
    tensors = state_dict_of(read_weights_file(path, trust=trust, opt_in=TRUST_PRETRAINED), path)
    load_initial_weights(classifier, tensors, str(path))
    return f"{label}: {path} (sha256 {sha256_file(path)})"


def check_pretrained(arch: str, pretrained: str | Path, trust: bool = False) -> None:
    """Fail now, before any work, when ``arch`` or its initial weights cannot work; no network is used.

    Builds the architecture (cheap) and, for a file, reads it and checks every key and shape; for
    ``"imagenet"`` checks that saliqa knows the weights (they are fetched when training starts).
    """
    classifier = build_classifier(arch, 2)
    if isinstance(pretrained, str) and pretrained == "random":
        return
    if isinstance(pretrained, str) and pretrained == "imagenet":
        if arch.startswith(TIMM_PREFIX) or arch not in IMAGENET_WEIGHTS:
            _imagenet_file(arch, None, False)  # raises the explanatory error
        return
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"no weights file at {path}; initial weights are 'random', 'imagenet' or a path to a "
            f"torchvision-format state dict"
        )
    obj = read_weights_file(path, trust=trust, opt_in=TRUST_PRETRAINED)
    load_initial_weights(classifier, state_dict_of(obj, path), str(path))
