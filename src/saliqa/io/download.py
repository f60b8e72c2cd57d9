"""Fetch parameter files once, verify them, and reuse them offline.

Only urllib: no extra dependency. A download streams into ``<dest>.part`` and resumes it with an HTTP Range
request after an interruption (restarting when the server ignores Range); a body that ends before its
Content-Length is an interruption, never a finished file. The file is renamed onto ``dest`` only after its
size and hash (SHA-256, or the SHA-1 some datasets publish) check out, so ``dest`` is either absent or
verified. Every failure message names the URL and the exact path where a file fetched by hand should go.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from saliqa.errors import DownloadError
from saliqa.io.hashing import CHUNK
from saliqa.io.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsFile:
    """A published parameter file: where it lives and how to recognise it."""

    url: str
    file_name: str
    sha256_prefix: str | None = None
    size: int | None = None
    sha256: str | None = None


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _expectation(
    sha256: str | None, sha256_prefix: str | None, size: int | None, sha1: str | None = None
) -> str:
    parts = [f"size {size} bytes"] if size is not None else []
    if sha256:
        parts.append(f"sha256 {sha256}")
    elif sha256_prefix:
        parts.append(f"sha256 starting {sha256_prefix}")
    if sha1:
        parts.append(f"sha1 {sha1}")
    return f" ({', '.join(parts)})" if parts else ""


def _by_hand(url: str, dest: Path, expect: str) -> str:
    return f"download {url} by hand and put it at {dest}{expect}"


def _digests(path: Path, algorithms: list[str]) -> dict[str, str]:
    """Hex digests of ``path`` for each named algorithm, in one pass over the file (archives are gigabytes)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def verify_file(
    path: Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    sha1: str | None = None,
) -> str | None:
    """``None`` when ``path`` matches every given check, else what was expected and what was found.

    ``sha1`` is for files whose publisher gives only a SHA-1 (MIT Indoor 67's archive): it still catches a
    damaged or different download, which is what a published hash is for here.
    """
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        return f"expected {size} bytes, got {got_size}"
    algorithms = (["sha256"] if sha256 is not None or sha256_prefix else []) + (["sha1"] if sha1 else [])
    if not algorithms:
        return None
    digests = _digests(path, algorithms)
    digest = digests.get("sha256", "")
    if sha256 is not None and digest != sha256.lower():
        return f"expected sha256 {sha256.lower()}, got {digest}"
    if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
        return f"expected sha256 starting {sha256_prefix.lower()}, got {digest}"
    if sha1 and digests["sha1"] != sha1.lower():
        return f"expected sha1 {sha1.lower()}, got {digests['sha1']}"
    return None


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """Open ``url`` from byte ``offset``; ``None`` when the server says the range is past the end (416)."""
    request = urllib.request.Request(url, headers={"User-Agent": "saliqa"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if offset and err.code == 416:
            err.close()
            return None
        raise


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 answer (``Content-Range: bytes START-END/TOTAL``); ``None`` for a whole-file answer."""
    if response.status != 206:
        return None
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _fetch(url: str, part: Path, *, size: int | None, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, appending when the server honours a Range request."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset == size:
        return  # complete already; the caller verifies it
    if size is not None and offset > size:
        offset = 0
    response = _open(url, offset, timeout)
    if response is None:  # 416: nothing past the partial file, which is whole or wrong; verify decides
        return
    start = _range_start(response)
    if offset and start is not None and start != offset:  # a range we did not ask for: start over
        response.close()
        offset = 0
        response = _open(url, 0, timeout)
        if response is None:
            raise http.client.HTTPException("server refused a plain GET with 416")
        start = _range_start(response)
    if offset and start is None:
        log.info("%s ignored the Range request; restarting the download", url)
        offset = 0
    with response:
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else (size or 0)
        received = 0
        with (
            open(part, "ab" if offset else "wb") as f,
            progress_bar(f"download {part.name[:-5]}", total, progress) as bar,
        ):
            bar.advance(offset)
            while chunk := response.read(CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.advance(len(chunk))
    # http.client ends a body cut short by a dropped connection like a finished one: keep the bytes, say so
    if length is not None and received < int(length):
        raise http.client.HTTPException(f"the connection closed after {received} of {length} bytes")


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 30,
    sha1: str | None = None,
    retries: int = 0,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, and move it into place.

    ``retries``: how many times an interrupted transfer (dropped connection, timeout) is resumed at once
    before giving up; the partial file stays either way, so running again resumes it too. An HTTP error
    answer (404, 403, ...) is never retried.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    expect = _expectation(sha256, sha256_prefix, size, sha1)
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, size=size, progress=progress, timeout=timeout)
            break
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
            if attempt == retries or isinstance(err, urllib.error.HTTPError):
                kept = part.stat().st_size if part.exists() else 0
                resume = (
                    f"the {kept} bytes received are kept in {part}: run again to resume, or " if kept else ""
                )
                raise DownloadError(
                    f"could not download {url}: {err}; {resume}{_by_hand(url, dest, expect)}"
                ) from err
            log.warning(
                "download of %s interrupted (%s); resuming (retry %d of %d)", url, err, attempt + 1, retries
            )
    problem = verify_file(part, sha256=sha256, sha256_prefix=sha256_prefix, size=size, sha1=sha1)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url} failed its check: {problem}; the partial file was deleted. "
            f"Try again, or {_by_hand(url, dest, expect)}"
        )
    os.replace(part, dest)
    return dest


def ensure_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 30,
    sha1: str | None = None,
    retries: int = 0,
) -> Path:
    """``dest`` when it exists and verifies (no network at all), else a fresh verified download."""
    dest = Path(dest)
    if dest.is_file():
        problem = verify_file(dest, sha256=sha256, sha256_prefix=sha256_prefix, size=size, sha1=sha1)
        if problem is None:
            return dest
        log.warning("%s failed its check (%s); downloading it again", dest, problem)
    return download(
        url,
        dest,
        sha256=sha256,
        sha256_prefix=sha256_prefix,
        size=size,
        progress=progress,
        timeout=timeout,
        sha1=sha1,
        retries=retries,
    )


def ensure_weights(weights: WeightsFile, directory: str | Path, *, progress: bool = True) -> Path:
    """The verified local copy of a published parameter file in ``directory``."""
    return ensure_file(
        weights.url,
        Path(directory) / weights.file_name,
        sha256=weights.sha256,
        sha256_prefix=weights.sha256_prefix,
        size=weights.size,
        progress=progress,
    )
