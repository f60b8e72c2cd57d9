"""Attribution maps for a batch: one target per image, one ``(B, H, W)`` map per image, on the images' device.

One base owns the mechanics every method shares (frozen parameters, eval mode, the target score, hooks
that are removed even when a call raises); each method is then a few lines of maths. The CAM family reads
the chosen layer's activation as a graph leaf, so the backward pass runs from the logits to that layer only,
never through the body. The gradient methods draw their noise from per-image seeds, so a map does not
depend on which other images share its batch.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saliqa.errors import AttributionError
from saliqa.seeding import derive_seed

CAM_EPS = 1e-7
"""pytorch-grad-cam's min-max denominator: ``cam / (1e-7 + max)``."""

_LAYER_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


# -- shared mechanics ----------------------------------------------------------------------------------------


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the call; both restored afterwards, whatever happens."""
    params = list(model.parameters())
    wanted = [p.requires_grad for p in params]
    was_training = model.training
    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in zip(params, wanted, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def _scores(outputs: Tensor) -> Tensor:
    """Model outputs as ``(B, K)``: a single-output model's ``(B,)`` becomes one column."""
    if not isinstance(outputs, Tensor):
        raise AttributionError(
            f"the model returned {type(outputs).__name__}; attribution needs a tensor of scores (B,) or (B, K)"
        )
    if outputs.ndim == 1:
        return outputs[:, None]
    if outputs.ndim != 2:
        raise AttributionError(f"the model returned shape {tuple(outputs.shape)}; expected (B,) or (B, K)")
    return outputs


def check_targets(targets: Sequence[int] | Tensor | None, batch: int, device: torch.device) -> Tensor | None:
    """One class index per image, as a long tensor; ``None`` stays ``None`` (the predicted class)."""
    if targets is None:
        return None
    t = torch.as_tensor(targets, device=device)
    if t.ndim == 0:
        raise AttributionError(f"targets must hold one class index per image ({batch}), got a single value")
    if t.ndim != 1 or t.numel() != batch:
        raise AttributionError(
            f"targets must hold one class index per image: got {t.numel()} for a batch of {batch}"
        )
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise AttributionError("targets must be integer class indices")
    return t.long()


def pick(scores: Tensor, targets: Tensor | None) -> Tensor:
    """Each image's target score ``(B,)``: the given class, else the predicted one; one output: that output."""
    scores = _scores(scores)
    if scores.shape[1] == 1:
        if targets is not None and bool((targets != 0).any()):
            raise AttributionError("the model has a single output; targets must be None or 0")
        return scores[:, 0]
    if targets is None:
        targets = scores.detach().argmax(dim=1)
    if bool(((targets < 0) | (targets >= scores.shape[1])).any()):
        raise AttributionError(f"targets must lie in [0, {scores.shape[1] - 1}]")
    return scores.gather(1, targets[:, None])[:, 0]


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise AttributionError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise AttributionError(f"images must be floating point (what the model takes), got {images.dtype}")
    if images.shape[0] == 0:
        raise AttributionError("images is an empty batch")


def degenerate(maps: Tensor) -> Tensor:
    """``(B,)`` True where a map carries no information: constant (e.g. all zero after ReLU) or not finite."""
    flat = maps.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    spread = flat.amax(dim=1) - flat.amin(dim=1)
    return ~finite | (spread <= 0)


# -- layers ----------------------------------------------------------------------------------------------------


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """A module of ``model`` by object or by dotted name; a name may omit a wrapper's prefix (``"layer4"``)."""
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise AttributionError(f"layer {type(layer).__name__} is not a module of the model")
    if layer in named and layer:
        return layer, named[layer]
    matches = [name for name in named if name.endswith("." + layer)]
    if len(matches) == 1:
        return matches[0], named[matches[0]]
    if matches:
        raise AttributionError(f"layer {layer!r} is ambiguous: {', '.join(matches)}")
    blocks = [
        name for name, m in named.items() if name and any(isinstance(c, nn.Conv2d) for c in m.modules())
    ]
    raise AttributionError(
        f"no layer {layer!r} in the model; its convolutional blocks: {', '.join(blocks[-6:])}"
    )


def default_layer(model: nn.Module, images: Tensor) -> str:
    """The last convolutional block: the last module to finish with a spatial ``(B, C, h, w)`` output.

    Found once per model and input size by a one-image dry run; for a ResNet this is ``layer4`` (or the
    ``Sequential`` that ends with it, which gives the same tensor).
    """
    key = tuple(images.shape[1:])
    cached = _LAYER_CACHE.setdefault(model, {})
    if key in cached:
        return cached[key]
    finished: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                finished.append(name)

        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise AttributionError(
            "found no convolutional block with a spatial output; name one with layer='...'"
        )
    cached[key] = finished[-1]
    return finished[-1]


