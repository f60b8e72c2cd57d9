"""Model-side work described by picklable specs, built where it runs.

A spec names a model, the files it is made from with their hashes, and its device; ``build()`` makes the
live model in whichever process calls it (the main process of the local loop, a loader process, or an actor
of a distributed engine) and refuses files that changed since the spec was made. Nothing live crosses a
process boundary, so the same spec serves every engine.

Judges apply ``torch.inference_mode`` themselves while they judge: the classifier a spec builds is a plain
module with frozen parameters, so an attribution method can take gradients through the very same network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saliqa.classify.checkpoint import classifier_from_checkpoint
from saliqa.classify.models import Classifier
from saliqa.errors import CheckpointError
from saliqa.fullref import MS_SSIM_MIN_SIDE, ms_ssim, psnr
from saliqa.io.hashing import FileHashes, fingerprint, sha256_file
from saliqa.iqa.base import QualityModel
from saliqa.iqa.nss import SlidingMap
from saliqa.iqa.registry import find_model_files, load_quality_model
from saliqa.loading import to_unit_float
from saliqa.precision import Precision, channels_last, half_precision, runs_mixed


@dataclass(frozen=True)
class QualitySpec:
    """A quality model: its name, parameter files (name, path, sha256), device, for NIQE and BRISQUE the
    sliding windows of its local map (``None``: the release's tiling), and evaluate's precision."""

    name: str
    device: str = "cpu"
    files: tuple[tuple[str, str, str], ...] = ()
    sliding_map: SlidingMap | None = None
    precision: Precision = "float32"

    @classmethod
    def find(
        cls,
        name: str,
        device: torch.device | str,
        hashes: FileHashes | None = None,
        sliding_map: SlidingMap | None = None,
        precision: Precision = "float32",
    ) -> QualitySpec:
        """The spec of quality model ``name`` with the parameter files found on this machine now."""
        hashes = hashes or FileHashes()
        found = find_model_files(name)
        files = tuple((key, str(path), hashes.sha256(path)) for key, path in found.items())
        return cls(name, str(device), files, sliding_map, precision)

    def build(self) -> QualityModel:
        """The live model, from exactly the files this spec names."""
        for key, path, expected in self.files:
            if sha256_file(path) != expected:
                raise CheckpointError(
                    f"{path} ({self.name} {key}) changed since this run was planned; run again"
                )
        files = {key: Path(path) for key, path, _ in self.files}
        if self.sliding_map is None:  # the release's map: the plain call
            model = load_quality_model(self.name, self.device, files)
        else:
            model = load_quality_model(self.name, self.device, files, sliding_map=self.sliding_map)
        model.use_precision(self.precision)
        return model

    def identity(self) -> dict[str, Any]:
        """What identifies the model's outputs: the model's own fingerprint (name, version, weight hashes, a
        sliding map, a precision where it applies)."""
        return self.build().fingerprint()


@dataclass(frozen=True)
class ClassifierSpec:
    """A trained classifier: its checkpoint file, that file's sha256 and the device to run it on."""

    checkpoint: str
    sha256: str
    device: str = "cpu"

    @classmethod
    def of(
        cls, checkpoint: Path, device: torch.device | str, hashes: FileHashes | None = None
    ) -> ClassifierSpec:
        return cls(str(checkpoint), (hashes or FileHashes()).sha256(checkpoint), str(device))

    def build(self) -> tuple[Classifier, dict[str, Any]]:
        """The classifier (eval mode, frozen parameters, on the device) and the checkpoint's contents."""
        if sha256_file(self.checkpoint) != self.sha256:
            raise CheckpointError(f"{self.checkpoint} changed since this run was planned; run again")
        classifier, state = classifier_from_checkpoint(self.checkpoint, self.device)
        return classifier.requires_grad_(False), state


@dataclass(frozen=True)
class JudgesSpec:
    """Evaluate's two judges: the classifier and the quality model, run on the same crops."""

    classifier: ClassifierSpec
    quality: QualitySpec
    batch_size: int = 64
    precision: Precision = "float32"
    """Evaluate's precision for both models; the quality spec carries it too, since it is in its identity."""

    def build(self) -> Judges:
        classifier, state = self.classifier.build()
        judges = Judges(
            classifier, list(state["classes"]), self.quality.build(), self.batch_size, self.precision
        )
        judges.trained_by = state.get("fingerprint")
        return judges

    def identity(self, quality: dict[str, Any] | None = None) -> str:
        """The fingerprint of what the judges compute (not of where: the device's index is left out);
        ``quality``: the quality model's identity, when the caller has it already."""
        where = torch.device(self.classifier.device).type
        if runs_mixed(self.precision, where):
            where = f"{where} {self.precision}"  # only where it moves numbers: float32 keeps earlier runs'
        return fingerprint(
            self.classifier.sha256, quality if quality is not None else self.quality.identity(), where
        )


@dataclass
class Judges:
    """The classifier and the quality model, run on the same crops."""

    classifier: Classifier
    classes: list[str]
    quality: QualityModel
    batch_size: int
    precision: Precision = "float32"
    """Evaluate's precision (:mod:`saliqa.precision`), for both models where it applies."""
    index: dict[str, int] = field(init=False)
    device: torch.device = field(init=False)
    trained_by: str | None = field(default=None, init=False)
    """The fingerprint of the training that made the classifier, when it came from a checkpoint."""

    def __post_init__(self) -> None:
        self.classifier.eval()
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.device = next(self.classifier.parameters()).device
        if runs_mixed(self.precision, self.device):  # the layout tensor-core convolutions read directly
            self.classifier.to(memory_format=torch.channels_last)
        self.quality.use_precision(self.precision)

    def __call__(
        self, crops: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor
    ) -> dict[str, np.ndarray]:
        """Top-k class indices, true-class probability, quality score and value, PSNR and MS-SSIM.

        ``crops`` are uint8 (N, 3, S, S); ``labels`` holds each crop's true class index and ``clean`` the
        index (into ``crops``) of the same image's clean crop, the reference of PSNR and MS-SSIM.
        """
        with torch.inference_mode():
            k = min(5, len(self.classes))
            crops = crops.to(
                self.device, non_blocking=True
            )  # once, for the models and the full-reference pass
            parts: dict[str, list[np.ndarray]] = {
                key: [] for key in ("topk", "prob_true", "score", "quality")
            }
            mixed = runs_mixed(self.precision, self.device)
            for start in range(0, len(crops), self.batch_size):
                x = to_unit_float(crops[start : start + self.batch_size], self.device)
                y = labels[start : start + self.batch_size].to(self.device)
                with half_precision(self.device, mixed):
                    logits = self.classifier(channels_last(x, mixed))
                probs = torch.softmax(logits.float(), dim=1)
                parts["topk"].append(probs.topk(k, dim=1).indices.cpu().numpy())
                parts["prob_true"].append(probs.gather(1, y[:, None])[:, 0].double().cpu().numpy())
                out = self.quality(x.to(self.quality.device))
                parts["score"].append(out.score.double().cpu().numpy())
                parts["quality"].append(out.quality.double().cpu().numpy())
            judged = {key: np.concatenate(value) for key, value in parts.items()}
            judged["psnr"], judged["ms_ssim"] = self._full_reference(crops, clean)
        return judged

    def _full_reference(self, crops: torch.Tensor, clean: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """PSNR and MS-SSIM of every crop against its image's clean crop, one image at a time, so the clean
        crop's statistics are computed once per image. MS-SSIM is NaN for crops under 161 pixels."""
        values = np.full((2, len(crops)), np.nan)
        five_scales = min(crops.shape[-2:]) >= MS_SSIM_MIN_SIDE
        for reference in torch.unique(clean).tolist():
            original = crops[reference : reference + 1]
            members = (clean == reference).nonzero()[:, 0]
            for start in range(0, len(members), self.batch_size):  # memory bounded like the models'
                rows = members[start : start + self.batch_size]
                distorted = crops[rows.to(crops.device)]
                values[0, rows.numpy()] = psnr(original, distorted).cpu().numpy()
                if five_scales:
                    values[1, rows.numpy()] = ms_ssim(original, distorted).cpu().numpy()
        return values[0], values[1]
