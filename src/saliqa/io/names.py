"""File names that are not valid UTF-8, kept in tables as text that maps back to the exact name.

On Linux a file name may hold any bytes; Python gives the undecodable ones as lone surrogates
(U+DC80..U+DCFF, "surrogateescape"), which no UTF-8 table can store. saliqa lists such a file anyway, with
the reason :data:`NOT_UTF8`, and stores its name escaped: each undecodable byte as ``\\xNN`` and each
backslash as ``\\\\``. Names that are valid UTF-8 are stored as they are; the reason says which rows were
escaped, and :func:`unescape_name` gives back the name the operating system knows.
"""

from __future__ import annotations

import re

NOT_UTF8 = "file name is not valid UTF-8"
"""The reason recorded for a file whose name (or folder's name) cannot be stored as text."""

_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def has_undecodable_bytes(text: str) -> bool:
    """Whether ``text`` holds bytes that were not valid UTF-8 (as surrogate escapes)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


def escape_name(text: str) -> str:
    """``text`` unchanged when it is valid UTF-8; else each undecodable byte as ``\\xNN`` and ``\\`` doubled."""
    if not has_undecodable_bytes(text):
        return text
    return "".join(
        f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else ("\\\\" if c == "\\" else c)
        for c in text
    )


def unescape_name(text: str) -> str:
    """The name :func:`escape_name` escaped, as the operating system knows it (``os.fsencode`` gives its
    bytes). Only for names recorded as :data:`NOT_UTF8`: valid names were never escaped."""
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)), text)
