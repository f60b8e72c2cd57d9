"""The images a run starts from: its dataset and any extra evaluation sets, opened before any work.

Opening a dataset lists its files; errors name the config key that points at it (``data.root``, ...), and
come before the run directory is touched. The embedded demo is built inside the run directory, on first use.
A listing is identified by each file's id, label and content (size and hash, cached), never by modification
times, so a copied or moved run directory stays up to date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saliqa.config import DataConfig, EvalSetConfig, RunConfig
from saliqa.data.catalog import dataset_root
from saliqa.data.readers import ImageTable, open_dataset, read_folder
from saliqa.errors import ConfigError, DatasetError
from saliqa.io.hashing import FileHashes, fingerprint
from saliqa.io.progress import progress_callback


def _open(config: DataConfig | EvalSetConfig, key: str) -> ImageTable:
    """List a dataset; with no ``root`` (allowed for catalog datasets only), the data cache's copy."""
    root = config.root
    try:
        if root is None:
            try:
                root = dataset_root(config.source)
            except DatasetError as error:
                raise DatasetError(f"not set, and {error}; or set {key} to a copy of your own") from None
        return open_dataset(config.source, root, listed_only=config.listed_only)  # type: ignore[arg-type]
    except DatasetError as error:
        raise ConfigError(f"{key}: {error}") from None


@dataclass
class Sources:
    """The run's dataset (``None`` until built, for the demo) and its extra evaluation sets by name."""

    config: RunConfig
    dataset: ImageTable | None = None
    extra_sets: dict[str, ImageTable] = field(default_factory=dict)

    @classmethod
    def open(cls, config: RunConfig) -> Sources:
        """List every dataset the config names (not the demo, which is built in the run directory)."""
        extra = {
            s.name: _open(s, f"evaluate.extra_sets[{i}].root")
            for i, s in enumerate(config.evaluate.extra_sets)
        }
        data = None if config.data.source == "demo" else _open(config.data, "data.root")
        return cls(config, data, extra)

    def demo(self, root: Path, progress: bool) -> ImageTable:
        """The embedded demo, built once in ``root`` (rebuilt only when its settings change)."""
        from saliqa.data.demo import build_demo

        with progress_callback("build demo", enabled=progress) as report:
            built = build_demo(
                root,
                seed=self.config.seed,
                views_per_class=self.config.data.demo_views_per_class,
                progress=report,
            )
        self.dataset = read_folder(built)
        return self.dataset


def listing_identity(table: ImageTable, hashes: FileHashes) -> str:
    """Identity of a dataset listing: ids, labels, listing-time reasons, and each file's size and content."""
    rows: list[list[Any]] = []
    columns = ["image_id", "path", "label", "present", "reason"]
    for image_id, path, label, present, reason in table.frame[columns].itertuples(index=False):
        content: list[Any] = [-1, None]
        if present and not reason:
            try:
                stat = Path(path).stat()
                content = [stat.st_size, hashes.digest(path, stat)]
            except OSError:  # gone since it was listed: rating will record it as missing
                pass
        rows.append([image_id, label, reason, *content])
    return fingerprint(rows)
