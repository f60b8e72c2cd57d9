"""Identities of data: fingerprints of settings, hashes of files, and a cache that spares rehashing.

Files are identified by their content, never by their modification time, so a copied or moved run directory
(``cp -r`` resets every time) is still recognised as up to date. Hashing a file again is avoided by a cache
keyed by the file's path, size, modification time and inode: a file that has not been touched since is not
read again, and one that was copied is read once more and found the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from saliqa.errors import ArtifactWriteError
from saliqa.io.atomic import write_text

CHUNK = 1 << 20
WHOLE_FILE_LIMIT = 16 * CHUNK
"""Files up to this size are digested whole; larger ones by their size and four evenly spread 1 MiB pieces
(beginning, two inner points, end), so checking a multi-gigabyte table stays cheap."""


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a whole file, read in chunks (the published identity of a weights file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_digest(path: str | Path) -> str:
    """A content hash of a file: whole up to :data:`WHOLE_FILE_LIMIT`, sampled beyond (see there)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        if size <= WHOLE_FILE_LIMIT:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        else:
            for offset in (0, size // 3, 2 * size // 3, size - CHUNK):
                f.seek(offset)
                digest.update(f.read(CHUNK))
    return digest.hexdigest()


_KINDS = {"digest": content_digest, "sha256": sha256_file}


class FileHashes:
    """Hashes of files, remembered in ``cache`` (a JSON file) by path, size, modification time and inode."""

    def __init__(self, cache: str | Path | None = None) -> None:
        self.cache = Path(cache) if cache is not None else None
        self._known: dict[str, list[Any]] = {}
        self._changed = False
        if self.cache is not None:
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(self.cache.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self._known = loaded

    def _hash(self, kind: str, path: str | Path, stat: os.stat_result | None = None) -> str:
        key = f"{kind}:{os.path.abspath(path)}"
        stat = stat or os.stat(path)
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        known = self._known.get(key)
        if isinstance(known, list) and known[:3] == stamp and len(known) == 4:
            return str(known[3])
        value = _KINDS[kind](path)
        self._known[key] = [*stamp, value]
        self._changed = True
        return value

    def digest(self, path: str | Path, stat: os.stat_result | None = None) -> str:
        """:func:`content_digest` of ``path`` (``stat``: its ``os.stat``, when the caller has it already)."""
        return self._hash("digest", path, stat)

    def sha256(self, path: str | Path) -> str:
        """:func:`sha256_file` of ``path``."""
        return self._hash("sha256", path)

    def save(self) -> None:
        """Write the cache back when it learned something (best effort: a cache is never required)."""
        if self.cache is None or not self._changed:
            return
        with contextlib.suppress(ArtifactWriteError):
            write_text(self.cache, json.dumps(self._known, separators=(",", ":")))
            self._changed = False
