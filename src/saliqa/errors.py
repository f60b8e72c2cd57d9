"""One exception type per failure kind; each message says what to do next."""

from __future__ import annotations


class SaliqaError(Exception):
    """Base class of every error saliqa raises on purpose."""


class ConfigError(SaliqaError):
    """A run configuration is invalid; raised before any work starts."""


class DatasetError(SaliqaError):
    """A dataset cannot be read at all (missing root, bad manifest)."""


class ImageRejected(SaliqaError):
    """One image cannot be used; ``reason`` is the short text recorded in the tables."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class UnknownModelError(SaliqaError):
    """A quality model (or other named component) that saliqa does not know."""


class WeightsNotFoundError(SaliqaError):
    """A model needs a parameter file that is not on this machine."""


class RunDirError(SaliqaError):
    """A run directory is unusable (e.g. its artifacts were made by another config)."""


class CorruptionError(SaliqaError, ValueError):
    """An unknown corruption, a severity outside 1-5, or an image the corruption cannot take."""


class CheckpointError(SaliqaError):
    """A checkpoint file is missing, unreadable, unsafe to load or made for another model."""


class DownloadError(SaliqaError):
    """A file could not be fetched or failed its size/hash check; the message says where to put it by hand."""
