"""Unpack a downloaded archive into a folder without letting it write anywhere else.

A dataset archive is files and folders, so that is all this accepts. Every member is checked before anything
is written, and one bad member refuses the whole archive with :class:`~saliqa.errors.UnsafeArchiveError`
naming it: a name that is absolute or climbs out with ``..`` (``\\`` counts as a separator, as it would on
Windows), a symbolic or hard link (wherever it points: a dataset needs none, and a link inside the tree can be
the first step of a write outside it), a device, FIFO or other special file. Tar members are then written by
tarfile's ``data`` filter (Python 3.11.4+), a second line of defence that also drops set-uid bits and foreign
owners; on an older Python this refuses rather than extract without it. Zip members are checked the same way
and written by zipfile, which never makes links.
"""

from __future__ import annotations

import re
import shutil
import stat
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from saliqa.errors import DownloadError, UnsafeArchiveError
from saliqa.io.progress import progress_bar

__all__ = ["extract_archive", "safe_member_name"]

_DRIVE = re.compile(r"^[A-Za-z]:")
# tarfile.FilterError exists from Python 3.11.4, like the data filter that raises it
_FILTER_ERRORS: tuple[type[Exception], ...] = tuple(filter(None, [getattr(tarfile, "FilterError", None)]))


def safe_member_name(name: str) -> str | None:
    """Why ``name`` may not be written below the target folder, or ``None`` when it may."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        return "an absolute name"
    if ".." in PurePosixPath(posix).parts:
        return "a name that climbs out of the folder with '..'"
    if "\x00" in name:
        return "a name with a NUL byte"
    return None


def _refuse(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{archive} is refused: its member {member!r} is {why}; nothing of it was extracted. A dataset archive "
        f"should hold only files and folders: delete {archive} and download it again from its official source"
    )


def _tar_kind(member: tarfile.TarInfo) -> str | None:
    """Why a tar member is not a plain file or folder, or ``None`` when it is one."""
    if member.isfile() or member.isdir():
        return None
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    return "a special file"


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is not a plain file or folder (by the Unix mode a zip may carry), or ``None``."""
    mode = info.external_attr >> 16
    if not stat.S_IFMT(mode) or stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # no type bits: a plain file
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a device or other special file"


def _check_space(archive: Path, dest: Path, needed: int) -> None:
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise DownloadError(
            f"not enough space to unpack {archive} into {dest}: it needs {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free; make room (or choose a folder on another disk) and run again"
        )


def _extract_tar(archive: Path, dest: Path, progress: bool) -> int:
    if not hasattr(tarfile, "data_filter"):
        version = ".".join(map(str, sys.version_info[:3]))
        raise DownloadError(
            f"unpacking {archive} safely needs Python 3.11.4 or later (tarfile's data filter); this is Python "
            f"{version}. Upgrade Python, or unpack it yourself and point saliqa at the folder"
        )
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            why = safe_member_name(member.name) or _tar_kind(member)
            if why:
                raise _refuse(archive, member.name, why)
        _check_space(archive, dest, sum(m.size for m in members if m.isfile()))
        with progress_bar(f"unpack {archive.name}", len(members), progress) as bar:

            def counted() -> Iterator[tarfile.TarInfo]:
                for member in members:
                    yield member
                    bar.advance()

            tar.extractall(dest, members=counted(), filter="data")
        return sum(1 for m in members if m.isfile())


def _extract_zip(archive: Path, dest: Path, progress: bool) -> int:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            why = safe_member_name(info.filename) or _zip_kind(info)
            if why:
                raise _refuse(archive, info.filename, why)
        _check_space(archive, dest, sum(i.file_size for i in infos))
        with progress_bar(f"unpack {archive.name}", len(infos), progress) as bar:
            for info in infos:
                zf.extract(info, dest)
                bar.advance()
        return sum(1 for i in infos if not i.is_dir())


def extract_archive(archive: str | Path, dest: str | Path, *, progress: bool = True) -> int:
    """Unpack a tar (any compression) or zip ``archive`` into the existing folder ``dest``; the files written.

    Every member is checked first (see the module docstring); a refused archive writes nothing. A failure
    half-way (a full disk) can leave part of it in ``dest``: unpack into a temporary folder and move it into
    place only on success, as :func:`saliqa.data.catalog.download_dataset` does.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        if tarfile.is_tarfile(archive):  # tar first: a zip's header is never a valid tar header
            return _extract_tar(archive, dest, progress)
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest, progress)
        raise DownloadError(f"{archive} is neither a tar nor a zip archive; delete it and download it again")
    except _FILTER_ERRORS as err:  # the data filter caught what the checks above let through
        raise UnsafeArchiveError(f"{archive} is refused: {err}; delete it and download it again") from err
    except (tarfile.TarError, zipfile.BadZipFile) as err:
        raise DownloadError(
            f"cannot unpack {archive}: {err}; delete it and download it again (it is not a readable tar or zip)"
        ) from err
    except OSError as err:
        raise DownloadError(f"cannot unpack {archive} into {dest}: {err}") from err
