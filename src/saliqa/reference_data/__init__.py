"""Published reference tables shipped with saliqa (CSV files read with :mod:`importlib.resources`)."""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = ["imagenet_classes"]


def imagenet_classes() -> pd.DataFrame:
    """The 1000 ImageNet-1k classes as ``index, wnid, name``, one row per class, row i = class index i.

    The order is torchvision's (the WNIDs sorted, as ``torchvision.datasets.ImageNet`` numbers them), so row i
    names output i of a pretrained torchvision or timm ImageNet model. WNIDs come from timm's
    ``imagenet_synsets.txt``, names from torchvision's ``ResNet18_Weights.IMAGENET1K_V1.meta["categories"]``.
    A fresh frame on each call: callers may change it.
    """
    text = resources.files(__name__).joinpath("imagenet_classes.csv")
    with resources.as_file(text) as path:
        return pd.read_csv(
            path, comment="#", dtype={"index": "int64", "wnid": str, "name": str}, na_filter=False
        )
