"""The run directory: where each stage's artifacts live and how a stage knows it is up to date.

A stage that finishes writes ``stages/<name>.json`` with its fingerprint and outputs. A later run skips the
stage when the fingerprint is the same and every output is still there; otherwise it reruns it (and so
everything downstream, whose fingerprints include this one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saliqa.errors import RunDirError
from saliqa.io.atomic import write_json


class RunDir:
    """A run directory on disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise RunDirError(f"run directory {self.root} is a file; choose another --out") from None
        except OSError as error:
            raise RunDirError(f"cannot create run directory {self.root}: {error.strerror}") from None

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _record_path(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")

    def record(self, stage: str) -> dict[str, Any] | None:
        """The completion record of ``stage``, or None if it never finished here."""
        try:
            return json.loads(self._record_path(stage).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self, stage: str, fp: str) -> bool:
        """True when ``stage`` finished with fingerprint ``fp`` and all its outputs still exist."""
        record = self.record(stage)
        if record is None or record.get("fingerprint") != fp:
            return False
        return all(self.path(name).exists() for name in record.get("outputs", []))

    def mark_done(self, stage: str, fp: str, outputs: list[str], **info: Any) -> None:
        """Record that ``stage`` finished: written last, so a killed stage is never taken as done."""
        write_json(self._record_path(stage), {"stage": stage, "fingerprint": fp, "outputs": outputs, **info})

    def invalidate(self, stage: str) -> None:
        self._record_path(stage).unlink(missing_ok=True)
