"""PaQ-2-PiQ's RoIPool architecture: a ResNet-18 body, RoI pooling and fastai's head.

The same network serves twice: as the quality model (one output, PaQ-2-PiQ's released weights) and as the
classifier of the study ("ResNet-18 with the last two layers modified to stay consistent with PaQ-2-PiQ",
``n_outputs`` classes). Its state-dict layout (``body.*``, ``head.*``) matches the official release, so the
released weights load without renaming.

No input normalisation happens here: PaQ-2-PiQ takes raw RGB in [0, 1]. As a classifier it sits behind
:class:`saliqa.classify.models.Classifier`, which always normalises with ImageNet's mean and std, so the
same weights work from a random start or from ImageNet's.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import RoIPool

STRIDE = 32
POOL_SIZE = (2, 2)
FEATURES = 512


class AdaptiveConcatPool2d(nn.Module):
    """fastai's pooling: max-pool and average-pool concatenated along channels (max first)."""

    def __init__(self, size: int = 1) -> None:
        super().__init__()
        self.max_pool = nn.AdaptiveMaxPool2d(size)
        self.avg_pool = nn.AdaptiveAvgPool2d(size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.max_pool(x), self.avg_pool(x)], dim=1)


def _head(n_outputs: int) -> nn.Sequential:
    """fastai's ``create_head(1024, n_outputs)`` with dropout ``ps=[0.25, 0.5]``, in PaQ-2-PiQ's order."""
    return nn.Sequential(
        AdaptiveConcatPool2d(1),
        nn.Flatten(),
        nn.BatchNorm1d(2 * FEATURES),
        nn.Dropout(0.25),
        nn.Linear(2 * FEATURES, 512),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(512),
        nn.Dropout(0.5),
        nn.Linear(512, n_outputs),
    )


def whole_image_boxes(
    batch: int,
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """One RoI per image covering all of it: rows ``[b, 0, 0, W, H]`` (PaQ-2-PiQ's picture box)."""
    boxes = torch.zeros(batch, 5, device=device, dtype=dtype)
    boxes[:, 0] = torch.arange(batch, device=device, dtype=dtype)
    boxes[:, 3] = width
    boxes[:, 4] = height
    return boxes


class P2PNet(nn.Module):
    """ResNet-18 body -> RoIPool(2x2, 1/32) -> fastai head, one output row per box.

    With ``n_outputs=1`` this is PaQ-2-PiQ's ``RoIPoolModel`` (134 state-dict keys, 11,704,897 parameters).
    The head's Linear weights get ``kaiming_normal_`` and zero biases, as fastai's ``create_cnn_model``
    initialises a new head; BatchNorm layers keep PyTorch's defaults (weight 1, bias 0).
    """

    def __init__(self, n_outputs: int = 1) -> None:
        super().__init__()
        if n_outputs < 1:
            raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
        self.n_outputs = n_outputs
        self.body = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])
        self.roi_pool = RoIPool(output_size=POOL_SIZE, spatial_scale=1 / STRIDE)
        self.head = _head(n_outputs)
        for module in self.head.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor) -> Tensor:
        """The body's feature map, ``(B, 512, ceil(H/32), ceil(W/32))``."""
        return self.body(x)

    def forward_rois(self, features: Tensor, boxes: Tensor) -> Tensor:
        """Pool each box ``[batch_index, x1, y1, x2, y2]`` (input pixels) from ``features``; ``(K, n_outputs)``.

        Lets a caller pool a picture box and many block boxes from one body pass.
        """
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes must be (K, 5) rows [batch_index, x1, y1, x2, y2], got {tuple(boxes.shape)}"
            )
        if features.dtype in (torch.float16, torch.bfloat16):  # a body under autocast: RoIPool in float32,
            features = features.float()  # as torchvision's CUDA autocast runs it (its CPU kernel has no half)
        boxes = boxes.to(device=features.device, dtype=features.dtype)
        return self.head(self.roi_pool(features, boxes))

    def forward(self, x: Tensor, boxes: Tensor | None = None) -> Tensor:
        """``x`` (B, 3, H, W) RGB in [0, 1]; no boxes: one whole-image box per image -> ``(B, n_outputs)``."""
        if x.ndim != 4:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        if boxes is None:
            boxes = whole_image_boxes(x.shape[0], x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return self.forward_rois(self.features(x), boxes)
