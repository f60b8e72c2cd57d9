"""Null baselines and the cascading randomisation test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from scipy import ndimage

from saliqa.classify.models import build_classifier
from saliqa.explain.baselines import centre_gaussian, derangement, random_maps, sobel_magnitude
from saliqa.explain.sanity import cascading_randomisation, randomisation_steps, sanity_scores, ssim_maps


def test_centre_gaussian_peaks_in_the_middle_and_is_symmetric() -> None:
    g = centre_gaussian(7, 7)
    assert g.argmax() == 24 and np.allclose(g, g.T) and np.allclose(g, g[::-1, ::-1])
    assert g[3, 0] == pytest.approx(np.exp(-((3 / 7) ** 2) / (2 * 0.25**2)))


def test_sobel_matches_scipy_on_a_grey_photo() -> None:
    from skimage.data import camera

    grey = torch.from_numpy(camera()[::4, ::4] / 255.0)
    images = grey.expand(1, 3, *grey.shape).clone()
    ours = sobel_magnitude(images)[0].numpy()
    gx = ndimage.sobel(grey.numpy(), axis=1, mode="nearest")
    gy = ndimage.sobel(grey.numpy(), axis=0, mode="nearest")
    np.testing.assert_allclose(ours, np.hypot(gx, gy), rtol=1e-10, atol=1e-12)


def test_random_maps_and_derangements_are_seeded() -> None:
    a, b = random_maps(7, 7, [1, 2]), random_maps(7, 7, [1, 3])
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[1], b[1])
    for n in (2, 3, 10):
        perm = derangement(n, np.random.default_rng(n))
        assert sorted(perm) == list(range(n)) and (perm != np.arange(n)).all()
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, np.random.default_rng(0))


def test_randomisation_goes_from_the_logits_down() -> None:
    resnet = torchvision.models.resnet18()
    assert randomisation_steps(resnet) == [
        "fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0", "layer1.1", "layer1.0",
        "bn1", "conv1",
    ]  # fmt: skip
    p2p = randomisation_steps(build_classifier("p2p-resnet18", 3))
    assert p2p[:5] == ["net.head.8", "net.head.6", "net.head.4", "net.head.2", "net.body.7.1"]
    assert p2p[-2:] == ["net.body.1", "net.body.0"]


def test_the_cascade_randomises_a_copy_cumulatively_and_gradcam_loses_the_trained_map() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    steps = list(cascading_randomisation(model, x, [1, 2], "gradcam", seed=3))
    assert [name for _, name, _ in steps][:3] == ["trained", "fc", "layer4.1"] and len(steps) == 12
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    first = sanity_scores(steps[0][2], steps[0][2])
    assert all(np.allclose(v, 1.0) for v in first.values())
    again = list(cascading_randomisation(model, x, [1, 2], "gradcam", seed=3))
    assert all(torch.equal(a[2], b[2]) for a, b in zip(steps, again, strict=True))
    last = sanity_scores(steps[0][2], steps[-1][2])
    assert np.nanmean(last["spearman"]) < 0.9


def test_ssim_of_constant_maps_is_nan_and_of_equal_maps_one() -> None:
    a = np.random.default_rng(0).random((2, 16, 16))
    b = a.copy()
    b[1] = 0.5
    assert np.allclose(ssim_maps(a[:1], a[:1]), 1.0)
    assert np.isnan(ssim_maps(a, b)[1])
