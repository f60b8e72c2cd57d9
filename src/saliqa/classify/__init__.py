"""Classifiers for the study: PaQ-2-PiQ-style ResNet-18, torchvision ResNets, timm models; their weights."""

from __future__ import annotations

from saliqa.classify.checkpoint import classifier_from_checkpoint, load_checkpoint, save_checkpoint
from saliqa.classify.models import (
    IMAGENET_WEIGHTS,
    Classifier,
    build_classifier,
    check_pretrained,
    classifier_names,
    init_weights,
    load_initial_weights,
    read_weights_file,
    state_dict_of,
    target_layer,
)
from saliqa.classify.p2p import AdaptiveConcatPool2d, P2PNet, whole_image_boxes

__all__ = [
    "IMAGENET_WEIGHTS",
    "AdaptiveConcatPool2d",
    "Classifier",
    "P2PNet",
    "build_classifier",
    "check_pretrained",
    "classifier_from_checkpoint",
    "classifier_names",
    "init_weights",
    "load_checkpoint",
    "load_initial_weights",
    "read_weights_file",
    "save_checkpoint",
    "state_dict_of",
    "target_layer",
    "whole_image_boxes",
]
