"""The one line each benchmark ends with, for ``benchmarks/summary.py`` to collect.

    HEADLINE <bench> <metric>=<value> target=<target> ok=<yes|no>

``target`` is a comparison and a number (``>=0.75``, ``<=1.5``, ``<1024``) with no spaces; ``ok`` says whether
the value meets it in this run. :func:`interleaved` is the timing every benchmark's contenders share: warmed
up, taking turns, medians of at least three repeats with their spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def headline(bench: str, metric: str, value: float, target: str, ok: bool) -> str:
    """The HEADLINE line of one benchmark's headline number."""
    return f"HEADLINE {bench} {metric}={value:.4g} target={target} ok={'yes' if ok else 'no'}"


def interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None] = lambda: None
) -> dict[str, list[float]]:
    """Seconds of each call over ``repeats`` rounds, the calls taking turns within a round (after one warm-up
    call each), so a load that comes and goes slows every contender alike."""
    if repeats < 3:
        raise ValueError(f"repeats must be at least 3 for a median, got {repeats}")
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def rate(seconds: list[float], items: float) -> float:
    """Median items per second."""
    return items / statistics.median(seconds)


def spread(seconds: list[float], items: float, unit: str = "items/s") -> str:
    """The median rate and the range of the repeats, as text."""
    rates = sorted(items / t for t in seconds)
    return f"{statistics.median(rates):8.1f} {unit} (range {rates[0]:.1f}-{rates[-1]:.1f}, n={len(rates)})"