@contextmanager
def leaf_activation(module: nn.Module) -> Iterator[list[Tensor]]:
    """Make ``module``'s output a graph leaf that requires grad, and hand it over; the hook always goes."""
    seen: list[Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> Tensor:
        if not isinstance(out, Tensor):
            raise AttributionError(f"layer output is {type(out).__name__}, not a tensor")
        leaf = out.detach().requires_grad_(True)
        seen.append(leaf)
        return leaf

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


# -- the CAM family -----------------------------------------------------------------------------------------


def _gradcam(acts: Tensor, grads: Tensor) -> Tensor:
    return (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)


def _gradcam_pp(acts: Tensor, grads: Tensor) -> Tensor:
    g2 = grads.pow(2)
    total = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g2 * grads + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    return (weights * acts).sum(dim=1)


def _layercam(acts: Tensor, grads: Tensor) -> Tensor:
    return (grads.clamp(min=0) * acts).sum(dim=1)


def _minmax(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    low = flat.amin(dim=1)[:, None, None]
    shifted = maps - low
    return shifted / (CAM_EPS + shifted.flatten(1).amax(dim=1)[:, None, None])


def cam_postprocess(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """pytorch-grad-cam's steps, batched: ReLU, min-max at layer size, bilinear to ``size``, ReLU, min-max.

    An all-zero map after the ReLU stays all zero (see :func:`degenerate`).
    """
    cam = _minmax(raw.clamp(min=0))
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(cam.clamp(min=0))


def _cam(combine: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
    def method(
        model: nn.Module, images: Tensor, targets: Tensor | None, layer: nn.Module | str | None
    ) -> Tensor:
        name = default_layer(model, images) if layer is None else layer
        _, module = resolve_layer(model, name)
        with leaf_activation(module) as seen, torch.enable_grad():
            scores = pick(model(images), targets)
            if not seen:
                raise AttributionError("the chosen layer did not run in the forward pass")
            acts = seen[-1]
            (grads,) = torch.autograd.grad(scores.sum(), acts)
        if acts.ndim != 4:
            raise AttributionError(f"layer output has shape {tuple(acts.shape)}; CAM needs (B, C, h, w)")
        with torch.no_grad():
            return cam_postprocess(combine(acts.detach(), grads), tuple(images.shape[2:]))

    return method


# -- gradients at the input ---------------------------------------------------------------------------------


def input_gradients(model: nn.Module, images: Tensor, targets: Tensor | None) -> Tensor:
    """d(target score)/d(input), ``(B, C, H, W)``; ``targets`` must already be resolved when images vary."""
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = pick(model(x), targets)
        (grads,) = torch.autograd.grad(scores.sum(), x)
    return grads


def _predicted(model: nn.Module, images: Tensor, targets: Tensor | None) -> Tensor | None:
    """The predicted classes of the clean images when no target is given (noisy or scaled copies keep them)."""
    if targets is not None:
        return targets
    with torch.no_grad():
        scores = _scores(model(images))
    return None if scores.shape[1] == 1 else scores.argmax(dim=1)


def _saliency(model: nn.Module, images: Tensor, targets: Tensor | None, layer: Any) -> Tensor:
    """Simonyan et al.: |gradient|, the maximum over channels."""
    return input_gradients(model, images, targets).abs().amax(dim=1)


def image_seeds(batch: int, seed: int, seeds: Sequence[int] | None) -> list[int]:
    """Per-image seeds: given ones (e.g. derived from image ids), else derived from ``seed`` and position."""
    if seeds is None:
        return [derive_seed(seed, "image", i) for i in range(batch)]
    if len(seeds) != batch:
        raise AttributionError(f"seeds must hold one seed per image: got {len(seeds)} for a batch of {batch}")
    return [int(s) for s in seeds]


def smoothgrad_noise(images: Tensor, n_samples: int, stdev: float, seeds: Sequence[int]) -> Tensor:
    """Gaussian noise ``(B, n_samples, C, H, W)``, each image's from its own seed (float64 draws, CPU)."""
    shape = (n_samples, *images.shape[1:])
    noise = [
        torch.from_numpy(np.random.default_rng(s).standard_normal(shape, dtype=np.float32)) for s in seeds
    ]
    return (torch.stack(noise) * stdev).to(images.device, images.dtype)


def sample_chunks(
    total: int, batch: int, internal_batch_size: int, targets: Tensor | None
) -> Iterator[tuple[slice, int, Tensor | None]]:
    """Samples (noisy copies, integration steps, perturbations) of a batch in chunks of about
    ``internal_batch_size`` images: each chunk's slice, its size and every image's target repeated for it."""
    per_chunk = max(1, internal_batch_size // batch)
    for start in range(0, total, per_chunk):
        part = slice(start, min(start + per_chunk, total))
        steps = part.stop - part.start
        yield part, steps, None if targets is None else targets.repeat_interleave(steps)


def _smoothgrad(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None,
    layer: Any,
    *,
    n_samples: int = 25,
    stdev: float = 0.15,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    internal_batch_size: int = 64,
) -> Tensor:
    """Smilkov et al.: mean of |gradient| over noisy copies (sigma = 0.15 of the [0, 1] range), max over channels."""
    if n_samples < 1 or stdev < 0:
        raise AttributionError(f"smoothgrad needs n_samples >= 1 and stdev >= 0, got {n_samples}, {stdev}")
    batch = images.shape[0]
    targets = _predicted(model, images, targets)
    noise = smoothgrad_noise(images, n_samples, stdev, image_seeds(batch, seed, seeds))
    total = torch.zeros_like(images)
    for part, steps, chunk_targets in sample_chunks(n_samples, batch, internal_batch_size, targets):
        noisy = (images[:, None] + noise[:, part]).flatten(0, 1)
        grads = input_gradients(model, noisy, chunk_targets).abs()
        total += grads.view(batch, steps, *images.shape[1:]).sum(dim=1)
    return (total / n_samples).amax(dim=1)


def _integrated_gradients(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None,
    layer: Any,
    *,
    n_steps: int = 50,
    baseline: float | Tensor = 0.0,
    internal_batch_size: int = 64,
) -> Tensor:
    """Sundararajan et al. with Gauss-Legendre nodes (captum's default); summed over channels, signed.

    The map sums to f(images) - f(baseline) up to the quadrature error; the default baseline is black,
    natural for saliqa's classifiers, which take [0, 1] images and normalise inside.
    """
    if n_steps < 1:
        raise AttributionError(f"integrated_gradients needs n_steps >= 1, got {n_steps}")
    batch = images.shape[0]
    targets = _predicted(model, images, targets)
    base = torch.as_tensor(baseline, device=images.device, dtype=images.dtype).expand_as(images)
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas = torch.tensor(0.5 * (nodes + 1), dtype=images.dtype, device=images.device)
    step_weights = torch.tensor(0.5 * weights, dtype=images.dtype, device=images.device)
    delta = images - base
    total = torch.zeros_like(images)
    for part, steps, chunk_targets in sample_chunks(n_steps, batch, internal_batch_size, targets):
        a = alphas[part].view(1, -1, 1, 1, 1)
        scaled = (base[:, None] + a * delta[:, None]).flatten(0, 1)
        grads = input_gradients(model, scaled, chunk_targets).view(batch, steps, *images.shape[1:])
        total += (grads * step_weights[part].view(1, -1, 1, 1, 1)).sum(dim=1)
    return (total * delta).sum(dim=1)


# -- LIME ------------------------------------------------------------------------------------------------------


def superpixels(images: Tensor, n_segments: int) -> Tensor:
    """SLIC superpixels per image, ``(B, H, W)`` long labels from 0 (deterministic, CPU)."""
    from skimage.segmentation import slic

    arrays = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    labels = [slic(a, n_segments=n_segments, compactness=10, start_label=0, channel_axis=-1) for a in arrays]
    return torch.from_numpy(np.stack(labels).astype(np.int64)).to(images.device)


def _lime(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None,
    layer: Any,
    *,
    n_samples: int = 256,
    n_segments: int = 50,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    internal_batch_size: int = 64,
) -> Tensor:
    """Ribeiro et al. on SLIC superpixels: seeded on/off samples, hidden segments set to their mean colour,
    a kernel-weighted ridge fit of the target score; each pixel gets its segment's coefficient.

    As the LIME release: cosine distance to the full image, kernel sqrt(exp(-d^2 / width^2)), width 0.25,
    ridge alpha 1 with an intercept, the first sample the image itself.
    """
    if n_samples < 2 or n_segments < 1:
        raise AttributionError(
            f"lime needs n_samples >= 2 and n_segments >= 1, got {n_samples}, {n_segments}"
        )
    batch = images.shape[0]
    targets = _predicted(model, images, targets)
    labels = superpixels(images, n_segments)
    n_seg = int(labels.max()) + 1
    onehot = F.one_hot(labels, n_seg).permute(0, 3, 1, 2).to(images.dtype)  # (B, S, H, W)
    area = onehot.sum(dim=(2, 3)).clamp(min=1)
    means = torch.einsum("bshw,bchw->bsc", onehot, images) / area[..., None]
    fudged = torch.einsum("bshw,bsc->bchw", onehot, means)
    present = onehot.sum(dim=(2, 3)) > 0  # segments SLIC may skip
    masks = []
    for s in image_seeds(batch, seed, seeds):
        z = np.random.default_rng(s).integers(0, 2, size=(n_samples, n_seg)).astype(np.float32)
        z[0] = 1.0
        masks.append(torch.from_numpy(z))
    z = torch.stack(masks).to(images.device, images.dtype) * present[:, None]  # (B, N, S)
    outputs = torch.empty(batch, n_samples, device=images.device, dtype=images.dtype)
    with torch.no_grad():
        for part, steps, chunk_targets in sample_chunks(n_samples, batch, internal_batch_size, targets):
            keep = torch.einsum("bns,bshw->bnhw", z[:, part], onehot)[:, :, None]
            mixed = (keep * images[:, None] + (1 - keep) * fudged[:, None]).flatten(0, 1)
            outputs[:, part] = pick(model(mixed), chunk_targets).view(batch, steps)
        x = z.double()
        ones = present.double()[:, None]
        cosine = (x * ones).sum(-1) / (x.norm(dim=-1) * ones.norm(dim=-1)).clamp(min=1e-12)
        weights = torch.sqrt(torch.exp(-((1 - cosine) ** 2) / kernel_width**2))
        coef = _weighted_ridge(x, outputs.double(), weights, alpha)
    return torch.einsum("bs,bshw->bhw", coef.to(images.dtype), onehot)


def _weighted_ridge(x: Tensor, y: Tensor, w: Tensor, alpha: float) -> Tensor:
    """Coefficients of a weighted ridge fit with an unpenalised intercept, batched: ``(B, S)``."""
    wsum = w.sum(dim=1, keepdim=True)
    x_mean = (w[..., None] * x).sum(dim=1, keepdim=True) / wsum[..., None]
    y_mean = (w * y).sum(dim=1, keepdim=True) / wsum
    xc, yc = x - x_mean, y - y_mean
    gram = torch.einsum("bn,bns,bnt->bst", w, xc, xc)
    gram = gram + alpha * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    rhs = torch.einsum("bn,bns,bn->bs", w, xc, yc)
    return torch.linalg.solve(gram, rhs)


# -- the public entry point ---------------------------------------------------------------------------------

_METHODS: dict[str, Callable[..., Tensor]] = {
    "gradcam": _cam(_gradcam),
    "gradcam++": _cam(_gradcam_pp),
    "layercam": _cam(_layercam),
    "saliency": _saliency,
    "smoothgrad": _smoothgrad,
    "integrated_gradients": _integrated_gradients,
    "lime": _lime,
}
CAM_METHODS = ("gradcam", "gradcam++", "layercam")
"""Methods that read a layer (``layer=``) and give maps min-max normalised to [0, 1]."""


def attribution_methods() -> list[str]:
    """The names :func:`attribute` takes."""
    return list(_METHODS)


def attribute(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[int] | Tensor | None = None,
    method: str = "gradcam",
    layer: nn.Module | str | None = None,
    **options: Any,
) -> Tensor:
    """Attribution maps ``(B, H, W)`` float32 on the images' device, one per image and target.

    ``images`` are what the model takes; ``targets`` one class index per image, ``None`` for the predicted
    class (a single-output model, such as a quality model, is attributed to that output); ``layer`` (CAM
    methods) a module or dotted name, default the last convolutional block. Options per method:
    smoothgrad ``n_samples, stdev, seed, seeds``; integrated_gradients ``n_steps, baseline``; lime
    ``n_samples, n_segments, kernel_width, alpha, seed, seeds``; all but the CAMs ``internal_batch_size``.
    The model's parameters and train/eval mode are as before when the call returns or raises.
    """
    if method not in _METHODS:
        raise AttributionError(f"unknown attribution method {method!r}; choose one of {', '.join(_METHODS)}")
    _check_images(images)
    if layer is not None and method not in CAM_METHODS:
        raise AttributionError(f"{method} attributes the input; layer= applies to {', '.join(CAM_METHODS)}")
    known = method_options(method)
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"it takes {', '.join(known)}" if known else "it takes none"
        raise AttributionError(f"{method} has no option {', '.join(unknown)}; {takes}")
    resolved = check_targets(targets, images.shape[0], images.device)
    if method in CAM_METHODS:  # channels-last: what oneDNN and cuDNN convolve fastest (a ResNet-18's forward
        # pass about 1.2x on a CPU); CAMs stay within 1e-6 of contiguous input, while gradients at the input
        # summed over many steps (integrated gradients) drift to 1e-4 of their maximum, so those stay as given
        images = images.contiguous(memory_format=torch.channels_last)
    with frozen(model):
        maps = _METHODS[method](model, images, resolved, layer, **options)
    return maps.detach().to(torch.float32).contiguous()


def method_options(method: str) -> dict[str, Any]:
    """A method's options and their defaults."""
    params = inspect.signature(_METHODS[method]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
