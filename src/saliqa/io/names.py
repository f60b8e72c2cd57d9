"""File names that are not valid UTF-8, kept in tables as text that maps back to the exact name.

On Linux a file name may hold any bytes; Python gives the undecodable ones as lone surrogates
(U+DC80..U+DCFF, "surrogateescape", see :func:`os.fsdecode`), which no UTF-8 table (parquet, CSV, JSON) can
store. saliqa lists such a file anyway, with the reason :data:`NOT_UTF8`, and stores its name escaped.

The escape rule
---------------
* A name that is valid UTF-8 is stored as it is, backslashes included (they are legal in Linux names, and
  escaping them would change the ids, and so the results, of existing datasets).
* A name that is not valid UTF-8 is stored with each undecodable byte as ``\\xNN`` (two lower-case hex
  digits, ``80``..``ff``) and each backslash doubled (``\\\\``); every other character is kept.

The escaped text alone is ambiguous (a valid name may itself read ``a\\xffb.jpg``); the row's reason is what
says it was escaped. So :func:`unescape_name` is only for text recorded as :data:`NOT_UTF8`, and
:func:`os_name` takes the reason and does the right thing for any row: for every ``s`` that
:func:`os.fsdecode` can give, ``os.fsencode(os_name(escape_name(s), name_reason(s))) == os.fsencode(s)``.
"""

from __future__ import annotations

import re

__all__ = ["NOT_UTF8", "escape_name", "has_undecodable_bytes", "name_reason", "os_name", "unescape_name"]

NOT_UTF8 = "file name is not valid UTF-8"
"""The reason recorded for a file whose name (or a folder's name on its path) cannot be stored as text."""

# What escape_name writes: a doubled backslash, or \xNN for a byte 0x80..0xff (the only bytes surrogateescape
# turns into surrogates). Matched left to right, so the escaped text  \\xff  is one backslash, then "xff".
_ESCAPED = re.compile(r"\\(\\|x[89a-f][0-9a-f])")


def _is_escaped_byte(c: str) -> bool:
    return "\udc80" <= c <= "\udcff"


def has_undecodable_bytes(text: str) -> bool:
    """Whether ``text`` holds bytes that were not valid UTF-8 (as surrogate escapes U+DC80..U+DCFF)."""
    return any(_is_escaped_byte(c) for c in text)


def name_reason(text: str) -> str | None:
    """:data:`NOT_UTF8` when ``text`` (a name as :func:`os.fsdecode` gives it) must be escaped, else None."""
    return NOT_UTF8 if has_undecodable_bytes(text) else None


def escape_name(text: str) -> str:
    """``text`` as valid UTF-8: unchanged when it is valid UTF-8 already; else each undecodable byte as
    ``\\xNN`` and each backslash doubled. Idempotent (an escaped name is valid UTF-8)."""
    if not has_undecodable_bytes(text):
        return text
    return "".join(
        f"\\x{ord(c) - 0xDC00:02x}" if _is_escaped_byte(c) else ("\\\\" if c == "\\" else c) for c in text
    )


def unescape_name(text: str) -> str:
    """The exact inverse of :func:`escape_name` for a name it escaped: the name as the operating system knows
    it (``os.fsencode`` gives its bytes). Only for names recorded as :data:`NOT_UTF8`: a valid name was never
    escaped, so use :func:`os_name` when the reason is not known to be :data:`NOT_UTF8`."""
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)), text)


def os_name(text: str, reason: str | None) -> str:
    """The operating system's name for a ``path`` (or ``image_id``) stored in a table with this ``reason``:
    unescaped when the reason is :data:`NOT_UTF8`, as stored otherwise."""
    return unescape_name(text) if reason == NOT_UTF8 else text
