"""Atomic artifact writing, fingerprints and provenance.

Every artifact is written to a temporary file beside its final path and renamed into place, so a killed run
leaves either the old artifact or the new one, never half of one. Tables carry their provenance (config slice,
fingerprint, package versions, model identity) in the parquet schema metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_KEY = b"saliqa.provenance"


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0666 less the umask); mkstemp would give 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages whose behaviour shapes the numbers."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("saliqa", "torch", "torchvision", "numpy", "pillow", "pandas", "scikit-image"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def provenance(stage: str, fp: str, config: Any, **extra: Any) -> dict[str, Any]:
    """What made an artifact: stage, fingerprint, config slice, versions, time and anything else."""
    return {
        "stage": stage,
        "fingerprint": fp,
        "config": config,
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def write_table(
    path: str | Path, frame: pd.DataFrame, meta: dict[str, Any] | None = None, schema: pa.Schema | None = None
) -> None:
    """Write a parquet table atomically, with ``meta`` (JSON) in its schema metadata, optionally of ``schema``."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), PROVENANCE_KEY: json.dumps(meta, default=str).encode()}
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_parts(
    path: str | Path, parts: list[Path], schema: pa.Schema, meta: dict[str, Any] | None = None
) -> None:
    """Stream parquet ``parts`` (all of ``schema``) into one table, atomically, one part in memory at a time."""
    metadata = dict(schema.metadata or {})
    if meta is not None:
        metadata[PROVENANCE_KEY] = json.dumps(meta, default=str).encode()
    schema = schema.with_metadata(metadata)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part, schema=schema))


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance recorded in a table written by :func:`write_table`, if any."""
    raw = (pq.read_schema(path).metadata or {}).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None
