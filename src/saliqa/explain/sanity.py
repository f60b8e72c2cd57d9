"""The cascading model-parameter randomisation test (Adebayo et al., "Sanity checks for saliency maps", 2018).

From the logits down, each block of the model is re-initialised in turn (cumulatively) with its own
``reset_parameters``, seeded; after each step the same images are attributed again, to the trained model's
targets, and compared with the trained model's maps. A method whose maps depend on the learned weights
falls towards zero similarity; one that stays high is showing the image, not the model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from saliqa.explain.attribution import CAM_METHODS, attribute, default_layer, resolve_layer
from saliqa.explain.similarity import map_similarity
from saliqa.seeding import derive_seed

SANITY_METRICS = ("spearman", "spearman_abs", "ssim")

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def randomisation_steps(model: nn.Module) -> list[str]:
    """The model's blocks from the logits down (``fc, layer4.1, layer4.0, ..., bn1, conv1`` for a ResNet).

    A block is an item of a container (``nn.Sequential`` and the like, whose container items are opened in
    turn) or a module with parameters of its own; a module with neither (a wrapper) is opened.
    """
    steps: list[str] = []

    def walk(module: nn.Module, prefix: str, in_container: bool) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, _CONTAINERS):
                walk(child, f"{full}.", True)
            elif not any(True for _ in child.parameters()):
                continue
            elif in_container or any(True for _ in child.parameters(recurse=False)):
                steps.append(full)
            else:
                walk(child, f"{full}.", False)

    walk(model, "", False)
    return steps[::-1]


def reset_block(block: nn.Module, seed: int, name: str) -> None:
    """Re-initialise every module of ``block`` that can (BatchNorm: weight 1, bias 0, running stats reset),
    from a seed of its own; the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "sanity", name) % 2**63)
        for module in block.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def cascading_randomisation(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[int] | Tensor,
    method: str,
    *,
    seed: int = 0,
    layer: str | None = None,
    **options: Any,
) -> Iterator[tuple[int, str, Tensor]]:
    """``(0, "trained", maps)``, then ``(k, block, maps)`` after the k-th block from the top is randomised.

    The model itself is left untouched (a copy is randomised); CAM methods keep reading the same layer.
    """
    if method in CAM_METHODS and layer is None:
        layer = default_layer(model, images)
    where = {"layer": layer} if method in CAM_METHODS else {}
    yield 0, "trained", attribute(model, images, targets, method, **where, **options)
    randomised = copy.deepcopy(model)
    for k, name in enumerate(randomisation_steps(randomised), start=1):
        _, block = resolve_layer(randomised, name)
        reset_block(block, seed, name)
        yield k, name, attribute(randomised, images, targets, method, **where, **options)


def _unit(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), np.nan)


def ssim_maps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (data range 1, 7 x 7 windows) of each pair of maps, each min-max scaled to [0, 1] first; a
    constant map gives NaN."""
    from skimage.metrics import structural_similarity

    ua, ub = _unit(np.asarray(a, np.float64)), _unit(np.asarray(b, np.float64))
    out = np.full(len(ua), np.nan)
    for i, (x, y) in enumerate(zip(ua, ub, strict=True)):
        if np.isfinite(x).all() and np.isfinite(y).all():
            out[i] = structural_similarity(x, y, data_range=1.0)
    return out


def sanity_scores(trained: Tensor, randomised: Tensor) -> dict[str, np.ndarray]:
    """Per image: Spearman of the maps, Spearman of their absolute values, and SSIM."""
    a, b = trained.detach().cpu().double().numpy(), randomised.detach().cpu().double().numpy()
    return {
        "spearman": np.atleast_1d(map_similarity(a, b, "spearman")),
        "spearman_abs": np.atleast_1d(map_similarity(np.abs(a), np.abs(b), "spearman")),
        "ssim": ssim_maps(a, b),
    }
