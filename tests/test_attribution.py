"""Attribution methods: parity with pytorch-grad-cam 1.5.7 and captum 0.9, completeness, and the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from saliqa.errors import AttributionError
from saliqa.explain import attribute, attribution_methods, degenerate
from saliqa.explain.attribution import default_layer, resolve_layer, smoothgrad_noise

gradcam_lib = pytest.importorskip("pytorch_grad_cam", reason="parity needs grad-cam (the test extra)")
captum_attr = pytest.importorskip("captum.attr", reason="parity needs captum (the test extra)")


def seeded_resnet(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)().eval()


def images(batch: int, size: int = 224, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return seeded_resnet("resnet18")


REFERENCE_CAMS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM"}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("method", list(REFERENCE_CAMS))
def test_cams_match_pytorch_grad_cam(arch: str, method: str) -> None:
    """Same post-processing as pytorch-grad-cam: CC >= 0.999 and |difference| <= 1e-4, explicit targets."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = seeded_resnet(arch)
    x = images(3 if arch == "resnet18" else 2)
    targets = [100, 200, 999][: len(x)]
    ours = attribute(model, x, targets, method).numpy()
    assert not degenerate(torch.from_numpy(ours)).any()
    reference = getattr(gradcam_lib, REFERENCE_CAMS[method])
    with reference(model, [model.layer4[-1]]) as cam:
        theirs = cam(x, [ClassifierOutputTarget(t) for t in targets])
    assert ours.shape == theirs.shape == (len(x), 224, 224)
    for a, b in zip(ours, theirs, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.999
    assert np.abs(ours - theirs).max() <= 1e-4


def test_an_all_zero_cam_is_all_zero_in_the_reference_too() -> None:
    """ResNet-50 seed 0, image 0, class 7: the ReLU leaves nothing; both give zeros, ours is flagged."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = seeded_resnet("resnet50"), images(2)
    ours = attribute(model, x, [7, 512], "gradcam")
    with gradcam_lib.GradCAM(model, [model.layer4[-1]]) as cam:
        theirs = cam(x, [ClassifierOutputTarget(7), ClassifierOutputTarget(512)])
    assert degenerate(ours).tolist() == [True, False]
    assert float(ours[0].abs().max()) == 0.0 and float(np.abs(theirs[0]).max()) == 0.0
    assert np.abs(ours.numpy() - theirs).max() <= 1e-4


def test_saliency_matches_captum(resnet18: nn.Module) -> None:
    """captum's |gradient| per channel, reduced by the maximum over channels (Simonyan et al.)."""
    x = images(2, 96)
    ours = attribute(resnet18, x, [3, 4], "saliency")
    theirs = (
        captum_attr.Saliency(resnet18)
        .attribute(x.clone().requires_grad_(), target=[3, 4], abs=True)
        .amax(dim=1)
    )
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())


def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NoiseTunnel(Saliency) fed our seeded noise gives our map within 1e-5 (relative to the map's maximum)."""
    x = images(2, 96)
    seeds, n, stdev = [11, 12], 6, 0.15
    noise = smoothgrad_noise(x, n, stdev, seeds)
    from captum.attr._core.noise_tunnel import NoiseTunnel

    def fixed(inp: torch.Tensor, sd: float, samples: int) -> torch.Tensor:
        assert samples == n and sd == stdev
        return inp.repeat_interleave(samples, dim=0) + noise.flatten(0, 1)

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(fixed))
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(resnet18))
    theirs = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=n, stdevs=stdev, target=[5, 6], abs=True)
    ours = attribute(resnet18, x, [5, 6], "smoothgrad", n_samples=n, stdev=stdev, seeds=seeds)
    scale = theirs.abs().max().item()
    assert (ours - theirs.amax(dim=1)).abs().max().item() <= 1e-5 * scale


def test_smoothgrad_chunks_and_batch_mates_change_nothing(resnet18: nn.Module) -> None:
    x = images(3, 64)
    full = attribute(resnet18, x, [1, 2, 3], "smoothgrad", n_samples=5, seeds=[7, 8, 9])
    alone = attribute(resnet18, x[1:2], [2], "smoothgrad", n_samples=5, seeds=[8], internal_batch_size=2)
    torch.testing.assert_close(full[1:2], alone, rtol=1e-5, atol=1e-7)
    other = attribute(resnet18, x[1:2], [2], "smoothgrad", n_samples=5, seeds=[80])
    assert not torch.allclose(alone, other)


