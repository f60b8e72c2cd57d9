"""Evaluate's ``precision = "mixed"``: where it applies, what it runs in half precision, and that float32 (and
"mixed" where it does not apply) leaves every identity as it was.

The half-precision path runs here by declaring bfloat16 for the CPU (CUDA's float16 is what a run uses);
``tests/test_cuda.py`` holds the real thing to its tolerances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saliqa import precision
from saliqa.classify.models import build_classifier
from saliqa.classify.p2p import P2PNet
from saliqa.io.hashing import fingerprint
from saliqa.iqa.paq2piq import PaQ2PiQ
from saliqa.pipeline.models import ClassifierSpec, Judges, JudgesSpec, QualitySpec

CLASSES = [f"c{k}" for k in range(4)]


def test_mixed_applies_only_on_a_device_with_a_half_dtype() -> None:
    assert precision.runs_mixed("mixed", "cuda") and precision.runs_mixed("mixed", torch.device("cuda", 1))
    assert not precision.runs_mixed("mixed", "cpu")
    assert not precision.runs_mixed("float32", "cuda")


def test_float32_keeps_earlier_identities_and_mixed_changes_them_only_where_it_applies() -> None:
    quality = {"name": "paq2piq", "weights_sha256": "0" * 64}

    def identity(device: str, chosen: str) -> str:
        spec = JudgesSpec(
            ClassifierSpec("best.pt", "a" * 64, device), QualitySpec("paq2piq", device), 8, chosen
        )
        return spec.identity(quality)

    assert identity("cpu", "float32") == fingerprint("a" * 64, quality, "cpu")  # as before the setting
    assert identity("cuda", "float32") == fingerprint("a" * 64, quality, "cuda")
    assert identity("cpu", "mixed") == identity("cpu", "float32")  # nothing changes, nothing reruns
    assert identity("cuda", "mixed") != identity("cuda", "float32")


@pytest.fixture
def paq2piq_weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "RoIPoolModel-fit.10.bs.120.pth"
    torch.save({"model": P2PNet(1).state_dict()}, path)  # random values, the official file's layout
    return path


def _judges(weights: Path, chosen: str) -> Judges:
    model = build_classifier("p2p-resnet18", len(CLASSES), seed=0).eval()
    return Judges(model, CLASSES, PaQ2PiQ(weights, "cpu"), 8, chosen)


def test_mixed_runs_the_networks_in_half_precision_and_returns_float32(
    monkeypatch: pytest.MonkeyPatch, paq2piq_weights: Path
) -> None:
    monkeypatch.setitem(precision.MIXED_DTYPES, "cpu", torch.bfloat16)
    generator = torch.Generator().manual_seed(1)
    crops = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=generator)
    labels, clean = torch.arange(8) % len(CLASSES), torch.arange(8) // 4 * 4
    full = _judges(paq2piq_weights, "float32")(crops, labels, clean)
    half = _judges(paq2piq_weights, "mixed")(crops, labels, clean)
    for key in ("prob_true", "score", "quality"):
        assert half[key].dtype == np.float64 and np.isfinite(half[key]).all(), key
    for key in ("prob_true", "score"):  # (random weights put every quality at the scale's floor)
        assert not np.array_equal(half[key], full[key]), f"{key}: nothing ran in half precision"
    np.testing.assert_allclose(half["prob_true"], full["prob_true"], atol=0.05)  # bfloat16: 8-bit mantissa
    np.testing.assert_allclose(half["score"], full["score"], rtol=0.05)
    np.testing.assert_allclose(half["quality"], full["quality"], atol=1.0)
    np.testing.assert_array_equal(half["psnr"], full["psnr"])  # full-reference metrics stay full precision
    np.testing.assert_array_equal(half["ms_ssim"], full["ms_ssim"])


def test_paq2piq_scores_come_from_a_float32_head(
    monkeypatch: pytest.MonkeyPatch, paq2piq_weights: Path
) -> None:
    monkeypatch.setitem(precision.MIXED_DTYPES, "cpu", torch.bfloat16)
    model = PaQ2PiQ(paq2piq_weights, "cpu")
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    full = model.predict(images)
    model.use_precision("mixed")
    half = model.predict(images)
    assert all(t.dtype == torch.float32 for t in half)  # a half-precision head would round every score
    assert not torch.equal(half[0], full[0])  # while the body did run in bfloat16


def test_the_judges_fingerprint_records_mixed_only_where_it_runs(
    monkeypatch: pytest.MonkeyPatch, paq2piq_weights: Path
) -> None:
    model = PaQ2PiQ(paq2piq_weights, "cpu")
    before = model.fingerprint()
    model.use_precision("mixed")
    assert model.fingerprint() == before  # the CPU runs float32 whatever is asked
    monkeypatch.setitem(precision.MIXED_DTYPES, "cpu", torch.bfloat16)
    assert model.fingerprint() == {**before, "precision": "mixed"}


def test_statistical_judges_keep_full_precision_beside_a_mixed_classifier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PIQE beside a half-precision classifier: its scores and its identity stay as in float32."""
    monkeypatch.setitem(precision.MIXED_DTYPES, "cpu", torch.bfloat16)
    crops = torch.randint(
        0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    labels, clean = torch.arange(4) % len(CLASSES), torch.zeros(4, dtype=torch.long)
    judged = {}
    for chosen in ("float32", "mixed"):
        spec = QualitySpec("piqe", "cpu", precision=chosen)
        classifier = build_classifier("p2p-resnet18", len(CLASSES), seed=0).eval()
        judged[chosen] = Judges(classifier, CLASSES, spec.build(), 4, chosen)(crops, labels, clean)
        assert spec.identity() == {"name": "piqe"}
    assert not np.array_equal(judged["mixed"]["prob_true"], judged["float32"]["prob_true"])  # bfloat16 ran
    np.testing.assert_array_equal(judged["mixed"]["score"], judged["float32"]["score"])
    np.testing.assert_array_equal(judged["mixed"]["quality"], judged["float32"]["quality"])
