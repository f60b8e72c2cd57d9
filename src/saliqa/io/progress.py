"""Progress of long loops: a live bar on a terminal, plain lines in a log file.

Progress goes to standard error unless :func:`report_to` names another stream (``saliqa run`` sends it to
standard output when that is a file, so ``saliqa run > log`` keeps everything in the log). On a terminal it
is a rich bar; otherwise one line per tenth of the work, so a batch job's log shows how far a stage got and
how long it has left, instead of nothing until the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_STREAM: ContextVar[TextIO | None] = ContextVar("saliqa_progress_stream", default=None)


@contextlib.contextmanager
def report_to(stream: TextIO) -> Iterator[None]:
    """Send progress to ``stream`` inside the block."""
    token = _STREAM.set(stream)
    try:
        yield
    finally:
        _STREAM.reset(token)


def _stream() -> TextIO:
    return _STREAM.get() or sys.stderr


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Bar:
    """What a loop reports to: ``advance`` after each unit of work, ``note`` for a line of its own."""

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class _RichBar(_Bar):
    def __init__(self, progress: Progress, description: str, total: int) -> None:
        self._progress, self._task = progress, progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)


class _Lines(_Bar):
    """One line at each tenth of ``total`` (when ``tenths``), and every note, flushed at once."""

    def __init__(self, stream: TextIO, description: str, total: int, tenths: bool) -> None:
        self._stream, self._description, self._total, self._tenths = stream, description, total, tenths
        self._done, self._shown, self._start = 0, 0, time.monotonic()

    def _line(self, text: str) -> None:
        print(f"{self._description}: {text}", file=self._stream, flush=True)

    def advance(self, n: int = 1) -> None:
        self._done += n
        if not self._tenths or self._total <= 0:
            return
        tenth = min(10, self._done * 10 // self._total)
        if tenth > self._shown:
            self._shown = tenth
            elapsed = time.monotonic() - self._start
            left = elapsed * (self._total - self._done) / self._done if self._done else 0.0
            self._line(f"{10 * tenth}% ({self._done}/{self._total}), {elapsed:.0f} s, ~{left:.0f} s left")

    def note(self, text: str) -> None:
        self._line(text)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, tenths: bool = True) -> Iterator[_Bar]:
    """A bar over ``total`` units; a no-op when disabled (tests, library use).

    Off a terminal, ``tenths=False`` prints only the loop's notes (training prints one line per epoch).
    """
    if not enabled:
        yield _Bar()
        return
    stream = _stream()
    if not _is_terminal(stream):
        yield _Lines(stream, description, total, tenths)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=stream), transient=False) as progress:
        yield _RichBar(progress, description, total)


@contextlib.contextmanager
def progress_callback(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback whose bar appears only once work is reported (no empty bars)."""
    with contextlib.ExitStack() as stack:
        state: dict[str, tuple[_Bar, int]] = {}

        def report(done: int, total: int) -> None:
            if not enabled:
                return
            if "bar" not in state:
                state["bar"] = (stack.enter_context(progress_bar(description, total)), 0)
            bar, before = state["bar"]
            bar.advance(done - before)
            state["bar"] = (bar, done)

        yield report
