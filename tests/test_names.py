"""File names that are not valid UTF-8: escaped to storable text and back to the exact bytes."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from saliqa.io.names import (
    NOT_UTF8,
    escape_name,
    has_undecodable_bytes,
    name_reason,
    os_name,
    unescape_name,
)

pytestmark = pytest.mark.skipif(
    sys.getfilesystemencoding() != "utf-8" or sys.getfilesystemencodeerrors() != "surrogateescape",
    reason="names are escaped for a UTF-8 file system with surrogateescape (Linux, macOS)",
)


def _random_names(seed: int, n: int) -> list[bytes]:
    """Random names as Linux allows them: any bytes but b'/' and b'\\0', biased towards backslashes,
    'x', hex digits and bytes >= 0x80 so that escapes and look-alikes of escapes are common."""
    rng = np.random.default_rng(seed)
    alphabet = np.array([*b"\\\\\\xX09afAF.", *range(0x80, 0x100), *range(1, 0x80)], dtype=np.uint8)
    alphabet = alphabet[alphabet != ord("/")]
    names = []
    for _ in range(n):
        length = int(rng.integers(1, 32))
        if rng.random() < 0.5:  # anything
            raw = bytes(b for b in rng.integers(1, 256, length) if b != ord("/"))
        else:  # mostly the characters that matter to the escape rule
            raw = bytes(rng.choice(alphabet, length))
        names.append(raw or b"a")
    return names


def test_round_trip_over_random_byte_names() -> None:
    escaped_count = 0
    for raw in _random_names(seed=20240611, n=20_000):
        name = os.fsdecode(raw)
        stored = escape_name(name)
        stored.encode("utf-8")  # always storable as text
        reason = name_reason(name)
        assert os.fsencode(os_name(stored, reason)) == raw  # every name maps back, valid or not
        if reason == NOT_UTF8:
            escaped_count += 1
            assert os.fsencode(unescape_name(stored)) == raw
            assert unescape_name(stored) == name
        else:
            assert stored == name  # valid names are stored as they are, backslashes included
        assert escape_name(stored) == stored  # idempotent: the escaped text is valid UTF-8
    assert 5_000 < escaped_count < 20_000  # both kinds were tried, many times


def test_escaping_is_one_to_one() -> None:
    raws = {raw for raw in _random_names(seed=7, n=20_000) if has_undecodable_bytes(os.fsdecode(raw))}
    assert len({escape_name(os.fsdecode(raw)) for raw in raws}) == len(raws)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (b"bad\xffbytes.jpg", "bad\\xffbytes.jpg"),  # the bug report's name
        (b"a\\b\xff", "a\\\\b\\xff"),  # a backslash in an escaped name is doubled
        (b"\\xff\xff", "\\\\xff\\xff"),  # the text "\xff" and the byte ff stay apart
        (b"\\\\\x80", "\\\\\\\\\\x80"),
        (b"caf\xe9.png", "caf\\xe9.png"),  # Latin-1, not UTF-8
        (b"\xc3", "\\xc3"),  # a UTF-8 sequence cut short
        (b"\xc0\xaf.jpg", "\\xc0\\xaf.jpg"),  # overlong encoding of '/'
        (b"\xed\xa0\x80.jpg", "\\xed\\xa0\\x80.jpg"),  # an encoded surrogate is not UTF-8
        (
            "caf\u00e9\u4e2d\U0001f600 \\x41.jpg".encode(),
            "caf\u00e9\u4e2d\U0001f600 \\x41.jpg",
        ),  # valid: as is
        (b"\xe2\x82\xac\xff", "\u20ac\\xff"),  # valid characters stay characters next to an escape
        (b"two\nlines\t.jpg", "two\nlines\t.jpg"),  # control characters are valid UTF-8: as is
    ],
)
def test_hand_cases(raw: bytes, stored: str) -> None:
    name = os.fsdecode(raw)
    assert escape_name(name) == stored
    assert os.fsencode(os_name(stored, name_reason(name))) == raw
    assert name_reason(name) == (NOT_UTF8 if has_undecodable_bytes(name) else None)


def test_valid_names_are_never_escaped_nor_unescaped_by_os_name() -> None:
    for name in ["a\\xffb.jpg", "a\\\\b", "\\", "plain.jpg", "x\\x41"]:
        assert not has_undecodable_bytes(name)
        assert name_reason(name) is None
        assert escape_name(name) == name
        assert os_name(name, None) == name
        assert os_name(name, "truncated or corrupt") == name  # only NOT_UTF8 rows were escaped


def test_unescape_only_reads_what_escape_writes() -> None:
    # \xNN below 0x80 is never written (those bytes are valid UTF-8), nor upper-case hex, nor a lone "\".
    for text in ["\\x41", "\\xFF", "\\q", "end\\", "\\x8"]:
        assert unescape_name(text) == text
    assert unescape_name("\\\\xff") == "\\xff"  # a doubled backslash, then the text "xff"
    assert unescape_name("\\xff") == "\udcff"
