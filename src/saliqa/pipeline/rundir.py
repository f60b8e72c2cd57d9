"""The run directory on disk: its lock, and the records that say which stages are done and what they made.

A stage that finishes writes ``stages/<name>.json``: its fingerprint and every file it made, with the file's
size and content hash (sampled for big files). A later run skips the stage only when the fingerprint is the
same and every file is still there with that size and hash; otherwise the stage runs again and says why. The
record is written last, so a killed stage is never taken as done.

One process at a time works in a run directory: :meth:`RunDir.locked` holds an advisory lock for the whole
run, and a second run fails at once, naming the process that holds it. The lock is released by the system when
its holder dies, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saliqa.errors import RunDirError, RunDirLocked
from saliqa.io.atomic import write_json
from saliqa.io.hashing import FileHashes
from saliqa.pipeline.layout import RunLayout

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Verdict:
    """Whether a stage's outputs can be trusted as they are, and if not, why."""

    up_to_date: bool
    why: str = ""


class RunDir:
    """A run directory: where its artifacts are (:attr:`layout`), its lock and its stage records."""

    def __init__(self, root: str | Path) -> None:
        self.layout = RunLayout(Path(root))
        self.root = self.layout.root
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise RunDirError(f"run directory {self.root} is a file; choose another --out") from None
        except OSError as error:
            raise RunDirError(f"cannot create run directory {self.root}: {error.strerror}") from None
        self.hashes = FileHashes(self.layout.path(RunLayout.FILE_HASHES))

    def path(self, name: str) -> Path:
        return self.layout.path(name)

    # -- the lock -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory for this process, or fail at once naming the process that holds it."""
        path = self.path(RunLayout.LOCK)
        if fcntl is None:  # pragma: no cover - no advisory locks here: run unguarded
            yield
            return
        with open(path, "a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunDirLocked(
                    f"run directory {self.root} is in use by {holder}; wait for it to finish, or choose "
                    f"another --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            started = datetime.now(UTC).isoformat(timespec="seconds")
            handle.write(f"saliqa (pid {os.getpid()} on {platform.node()}, since {started}: {_command()})")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- stage records ------------------------------------------------------------------------------------------
    def record(self, stage: str) -> dict[str, Any] | None:
        """The completion record of ``stage``, or None if it never finished here."""
        try:
            record = json.loads(self.path(RunLayout.stage_record(stage)).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def check(self, stage: str, fp: str) -> Verdict:
        """Whether ``stage`` finished with fingerprint ``fp`` and every file it made is still as it was."""
        record = self.record(stage)
        if record is None:
            return Verdict(False, "not run here yet")
        if record.get("fingerprint") != fp:
            return Verdict(False, "its settings or inputs changed")
        files = record.get("files")
        if not isinstance(files, dict):
            return Verdict(False, "its record is from an older saliqa")
        for name, (size, digest) in files.items():
            problem = self._differs(name, size, digest)
            if problem:
                return Verdict(False, problem)
        return Verdict(True)

    def _differs(self, name: str, size: int, digest: str) -> str | None:
        path = self.path(name)
        try:
            stat = path.stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != size:
            return f"{name} changed since it was made (size {stat.st_size}, made {size})"
        try:
            found = self.hashes.digest(path, stat)
        except OSError as error:
            return f"{name} cannot be read ({error.strerror})"
        return None if found == digest else f"{name} changed since it was made (its content differs)"

    def files(self, outputs: list[str]) -> dict[str, list[Any]]:
        """Every file of ``outputs`` (files, or folders: every file inside) with its size and content hash."""
        found: dict[str, list[Any]] = {}
        for name in outputs:
            path = self.path(name)
            inside = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in inside:
                if file.name.startswith("."):
                    continue  # a writer's temporary file
                stat = file.stat()  # a declared output that was not made is a bug: FileNotFoundError
                found[self.layout.name(file)] = [stat.st_size, self.hashes.digest(file, stat)]
        return found

    def mark_done(self, stage: str, fp: str, outputs: list[str], **info: Any) -> None:
        """Record that ``stage`` finished: written last, so a killed stage is never taken as done."""
        record = {"stage": stage, "fingerprint": fp, "outputs": outputs, "files": self.files(outputs), **info}
        write_json(self.path(RunLayout.stage_record(stage)), record)
        self.hashes.save()

    def invalidate(self, stage: str) -> None:
        self.path(RunLayout.stage_record(stage)).unlink(missing_ok=True)


def _command() -> str:
    """The command line of this process, as the user typed it when it is the saliqa CLI."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    return (
        " ".join(["saliqa", *sys.argv[1:]]) if program in ("saliqa", "__main__.py") else program or "python"
    )
