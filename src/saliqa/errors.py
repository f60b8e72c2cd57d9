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


class UnsafeArchiveError(DownloadError):
    """An archive holds a member that could write outside its folder (``../x``, an absolute name, a link, a
    device); it is refused whole, and nothing of it is kept."""


class ArtifactWriteError(SaliqaError):
    """An artifact could not be written (full disk, file-size limit, permissions); the run can resume."""

    def __init__(self, path: object, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(
            f"cannot write {path}: {reason}; nothing finished was lost: make room (or fix the permissions) "
            f"and run the same command again to resume"
        )


class StageFailed(SaliqaError):
    """A stage cannot go on: the same error failed every image it tried (a bug, not a bad image)."""


class RunDirLocked(SaliqaError):
    """Another process is running in the same run directory."""


class AttributionError(SaliqaError, ValueError):
    """An attribution call that cannot be made as asked: unknown method or option, targets, layer or model."""