def test_integrated_gradients_match_captum_and_are_complete(resnet18: nn.Module) -> None:
    """captum's IntegratedGradients (zero baseline, Gauss-Legendre) within 1e-5; sum = f(x) - f(0) within 1 %."""
    x = images(2, 96)
    ours = attribute(resnet18, x, [3, 4], "integrated_gradients", n_steps=200, internal_batch_size=50)
    theirs = captum_attr.IntegratedGradients(resnet18).attribute(x, target=[3, 4], n_steps=200).sum(dim=1)
    assert (ours - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()
    with torch.no_grad():
        gap = resnet18(x)[[0, 1], [3, 4]] - resnet18(torch.zeros_like(x))[[0, 1], [3, 4]]
    sums = ours.double().sum(dim=(1, 2))
    assert torch.allclose(sums, gap.double(), rtol=0.01, atol=0)


class TwoRegions(nn.Module):
    """Class 0 looks at the top half's red, class 1 at the bottom half's green: attribution must say where."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x).pow(2)  # not linear: filling a segment with its mean colour changes it
        half = x.shape[2] // 2
        return torch.stack([a[:, 0, :half].mean((1, 2)), a[:, 1, half:].mean((1, 2))], dim=1)


def blocks(batch: int, seed: int) -> torch.Tensor:
    """Random colours in 8 x 8-pixel blocks with a fine texture: superpixels to find, detail to hide."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(batch, 3, 4, 4, generator=g).repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    return 0.8 * colours + 0.2 * torch.rand(batch, 3, 32, 32, generator=g)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "integrated_gradients"])
def test_input_methods_find_the_region_the_model_reads(method: str) -> None:
    model = TwoRegions()
    x = blocks(2, seed=3)
    maps = attribute(model, x, [0, 1], method)
    top, bottom = maps[:, :16].abs().mean((1, 2)), maps[:, 16:].abs().mean((1, 2))
    assert top[0] > 5 * bottom[0] and bottom[1] > 5 * top[1]


def photo(size: int = 64) -> torch.Tensor:
    from skimage.data import astronaut

    x = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area")


def test_lime_recovers_each_superpixels_effect_on_an_additive_model() -> None:
    """TwoRegions is a sum over pixels, so hiding segments adds up: LIME's coefficient of a segment must be
    the output change of hiding that segment alone (up to ridge shrinkage and sampling)."""
    from saliqa.explain.attribution import superpixels

    model, x = TwoRegions(), photo()
    maps = attribute(model, x, [0], "lime", n_samples=512)
    labels = superpixels(x, 50)[0]
    effects, coefficients = [], []
    with torch.no_grad():
        full = model(x)[0, 0]
        for s in range(int(labels.max()) + 1):
            inside = labels == s
            hidden = x.clone()
            hidden[0][:, inside] = x[0][:, inside].mean(dim=1, keepdim=True)
            effects.append(float(full - model(hidden)[0, 0]))
            coefficients.append(float(maps[0][inside][0]))
    assert np.corrcoef(effects, coefficients)[0, 1] > 0.99
    assert len(set(coefficients)) > 10


def test_lime_is_seeded_per_image() -> None:
    model = TwoRegions()
    x = torch.cat([photo(), photo().flip(3)])
    a = attribute(model, x, [0, 1], "lime", n_samples=32, seeds=[1, 2])
    b = attribute(model, x[1:], [1], "lime", n_samples=32, seeds=[2])
    torch.testing.assert_close(a[1:], b, rtol=1e-4, atol=1e-6)


def test_a_single_output_model_is_attributed_to_its_output(resnet18: nn.Module) -> None:
    head = nn.Sequential(resnet18, nn.Linear(1000, 1)).eval()
    x = images(2, 64)
    maps = attribute(head, x, None, "gradcam")
    assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32
    assert attribute(head, x, [0, 0], "saliency").shape == (2, 64, 64)
    with pytest.raises(AttributionError, match="single output"):
        attribute(head, x, [0, 3], "saliency")


def test_none_means_the_predicted_class(resnet18: nn.Module) -> None:
    x = images(2, 64)
    with torch.no_grad():
        predicted = resnet18(x).argmax(dim=1)
    for method in ("gradcam", "integrated_gradients"):
        options = {"n_steps": 8} if method == "integrated_gradients" else {}
        torch.testing.assert_close(
            attribute(resnet18, x, None, method, **options),
            attribute(resnet18, x, predicted, method, **options),
        )


@pytest.mark.parametrize("targets", [[1], [1, 2, 3], 4, [[1, 2]]])
def test_targets_must_be_one_per_image(resnet18: nn.Module, targets: object) -> None:
    with pytest.raises(AttributionError, match="one class index per image"):
        attribute(resnet18, images(2, 64), targets, "gradcam")


def test_bad_arguments_are_clear_errors(resnet18: nn.Module) -> None:
    x = images(1, 64)
    with pytest.raises(AttributionError, match="choose one of"):
        attribute(resnet18, x, None, "occlusion")
    with pytest.raises(AttributionError, match="lie in"):
        attribute(resnet18, x, [1000], "gradcam")
    with pytest.raises(AttributionError, match="no option n_step; it takes"):
        attribute(resnet18, x, None, "integrated_gradients", n_step=3)
    with pytest.raises(AttributionError, match="attributes the input"):
        attribute(resnet18, x, None, "saliency", layer="layer4")
    with pytest.raises(AttributionError, match="no layer 'layer9'"):
        attribute(resnet18, x, None, "gradcam", layer="layer9")
    with pytest.raises(AttributionError, match="floating point"):
        attribute(resnet18, (x * 255).to(torch.uint8), None, "gradcam")


def test_layers_by_name_or_module_and_the_default(resnet18: nn.Module) -> None:
    wrapped = nn.Sequential()
    wrapped.add_module("net", resnet18)
    x = images(2, 64)
    assert default_layer(resnet18, x) == "layer4"
    assert resolve_layer(wrapped, "layer4") == ("net.layer4", resnet18.layer4)
    assert resolve_layer(wrapped, resnet18.layer3) == ("net.layer3", resnet18.layer3)
    by_default = attribute(wrapped, x, [1, 2], "gradcam")
    torch.testing.assert_close(by_default, attribute(wrapped, x, [1, 2], "gradcam", layer="net.layer4"))
    torch.testing.assert_close(
        by_default, attribute(resnet18, x, [1, 2], "gradcam", layer=resnet18.layer4[1])
    )
    coarse = attribute(resnet18, x, [1, 2], "gradcam", layer="layer3")
    assert coarse.shape == by_default.shape and not torch.allclose(coarse, by_default)


def test_parameters_mode_and_hooks_are_restored_even_when_a_call_raises(resnet18: nn.Module) -> None:
    resnet18.train()
    resnet18.fc.weight.requires_grad_(True)
    before = {name: p.requires_grad for name, p in resnet18.named_parameters()}

    def hooks() -> int:
        return sum(len(m._forward_hooks) for m in resnet18.modules())

    try:
        attribute(resnet18, images(1, 64), [1], "layercam")
        with pytest.raises(AttributionError):
            attribute(resnet18, images(1, 64), [1001], "layercam")
        assert resnet18.training and hooks() == 0
        assert {name: p.requires_grad for name, p in resnet18.named_parameters()} == before
        assert all(p.grad is None for p in resnet18.parameters())
    finally:
        resnet18.eval()


def test_degenerate_maps_are_flagged() -> None:
    """A model whose layer4 output is all negative before its ReLU-free head: Grad-CAM is all zero."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[0].bias.zero_()
        model[3].weight.fill_(1.0)
    maps = attribute(model, torch.rand(2, 3, 16, 16), [0, 1], "gradcam")
    assert bool(degenerate(maps).all()) and float(maps.abs().max()) == 0.0
    assert not bool(degenerate(torch.rand(1, 4, 4)).any())
    assert bool(degenerate(torch.full((1, 4, 4), float("nan"))).all())


def test_every_method_is_listed_and_runs(resnet18: nn.Module) -> None:
    assert attribution_methods() == [
        "gradcam", "gradcam++", "layercam", "saliency", "smoothgrad", "integrated_gradients", "lime"
    ]  # fmt: skip
    x = images(2, 64)
    small = {"smoothgrad": {"n_samples": 2}, "integrated_gradients": {"n_steps": 4}, "lime": {"n_samples": 8}}
    for method in attribution_methods():
        maps = attribute(resnet18, x, [1, 2], method, **small.get(method, {}))
        assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32 and torch.isfinite(maps).all()
