"""Attribution speed against the reference libraries and a forward pass, and explain's maps per method.

1. Grad-CAM on torchvision ResNet-18 (random weights), a batch of ``--batch`` 224 x 224 images: images per
   second of saliqa, of pytorch-grad-cam 1.5.7 and of a forward pass alone (no gradients), same run.
   Targets: saliqa >= 3x pytorch-grad-cam and >= 0.6x the forward pass.
2. The gradient methods against captum 0.9 on the same batch (saliency; SmoothGrad and integrated
   gradients with their step counts below; LIME with the sample count below): images per second and ratio.
3. Explain's per-crop work (the classifier's map, the quality model's map, Sobel edges, pooling onto the
   grid) per method on ``--images`` photos x 9 conditions: image-conditions per second.

Each number is the best of ``--repeats`` timed calls after one warm-up call.

    python benchmarks/bench_explain.py --batch 16 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from headline import headline, interleaved, spread
from headline import rate as median_rate

from saliqa.classify.models import build_classifier
from saliqa.explain import attribute
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.explanation import CropMaps, ExplainSettings
from saliqa.pipeline.plan import CropPlan, conditions

SMOOTHGRAD_SAMPLES, IG_STEPS, LIME_SAMPLES = 8, 16, 64


def rate(call: Callable[[], object], items: int, repeats: int, device: torch.device) -> float:
    """Items per second: the median of ``repeats`` calls after a warm-up."""
    call()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return items / statistics.median(seconds)


def photos(n: int, size: int = 224) -> torch.Tensor:
    """``n`` crops of the colour photos bundled with scikit-image, as (n, 3, size, size) in [0, 1]."""
    import skimage.data

    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    crops = []
    for i in range(n):
        photo = torch.from_numpy(sources[i % len(sources)]).permute(2, 0, 1).float() / 255
        top, left = (7 * i) % (photo.shape[1] - size), (11 * i) % (photo.shape[2] - size)
        crops.append(photo[:, top : top + size, left : left + size])
    return torch.stack(crops)


def gradcam_against_references(batch: int, repeats: int, device: torch.device) -> float:
    """Grad-CAM of saliqa against pytorch-grad-cam and a plain forward: same model, batch and threads,
    interleaved repeats; returns saliqa's speed over pytorch-grad-cam's (medians)."""
    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    x = photos(batch).to(device)
    cam = GradCAM(model, [model.layer4[-1]])

    def forward() -> None:
        with torch.no_grad():
            model(x)

    seconds = interleaved(
        {
            "forward": forward,
            "saliqa": lambda: attribute(model, x, None, "gradcam"),
            "pytorch-grad-cam": lambda: cam(x, None),
        },
        repeats,
        lambda: torch.cuda.synchronize() if device.type == "cuda" else None,
    )
    ours, theirs = median_rate(seconds["saliqa"], batch), median_rate(seconds["pytorch-grad-cam"], batch)
    print(
        f"Grad-CAM, ResNet-18, batch {batch}, 224 x 224, {device.type} (images/s, median of {repeats} interleaved)"
    )
    for name, times in seconds.items():
        print(f"  {name:18s} {spread(times, batch, 'images/s')}")
    print(f"  saliqa: {ours / theirs:5.2f}x pytorch-grad-cam (target >= 3), "
          f"{ours / median_rate(seconds['forward'], batch):5.2f}x forward (target >= 0.6)")  # fmt: skip
    return ours / theirs


def gradients_against_captum(batch: int, repeats: int, device: torch.device) -> None:
    from captum.attr import IntegratedGradients, Lime, NoiseTunnel, Saliency

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    x = photos(batch).to(device)
    with torch.no_grad():
        targets = model(x).argmax(dim=1)
    cases = {
        "saliency": ({}, lambda: Saliency(model).attribute(x.clone().requires_grad_(), target=targets).amax(1)),
        f"smoothgrad (n={SMOOTHGRAD_SAMPLES})": (
            {"n_samples": SMOOTHGRAD_SAMPLES},
            lambda: NoiseTunnel(Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES, stdevs=0.15, target=targets,
                nt_samples_batch_size=max(1, 64 // batch),
            ),
        ),
        f"integrated_gradients (steps={IG_STEPS})": (
            {"n_steps": IG_STEPS},
            lambda: IntegratedGradients(model).attribute(x, target=targets, n_steps=IG_STEPS, internal_batch_size=64),
        ),
    }  # fmt: skip
    print(f"\ngradient methods, ResNet-18, batch {batch}, {device.type} (images/s)")
    for name, (options, reference) in cases.items():
        method = name.split(" ")[0]
        ours = rate(lambda m=method, o=options: attribute(model, x, targets, m, **o), batch, repeats, device)
        theirs = rate(reference, batch, repeats, device)
        print(f"  {name:34s} saliqa {ours:7.2f}   captum {theirs:7.2f}   ratio {ours / theirs:5.2f}")
    few = x[:2]
    from saliqa.explain.attribution import superpixels

    masks = superpixels(few, 50)
    ours = rate(lambda: attribute(model, few, targets[:2], "lime", n_samples=LIME_SAMPLES), 2, 1, device)
    lime = Lime(model)

    def captum_lime() -> None:
        for i in range(2):  # captum's Lime explains one example at a time
            lime.attribute(few[i : i + 1], target=int(targets[i]), feature_mask=masks[i : i + 1, None],
                           n_samples=LIME_SAMPLES, perturbations_per_eval=64)  # fmt: skip

    theirs = rate(captum_lime, 2, 1, device)
    print(
        f"  {f'lime (samples={LIME_SAMPLES})':34s} saliqa {ours:7.2f}   captum {theirs:7.2f}   ratio {ours / theirs:5.2f}"
    )


def explain_work(images: int, repeats: int, device: torch.device) -> None:
    classifier = build_classifier("p2p-resnet18", 10).eval().to(device)
    for p in classifier.parameters():
        p.requires_grad_(False)
    quality = load_quality_model("piqe", device=device)
    plan = CropPlan(conditions(("brightness", "contrast", "saturate", "jpeg_compression"), (1, 2)))
    crops = (photos(images * len(plan.conditions)) * 255).round().byte()
    records = [{"set": "val", "image_id": f"img{i}", "label": "x"} for i in range(images)]
    print(f"\nexplain's per-crop work, P2P ResNet-18 + PIQE, {images} images x 9 conditions, {device.type}")
    for method in ("gradcam", "gradcam++", "layercam", "saliency", "smoothgrad", "integrated_gradients"):
        settings = ExplainSettings((method,), "prediction", 7, {}, 0, 16)
        maker = CropMaps(classifier, [str(i) for i in range(10)], quality, plan, settings)
        speed = rate(lambda m=maker: m(records, crops), len(crops), repeats, device)
        print(f"  {method:22s} {speed:8.1f} image-conditions/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=("gradcam", "captum", "explain"), default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    ratio = None
    if args.only in (None, "gradcam"):
        ratio = gradcam_against_references(args.batch, args.repeats, device)
    if args.only in (None, "captum"):
        gradients_against_captum(args.batch, args.repeats, device)
    if args.only in (None, "explain"):
        explain_work(args.images, args.repeats, device)
    if ratio is not None:
        print(headline("bench_explain", "gradcam_over_pytorch_grad_cam", ratio, ">=3", ratio >= 3))


if __name__ == "__main__":
    main()
