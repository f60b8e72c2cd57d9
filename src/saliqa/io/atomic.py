"""Atomic writes: an artifact is written to a temporary file beside its final path and renamed into place, so
a killed run leaves either the old artifact or the new one, never half of one.

A write that fails for want of room or rights (a full disk, a file-size limit, a read-only folder) becomes
one :class:`~saliqa.errors.ArtifactWriteError` that names the file and says the run can resume, instead of
whichever traceback the writing library happens to raise.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saliqa.errors import ArtifactWriteError


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0666 less the umask); mkstemp would give 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _write_failure(error: BaseException) -> str | None:
    """What went wrong when ``error`` comes from writing a file (None for any other error). Writers that
    report a failed write otherwise (torch.save) serialise to memory first and write the bytes here."""
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError | IsADirectoryError):
        return error.strerror or str(error)
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as error:
        raise ArtifactWriteError(path, error.strerror or str(error)) from error
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    except Exception as error:
        reason = _write_failure(error)
        if reason is None:
            raise
        raise ArtifactWriteError(path, reason) from error
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
