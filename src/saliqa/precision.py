"""Evaluate's ``precision = "mixed"``: where the models may run their convolutions in half precision.

On a CUDA GPU the classifier and PaQ-2-PiQ's body then run channels-last under float16 autocast (tensor
cores: the speed the GPU path is measured for). The classifier's logits come out in float16 and its
probabilities are computed from them in float32; PaQ-2-PiQ's RoI head, and so every score and block score,
runs in float32. Everything else (the CPU, NIQE, BRISQUE and PIQE's float64 statistics) stays in full precision:
autocast on a CPU without bfloat16 units is slower, not faster, and a statistic in half precision would
move the judge's numbers. Results may move within the tolerances the CUDA tests check (top-1 identical on
at least 99.9 % of crops, quality within 0.01); a run's identity records the precision wherever it applies.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

Precision = Literal["float32", "mixed"]

MIXED_DTYPES: dict[str, torch.dtype] = {"cuda": torch.float16}
"""Device kind -> the autocast dtype of ``"mixed"``; device kinds not listed run float32 whatever is asked."""


def runs_mixed(precision: str, device: torch.device | str) -> bool:
    """Whether ``precision`` changes anything on ``device`` (only then is it part of a result's identity)."""
    return precision == "mixed" and torch.device(device).type in MIXED_DTYPES


def half_precision(device: torch.device | str, enabled: bool) -> AbstractContextManager[object]:
    """Autocast to the device's mixed dtype while ``enabled`` (and the device has one); otherwise nothing."""
    kind = torch.device(device).type
    if not enabled or kind not in MIXED_DTYPES:
        return nullcontext()
    return torch.autocast(kind, dtype=MIXED_DTYPES[kind])


def channels_last(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """``x`` in channels-last memory while ``enabled`` (the layout tensor-core convolutions read directly)."""
    return x.contiguous(memory_format=torch.channels_last) if enabled else x
