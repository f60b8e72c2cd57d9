"""Per-item random streams derived from one global seed.

A stream depends only on the seed and the item's keys (image id, corruption, severity, ...), so results do
not depend on batch size, order, worker count or the point a run resumed from.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *keys: object) -> int:
    """A 64-bit seed from ``seed`` and any keys, stable across processes and platforms."""
    text = "\x1f".join([str(int(seed)), *(str(k) for k in keys)])
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A numpy Generator for one item, independent of every other item's."""
    return np.random.default_rng(derive_seed(seed, *keys))
